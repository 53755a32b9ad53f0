"""``sam3-trt client``: one request to a ``sam3`` model served by ``serve`` or a Triton model repository.

The URL's scheme picks the protocol: ``http://host:port`` (tritonclient.http) or ``grpc://host:port``
(tritonclient.grpc). Responses come back as the detection dicts ``segment`` uses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..errors import Sam3TrtError
from ..rle import rle_to_mask
from .contract import CLICKS_INDEX, MODEL_NAME, OUTPUTS


def parse_url(url: str) -> tuple[str, str]:
    """``http://host:port`` / ``grpc://host:port`` -> (protocol, ``host:port``).

    Raises:
        Sam3TrtError: another scheme, or no port.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "grpc") or not parts.hostname:
        raise Sam3TrtError(f"URL {url!r}: give http://host:port or grpc://host:port (the scheme picks the protocol)")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise Sam3TrtError(f"URL {url!r} has no port: serve listens on 8000 (HTTP) and 8001 (gRPC) by default")
    return parts.scheme, f"{parts.hostname}:{port}"


def build_inputs(
    image_bytes: bytes,
    prompts: Sequence[str] = (),
    boxes: Sequence[Sequence[float]] = (),
    box_labels: Sequence[bool] | None = None,
    threshold: float | None = None,
    mask_format: str = "rle",
    max_detections: int | None = None,
    points: Sequence[Sequence[float]] = (),
    point_labels: Sequence[int] | None = None,
    multimask: bool = False,
) -> dict[str, np.ndarray]:
    """One request's tensors (batch axis of 1), as :mod:`.contract` declares them.

    Args:
        image_bytes: The encoded image file.
        prompts: Text prompts.
        boxes: Pixel ``x0, y0, x1, y1`` per box.
        box_labels: Per box, True for positive (default all positive).
        threshold: Score threshold (server default 0.5 when ``None``).
        mask_format: ``"rle"`` or ``"bitmask"``.
        max_detections: Return at most this many (the server's ``--max-detections`` when ``None``).
        points: Clicks, pixel ``x, y`` (a server started with ``--clicks``; without prompts and boxes).
        point_labels: Per click, 1 positive (default) or 0 negative.
        multimask: Clicks: three masks instead of one.
    """
    inputs = {"image": np.array([[image_bytes]], dtype=np.object_)}
    if len(points):
        inputs["points"] = np.asarray(points, dtype=np.float32).reshape(1, -1, 2)
        labels = [1] * len(points) if point_labels is None else list(point_labels)
        inputs["point_labels"] = np.asarray(labels, dtype=np.int32).reshape(1, -1)
        if multimask:
            inputs["multimask"] = np.array([[True]], dtype=np.bool_)
    if prompts:
        inputs["prompts"] = np.array([[p.encode() for p in prompts]], dtype=np.object_)
    if len(boxes):
        inputs["boxes"] = np.asarray(boxes, dtype=np.float32).reshape(1, -1, 4)
        labels = [True] * len(boxes) if box_labels is None else list(box_labels)
        inputs["box_labels"] = np.asarray(labels, dtype=np.bool_).reshape(1, -1)
    if threshold is not None:
        inputs["threshold"] = np.array([[threshold]], dtype=np.float32)
    if mask_format != "rle":
        inputs["mask_format"] = np.array([[mask_format.encode()]], dtype=np.object_)
    if max_detections is not None:
        inputs["max_detections"] = np.array([[max_detections]], dtype=np.int32)
    return inputs


