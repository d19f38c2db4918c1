"""Speed and memory of skgnn, side by side with its peers, in one run.

    python -m benchmarks.speed            # ~15 min on 2 cores; writes benchmarks/results/speed/

On matbench_perovskites and matbench_dielectric:
- graph construction, structures/s: skgnn vs the original CGCNN recipe
  (``get_all_neighbors``, sort, keep 12; see benchmarks/peers.py);
- training and inference, graphs/s, at the Matbench CGCNN settings and at the
  reference-code defaults: skgnn vs a CGCNN built from PyG's ``CGConv``;
- the machine's float32 matmul peak, and the share of it skgnn's training
  step reaches on its own matmul FLOP count;
- peak memory of transforming and of training;
- scaling of construction and training time with atoms per cell (a plot).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from matminer.datasets import load_dataset

from skgnn import CGCNNRegressor, CrystalGraphTransformer

from . import peers
from .common import RESULTS, data_home, machine, write_results

SETTINGS = {
    "matbench": {"n_conv": 4, "atom_fea_len": 64, "h_fea_len": 32, "batch_size": 128},
    "reference": {"n_conv": 3, "atom_fea_len": 64, "h_fea_len": 128, "batch_size": 256},
}
TARGETS = {"matbench_perovskites": "e_form", "matbench_dielectric": "n"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def construction(structures, n_baseline: int) -> dict:
    start = time.perf_counter()
    graphs = CrystalGraphTransformer().fit_transform(structures)
    skgnn_rate = len(structures) / (time.perf_counter() - start)
    subset = list(structures[:n_baseline])
    start = time.perf_counter()
    peers.graphs_like_original_cgcnn(subset)
    baseline_rate = len(subset) / (time.perf_counter() - start)
    return {
        "graphs": graphs,
        "skgnn_structures_per_s": skgnn_rate,
        "get_all_neighbors_structures_per_s": baseline_rate,
        "baseline_structures": len(subset),
        "speedup": skgnn_rate / baseline_rate,
        "container_mb": graphs.nbytes / 1e6,
        "bytes_per_graph": graphs.nbytes / len(graphs),
        "atoms_per_graph": float(graphs.n_atoms.mean()),
    }


def graphs_in_memory(bytes_per_graph: float, peak_rss_mb: float, gib: float = 24) -> float:
    """Graphs that fit in ``gib`` beside a training run's measured peak (which holds the task)."""
    return (gib * 2**30 - peak_rss_mb * 2**20) / bytes_per_graph


def matmul_flops_per_epoch(graphs, sizes: dict) -> float:
    """Matmul FLOPs of one training epoch: forward, and twice that for backward."""
    atoms, edges, n = graphs.n_atoms.sum(), graphs.n_edges.sum(), len(graphs)
    f, h, e = sizes["atom_fea_len"], sizes["h_fea_len"], graphs.n_edge_features
    conv = 2 * atoms * f * 4 * f + 2 * edges * e * 2 * f
    forward = 2 * atoms * graphs.n_atom_features * f + sizes["n_conv"] * conv
    forward += 2 * n * (f * h + h)
    return 3.0 * forward


def _skgnn_net(sizes: dict, epochs: int) -> CGCNNRegressor:
    return CGCNNRegressor(
        module__n_conv=sizes["n_conv"],
        module__atom_fea_len=sizes["atom_fea_len"],
        module__h_fea_len=sizes["h_fea_len"],
        batch_size=sizes["batch_size"],
        max_epochs=epochs,
        random_state=0,
    )


def _rate(n: int, seconds: list[float]) -> float:
    return n / min(seconds)


def skgnn_throughput(graphs, y, sizes: dict, epochs: int) -> dict:
    """skgnn alone (the scaling plot): best epoch of a fit, then one prediction pass."""
    net = _skgnn_net(sizes, epochs).fit(graphs, y)
    start = time.perf_counter()
    net.predict(graphs)
    predict_s = time.perf_counter() - start
    epoch_s = min(net.history[:, "dur"])
    return {"train_graphs_per_s": len(graphs) / epoch_s,
            "predict_graphs_per_s": len(graphs) / predict_s, "epoch_s": epoch_s}  # fmt: skip


