"""The ``sam3`` model's inference callable, independent of any server.

``Sam3Handler(processor)(requests)`` takes the requests Triton's dynamic batcher grouped (one dict of
numpy arrays per request, each with Triton's batch axis of 1) and returns one dict of outputs per request
(:mod:`.contract`). Every request is checked before any model runs; the valid ones' images are encoded in
one vision batch, then each request's prompts run as one decoder batch. A request that fails its checks
gets its one-line ``error`` and no detections; the others are unaffected.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..rle import mask_to_compressed_rle
from ..specs import SPECS
from .contract import CLICKS_INDEX, INPUTS, MASK_FORMATS

#: Default of ``--max-image-pixels``: a 4096x4096 image (decoded RGB: 48 MiB).
MAX_IMAGE_PIXELS = 4096 * 4096
#: Default of ``--max-prompts``: prompts in one request.
MAX_PROMPTS = 64
#: Default score threshold when a request sends none.
DEFAULT_THRESHOLD = 0.5
#: Default of ``--max-detections``: detections per request (and the most a request may ask for).
MAX_DETECTIONS = 100
#: Default of ``--max-bitmask-mb``: the largest bitmask response (K x H x W bytes) a request may ask for.
MAX_BITMASK_MB = 256


@dataclasses.dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; beyond it the request gets an error, not the server's memory.

    Args:
        max_image_pixels: Width x height, checked from the image header before decoding.
        max_prompts: Text prompts per request.
        max_boxes: Box prompts per request (the decoder graph's box axis maximum).
        max_detections: Detections per request, the best scores over all its prompts, chosen before any mask
            is upsampled; a request's ``max_detections`` may lower it.
        max_bitmask_mb: A ``bitmask`` request whose response could exceed this (``max_detections`` x H x W
            bytes) is refused before it runs, naming ``rle``.
    """

    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_prompts: int = MAX_PROMPTS
    max_boxes: int = SPECS["decoder"].dim("N").max
    max_detections: int = MAX_DETECTIONS
    max_bitmask_mb: int = MAX_BITMASK_MB

    def check(self) -> ServeLimits:
        """Raise :class:`Sam3TrtError` naming the first limit that is not a positive integer."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or value < 1:
                flag = "--" + field.name.replace("_", "-")
                raise Sam3TrtError(f"{flag} {value!r}: must be a positive integer")
        return self


@dataclasses.dataclass
class ServeRequest:
    """One checked request.

    Args:
        image: ``HxWx3`` uint8 RGB.
        prompts: Text prompts (may be empty when boxes are given).
        boxes: ``(normalised cx, cy, w, h; positive?)`` per box prompt.
        threshold: Score threshold for this request.
        mask_format: ``"rle"`` or ``"bitmask"``.
        max_detections: Detections to return at most (the server's limit or lower).
        points: Clicks, ``[N, 2]`` pixel x, y (then prompts and boxes are empty), or ``None``.
        point_labels: Per click, 1 positive or 0 negative.
        multimask: Clicks: three masks instead of one.
    """

    image: np.ndarray
    prompts: list[str]
    boxes: list[tuple[list[float], bool]]
    threshold: float
    mask_format: str
    max_detections: int = MAX_DETECTIONS
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    multimask: bool = False


def parse_request(inputs: Mapping[str, np.ndarray], limits: ServeLimits, clicks: bool = False) -> ServeRequest:
    """Check and decode one request's tensors (batch axis of 1 included).

    Args:
        inputs: The request's tensors by name.
        limits: This server's per-request limits.
        clicks: Whether this server answers clicks (``serve --clicks``).

    Raises:
        Sam3TrtError: one line naming the input, its bad value and the fix.
    """
    from ..runtime.processor import check_threshold
    from ..runtime.segment import pixel_box_to_prompt

    known = {t.name for t in INPUTS}
    unknown = sorted(set(inputs) - known)
    if unknown:
        raise Sam3TrtError(f"unknown input(s) {unknown}: the sam3 model takes {sorted(known)}")
    rows = {name: np.asarray(value) for name, value in inputs.items()}
    for name, value in rows.items():
        if value.ndim == 0 or value.shape[0] != 1:
            raise Sam3TrtError(
                f"input {name} has batch size {value.shape[0] if value.ndim else 0}: send one image per request "
                "(batch 1); Triton batches concurrent requests itself"
            )
    if "image" not in rows:
        raise Sam3TrtError("input image is missing: send the encoded image file (PNG, JPEG, ...) as bytes")
    image = _decode_image(_one_bytes(rows["image"], "image"), limits)
    height, width = image.shape[:2]

    prompts = []
    raw_prompts = rows.get("prompts", np.zeros((1, 0), np.object_))[0].reshape(-1)
    if len(raw_prompts) > limits.max_prompts:
        raise Sam3TrtError(
            f"input prompts has {len(raw_prompts)} prompts, more than this server's --max-prompts "
            f"{limits.max_prompts}: split them over several requests"
        )
    for i, value in enumerate(raw_prompts):
        text = _text(value, f"prompts[{i}]")
        if not text.strip():
            raise Sam3TrtError(f"prompts[{i}] is empty: send a phrase such as 'a red car', or boxes alone")
        prompts.append(text)

    boxes: list[tuple[list[float], bool]] = []
    if "boxes" in rows:
        raw = rows["boxes"][0]
        if raw.dtype != np.float32 or raw.ndim != 2 or raw.shape[1] != 4:
            raise Sam3TrtError(f"input boxes is {raw.dtype}{list(raw.shape)}: send float32 [N, 4] pixel x0, y0, x1, y1")
        if len(raw) > limits.max_boxes:
            raise Sam3TrtError(f"input boxes has {len(raw)} boxes, at most {limits.max_boxes} are supported")
        labels = rows.get("box_labels", np.ones((1, len(raw)), np.bool_))[0].reshape(-1)
        if labels.dtype != np.bool_ or len(labels) != len(raw):
            raise Sam3TrtError(
                f"input box_labels is {labels.dtype}[{len(labels)}]: send bool [{len(raw)}], one per box "
                "(True positive, False negative)"
            )
        boxes = [
            (pixel_box_to_prompt(box, width, height, f"boxes[{i}] {box.tolist()}"), bool(label))
            for i, (box, label) in enumerate(zip(raw, labels, strict=True))
        ]
    elif "box_labels" in rows:
        raise Sam3TrtError("input box_labels was sent without boxes: send boxes float32 [N, 4] with it")
    if "points" in rows or "point_labels" in rows or "multimask" in rows:
        return _click_request(rows, image, prompts, boxes, limits, clicks)
    if not prompts and not boxes:
        raise Sam3TrtError("the request has no prompts and no boxes: send at least one text prompt or box")

    threshold = DEFAULT_THRESHOLD
    if "threshold" in rows:
        value = rows["threshold"].reshape(-1)
        if value.dtype != np.float32 or value.size != 1:
            raise Sam3TrtError(f"input threshold is {value.dtype}[{value.size}]: send float32 [1] in [0, 1]")
        threshold = check_threshold(float(value[0]), "input threshold")
    mask_format = _mask_format(rows)
    max_detections = limits.max_detections
    if "max_detections" in rows:
        value = rows["max_detections"].reshape(-1)
        if value.dtype != np.int32 or value.size != 1:
            raise Sam3TrtError(f"input max_detections is {value.dtype}[{value.size}]: send int32 [1]")
        max_detections = int(value[0])
        if not 1 <= max_detections <= limits.max_detections:
            raise Sam3TrtError(
                f"input max_detections {max_detections}: send 1 to this server's --max-detections "
                f"{limits.max_detections}"
            )
    _check_bitmask_size(mask_format, max_detections, image, limits, " or a smaller max_detections")
    return ServeRequest(image, prompts, boxes, threshold, mask_format, max_detections)


def _click_request(
    rows: Mapping[str, np.ndarray],
    image: np.ndarray,
    prompts: list[str],
    boxes: list[tuple[list[float], bool]],
    limits: ServeLimits,
    clicks: bool,
) -> ServeRequest:
    """The checked click request (``points``, ``point_labels``, ``multimask``): upstream's ``predict_inst``."""
    from ..runtime.interactive import check_prompts

    if "points" not in rows:
        sent = "point_labels" if "point_labels" in rows else "multimask"
        raise Sam3TrtError(f"input {sent} was sent without points: send points float32 [N, 2] pixel x, y with it")
    if not clicks:
        raise Sam3TrtError(
            "input points: this server does not answer clicks; start it with `serve --clicks` (a Triton "
            "repository: write it with `triton-repo --clicks`) on an export made with --video, or its engines"
        )
    if prompts or boxes:
        raise Sam3TrtError(
            "input points with prompts or boxes: clicks and concept prompts run different heads; send them in "
            "separate requests"
        )
    others = [name for name in ("threshold", "max_detections") if name in rows]
    if others:
        raise Sam3TrtError(
            f"input {others[0]} does not apply to clicks (they return 1 mask, or 3 with multimask, scored by "
            "predicted IoU): leave it out"
        )
    points = rows["points"][0]
    if points.dtype != np.float32 or points.ndim != 2 or points.shape[1] != 2 or not len(points):
        raise Sam3TrtError(
            f"input points is {points.dtype}{list(points.shape)}: send float32 [N, 2] pixel x, y, N >= 1"
        )
    labels = rows.get("point_labels", np.ones((1, len(points)), np.int32))[0].reshape(-1)
    if labels.dtype != np.int32:
        raise Sam3TrtError(f"input point_labels is {labels.dtype}: send int32 [{len(points)}] (1 positive, 0 negative)")
    try:  # the runtime's own checks (finite, inside the image, labels 0/1, counts, the click head's limits)
        check_prompts(points, labels, None, None, image.shape[:2], True)
    except Sam3TrtError as exc:
        raise Sam3TrtError(f"input points: {exc}") from None
    multimask = False
    if "multimask" in rows:
        value = rows["multimask"].reshape(-1)
        if value.dtype != np.bool_ or value.size != 1:
            raise Sam3TrtError(f"input multimask is {value.dtype}[{value.size}]: send bool [1]")
        multimask = bool(value[0])
    mask_format = _mask_format(rows)
    _check_bitmask_size(mask_format, 3 if multimask else 1, image, limits, "")
    return ServeRequest(image, [], [], DEFAULT_THRESHOLD, mask_format, limits.max_detections, points, labels, multimask)


def _check_bitmask_size(mask_format: str, masks: int, image: np.ndarray, limits: ServeLimits, fix: str) -> None:
    """Refuse a ``bitmask`` response of up to ``masks`` full-size masks over ``--max-bitmask-mb`` (one byte each
    pixel): RLE is a few kB a mask, a bitmask of a large image is megabytes."""
    height, width = image.shape[:2]
    mb = masks * height * width / 2**20
    if mask_format == "bitmask" and mb > limits.max_bitmask_mb:
        raise Sam3TrtError(
            f"input mask_format 'bitmask': {masks} masks of {width}x{height} could take {mb:.0f} MB, over this "
            f"server's --max-bitmask-mb {limits.max_bitmask_mb}: ask for 'rle' (the default){fix}"
        )


def _mask_format(rows: Mapping[str, np.ndarray]) -> str:
    """The request's ``mask_format`` (``rle`` when left out), checked against :data:`MASK_FORMATS`."""
    if "mask_format" not in rows:
        return "rle"
    mask_format = _text(_one_bytes(rows["mask_format"], "mask_format"), "mask_format")
    if mask_format not in MASK_FORMATS:
        raise Sam3TrtError(f"input mask_format {mask_format!r}: send one of {', '.join(MASK_FORMATS)}")
    return mask_format


def _one_bytes(value: np.ndarray, name: str) -> bytes:
    flat = value.reshape(-1)
    if flat.size != 1:
        raise Sam3TrtError(f"input {name} holds {flat.size} elements: send exactly one")
    item = flat[0]
    if isinstance(item, (bytes, np.bytes_)):
        return bytes(item)
    raise Sam3TrtError(f"input {name} is {value.dtype}, not bytes: send it as Triton BYTES")


def _text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, (bytes, np.bytes_)):
        raise Sam3TrtError(f"input {name} is {type(value).__name__}, not bytes: send UTF-8 text as Triton BYTES")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise Sam3TrtError(f"input {name} is not valid UTF-8 text") from None


