"""Automatic masks ("segment everything"): a grid of single clicks through the click head, filtered and de-duplicated.

:class:`Sam3AutomaticMaskGenerator` takes SAM2's ``SAM2AutomaticMaskGenerator`` parameters and returns its records
(``segmentation``, ``area``, ``bbox``, ``predicted_iou``, ``point_coords``, ``stability_score``, ``crop_box``), over
a :class:`~sam3_trt.runtime.processor.Sam3Processor` made with ``interactive=True``. Per crop (the whole image, then
``crop_n_layers`` layers of overlapping crops):

1. encode the crop once (``set_image``);
2. the point grid in batches of ``points_per_batch`` prompt sets, one click-head run each, low-res logits back;
3. keep masks whose predicted IoU passes ``pred_iou_thresh``, *then* upsample only those to the crop's size (SAM2
   upsamples every mask first; the kept ones and their values are the same, the memory is not), score stability,
   keep, threshold, box, drop boxes cut by a crop edge that is not the image's, encode as RLE;
4. greedy box NMS per crop (by predicted IoU), then across crops (smaller crops first);
5. with ``min_mask_region_area``, the low-res logits cleaned first (holes filled, specks removed, up to that
   many low-res pixels): what SAM2 1.1.0's generator does with it (it gives the value to its predictor's
   ``max_hole_area`` and ``max_sprinkle_area``; its full-size ``postprocess_small_regions`` is never called).

Only RLEs and boxes outlive a batch: peak memory is one batch's kept full-size logits, not every grid mask.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..rle import compress_counts, mask_to_rle, rle_to_mask
from .image import to_uint8_hwc
from .interactive import MAX_SETS, clean_low_res, upsample_logits

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
#: A box within this many pixels of a crop edge (and not of the image edge) was cut by the crop (SAM's rule).
CROP_EDGE_TOLERANCE = 20.0
#: Kept masks upsampled at once: bounds the full-size logits held per step.
UPSAMPLE_CHUNK = 16


def point_grid(per_side: int) -> np.ndarray:
    """``per_side**2`` points at the centres of a regular grid over [0, 1]^2, rows of x for each y."""
    offset = 1 / (2 * per_side)
    centres = np.linspace(offset, 1 - offset, per_side)
    xs, ys = np.meshgrid(centres, centres)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_boxes(height: int, width: int, layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """The whole image, then for layer ``i`` a ``2**i x 2**i`` grid of overlapping crops (``x0, y0, x1, y1``)."""
    boxes, layer_of = [[0, 0, width, height]], [0]
    short = min(height, width)
    for layer in range(1, layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        starts_x = [int((crop_w - overlap) * i) for i in range(per_side)]
        starts_y = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(starts_x, starts_y):
            boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
            layer_of.append(layer)
    return boxes, layer_of


def stability_scores(logits: np.ndarray, threshold: float, offset: float) -> np.ndarray:
    """IoU of each mask thresholded at ``threshold + offset`` and at ``threshold - offset``."""
    inner = (logits > threshold + offset).sum(axis=(-1, -2))
    outer = (logits > threshold - offset).sum(axis=(-1, -2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inner / outer).astype(np.float32)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` bool -> ``[N, 4]`` x0, y0, x1, y1 of the outermost set pixels (inclusive); 0s when empty."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        if len(cols):
            boxes[i] = (cols[0], rows[0], cols[-1], rows[-1])
    return boxes


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices kept, best score first; a box whose IoU with a kept one exceeds the threshold goes."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    suppressed = np.zeros(len(boxes), bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        x0 = np.maximum(boxes[i, 0], boxes[:, 0])
        y0 = np.maximum(boxes[i, 1], boxes[:, 1])
        x1 = np.minimum(boxes[i, 2], boxes[:, 2])
        y1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (areas[i] + areas - inter)
        suppressed |= iou > iou_threshold
    return np.array(keep, dtype=np.int64)


def _batches(items: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Sam3AutomaticMaskGenerator:
    """Every object in an image without naming it: SAM2's automatic mask generator on the click head.

    Args:
        processor: A :class:`~sam3_trt.Sam3Processor` made with ``interactive=True``.
        points_per_side: Grid points along each side of the image (``points_per_side**2`` clicks).
        points_per_batch: Clicks per click-head run (at most 64: the graph's prompt-set axis).
        pred_iou_thresh: Keep masks whose predicted IoU is above this (0: no filter).
        stability_score_thresh: Keep masks whose stability score is at least this (0: no filter).
        stability_score_offset: Logit offset of the stability score's two thresholds.
        mask_threshold: Logit threshold of the binary masks.
        box_nms_thresh: Box IoU above which a lower-scored mask of the same crop is dropped.
        crop_n_layers: Layers of crops after the whole image; layer ``i`` has ``(2**i)**2`` crops.
        crop_nms_thresh: Box IoU above which duplicates across crops are dropped (smaller crops win).
        crop_overlap_ratio: Overlap of first-layer crops as a fraction of the image's short side.
        crop_n_points_downscale_factor: Layer ``i`` uses ``points_per_side / factor**i`` points per side.
        point_grids: Explicit ``[N, 2]`` grids in [0, 1] per layer, instead of ``points_per_side``.
        min_mask_region_area: Fill holes and remove specks of at most this many low-res pixels before
            upsampling (SAM2 1.1.0's use of it); 0: nothing changed.
        output_mode: ``"binary_mask"`` (``HxW`` bool), ``"uncompressed_rle"`` or ``"coco_rle"`` (compressed
            COCO RLE, what JSON and COCO tools take).
        multimask_output: Three masks per click (SAM2's default) or one.
    """

    def __init__(
        self,
        processor: Any,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        multimask_output: bool = True,
    ) -> None:
        if not getattr(processor, "interactive", False):
            raise Sam3TrtError(
                "Sam3AutomaticMaskGenerator needs Sam3Processor(folder, interactive=True) over an export made with "
                "`sam3-trt export --video`"
            )
        if (points_per_side is None) == (point_grids is None):
            raise Sam3TrtError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise Sam3TrtError(f"output_mode {output_mode!r}: use one of {', '.join(OUTPUT_MODES)}")
        if not isinstance(points_per_batch, int) or not 1 <= points_per_batch <= MAX_SETS:
            raise Sam3TrtError(f"points_per_batch {points_per_batch!r}: use 1..{MAX_SETS} (clicks per click-head run)")
        if not isinstance(crop_n_layers, int) or crop_n_layers < 0:
            raise Sam3TrtError(f"crop_n_layers {crop_n_layers!r}: use a whole number >= 0")
        for name, value in (("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh)):
            if not 0.0 <= float(value) <= 1.0:
                raise Sam3TrtError(f"{name} {value!r}: use a box IoU in [0, 1]")
        if points_per_side is not None:
            if not isinstance(points_per_side, int) or points_per_side < 1:
                raise Sam3TrtError(f"points_per_side {points_per_side!r}: use a whole number >= 1")
            self.point_grids = [
                point_grid(int(points_per_side / crop_n_points_downscale_factor**i)) for i in range(crop_n_layers + 1)
            ]
        else:
            self.point_grids = [np.asarray(g, np.float64).reshape(-1, 2) for g in point_grids or ()]
            if len(self.point_grids) != crop_n_layers + 1:
                raise Sam3TrtError(f"point_grids has {len(self.point_grids)} grids for {crop_n_layers + 1} layers")
        self.processor = processor
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.mask_threshold = float(mask_threshold)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.multimask_output = bool(multimask_output)
        #: Click-head runs of the last :meth:`generate` (for ``bench``-style reports).
        self.last_runs = 0

    def generate(self, image: Any) -> list[dict[str, Any]]:
        """Masks of every object the grid finds in ``image``, as SAM2's generator's records.

        Args:
            image: PIL image or ``HxWxC`` array (as :meth:`Sam3Processor.set_image` takes).

        Returns:
            One dict per mask: ``segmentation`` (per ``output_mode``), ``area`` (pixels), ``bbox`` (x, y, w, h),
            ``predicted_iou``, ``point_coords`` (``[[x, y]]`` of the click), ``stability_score``, ``crop_box``
            (x, y, w, h), best predicted IoU first within each crop.
        """
        pixels = to_uint8_hwc(image)
        height, width = pixels.shape[:2]
        self.last_runs = 0
        boxes, layers = crop_boxes(height, width, self.crop_n_layers, self.crop_overlap_ratio)
        found: list[dict[str, Any]] = []
        for crop, layer in zip(boxes, layers, strict=True):
            found += self._crop(pixels, crop, layer)
        if len(boxes) > 1 and found:  # duplicates across crops: the smaller crop's mask wins
            crop_areas = np.array([(f["crop"][2] - f["crop"][0]) * (f["crop"][3] - f["crop"][1]) for f in found])
            keep = box_nms(np.stack([f["box"] for f in found]), 1.0 / crop_areas, self.crop_nms_thresh)
            found = [found[i] for i in keep]
        return [self._record(f) for f in found]

    # -- one crop ----------------------------------------------------------------------------------
    def _crop(self, pixels: np.ndarray, crop: list[int], layer: int) -> list[dict[str, Any]]:
        x0, y0, x1, y1 = crop
        height, width = pixels.shape[:2]
        state = self.processor.set_image(np.ascontiguousarray(pixels[y0:y1, x0:x1]))
        crop_hw = (y1 - y0, x1 - x0)
        points = self.point_grids[layer] * np.array([crop_hw[1], crop_hw[0]])
        found: list[dict[str, Any]] = []
        for batch in _batches(points, self.points_per_batch):
            found += self._batch(state, batch, crop, crop_hw, (height, width))
        if not found:
            return []
        keep = box_nms(
            np.stack([f["crop_box_xyxy"] for f in found]),
            np.array([f["iou"] for f in found]),
            self.box_nms_thresh,
        )
        out = []
        for i in keep:
            f = found[i]
            f["box"] = f.pop("crop_box_xyxy") + np.array([x0, y0, x0, y0], np.float32)
            f["point"] = f["point"] + np.array([x0, y0])
            f["crop"] = crop
            out.append(f)
        return out

    def _batch(
        self,
        state: dict,
        points: np.ndarray,
        crop: list[int],
        crop_hw: tuple[int, int],
        image_hw: tuple[int, int],
    ) -> list[dict[str, Any]]:
        low_res, iou = self.processor.predict_inst_low_res(
            state,
            point_coords=points[:, None, :],
            point_labels=np.ones((len(points), 1), np.int64),
            multimask_output=self.multimask_output,
        )
        self.last_runs += 1
        per_point = low_res.shape[1]
        low_res, iou = low_res.reshape(-1, *low_res.shape[-2:]), iou.reshape(-1)
        point_of = np.repeat(points, per_point, axis=0)
        kept = np.flatnonzero(iou > self.pred_iou_thresh) if self.pred_iou_thresh > 0 else np.arange(len(iou))
        found = []
        for chunk in _batches(kept, UPSAMPLE_CHUNK):
            # SAM2's generator gives its predictor max_hole_area = max_sprinkle_area = min_mask_region_area
            area = self.min_mask_region_area
            logits = clean_low_res(low_res[chunk], area, area, self.mask_threshold)
            full = upsample_logits(logits[:, None], *crop_hw)[:, 0]
            stability = stability_scores(full, self.mask_threshold, self.stability_score_offset)
            for j, index in enumerate(chunk):
                if self.stability_score_thresh > 0 and not stability[j] >= self.stability_score_thresh:
                    continue
                mask = full[j] > self.mask_threshold
                box = mask_boxes(mask[None])[0]
                if _cut_by_crop(box, crop, image_hw):
                    continue
                found.append(
                    {
                        "rle": mask_to_rle(_uncrop(mask, crop, image_hw)),
                        "crop_box_xyxy": box,
                        "iou": float(iou[index]),
                        "stability": float(stability[j]),
                        "point": point_of[index],
                    }
                )
        return found

    # -- records ---------------------------------------------------------------------------------------
    def _record(self, f: dict[str, Any]) -> dict[str, Any]:
        rle = f["rle"]
        if self.output_mode == "coco_rle":
            segmentation: Any = {"size": rle["size"], "counts": compress_counts(rle["counts"])}
        elif self.output_mode == "binary_mask":
            segmentation = rle_to_mask(rle)
        else:
            segmentation = rle
        x0, y0, x1, y1 = (float(v) for v in f["box"])
        cx0, cy0, cx1, cy1 = f["crop"]
        return {
            "segmentation": segmentation,
            "area": int(sum(rle["counts"][1::2])),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "predicted_iou": f["iou"],
            "point_coords": [[float(v) for v in f["point"]]],
            "stability_score": f["stability"],
            "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
        }


def _cut_by_crop(box: np.ndarray, crop: list[int], image_hw: tuple[int, int]) -> bool:
    """Whether ``box`` (crop coordinates) touches an edge of ``crop`` that is not an edge of the image."""
    x0, y0 = crop[0], crop[1]
    placed = box + np.array([x0, y0, x0, y0], np.float32)
    near_crop = np.abs(placed - np.array(crop, np.float32)) <= CROP_EDGE_TOLERANCE
    near_image = np.abs(placed - np.array([0, 0, image_hw[1], image_hw[0]], np.float32)) <= CROP_EDGE_TOLERANCE
    return bool((near_crop & ~near_image).any())


def _uncrop(mask: np.ndarray, crop: list[int], image_hw: tuple[int, int]) -> np.ndarray:
    x0, y0, x1, y1 = crop
    if (x0, y0, x1, y1) == (0, 0, image_hw[1], image_hw[0]):
        return mask
    full = np.zeros(image_hw, bool)
    full[y0:y1, x0:x1] = mask
    return full
