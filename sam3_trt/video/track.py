"""``sam3-trt track``: a text (and/or box) prompt tracked through a clip, written as overlay frames and a tracks JSON.

:func:`track` drives :class:`~.predictor.Sam3VideoPredictor` with upstream's requests (start, prompt,
propagate forward, close); :func:`write_tracks` draws each frame with one colour per object ID (the same
colour on every frame) and writes the JSON (per frame: object ID, score, normalised ``x, y, w, h`` box,
RLE mask).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..rle import mask_to_rle
from ..segment import _colour
from .predictor import frame_files

#: Frame formats ``track --output FOLDER`` writes.
FRAME_SUFFIX = ".png"


def load_frames(resource: Path) -> list[Any]:
    """The clip as PIL images: a folder of ``<index>.<ext>`` frames (sorted by index) or a single image.

    Raises:
        Sam3TrtError: missing, empty, frames not named by index, or a video file (read with OpenCV by
            upstream; not a dependency here: extract its frames to a folder first).
    """
    from PIL import Image
    from sam3.model.io_utils import IMAGE_EXTS, VIDEO_EXTS

    if not resource.exists():
        raise Sam3TrtError(f"VIDEO {str(resource)!r} does not exist")
    if resource.is_file():
        if resource.suffix.lower() in VIDEO_EXTS:
            raise Sam3TrtError(
                f"VIDEO {str(resource)!r}: video files need OpenCV, not installed here; extract frames "
                f"(ffmpeg -i {resource.name} frames/%05d.jpg) and pass the folder"
            )
        if resource.suffix.lower() not in IMAGE_EXTS:
            raise Sam3TrtError(f"VIDEO {str(resource)!r}: not a folder of frames or an image")
        files = [resource]
    else:
        files = frame_files(resource, f"VIDEO {str(resource)!r}")
    frames = []
    for path in files:
        try:
            with Image.open(path) as im:
                frames.append(im.convert("RGB"))
        except OSError as exc:
            raise Sam3TrtError(f"frame {str(path)!r} is not a readable image ({exc})") from None
    sizes = {im.size for im in frames}
    if len(sizes) > 1:
        raise Sam3TrtError(f"VIDEO {str(resource)!r}: frames differ in size ({sorted(sizes)}); a clip has one size")
    return frames


def track(
    predictor: Any,
    frames: list[Any],
    prompt: str | None,
    prompt_frame: int = 0,
    box: tuple[list[float], bool] | None = None,
) -> Iterator[tuple[int, dict]]:
    """Yield ``(frame index, upstream outputs)``: the prompt frame's result, then every frame forward.

    Args:
        predictor: A :class:`~.predictor.Sam3VideoPredictor`.
        frames: The clip (PIL images).
        prompt: Text prompt (a noun phrase), or ``None`` with a box.
        prompt_frame: Frame the prompt (and box) is given on.
        box: ``(normalised [x, y, w, h], positive?)``: a box on ``prompt_frame`` (upstream's visual prompt).
    """
    session = predictor.start_session(frames)["session_id"]
    try:
        boxes = {} if box is None else {"bounding_boxes": [box[0]], "bounding_box_labels": [int(box[1])]}
        predictor.add_prompt(session, prompt_frame, text=prompt, **boxes)
        for result in predictor.propagate_in_video(session, "forward", prompt_frame, None):
            yield result["frame_index"], result["outputs"]
    finally:
        predictor.close_session(session)


def frame_objects(outputs: dict) -> list[dict[str, Any]]:
    """One frame's objects from upstream's outputs: ``[{"id", "score", "box_xywh", "mask"}]``."""
    ids = [int(i) for i in outputs["out_obj_ids"]]
    probs = np.asarray(outputs["out_probs"], np.float64).reshape(-1)
    boxes = np.asarray(outputs["out_boxes_xywh"], np.float64).reshape(-1, 4)
    masks = np.asarray(outputs["out_binary_masks"], bool)
    return [
        {"id": i, "score": float(p), "box_xywh": [float(v) for v in b], "mask": m}
        for i, p, b, m in zip(ids, probs, boxes, masks, strict=True)
    ]


def write_tracks(
    frames: list[Any],
    results: dict[int, list[dict[str, Any]]],
    output: Path,
    json_path: Path | None,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Overlay PNGs (``output/00000.png`` ...) with each object's colour fixed by its ID, and the tracks JSON.

    Frames written are complete before the JSON appears (written last, via a temporary name), so a JSON
    on disk always describes frames that exist.

    Returns:
        The JSON document (also when ``json_path`` is ``None``).
    """
    from ..segment import render_overlay

    random_weights = info.get("weights_kind") == "random"
    output.mkdir(parents=True, exist_ok=True)
    doc_frames = []
    ids: set[int] = set()
    for index, frame in enumerate(frames):
        rgb = np.asarray(frame.convert("RGB"))
        height, width = rgb.shape[:2]
        objects = results.get(index, [])
        detections = [
            {
                "prompt": f"id {o['id']}",
                "score": o["score"],
                "box": _pixel_xyxy(o["box_xywh"], width, height),
                "mask": o["mask"],
                "colour": _colour(o["id"]),
            }
            for o in objects
        ]
        image = render_overlay(rgb, detections, max_detections=len(detections), random_weights=random_weights)
        image.save(output / f"{index:05d}{FRAME_SUFFIX}", format="PNG")
        ids.update(o["id"] for o in objects)
        doc_frames.append(
            {
                "frame": index,
                "tracked": index in results,
                "objects": [
                    {"id": o["id"], "score": o["score"], "box_xywh": o["box_xywh"], "mask_rle": mask_to_rle(o["mask"])}
                    for o in objects
                ],
            }
        )
    doc = {**info, "frames_total": len(frames), "object_ids": sorted(ids), "frames": doc_frames}
    if json_path is not None:
        tmp = json_path.with_name(json_path.name + ".partial")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, json_path)
    return doc


def _pixel_xyxy(box_xywh: list[float], width: int, height: int) -> list[float]:
    x, y, w, h = box_xywh
    return [x * width, y * height, (x + w) * width, (y + h) * height]