def _decode_image(data: bytes, limits: ServeLimits) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from ..runtime.image import to_uint8_hwc

    if not data:
        raise Sam3TrtError("input image is empty: send the encoded image file's bytes")
    try:
        with Image.open(io.BytesIO(data)) as im:
            # the header gives the size: refuse before decoding what would not fit
            pixels = im.width * im.height
            if pixels > limits.max_image_pixels:
                raise Sam3TrtError(
                    f"input image is {im.width}x{im.height} ({pixels} pixels), over this server's "
                    f"--max-image-pixels {limits.max_image_pixels}: downscale it first"
                )
            im.load()
            return to_uint8_hwc(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, Sam3TrtError):
            raise
        raise Sam3TrtError(
            f"input image ({len(data)} bytes) is not a readable image ({exc}); send a PNG or JPEG file"
        ) from None


#: Bytes of one prompt's decoder outputs (200 queries x 288 x 288 float32 mask logits, plus scores and boxes).
_DECODER_BYTES_PER_PROMPT = 200 * 288 * 288 * 4 + 64 * 1024
#: One kept query's 288 x 288 float32 mask logits.
_LOW_RES_BYTES = 288 * 288 * 4
#: Fixed per request: pre-processing at 1008 x 1008 (uint8 and float32 copies), text features, small arrays.
_FIXED_BYTES = 64 * 2**20
#: Per pixel of the image: the encoded file decoded (PIL, then numpy RGB), the resize's input copies, and one
#: mask at a time (float32 upsampled logits, their sigmoid, the bool mask, the RLE's int8 copies).
_BYTES_PER_PIXEL = 32


