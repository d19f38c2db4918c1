"""Calibrated uncertainty of both lines on the official Matbench folds.

    python -m benchmarks.uncertainty --task matbench_jdft2d
    python -m benchmarks.uncertainty --task matbench_perovskites --folds 0 --n-jobs 2

Lines: ``cgcnn_ensemble`` (a DeepEnsembleRegressor of CGCNNs with different seeds) and
``rf_scm_magpie`` (the forest's spread over its trees), each wrapped in a
RecalibratedRegressor that learns a scale and a noise floor for the spread inside the training
fold: the ensemble from 10 % of it held out, the (cheap) forest from out-of-fold predictions of
all of it (5 inner folds, then refitted on the whole fold). Per fold:
MAE of the mean, miscalibration area before and after recalibration, Spearman correlation of
|error| with σ, Gaussian NLL. Written as each fold ends (a rerun skips finished folds) under
``benchmarks/results/<task>/uncertainty.{json,md}`` with ``calibration.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.baselines import make_rf_scm_magpie
from skgnn.calibration import (
    RecalibratedRegressor,
    calibration_curve,
    combined_std,
    error_std_spearman,
    gaussian_nll,
    miscalibration_area,
)
from skgnn.ensemble import DeepEnsembleRegressor
from skgnn.model_selection import MatbenchKFold

from .common import RESULTS, data_home, machine, write_json
from .matbench import load_task


def _lines(args) -> dict:
    net = CGCNNRegressor(**({"max_epochs": args.max_epochs} if args.max_epochs else {}))
    ensemble = DeepEnsembleRegressor(net, n_estimators=args.members, n_jobs=args.n_jobs)
    recalibration = {"method": args.recalibration, "noise": not args.no_noise}
    return {
        "cgcnn_ensemble": make_pipeline(
            CrystalGraphTransformer(),
            RecalibratedRegressor(
                ensemble, held_out_fraction=0.1, cv=args.ensemble_cv, **recalibration
            ),
        ),
        "rf_scm_magpie": RecalibratedRegressor(
            make_rf_scm_magpie(random_state=0), cv=args.forest_cv or None, **recalibration
        ),
    }


def settings(args) -> dict:
    """What a resumed run must share with the folds already written."""
    return {"members": args.members, "max_epochs": args.max_epochs,
            "recalibration": args.recalibration, "noise": not args.no_noise,
            **({"ensemble_cv": args.ensemble_cv} if args.ensemble_cv else {}),
            **({"forest_cv": args.forest_cv} if args.forest_cv != 5 else {})}  # fmt: skip


def fold_record(model, X, y, train, test) -> dict:
    start = time.perf_counter()
    model.fit(X.iloc[train], y[train])
    fit_s = time.perf_counter() - start
    recalibrated = model[-1] if hasattr(model, "steps") else model
    test_X = model[:-1].transform(X.iloc[test]) if hasattr(model, "steps") else X.iloc[test]
    # one prediction gives both spreads: recalibrating is a formula on the raw one
    mean, raw_std = recalibrated.estimator_.predict(test_X, return_std=True)
    std = combined_std(raw_std, recalibrated.std_scale_, recalibrated.noise_std_)
    y_test = y[test]
    record = {
        "mae": float(np.mean(np.abs(mean - y_test))),
        "miscalibration_area_raw": miscalibration_area(y_test, mean, raw_std),
        "miscalibration_area": miscalibration_area(y_test, mean, std),
        "spearman_abs_error_std": error_std_spearman(y_test, mean, std),
        "nll_raw": gaussian_nll(y_test, mean, raw_std),
        "nll": gaussian_nll(y_test, mean, std),
        "std_scale": recalibrated.std_scale_,
        "noise_std": recalibrated.noise_std_,
        "fit_s": fit_s,
        "y_true": y_test.tolist(),
        "y_mean": np.asarray(mean).tolist(),
        "y_std": np.asarray(std).tolist(),
    }
    inner = recalibrated.estimator_
    if isinstance(inner, DeepEnsembleRegressor):  # the members' own MAEs: is the mean better?
        record["member_mae"] = [
            float(np.mean(np.abs(member.predict(test_X) - y_test))) for member in inner.estimators_
        ]
    return record


def render(results: dict) -> str:
    lines = [
        f"# {results['task']}: calibrated uncertainty on the Matbench v0.1 folds",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores. "
        f"Command: `{results['command']}`. Settings: {results.get('settings', {})}.",
        "The spread recalibrated inside each training fold (a scale, and with `noise` a constant "
        "added in quadrature): the ensemble's on 10 % of it held out (or, with `ensemble_cv`, "
        "on out-of-fold predictions of all of it), the forest's on out-of-fold predictions of all "
        "of it (`forest_cv` inner folds, 5 unless stated; `forest_cv` 0: on 10 % held out).",
        "",
        "| line | folds | MAE | mean member MAE | miscal. area raw → recal. | recal. area, "
        "all test rows pooled | Spearman abs(err)–σ | NLL raw → recal. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sizes = []
    for name, folds in results["lines"].items():
        if not folds:
            continue

        def mean_of(key: str, folds: dict = folds) -> float:
            return float(np.mean([f[key] for f in folds.values()]))

        members = [np.mean(f["member_mae"]) for f in folds.values() if "member_mae" in f]
        member_text = f"{np.mean(members):.4g}" if members else ""
        pooled = miscalibration_area(*_pooled(folds))
        sizes = [len(f["y_true"]) for f in folds.values()]
        lines.append(
            f"| {name} | {len(folds)} | {mean_of('mae'):.4g} ± "
            f"{np.std([f['mae'] for f in folds.values()]):.2g} | {member_text} | "
            f"{mean_of('miscalibration_area_raw'):.3f} → {mean_of('miscalibration_area'):.3f} | "
            f"{pooled:.3f} | {mean_of('spearman_abs_error_std'):.2f} | "
            f"{mean_of('nll_raw'):.3g} → {mean_of('nll'):.3g} |"
        )
    if sizes:
        lines += ["", "Sampling floor: a perfectly calibrated Gaussian model shows a mean "
                  f"miscalibration area of {sampling_floor(int(np.mean(sizes))):.3f} on test folds "
                  f"of {int(np.mean(sizes))} rows and {sampling_floor(sum(sizes)):.3f} on all "
                  f"{sum(sizes)} pooled (400 simulated draws)."]  # fmt: skip
    lines += ["", "![calibration](calibration.png)", ""]
    return "\n".join(lines)


def _pooled(folds: dict) -> tuple[np.ndarray, ...]:
    """Targets, means and spreads of every fold's test rows, joined."""
    return tuple(np.concatenate([f[k] for f in folds.values()])
                 for k in ("y_true", "y_mean", "y_std"))  # fmt: skip


