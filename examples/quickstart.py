"""CGCNN against a matminer tabular model, on the official Matbench folds.

Runs offline on the dataset skgnn ships (matbench_jdft2d, 636 layered
materials) in a few minutes on a laptop CPU:

    python examples/quickstart.py

Any Matbench task works through matminer's loader, which reads
``$MATMINER_DATA`` when the file is there and downloads it otherwise:

    export MATMINER_DATA=../shared/datasets/matbench
    python examples/quickstart.py --task matbench_dielectric
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from matminer.datasets import load_dataset
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.baselines import make_rf_scm_magpie, make_strong_tabular
from skgnn.datasets import DATA_HOME, matbench_leaderboard
from skgnn.model_selection import MatbenchKFold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="matbench_jdft2d")
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--n-estimators", type=int, default=500)
    args = parser.parse_args()

    data_home = DATA_HOME if args.task == "matbench_jdft2d" else os.environ.get("MATMINER_DATA")
    df = load_dataset(args.task, data_home=data_home)
    structures, y = df["structure"], df.iloc[:, -1].to_numpy()
    print(f"{args.task}: {len(df)} structures, target {df.columns[-1]!r}")

    models = {
        "CGCNN (skgnn)": make_pipeline(
            CrystalGraphTransformer(), CGCNNRegressor(max_epochs=args.max_epochs, random_state=0)
        ),
        "RF-SCM/Magpie (skgnn.baselines)": make_rf_scm_magpie(
            n_estimators=args.n_estimators, random_state=0
        ),
        "Magpie + structure, gradient boosting (skgnn.baselines)": make_strong_tabular(
            random_state=0
        ),
    }
    rows = []
    for name, model in models.items():
        start = time.perf_counter()
        scores = -cross_val_score(
            model, structures, y, cv=MatbenchKFold(), scoring="neg_mean_absolute_error"
        )
        minutes = (time.perf_counter() - start) / 60
        rows.append((name, f"{scores.mean():.4f} ± {scores.std():.4f}", f"{minutes:.1f} min"))
        print(f"  {name}: fold MAEs {np.round(scores, 4).tolist()}")
    leaderboard = matbench_leaderboard().get(args.task, {})
    for name, mae in leaderboard.get("mae", {}).items():
        rows.append((f"Matbench leaderboard: {name}", f"{mae:.4f}", ""))

    unit = leaderboard.get("unit", "target units")
    print(f"\n| model | MAE ({unit}), 5 official folds | time |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
