"""Tracking parity against upstream's eager tracker: teacher-forced steps and free-running trajectories.

* :class:`TeacherForced`: while installed, every ``track_step`` and ``_encode_new_memory`` upstream's
  tracking predictor makes runs twice on the same state, eagerly (upstream's own method, whose result is
  kept, so the state never drifts) and on the graphs (:class:`~.tracker.GraphTracker`); each pair is
  compared into a :class:`StepCheck`.
* :class:`TeacherForcedVideo`: the same for upstream's video model: each frame's detection runs eagerly
  (kept) and on the graphs (:class:`~.predictor.GraphVideoModel`) into a :class:`DetectionCheck`, and the
  tracker's steps are shadowed by :class:`TeacherForced`.
* :func:`compare_tracks`: two runs' per-frame outputs (object IDs, masks), frame by frame.

Tolerances are data: :data:`sam3_trt.tolerances.TRACKING_TOLERANCES`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..runtime.arrays import to_float32
from ..tolerances import TRACKING_TOLERANCES
from .tracker import GraphTracker, install_steps


def mask_iou(a: Any, b: Any) -> np.ndarray:
    """Per-object IoU of two ``[objects, ...]`` mask-logit (or boolean) arrays, foreground ``> 0``.

    Two empty masks agree (IoU 1).
    """
    a, b = to_float32(a) > 0, to_float32(b) > 0
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    union = (a | b).sum(axis=1)
    inter = (a & b).sum(axis=1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def _max_abs(a: Any, b: Any) -> float:
    return float(np.abs(to_float32(a) - to_float32(b)).max()) if a is not None and b is not None else math.nan


@dataclass
class StepCheck:
    """One step run eagerly and on the graphs from the same state."""

    kind: str  # "track_step", "encode_memory" or "update_memory" (the video model's per-frame update)
    frame: int
    objects: int
    mask_iou_min: float = math.nan
    mask_logits_max_abs: float = math.nan
    obj_ptr_max_abs: float = math.nan
    score_max_abs: float = math.nan
    memory_max_abs: float = math.nan
    refine: bool = False  # a track_step with the object's earlier logits fed back (refining clicks)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def judge(self, tol: Mapping[str, float]) -> StepCheck:
        """Fill :attr:`failures` from the tolerance row (a measured NaN fails)."""
        for key in ("mask_logits_max_abs", "obj_ptr_max_abs", "score_max_abs", "memory_max_abs"):
            value = getattr(self, key)
            if key == "memory_max_abs" and self.kind == "track_step" and math.isnan(value):
                continue  # a step without memory encoding
            if not value <= tol[key]:
                self.failures.append(f"{key} {value:.3g} > {tol[key]:g}")
        if self.kind == "track_step" and not self.mask_iou_min >= tol["mask_iou_min"]:
            self.failures.append(f"mask IoU {self.mask_iou_min:.4f} < {tol['mask_iou_min']:g}")
        return self


class TeacherForced:
    """Shadow upstream's tracker steps with the graph steps (see the module doc).

    Args:
        tracker: Upstream ``Sam3TrackerPredictor`` whose eager steps are the reference.
        graphs: A :class:`~.tracker.GraphTracker` over the same tracker (not installed).
        raw_levels: Frame index -> the neck's three raw levels ``[1, C, H, W]`` (the graphs' features);
            upstream's cache holds the same levels after ``conv_s0``/``conv_s1``.
        precision: Row of :data:`~sam3_trt.tolerances.TRACKING_TOLERANCES`.
    """

    def __init__(
        self,
        tracker: Any,
        graphs: GraphTracker,
        raw_levels: Mapping[int, Sequence[Any]] | Callable[[int], Sequence[Any]],
        precision: str = "fp32",
    ) -> None:
        self.tracker = tracker
        self.graphs = graphs
        self._raw = raw_levels if callable(raw_levels) else raw_levels.__getitem__
        self.tolerance = TRACKING_TOLERANCES[precision]
        self.checks: list[StepCheck] = []
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> TeacherForced:
        cls = type(self.tracker)
        self._eager_step = cls.track_step.__get__(self.tracker)
        self._eager_encode = cls._encode_new_memory.__get__(self.tracker)
        self._stack = install_steps(self.tracker, self._track_step, self._encode)
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def _track_step(self, **kwargs: Any) -> dict[str, Any]:
        eager = self._eager_step(**kwargs)
        objects = kwargs["current_vision_feats"][-1].shape[1]
        levels = self._raw(kwargs["frame_idx"])
        graph_kwargs = dict(kwargs)
        graph_kwargs["current_vision_feats"] = [x.flatten(2).permute(2, 0, 1).expand(-1, objects, -1) for x in levels]
        graph = self.graphs.track_step(**graph_kwargs)
        check = StepCheck("track_step", kwargs["frame_idx"], objects)
        check.refine = kwargs.get("prev_sam_mask_logits") is not None
        check.mask_iou_min = float(mask_iou(eager["pred_masks"], graph["pred_masks"]).min())
        check.mask_logits_max_abs = _max_abs(eager["pred_masks"], graph["pred_masks"])
        check.obj_ptr_max_abs = _max_abs(eager["obj_ptr"], graph["obj_ptr"])
        check.score_max_abs = _max_abs(eager["object_score_logits"], graph["object_score_logits"])
        check.memory_max_abs = _max_abs(eager["maskmem_features"], graph["maskmem_features"])
        self.checks.append(check.judge(self.tolerance))
        return eager

    def _encode(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        eager = self._eager_encode(*args, **kwargs)
        # the memory encoder reads the top level only, which upstream caches without a conv: same input
        graph = self.graphs.encode_new_memory(*args, **kwargs)
        objects = int(eager[0].shape[0])
        check = StepCheck("encode_memory", -1, objects, memory_max_abs=_max_abs(eager[0], graph[0]))
        check.mask_logits_max_abs = check.obj_ptr_max_abs = check.score_max_abs = 0.0
        self.checks.append(check.judge(self.tolerance))
        return eager

    def report(self) -> dict[str, Any]:
        """Worst value per measure, the steps run, and the failing steps."""
        worst: dict[str, float] = {}
        for key in ("mask_logits_max_abs", "obj_ptr_max_abs", "score_max_abs", "memory_max_abs"):
            values = [getattr(c, key) for c in self.checks if not math.isnan(getattr(c, key))]
            worst[key] = max(values) if values else math.nan
        ious = [c.mask_iou_min for c in self.checks if c.kind == "track_step"]
        worst["mask_iou_min"] = float(np.min(ious)) if ious else math.nan  # a NaN IoU shows (Python's min drops it)
        return {
            "passed": bool(self.checks) and all(c.passed for c in self.checks),
            "steps": {
                **{
                    kind: sum(c.kind == kind for c in self.checks)
                    for kind in ("track_step", "encode_memory", "update_memory")
                },
                "refine": sum(c.refine for c in self.checks),
            },
            "worst": worst,
            "tolerance": dict(self.tolerance),
            "failures": [asdict(c) for c in self.checks if not c.passed],
        }


@dataclass
class DetectionCheck:
    """One frame's detection (``run_backbone_and_detection``) eagerly and on the graphs, same frame and prompt.

    ``margin`` is the smallest distance of any query's probability (graphs) from upstream's score threshold:
    where the kept sets differ, it shows whether a query sat on the threshold (a near-tie) or not (a bug).
    """

    frame: int
    eager_kept: int
    graph_kept: int
    margin: float
    score_max_abs: float = math.nan
    box_max_abs: float = math.nan
    mask_logits_max_abs: float = math.nan
    mask_iou_min: float = math.nan
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def judge(self, tol: Mapping[str, float]) -> DetectionCheck:
        """Fill :attr:`failures` from the tolerance row's ``det_*`` and ``mask_iou_min`` entries."""
        if self.eager_kept != self.graph_kept:
            self.failures.append(
                f"kept {self.graph_kept} detections on the graphs, {self.eager_kept} eagerly "
                f"(nearest query to the threshold: {self.margin:.3g} away)"
            )
            return self
        if not self.eager_kept:
            return self
        for key in ("score_max_abs", "box_max_abs", "mask_logits_max_abs"):
            value = getattr(self, key)
            if not value <= tol[f"det_{key}"]:
                self.failures.append(f"det_{key} {value:.3g} > {tol[f'det_{key}']:g}")
        if not self.mask_iou_min >= tol["mask_iou_min"]:
            self.failures.append(f"detection mask IoU {self.mask_iou_min:.4f} < {tol['mask_iou_min']:g}")
        return self


