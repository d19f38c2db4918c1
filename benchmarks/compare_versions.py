"""Two versions of skgnn trained side by side in one process, their steps alternating.

    git worktree add /tmp/skgnn-before 48b797a
    python -m benchmarks.compare_versions /tmp/skgnn-before --label before=48b797a

Each version's ``skgnn`` package is imported under a name of its own, builds its
own graphs of the same perovskites and trains its own module (AdamW, Matbench
settings); training steps and prediction passes alternate between the two,
so the machine's drift (shared cores, clocks) falls on both alike. Writes
``results/speed/versions.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from matminer.datasets import load_dataset

from .common import RESULTS, data_home, write_results
from .speed import SETTINGS, load, processor

HERE = Path(__file__).resolve().parents[1]


def import_as(source: Path, name: str, folder: Path):
    """The ``skgnn`` package under ``source`` imported as ``name`` (its imports are relative)."""
    shutil.copytree(source / "skgnn", folder / name)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def runner(package, structures, y, sizes: dict):
    graphs = package.CrystalGraphTransformer().fit_transform(structures)
    targets = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)[:, None]
    torch.manual_seed(0)
    model = package.module.CGCNN(
        graphs.n_atom_features, graphs.n_edge_features, sizes["atom_fea_len"], sizes["n_conv"],
        sizes["h_fea_len"],
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    order = np.random.default_rng(0).permutation(len(graphs))
    size = sizes["batch_size"]
    work = [order[i : i + size] for i in range(0, len(order), size)]

    def train(rows):
        model.train()
        optimizer.zero_grad()
        loss = torch.nn.functional.smooth_l1_loss(model(graphs.batch(rows)), targets[rows])
        loss.backward()
        optimizer.step()

    def predict(rows):
        model.eval()
        with torch.no_grad():
            model(graphs.batch(rows))

    return work, train, predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="checkout of the older version")
    parser.add_argument("--after", type=Path, default=HERE, help="default: this checkout")
    parser.add_argument("--label", default="before=older", help="before=<its name>")
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args()
    sizes = SETTINGS["matbench"]
    df = load_dataset("matbench_perovskites", data_home=data_home(args.data_home))
    n = sizes["batch_size"] * args.batches
    structures, y = df["structure"].iloc[:n], df["e_form"].to_numpy()[:n]
    folder = Path(tempfile.mkdtemp())
    packages = {"before": import_as(args.before, "skgnn_before", folder),
                "after": import_as(args.after, "skgnn_after", folder)}  # fmt: skip
    result = {"processor": processor(), "args": {k: str(v) for k, v in vars(args).items()},
              "threads": {}}  # fmt: skip
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        runs = {name: runner(p, structures, y, sizes) for name, p in packages.items()}
        seconds = {name: {"train": [], "predict": []} for name in runs}
        loads = [load()]
        for _ in range(args.repeats):
            for batch in range(args.batches):
                for name, (work, train, predict) in runs.items():
                    for kind, function in (("train", train), ("predict", predict)):
                        start = time.perf_counter()
                        function(work[batch])
                        seconds[name][kind].append(time.perf_counter() - start)
            loads.append(load())
        summary = {"load_average": loads}
        for name, kinds in seconds.items():
            for kind, values in kinds.items():
                summary[f"{name}_{kind}_ms_best"] = 1e3 * min(values)
                summary[f"{name}_{kind}_ms_median"] = 1e3 * float(np.median(values))
        result["threads"][threads] = summary
    write_results(RESULTS / "speed", "versions", result, render(result))
    print(render(result))


def render(result: dict) -> str:
    label = result["args"]["label"]
    cpu = result["processor"]
    lines = [
        f"# skgnn {label.split('=')[-1]} vs this version, steps alternating in one process",
        "",
        f"Processor: {cpu['model']} ({', '.join(cpu['flags'])}). Matbench settings, batches of "
        "128 perovskites, the module trained with AdamW; per step, best and median of "
        f"{result['args']['repeats']} passes over {result['args']['batches']} batches.",
        "",
        "| threads | train step before | after | speed-up (best / median) | predict before "
        "| after | speed-up (best / median) | load average |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for threads, s in result["threads"].items():
        row = [f"| {threads}"]
        for kind in ("train", "predict"):
            b, a = s[f"before_{kind}_ms_best"], s[f"after_{kind}_ms_best"]
            bm, am = s[f"before_{kind}_ms_median"], s[f"after_{kind}_ms_median"]
            row += [f"{b:.1f} ms (median {bm:.1f})", f"{a:.1f} ms (median {am:.1f})",
                    f"{b / a:.2f}× / {bm / am:.2f}×"]  # fmt: skip
        row.append(f"{min(s['load_average']):.1f}–{max(s['load_average']):.1f} |")
        lines.append(" | ".join(row))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