def request_memory_bound(height: int, width: int, prompts: int, max_detections: int) -> int:
    """Most bytes one request adds to a warmed-up server while it runs, above the model.

    "The model" is the weights and the runtime's working memory at the largest batch, which ``serve`` reaches
    before it says ready (:meth:`Sam3Handler.warm_up`). Above it a request holds its image and one full-size
    mask at a time (``32 x H x W``), its image features (111 MB: the vision graph's three levels), one decoder
    batch's outputs (``min(P, 16) x 66.4 MB``), the kept queries' low-resolution masks (``(min(P, 16) + 1) x K
    x 0.33 MB``, K = ``max_detections``) and 64 MB of small arrays, whatever the threshold. Defaults at the
    largest image (4096 x 4096, 64 prompts, K = 100): about 2.2 GiB; one prompt: about 0.8 GiB.

    Args:
        height: Image height.
        width: Image width.
        prompts: Text prompts (1 for boxes alone).
        max_detections: The request's ``max_detections``.
    """
    vision = SPECS["vision_encoder"]
    features = sum(4 * math.prod(t.resolve({"B": 1})) for t in vision.outputs)
    batch = min(max(prompts, 1), SPECS["decoder"].dim("P").max)
    return (
        _BYTES_PER_PIXEL * height * width
        + features
        + batch * _DECODER_BYTES_PER_PROMPT
        + (batch + 1) * max_detections * _LOW_RES_BYTES
        + _FIXED_BYTES
    )


