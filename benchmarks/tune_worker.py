"""One tuning worker: joins (or creates) a study on any Optuna storage and adds trials.

    python -m benchmarks.tune_worker --storage postgresql+psycopg2://user@host/db \
        --study jdft2d-cgcnn --task matbench_jdft2d --n-trials 16

Start the same command on as many processes and machines as you like: they share
the study through the storage and stop together once it holds ``--n-trials``
finished trials. ``benchmarks/tune_postgres.sh`` runs several against a
PostgreSQL server it starts itself.
"""

from __future__ import annotations

import argparse

import optuna
from matminer.datasets import load_dataset
from optuna.distributions import IntDistribution
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.tuning import cgcnn_space, tune

from .common import data_home
from .leaderboard import TARGETS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", default="skgnn")
    parser.add_argument("--task", default="matbench_jdft2d")
    parser.add_argument("--n-trials", type=int, default=16)
    parser.add_argument("--max-epochs", type=int, default=80)
    parser.add_argument("--subsample", type=int, default=None, help="first N rows only")
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    df = load_dataset(args.task, data_home=data_home(args.data_home)).iloc[: args.subsample]
    pipe = make_pipeline(CrystalGraphTransformer(), CGCNNRegressor(random_state=0))
    space = cgcnn_space()
    space["cgcnnregressor__max_epochs"] = IntDistribution(20, args.max_epochs, step=20)
    X, y = df["structure"], df[TARGETS[args.task]].to_numpy()
    study = tune(
        pipe, X, y, space, n_trials=args.n_trials, cv=3, study_name=args.study, storage=args.storage
    )
    print(f"study {args.study}: {len(study.trials)} trials, best CV MAE {-study.best_value:.3f}")


if __name__ == "__main__":
    main()
