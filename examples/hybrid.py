"""The two lines and their hybrid, side by side on one official Matbench fold.

On the embedded matbench_jdft2d (official fold 0 by default): the CGCNN, gradient
boosting on matminer's Magpie + structure features, and the hybrid of the two
(:func:`skgnn.hybrid.make_hybrid`: the booster gets the CGCNN's prediction as one more
feature, cross-fitted so that no training row's feature comes from a network that saw
its target). Offline, a few minutes on 2 cores:

    python examples/hybrid.py            # writes hybrid.png

The hybrid's network fitted on all training rows is the CGCNN line itself (same
settings, same seed), so the CGCNN is read from the fitted hybrid rather than trained
twice.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matminer.datasets import load_dataset  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from skgnn import CGCNNRegressor, CrystalGraphTransformer  # noqa: E402
from skgnn.baselines import make_strong_tabular  # noqa: E402
from skgnn.datasets import DATA_HOME, matbench_leaderboard  # noqa: E402
from skgnn.hybrid import make_hybrid  # noqa: E402
from skgnn.model_selection import MatbenchKFold  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, default=0, help="official Matbench fold, 0-4")
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--inner-folds", type=int, default=5, help="cross-fitting folds")
    parser.add_argument("--out", default="hybrid.png")
    args = parser.parse_args()

    df = load_dataset("matbench_jdft2d", data_home=DATA_HOME)
    structures, y = df["structure"], df["exfoliation_en"].to_numpy()
    train, test = list(MatbenchKFold().split(structures, y))[args.fold]

    cgcnn = make_pipeline(
        CrystalGraphTransformer(), CGCNNRegressor(max_epochs=args.max_epochs, random_state=0)
    )
    hybrid = make_hybrid(cgcnn, cv=args.inner_folds, random_state=0)
    hybrid.fit(structures.iloc[train], y[train])
    network = dict(hybrid.named_steps["features"].transformer_list)["graph_network"]
    tabular = make_strong_tabular(random_state=0).fit(structures.iloc[train], y[train])

    predictions = {
        "CGCNN": network.estimator_.predict(structures.iloc[test]),
        "Magpie + structure, gradient boosting": tabular.predict(structures.iloc[test]),
        "hybrid": hybrid.predict(structures.iloc[test]),
    }
    maes = {name: float(np.mean(np.abs(p - y[test]))) for name, p in predictions.items()}
    print(f"matbench_jdft2d, official fold {args.fold}: {len(train)} training, "
          f"{len(test)} test structures; MAE (meV/atom)")  # fmt: skip
    for name, mae in maes.items():
        print(f"  {name}: {mae:.2f}")
    leaderboard = matbench_leaderboard()["matbench_jdft2d"]["mae"]
    best = min(leaderboard, key=leaderboard.get)
    print(f"  (leaderboard best over 5 folds, {best}: {leaderboard[best]:.2f})")

    figure, axes = plt.subplots(1, 3, figsize=(12, 4.2), sharex=True, sharey=True)
    limit = [0, float(np.percentile(y[test], 99)) * 1.1]
    for ax, (name, predicted) in zip(axes, predictions.items(), strict=True):
        ax.plot(limit, limit, color="0.6", lw=1)
        ax.scatter(y[test], predicted, s=10, alpha=0.6)
        ax.set_title(f"{name}\nMAE {maes[name]:.1f} meV/atom", fontsize=10)
        ax.set_xlabel("DFT exfoliation energy (meV/atom)")
        ax.set_xlim(limit)
        ax.set_ylim(limit)
    axes[0].set_ylabel("predicted (meV/atom)")
    figure.suptitle(f"matbench_jdft2d, official fold {args.fold}: the two lines and their hybrid")
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
