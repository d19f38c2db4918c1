"""Matbench head-to-head: CGCNN and matminer baselines on the official v0.1 folds.

    python -m benchmarks.matbench --task matbench_jdft2d --models cgcnn,rf_scm_magpie,strong_tabular
    python -m benchmarks.matbench --subsample 100 --folds 0 --max-epochs 5    # a quick look
    python -m benchmarks.matbench --task matbench_perovskites --models message    # MessageNet
    python -m benchmarks.matbench --models hybrid,hybrid_message   # + the network's prediction
    python -m benchmarks.matbench --models hybrid_residual   # boosting from that prediction
    python -m benchmarks.matbench --models hybrid_auto   # either, chosen inside the fold

Each model is a fresh clone fitted inside each fold on that fold's training rows only.
``results.json`` is rewritten after every fold, so an interrupted run keeps its finished folds
and a rerun with the same settings skips them. Processes given different ``--folds`` of a task
can run side by side (one per core): each takes in the folds the others finished before it
writes. Under ``benchmarks/results/<task>/`` (or --out):
results.json (scores, timings, memory, out-of-fold predictions), results.md, parity_<model>.png,
learning_curve.png (with --learning-curve) and, where the ``matbench`` package is installed
(``pip install --no-deps matbench``) and no rows were subsampled,
<model>.matbench-record.json.gz in Matbench's own format (one file per model, since a
MatbenchBenchmark holds one algorithm; written once all five folds are done, as matbench
refuses to load a task with folds missing).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch
from matminer.datasets import load_dataset
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.baselines import make_rf_scm_magpie, make_strong_tabular
from skgnn.hybrid import make_hybrid
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
from .leaderboard import LEADERBOARD_MAE, TARGETS, UNITS

LEADERBOARD_ROWS = ("CGCNN", "ALIGNN", "coGN", "RF-SCM/Magpie", "Dummy")
LC_FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def _cgcnn(args: argparse.Namespace, fold: int) -> BaseEstimator:
    epochs = {"max_epochs": args.max_epochs} if args.max_epochs else {}
    return make_pipeline(CrystalGraphTransformer(), CGCNNRegressor(random_state=fold, **epochs))


def _cgcnn_atom(args: argparse.Namespace, fold: int) -> BaseEstimator:
    """The CGCNN with the head on each atom, pooled last (exact per-site contributions)."""
    pipeline = _cgcnn(args, fold)
    pipeline[-1].set_params(module__readout="atom")
    return pipeline


#: MessageNet as the Matbench rows train it: coGN's connectivity (24 neighbours, 33 Gaussians
#: to 8 Å), loss (MAE on standardised targets), batch (64) and learning rate (5e-4, annealed),
#: with schedules short enough for 2 CPU cores (coGN trained 800 epochs on a GPU): an epoch of
#: perovskites' 15,142 training rows took 38 s on one shared core (the CGCNN's 10 s), jdft2d's
#: 508 rows 2.4-2.9 s (0.62 s); so 100 epochs on perovskites, about an hour a fold, and on
#: dielectric, whose 3,811 larger cells cost about half as much (the jdft2d ablation lost nothing
#: with half the schedule: 37.25 against 37.95 meV/atom).
MESSAGE_TRANSFORMER = {"max_neighbors": 24, "gaussian_step": 0.25}
MESSAGE_NET = {"module": "message", "criterion": torch.nn.L1Loss, "lr": 5e-4, "batch_size": 64}
MESSAGE_EPOCHS = {"matbench_perovskites": 100, "matbench_dielectric": 100}  # others: the default
DEFAULT_MESSAGE_EPOCHS = 200


def message_epochs(task: str) -> int:
    """The ``message`` row's schedule on ``task``."""
    return MESSAGE_EPOCHS.get(task, DEFAULT_MESSAGE_EPOCHS)


def message_pipeline(
    fold: int, transformer: dict | None = None, max_epochs: int = DEFAULT_MESSAGE_EPOCHS, **net
) -> BaseEstimator:
    """The ``message`` row's pipeline; ``transformer`` and ``net`` override its settings."""
    return make_pipeline(
        CrystalGraphTransformer(**{**MESSAGE_TRANSFORMER, **(transformer or {})}),
        CGCNNRegressor(random_state=fold, max_epochs=max_epochs, **{**MESSAGE_NET, **net}),
    )


