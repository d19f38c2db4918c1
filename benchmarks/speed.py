"""Speed and memory of skgnn, side by side with its peers, in one run.

    python -m benchmarks.speed            # ~20 min on 2 cores; writes benchmarks/results/speed/

On matbench_perovskites and matbench_dielectric:
- graph construction, structures/s: skgnn vs the original CGCNN recipe
  (``get_all_neighbors``, sort, keep 12; see benchmarks/peers.py);
- training and inference, graphs/s, at the Matbench CGCNN settings and at the
  reference-code defaults: skgnn vs a CGCNN built from PyG's ``CGConv`` and vs
  the original code's network and batching (benchmarks/peers.py), their epochs
  and prediction passes alternating;
- skgnn's training step with and without flush-to-zero (subnormal floats cost
  microcode assists on Intel cores; :mod:`skgnn.numerics`);
- the processor (model, vector extensions), the machine's float32 matmul peak,
  and the share of it skgnn's training step reaches on the model's matmul FLOPs;
- peak memory of transforming and of training;
- scaling of construction and training time with atoms per cell (a plot).

The machine's load average is recorded beside each measurement: on shared
cores, other processes slow every library (OpenMP threads wait for each other
at every parallel region), so compare ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import torch
from matminer.datasets import load_dataset

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.module import CGCNN

from . import peers
from .common import RESULTS, data_home, machine, write_results

SETTINGS = {
    "matbench": {"n_conv": 4, "atom_fea_len": 64, "h_fea_len": 32, "batch_size": 128},
    "reference": {"n_conv": 3, "atom_fea_len": 64, "h_fea_len": 128, "batch_size": 256},
}
TARGETS = {"matbench_perovskites": "e_form", "matbench_dielectric": "n"}
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_tile")
LIBRARIES = {"skgnn": "skgnn", "pyg": "PyG CGConv", "original": "original CGCNN"}


def processor() -> dict:
    """Model, vendor and vector extensions of the CPU, from /proc/cpuinfo (Linux)."""
    info = {"model": platform.processor() or platform.machine(), "vendor": "", "flags": []}
    try:
        with open("/proc/cpuinfo") as handle:
            fields = dict(
                line.split(":", 1) for line in handle.read().split("\n\n")[0].splitlines()
                if ":" in line
            )  # fmt: skip
    except OSError:
        return info
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    info.update(
        model=fields.get("model name", info["model"]),
        vendor=fields.get("vendor_id", ""),
        flags=[flag for flag in VECTOR_FLAGS if flag in flags],
        family=fields.get("cpu family"),
        model_number=fields.get("model"),
    )
    return info


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load() -> float:
    """The one-minute load average (other processes sharing the cores)."""
    return os.getloadavg()[0]


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
    """Matmul FLOPs of one training epoch of the model as written: forward, and twice that for
    backward, with the gate layer applied to every edge's 169-long ``z`` (by parts)."""
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


def skgnn_throughput(graphs, y, sizes: dict, epochs: int) -> dict:
    """skgnn alone (the scaling plot): best epoch of a fit, then one prediction pass."""
    net = _skgnn_net(sizes, epochs).fit(graphs, y)
    start = time.perf_counter()
    net.predict(graphs)
    predict_s = time.perf_counter() - start
    epoch_s = min(net.history[:, "dur"])
    return {"train_graphs_per_s": len(graphs) / epoch_s,
            "predict_graphs_per_s": len(graphs) / predict_s, "epoch_s": epoch_s}  # fmt: skip


class ModuleLoop:
    """skgnn's module trained by a plain loop (AdamW, as the estimator), for the FTZ comparison.

    The estimator may set flush-to-zero itself; this loop leaves it to the caller.
    """

    def __init__(self, graphs, y, sizes: dict) -> None:
        self.graphs, self.batch_size = graphs, sizes["batch_size"]
        self.y = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)[:, None]
        torch.manual_seed(0)
        self.model = CGCNN(
            graphs.n_atom_features, graphs.n_edge_features, sizes["atom_fea_len"],
            sizes["n_conv"], sizes["h_fea_len"],
        )  # fmt: skip
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=2e-3)

    def epoch(self) -> None:
        self.model.train()
        order = np.random.default_rng(0).permutation(len(self.graphs))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            self.optimizer.zero_grad()
            prediction = self.model(self.graphs.batch(rows))
            torch.nn.functional.smooth_l1_loss(prediction, self.y[rows]).backward()
            self.optimizer.step()


