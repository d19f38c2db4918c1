"""Transform every structure of the shared Matbench tasks and the CGCNN sample CIFs.

    python -m benchmarks.featurize_all     # writes benchmarks/results/featurize_all.{json,md}

Asserts that none fails, and records how long each set took.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from matminer.datasets import load_dataset

from skgnn import CrystalGraphTransformer

from .common import RESULTS, data_home, machine, write_results

TASKS = ("matbench_jdft2d", "matbench_dielectric", "matbench_perovskites")
SAMPLE_CIFS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cgcnn-sample"


def transform_all(home: str) -> list[dict]:
    """Graph every structure; raise on the first failure (the error names its index)."""
    rows = []
    sets = {task: load_dataset(task, data_home=home)["structure"] for task in TASKS}
    sets["cgcnn-sample CIFs"] = sorted(str(p) for p in SAMPLE_CIFS.glob("*.cif"))
    for name, structures in sets.items():
        start = time.perf_counter()
        graphs = CrystalGraphTransformer().fit_transform(structures)
        seconds = time.perf_counter() - start
        assert len(graphs) == len(structures)
        assert (graphs.n_edges > 0).all()
        rows.append(
            {
                "set": name,
                "structures": len(structures),
                "atoms": int(graphs.n_atoms.sum()),
                "max_atoms": int(graphs.n_atoms.max()),
                "edges": int(graphs.n_edges.sum()),
                "seconds": round(seconds, 2),
                "container_mb": round(graphs.nbytes / 1e6, 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args()
    rows = transform_all(data_home(args.data_home))
    total = sum(r["structures"] for r in rows)
    markdown = "# Every shared structure, transformed\n\n" + (
        "| set | structures | atoms | largest cell | edges | seconds | MB |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    for r in rows:
        markdown += (
            f"| {r['set']} | {r['structures']} | {r['atoms']} | {r['max_atoms']} | "
            f"{r['edges']} | {r['seconds']} | {r['container_mb']} |\n"
        )
    markdown += f"\n{total} structures, none failed. Machine: {machine()['cpu']}.\n"
    write_results(RESULTS, "featurize_all", {"machine": machine(), "sets": rows}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
