"""Where a training step's time goes: torch.profiler over epochs at the Matbench settings.

    python -m benchmarks.profile_step                      # skgnn as installed: label "after"
    PYTHONPATH=<older checkout> python -m benchmarks.profile_step --label before

Profiles skgnn's module trained as the estimator trains it (AdamW, batches of
128 perovskites, n_conv 4, atom_fea_len 64, h_fea_len 32), sorts every
operator's self time into kinds (matmuls, gathers and sums by index,
transcendental and plain element-wise passes, BatchNorm, optimizer), measures
the fixed cost per step (a step on two graphs) and the step at 1 and 2 torch
threads. Writes ``results/speed/profile-<label>.json`` and rewrites
``results/speed/profile.md`` from every such file present.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch
from matminer.datasets import load_dataset

from skgnn import CrystalGraphTransformer
from skgnn.module import CGCNN

from .common import RESULTS, data_home, machine, write_json
from .speed import SETTINGS, load, matmul_flops_per_epoch, matmul_peak_gflops, processor

KINDS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::mv", "aten::addmv"),
    "gathers and sums by index": (
        "aten::_embedding_bag",
        "aten::embedding_bag",
        "aten::index",
        "aten::scatter",
        "aten::gather",
        "aten::sort",
        "aten::argsort",
        "aten::bincount",
        "aten::unique",
        "aten::_unique",
    ),
    "transcendental element-wise": (
        "aten::exp",
        "aten::log",
        "aten::sigmoid",
        "aten::softplus",
        "aten::tanh",
        "aten::rsqrt",
        "aten::sqrt",
        "aten::pow",
    ),
    "BatchNorm": ("aten::native_batch_norm", "aten::batch_norm"),
    "optimizer": ("aten::_fused_adam", "aten::_foreach", "aten::lerp", "Optimizer."),
    "other element-wise and copies": (
        "aten::mul",
        "aten::add",
        "aten::sub",
        "aten::div",
        "aten::addcmul",
        "aten::clamp",
        "aten::cat",
        "aten::stack",
        "aten::copy_",
        "aten::fill_",
        "aten::zero_",
        "aten::sum",
        "aten::max",
        "aten::mean",
        "aten::var",
        "aten::where",
        "aten::neg",
        "aten::masked_fill",
        "aten::linalg_vecdot",
        "aten::lt",
        "aten::gt",
        "aten::ge",
        "aten::le",
        "aten::eq",
        "aten::cumsum",
        "aten::arange",
        "aten::_to_copy",
        "aten::square",
        "aten::smooth_l1",
    ),
}


def kind_of(name: str) -> str:
    for kind, prefixes in KINDS.items():
        if name.startswith(prefixes):
            return kind
    return "other (allocation, views, autograd, Python)"


def batches(graphs, y, batch_size: int, n_batches: int, seed: int = 0) -> list:
    order = np.random.default_rng(seed).permutation(len(graphs))[: batch_size * n_batches]
    targets = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)[:, None]
    return [(order[i : i + batch_size], targets[order[i : i + batch_size]])
            for i in range(0, len(order), batch_size)]  # fmt: skip


def trainer(graphs, sizes: dict, fused: bool = False):
    torch.manual_seed(0)
    model = CGCNN(graphs.n_atom_features, graphs.n_edge_features, sizes["atom_fea_len"],
                  sizes["n_conv"], sizes["h_fea_len"])  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, fused=fused)

    def step(rows, target):
        optimizer.zero_grad()
        loss = torch.nn.functional.smooth_l1_loss(model(graphs.batch(rows)), target)
        loss.backward()
        optimizer.step()

    return step


def best_step_ms(step, work: list, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        for rows, target in work:
            start = time.perf_counter()
            step(rows, target)
            best = min(best, time.perf_counter() - start)
    return 1e3 * best


def profile(graphs, y, sizes: dict, n_batches: int, repeats: int) -> dict:
    """Per-kind self time of one epoch of ``n_batches`` steps, the best of ``repeats``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step = trainer(graphs, sizes)
    work = batches(graphs, y, sizes["batch_size"], n_batches)
    for rows, target in work:
        step(rows, target)
    best = None
    for _ in range(repeats):
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for rows, target in work:
                step(rows, target)
            wall = time.perf_counter() - start
        if best is None or wall < best[0]:
            best = (wall, prof.key_averages())
    wall, events = best
    kinds, ops = defaultdict(float), defaultdict(lambda: [0.0, 0])
    for event in events:
        if event.key.startswith("ProfilerStep"):
            continue
        kinds[kind_of(event.key)] += event.self_cpu_time_total / 1e3 / n_batches
        ops[event.key][0] += event.self_cpu_time_total / 1e3 / n_batches
        ops[event.key][1] += event.count / n_batches
    top = sorted(ops.items(), key=lambda item: -item[1][0])[:25]
    return {
        "profiled_step_ms": 1e3 * wall / n_batches,
        "kinds_ms_per_step": dict(kinds),
        "top_ops": [{"op": k, "ms_per_step": v[0], "calls_per_step": v[1]} for k, v in top],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = SETTINGS["matbench"]
    df = load_dataset("matbench_perovskites", data_home=data_home(args.data_home))
    n = sizes["batch_size"] * args.batches
    graphs = CrystalGraphTransformer().fit_transform(df["structure"].iloc[:n])
    y = df["e_form"].to_numpy()[:n]

    threads = torch.get_num_threads()
    result = {"label": args.label, "machine": machine(), "processor": processor(),
              "load_average_start": load()}  # fmt: skip
    result["matmul_peak_gflops"] = {t: _with_threads(t, matmul_peak_gflops) for t in (1, threads)}
    work = batches(graphs, y, sizes["batch_size"], args.batches)
    step_ms = {}
    for t in sorted({1, threads}):
        step = trainer(graphs, sizes)
        step_ms[t] = _with_threads(t, lambda step=step: best_step_ms(step, work, args.repeats))
    result["best_step_ms"] = step_ms
    # the estimator's AdamW updates parameter by parameter: ~10 small operations each
    fused = trainer(graphs, sizes, fused=True)
    result["best_step_ms_fused_adamw"] = {
        t: _with_threads(t, lambda: best_step_ms(fused, work, args.repeats)) for t in (1, threads)
    }
    tiny = trainer(graphs, sizes)
    two = [(np.arange(2), torch.zeros(2, 1))] * 20
    result["fixed_cost_ms"] = _with_threads(1, lambda: best_step_ms(tiny, two, args.repeats))
    result["nominal_matmul_gflop_per_step"] = (
        matmul_flops_per_epoch(graphs, sizes) / args.batches / 1e9
    )
    result["profile_1_thread"] = _with_threads(
        1, lambda: profile(graphs, y, sizes, args.batches, args.repeats)
    )
    result["load_average_end"] = load()
    folder = RESULTS / "speed"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"profile-{args.label}.json", result)
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("profile-*.json"))]
    (folder / "profile.md").write_text(render(runs))
    print(render(runs))