def decode_outputs(
    outputs: dict[str, np.ndarray], prompts: Sequence[str] = (), mask_format: str = "rle"
) -> list[dict[str, Any]]:
    """A response's tensors -> ``[{"prompt", "prompt_index", "score", "box", "mask"}]`` (``mask`` bool HxW;
    ``prompt`` ``click`` for a click request's masks).

    Raises:
        Sam3TrtError: the response's ``error`` line, when the server refused the request.
    """
    error = outputs["error"].reshape(-1)[0]
    if error:
        raise Sam3TrtError(f"server refused the request: {bytes(error).decode()}")
    k = int(outputs["num_detections"].reshape(-1)[0])
    index = outputs["prompt_index"].reshape(-1)
    scores = outputs["scores"].reshape(-1)
    boxes = outputs["boxes_xyxy"].reshape(-1, 4)
    masks = outputs["masks"][0]
    rles = outputs["masks_rle"].reshape(-1)
    detections = []
    for row in range(k):
        mask = masks[row].astype(bool) if mask_format == "bitmask" else rle_to_mask(json.loads(bytes(rles[row])))
        i = int(index[row])
        detections.append(
            {
                "prompt": prompts[i] if 0 <= i < len(prompts) else ("click" if i == CLICKS_INDEX else "visual"),
                "prompt_index": i,
                "score": float(scores[row]),
                "box": [float(v) for v in boxes[row]],
                "mask": mask,
            }
        )
    return detections


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the connection failed or was closed (tritonclient.http raises gevent's)."""
    errors: list[type[BaseException]] = [OSError, ConnectionError]
    try:
        from geventhttpclient.response import HTTPConnectionClosed

        errors.append(HTTPConnectionClosed)
    except ImportError:
        pass
    return tuple(errors)


def _last_line(message: str) -> str:
    """The line that names the problem in a Triton error (its Python-backend errors carry tracebacks)."""
    if "Traceback" not in message:
        return message.strip()
    lines = [line.strip() for line in message.split("At:")[0].splitlines() if line.strip()]
    return lines[-1] if lines else message.strip()


class Sam3Client:
    """A tritonclient connection to the ``sam3`` model.

    Args:
        url: ``http://host:port`` or ``grpc://host:port``.
        timeout_s: Per-request network timeout.
        model: Model name on the server.
    """

    def __init__(self, url: str, timeout_s: float = 60.0, model: str = MODEL_NAME) -> None:
        self.protocol, self.address = parse_url(url)
        self.timeout_s = timeout_s
        self.model = model
        try:
            if self.protocol == "http":
                import tritonclient.http as module

                self._client = module.InferenceServerClient(
                    self.address, connection_timeout=timeout_s, network_timeout=timeout_s
                )
            else:
                import tritonclient.grpc as module

                self._client = module.InferenceServerClient(self.address)
        except ImportError:
            raise Sam3TrtError("the client needs tritonclient: pip install 'sam3-trt[serve]'") from None
        self._module = module

    def ready(self) -> bool:
        """Whether the server answers and the model is ready."""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except (InferenceServerException, OSError, ConnectionError):
            return False

    def infer_raw(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Send prepared tensors (as :func:`build_inputs` makes them); returns every output.

        Raises:
            Sam3TrtError: the server could not be reached or Triton refused the request.
        """
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        wire = []
        for name, array in inputs.items():
            tensor = self._module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            wire.append(tensor)
        wanted = [self._module.InferRequestedOutput(t.name) for t in OUTPUTS]
        try:
            if self.protocol == "grpc":
                result = self._client.infer(self.model, wire, outputs=wanted, client_timeout=self.timeout_s)
            else:
                result = self._client.infer(self.model, wire, outputs=wanted)
        except InferenceServerException as exc:
            raise Sam3TrtError(f"{self.protocol}://{self.address}: {_last_line(exc.message() or str(exc))}") from None
        except _connection_errors() as exc:
            raise Sam3TrtError(
                f"{self.protocol}://{self.address}: no answer ({type(exc).__name__}: {exc}); is the server up "
                "(GET /v2/health/ready), or was it stopped mid-request?"
            ) from None
        return {t.name: result.as_numpy(t.name) for t in OUTPUTS}

    def infer(
        self,
        image_bytes: bytes,
        prompts: Sequence[str] = (),
        boxes: Sequence[Sequence[float]] = (),
        box_labels: Sequence[bool] | None = None,
        threshold: float | None = None,
        mask_format: str = "rle",
        max_detections: int | None = None,
        points: Sequence[Sequence[float]] = (),
        point_labels: Sequence[int] | None = None,
        multimask: bool = False,
    ) -> list[dict[str, Any]]:
        """Segment one image; arguments as :func:`build_inputs`, result as :func:`decode_outputs`."""
        inputs = build_inputs(
            image_bytes, prompts, boxes, box_labels, threshold, mask_format, max_detections, points, point_labels,
            multimask,
        )  # fmt: skip
        return decode_outputs(self.infer_raw(inputs), prompts, mask_format)

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

    def __enter__(self) -> Sam3Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def query_server(
    url: str,
    image: Any,
    prompts: Sequence[str] = (),
    boxes: Sequence[str] = (),
    threshold: float = 0.5,
    mask_format: str = "rle",
    output: Any = None,
    json_path: Any = None,
    timeout: float = 60.0,
    points: Sequence[str] = (),
    multimask: bool = False,
) -> dict[str, Any]:
    """``sam3-trt client``: every input checked here first, then one request, the overlay and/or JSON written.

    Args:
        url: ``http://host:port`` or ``grpc://host:port``.
        image: Image file (sent as its bytes; read here first, so a file the server could not read fails here).
        prompts: Text prompts (one decoder batch on the server).
        boxes: Box prompts ``x0,y0,x1,y1[,neg]`` in pixels of ``image``.
        threshold: Keep detections scoring above it.
        mask_format: ``rle`` or ``bitmask``.
        output: Overlay to write (``.png``, ``.jpg``, ``.webp``), if any.
        json_path: Detections JSON (RLE masks), if any.
        timeout: Network timeout in seconds.
        points: Clicks ``x,y[,neg]`` in pixels of ``image`` (a server started with ``--clicks``; no prompts or
            boxes with them).
        multimask: Clicks: the three candidate masks instead of one.

    Returns:
        The summary line's fields: detections, best_score, output, json.
    """
    from pathlib import Path

    from ..runtime.image import open_image, to_uint8_hwc
    from ..runtime.segment import (
        check_prompt_request,
        detections_json,
        parse_pixel_box,
        parse_point,
        pixel_box_to_prompt,
        write_outputs,
    )

    image = Path(image)
    parse_url(url)
    check_prompt_request(prompts, boxes, threshold, output, json_path, points)
    if points and boxes:
        raise Sam3TrtError("--point with --box: the server's boxes are concept prompts; send clicks alone")
    if multimask and not points:
        raise Sam3TrtError("--multimask chooses among a click's three masks: give --point x,y too")
    rgb = to_uint8_hwc(open_image(image))
    height, width = rgb.shape[:2]
    parsed = [parse_pixel_box(b) for b in boxes]
    for text, (pixels, _) in zip(boxes, parsed, strict=True):
        pixel_box_to_prompt(pixels, width, height, f"--box {text!r}")
    clicks = [parse_point(p, width, height) for p in points]
    with Sam3Client(url, timeout_s=timeout) as conn:
        if clicks:  # the threshold does not apply to clicks: not sent
            detections = conn.infer(
                image.read_bytes(), mask_format=mask_format, points=[c for c, _ in clicks],
                point_labels=[label for _, label in clicks], multimask=multimask,
            )  # fmt: skip
        else:
            detections = conn.infer(
                image.read_bytes(), prompts, [p for p, _ in parsed], [positive for _, positive in parsed], threshold,
                mask_format,
            )  # fmt: skip
    info = {"server": url, "image": str(image), "size": [width, height], "prompts": list(prompts),
            "boxes": list(boxes), "points": list(points), "threshold": None if clicks else threshold}  # fmt: skip
    if output is not None:
        prompt_boxes = [(pixel_box_to_prompt(p, width, height, "box"), positive) for p, positive in parsed]
        write_outputs(rgb, detections, output, json_path, info, prompt_boxes, max_detections=len(detections) or 1)
    elif json_path is not None:
        Path(json_path).write_text(json.dumps(detections_json(detections, info, len(detections)), indent=1))
    best = max((d["score"] for d in detections), default=None)
    return {"detections": len(detections), "best_score": best, "output": str(output) if output else None,
            "json": str(json_path) if json_path else None}  # fmt: skip
