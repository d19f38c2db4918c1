"""Memory and speed of training from a graph store on disk, against graphs in memory.

    python -m benchmarks.store      # ~35 min on 2 cores; writes benchmarks/results/store/

Datasets of 1x, 4x and 16x matbench_perovskites (18,928 structures): copy 0 is
the task's structures, copy c > 0 the same structures with every Cartesian
coordinate moved by N(0, 0.01 Å), made one at a time by a generator, so the
copies are never all in memory (the 18,928 originals are, at every size). Each
size runs in a fresh process, twice:

- ``store``: ``write_graph_store`` (chunks of 4096 structures), then one epoch
  of ``CGCNNRegressor`` on the ``GraphStore``;
- ``memory``: the same chunks graphed by ``CrystalGraphTransformer`` and joined
  into one ``CrystalGraphs`` in memory, then the same epoch.

Recorded per process, from after the data are loaded (``VmHWM`` reset through
``/proc/self/clear_refs``): the peak resident set (``VmHWM``: the kernel's peak,
counting mapped file pages, which for a store are the page cache of its files
and are dropped under memory pressure), and, sampled every 20 ms, the peaks of
its anonymous part (``RssAnon``: what must stay in RAM) and its file-backed
part (``RssFile``: libraries and memory-mapped files). Then, on 1x in one
process, training throughput (graphs/s of an epoch) from the store and from
memory, fits alternating (memory first in one round, the store in the next).
Network: the Matbench CGCNN settings (n_conv 4, atom_fea_len 64, h_fea_len 32,
batch 128), one torch thread.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from matminer.datasets import load_dataset
from pymatgen.core import Structure

from skgnn import CGCNNRegressor, CrystalGraphs, CrystalGraphTransformer, write_graph_store

from .common import RESULTS, data_home, machine, write_results

TASK, TARGET = "matbench_perovskites", "e_form"
NET = {"module__n_conv": 4, "module__atom_fea_len": 64, "module__h_fea_len": 32}
NOISE = 0.01  # Å, per Cartesian coordinate
FOLDER = RESULTS / "store"


class MemorySampler:
    """Peaks of this process's resident set, read from /proc/self/status every ``interval`` s."""

    FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peaks = dict.fromkeys(self.FIELDS, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> dict:
        """The fields now, in MB."""
        values = {}
        with open("/proc/self/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in self.FIELDS:
                    values[name] = int(rest.split()[0]) / 1024
        return values

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, value in self.read().items():
                self.peaks[name] = max(self.peaks[name], value)
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM: the peak from here on, not that of loading the data
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for name, value in self.read().items():
            self.peaks[name] = max(self.peaks[name], value)


def copies(structures: list, n_copies: int, seed: int = 0):
    """The structures, then ``n_copies - 1`` perturbed copies of them, made one at a time."""
    yield from structures
    rng = np.random.default_rng(seed)
    for _ in range(1, n_copies):
        for s in structures:
            coords = s.cart_coords + rng.normal(0, NOISE, size=(len(s), 3))
            yield Structure(s.lattice, s.species_and_occu, coords, coords_are_cartesian=True)


def chunks_in_memory(items, chunk_size: int) -> CrystalGraphs:
    """The graphs of a generator, built a chunk at a time as the store is, joined in memory."""
    transformer, parts, chunk = CrystalGraphTransformer(), [], []
    for item in items:
        chunk.append(item)
        if len(chunk) == chunk_size:
            parts.append(transformer.fit_transform(chunk))
            chunk = []
    if chunk:
        parts.append(transformer.fit_transform(chunk))
    return CrystalGraphs.concatenate(parts)


def network(epochs: int) -> CGCNNRegressor:
    return CGCNNRegressor(**NET, batch_size=128, max_epochs=epochs, random_state=0)


def load(rows: int | None):
    df = load_dataset(TASK, data_home=data_home())
    return df.iloc[:rows] if rows else df


def measure_size(mode: str, n_copies: int, chunk_size: int, folder: Path, rows=None) -> dict:
    """One size, one mode, in this (fresh) process: build, then train one epoch."""
    df = load(rows)
    base = list(df["structure"])
    y = np.tile(df[TARGET].to_numpy(), n_copies)
    del df
    with MemorySampler() as sampler:
        at_start = sampler.read()
        start = time.perf_counter()
        if mode == "store":
            graphs = write_graph_store(
                copies(base, n_copies), folder / f"x{n_copies}", chunk_size=chunk_size
            )
        else:
            graphs = chunks_in_memory(copies(base, n_copies), chunk_size)
        build_s = time.perf_counter() - start
        after_build = sampler.read()
        net = network(epochs=1).fit(graphs, y)
    epoch_s = float(net.history[-1, "dur"])
    return {
        "mode": mode,
        "copies": n_copies,
        "graphs": len(graphs),
        "graphs_mb": graphs.nbytes / 1e6,
        "build_s": build_s,
        "build_structures_per_s": len(graphs) / build_s,
        "epoch_s": epoch_s,
        "train_graphs_per_s": len(graphs) / epoch_s,
        "rss_mb_at_start": at_start["VmRSS"],
        "peak_rss_mb_after_build": after_build["VmHWM"],
        "peak_rss_mb": sampler.peaks["VmHWM"],
        "peak_anon_mb": sampler.peaks["RssAnon"],
        "peak_file_mb": sampler.peaks["RssFile"],
    }


def measure_throughput(rounds: int, chunk_size: int, folder: Path, rows=None) -> dict:
    """Epochs on 1x from memory and from the store, alternating, in this process."""
    df = load(rows)
    structures, y = list(df["structure"]), df[TARGET].to_numpy()
    sources = {
        "memory": CrystalGraphTransformer().fit_transform(structures),
        "store": write_graph_store(structures, folder / "x1", chunk_size=chunk_size),
    }
    epochs = {name: [] for name in sources}
    for round_ in range(rounds):
        # memory, store, then store, memory: whoever goes first in a round (and any drift
        # of the machine's load) favours neither
        for name in list(sources)[:: -1 if round_ % 2 else 1]:
            net = network(epochs=1).fit(sources[name], y)
            epochs[name].append(float(net.history[-1, "dur"]))
    rates = {name: [len(y) / s for s in durations] for name, durations in epochs.items()}
    return {
        "graphs": len(y),
        "rounds": rounds,
        "epoch_s": epochs,
        "graphs_per_s": rates,
        "median_graphs_per_s": {name: float(np.median(r)) for name, r in rates.items()},
        "store_over_memory": float(np.median(rates["store"]) / np.median(rates["memory"])),
    }


def in_fresh_process(args: list[str]) -> dict:
    """Run this module with ``args`` in a new Python, and return the JSON it prints last."""
    command = [sys.executable, "-m", "benchmarks.store", *args]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"store": "tab:blue", "memory": "tab:red"}
    for mode, color in styles.items():
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["graphs"])
        if not mine:
            continue
        x = [r["graphs"] for r in mine]
        ax.plot(x, [r["peak_rss_mb"] for r in mine], "o-", color=color,
                label=f"{mode}: peak RSS (VmHWM)")  # fmt: skip
        ax.plot(x, [r["peak_anon_mb"] for r in mine], "s--", color=color,
                label=f"{mode}: peak anonymous RSS")  # fmt: skip
    ax.set_xscale("log", base=2)
    sizes = sorted({(r["graphs"], r["copies"]) for r in rows})
    ax.set_xticks([g for g, _ in sizes], [f"{g:,}\n({c}x)" for g, c in sizes])
    ax.minorticks_off()
    ax.set_xlabel("graphs (copies of matbench_perovskites)")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.set_title("Transform + one training epoch, one process per point")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def render(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Training from a graph store on disk vs graphs in memory",
        "",
        f"`python -m benchmarks.store` on {m['cpu']} ({m['cores']} cores, shared with other "
        f"jobs), torch {m['packages']['torch']}, 1 torch thread, Python {m['python']}. "
        f"Data: {TASK} and perturbed copies (σ = {NOISE} Å), made lazily; store chunks of "
        f"{results['args']['chunk_size']} structures. Network: Matbench CGCNN settings, "
        "batch 128, one epoch. One fresh process per row.",
        "",
        "Peak RSS is the kernel's VmHWM, reset once the task's data are loaded; it counts "
        "mapped file pages (for a store, its files' page cache, dropped under memory "
        "pressure). Anonymous and file-backed are peaks sampled every 20 ms.",
        "",
        "| mode | copies | graphs | graphs MB | build s | epoch s | train graphs/s "
        "| RSS at start MB | peak RSS MB | peak anonymous MB | peak file-backed MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["sizes"]:
        lines.append(
            f"| {r['mode']} | {r['copies']}x | {r['graphs']} | {r['graphs_mb']:.0f} | "
            f"{r['build_s']:.0f} | {r['epoch_s']:.1f} | {r['train_graphs_per_s']:.0f} | "
            f"{r['rss_mb_at_start']:.0f} | {r['peak_rss_mb']:.0f} | {r['peak_anon_mb']:.0f} | "
            f"{r['peak_file_mb']:.0f} |"
        )
    t = results.get("throughput")
    if t:
        rates = t["graphs_per_s"]
        lines += [
            "",
            f"Training throughput on 1x ({t['graphs']} graphs), {t['rounds']} rounds of one "
            "epoch each from memory and from the store, in one process, the order alternating "
            "(memory, store; store, memory; ...):",
            "",
            "| source | epochs, graphs/s | median graphs/s |",
            "|---|---|---|",
        ]
        for name in rates:
            each = ", ".join(f"{v:.0f}" for v in rates[name])
            lines.append(f"| {name} | {each} | {t['median_graphs_per_s'][name]:.0f} |")
        lines += ["", f"Store / memory: {t['store_over_memory']:.3f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--modes", nargs="+", default=["store", "memory"])
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=4, help="throughput rounds (0: none)")
    parser.add_argument("--folder", default=None, help="where stores are written (a temp dir)")
    parser.add_argument("--rows", type=int, default=None, help="first rows only (a smoke test)")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "COPIES"), help=argparse.SUPPRESS)
    parser.add_argument("--throughput-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(args.folder or tempfile.mkdtemp(prefix="skgnn-store-"))
    try:
        if args.one:  # a child: one measurement, printed as the last line
            mode, n_copies = args.one[0], int(args.one[1])
            print(json.dumps(measure_size(mode, n_copies, args.chunk_size, folder, args.rows)))
            return
        if args.throughput_only:
            print(json.dumps(measure_throughput(args.rounds, args.chunk_size, folder, args.rows)))
            return
        results = {"machine": machine(), "args": vars(args), "sizes": []}
        common = ["--chunk-size", str(args.chunk_size), "--folder", str(folder)]
        common += ["--rows", str(args.rows)] if args.rows else []
        for n_copies in args.copies:
            for mode in args.modes:
                row = in_fresh_process(["--one", mode, str(n_copies), *common])
                print(json.dumps(row), flush=True)
                results["sizes"].append(row)
                shutil.rmtree(folder / f"x{n_copies}", ignore_errors=True)
        if args.rounds:
            rounds = ["--rounds", str(args.rounds)]
            results["throughput"] = in_fresh_process(["--throughput-only", *rounds, *common])
        FOLDER.mkdir(parents=True, exist_ok=True)
        plot(results["sizes"], FOLDER / "rss.png")
        markdown = render(results)
        write_results(FOLDER, "store", results, markdown)
        print(markdown)
    finally:
        if not args.folder:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
