"""Requests against running ``sam3-trt serve`` servers, run with the serving venv's Python.

``python tests/serving/serve_scenario.py ARGS.json OUT.json``: ARGS holds ``servers`` (endpoint dicts as ``serve``
prints them), ``image`` (a PNG path), ``big_image`` (over the servers' --max-image-pixels). OUT gets, per
case, the decoded detections (masks as compressed RLE) or the error line, for the test to compare with a
direct processor call.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit
from urllib.request import urlopen

import numpy as np

from sam3_trt.errors import Sam3TrtError
from sam3_trt.rle import mask_to_compressed_rle
from sam3_trt.serving.client import Sam3Client, build_inputs, decode_outputs

PROMPTS = ["red square", "blue disc"]
BOX = [10.0, 10.0, 100.0, 80.0]


def _detections(dets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**d, "mask": mask_to_compressed_rle(d["mask"])} for d in dets]


def _outcome(fn: Any) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        return {"detections": _detections(fn()), "seconds": time.perf_counter() - start}
    except Sam3TrtError as exc:
        return {"error": str(exc), "seconds": time.perf_counter() - start}


def _raw_error(client: Sam3Client, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Send tensors as given (possibly off-contract) and return the error line, in-band or from Triton."""
    try:
        outputs = client.infer_raw(inputs)
        decode_outputs(outputs)
    except Sam3TrtError as exc:
        return {"error": str(exc)}
    return {"error": None}


def _disconnect_mid_request(http_url: str, inputs: dict[str, np.ndarray]) -> None:
    """Hang up twice: once halfway through sending a request, once right after sending a whole one (the
    server is still computing it when the client is gone)."""
    import tritonclient.http as triton_http
    from tritonclient.utils import np_to_triton_dtype

    parts = urlsplit(http_url)
    wire = []
    for name, array in inputs.items():
        tensor = triton_http.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        wire.append(tensor)
    body, json_size = triton_http.InferenceServerClient.generate_request_body(wire)
    head = (
        f"POST /v2/models/sam3/infer HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {json_size}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    for payload in (head + body[: len(body) // 2], head + body):
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(payload)
            time.sleep(0.2)


def main(args_path: str, out_path: str) -> None:
    args = json.loads(open(args_path).read())
    png = open(args["image"], "rb").read()
    big = open(args["big_image"], "rb").read()
    first, *others = args["servers"]
    out: dict[str, Any] = {}
    with Sam3Client(first["http"]) as http, Sam3Client(first["grpc"]) as grpc:
        out["ready"] = [http.ready(), grpc.ready()]
        out["http_text_box"] = _outcome(lambda: http.infer(png, PROMPTS, [BOX], threshold=0.3))
        out["grpc_text_box"] = _outcome(lambda: grpc.infer(png, PROMPTS, [BOX], threshold=0.3))
        out["grpc_box_bitmask"] = _outcome(lambda: grpc.infer(png, (), [BOX], threshold=0.2, mask_format="bitmask"))
        out["http_nothing_kept"] = _outcome(lambda: http.infer(png, ["red square"], threshold=0.99))
        bad = {
            "corrupt_image": lambda: http.infer(png[: len(png) // 2], PROMPTS),
            "too_many_pixels": lambda: http.infer(big, PROMPTS),
            "no_prompts": lambda: http.infer(png),
            "10000_prompts": lambda: grpc.infer(png, ["cat"] * 10_000),
            "nan_box": lambda: grpc.infer(png, PROMPTS, [[10, float("nan"), 50, 50]]),
            "clicks_not_enabled": lambda: http.infer(png, points=[[20.0, 20.0]]),
        }
        out["bad"] = {}
        for name, call in bad.items():
            out["bad"][name] = _outcome(call)
            out["bad"][name]["next_good"] = "detections" in _outcome(
                lambda: http.infer(png, ["red square"], threshold=0.3)
            )
        wrong_dtype = build_inputs(png, PROMPTS)
        wrong_dtype["boxes"] = np.array([[BOX]], np.float64)
        out["bad"]["float64_boxes"] = _raw_error(http, wrong_dtype)
        _disconnect_mid_request(first["http"], build_inputs(png, PROMPTS, [BOX], threshold=0.3))
        out["after_disconnect"] = _outcome(lambda: http.infer(png, PROMPTS, [BOX], threshold=0.3))
        out["metrics"] = urlopen(first["metrics"], timeout=10).read().decode()
    if others:
        # one client spreading requests over two servers, round robin, as a load balancer would
        clients = [Sam3Client(s["http"]) for s in args["servers"]]
        order = [clients[i % len(clients)] for i in range(4)]
        out["spread"] = [_outcome(lambda c=c: c.infer(png, PROMPTS, [BOX], threshold=0.3)) for c in order]
        for c in clients:
            c.close()
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
