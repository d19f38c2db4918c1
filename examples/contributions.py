"""Per-site contributions: a CGCNN whose prediction is exactly the sum of its sites' shares.

Trains on the embedded matbench_jdft2d (exfoliation energies, meV/atom) with the head
applied to every atom and the pooling last (``module__readout="atom"``), then draws the
contributions of one crystal's sites. Offline, about a minute on 2 cores:

    python examples/contributions.py            # writes contributions.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matminer.datasets import load_dataset  # noqa: E402

from skgnn import CGCNNRegressor, CrystalGraphTransformer  # noqa: E402
from skgnn.datasets import DATA_HOME  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", type=int, default=0, help="which test structure to draw")
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--out", default="contributions.png")
    args = parser.parse_args()

    df = load_dataset("matbench_jdft2d", data_home=DATA_HOME)
    structures, y = df["structure"], df["exfoliation_en"].to_numpy()
    train, test = slice(0, 500), slice(500, None)
    transformer = CrystalGraphTransformer()
    graphs = transformer.transform(structures)
    model = CGCNNRegressor(
        module__readout="atom", module__pooling="mean", max_epochs=args.max_epochs, random_state=0
    ).fit(graphs[train], y[train])

    table = model.predict_contributions(graphs[test])
    crystal = table[table["structure"] == args.row]
    structure = structures.iloc[500 + args.row]
    predicted = model.predict(graphs[test][[args.row]])[0]
    print(f"{structure.composition.reduced_formula}: predicted {predicted:.1f} meV/atom "
          f"(mean of its {len(crystal)} sites' contributions: "
          f"{crystal['contribution'].mean():.1f}; DFT {y[500 + args.row]:.1f})")  # fmt: skip
    print(crystal.to_string(index=False))

    figure, axis = plt.subplots(figsize=(max(4, 0.45 * len(crystal)), 3.5))
    labels = [f"{e}{s}" for e, s in zip(crystal["element"], crystal["site"], strict=True)]
    axis.bar(labels, crystal["contribution"], color="tab:blue")
    axis.axhline(predicted, color="tab:red", lw=1, label=f"prediction (mean) {predicted:.1f}")
    axis.set(ylabel="contribution (meV/atom)",
             title=f"{structure.composition.reduced_formula}: site contributions")  # fmt: skip
    axis.tick_params(axis="x", rotation=60)
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
