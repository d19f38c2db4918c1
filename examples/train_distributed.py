"""One CGCNN fit on several processes, each training on its share of every batch.

On one machine the script starts the processes itself; under torchrun each
process it starts runs the script as one rank (several GPUs, several machines):

    python examples/train_distributed.py --processes 2
    torchrun --standalone --nproc_per_node 2 examples/train_distributed.py

Trains on the embedded matbench_jdft2d (exfoliation energies, meV/atom), then
the first process pickles the fitted model to ``--out`` and prints its test MAE.
"""

from __future__ import annotations

import argparse
import os
import pickle

import numpy as np
from matminer.datasets import load_dataset

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.datasets import DATA_HOME
from skgnn.distributed import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=None, help="when not under torchrun")
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--device", default="cpu", help="cuda: one GPU per process (NCCL)")
    parser.add_argument("--out", default="cgcnn-distributed.pkl")
    args = parser.parse_args()

    df = load_dataset("matbench_jdft2d", data_home=str(DATA_HOME)).sample(frac=1, random_state=0)
    graphs = CrystalGraphTransformer().fit_transform(df["structure"].iloc[: args.rows + 100])
    y = df["exfoliation_en"].to_numpy()[: args.rows + 100]
    train, test = slice(0, args.rows), slice(args.rows, None)

    net = CGCNNRegressor(max_epochs=args.max_epochs, random_state=0, device=args.device)
    fit(net, graphs[train], y[train], n_processes=args.processes)
    if int(os.environ.get("RANK", 0)) == 0:  # every rank holds the same model
        with open(args.out, "wb") as file:
            pickle.dump(net, file)
        mae = np.abs(net.predict(graphs[test]) - y[test]).mean()
        print(f"test MAE {mae:.2f} meV/atom on {len(y[test])} rows; model saved to {args.out}")


if __name__ == "__main__":
    main()
