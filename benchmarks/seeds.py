"""CGCNN training settings compared over several seeds on a task's official folds.

    python -m benchmarks.seeds --task matbench_jdft2d \\
        --settings '{"held_out_0.1": {"validation_fraction": 0.1}, "all_rows": {}}' \\
        --seeds 0,1000,2000,3000,4000

One fold's MAE moves by several meV/atom with the seed alone on jdft2d, so a
choice of defaults is made on the mean over seeds (seed ``s`` fits fold ``k``
with ``random_state=s + k``; seed 0 is the head-to-head's own). Each finished
(setting, seed) is appended to ``results/seeds/<task>.jsonl`` at once, so a
stopped run loses at most one; the markdown table is rewritten from all of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.model_selection import MatbenchKFold

from .common import RESULTS, data_home, machine
from .matbench import load_task, scores


def run(graphs, y, params: dict, seed: int) -> dict:
    maes, start = [], time.perf_counter()
    for fold, (train, test) in enumerate(MatbenchKFold().split(graphs)):
        net = CGCNNRegressor(random_state=fold + seed, **params).fit(graphs[train], y[train])
        maes.append(scores(y[test], net.predict(graphs[test]))["mae"])
    return {"mae": float(np.mean(maes)), "folds": maes, "seconds": time.perf_counter() - start}


def render(task: str, records: list[dict]) -> str:
    lines = [
        f"# CGCNN settings over seeds: {task}",
        "",
        "Mean test MAE over the five official folds, per seed; then mean ± std over seeds. "
        "Unlisted parameters are the `CGCNNRegressor` defaults of the run's skgnn version.",
        "",
        "| setting | parameters | seeds | MAE per seed | mean ± std | time per run |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["setting"] for r in records):
        runs = [r for r in records if r["setting"] == name]
        maes = [r["mae"] for r in runs]
        spread = statistics.stdev(maes) if len(maes) > 1 else 0.0
        lines.append(
            f"| {name} | `{json.dumps(runs[0]['params'])}` | {len(runs)} | "
            f"{', '.join(f'{m:.2f}' for m in maes)} | {statistics.mean(maes):.2f} ± {spread:.2f} | "
            f"{statistics.mean(r['seconds'] for r in runs):.0f} s |"
        )
    m = records[-1]["machine"]
    lines += ["", f"Machine: {m['cpu']}, torch {m['packages']['torch']}, "
              f"{m['torch_threads']} thread(s); skgnn {m['packages']['skgnn']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="matbench_jdft2d")
    parser.add_argument("--settings", required=True, help="JSON: name -> CGCNNRegressor params")
    parser.add_argument("--seeds", default="0,1000,2000,3000,4000")
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args(argv)
    X, y, _ = load_task(args.task, data_home(args.data_home))
    graphs = CrystalGraphTransformer().fit_transform(X)  # stateless: no fitting on test rows
    path = RESULTS / "seeds" / f"{args.task}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, params in json.loads(args.settings).items():
        for seed in (int(s) for s in args.seeds.split(",")):
            record = {"setting": name, "params": params, "seed": seed,
                      **run(graphs, y, params, seed), "machine": machine()}  # fmt: skip
            print(f"{name} seed {seed}: MAE {record['mae']:.3f}", flush=True)
            with path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.with_suffix(".md").write_text(render(args.task, records))


if __name__ == "__main__":
    main()