def sampling_floor(n_rows: int, draws: int = 400) -> float:
    """Mean miscalibration area of ``n_rows`` errors drawn from the very Gaussian predicted."""
    rng = np.random.default_rng(0)
    return float(np.mean([miscalibration_area(rng.normal(size=n_rows), 0.0, 1.0)
                          for _ in range(draws)]))  # fmt: skip


def plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="ideal")
    for name, folds in results["lines"].items():
        if not folds:
            continue
        y, mean, std = _pooled(folds)
        expected, observed = calibration_curve(y, mean, std)
        axis.plot(expected, observed, label=name)
    axis.set(xlabel="expected fraction inside the interval", ylabel="observed fraction",
             title=results["task"])  # fmt: skip
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="matbench_jdft2d")
    parser.add_argument("--lines", default="cgcnn_ensemble,rf_scm_magpie")
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--recalibration", default="coverage", choices=["likelihood", "coverage"])
    parser.add_argument("--no-noise", action="store_true", help="learn the scale only")
    parser.add_argument(
        "--ensemble-cv",
        type=int,
        default=None,
        help="recalibrate the ensemble on out-of-fold predictions of every "
        "training row (k + 1 ensemble fits) instead of 10 %% held out",
    )
    parser.add_argument(
        "--forest-cv",
        type=int,
        default=5,
        help="inner folds of the forest's recalibration; 0: 10 %% held out",
    )
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--out", type=Path, default=None, help="default results/<task>")
    args = parser.parse_args(argv)
    X, y, _ = load_task(args.task, data_home(args.data_home))
    folder = args.out or RESULTS / args.task
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "uncertainty.json"
    given = sys.argv[1:] if argv is None else argv
    results = {"task": args.task, "machine": machine(), "lines": {}, "settings": settings(args),
               "command": " ".join(["python -m benchmarks.uncertainty", *given])}  # fmt: skip
    if path.exists():
        written = json.loads(path.read_text())
        if written.get("settings") == results["settings"]:
            results["lines"] = written["lines"]
        else:
            print(f"{path} was written with other settings; starting over")
    splits = list(MatbenchKFold().split(X))
    lines = _lines(args)
    for name in args.lines.split(","):
        folds = results["lines"].setdefault(name, {})
        for fold in map(int, args.folds.split(",")):
            if str(fold) in folds:
                continue
            train, test = splits[fold]
            folds[str(fold)] = fold_record(lines[name], X, y, train, test)
            print(name, fold, {k: v for k, v in folds[str(fold)].items() if np.isscalar(v)})
            write_json(path, results)
            (folder / "uncertainty.md").write_text(render(results))
            plot(results, folder / "calibration.png")
    return results


if __name__ == "__main__":
    main()