class TeacherForcedVideo:
    """Shadow upstream's video model with the graphs: detection per frame and every tracker step.

    Upstream's eager results are kept (its state never drifts); the graphs run from the same frame, prompt
    and tracker state: detection, every tracker step and memory encoding, and the per-frame memory update
    (``_tracker_update_memories``, compared before upstream's bfloat16 storage).

    Args:
        model: Upstream's video model (eager reference, CPU patches already applied by the caller).
        graphs: A :class:`~.predictor.GraphVideoModel` over the same model (not installed).
        precision: Row of :data:`~sam3_trt.tolerances.TRACKING_TOLERANCES`.
    """

    def __init__(self, model: Any, graphs: Any, precision: str = "fp32") -> None:
        self.model = model
        self.graphs = graphs
        self.tolerance = TRACKING_TOLERANCES[precision]
        self._levels: dict[int, Sequence[Any]] = {}
        self.tracker = TeacherForced(model.tracker, graphs.tracker, self._levels.__getitem__, precision)
        self.detections: list[DetectionCheck] = []
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> TeacherForcedVideo:
        from .predictor import install_video_steps

        self._eager_detect = type(self.model).run_backbone_and_detection.__get__(self.model)
        self._eager_update = type(self.model)._tracker_update_memories.__get__(self.model)
        self._stack = install_video_steps(self.model, self.tracker, self._detect, self._update)
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def _detect(self, **kwargs: Any) -> dict[str, Any]:
        import torch

        eager = self._eager_detect(**kwargs)
        frame = kwargs["frame_idx"]
        # the graphs write their own cache (raw levels); the text features are theirs too. The prompts
        # upstream's detector applies per frame are bookkeeping of the session: shared, cleared with it.
        from .predictor import DETECTION_PROMPTS

        graph_cache: dict = {DETECTION_PROMPTS: kwargs["feature_cache"].setdefault(DETECTION_PROMPTS, {})}
        graph = self.graphs.run_backbone_and_detection(**{**kwargs, "feature_cache": graph_cache})
        self._levels[frame] = graph_cache[frame][1]["tracker_backbone_out"]["backbone_fpn"]
        probs = self.graphs.last_probabilities
        margin = float(torch.abs(probs - self.model.score_threshold_detection).min()) if probs is not None else math.nan
        check = DetectionCheck(frame, int(eager["scores"].numel()), int(graph["scores"].numel()), margin)
        if check.eager_kept == check.graph_kept and check.eager_kept:
            check.score_max_abs = _max_abs(eager["scores"], graph["scores"])
            check.box_max_abs = _max_abs(eager["bbox"], graph["bbox"])
            check.mask_logits_max_abs = _max_abs(eager["mask"], graph["mask"])
            check.mask_iou_min = float(mask_iou(eager["mask"], graph["mask"]).min())
        self.detections.append(check.judge(self.tolerance))
        return eager

    def _update(
        self, tracker_inference_states: list[Any], frame_idx: int, tracker_metadata: dict, low_res_masks: Any
    ) -> None:
        import torch

        from ..export.patches import swap_attr

        eager: list[Any] = []

        def record(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
            out = self.tracker._eager_encode(*args, **kwargs)
            eager.append(out[0])  # float32, before upstream stores it in bfloat16
            return out

        with swap_attr(self.model.tracker, "_encode_new_memory", record):
            self._eager_update(tracker_inference_states, frame_idx, tracker_metadata, low_res_masks)
        if not eager:
            return
        states = [s for s in tracker_inference_states if len(s["obj_ids"])]
        graph = self.graphs.tracker.update_features(states, frame_idx, low_res_masks)
        reference = torch.cat(eager)
        check = StepCheck(
            "update_memory", frame_idx, int(reference.shape[0]), memory_max_abs=_max_abs(reference, graph)
        )
        check.mask_logits_max_abs = check.obj_ptr_max_abs = check.score_max_abs = 0.0
        self.tracker.checks.append(check.judge(self.tolerance))

    def report(self) -> dict[str, Any]:
        """The tracker steps' report plus the detections' worst values and failures."""
        report = self.tracker.report()
        kept = [c for c in self.detections if c.eager_kept and c.eager_kept == c.graph_kept]
        for key in ("score_max_abs", "box_max_abs", "mask_logits_max_abs"):
            report["worst"][f"det_{key}"] = float(np.max([getattr(c, key) for c in kept])) if kept else math.nan
        report["worst"]["det_mask_iou_min"] = float(np.min([c.mask_iou_min for c in kept])) if kept else math.nan
        report["detections"] = [asdict(c) for c in self.detections]
        report["passed"] = report["passed"] and bool(self.detections) and all(c.passed for c in self.detections)
        report["failures"] += [asdict(c) for c in self.detections if not c.passed]
        return report


def compare_tracks(
    reference: Mapping[int, tuple[Sequence[int], Any]],
    candidate: Mapping[int, tuple[Sequence[int], Any]],
    precision: str = "fp32",
) -> dict[str, Any]:
    """Compare two runs' per-frame outputs: ``{frame: (object IDs, masks [objects, ...])}``.

    Args:
        reference: Upstream eager's frames.
        candidate: The graphs' frames.
        precision: Row of :data:`~sam3_trt.tolerances.TRACKING_TOLERANCES` (``mask_iou_min``).

    Returns:
        ``{"passed", "frames": [{"frame", "ids_agree", "iou": {id: IoU}}], "worst_iou", "missing_frames"}``.
    """
    tol = TRACKING_TOLERANCES[precision]["mask_iou_min"]
    frames = []
    missing = sorted(set(reference) ^ set(candidate))
    for f in sorted(set(reference) & set(candidate)):
        ids_r, masks_r = reference[f]
        ids_c, masks_c = candidate[f]
        ids_r, ids_c = [int(i) for i in ids_r], [int(i) for i in ids_c]
        entry: dict[str, Any] = {"frame": f, "ids_agree": ids_r == ids_c, "iou": {}}
        if ids_r == ids_c and len(ids_r):
            entry["iou"] = dict(zip(ids_r, (float(v) for v in mask_iou(masks_r, masks_c)), strict=True))
        frames.append(entry)
    ious = [v for e in frames for v in e["iou"].values()]
    worst = min(ious) if ious else math.nan
    passed = not missing and bool(frames) and all(e["ids_agree"] for e in frames) and not (worst < tol)
    return {"passed": passed, "frames": frames, "worst_iou": worst, "missing_frames": missing, "mask_iou_min": tol}