def _message(args: argparse.Namespace, fold: int) -> BaseEstimator:
    """MessageNet (skgnn.message), coGN-like."""
    return message_pipeline(fold, max_epochs=args.max_epochs or message_epochs(args.task))


def _hybrid(args: argparse.Namespace, fold: int) -> BaseEstimator:
    return make_hybrid(_cgcnn(args, fold), random_state=0)


def _hybrid_residual(args: argparse.Namespace, fold: int) -> BaseEstimator:
    """The hybrid whose booster learns what the CGCNN's cross-fitted prediction misses."""
    return make_hybrid(_cgcnn(args, fold), random_state=0, residual=True)


def _hybrid_auto(args: argparse.Namespace, fold: int) -> BaseEstimator:
    """The hybrid that chooses, by inner CV on its training rows, to boost from the CGCNN's
    prediction or to learn the target."""
    return make_hybrid(_cgcnn(args, fold), random_state=0, residual="auto")


def _hybrid_message(args: argparse.Namespace, fold: int) -> BaseEstimator:
    """The hybrid with MessageNet's cross-fitted prediction (six MessageNet fits a fold)."""
    return make_hybrid(_message(args, fold), random_state=0)


#: Model name -> factory(args, fold); add an entry to race another model.
MODELS: dict[str, Callable[[argparse.Namespace, int], BaseEstimator]] = {
    "cgcnn": _cgcnn,
    "cgcnn_atom": _cgcnn_atom,
    "hybrid": _hybrid,
    "hybrid_auto": _hybrid_auto,
    "hybrid_message": _hybrid_message,
    "hybrid_residual": _hybrid_residual,
    "message": _message,
    "rf_scm_magpie": lambda args, fold: make_rf_scm_magpie(args.n_estimators, random_state=0),
    "strong_tabular": lambda args, fold: make_strong_tabular(random_state=0),
}


def load_task(task: str, home: str, subsample: str | None = None):
    """Structures, targets and the kept row positions (all rows unless ``subsample``)."""
    df = load_dataset(task, data_home=home)
    target = TARGETS.get(task, df.columns[-1])
    rows = np.arange(len(df))
    if subsample:
        # subsampled BEFORE splitting, so the folds are no longer Matbench's: quick looks only
        n = float(subsample) * len(df) if "." in subsample else int(subsample)
        rows = np.sort(np.random.default_rng(0).choice(rows, min(int(n), len(df)), replace=False))
    return df["structure"].iloc[rows].reset_index(drop=True), df[target].to_numpy()[rows], rows


def _describe(value) -> str:
    """A string for a parameter that is the same in every process (no addresses, no set order).

    An estimator inside a parameter (a hybrid's network) is described by its own parameters,
    in full: its repr elides the middle of long parameter lists and shows sets (skorch's) in
    hash order, which differs between processes.
    """
    if isinstance(value, BaseEstimator):
        params = sorted(value.get_params(deep=False).items())
        inner = ", ".join(f"{k}={_describe(v)}" for k, v in params if not k.startswith("_"))
        return f"{type(value).__name__}({inner})"
    if isinstance(value, (list, tuple)) and _holds_estimator(value):
        items = ", ".join(_describe(v) for v in value)
        if isinstance(value, list):
            return f"[{items}]"
        return f"({items},)" if len(value) == 1 else f"({items})"
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, (set, frozenset)):
        return repr(sorted(value))
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))


def _holds_estimator(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_holds_estimator(v) for v in value)
    return isinstance(value, BaseEstimator)