def _with_threads(threads: int, function):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return function()
    finally:
        torch.set_num_threads(before)


def render(runs: list[dict]) -> str:
    runs = sorted(runs, key=lambda r: r["label"] != "before")
    lines = ["# Where skgnn's training step goes", ""]
    for r in runs:
        cpu = r["processor"]
        peak = {int(k): v for k, v in r["matmul_peak_gflops"].items()}
        steps = {int(k): v for k, v in r["best_step_ms"].items()}
        flops = r["nominal_matmul_gflop_per_step"]
        lines += [
            f"## {r['label']}: {cpu['model']} ({', '.join(cpu['flags'])}), torch "
            f"{r['machine']['packages']['torch']}",
            "",
            f"Matbench settings, batches of 128 perovskites; load average "
            f"{r['load_average_start']:.1f} → {r['load_average_end']:.1f}.",
            "",
            "| torch threads | best step | nominal matmul GFLOP/s | matmul peak | share |",
            "|---|---|---|---|---|",
        ]
        fused = {int(k): v for k, v in r.get("best_step_ms_fused_adamw", {}).items()}
        for t, ms in sorted(steps.items()):
            rate = flops / (ms / 1e3)
            lines.append(f"| {t} | {ms:.1f} ms | {rate:.1f} | {peak[t]:.1f} GFLOP/s | "
                         f"{100 * rate / peak[t]:.0f} % |")  # fmt: skip
            if t in fused:
                rate = flops / (fused[t] / 1e3)
                lines.append(f"| {t}, fused AdamW | {fused[t]:.1f} ms | {rate:.1f} | "
                             f"{peak[t]:.1f} GFLOP/s | {100 * rate / peak[t]:.0f} % |")  # fmt: skip
        prof = r["profile_1_thread"]
        total = sum(prof["kinds_ms_per_step"].values())
        lines += [
            "",
            f"Fixed cost of a step (two graphs, one thread): {r['fixed_cost_ms']:.1f} ms. "
            f"Profile of one thread (self time per step, {prof['profiled_step_ms']:.1f} ms "
            "profiled, the profiler's own cost included):",
            "",
            "| kind | ms per step | share |",
            "|---|---|---|",
        ]
        for kind, ms in sorted(prof["kinds_ms_per_step"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {kind} | {ms:.1f} | {100 * ms / total:.0f} % |")
        lines += ["", "| top operators | ms per step | calls per step |", "|---|---|---|"]
        for op in prof["top_ops"][:15]:
            lines.append(f"| `{op['op']}` | {op['ms_per_step']:.2f} | {op['calls_per_step']:.0f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
