"""A stand-in for :class:`~sam3_trt.Sam3Processor`'s labelling surface, for the dataset pipeline's mechanism tests.

``sam3-trt label`` calls ``set_confidence_threshold``, ``set_image_batch``, ``set_text_prompts(prompts, state,
full_masks=False, max_detections)`` and ``close``. This double answers them with arithmetic on the image instead
of a network, in the result layout the real processor returns (scores, pixel boxes, ``[K, 288, 288]`` mask
logits, best score, count above the threshold), so the real :func:`~sam3_trt.runtime.segment.detect`,
threads, shards and COCO writers run on it at thousands of images per second: resuming after ``kill -9``,
``--shard i/n`` and exactly-once are tested on dozens of images in seconds. Every prompt thresholds one colour
channel at three levels (three "queries"); results depend only on the image and the prompt, as a model's do.
Numbers from the real graphs are tested separately (the same pipeline on the tiny export against direct calls).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LOW_RES = 288
LEVELS = (0.25, 0.5, 0.75)


class LabelProcessorDouble:
    """Deterministic detections from pixel values.

    Args:
        confidence_threshold: As the processor's.
        delay_s: Seconds each image's encoding takes (so a test can kill a run mid-way).
        score_shift: Added to every score of a prompt (``{"dog": -0.2}``: a "perturbed model" for ``eval``).
    """

    def __init__(
        self, confidence_threshold: float = 0.5, delay_s: float = 0.0, score_shift: Mapping[str, float] | None = None
    ) -> None:
        self.confidence_threshold = confidence_threshold
        self.delay_s = delay_s
        self.score_shift = dict(score_shift or {})
        self.images_encoded = 0
        self.closed = False

    def set_confidence_threshold(self, threshold: float, state: dict | None = None) -> dict | None:
        self.confidence_threshold = float(threshold)
        return state

    def set_image_batch(self, images: Sequence[Any], states: Sequence[dict | None] | None = None) -> list[dict]:
        from PIL import Image

        from ..runtime.image import to_uint8_hwc

        out = []
        for image in images:
            rgb = to_uint8_hwc(image)
            small = np.asarray(Image.fromarray(rgb).resize((LOW_RES, LOW_RES), Image.BILINEAR), np.float32) / 255.0
            out.append({"original_height": rgb.shape[0], "original_width": rgb.shape[1], "_small": small})
            self.images_encoded += 1
            if self.delay_s:
                time.sleep(self.delay_s)
        return out

    def set_text_prompts(
        self, prompts: Sequence[str], state: dict, full_masks: bool = False, max_detections: int | None = None
    ) -> list[dict]:
        assert not full_masks, "label asks for low-resolution masks only"
        height, width = state["original_height"], state["original_width"]
        results = []
        for prompt in prompts:
            channel = state["_small"][:, :, zlib.crc32(prompt.encode()) % 3]
            logits = np.stack([(channel - level) * 40.0 for level in LEVELS]).astype(np.float32)
            inside = logits > 0
            scores = inside.mean(axis=(1, 2)) * 0.8 + 0.1 + self.score_shift.get(prompt, 0.0)
            scores = np.clip(scores, 0.0, 1.0).astype(np.float32)
            order = [i for i in np.argsort(-scores, kind="stable") if scores[i] > self.confidence_threshold]
            total = len(order)
            order = order[:max_detections] if max_detections else order
            boxes = np.array([_box(inside[i], height, width) for i in order], np.float32).reshape(-1, 4)
            results.append(
                {
                    "prompt": prompt,
                    "scores": scores[order],
                    "boxes": boxes,
                    "low_res_masks": logits[order],
                    "best_score": float(scores.max()),
                    "detections_total": total,
                }
            )
        return results

    def close(self) -> None:
        self.closed = True


def _box(mask: np.ndarray, height: int, width: int) -> list[float]:
    ys, xs = np.nonzero(mask)
    if not ys.size:
        return [0.0, 0.0, 0.0, 0.0]
    sy, sx = height / LOW_RES, width / LOW_RES
    return [xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy]


class KillOnce:
    """A processor factory whose processors kill their own process once: a "killed Ray actor" for tests.

    The first processor (across processes: a marker file records it) sends itself ``SIGKILL`` on its
    ``after``-th ``set_image_batch`` call; processors built after that (Ray's restarted actor) run normally.

    Args:
        make: Builds the real processor (or a :class:`LabelProcessorDouble`).
        marker: File that records the kill (must not exist yet).
        after: Calls before the kill (earlier batches' results have streamed back by then).
    """

    def __init__(self, make: Any, marker: str, after: int = 2) -> None:
        self.make, self.marker, self.after = make, marker, after

    def __call__(self) -> Any:
        return _Killing(self.make(), self.marker, self.after)


class _Killing:
    def __init__(self, inner: Any, marker: str, after: int) -> None:
        self._inner, self._marker, self._left = inner, marker, after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def set_image_batch(self, *args: Any, **kwargs: Any) -> Any:
        import os
        import signal
        from pathlib import Path

        self._left -= 1
        if self._left <= 0 and not Path(self._marker).exists():
            Path(self._marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self._inner.set_image_batch(*args, **kwargs)