def model_params(estimator: BaseEstimator) -> dict[str, str]:
    """Each pipeline step's own ``get_params(deep=False)``, stringified; the key of a resume."""
    steps = getattr(estimator, "steps", [("model", estimator)])
    return {f"{name}__{k}": _describe(v) for name, step in steps
            for k, v in step.get_params(deep=False).items() if not k.startswith("_")}  # fmt: skip


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled every 20 ms.

    ``ru_maxrss`` is a high-water mark of the whole run, so it misses later folds' peaks.
    """

    def __enter__(self) -> PeakRSS:
        self._proc, self._stop = psutil.Process(), threading.Event()
        self.start_mb = self.peak_mb = self._proc.memory_info().rss / 2**20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {"mae": mean_absolute_error(y_true, y_pred),
            "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
            "r2": r2_score(y_true, y_pred)}  # fmt: skip


def run_fold(estimator: BaseEstimator, X, y: np.ndarray, train: np.ndarray, test: np.ndarray):
    """Fit a clone of ``estimator`` on the ``train`` rows only, score it on ``test``.

    Returns
    -------
    record : dict
        Scores, times, memory, sizes and the test predictions.
    fitted : estimator
    """
    fitted = clone(estimator)
    with PeakRSS() as memory:
        start = time.perf_counter()
        fitted.fit(X.iloc[train], y[train])
        fit_s = time.perf_counter() - start
        pred = np.asarray(fitted.predict(X.iloc[test]), dtype=float).ravel()
        predict_s = time.perf_counter() - start - fit_s
    record = {**scores(y[test], pred), "fit_s": fit_s, "predict_s": predict_s,
              "peak_rss_mb": memory.peak_mb,
              "peak_rss_increase_mb": memory.peak_mb - memory.start_mb,
              "n_train": len(train), "n_test": len(test), "params": model_params(estimator),
              "y_true": y[test].tolist(), "y_pred": pred.tolist()}  # fmt: skip
    history = getattr(fitted[-1] if hasattr(fitted, "steps") else fitted, "history", None)
    if history:  # a net: skorch times each epoch (the fit's total also builds the graphs)
        record["epochs"] = len(history)
        record["seconds_per_epoch"] = float(np.mean(history[:, "dur"]))
    return record, fitted


def summarize(folds: dict) -> dict[str, float]:
    """Mean and (population, as Matbench) standard deviation over the finished folds."""
    out = {"n_folds": len(folds), "fit_s_total": sum(f["fit_s"] for f in folds.values())}
    for key in ("mae", "rmse", "r2"):
        values = [f[key] for f in folds.values()]
        out[f"{key}_mean"], out[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
    return out


def learning_curve(name: str, args, X, y, train, test, results: dict, save) -> None:
    """Fold 0's test MAE against nested subsets of fold 0's training rows, saved point by point."""
    estimator, order = MODELS[name](args, 0), np.random.default_rng(0).permutation(train)
    params = model_params(estimator)
    curve = results["learning_curve"].get(name, {})
    if curve.get("params") != params:
        curve = results["learning_curve"][name] = {"params": params, "points": []}
    fold0 = results["models"].get(name, {}).get("folds", {}).get("0")
    for fraction in LC_FRACTIONS[len(curve["points"]) :]:
        n = max(2, round(fraction * len(train)))
        # all of fold 0's training rows with fold 0's settings is fold 0 itself: reuse it
        reuse = fraction == 1.0 and fold0 is not None and fold0["params"] == params
        record = fold0 if reuse else run_fold(estimator, X, y, np.sort(order[:n]), test)[0]
        curve["points"].append({"fraction": fraction, "n_train": n, "mae": record["mae"],
                                "fit_s": record["fit_s"]})  # fmt: skip
        save()
        print(f"{name:>15} learning curve, {n} rows: MAE {record['mae']:.4g}", flush=True)


def plot_parity(name: str, folds: dict, unit: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    y_true = np.concatenate([f["y_true"] for f in folds.values()])
    y_pred = np.concatenate([f["y_pred"] for f in folds.values()])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(y_true, y_pred, s=8, alpha=0.5)
    low, high = min(y_true.min(), y_pred.min()), max(y_true.max(), y_pred.max())
    ax.plot([low, high], [low, high], "k--", lw=1, label="y = x")
    mae = np.mean([f["mae"] for f in folds.values()])
    title = f"{name}: MAE {mae:.4g} {unit}\n(mean over {len(folds)} test fold(s))"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"DFT ({unit})")
    ax.set_ylabel(f"predicted ({unit})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_learning_curve(curves: dict, unit: str, path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, curve in curves.items():
        points = curve["points"]
        ax.loglog([p["n_train"] for p in points], [p["mae"] for p in points], "o-", label=name)
        ax.set_xticks([p["n_train"] for p in points])
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers: the range is too short for 10^k labels
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.set_xlabel("training rows (subsets of fold 0's training rows)")
    ax.set_ylabel(f"MAE on fold 0's test rows ({unit})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(results: dict) -> str:
    task, unit, m = results["task"], results["unit"], results["machine"]
    lines = [f"# {task}: skgnn models on the Matbench v0.1 folds", ""]
    if results["data"]["subsample"]:
        lines += [f"**Quick look: {results['data']['n_rows']} rows subsampled before splitting; "
                  "not comparable with the leaderboard.**", ""]  # fmt: skip
    lines += [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['packages']['torch']} with "
        f"{m['torch_threads']} threads. MAE and RMSE in {unit}; mean ± std over folds.",
        "",
        "| model | folds | MAE | RMSE | R² | fit time (total) |",
        "|---|---|---|---|---|---|",
    ]
    for name, model in results["models"].items():
        s = model["summary"]
        lines.append(
            f"| {name} | {s['n_folds']} | {s['mae_mean']:.4g} ± {s['mae_std']:.3g} | "
            f"{s['rmse_mean']:.4g} ± {s['rmse_std']:.3g} | "
            f"{s['r2_mean']:.3f} ± {s['r2_std']:.3f} | {s['fit_s_total']:.1f} s |"
        )
    for name in LEADERBOARD_ROWS:
        if name in LEADERBOARD_MAE.get(task, {}):
            mae = LEADERBOARD_MAE[task][name]
            lines.append(f"| {name} (Matbench leaderboard) | 5 | {mae:.4g} | | | |")
    if results.get("learning_curve"):
        lines += ["", "Learning curve: ![learning curve](learning_curve.png)"]
    return "\n".join(lines) + "\n"


def record_matbench(results: dict, folder: Path, home: str) -> None:
    """Matbench's own result files, rebuilt from the stored out-of-fold predictions."""
    try:
        from matbench.bench import MatbenchBenchmark
    except ImportError:
        return
    os.environ["MATMINER_DATA"] = home  # matbench loads its tasks through matminer's env variable
    for name, model in results["models"].items():
        if sorted(model["folds"]) != ["0", "1", "2", "3", "4"]:
            continue  # MatbenchBenchmark.from_file refuses a task with folds missing
        bench = MatbenchBenchmark(autoload=False, subset=[results["task"]])
        mb_task = bench.tasks_map[results["task"]]
        mb_task.load()
        for fold, record in sorted(model["folds"].items()):
            mb_task.record(int(fold), record["y_pred"], params={"model": name})
        path = folder / f"{name}.matbench-record.json.gz"
        fresh = path.with_name(f"fresh-{os.getpid()}-{path.name}")
        bench.to_file(str(fresh))
        if path.exists() and _same_record(path, fresh):
            fresh.unlink()  # keep the file as committed: only its date and hash would change
        else:
            fresh.replace(path)


