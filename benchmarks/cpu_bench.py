"""The project's published CPU numbers: upstream eager sam3 vs sam3-trt's ONNX Runtime backend.

Runs ``sam3_trt.bench.run_bench`` (each backend in its own process, equal threads) on an export
folder and writes ``<out>/cpu_<variant>.json``, a bar chart PNG and a markdown table for the README.

    python benchmarks/cpu_bench.py --artifacts artifacts/full --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sam3_trt.bench import STAGES, bench_lines, run_bench
from sam3_trt.figures import bar_chart
from sam3_trt.manifest import read_manifest


def markdown(report: dict) -> str:
    """README table: median ms per stage, speed-ups, targets."""
    backends = list(report["backends"])
    rows = [
        "| stage | " + " | ".join(f"{b} (ms)" for b in backends) + " | speed-up |",
        "|---" * (len(backends) + 2) + "|",
    ]
    ratios = report["speedup_vs_eager"].get("onnxruntime", {})
    for stage in STAGES:
        vals = [report["backends"][b]["stages"].get(stage, {}).get("median_ms") for b in backends]
        cells = [f"{v:,.1f}" if v is not None else "-" for v in vals]
        ratio = f"{ratios[stage]:.2f}x" if stage in ratios else "-"
        rows.append(f"| {stage} | " + " | ".join(cells) + f" | {ratio} |")
    rows.append("| load (s) | " + " | ".join(f"{report['backends'][b]['load_s']:.1f}" for b in backends) + " | |")
    rows.append(
        "| peak RSS (MB) | " + " | ".join(f"{report['backends'][b]['peak_rss_mb']:,.0f}" for b in backends) + " | |"
    )
    m = report["machine"]
    checks = report["target_check"].get("cpu", {})
    met = ", ".join(
        f"{k} {v['measured']} ({v['target']}: {'met' if v['met'] else 'NOT met'})" for k, v in checks.items()
    )
    return (
        "\n".join(rows)
        + f"\n\nMachine: {m.get('cpu')}, {m.get('cpu_count')} cores, {m.get('memory_gb')} GB, torch {m.get('torch')}, onnxruntime {m.get('onnxruntime')}.\nTargets: {met}.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, required=True, help="export folder")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=2)
    args = parser.parse_args()
    variant = read_manifest(args.artifacts)["weights"]["variant"]
    report = run_bench(
        args.artifacts,
        ["torch", "onnxruntime"],
        prompts=args.prompts,
        repeats=args.repeats,
        warmup=args.warmup,
        progress=print,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"cpu_{variant}.json").write_text(json.dumps(report, indent=2) + "\n")
    stages = [s for s in STAGES if s in report["backends"]["onnxruntime"]["stages"]]
    series = {b: [r["stages"].get(s, {}).get("median_ms") for s in stages] for b, r in report["backends"].items()}
    bar_chart(stages, series, args.out / f"cpu_{variant}.png", f"CPU, {variant} model: median ms per stage")
    (args.out / f"cpu_{variant}.md").write_text(markdown(report))
    print("\n".join(bench_lines(report)))
    print(markdown(report))


if __name__ == "__main__":
    main()
