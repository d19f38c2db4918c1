"""What reusing crystal graphs across folds and trials saves in a perovskites study.

    python -m benchmarks.graph_cache     # writes benchmarks/results/tuned/graph_cache.{json,md}

Runs one short Optuna study on matbench_perovskites (rows, trials and epochs
set by options) over the network's learning rate and weight decay, so every
trial shares the transformer's parameters, with skgnn's graph cache, and compares
with what a plain Pipeline inside a CV loop pays: graphing the rows of every
fold of every trial.
"""

from __future__ import annotations

import argparse
import time

import optuna
from matminer.datasets import load_dataset
from optuna.distributions import FloatDistribution
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.tuning import CVObjective, GraphCache

from .common import RESULTS, data_home, machine, write_results


def run(X, y, args) -> tuple[float, float]:
    pipe = make_pipeline(
        CrystalGraphTransformer(),
        CGCNNRegressor(max_epochs=args.epochs, validation_fraction=None, random_state=0),
    )
    space = {
        "cgcnnregressor__lr": FloatDistribution(3e-4, 1e-2, log=True),
        "cgcnnregressor__optimizer__weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
    }
    cache = GraphCache(X)
    objective = CVObjective(pipe, X, y, space, cv=args.cv, graph_cache=cache)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    start = time.perf_counter()
    study.optimize(objective, n_trials=args.trials)
    return time.perf_counter() - start, cache.seconds_saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    df = load_dataset("matbench_perovskites", data_home=data_home(args.data_home))
    X, y = df["structure"].iloc[: args.rows], df["e_form"].to_numpy()[: args.rows]

    start = time.perf_counter()
    CrystalGraphTransformer().fit_transform(X)
    graph_seconds = time.perf_counter() - start
    cached_seconds, saved = run(X, y, args)
    # without reuse a plain Pipeline graphs the training and test rows of every fold
    uncached_estimate = cached_seconds + graph_seconds * (args.trials * args.cv - 1)
    payload = {
        "machine": machine(),
        "args": vars(args),
        "graph_seconds_all_rows": graph_seconds,
        "study_seconds_with_cache": cached_seconds,
        "graph_seconds_saved_by_cache": saved,
        "study_seconds_without_reuse_estimate": uncached_estimate,
    }
    markdown = (
        "# Graph reuse in a perovskites study\n\n"
        f"{args.rows} perovskites, {args.trials} trials × {args.cv}-fold CV, {args.epochs} "
        f"epochs a fit; machine {payload['machine']['cpu']}, {payload['machine']['cores']} "
        "cores.\n\n| measure | seconds |\n|---|---|\n"
        f"| graphing all rows once | {graph_seconds:.1f} |\n"
        f"| study with the graph cache | {cached_seconds:.1f} |\n"
        f"| graph construction the cache skipped (later trials) | {saved:.1f} |\n"
        f"| the same study graphing in every fold of every trial (estimate: + "
        f"{args.trials * args.cv - 1} × graphing) | {uncached_estimate:.1f} |\n"
    )
    write_results(RESULTS / "tuned", "graph_cache", payload, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