def error_response(message: str) -> dict[str, np.ndarray]:
    """The outputs of a failed request: its error line and no detections."""
    return _response([], "rle", message)


def _response(detections: Sequence[dict[str, Any]], mask_format: str, error: str = "") -> dict[str, np.ndarray]:
    k = len(detections)
    rows = max(k, 1)  # see contract: at least one row, padding when k == 0

    def column(values: list[Any], dtype: Any, pad: Any) -> np.ndarray:
        return np.array(values if k else [pad], dtype=dtype)[None]

    out = {
        "error": np.array([[error.encode()]], dtype=np.object_),
        "num_detections": np.array([[k]], dtype=np.int32),
        "prompt_index": column([d["prompt_index"] for d in detections], np.int32, -1),
        "scores": column([d["score"] for d in detections], np.float32, 0.0),
        "boxes_xyxy": column([d["box"] for d in detections], np.float32, [0.0] * 4).reshape(1, rows, 4),
    }
    if mask_format == "bitmask" and k:
        out["masks"] = np.stack([np.asarray(d["mask"], np.uint8) for d in detections])[None]
        out["masks_rle"] = np.full((1, k), b"", dtype=np.object_)
    else:  # detect encoded each mask as it was upsampled (encode_rle): no full-size mask is held here
        out["masks"] = np.zeros((1, 1, 1, 1), np.uint8)
        out["masks_rle"] = column([d["mask"] for d in detections], np.object_, b"")
    return out


