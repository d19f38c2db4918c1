"""Tuned head-to-head, nested and honest: Optuna on each official training fold only.

    python -m benchmarks.tuned --task matbench_jdft2d --n-trials 8 --inner-cv 3

For every official Matbench fold: the default CGCNN is fitted on the training
rows; then CGCNN and the gradient-boosting tabular model are each tuned with
the same number of Optuna trials by inner cross-validation on the training
rows only (fold-wise median pruning, graphs reused across trials), refitted
with their best parameters on all training rows, and scored on the fold's test
rows. Each study's first trial is the default settings, so the search starts
from them. Results are written after each fold (a rerun skips finished folds;
the studies live in an SQLite file beside them) under
benchmarks/results/tuned/<task>/: results.json, results.md and
optimisation_history.png. Two processes may split the folds on one folder
(``--folds 0,2,4`` and ``--folds 1,3``), one core each.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import optuna
from matminer.datasets import load_dataset
from optuna.distributions import IntDistribution
from optuna.trial import TrialState
from sklearn.base import clone
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.baselines import make_strong_tabular
from skgnn.model_selection import MatbenchKFold
from skgnn.tuning import GraphCache, cgcnn_space, strong_tabular_space, tune

from .common import RESULTS, data_home, machine, write_json
from .leaderboard import TARGETS, UNITS


def lines(max_epochs: int) -> dict:
    """The two lines raced: (estimator, search space)."""
    cgcnn = make_pipeline(CrystalGraphTransformer(), CGCNNRegressor(random_state=0))
    space = cgcnn_space()
    space["cgcnnregressor__max_epochs"] = IntDistribution(40, max_epochs, step=20)
    return {
        "cgcnn": (cgcnn, space),
        "strong_tabular": (make_strong_tabular(random_state=0), strong_tabular_space()),
    }


def pruning_savings(study: optuna.Study, inner_cv: int) -> dict:
    """Pruned trials, and the time their unrun folds would have taken (at their own pace)."""
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    saved = 0.0
    for trial in pruned:
        run = len(trial.user_attrs.get("fold_scores", [])) or 1
        saved += trial.user_attrs.get("seconds", 0.0) * (inner_cv - run) / run
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {"complete": len(complete), "pruned": len(pruned), "seconds_saved": saved}


def history(study: optuna.Study) -> list[float]:
    """Best inner-CV MAE so far after each finished trial."""
    best, out = np.inf, []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = min(best, -trial.value)
        out.append(best)
    return out


def run_fold(fold, train, test, X, y, args, storage) -> dict:
    mae = lambda model: float(np.mean(np.abs(model.predict(X.iloc[test]) - y[test])))  # noqa: E731
    start = time.perf_counter()
    default = clone(lines(args.max_epochs)["cgcnn"][0]).fit(X.iloc[train], y[train])
    record = {"default_cgcnn": {"test_mae": mae(default), "seconds": time.perf_counter() - start}}
    inner = KFold(args.inner_cv, shuffle=True, random_state=fold)
    cache = GraphCache(X.iloc[train])
    for name, (estimator, space) in lines(args.max_epochs).items():
        start = time.perf_counter()
        study = tune(estimator, X.iloc[train], y[train], space, n_trials=args.n_trials, cv=inner,
                     study_name=f"{args.task}-fold{fold}-{name}", storage=storage,
                     graph_cache=cache, sampler_seed=fold)  # fmt: skip
        tune_seconds = time.perf_counter() - start
        best = clone(estimator).set_params(**study.best_params).fit(X.iloc[train], y[train])
        record[f"tuned_{name}"] = {
            "test_mae": mae(best),
            "inner_cv_mae": -study.best_value,
            "best_params": study.best_params,
            "tune_seconds": tune_seconds,
            "history": history(study),
            **pruning_savings(study, args.inner_cv),
        }
        tuned, default = record[f"tuned_{name}"]["test_mae"], record["default_cgcnn"]["test_mae"]
        print(f"fold {fold} {name}: tuned {tuned:.3f}, default CGCNN {default:.3f}", flush=True)
    record["graph_cache_seconds_saved"] = cache.seconds_saved
    return record


def render(results: dict) -> str:
    folds = results["folds"]
    unit = UNITS.get(results["task"], "")
    rows = ["default_cgcnn", "tuned_cgcnn", "tuned_strong_tabular"]
    lines_ = [
        f"# Tuned head-to-head on {results['task']} ({len(folds)} of 5 official folds)",
        "",
        f"Nested: {results['args']['n_trials']} Optuna trials per line per fold, "
        f"{results['args']['inner_cv']}-fold inner CV on the training rows only, the first trial "
        f"being the default settings, median pruning after each inner fold; best parameters "
        f"refitted on the training rows and scored on "
        f"the fold's test rows. Machine: {results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores.",
        "",
        f"| model | test MAE ({unit}), mean ± std | trials complete / pruned | time saved by "
        "pruning | tuning time |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        maes = [f[row]["test_mae"] for f in folds.values()]
        if row == "default_cgcnn":
            trials, saved, seconds = "untuned defaults", "", ""
        else:
            complete = sum(f[row]["complete"] for f in folds.values())
            pruned = sum(f[row]["pruned"] for f in folds.values())
            trials = f"{complete} / {pruned}"
            saved = f"{sum(f[row]['seconds_saved'] for f in folds.values()) / 60:.1f} min"
            seconds = f"{sum(f[row]['tune_seconds'] for f in folds.values()) / 60:.1f} min"
        lines_.append(
            f"| {row} | {np.mean(maes):.3f} ± {np.std(maes):.3f} | {trials} | {saved} | {seconds} |"
        )
    if "note" in results:
        lines_ += ["", f"Note: {results['note']}"]
    lines_ += ["", f"| fold | {' | '.join(rows)} |", "|---|---|---|---|"]
    for fold, record in sorted(folds.items()):
        lines_.append(
            f"| {fold} | " + " | ".join(f"{record[r]['test_mae']:.3f}" for r in rows) + " |"
        )
    cache = sum(f["graph_cache_seconds_saved"] for f in folds.values())
    lines_ += ["", f"Graph reuse across trials saved {cache:.0f} s of graph construction.", ""]
    lines_ += ["![optimisation history](optimisation_history.png)", ""]
    return "\n".join(lines_)


def plot_history(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in zip(axes, ("tuned_cgcnn", "tuned_strong_tabular"), strict=True):
        for fold, record in sorted(results["folds"].items()):
            ax.plot(range(1, len(record[name]["history"]) + 1), record[name]["history"],
                    marker="o", label=f"fold {fold}")  # fmt: skip
        ax.set_title(name.replace("tuned_", ""))
        ax.set_xlabel("completed trial")
        ax.set_ylabel(f"best inner-CV MAE ({UNITS.get(results['task'], '')})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="matbench_jdft2d")
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument("--inner-cv", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=160)
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    folder = RESULTS / "tuned" / args.task if args.out is None else Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"folds": {}}
    df = load_dataset(args.task, data_home=data_home(args.data_home))
    X, y = df["structure"], df[TARGETS[args.task]].to_numpy()
    storage = f"sqlite:///{folder / 'studies.db'}"
    wanted = {int(f) for f in args.folds.split(",")}
    for fold, (train, test) in enumerate(MatbenchKFold().split(X)):
        if fold not in wanted or str(fold) in results["folds"]:
            continue
        record = run_fold(fold, train, test, X, y, args, storage)
        results = save_fold(folder, fold, record, {"task": args.task, "args": vars(args),
                                                   "machine": machine()})  # fmt: skip
    print(render(results))
    return results


def save_fold(folder: Path, fold: int, record: dict, meta: dict) -> dict:
    """Add one fold to the results on disk, re-read first: processes may split the folds."""
    path = folder / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"folds": {}}
    results.update(meta)
    results["folds"][str(fold)] = record
    write_json(path, results)
    (folder / "results.md").write_text(render(results))
    plot_history(results, folder / "optimisation_history.png")
    return results


if __name__ == "__main__":
    main()
