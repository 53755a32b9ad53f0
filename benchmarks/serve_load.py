"""Load test of ``sam3-trt serve`` on loopback: C concurrent clients x R requests each, per C in --clients.

Run with the serving venv's Python (it has tritonclient; ``make serve-load`` does this). Starts one server
on free 127.0.0.1 ports, then per concurrency level: throughput, latency percentiles, errors, responses
checked against a direct :class:`~sam3_trt.Sam3Processor` call on the same input (a lost or swapped
response fails the check: the requests rotate over distinct images and prompts), and the server's RSS
(its process tree: serve, tritonserver, the Python-backend stub) before and after. Then a soak: one fixed
concurrency for ``--soak-rounds`` rounds with the RSS after each, to show whether memory keeps growing
once the server has run full batches (it should not: ``serve`` warms to a full batch before "ready").
Writes JSON, a PNG and a markdown table.

    .venv-serve/bin/python benchmarks/serve_load.py --artifacts artifacts/demo --clients 1,4,16 --soak-rounds 4
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from sam3_trt.manifest import read_manifest
from sam3_trt.serving.metrics import read_counters, summarize
from sam3_trt.serving.server import free_ports

#: The distinct requests the clients rotate over: (image variant, prompts). Thresholds stay low so every
#: response carries detections to compare.
CASES = (
    (0, ["red square", "blue disc"]),
    (1, ["green triangle"]),
    (2, ["yellow blob", "red square", "blue disc"]),
    (3, ["blue disc"]),
)
THRESHOLD = 0.3
#: Served vs direct (same runtime and code in this process and the server): float32 transport only.
TOLERANCE = {"score_abs": 1e-6, "box_abs_px": 1e-3, "mask_pixels_differing": 0.0}


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (Linux /proc), MB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return round(total / 1024, 1)


def _images(size: tuple[int, int]) -> list[bytes]:
    from sam3_trt.assets.images import demo_image

    out = []
    for variant in range(len(CASES)):
        buf = io.BytesIO()
        demo_image(*size, variant=variant).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _expected(artifacts: Path, images: list[bytes], threads: int) -> list[list[dict[str, Any]]]:
    from PIL import Image

    from sam3_trt import Sam3Processor
    from sam3_trt.runtime.segment import detect
    from sam3_trt.serving.handler import MAX_DETECTIONS

    # the server keeps its --max-detections best (default MAX_DETECTIONS) by score: the reference does the same
    with Sam3Processor(artifacts, backend="onnxruntime", threads=threads, confidence_threshold=THRESHOLD) as proc:
        return [
            detect(
                proc,
                proc.set_image(np.asarray(Image.open(io.BytesIO(images[v])).convert("RGB"))),
                prompts,
                max_detections=MAX_DETECTIONS,
            )[0]
            for v, prompts in CASES
        ]


def _matches(served: list[dict[str, Any]], direct: list[dict[str, Any]]) -> bool:
    if len(served) != len(direct):
        return False
    for a, b in zip(served, direct, strict=True):
        if a["prompt"] != b["prompt"] or abs(a["score"] - b["score"]) > TOLERANCE["score_abs"]:
            return False
        if np.max(np.abs(np.subtract(a["box"], b["box"]))) > TOLERANCE["box_abs_px"]:
            return False
        if np.mean(a["mask"] != np.asarray(b["mask"], bool)) > TOLERANCE["mask_pixels_differing"]:
            return False
    return True


def _level(url: str, clients: int, requests: int, images: list[bytes], expected: list[Any]) -> dict[str, Any]:
    from sam3_trt.errors import Sam3TrtError
    from sam3_trt.serving.client import Sam3Client

    latencies: list[float] = []
    errors: list[str] = []
    mismatches = 0
    lock = threading.Lock()

    def worker(index: int) -> None:
        nonlocal mismatches
        with Sam3Client(url, timeout_s=600) as client:
            for r in range(requests):
                case = (index + r) % len(CASES)
                variant, prompts = CASES[case]
                start = time.perf_counter()
                try:
                    served = client.infer(images[variant], prompts, threshold=THRESHOLD)
                except Sam3TrtError as exc:
                    with lock:
                        errors.append(str(exc))
                    continue
                elapsed = time.perf_counter() - start
                ok = _matches(served, expected[case])
                with lock:
                    latencies.append(elapsed)
                    mismatches += not ok

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    q = np.percentile(np.array(latencies) * 1000, [50, 95, 99]) if latencies else [None] * 3
    return {
        "clients": clients,
        "requests": clients * requests,
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 3),
        "latency_ms": {"p50": _round(q[0]), "p95": _round(q[1]), "p99": _round(q[2])},
        "mean_ms": _round(statistics.mean(latencies) * 1000) if latencies else None,
        "errors": len(errors),
        "error_examples": errors[:3],
        "mismatches": mismatches,
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, required=True, help="export (or engine) folder to serve")
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels, comma-separated")
    parser.add_argument("--requests", type=int, default=4, help="requests per client per level")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--image-size", default="128x96", help="WxH of the request images")
    parser.add_argument("--soak-rounds", type=int, default=0, help="rounds of the soak phase (0: none)")
    parser.add_argument("--soak-clients", type=int, default=None, help="soak concurrency [the largest level]")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default=None, help="file stem [serve_load_<variant>]")
    args = parser.parse_args()
    try:
        levels = [int(c) for c in args.clients.split(",")]
        width, height = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        sys.exit(f"error: --clients {args.clients!r} / --image-size {args.image_size!r}: give e.g. 1,4,16 and 128x96")
    if not levels or min(levels) < 1 or args.requests < 1:
        sys.exit("error: --clients levels and --requests must be at least 1")
    soak_clients = args.soak_clients or max(levels)
    if args.soak_rounds < 0 or soak_clients < 1:
        sys.exit(f"error: --soak-rounds {args.soak_rounds} / --soak-clients {soak_clients}: give >= 0 and >= 1")
    manifest = read_manifest(args.artifacts)
    variant = manifest.get("weights", {}).get("variant", "unknown")
    stem = args.name or f"serve_load_{variant}"
    args.out.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    images = _images((width, height))
    print(f"serve_load: direct reference on {args.artifacts}", file=sys.stderr)
    expected = _expected(args.artifacts, images, cpus)

    http, grpc, metrics = free_ports(3)
    log = args.out / f".{stem}-triton.log"
    cmd = [sys.executable, "-m", "sam3_trt.cli", "serve", "--artifacts", str(args.artifacts),
           "--instances", str(args.instances), "--http-port", str(http), "--grpc-port", str(grpc),
           "--metrics-port", str(metrics), "--triton-log", str(log)]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 300)
        line = server.stdout.readline() if ready else ""
        if not line:
            sys.exit("error: the server did not get ready within 300 s")
        endpoints = json.loads(line)
        # warm-up (not reported): one full dynamic batch, so allocator pools reach their working size and
        # "start" vs "end" RSS measures growth across the run, not the first batch
        warm = _level(endpoints["http"], endpoints["max_batch"], 1, images, expected)
        if warm["errors"] or warm["mismatches"]:
            sys.exit(f"error: warm-up failed: {warm}")
        rss_start = _tree_rss_mb(server.pid)
        results = []
        for clients in levels:
            print(f"serve_load: {clients} client(s) x {args.requests} requests", file=sys.stderr)
            before = read_counters(endpoints["metrics"])
            result = _level(endpoints["http"], clients, args.requests, images, expected)
            result["triton"] = summarize(before, read_counters(endpoints["metrics"]))  # Triton's own counters
            result["server_rss_mb"] = _tree_rss_mb(server.pid)
            results.append(result)
            print(json.dumps(result), file=sys.stderr)
        soak = []
        for index in range(args.soak_rounds):
            print(f"serve_load: soak round {index + 1}/{args.soak_rounds}, {soak_clients} client(s)", file=sys.stderr)
            result = _level(endpoints["http"], soak_clients, args.requests, images, expected)
            result["server_rss_mb"] = _tree_rss_mb(server.pid)
            soak.append(result)
            print(json.dumps(result), file=sys.stderr)
        rss_end = _tree_rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(120)
        log.unlink(missing_ok=True)
    report = {
        "artifacts": str(args.artifacts),
        "weights": manifest.get("weights"),
        "backend": "onnxruntime" if manifest.get("kind") == "onnx-export" else "tensorrt",
        "instances": args.instances,
        "image_size": [width, height],
        "cases": [{"image_variant": v, "prompts": p} for v, p in CASES],
        "threshold": THRESHOLD,
        "tolerance": TOLERANCE,
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": cpus, "gpu": None},
        "server_rss_mb": {"start": rss_start, "end": rss_end},
        "server_exit_code": code,
        "levels": results,
        "soak": {"clients": soak_clients, "requests_per_client": args.requests, "rounds": soak},
    }
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    _figure(report, args.out / f"{stem}.png")
    (args.out / f"{stem}.md").write_text(markdown(report))
    every = results + soak
    print(json.dumps({"json": str(args.out / f"{stem}.json"), "errors": sum(r["errors"] for r in every),
                      "mismatches": sum(r["mismatches"] for r in every)}))  # fmt: skip
    if any(r["errors"] or r["mismatches"] for r in every) or code != 0:
        sys.exit(1)


def markdown(report: dict[str, Any]) -> str:
    """Markdown table of the run (for its dated page under docs/results/)."""
    rows = ["| clients | requests | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | errors | mismatches | server RSS (MB) "
            "| Triton: mean batch | queue (ms) | compute (ms) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["levels"]:
        lat = r["latency_ms"]
        rows.append(
            f"| {r['clients']} | {r['requests']} | {r['throughput_rps']:.2f} | {lat['p50']:,.0f} | {lat['p95']:,.0f} "
            f"| {lat['p99']:,.0f} | {r['errors']} | {r['mismatches']} | {r['server_rss_mb']:,.0f} "
            f"| {_cell(r['triton']['mean_batch'])} | {_cell(r['triton']['queue_ms'])} | {_cell(r['triton']['compute_ms'])} |"
        )
    soak = report["soak"]
    if soak["rounds"]:
        rows.append(f"| soak: {soak['clients']} x {len(soak['rounds'])} rounds | | | | | | | | | | | |")
        for i, r in enumerate(soak["rounds"], 1):
            lat = r["latency_ms"]
            rows.append(
                f"| {r['clients']} (round {i}) | {r['requests']} | {r['throughput_rps']:.2f} | {lat['p50']:,.0f} "
                f"| {lat['p95']:,.0f} | {lat['p99']:,.0f} | {r['errors']} | {r['mismatches']} | {r['server_rss_mb']:,.0f} "
                "| | | |"
            )
    rss = report["server_rss_mb"]
    m = report["machine"]
    return (
        "\n".join(rows)
        + f"\n\nServer RSS {rss['start']:,.0f} MB at start, {rss['end']:,.0f} MB at the end. {report['backend']}, "
        + f"{report['instances']} instance(s), {report['weights'].get('variant')} {report['weights'].get('kind')} weights, "
        + f"{report['image_size'][0]}x{report['image_size'][1]} images. Machine: {m['cpu']}, {m['cpu_count']} cores, no GPU.\n"
    )


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _figure(report: dict[str, Any], path: Path) -> None:
    from sam3_trt.checks.figures import bar_chart

    series = {
        f"{r['clients']} client(s)": [r["latency_ms"][k] for k in ("p50", "p95", "p99")] for r in report["levels"]
    }
    rps = ", ".join(f"C={r['clients']}: {r['throughput_rps']:.2f} req/s" for r in report["levels"])
    bar_chart(["p50", "p95", "p99"], series, path, f"sam3-trt serve on loopback: latency ({rps})",
              subtitle=f"{report['weights'].get('variant')} {report['backend']}, {report['machine']['cpu_count']} cores")  # fmt: skip


if __name__ == "__main__":
    main()
