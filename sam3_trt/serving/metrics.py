"""Triton's Prometheus counters for one model, read from the metrics port, and what they say between two reads.

Triton exports cumulative counters per model and version (``nv_inference_*``, microseconds for durations).
Two reads around a load give what matters for SAM3 serving: requests, model executions (so the mean dynamic
batch), and the mean time a request waited in the queue versus the time the model computed.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Mapping

#: The counters read (Triton's names); durations are cumulative microseconds.
COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)

_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")


def parse_counters(text: str, model: str) -> dict[str, float]:
    """The :data:`COUNTERS` of ``model`` (summed over its versions) in Prometheus text ``text``; absent ones 0."""
    found = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match or match["name"] not in found:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if labels.get("model") == model:
            found[match["name"]] += float(match["value"])
    return found


def read_counters(url: str, model: str = "sam3", timeout: float = 10.0) -> dict[str, float]:
    """:func:`parse_counters` of the metrics endpoint ``url`` (``http://host:8002/metrics``)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_counters(response.read().decode(), model)


def summarize(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float | None]:
    """What happened between two reads: requests, executions, mean batch, mean queue / compute ms per request.

    ``mean_batch`` is inferences per model execution (Triton's dynamic batching at work); the times are means
    per successful request (queue: waiting for an instance; compute: the model's own input, infer and output
    phases, shared by the requests of a batch).
    """
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in COUNTERS}
    requests, executions = d["nv_inference_request_success"], d["nv_inference_exec_count"]
    compute = sum(d[f"nv_inference_compute_{p}_duration_us"] for p in ("input", "infer", "output"))
    per_request = (lambda us: round(us / requests / 1000, 3)) if requests else (lambda _us: None)
    return {
        "requests": requests,
        "failures": d["nv_inference_request_failure"],
        "executions": executions,
        "mean_batch": round(d["nv_inference_count"] / executions, 3) if executions else None,
        "request_ms": per_request(d["nv_inference_request_duration_us"]),
        "queue_ms": per_request(d["nv_inference_queue_duration_us"]),
        "compute_ms": per_request(compute),
    }
