"""``sam3-trt track``: a text (and/or box) prompt tracked through a clip, written as an overlay video (or frames)
and a tracks JSON.

:func:`track` drives :class:`~.predictor.Sam3VideoPredictor` with upstream's requests (start, prompt,
propagate forward, close) on the clip decoded frame by frame (:class:`~.frames.ClipFrames`); :class:`TrackWriter` draws
each frame as its result arrives, one colour per object ID (the same on every frame), into an MP4 file or a
folder of PNGs, and writes the JSON last (per frame: object ID, score, normalised ``x, y, w, h`` box, RLE
mask). Nothing but the JSON's RLE masks is kept between frames.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..rle import mask_to_rle
from ..runtime.draw import object_colour
from .frames import _cv2

#: Frame format ``track --output FOLDER`` writes.
FRAME_SUFFIX = ".png"
#: Video formats ``track`` reads and writes (OpenCV, as upstream reads videos; MPEG-4 Part 2 inside MP4, the
#: encoder OpenCV's wheels carry: convert with ffmpeg for H.264).
VIDEO_SUFFIXES = (".mp4",)
VIDEO_FOURCC = "mp4v"
#: Frames per second of an MP4 written from a folder of frames (a video input keeps its own rate).
DEFAULT_FPS = 30.0

_CV2_MISSING = "needs OpenCV (pip install opencv-python-headless, in sam3-trt's [video] extra)"


def check_video_output(output: Path, option: str = "--output") -> bool:
    """Whether ``output`` names a video file (else a folder of frames); refuses what cannot be written.

    Args:
        output: The path given.
        option: How errors name it.
    """
    if output.suffix.lower() in VIDEO_SUFFIXES:
        if _cv2() is None:
            raise Sam3TrtError(f"{option} {output}: writing videos {_CV2_MISSING}; or give a folder for PNG frames")
        if output.is_dir():
            raise Sam3TrtError(f"{option} {output} is a folder; give a file name such as {output / 'tracks.mp4'}")
        return True
    if output.suffix and not output.is_dir():
        raise Sam3TrtError(
            f"{option} {output}: give a video file ({', '.join(VIDEO_SUFFIXES)}) or a folder for PNG frames"
        )
    if output.exists() and not output.is_dir():
        raise Sam3TrtError(f"{option} {output} is a file; give a folder for the overlay frames or an .mp4 file")
    return False


def track(
    predictor: Any,
    frames: Any,
    prompt: str | None,
    prompt_frame: int = 0,
    box: tuple[list[float], bool] | None = None,
) -> Iterator[tuple[int, dict]]:
    """Yield ``(frame index, upstream outputs)``: the prompt frame's result, then every frame forward.

    Args:
        predictor: A :class:`~.predictor.Sam3VideoPredictor`.
        frames: The clip: a :class:`~.frames.ClipFrames`, or anything ``start_session`` takes.
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


