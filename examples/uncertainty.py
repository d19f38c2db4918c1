"""Uncertainty from a deep ensemble of CGCNNs, recalibrated on held-out training rows.

On the embedded matbench_jdft2d: five CGCNNs with different seeds, fitted two at a time,
their spread rescaled on 10 % of the training rows; then the calibration curve on the test
rows, and the most and least certain predictions, printed and drawn on the parity plot.
Offline, a few minutes on 2 cores:

    python examples/uncertainty.py --out examples/uncertainty.png
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
from skgnn.calibration import (  # noqa: E402
    RecalibratedRegressor,
    calibration_curve,
    error_std_spearman,
    miscalibration_area,
)
from skgnn.datasets import DATA_HOME  # noqa: E402
from skgnn.ensemble import DeepEnsembleRegressor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--out", default="uncertainty.png")
    args = parser.parse_args()

    df = load_dataset("matbench_jdft2d", data_home=DATA_HOME)
    structures, y = df["structure"], df["exfoliation_en"].to_numpy()
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:500], order[500:]
    ensemble = DeepEnsembleRegressor(
        CGCNNRegressor(max_epochs=args.max_epochs), n_estimators=args.members, n_jobs=2
    )
    model = make_pipeline(
        CrystalGraphTransformer(),
        RecalibratedRegressor(ensemble, held_out_fraction=0.1, method="coverage"),
    ).fit(structures.iloc[train], y[train])
    mean, std = model.predict(structures.iloc[test], return_std=True)
    raw = std / model[-1].std_scale_
    print(f"MAE {np.mean(np.abs(mean - y[test])):.1f} meV/atom; miscalibration area "
          f"{miscalibration_area(y[test], mean, raw):.3f} raw, "
          f"{miscalibration_area(y[test], mean, std):.3f} recalibrated; Spearman |error|-σ "
          f"{error_std_spearman(y[test], mean, std):.2f}")  # fmt: skip
    ranked = np.argsort(std)
    for title, rows in (("most certain", ranked[:3]), ("least certain", ranked[-3:])):
        print(title)
        for row in rows:
            formula = structures.iloc[test[row]].composition.reduced_formula
            print(f"  {formula:>12}: {mean[row]:7.1f} ± {std[row]:5.1f}  (DFT {y[test[row]]:.1f})")

    figure, (calibration, parity) = plt.subplots(1, 2, figsize=(10, 4.5))
    calibration.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="ideal")
    for label, spread in (("raw ensemble spread", raw), ("recalibrated", std)):
        calibration.plot(*calibration_curve(y[test], mean, spread), label=label)
    calibration.set(xlabel="expected fraction inside the interval", ylabel="observed fraction",
                    title="calibration, jdft2d test rows")  # fmt: skip
    calibration.legend()
    parity.errorbar(y[test], mean, yerr=std, fmt="o", ms=3, color="grey", alpha=0.5, lw=0.8,
                    label="prediction ± σ (recalibrated)")  # fmt: skip
    for label, rows, colour in (("most certain", ranked[:3], "tab:green"),
                                ("least certain", ranked[-3:], "tab:red")):  # fmt: skip
        formulas = [structures.iloc[test[row]].composition.reduced_formula for row in rows]
        parity.errorbar(y[test][rows], mean[rows], yerr=std[rows], fmt="o", ms=5, color=colour,
                        label=f"{label}: {', '.join(formulas)}")  # fmt: skip
    limits = [min(y[test].min(), mean.min()), max(y[test].max(), mean.max())]
    parity.plot(limits, limits, color="grey", ls="--", lw=1)
    parity.set(xlabel="DFT exfoliation energy (meV/atom)", ylabel="ensemble mean (meV/atom)",
               title="most and least certain predictions")  # fmt: skip
    parity.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