def _same_record(a: Path, b: Path) -> bool:
    """Whether two Matbench record files hold the same results (their date and hash aside).

    ``MatbenchBenchmark.to_file`` writes plain JSON whatever the name ends with.
    """

    def content(path: Path) -> dict:
        record = json.loads(path.read_text())
        return {k: v for k, v in record.items() if k not in ("datestamp", "hash")}

    return content(a) == content(b)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="matbench_jdft2d")
    parser.add_argument(
        "--models",
        default="cgcnn,rf_scm_magpie,strong_tabular",
        help=f"comma-separated, from {sorted(MODELS)}",
    )
    parser.add_argument("--folds", default="0,1,2,3,4")
    parser.add_argument(
        "--max-epochs", type=int, default=None,
        help="network epochs (default: cgcnn 100; message 200, perovskites and dielectric 100)",
    )  # fmt: skip
    parser.add_argument("--n-estimators", type=int, default=500, help="RF-SCM/Magpie trees")
    parser.add_argument("--subsample", default=None, help="rows (60) or a fraction (0.1)")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--learning-curve", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.models = args.models.split(",")
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {sorted(MODELS)}")
    args.folds = official_folds(parser, args.folds)
    return args


def run_model(name: str, args, X, y, rows, splits, results: dict, save, settings: dict) -> dict:
    """Run ``name`` on the requested folds, skipping those stored with the same settings.

    ``settings[name]`` receives each fold's parameters, so that ``save`` takes in only the
    folds that other processes finished with these settings.
    """
    model = results["models"].setdefault(name, {"folds": {}})
    estimators = {fold: MODELS[name](args, fold) for fold in range(len(splits))}
    settings[name] = {str(fold): model_params(est) for fold, est in estimators.items()}
    # folds run with other settings are dropped, so a summary never mixes settings
    model["folds"] = {k: v for k, v in model["folds"].items()
                      if v["params"] == settings[name][k]}  # fmt: skip
    for fold in args.folds:
        if str(fold) in model["folds"]:
            mae = model["folds"][str(fold)]["mae"]
            print(f"{name:>15} fold {fold}: done before, MAE {mae:.4g}", flush=True)
            continue
        record, _ = run_fold(estimators[fold], X, y, *splits[fold])
        record["test_rows"] = rows[splits[fold][1]].tolist()  # positions in the full task
        model["folds"][str(fold)] = record
        save()
        print(
            f"{name:>15} fold {fold}: MAE {record['mae']:.4g} {results['unit']}, "
            f"fit {record['fit_s']:.1f} s, predict {record['predict_s']:.1f} s",
            flush=True,
        )
    return model


