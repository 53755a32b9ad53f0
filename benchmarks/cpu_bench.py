"""The project's published CPU numbers: upstream eager sam3 vs sam3-trt's ONNX Runtime backend.

Runs ``sam3_trt.checks.bench.run_bench`` (each backend in its own process, equal threads) on an export
folder and writes ``<out>/cpu_<variant>.json``, a bar chart PNG and a markdown table for its dated page under ``docs/results/``.

    python benchmarks/cpu_bench.py --artifacts artifacts/full --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sam3_trt.checks.bench import STAGES, bench_figure, bench_lines, run_bench
from sam3_trt.manifest import read_manifest


def markdown(report: dict) -> str:
    """Markdown table (for its dated page under docs/results/): median ms per stage, speed-ups, targets."""
    backends = list(report["backends"])
    compared = list(report["speedup_vs_eager"])
    rows = [
        "| stage | " + " | ".join(f"{b} (ms)" for b in backends) + "".join(f" | {b} speed-up" for b in compared) + " |",
        "|---" * (len(backends) + len(compared) + 1) + "|",
    ]
    blank = " |" * (len(compared) + 1)
    for stage in STAGES:
        vals = [report["backends"][b]["stages"].get(stage, {}).get("median_ms") for b in backends]
        cells = [f"{v:,.1f}" if v is not None else "-" for v in vals]
        ratios = [report["speedup_vs_eager"][b].get(stage) for b in compared]
        rows.append(
            f"| {stage} | " + " | ".join(cells) + "".join(f" | {r:.2f}x" if r else " | -" for r in ratios) + " |"
        )
    rows.append("| load (s) | " + " | ".join(f"{report['backends'][b]['load_s']:.1f}" for b in backends) + blank)
    rows.append(
        "| peak RSS (MB) | " + " | ".join(f"{report['backends'][b]['peak_rss_mb']:,.0f}" for b in backends) + blank
    )
    m = report["machine"]
    lines = []
    for key, label in (("cpu", "Targets (onnxruntime, FP32)"), ("cpu_int8", "Same targets, INT8 vision graph")):
        checks = report["target_check"].get(key)
        if isinstance(checks, dict):
            met = ", ".join(
                f"{k} {v['measured']} ({v['target']}: {'met' if v['met'] else 'NOT met'})" for k, v in checks.items()
            )
            lines.append(f"{label}: {met}.")
    return (
        "\n".join(rows)
        + f"\n\nMachine: {m.get('cpu')}, {m.get('cpu_count')} cores, {m.get('memory_gb')} GB, torch {m.get('torch')}, onnxruntime {m.get('onnxruntime')}.\n"
        + "\n".join(lines)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, required=True, help="export folder")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--int8-artifacts", type=Path, default=None, help="`calibrate --mode int8` folder")
    args = parser.parse_args()
    variant = read_manifest(args.artifacts)["weights"]["variant"]
    report = run_bench(
        args.artifacts,
        ["torch", "onnxruntime"],
        prompts=args.prompts,
        repeats=args.repeats,
        warmup=args.warmup,
        progress=print,
        int8_artifacts=args.int8_artifacts,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"cpu_{variant}.json").write_text(json.dumps(report, indent=2) + "\n")
    bench_figure(report, args.out / f"cpu_{variant}.png")
    (args.out / f"cpu_{variant}.md").write_text(markdown(report))
    print("\n".join(bench_lines(report)))
    print(markdown(report))


if __name__ == "__main__":
    main()
