"""Loss curves of one fit on one process and on several (skgnn.distributed, gloo on CPU).

    python -m benchmarks.distributed            # 200 jdft2d rows, 30 epochs, 2 processes

The same ``CGCNNRegressor`` (``batch_size`` 32, the global batch) is fitted
on one process with seeds 0, 1 and 2, and on two processes with seed 0,
with BatchNorm statistics of the whole batch (the default) and of each
process's shard. The seeds give the noise a loss curve has anyway; the
two-process curve with synchronised statistics should sit on the
single-process one far inside it. Writes ``results/distributed/loss_curves``
(``.json``, ``.md``, ``.png``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from matminer.datasets import load_dataset

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.distributed import fit

from .common import RESULTS, data_home, machine, write_results

FOLDER = RESULTS / "distributed"


def run(graphs, y, test_graphs, test_y, seed: int, epochs: int, processes: int,
        synchronize: bool = True) -> dict:  # fmt: skip
    net = CGCNNRegressor(max_epochs=epochs, batch_size=32, random_state=seed)
    start = time.perf_counter()
    if processes == 1:
        net.fit(graphs, y)
    else:
        fit(net, graphs, y, n_processes=processes, synchronize_batch_norm=synchronize)
    seconds = time.perf_counter() - start
    predictions = net.predict(test_graphs)
    return {
        "seed": seed,
        "processes": processes,
        "batch_norm": "whole batch" if synchronize else "per shard",
        "train_loss": [float(v) for v in net.history[:, "train_loss"]],
        "test_mae": float(np.abs(predictions - test_y).mean()),
        "test_predictions": predictions.tolist(),
        "seconds": seconds,
        "epoch_seconds": float(sum(net.history[:, "dur"])),  # the first process's, if several
    }


def compare(runs: dict) -> dict:
    """Largest per-epoch gaps to the seed-0 single-process curve, relative to its loss."""
    reference = np.array(runs["1 process, seed 0"]["train_loss"])
    seeds = np.array([r["train_loss"] for r in runs.values() if r["processes"] == 1])
    noise = seeds.std(axis=0, ddof=1) / reference
    gaps = {}
    for name, record in runs.items():
        if name == "1 process, seed 0":
            continue
        gap = np.abs(np.array(record["train_loss"]) - reference) / reference
        gaps[name] = {"max_relative_gap": float(gap.max()), "last_epoch_gap": float(gap[-1])}
    return {"seed_to_seed_relative_std": {"median": float(np.median(noise)),
                                          "min": float(noise.min())}, "gaps": gaps}  # fmt: skip


def render(payload: dict) -> str:
    settings, runs, summary = payload["settings"], payload["runs"], payload["summary"]
    noise = summary["seed_to_seed_relative_std"]
    reference = runs["1 process, seed 0"]
    lines = [
        "# Training on several processes: loss curves",
        "",
        f"`python -m benchmarks.distributed` — {settings['rows']} rows of matbench_jdft2d "
        f"(the next {settings['test_rows']} to test), `CGCNNRegressor(batch_size=32, "
        f"max_epochs={settings['epochs']})`, global batch 32 on every run; "
        f"{settings['processes']} processes through `skgnn.distributed.fit` (gloo, one thread "
        "each) against one process with one thread.",
        "",
        "| run | final train loss | largest gap to 1 process, seed 0 (per epoch, relative) "
        "| test MAE (meV/atom) | max abs. prediction gap (meV/atom) | epochs' time | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, record in runs.items():
        gap = summary["gaps"].get(name, {}).get("max_relative_gap")
        shown = "—" if gap is None else f"{gap:.1e}"
        prediction_gap = np.abs(np.array(record["test_predictions"])
                                - np.array(reference["test_predictions"])).max()  # fmt: skip
        lines.append(
            f"| {name} | {record['train_loss'][-1]:.4f} | {shown} | {record['test_mae']:.2f} "
            f"| {prediction_gap:.2e} | {record['epoch_seconds']:.0f} s "
            f"| {record['seconds']:.0f} s |"
        )
    lines += [
        "",
        f"Noise for scale: the seed-to-seed standard deviation of the per-epoch loss over the "
        f"three single-process seeds is {noise['median']:.1%} of the loss at the median epoch "
        f"({noise['min']:.1%} at the quietest).",
        "",
        "Epochs' time is the sum of skorch's epoch durations (of the first process); wall "
        "time adds starting the processes (each imports skgnn and unpickles the graphs). "
        "With this small model and 16-graph shards, two processes on two shared CPU cores "
        "train no faster than one, whether they exchange BatchNorm moments or not (compare "
        "the two 2-process rows): this run checks what is computed, not speed.",
        "",
        "![loss curves](loss_curves.png)",
        "",
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores']} cores (shared), "
        f"torch {payload['machine']['packages']['torch']}. No GPU was available: the NCCL "
        "path is not measured here.",
    ]
    return "\n".join(lines) + "\n"


def plot(payload: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, gap_ax) = plt.subplots(1, 2, figsize=(11, 4))
    reference = np.array(payload["runs"]["1 process, seed 0"]["train_loss"])
    epochs = np.arange(1, len(reference) + 1)
    for index, (name, record) in enumerate(payload["runs"].items()):
        loss = np.array(record["train_loss"])
        style = {"linestyle": "-" if record["processes"] == 1 else "--", "color": f"C{index}"}
        ax.plot(epochs, loss, label=name, alpha=0.9, **style)
        if name != "1 process, seed 0":
            gap = np.abs(loss - reference) / reference
            gap_ax.semilogy(epochs, np.maximum(gap, 1e-9), label=name, **style)
    ax.set(xlabel="epoch", ylabel="training loss (Huber, standardised)", yscale="log",
           title="Loss per epoch")  # fmt: skip
    gap_ax.set(xlabel="epoch", ylabel="|loss - loss(1 process, seed 0)| / loss",
               title="Gap to the single-process curve")  # fmt: skip
    ax.legend(fontsize=8)
    gap_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FOLDER / "loss_curves.png", dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--test-rows", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    df = load_dataset("matbench_jdft2d", data_home=data_home(args.data_home))
    df = df.iloc[: args.rows + args.test_rows]
    graphs = CrystalGraphTransformer().fit_transform(df["structure"])
    y = df["exfoliation_en"].to_numpy()
    train, test = slice(0, args.rows), slice(args.rows, None)
    data = (graphs[train], y[train], graphs[test], y[test])

    runs = {}
    for seed in (0, 1, 2):
        runs[f"1 process, seed {seed}"] = run(*data, seed, args.epochs, 1)
        print(f"1 process, seed {seed}: {runs[f'1 process, seed {seed}']['seconds']:.0f} s")
    for synchronize in (True, False):
        statistics = "whole batch" if synchronize else "per shard"
        name = f"{args.processes} processes, seed 0, BN {statistics}"
        runs[name] = run(*data, 0, args.epochs, args.processes, synchronize)
        print(f"{name}: {runs[name]['seconds']:.0f} s")

    payload = {
        "settings": {
            "task": "matbench_jdft2d",
            "rows": args.rows,
            "test_rows": args.test_rows,
            "epochs": args.epochs,
            "batch_size": 32,
            "processes": args.processes,
            "backend": "gloo",
            "threads_per_process": 1,
        },
        "machine": machine(),
        "runs": runs,
    }
    payload["summary"] = compare(runs)
    write_results(FOLDER, "loss_curves", payload, render(payload))
    plot(payload)
    print(render(payload))


if __name__ == "__main__":
    main()
