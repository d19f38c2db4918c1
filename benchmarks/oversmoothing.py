"""Oversmoothing against depth: MAE and the spread of atom vectors inside a crystal (issue #14).

    python -m benchmarks.oversmoothing                       # depths 1-8, jdft2d official fold 0
    python -m benchmarks.oversmoothing --folds 0,1,2,3,4     # all five folds
    python -m benchmarks.oversmoothing --depths 1,2 --max-epochs 2 --subsample 100 --out /tmp/o

Message passing averages neighbours into one another; with depth, the atom vectors of a
crystal converge to one vector (oversmoothing) and the crystal vector loses what told its
atoms apart. For each network and depth (layers of message passing) this trains on the
fold's training rows and reports the test MAE and the spread of the atom vectors of each
test crystal: the mean pairwise distance of its atoms' vectors after the last layer,
divided by the same after the embedding (layer 0), averaged over the test crystals whose
layer-0 spread is not zero (those with two or more distinct elements). Networks: the
CGCNN pooling its last layer (``cgcnn_last``, the reference code) or the mean of all
layers (``cgcnn_all``, the paper's equation), and MessageNet likewise (``message_last``,
``message_all``) with its residual updates. Written as each run ends, resumable:
benchmarks/results/oversmoothing/{oversmoothing.json, oversmoothing.md, oversmoothing.png}.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.model_selection import MatbenchKFold

from .common import RESULTS, data_home, machine, write_json
from .leaderboard import UNITS
from .matbench import load_task, message_epochs, message_pipeline, model_params, run_fold

FOLDER = RESULTS / "oversmoothing"
TASK = "matbench_jdft2d"


def _cgcnn(pool_layers: str) -> Callable[[int, int, int | None], BaseEstimator]:
    def build(fold: int, depth: int, epochs: int | None) -> BaseEstimator:
        net = CGCNNRegressor(
            random_state=fold, module__n_conv=depth, module__pool_layers=pool_layers,
            **({"max_epochs": epochs} if epochs else {}),
        )  # fmt: skip
        return make_pipeline(CrystalGraphTransformer(), net)

    return build


def _message(pool_layers: str) -> Callable[[int, int, int | None], BaseEstimator]:
    def build(fold: int, depth: int, epochs: int | None) -> BaseEstimator:
        return message_pipeline(
            fold, module__n_conv=depth, module__pool_layers=pool_layers,
            max_epochs=epochs or message_epochs(TASK),
        )  # fmt: skip

    return build


NETWORKS: dict[str, Callable[[int, int, int | None], BaseEstimator]] = {
    "cgcnn_last": _cgcnn("last"),
    "cgcnn_all": _cgcnn("all"),
    "message_last": _message("last"),
    "message_all": _message("all"),
}


def spread_by_layer(pipeline: BaseEstimator, X) -> dict[str, list[float]]:
    """Mean over crystals of (mean pairwise distance of atom vectors at layer l) / (at layer 0).

    ``"distance"`` as stated; ``"scale_free"`` divides each layer's distances inside a
    crystal by the mean distance between atoms of different test crystals at that layer
    first, so that vectors growing or shifting as a whole (a residual network's grow) do
    not hide that the atoms of a crystal become alike.
    """
    graphs = pipeline[0].transform(X)
    module = pipeline[-1].module_.eval()
    with torch.no_grad():
        everything = module.layer_vectors(graphs.batch(np.arange(len(graphs))))
    sample = torch.from_numpy(np.random.default_rng(0).permutation(len(everything[0]))[:2000])
    overall = np.array([_mean_pairwise_distance(v[sample]) for v in everything])
    ratios, scale_free = [], []
    with torch.no_grad():
        for start in range(0, len(graphs), 64):
            rows = np.arange(start, min(start + 64, len(graphs)))
            batch = graphs.batch(rows)
            layers = module.layer_vectors(batch)
            offsets = np.concatenate([[0], np.cumsum(graphs.n_atoms[rows])])
            for first, last in zip(offsets[:-1], offsets[1:], strict=True):
                if last - first < 2:
                    continue
                spreads = np.array([_mean_pairwise_distance(v[first:last]) for v in layers])
                if spreads[0] > 1e-8:  # two or more distinct elements
                    ratios.append(spreads / spreads[0])
                    relative = spreads / np.maximum(overall, 1e-12)
                    scale_free.append(relative / relative[0])
    if not ratios:
        return {"distance": [], "scale_free": []}
    return {"distance": np.mean(ratios, axis=0).tolist(),
            "scale_free": np.mean(scale_free, axis=0).tolist()}  # fmt: skip


def _mean_pairwise_distance(vectors: torch.Tensor) -> float:
    n = len(vectors)
    return float(torch.cdist(vectors, vectors).sum() / (n * (n - 1)))


def run(network: str, depth: int, fold: int, args, X, y, splits, results: dict, save) -> None:
    estimator = NETWORKS[network](fold, depth, args.max_epochs)
    params = model_params(estimator)
    runs = results["runs"].setdefault(network, {}).setdefault(str(depth), {})
    if runs.get(str(fold), {}).get("params") == params:
        print(f"{network:>13} depth {depth} fold {fold}: done before", flush=True)
        return
    train, test = splits[fold]
    record, fitted = run_fold(estimator, X, y, train, test)
    spreads = spread_by_layer(fitted, X.iloc[test])
    last = {name: values[-1] if values else None for name, values in spreads.items()}
    runs[str(fold)] = {
        "mae": record["mae"], "fit_s": record["fit_s"], "spread_by_layer": spreads,
        "spread_last": last["distance"], "scale_free_spread_last": last["scale_free"],
        "params": params,
    }  # fmt: skip
    save()
    print(
        f"{network:>13} depth {depth} fold {fold}: MAE {record['mae']:.4g}, spread "
        f"{last['distance']:.3g} of layer 0 ({last['scale_free']:.3g} scale-free), "
        f"fit {record['fit_s']:.0f} s",
        flush=True,
    )


def summary(results: dict) -> dict[str, dict[int, dict[str, float]]]:
    """Network -> depth -> mean MAE, its std and mean last-layer spread over the folds run."""
    out = {}
    for network, depths in results["runs"].items():
        for depth, folds in sorted(depths.items(), key=lambda item: int(item[0])):
            if not folds:
                continue
            mae = np.array([f["mae"] for f in folds.values()])
            spread = [f["spread_last"] for f in folds.values() if f["spread_last"] is not None]
            free = [f["scale_free_spread_last"] for f in folds.values()
                    if f["scale_free_spread_last"] is not None]  # fmt: skip
            out.setdefault(network, {})[int(depth)] = {
                "mae": float(mae.mean()), "mae_std": float(mae.std()), "folds": len(mae),
                "spread": float(np.mean(spread)) if spread else float("nan"),
                "scale_free": float(np.mean(free)) if free else float("nan"),
                "fit_s": float(np.mean([f["fit_s"] for f in folds.values()])),
            }  # fmt: skip
    return out


def render(results: dict) -> str:
    m, unit, table = results["machine"], UNITS.get(TASK, ""), summary(results)
    lines = [
        "# Oversmoothing: MAE and the spread of atom vectors against depth (issue #14)",
        "",
        f"{TASK}, official fold(s) {results['folds']}. Machine: {m['cpu']}, {m['cores']} cores, "
        f"torch {m['packages']['torch']} with {m['torch_threads']} threads. "
        "Made by `python -m benchmarks.oversmoothing`, network by network and depth by depth "
        f"(`--networks <names> --depths <depths>`); the latest command: `{results['command']}`.",
        "",
        "Spread: the mean pairwise distance of a test crystal's atom vectors after the last "
        "layer, relative to after the embedding (layer 0), averaged over test crystals; "
        "1 keeps the atoms as distinct as the elements made them, near 0 is oversmoothed. "
        "Scale-free: the same with each layer's distances inside a crystal divided by the "
        "mean distance between atoms of the test set at that layer (vectors that grow or "
        "shift as a whole no longer hide that a crystal's atoms become alike).",
        "",
        "![MAE and spread against depth](oversmoothing.png)",
        "",
        f"| network | depth | folds | MAE ({unit}) | spread | scale-free spread | fit (s/fold) |",
        "|---|---|---|---|---|---|---|",
    ]
    if results["data"].get("subsample"):
        lines.insert(2, f"**Smoke run: {results['data']['subsample']} rows subsampled.**\n")
    for network, depths in table.items():
        for depth, s in depths.items():
            lines.append(
                f"| {network} | {depth} | {s['folds']} | {s['mae']:.4g} ± {s['mae_std']:.2g} "
                f"| {s['spread']:.3g} | {s['scale_free']:.3g} | {s['fit_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary(results)
    fig, (left, right, free) = plt.subplots(1, 3, figsize=(14, 4))
    for network, depths in table.items():
        x = sorted(depths)
        style = "--" if network.endswith("_all") else "-"
        left.errorbar(x, [depths[d]["mae"] for d in x], yerr=[depths[d]["mae_std"] for d in x],
                      fmt="o" + style, label=network, capsize=3)  # fmt: skip
        right.plot(x, [depths[d]["spread"] for d in x], "o" + style, label=network)
        free.plot(x, [depths[d]["scale_free"] for d in x], "o" + style, label=network)
    left.set_xlabel("layers of message passing")
    left.set_ylabel(f"test MAE ({UNITS.get(TASK, '')})")
    right.set_ylabel("spread of atom vectors, last layer / layer 0")
    free.set_ylabel("the same, relative to distances across crystals")
    for ax in (right, free):
        ax.set_xlabel("layers of message passing")
        ax.set_yscale("log")
    for ax in (left, right, free):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{TASK}, fold(s) {results['folds']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help=f"from {list(NETWORKS)}")
    parser.add_argument("--depths", default="1,2,3,4,5,6,7,8")
    parser.add_argument("--folds", default="0", help="official jdft2d folds, e.g. 0,1,2,3,4")
    parser.add_argument("--max-epochs", type=int, default=None, help="override (smoke runs)")
    parser.add_argument("--subsample", default=None, help="rows (100) or a fraction; smoke runs")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--out", type=Path, default=None, help=f"default {FOLDER}")
    args = parser.parse_args(argv)
    args.networks = args.networks.split(",")
    unknown = [n for n in args.networks if n not in NETWORKS]
    if unknown:
        parser.error(f"unknown network {unknown[0]!r}; choose from {list(NETWORKS)}")
    args.depths = [int(d) for d in args.depths.split(",")]
    args.folds = [int(f) for f in args.folds.split(",")]
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    folder = args.out or FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "oversmoothing.json"
    data = {"subsample": args.subsample}
    results = json.loads(path.read_text()) if path.exists() else {}
    if results.get("data") != data:
        if path.exists():
            path.replace(folder / "oversmoothing.replaced.json")
        results = {"data": data, "runs": {}}
    command = "python -m benchmarks.oversmoothing " + " ".join(argv or [])
    results.update(machine=machine(), command=command.strip(), folds=args.folds)

    def save() -> None:
        write_json(path, results, indent=1)
        (folder / "oversmoothing.md").write_text(render(results))
        plot(results, folder / "oversmoothing.png")

    X, y, _ = load_task(TASK, data_home(args.data_home), args.subsample)
    splits = list(MatbenchKFold().split(np.zeros(len(y))))
    for depth in args.depths:
        for network in args.networks:
            for fold in args.folds:
                run(network, depth, fold, args, X, y, splits, results, save)
    save()
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