def side_by_side(graphs, y, sizes: dict, epochs: int) -> tuple[dict, dict]:
    """skgnn and the PyG model, their epochs and prediction passes alternating.

    The machine's speed drifts (shared cores, clocks); alternating the two
    libraries and keeping each one's best pass keeps the drift out of the ratio.
    """
    from torch_geometric.loader import DataLoader

    net = _skgnn_net(sizes, epochs)
    torch.manual_seed(0)
    data = peers.pyg_dataset(graphs, y)
    model = peers.PygCGCNN(
        n_conv=sizes["n_conv"], atom_fea_len=sizes["atom_fea_len"], h_fea_len=sizes["h_fea_len"]
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    train_loader = DataLoader(data, batch_size=sizes["batch_size"], shuffle=True)
    timings = {name: {"train": [], "predict": []} for name in ("skgnn", "pyg")}
    for _ in range(epochs):
        net.partial_fit(graphs, y, epochs=1)
        timings["skgnn"]["train"].append(net.history[-1, "dur"])
        start = time.perf_counter()
        peers.pyg_epoch(model, train_loader, optimizer)
        timings["pyg"]["train"].append(time.perf_counter() - start)
        start = time.perf_counter()
        net.predict(graphs)
        timings["skgnn"]["predict"].append(time.perf_counter() - start)
        start = time.perf_counter()
        peers.pyg_predict(model, DataLoader(data, batch_size=sizes["batch_size"]))
        timings["pyg"]["predict"].append(time.perf_counter() - start)
    n = len(graphs)
    return tuple(
        {"train_graphs_per_s": _rate(n, t["train"]), "predict_graphs_per_s": _rate(n, t["predict"]),
         "epoch_s": min(t["train"]), "train_s": t["train"], "predict_s": t["predict"]}
        for t in (timings["skgnn"], timings["pyg"])
    )  # fmt: skip


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def scaling(structure, epochs: int, n_graphs: int = 256) -> list[dict]:
    """Construction and training time against atoms per cell, on supercells of one cell."""
    rows = []
    for repeat in (1, 2, 4, 8, 16, 32):
        cell = structure * (repeat, 1, 1)
        structures = [cell] * n_graphs
        start = time.perf_counter()
        graphs = CrystalGraphTransformer().fit_transform(structures)
        construct_s = (time.perf_counter() - start) / n_graphs
        sizes = {**SETTINGS["matbench"]}
        train = skgnn_throughput(graphs, np.zeros(n_graphs), sizes, epochs)
        rows.append({"atoms": len(cell), "construct_ms_per_structure": 1e3 * construct_s,
                     "train_ms_per_graph": 1e3 / train["train_graphs_per_s"]})  # fmt: skip
    return rows


def plot_scaling(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atoms = [r["atoms"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(
        atoms, [r["construct_ms_per_structure"] for r in rows], "o-", label="graph construction"
    )
    ax.loglog(atoms, [r["train_ms_per_graph"] for r in rows], "s-", label="training (one epoch)")
    ax.set_xlabel("atoms per cell (perovskite supercells)")
    ax.set_ylabel("ms per structure")
    ax.set_title("skgnn cost per structure vs cell size")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-graphs", type=int, default=15000)
    parser.add_argument("--baseline-structures", type=int, default=500)
    args = parser.parse_args()
    home = data_home(args.data_home)

    results = {"machine": machine(), "args": vars(args), "tasks": {}}
    results["matmul_peak_gflops"] = peak = matmul_peak_gflops()
    rss_start = peak_rss_mb()
    for task, target in TARGETS.items():
        df = load_dataset(task, data_home=home)
        built = construction(df["structure"], args.baseline_structures)
        graphs = built.pop("graphs")[: args.train_graphs]
        y = df[target].to_numpy()[: args.train_graphs]
        built["peak_rss_mb_after_transform"] = peak_rss_mb()
        task_result = {"construction": built, "training": {}}
        for name, sizes in SETTINGS.items():
            ours, theirs = side_by_side(graphs, y, sizes, args.epochs)
            flops = matmul_flops_per_epoch(graphs, sizes)
            task_result["training"][name] = {
                "skgnn": ours, "pyg_cgconv": theirs,
                "train_speedup": ours["train_graphs_per_s"] / theirs["train_graphs_per_s"],
                "predict_speedup": ours["predict_graphs_per_s"] / theirs["predict_graphs_per_s"],
                "skgnn_gflops": flops / ours["epoch_s"] / 1e9,
                "fraction_of_matmul_peak": flops / ours["epoch_s"] / 1e9 / peak,
            }  # fmt: skip
        task_result["graphs"] = len(graphs)
        task_result["peak_rss_mb_after_training"] = peak_rss_mb()
        results["tasks"][task] = task_result
    results["rss_mb_at_start"] = rss_start

    perovskite = load_dataset("matbench_perovskites", data_home=home)["structure"].iloc[0]
    results["scaling"] = scaling(perovskite, args.epochs)
    folder = RESULTS / "speed"
    folder.mkdir(parents=True, exist_ok=True)
    plot_scaling(results["scaling"], folder / "scaling.png")
    markdown = render(results)
    write_results(folder, "speed", results, markdown)
    print(markdown)


def render(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# skgnn speed, side by side with its peers",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['packages']['torch']} with "
        f"{m['torch_threads']} threads; skgnn {m['packages']['skgnn']}. All figures from one run "
        f"of `python -m benchmarks.speed`; the two libraries' epochs and prediction passes "
        f"alternate, best of {results['args']['epochs']} each.",
        f"Measured float32 matmul peak: {results['matmul_peak_gflops']:.1f} GFLOP/s.",
        "",
        "## Graph construction",
        "",
        "| task | skgnn (structures/s) | get_all_neighbors baseline (structures/s) | speed-up "
        "| container |",
        "|---|---|---|---|---|",
    ]
    for task, r in results["tasks"].items():
        c = r["construction"]
        lines.append(
            f"| {task} | {c['skgnn_structures_per_s']:.0f} | "
            f"{c['get_all_neighbors_structures_per_s']:.0f} (first {c['baseline_structures']}) | "
            f"{c['speedup']:.0f}× | {c['container_mb']:.1f} MB |"
        )
    lines += [
        "",
        "## Training and inference (graphs/s)",
        "",
        "| task | settings | skgnn train | PyG CGConv train | speed-up | skgnn predict "
        "| PyG predict "
        "| speed-up | skgnn GFLOP/s | share of matmul peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, r in results["tasks"].items():
        for name, t in r["training"].items():
            lines.append(
                f"| {task} ({r['graphs']} graphs) | {name} | "
                f"{t['skgnn']['train_graphs_per_s']:.0f} | "
                f"{t['pyg_cgconv']['train_graphs_per_s']:.0f} | {t['train_speedup']:.1f}× | "
                f"{t['skgnn']['predict_graphs_per_s']:.0f} | "
                f"{t['pyg_cgconv']['predict_graphs_per_s']:.0f} | {t['predict_speedup']:.1f}× | "
                f"{t['skgnn_gflops']:.1f} | {100 * t['fraction_of_matmul_peak']:.0f} % |"
            )
    lines += [
        "",
        "Settings: matbench = n_conv 4, atom_fea_len 64, h_fea_len 32, batch 128; reference = "
        "n_conv 3, atom_fea_len 64, h_fea_len 128, batch 256. The FLOP count is that of the "
        "matmuls (forward, and twice that for backward); element-wise work is not counted. "
        "skgnn predicts without recording gradients, so each edge sums its atom terms and its "
        "few non-negligible Gaussians' weight rows in one `embedding_bag` "
        "(`skgnn/module.py`); training uses the dense matmul, whose backward is faster.",
        "",
        "## Memory",
        "",
        "| task | peak RSS after transform | peak RSS after training |",
        "|---|---|---|",
    ]
    for task, r in results["tasks"].items():
        lines.append(
            f"| {task} | {r['construction']['peak_rss_mb_after_transform']:.0f} MB | "
            f"{r['peak_rss_mb_after_training']:.0f} MB |"
        )
    lines += [
        "",
        "## Largest dataset in 24 GiB",
        "",
        "Graphs are stored flat (12 bytes an edge, a few per atom) and batches are cut on the fly, "
        "so memory grows with the stored graphs only; a training run's own peak (above, which "
        "also holds the whole task's pymatgen structures) does not grow with the data. Beside "
        "that peak, 24 GiB holds (estimated from the measured size of each container):",
        "",
        "| graphs like | bytes per graph | atoms per graph | graphs in 24 GiB |",
        "|---|---|---|---|",
    ]
    for task, r in results["tasks"].items():
        c = r["construction"]
        n = graphs_in_memory(c["bytes_per_graph"], r["peak_rss_mb_after_training"])
        lines.append(f"| {task} | {c['bytes_per_graph']:.0f} | {c['atoms_per_graph']:.1f} | "
                     f"{n / 1e6:.0f} million |")  # fmt: skip
    lines += [
        "",
        "A pymatgen `Structure` takes far more memory than its graph, so for datasets near "
        "that size read and transform the structures in chunks and join the results with "
        "`CrystalGraphs.concatenate`.",
        "",
        "## Scaling with cell size (![plot](scaling.png))",
        "",
        "| atoms per cell | construction (ms/structure) | training (ms/graph/epoch) |",
        "|---|---|---|",
    ]
    for row in results["scaling"]:
        lines.append(
            f"| {row['atoms']} | {row['construct_ms_per_structure']:.2f} | "
            f"{row['train_ms_per_graph']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