def track_video(
    video: Path,
    artifacts: Path,
    output: Path,
    prompt: str | None = None,
    box: str | None = None,
    backend: str = "auto",
    json_path: Path | None = None,
    prompt_frame: int = 0,
    max_objects: int | None = None,
    memory_window: str | int | None = None,
    fps: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``sam3-trt track``: every input checked first, then the clip tracked and written frame by frame.

    Args:
        video: An ``.mp4`` file, a folder of ``<index>.jpg`` frames, or one image.
        artifacts: Export folder made with ``export --video``, or engines built from one.
        output: Overlay video (``.mp4``) or folder for overlay frames ``00000.png`` ...
        prompt: Text prompt (a noun phrase) given on ``prompt_frame``.
        box: Box prompt ``x0,y0,x1,y1[,neg]`` in pixels of the frames, on ``prompt_frame``.
        backend: ``auto``, ``onnxruntime`` or ``tensorrt``.
        json_path: Tracks JSON (RLE masks) to write, if any.
        prompt_frame: Frame index the prompt is given on.
        max_objects: Track at most this many objects (upstream ``max_num_objects``).
        memory_window: Frames of tracking state kept behind the tracked frame, ``all``, or ``None`` (default 64).
        fps: Frame rate of an ``.mp4`` output (default: the video's, or 30).
        progress: Called with progress lines.

    Returns:
        The summary line's fields: frames, tracked_frames, object_ids, output, json.
    """
    from ..export.model import WeightsOrigin
    from ..paths import check_output_file, check_output_folder
    from ..runtime.processor import check_folder_backend
    from ..runtime.segment import parse_pixel_box, pixel_box_to_prompt
    from .frames import ClipFrames
    from .predictor import folder_predictor, video_folder
    from .window import parse_memory_window

    say = progress or (lambda _msg: None)
    if prompt is None and box is None:
        raise Sam3TrtError("give --prompt (a noun phrase), --box x0,y0,x1,y1, or both")
    if prompt is not None and not prompt.strip():
        raise Sam3TrtError("--prompt is empty: give a noun phrase such as 'person'")
    pixels = parse_pixel_box(box) if box is not None else None
    if max_objects is not None and max_objects < 1:
        raise Sam3TrtError(f"--max-objects {max_objects}: use 1 or more (or leave it out: no limit)")
    window = parse_memory_window(memory_window)
    if fps is not None and not fps > 0:
        raise Sam3TrtError(f"--fps {fps}: give frames per second > 0 (e.g. 30)")
    check_output_file(json_path, "--json", (".json",))
    to_video = check_video_output(output)
    found = video_folder(artifacts)
    check_folder_backend(found, backend)  # before the host model is built
    frames = ClipFrames(video, name=f"VIDEO {str(video)!r}")  # decoded frame by frame as it is tracked
    size = (frames.video_width, frames.video_height)
    if not 0 <= prompt_frame < len(frames):
        raise Sam3TrtError(f"--prompt-frame {prompt_frame} is outside the clip: use 0..{len(frames) - 1}")
    box_prompt = None
    if pixels is not None:
        cx, cy, w, h = pixel_box_to_prompt(pixels[0], *size, f"--box {box!r}")
        box_prompt = ([cx - w / 2, cy - h / 2, w, h], pixels[1])  # upstream's video boxes: normalised x, y, w, h
    check_output_folder(output.parent if to_video else output, "--output")
    weights_dict = found.manifest.get("weights", {"kind": "unknown", "variant": "full"})
    variant = weights_dict.get("variant") or "full"
    say(f"{len(frames)} frames; building upstream's video model ({variant}) for its host code")
    predictor = folder_predictor(found.folder, variant, backend, max_objects, window)
    info = {
        "video": str(video),
        "prompt": prompt,
        "box_xyxy": pixels[0] if pixels is not None else None,
        "box_positive": pixels[1] if pixels is not None else None,
        "prompt_frame": prompt_frame,
        "size": list(size),
        "backend": predictor.backend.name,
        "memory_window": window,
        "weights": WeightsOrigin.from_dict(weights_dict).describe(),
        "weights_kind": weights_dict.get("kind"),
    }
    writer = TrackWriter(output, size, len(frames), json_path, info, fps or frames.fps or DEFAULT_FPS)
    try:
        with predictor:
            for index in range(prompt_frame):  # before the prompt: forward tracking does not reach them
                writer.write(index, frames.original(index), None)
            for index, outputs in track(predictor, frames, prompt, prompt_frame, box_prompt):
                objects = frame_objects(outputs)
                writer.write(index, frames.original(index), objects)
                say(f"frame {index}: objects {[o['id'] for o in objects]}")
        doc = writer.close()
    except BaseException:
        writer.abort()
        raise
    return {
        "frames": len(frames),
        "tracked_frames": sum(f["tracked"] for f in doc["frames"]),
        "object_ids": doc["object_ids"],
        "output": str(output),
        "json": str(json_path) if json_path else None,
    }


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


class TrackWriter:
    """Writes each frame's overlay as its result arrives (an MP4 file or ``00000.png`` ... in a folder), then
    the tracks JSON.

    Frames come in order, every frame of the clip once (untracked ones with ``objects=None``). The video is
    written under a temporary name and the JSON last (also via a temporary name): a video or JSON at the
    named paths is always complete. :meth:`abort` removes a partial video.

    Args:
        output: ``.mp4`` file or folder (see :func:`check_video_output`).
        size: Frame ``(width, height)``.
        total: Frames in the clip.
        json_path: Tracks JSON to write, or ``None``.
        info: Run facts the JSON starts with (``weights_kind`` ``"random"`` marks the overlays).
        fps: Frame rate of a video output.
    """

    def __init__(
        self,
        output: Path,
        size: tuple[int, int],
        total: int,
        json_path: Path | None,
        info: dict[str, Any],
        fps: float = DEFAULT_FPS,
    ) -> None:
        self.output, self.size, self.total, self.json_path, self.info = output, size, total, json_path, info
        self.frames: list[dict[str, Any]] = []
        self.ids: set[int] = set()
        self._video = None
        if output.suffix.lower() in VIDEO_SUFFIXES:
            cv2 = _cv2()
            self._partial = output.with_name(output.name + ".partial" + output.suffix)
            self._video = cv2.VideoWriter(str(self._partial), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps, size)
            if not self._video.isOpened():
                raise Sam3TrtError(f"--output {output}: OpenCV could not open an {VIDEO_FOURCC} MP4 writer there")
        else:
            output.mkdir(parents=True, exist_ok=True)

    def write(self, index: int, frame: Any, objects: list[dict[str, Any]] | None) -> None:
        """Draw and write frame ``index`` (the next one): ``objects`` from :func:`frame_objects`, ``None`` untracked."""
        from ..runtime.draw import render_overlay

        if index != len(self.frames):
            raise Sam3TrtError(f"track writer: frame {index} came when frame {len(self.frames)} was expected")
        rgb = np.asarray(frame.convert("RGB"))
        height, width = rgb.shape[:2]
        detections = [
            {
                "prompt": f"id {o['id']}",
                "score": o["score"],
                "box": _pixel_xyxy(o["box_xywh"], width, height),
                "mask": o["mask"],
                "colour": object_colour(o["id"]),
            }
            for o in objects or []
        ]
        random_weights = self.info.get("weights_kind") == "random"
        image = render_overlay(rgb, detections, max_detections=len(detections), random_weights=random_weights)
        if self._video is not None:
            import cv2

            self._video.write(cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR))
        else:
            image.save(self.output / f"{index:05d}{FRAME_SUFFIX}", format="PNG")
        self.ids.update(o["id"] for o in objects or [])
        self.frames.append(
            {
                "frame": index,
                "tracked": objects is not None,
                "objects": [
                    {"id": o["id"], "score": o["score"], "box_xywh": o["box_xywh"], "mask_rle": mask_to_rle(o["mask"])}
                    for o in objects or []
                ],
            }
        )

    def close(self) -> dict[str, Any]:
        """Finish the video and write the JSON; returns the JSON document."""
        if len(self.frames) != self.total:
            self.abort()
            raise Sam3TrtError(f"track writer: {len(self.frames)} of {self.total} frames written; nothing kept")
        if self._video is not None:
            self._video.release()
            self._video = None
            os.replace(self._partial, self.output)
        doc = {**self.info, "frames_total": self.total, "object_ids": sorted(self.ids), "frames": self.frames}
        if self.json_path is not None:
            tmp = self.json_path.with_name(self.json_path.name + ".partial")
            tmp.write_text(json.dumps(doc, indent=1))
            os.replace(tmp, self.json_path)
        return doc

    def abort(self) -> None:
        """Remove a partial video (PNG frames already written stay; no JSON describes them)."""
        if self._video is not None:
            self._video.release()
            self._video = None
            self._partial.unlink(missing_ok=True)


def _pixel_xyxy(box_xywh: list[float], width: int, height: int) -> list[float]:
    x, y, w, h = box_xywh
    return [x * width, y * height, (x + w) * width, (y + h) * height]
