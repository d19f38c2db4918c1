"""Calibrated uncertainty of both lines on the official Matbench folds.

    python -m benchmarks.uncertainty --task matbench_jdft2d
    python -m benchmarks.uncertainty --task matbench_perovskites --folds 0 --n-jobs 2

Lines: ``cgcnn_ensemble`` (a DeepEnsembleRegressor of CGCNNs with different seeds) and
``rf_scm_magpie`` (the forest's spread over its trees), each wrapped in a
RecalibratedRegressor that learns a scale and a noise floor for the spread inside the training
fold: the ensemble from 10 % of it held out, the (cheap) forest from out-of-fold predictions of
all of it (5 inner folds, then refitted on the whole fold). Per fold:
MAE of the mean, miscalibration area before and after recalibration, Spearman correlation of
|error| with σ, Gaussian NLL. Written as each fold ends under
``benchmarks/results/<task>/uncertainty.{json,md}`` with ``calibration.png``; each line keeps its
own settings, so a rerun skips the folds a line finished with the same ones, runs beside other
processes writing the same file (one fold or line each), and refuses to drop a line fitted
with other settings unless told to (``--replace``).
"""

from __future__ import annotations

import argparse
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

from .common import RESULTS, data_home, machine, official_folds, taking_turns, write_json
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


LINES = ("cgcnn_ensemble", "rf_scm_magpie")


def line_settings(name: str, args) -> dict:
    """What a resumed run of line ``name`` must share with the folds already written."""
    recalibration = {"recalibration": args.recalibration, "noise": not args.no_noise}
    if name == "cgcnn_ensemble":
        return {"members": args.members, "max_epochs": args.max_epochs,
                "ensemble_cv": args.ensemble_cv, **recalibration}  # fmt: skip
    return {"forest_cv": args.forest_cv, **recalibration}


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
        "The spread recalibrated inside each training fold (a scale, and with `noise` a constant "
        "added in quadrature): the ensemble's on 10 % of it held out (or, with `ensemble_cv`, "
        "on out-of-fold predictions of all of it), the forest's on out-of-fold predictions of all "
        "of it (`forest_cv` inner folds; `forest_cv` 0: on 10 % held out).",
        "",
        "| line | folds | MAE | mean member MAE | miscal. area raw → recal. | sampling floor | "
        "recal. area, all test rows pooled | sampling floor, pooled | Spearman abs(err)–σ | "
        "NLL raw → recal. |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, line in results["lines"].items():
        folds = line["folds"]
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
            f"{sampling_floor(int(np.mean(sizes))):.3f} | {pooled:.3f} | "
            f"{sampling_floor(sum(sizes)):.3f} | {mean_of('spearman_abs_error_std'):.2f} | "
            f"{mean_of('nll_raw'):.3g} → {mean_of('nll'):.3g} |"
        )
    lines += [
        "",
        "Sampling floor: the mean miscalibration area of a perfectly calibrated Gaussian model "
        "on as many test rows (a fold's, or all the line's folds' pooled; 400 simulated draws): "
        "an area near it is as calibrated as these rows can show.",
    ]
    lines.append("")
    for name, line in results["lines"].items():
        where = f"{line['machine']['cpu']}, {line['machine']['cores']} cores"
        lines.append(f"- {name}: `{line['command']}` ({where}); settings {line['settings']}")
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
    for name, line in results["lines"].items():
        if not line["folds"]:
            continue
        y, mean, std = _pooled(line["folds"])
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
    parser.add_argument(
        "--replace",
        action="store_true",
        help="start over a line written with other settings (without it, such a run stops)",
    )
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--out", type=Path, default=None, help="default results/<task>")
    args = parser.parse_args(argv)
    folds = official_folds(parser, args.folds)
    names = args.lines.split(",")
    if unknown := sorted(set(names) - set(LINES)):
        parser.error(f"unknown line(s) {unknown}; choose from {list(LINES)}")
    folder = args.out or RESULTS / args.task
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "uncertainty.json"
    command = line_command(sys.argv[1:] if argv is None else argv)
    mine = {name: {"settings": line_settings(name, args), "machine": machine(), "folds": {},
                   "command": command}
            for name in names}  # fmt: skip
    with taking_turns(path) as stored:
        stored_lines = (stored or {}).get("lines", {})
    for name, line in mine.items():
        other = stored_lines.get(name, line)["settings"]
        if other != line["settings"] and not args.replace:
            parser.error(
                f"{path} holds {name} fitted with {other}, not {line['settings']}: pass "
                "--replace to start that line over, or --out to write elsewhere"
            )
    X, y, _ = load_task(args.task, data_home(args.data_home))
    splits = list(MatbenchKFold().split(X))
    models = _lines(args)
    for name, line in mine.items():
        for fold in folds:
            if str(fold) in _merged(path, args.task, mine)["lines"][name]["folds"]:
                continue  # finished before, or by another process meanwhile
            train, test = splits[fold]
            record = fold_record(models[name], X, y, train, test)
            line["folds"][str(fold)] = record
            print(name, fold, {k: v for k, v in record.items() if np.isscalar(v)})
            _merged(path, args.task, mine, write=True)
    return _merged(path, args.task, mine)


def line_command(argv: list[str]) -> str:
    """The command that reruns a line: without ``--folds`` and ``--replace``.

    A line's folds may come from several processes, each given other ``--folds``; the
    command stored with them must run them all, and resume rather than start over.
    """
    kept, skip_value = [], False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg == "--folds":
            skip_value = True
        elif arg != "--replace" and not arg.startswith("--folds="):
            kept.append(arg)
    return " ".join(["python -m benchmarks.uncertainty", *kept])


def _merged(path: Path, task: str, mine: dict, write: bool = False) -> dict:
    """What ``path`` holds now with this run's lines in it, written with its table and plot.

    Under ``path``'s lock, so that processes sharing the file each add their folds to what the
    others stored. A stored line's folds join this run's only if its settings are the same;
    else this run's line takes its place (``main`` asks for ``--replace`` first).
    """
    with taking_turns(path) as stored:
        results = stored or {"task": task, "lines": {}}
        for name, line in mine.items():
            kept = results["lines"].get(name, line)
            if kept["settings"] == line["settings"]:
                line["folds"] = {**kept["folds"], **line["folds"]}
            results["lines"][name] = line
        if write:
            write_json(path, results)
            (path.parent / "uncertainty.md").write_text(render(results))
            plot(results, path.parent / "calibration.png")
    return results


if __name__ == "__main__":
    main()
