"""Ablation of MessageNet's ingredients, one at a time, against the CGCNN (issue #14).

    python -m benchmarks.ablation                                   # every row, both tasks
    python -m benchmarks.ablation --task matbench_jdft2d --rows cgcnn,message,neighbors_12
    python -m benchmarks.ablation --subsample 100 --max-epochs 2 --out /tmp/ablation  # smoke

Rows: ``cgcnn`` (the default CGCNN), ``message`` (MessageNet as the Matbench ``message``
row trains it: 24 neighbours, edge MLP of 2 layers of 128, sum aggregation, Gaussians,
200 epochs (perovskites and dielectric 100), MAE loss) and one change of ``message`` each:
``neighbors_12``, ``edge_layers_1``, ``edge_layers_3``, ``mean``, ``radial`` (smooth-cutoff
sine basis), ``pool_all`` (pool the mean of all layers), ``width_64``, ``huber`` (the
CGCNN's loss), ``epochs_half`` and ``epochs_double`` (schedule length), ``angles`` (M3GNet's
three-body term on the bond angles, :mod:`skgnn.angles`). Tasks: jdft2d on
its 5 official folds, perovskites on official fold 0 (``--folds`` overrides). Each row and
fold records the test MAE, seconds per epoch, the fit's total seconds and the network's
parameter count, and is written to ``benchmarks/results/ablation/ablation.json`` as soon
as it ends; a rerun skips what is done with the same settings, and a fold that
``benchmarks.matbench`` already ran with the same settings (the ``message`` row is its
``message`` model) is taken from that run's ``results.json`` instead of trained again.
Processes given other ``--rows`` (one per core) can run side by side: each takes in the rows
the others finished before it writes. ``ablation.md`` is the table (mean over the folds run).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.model_selection import MatbenchKFold

from .common import (
    RESULTS,
    data_home,
    machine,
    official_folds,
    take_missing_folds,
    taking_turns,
    write_json,
)
from .leaderboard import LEADERBOARD_MAE, UNITS
from .matbench import load_task, message_epochs, message_pipeline, model_params, run_fold

FOLDER = RESULTS / "ablation"
N_FOLDS = MatbenchKFold().get_n_splits()
TASK_FOLDS = {"matbench_jdft2d": list(range(N_FOLDS)), "matbench_perovskites": [0]}


def _cgcnn(task: str, fold: int, epochs: int | None) -> BaseEstimator:
    extra = {"max_epochs": epochs} if epochs else {}
    return make_pipeline(CrystalGraphTransformer(), CGCNNRegressor(random_state=fold, **extra))


def _message(transformer: dict | None = None, scale_epochs: float = 1.0, **net) -> Callable:
    def build(task: str, fold: int, epochs: int | None) -> BaseEstimator:
        schedule = max(1, round((epochs or message_epochs(task)) * scale_epochs))
        return message_pipeline(fold, transformer, max_epochs=schedule, **net)

    return build


#: Row name -> (what changes, factory(task, fold, max_epochs override or None)).
ROWS: dict[str, tuple[str, Callable[[str, int, int | None], BaseEstimator]]] = {
    "cgcnn": ("the CGCNN, skgnn's defaults (12 neighbours, 100 epochs)", _cgcnn),
    "message": ("MessageNet, the Matbench row's settings", _message()),
    "neighbors_12": ("12 neighbours instead of 24", _message({"max_neighbors": 12})),
    "edge_layers_1": ("edge MLP of 1 layer", _message(module__edge_layers=1)),
    "edge_layers_3": ("edge MLP of 3 layers", _message(module__edge_layers=3)),
    "mean": ("mean aggregation instead of sum", _message(module__aggregation="mean")),
    "radial": ("smooth-cutoff radial basis (16) instead of Gaussians",
               _message(module__edge_basis="radial")),
    "pool_all": ("pool the mean of all layers", _message(module__pool_layers="all")),
    "width_64": ("atom vectors and edge MLPs 64 wide instead of 128 (~half the time)",
                 _message(module__atom_fea_len=64, module__edge_width=64, module__h_fea_len=64)),
    "huber": ("Huber loss (the CGCNN's) instead of MAE",
              _message(criterion=torch.nn.SmoothL1Loss)),
    "epochs_half": ("half the schedule", _message(scale_epochs=0.5)),
    "epochs_double": ("twice the schedule", _message(scale_epochs=2.0)),
    # jdft2d fold 0's 508 training rows, one thread, on a loaded 2-core machine: 1.9 s an
    # epoch without, 2.0-3.3 s with (434,074 triplets, 4.9 an edge); one 64-graph batch's
    # forward and backward 226 vs 245 ms, the triplets 14 ms of it
    "angles": ("three-body term: bond angles of edges within 4 Å (Legendre l ≤ 3), M3GNet style",
               _message(module__three_body=True)),
}  # fmt: skip


def parameter_count(pipeline: BaseEstimator) -> int:
    """Trainable parameters of the fitted network (the contract's tensors are not parameters)."""
    return sum(p.numel() for p in pipeline[-1].module_.parameters())


def matbench_fold(task: str, fold: int, params: dict, folder: Path | None = None) -> dict | None:
    """The record of ``fold`` that ``benchmarks.matbench`` wrote for a model of these ``params``.

    Looks through every ``results.json`` of the task's folder (reruns in subfolders
    too) run on all rows; ``None`` where no model of exactly these settings ran the fold.
    """
    folder = folder or RESULTS
    for path in sorted((folder / task).glob("**/results.json")):
        run = json.loads(path.read_text())
        if run.get("data", {}).get("subsample"):
            continue
        for model in run.get("models", {}).values():
            record = model.get("folds", {}).get(str(fold))
            if record is not None and record["params"] == params:
                return {**record, "source": str(path.relative_to(folder))}
    return None


def _from_matbench(record: dict, estimator: BaseEstimator, X, y, train) -> dict:
    """A matbench fold record as an ablation fold, and the network's parameter count."""
    net = estimator[-1]
    epochs = record.get("epochs", net.max_epochs)  # no early stopping in these rows
    fold = {key: record[key] for key in ("mae", "fit_s", "peak_rss_mb", "n_train", "params")}
    fold.update(epochs=epochs, source=record["source"])
    if "seconds_per_epoch" in record:
        fold["seconds_per_epoch"] = record["seconds_per_epoch"]
    else:  # written before matbench timed epochs: the fit's total (graphs built too) / epochs
        fold.update(seconds_per_epoch=record["fit_s"] / epochs, seconds_per_epoch_upper=True)
    # the same network, initialised on three training rows, has the same parameters
    probe = clone(estimator).set_params(**{f"{estimator.steps[-1][0]}__max_epochs": 1})
    fold["parameters"] = parameter_count(probe.fit(X.iloc[train[:3]], y[train[:3]]))
    return fold


def run_row(task: str, row: str, args, X, y, splits, results: dict, save, settings: dict) -> None:
    """Run ``row`` on the task's folds, skipping folds stored with the same settings.

    Stored folds of other settings are dropped, whether this run fits them again or not.
    ``settings[task][row]`` receives every fold's parameters, so that ``save`` takes in only
    the folds that other processes finished with these settings.
    """
    what, factory = ROWS[row]
    stored = results["tasks"].setdefault(task, {}).setdefault(row, {"what": what, "folds": {}})
    # every official fold, so that folds run before with other --folds are judged too
    estimators = {f: factory(task, f, args.max_epochs) for f in range(N_FOLDS)}
    expected = settings.setdefault(task, {}).setdefault(row, {})
    expected.update({str(fold): model_params(est) for fold, est in estimators.items()})
    # folds stored with other settings leave, run or not, so a row never mixes settings
    stored["folds"] = {k: v for k, v in stored["folds"].items() if v["params"] == expected[k]}
    for fold in args.folds or TASK_FOLDS[task]:
        estimator = estimators[fold]
        params = expected[str(fold)]
        done = stored["folds"].get(str(fold))
        if done is not None:
            print(f"{task} {row:>14} fold {fold}: done before, MAE {done['mae']:.4g}", flush=True)
            continue
        recorded = None if args.subsample else matbench_fold(task, fold, params)
        if recorded is not None:
            stored["folds"][str(fold)] = _from_matbench(recorded, estimator, X, y, splits[fold][0])
            save()
            print(f"{task} {row:>14} fold {fold}: from {recorded['source']}, "
                  f"MAE {recorded['mae']:.4g}", flush=True)  # fmt: skip
            continue
        record, fitted = run_fold(estimator, X, y, *splits[fold])
        per_epoch = record["seconds_per_epoch"]
        stored["folds"][str(fold)] = {
            "mae": record["mae"], "fit_s": record["fit_s"], "epochs": record["epochs"],
            "seconds_per_epoch": per_epoch, "parameters": parameter_count(fitted),
            "peak_rss_mb": record["peak_rss_mb"], "n_train": record["n_train"],
            "params": params,
        }  # fmt: skip
        save()
        print(
            f"{task} {row:>14} fold {fold}: MAE {record['mae']:.4g}, "
            f"{per_epoch:.2f} s/epoch, fit {record['fit_s']:.0f} s",
            flush=True,
        )


def merge_finished_rows(results: dict, stored: dict, settings: dict) -> None:
    """Take into ``results`` the folds that other processes stored meanwhile.

    Folds this process runs are taken only with its settings (``settings[task][row]``, fold ->
    parameters); the folds this process holds win.
    """
    if stored.get("data") != results["data"]:
        return
    for task, rows in stored["tasks"].items():
        for row, record in rows.items():
            mine = results["tasks"].setdefault(task, {}).setdefault(row, {**record, "folds": {}})
            take_missing_folds(mine["folds"], record["folds"], settings.get(task, {}).get(row, {}))


def render(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Ablation: MessageNet's ingredients one at a time (issue #14)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['packages']['torch']} with "
        f"{m['torch_threads']} threads. Made by `python -m benchmarks.ablation`, row by row "
        "(`--task <task> --rows <row>`, processes side by side); the latest command: "
        f"`{results['command']}`.",
        "Each row changes one setting of `message` (MessageNet as `python -m benchmarks.matbench "
        "--models message` trains it). MAE: mean ± std over the folds run (official Matbench "
        "v0.1 folds); time: seconds per epoch (skorch's epoch time, mean over folds; '≤' where "
        "some folds come from a matbench run that timed only the whole fit, whose total is then "
        "divided by the epochs) and the total fit time (graphs built included). Folds that "
        "`benchmarks.matbench` ran with the same settings are taken from its results.",
    ]
    if results["data"].get("subsample"):
        lines += ["", f"**Smoke run: {results['data']['subsample']} rows subsampled before "
                  "splitting; not comparable with the leaderboard.**"]  # fmt: skip
    for task, rows in results["tasks"].items():
        unit = UNITS.get(task, "")
        lines += ["", f"## {task}", "",
                  f"| row | change | folds | MAE ({unit}) | s / epoch | epochs | fit total | "
                  "parameters |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for row, stored in sorted(rows.items(), key=lambda item: list(ROWS).index(item[0])):
            folds = list(stored["folds"].values())
            if not folds:
                continue
            mae = np.array([f["mae"] for f in folds])
            upper = "≤ " if any(f.get("seconds_per_epoch_upper") for f in folds) else ""
            lines.append(
                f"| {row} | {stored['what']} | {len(folds)} | {mae.mean():.4g} ± {mae.std():.2g} "
                f"| {upper}{np.mean([f['seconds_per_epoch'] for f in folds]):.2f} "
                f"| {folds[0]['epochs']} | {sum(f['fit_s'] for f in folds):.0f} s "
                f"| {folds[0]['parameters']:,} |"
            )
        for name in ("CGCNN", "ALIGNN", "coGN"):
            if name in LEADERBOARD_MAE.get(task, {}):
                lines.append(f"| {name} (Matbench leaderboard) | | 5 | "
                             f"{LEADERBOARD_MAE[task][name]:.4g} | | | | |")  # fmt: skip
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="all", help=f"one of {sorted(TASK_FOLDS)}, or all")
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated, from {list(ROWS)}"
    )
    parser.add_argument("--folds", default=None, help="override, e.g. 0 or 0,1,2,3,4")
    parser.add_argument(
        "--max-epochs", type=int, default=None,
        help="epochs of every row (the epochs_* rows scale it); smoke runs",
    )  # fmt: skip
    parser.add_argument("--subsample", default=None, help="rows (100) or a fraction; smoke runs")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--out", type=Path, default=None, help=f"default {FOLDER}")
    args = parser.parse_args(argv)
    args.tasks = list(TASK_FOLDS) if args.task == "all" else [args.task]
    unknown = [t for t in args.tasks if t not in TASK_FOLDS]
    if unknown:
        parser.error(f"unknown task {unknown[0]!r}; choose from {sorted(TASK_FOLDS)} or all")
    args.rows = args.rows.split(",")
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown row {unknown[0]!r}; choose from {list(ROWS)}")
    args.folds = official_folds(parser, args.folds) if args.folds else None
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    folder = args.out or FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ablation.json"
    data = {"subsample": args.subsample}
    results = json.loads(path.read_text()) if path.exists() else {}
    if results.get("data") != data:  # other rows of data: start afresh, keep the old file aside
        if path.exists():
            path.replace(folder / "ablation.replaced.json")
        results = {"data": data, "tasks": {}}
    command = "python -m benchmarks.ablation " + " ".join(argv or [])
    results.update(machine=machine(), command=command.strip())

    settings: dict[str, dict[str, dict]] = {}

    def save() -> None:
        # processes running other rows into this folder take turns and keep each other's folds
        with taking_turns(path) as stored:
            if stored is not None:
                merge_finished_rows(results, stored, settings)
            write_json(path, results, indent=1)
            (folder / "ablation.md").write_text(render(results))

    home = data_home(args.data_home)
    for task in args.tasks:
        X, y, _ = load_task(task, home, args.subsample)
        splits = list(MatbenchKFold().split(np.zeros(len(y))))
        for row in args.rows:
            run_row(task, row, args, X, y, splits, results, save, settings)
    save()
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