def open_results(path: Path, task: str, data: dict) -> dict:
    """The stored results if they are of the same rows; else a fresh start, old file kept aside."""
    results = json.loads(path.read_text()) if path.exists() else {}
    if results and results.get("data") != data:
        path.replace(path.with_name("results.replaced.json"))
        print(f"{path} held other rows; moved to results.replaced.json", flush=True)
    if results.get("data") != data:
        results = {"task": task, "data": data, "models": {}, "learning_curve": {}}
    return results


def merge_finished_folds(results: dict, stored: dict, settings: dict) -> None:
    """Take into ``results`` the folds and curves that other processes stored meanwhile.

    Folds of a model this process runs are taken only with its settings (``settings[model]``,
    fold -> parameters); the folds this process holds win.
    """
    if stored.get("data") != results["data"]:
        return
    for name, model in stored["models"].items():
        mine = results["models"].setdefault(name, {"folds": {}})["folds"]
        take_missing_folds(mine, model["folds"], settings.get(name, {}))
    results["learning_curve"] = {**stored["learning_curve"], **results["learning_curve"]}


def main(argv: list[str] | None = None) -> dict:
    """Run the head-to-head; returns what results.json holds."""
    import matplotlib

    matplotlib.use("Agg")
    args = parse_args(argv)
    home = data_home(args.data_home)
    # quick looks default to their own folder, so they never replace a full run's results
    default = args.task + (f"_subsample{args.subsample}" if args.subsample else "")
    folder = args.out or RESULTS / default
    folder.mkdir(parents=True, exist_ok=True)
    X, y, rows = load_task(args.task, home, args.subsample)
    data = {"n_rows": len(rows), "subsample": args.subsample,
            "rows": rows.tolist() if args.subsample else None}  # fmt: skip
    path = folder / "results.json"
    results = open_results(path, args.task, data)
    results.update(unit=UNITS.get(args.task, ""), machine=machine())
    if args.subsample:
        print(
            f"Quick look: {len(rows)} rows subsampled before splitting; folds are not "
            "Matbench's and scores are not comparable with the leaderboard.",
            flush=True,
        )

    settings: dict[str, dict[str, dict]] = {}

    def save() -> None:
        # processes running other folds into this folder take turns: each merges what the
        # others stored since it started, so none writes over another's finished fold
        with taking_turns(path) as stored:
            if stored is not None:
                merge_finished_folds(results, stored, settings)
            for model in results["models"].values():
                model["summary"] = summarize(model["folds"]) if model["folds"] else {}
            write_json(path, results, indent=1)
            done = {k: v for k, v in results["models"].items() if v["folds"]}
            (folder / "results.md").write_text(render({**results, "models": done}))

    splits = list(MatbenchKFold().split(np.zeros(len(y))))
    for name in args.models:
        model = run_model(name, args, X, y, rows, splits, results, save, settings)
        plot_parity(name, model["folds"], results["unit"], folder / f"parity_{name}.png")
    if args.learning_curve:
        for name in args.models:
            learning_curve(name, args, X, y, *splits[0], results, save)
        curves = {k: v for k, v in results["learning_curve"].items() if k in args.models}
        plot_learning_curve(curves, results["unit"], folder / "learning_curve.png")
    save()
    if not args.subsample:
        record_matbench(results, folder, home)
    return results


if __name__ == "__main__":
    main()
