"""Tune CGCNN and a tabular model with the same Optuna budget, then compare them.

Runs offline on the dataset skgnn ships (matbench_jdft2d):

    python examples/tune.py                      # 6 trials per line, ~10 min on 2 cores
    python examples/tune.py --n-trials 30        # a real budget; rerun to resume

Both studies live in ``tune-example.db`` (SQLite; ``tune`` keeps studies in
memory unless given a storage): stop the script at any time and run it again,
finished trials are kept. The studies record what they tune, so an edited line
or search space is refused until you pass another ``--storage``. Each line gets the same
folds and the same number of trials; the first trial of each is its default
settings. For an honest test score, tune inside each outer fold as
``benchmarks/tuned.py`` does; this example only compares the lines' CV scores.
"""

from __future__ import annotations

import argparse

import optuna
from matminer.datasets import load_dataset
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.baselines import make_strong_tabular
from skgnn.datasets import DATA_HOME
from skgnn.tuning import cgcnn_space, compare, strong_tabular_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=6)
    parser.add_argument("--storage", default="sqlite:///tune-example.db")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    df = load_dataset("matbench_jdft2d", data_home=DATA_HOME)
    X, y = df["structure"], df["exfoliation_en"].to_numpy()
    lines = {
        "cgcnn": (
            make_pipeline(CrystalGraphTransformer(), CGCNNRegressor(random_state=0)),
            cgcnn_space(),
        ),
        "strong_tabular": (make_strong_tabular(random_state=0), strong_tabular_space()),
    }
    table = compare(lines, X, y, n_trials=args.n_trials, storage=args.storage,
                    cv=KFold(3, shuffle=True, random_state=0), sampler_seed=0)  # fmt: skip
    table["cv_mae"] = -table.pop("cv_score")
    print(table[["model", "cv_mae", "cv_std", "complete", "pruned", "seconds"]].to_string())
    for _, row in table.iterrows():
        print(f"\n{row['model']} best parameters: {row['best_params']}")


if __name__ == "__main__":
    main()
