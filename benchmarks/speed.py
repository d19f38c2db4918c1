"""Speed and memory of skgnn on Matbench perovskites.

    python -m benchmarks.speed            # writes benchmarks/results/speed/speed.{json,md}

Measures, in one run on this machine: graph construction of all 18,928
perovskites (structures/s, container size), and training and inference
throughput (graphs/s) of the Matbench CGCNN settings (n_conv 4,
atom_fea_len 64, h_fea_len 32, batch 128) on 15,000 graphs.
"""

from __future__ import annotations

import argparse
import time

from matminer.datasets import load_dataset

from skgnn import CGCNNRegressor, CrystalGraphTransformer

from .common import RESULTS, data_home, machine, write_results

MATBENCH_SETTINGS = {
    "module__n_conv": 4, "module__atom_fea_len": 64, "module__h_fea_len": 32, "batch_size": 128
}  # fmt: skip


def time_transform(structures) -> dict:
    start = time.perf_counter()
    graphs = CrystalGraphTransformer().fit_transform(structures)
    seconds = time.perf_counter() - start
    return {
        "graphs": graphs,
        "structures": len(structures),
        "seconds": seconds,
        "structures_per_s": len(structures) / seconds,
        "container_mb": graphs.nbytes / 1e6,
    }


def time_training(graphs, y, epochs: int) -> dict:
    net = CGCNNRegressor(
        **MATBENCH_SETTINGS, max_epochs=epochs, validation_fraction=None, random_state=0
    )
    net.fit(graphs, y)
    epoch_seconds = [row["dur"] for row in net.history]
    best = min(epoch_seconds)
    start = time.perf_counter()
    net.predict(graphs)
    predict_seconds = time.perf_counter() - start
    return {
        "graphs": len(graphs),
        "epoch_seconds": epoch_seconds,
        "best_epoch_seconds": best,
        "train_graphs_per_s": len(graphs) / best,
        "predict_seconds": predict_seconds,
        "predict_graphs_per_s": len(graphs) / predict_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-graphs", type=int, default=15000)
    args = parser.parse_args()

    df = load_dataset("matbench_perovskites", data_home=data_home(args.data_home))
    transform = time_transform(df["structure"])
    graphs = transform.pop("graphs")
    n = args.train_graphs
    training = time_training(graphs[:n], df["e_form"].to_numpy()[:n], args.epochs)
    payload = {
        "machine": machine(),
        "settings": {**MATBENCH_SETTINGS, "epochs": args.epochs, "train_graphs": n},
        "transform": transform,
        "training": training,
    }
    markdown = (
        "# skgnn speed on matbench_perovskites\n\n"
        f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores']} cores, "
        f"torch {payload['machine']['packages']['torch']} "
        f"({payload['machine']['torch_threads']} threads).\n\n"
        "| measure | value |\n|---|---|\n"
        f"| transform, {transform['structures']} structures | {transform['seconds']:.2f} s "
        f"({transform['structures_per_s']:.0f} structures/s) |\n"
        f"| graph container | {transform['container_mb']:.1f} MB |\n"
        f"| one training epoch, {n} graphs, Matbench CGCNN settings | "
        f"{training['best_epoch_seconds']:.2f} s ({training['train_graphs_per_s']:.0f} graphs/s) |\n"
        f"| inference, {n} graphs | {training['predict_seconds']:.2f} s "
        f"({training['predict_graphs_per_s']:.0f} graphs/s) |\n"
    )
    write_results(RESULTS / "speed", "speed", payload, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