def side_by_side(graphs, y, sizes: dict, epochs: int, ftz: bool) -> dict:
    """Epochs and prediction passes of every library, alternating; best of ``epochs`` each.

    The machine's speed drifts (shared cores, clocks); alternating the libraries
    and keeping each one's best pass keeps the drift out of the ratios.
    """
    from torch_geometric.loader import DataLoader

    loader = torch.utils.data.DataLoader
    n = sizes["batch_size"]
    net = _skgnn_net(sizes, epochs)
    torch.manual_seed(0)
    pyg_data = peers.pyg_dataset(graphs, y)
    pyg = peers.PygCGCNN(n_conv=sizes["n_conv"], atom_fea_len=sizes["atom_fea_len"],
                         h_fea_len=sizes["h_fea_len"])  # fmt: skip
    pyg_optimizer = torch.optim.AdamW(pyg.parameters(), lr=2e-3)
    original_data = peers.original_dataset(graphs, y)
    original = peers.OriginalCGCNN(n_conv=sizes["n_conv"], atom_fea_len=sizes["atom_fea_len"],
                                   h_fea_len=sizes["h_fea_len"])  # fmt: skip
    original_optimizer = torch.optim.AdamW(original.parameters(), lr=2e-3)
    collate = peers.original_collate
    train = {
        "skgnn": lambda: net.partial_fit(graphs, y, epochs=1),
        "pyg": lambda: peers.pyg_epoch(pyg, DataLoader(pyg_data, batch_size=n, shuffle=True),
                                       pyg_optimizer),
        "original": lambda: peers.original_epoch(
            original, loader(original_data, batch_size=n, shuffle=True, collate_fn=collate),
            original_optimizer,
        ),
    }  # fmt: skip
    predict = {
        "skgnn": lambda: net.predict(graphs),
        "pyg": lambda: peers.pyg_predict(pyg, DataLoader(pyg_data, batch_size=n)),
        "original": lambda: peers.original_predict(
            original, loader(original_data, batch_size=n, collate_fn=collate)
        ),
    }
    if ftz:
        from skgnn.numerics import flush_denormals

        loop = ModuleLoop(graphs, y, sizes)
        for enabled, name in ((False, "skgnn_no_ftz"), (True, "skgnn_ftz")):

            def epoch(enabled=enabled):
                with flush_denormals(enabled):
                    loop.epoch()

            train[name] = epoch
    seconds = {name: {"train_s": [], "predict_s": []} for name in train}
    loads = [load()]
    for _ in range(epochs):
        for name in train:
            start = time.perf_counter()
            train[name]()
            seconds[name]["train_s"].append(time.perf_counter() - start)
            if name in predict:
                start = time.perf_counter()
                predict[name]()
                seconds[name]["predict_s"].append(time.perf_counter() - start)
        loads.append(load())
    result = {"load_average": loads}
    for name, t in seconds.items():
        result[name] = {"train_graphs_per_s": len(graphs) / min(t["train_s"]),
                        "epoch_s": min(t["train_s"]), **t}  # fmt: skip
        if t["predict_s"]:
            result[name]["predict_graphs_per_s"] = len(graphs) / min(t["predict_s"])
    return result


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, best_of: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(best_of):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best / 1e9


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
    parser.add_argument("--threads", type=int, default=None, help="torch threads (all cores)")
    parser.add_argument("--name", default="speed", help="result files' name")
    parser.add_argument("--no-scaling", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    home = data_home(args.data_home)

    results = {"machine": machine(), "processor": processor(), "args": vars(args), "tasks": {}}
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
            timed = side_by_side(graphs, y, sizes, args.epochs, ftz=name == "matbench")
            ours = timed["skgnn"]
            flops = matmul_flops_per_epoch(graphs, sizes)
            timed.update(
                {
                    f"train_speedup_{peer}": ours["train_graphs_per_s"]
                    / timed[peer]["train_graphs_per_s"]
                    for peer in ("pyg", "original")
                },  # fmt: skip
                skgnn_gflops=flops / ours["epoch_s"] / 1e9,
                fraction_of_matmul_peak=flops / ours["epoch_s"] / 1e9 / peak,
            )
            for peer in ("pyg", "original"):
                timed[f"predict_speedup_{peer}"] = (
                    ours["predict_graphs_per_s"] / timed[peer]["predict_graphs_per_s"]
                )
            task_result["training"][name] = timed
        task_result["graphs"] = len(graphs)
        task_result["peak_rss_mb_after_training"] = peak_rss_mb()
        results["tasks"][task] = task_result
    results["rss_mb_at_start"] = rss_start

    folder = RESULTS / "speed"
    folder.mkdir(parents=True, exist_ok=True)
    if not args.no_scaling:
        perovskite = load_dataset("matbench_perovskites", data_home=home)["structure"].iloc[0]
        results["scaling"] = scaling(perovskite, args.epochs)
        plot_scaling(results["scaling"], folder / "scaling.png")
    markdown = render(results)
    write_results(folder, args.name, results, markdown)
    print(markdown)


def render(results: dict) -> str:
    m, cpu = results["machine"], results["processor"]
    lines = [
        "# skgnn speed, side by side with its peers",
        "",
        f"Processor: **{cpu['model']}** ({cpu['vendor']}; vector extensions: "
        f"{', '.join(cpu['flags']) or 'none found'}), {m['cores']} cores; torch "
        f"{m['packages']['torch']} with {m['torch_threads']} threads; skgnn "
        f"{m['packages']['skgnn']}. All figures from one run of `python -m benchmarks.speed`; "
        f"the libraries' epochs and prediction passes alternate, best of "
        f"{results['args']['epochs']} each.",
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
        "| task | settings | skgnn train | PyG CGConv | original | speed-up vs PyG / original "
        "| skgnn predict | PyG | original | speed-up vs PyG / original | share of matmul peak "
        "| load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, r in results["tasks"].items():
        for name, t in r["training"].items():
            ours, pyg, original = t["skgnn"], t["pyg"], t["original"]
            lines.append(
                f"| {task} ({r['graphs']} graphs) | {name} | {ours['train_graphs_per_s']:.0f} | "
                f"{pyg['train_graphs_per_s']:.0f} | {original['train_graphs_per_s']:.0f} | "
                f"{t['train_speedup_pyg']:.1f}× / {t['train_speedup_original']:.1f}× | "
                f"{ours['predict_graphs_per_s']:.0f} | {pyg['predict_graphs_per_s']:.0f} | "
                f"{original['predict_graphs_per_s']:.0f} | "
                f"{t['predict_speedup_pyg']:.1f}× / {t['predict_speedup_original']:.1f}× | "
                f"{100 * t['fraction_of_matmul_peak']:.0f} % | "
                f"{min(t['load_average']):.1f}–{max(t['load_average']):.1f} |"
            )
    lines += [
        "",
        "Settings: matbench = n_conv 4, atom_fea_len 64, h_fea_len 32, batch 128; reference = "
        "n_conv 3, atom_fea_len 64, h_fea_len 128, batch 256. PyG CGConv: the CGCNN most users "
        "would assemble from PyG's `CGConv`; original: the original code's network and batching "
        "(padded 12-neighbour arrays, `z = v_i ⊕ v_j ⊕ u_ij` per edge, pooling by a loop), "
        "both in `benchmarks/peers.py`, both trained with AdamW. The share of the matmul peak "
        "counts the matmul FLOPs of the model as written (forward, twice that for backward, "
        "the gate layer on every edge's 169-long `z`); skgnn computes the same function with "
        "fewer (see `profile.md`). The load average is the machine's (other processes on the "
        "same cores) over the measurement.",
        "",
        "## Flush-to-zero",
        "",
        "skgnn's training step (its module in a plain AdamW loop, as the estimator trains it) "
        "with subnormal floats kept and with them flushed to zero in every torch thread "
        "(`skgnn.numerics.flush_denormals`). Intel cores compute with subnormals in microcode; "
        "the edge features no longer make them (exact zeros beyond 4.5 widths), so the two "
        "should match on any processor.",
        "",
        "| task | subnormals kept (graphs/s) | flushed to zero (graphs/s) | ratio |",
        "|---|---|---|---|",
    ]
    for task, r in results["tasks"].items():
        t = r["training"]["matbench"]
        kept, flushed = (
            t["skgnn_no_ftz"]["train_graphs_per_s"],
            t["skgnn_ftz"]["train_graphs_per_s"],
        )
        lines.append(f"| {task} | {kept:.0f} | {flushed:.0f} | {flushed / kept:.2f} |")
    lines += [
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
        "Graphs are stored flat (24 bytes an edge: its atoms, length and displacement vector; "
        "a few per atom) and batches are cut on the fly, "
        "so memory grows with the stored graphs only; a training run's own peak (above, which "
        "also holds the whole task's pymatgen structures and the peers' copies) does not grow "
        "with the data. Beside that peak, 24 GiB holds (estimated from the measured size of "
        "each container):",
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
    ]
    if "scaling" in results:
        lines += [
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
