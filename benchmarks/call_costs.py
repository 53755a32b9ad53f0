"""Per-call costs of the TensorRT path (torch-free, cuda-python memory), counted by the doubles.

Builds nothing and needs no GPU: the engines' graphs run in ONNX Runtime behind the TensorRT and cuda-python
doubles, which count bytes copied, synchronisations, pool growth and engine runs per processor call
(``sam3_trt.testing.costs``). Writes ``<out>/call_costs_tiny.json`` and a PNG of bytes copied back per call.

    python benchmarks/call_costs.py --export artifacts/demo --engines engines/tiny/5090 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from sam3_trt.testing.costs import BUDGETS, budget_problems, measure_call_costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, required=True, help="tiny export folder")
    parser.add_argument("--engines", type=Path, required=True, help="engine folder built from it (sam3-trt build)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and PNG")
    args = parser.parse_args()
    from sam3_trt.assets.images import demo_image
    from sam3_trt.checks.figures import bar_chart

    image = demo_image(64, 48)  # the graphs run at 1008 whatever the size; a small image keeps upsampling cheap
    runs = {
        "nothing kept (threshold 1.0)": measure_call_costs(args.engines, args.export, image, threshold=1.0),
        "every query kept (threshold 0.0)": measure_call_costs(args.engines, args.export, image, threshold=0.0),
    }
    report = {
        "what": "per-call costs after warm-up, cuda-python memory layer, counted by the doubles (no GPU)",
        "budgets": BUDGETS,
        "runs": {name: [dataclasses.asdict(c) for c in costs] for name, costs in runs.items()},
        "budget_problems": {name: budget_problems(costs) for name, costs in runs.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "call_costs_tiny.json").write_text(json.dumps(report, indent=2) + "\n")
    calls = [c.call for c in next(iter(runs.values()))]
    bar_chart(
        calls,
        {name: [max(c.device_to_host_bytes, 1) / 1e3 for c in costs] for name, costs in runs.items()},
        args.out / "call_costs_tiny.png",
        "Device-to-host kB per processor call (torch-free TensorRT path, counted by the doubles)",
        unit="kB",
        subtitle="tiny engines, after warm-up; 0 bytes drawn as 0.001 kB (log scale)",
    )
    for name, costs in runs.items():
        print(name)
        for c in costs:
            print(
                f"  {c.call:18s} kept {c.kept:5d}  to host {c.device_to_host_bytes:>13,d} B  to device "
                f"{c.host_to_device_bytes:>11,d} B  syncs {c.synchronisations:3d}  pool growth {c.driver_allocations}"
            )
    problems = [p for ps in report["budget_problems"].values() for p in ps]
    print("budgets: " + ("all hold" if not problems else "; ".join(problems)))


if __name__ == "__main__":
    main()