def encode_rle(mask: np.ndarray) -> bytes:
    """A bool ``HxW`` mask as the ``masks_rle`` output holds it: COCO compressed RLE as JSON bytes."""
    return json.dumps(mask_to_compressed_rle(mask)).encode()


class Sam3Handler:
    """Triton inference callable over one :class:`~sam3_trt.Sam3Processor` (one per model instance).

    Args:
        processor: The processor this instance runs; its text cache serves every request, so prompts
            repeated across requests run the text encoder once.
        limits: Per-request limits.
    """

    def __init__(self, processor: Any, limits: ServeLimits | None = None) -> None:
        self.processor = processor
        #: clicks are answered when the processor was made with ``interactive=True`` (``serve --clicks``)
        self.clicks = bool(getattr(processor, "interactive", False))
        self.limits = (limits or ServeLimits()).check()
        # the processor's threshold is per processor: one request at a time sets it and reads results
        self._lock = threading.Lock()

    def warm_up(self, images: int) -> None:
        """Run one full batch before serving: ``images`` blank images, then the decoder's largest prompt
        batch on one of them.

        The runtime's memory pools (ONNX Runtime's arenas, TensorRT's per-shape scratch) grow to the
        largest shapes they have run; doing that here means the server's memory is at its working size
        when it says "ready", rather than growing under the first clients' load. The text cache is emptied
        after, so the dummy prompts take no room from real ones.

        Args:
            images: Images in the vision batch (the dynamic batcher's maximum).
        """
        from ..runtime.segment import detect

        prompts = [f"warm-up prompt {i}" for i in range(min(SPECS["decoder"].dim("P").max, self.limits.max_prompts))]
        with self._lock:
            states = self.processor.set_image_batch([np.zeros((64, 64, 3), np.uint8)] * images)
            detect(self.processor, states[0], prompts, max_detections=self.limits.max_detections, encode=encode_rle)
            if self.clicks:  # the click head's largest shapes: one set of its most points
                from ..runtime.interactive import MAX_POINTS

                self.processor.predict_inst_low_res(
                    states[0], np.full((MAX_POINTS, 2), 32.0), np.ones(MAX_POINTS, np.int64)
                )
            self.processor.clear_text_cache()
            backend = getattr(self.processor, "backend", None)
            if getattr(backend, "shape_buckets", ()):  # TensorRT for RTX: compile every bucketed shape now
                self.processor.warm_up(vision_batches=tuple(range(1, images + 1)))

    def __call__(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Answer the batched ``requests``, one output dict each, in order."""
        from ..runtime.segment import detect

        parsed: list[ServeRequest | str] = []
        for inputs in requests:
            try:
                parsed.append(parse_request(inputs, self.limits, self.clicks))
            except Sam3TrtError as exc:
                parsed.append(str(exc))
        valid = [p for p in parsed if isinstance(p, ServeRequest)]
        with self._lock:
            states = iter(self.processor.set_image_batch([p.image for p in valid]) if valid else [])
            responses = []
            for request in parsed:
                if isinstance(request, str):
                    responses.append(error_response(request))
                    continue
                if request.points is not None:
                    responses.append(self._clicks(next(states), request))
                    continue
                self.processor.set_confidence_threshold(request.threshold)
                encode = encode_rle if request.mask_format == "rle" else None
                found = detect(
                    self.processor, next(states), request.prompts, request.boxes, request.max_detections, encode
                )
                responses.append(_response(found.detections, request.mask_format))
        return responses

    def _clicks(self, state: dict, request: ServeRequest) -> dict[str, np.ndarray]:
        from ..runtime.segment import clicked_masks

        found = clicked_masks(self.processor, state, request.points, request.point_labels, None, request.multimask)
        rle = request.mask_format == "rle"
        detections = [
            {**d, "prompt_index": CLICKS_INDEX, "mask": encode_rle(d["mask"]) if rle else d["mask"]}
            for d in found.detections
        ]
        return _response(detections, request.mask_format)
