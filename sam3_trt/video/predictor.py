"""``Sam3VideoPredictor``: upstream's video predictor request API with the neural work on exported graphs.

Upstream's ``sam3.model.sam3_video_predictor.Sam3VideoPredictor`` dispatches requests (``start_session``,
``add_prompt``, ``propagate_in_video``, ``remove_object``, ``reset_session``, ``close_session``) to its video
model, whose host code (association, hot-start, NMS, re-conditioning, hole filling) stays as it is. This
predictor keeps that API and that host code and swaps, for the duration of each request:

* the video model's ``run_backbone_and_detection``: ``video_vision_encoder`` (one ViT pass, both necks) +
  ``text_encoder`` (cached per text batch, as upstream) + ``decoder``, then upstream's joint score, its
  mask NMS and thresholds (:meth:`GraphVideoModel.run_backbone_and_detection`);
* the tracker's step and memory encoding (:class:`~.tracker.GraphTracker`) and the per-frame memory update
  (:meth:`~.tracker.GraphTracker.update_memories`).

Follow a frame: ``propagate_in_video`` -> upstream's ``_det_track_one_frame`` -> detection here -> upstream's
tracker propagation (graph steps) -> upstream's planning heuristics -> memory update (graph) -> upstream's
outputs (``out_obj_ids``, ``out_probs``, ``out_boxes_xywh``, ``out_binary_masks``).

Prompts: text; one box per ``add_prompt`` (upstream's visual prompt: the detector sees it on its frame, and,
as upstream's one-frame-ahead detection has it, on the next one); points with an ``obj_id`` (the tracker's
prompt encoder and mask head, on the graphs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..runtime.arrays import to_float32
from ..specs import VIDEO_SPECS
from .frames import DEFAULT_CACHE_FRAMES, ClipFrames, check_clip
from .model import host_ops, video_model_on_cpu
from .tracker import GraphTracker, neck_positions
from .tracker import feature_cache as build_feature_cache
from .window import DEFAULT_MEMORY_WINDOW, MemoryWindow, dropped_frames, forget, held_bytes, held_frames

#: Graphs a graph-backed video predictor runs (the image click head of a video export is the processor's).
VIDEO_PREDICTOR_GRAPHS: tuple[str, ...] = (
    "text_encoder",
    "decoder",
    *(g for g in VIDEO_SPECS if g != "interactive_mask_head"),
)


def _on_cuda(model: Any) -> bool:
    """Whether upstream's model lives on a GPU (else its host code runs with the CPU patches, GPU or not)."""
    first = next(iter(model.parameters()), None)
    return first is not None and first.device.type == "cuda"


def install_video_steps(model: Any, tracker_steps: Any, detect: Any, update_memories: Any) -> contextlib.ExitStack:
    """Put graph (or shadowing) steps in place on upstream's video model instance; ``close()`` restores it.

    Args:
        model: Upstream's video model.
        tracker_steps: A context manager that installs the tracker's steps (:class:`~.tracker.GraphTracker`,
            :class:`~.teacher_forced.TeacherForced`).
        detect: Replaces ``run_backbone_and_detection``.
        update_memories: Replaces ``_tracker_update_memories``.
    """
    from ..export.patches import swap_attr

    stack = contextlib.ExitStack()
    stack.enter_context(tracker_steps)
    stack.enter_context(swap_attr(model, "run_backbone_and_detection", detect))
    stack.enter_context(swap_attr(model, "_tracker_update_memories", update_memories))
    stack.enter_context(host_ops())
    return stack


class HostOutputs:
    """A backend whose outputs come back as host numpy arrays (other attributes are the backend's), with each
    graph's runs counted and timed.

    The video runtime (upstream's host code around the graphs) works on host tensors; a TensorRT backend's
    outputs live on the GPU, so each run's outputs are copied back (the copy waits for the run). Host
    outputs (ONNX Runtime) pass through as they are. ``stats[graph]`` holds ``calls``, ``seconds`` (run and
    copy to the host) and ``objects`` (summed over runs, for graphs with a per-object axis): constant
    memory, whatever the clip's length.

    Args:
        backend: The backend to run.
    """

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.stats: dict[str, dict[str, float]] = {}

    def run(self, graph: str, feeds: Any) -> dict[str, np.ndarray]:
        """``backend.run`` with every output copied to a host numpy array."""
        import time

        from ..runtime.arrays import to_numpy

        start = time.perf_counter()
        out = {name: to_numpy(value) for name, value in self.inner.run(graph, feeds).items()}
        seconds = time.perf_counter() - start
        stats = self.stats.setdefault(graph, {"calls": 0, "seconds": 0.0, "objects": 0})
        stats["calls"] += 1
        stats["seconds"] += seconds
        stats["objects"] += _objects(graph, feeds)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _objects(graph: str, feeds: Any) -> int:
    """Objects in a run of a graph with a per-object axis ``O`` (0 for the others)."""
    from ..specs import get_spec

    for tensor in get_spec(graph).inputs:
        if tensor.shape and tensor.shape[0] == "O" and tensor.name in feeds:
            return len(feeds[tensor.name])
    return 0


class GraphVideoModel:
    """Runs upstream's video model's neural pieces on graphs while installed (a reversible context manager).

    Args:
        model: Upstream ``Sam3VideoInferenceWithInstanceInteractivity`` (e.g. :func:`~.model.build_video_model`);
            its settings and host code are used, its weights are not.
        backend: A backend that runs :data:`VIDEO_PREDICTOR_GRAPHS` (ONNX Runtime over an export made with
            ``--video``, TensorRT over engines built from one: their outputs are copied to the host).
        tokenizer: Callable ``list[str] -> int64 [P, 32]`` token IDs (:class:`~sam3_trt.runtime.tokenizer.Tokenizer`).
    """

    def __init__(self, model: Any, backend: Any, tokenizer: Any) -> None:
        missing = [g for g in VIDEO_PREDICTOR_GRAPHS if g not in backend.graphs]
        if missing:
            raise Sam3TrtError(
                f"the {backend.name} backend does not run {', '.join(missing)}; video runs on an export made with "
                "`sam3-trt export --video` (ONNX Runtime), on engines built from one (TensorRT), or on the eager "
                "model with backend='torch'"
            )
        self.model = model
        self.backend = HostOutputs(backend)
        self.tokenizer = tokenizer
        self.tracker = GraphTracker(model.tracker, self.backend)
        self._stack: contextlib.ExitStack | None = None
        self._positions: list[Any] | None = None  # the neck's position encodings, the same on every frame
        self.last_probabilities: Any = None

    def __enter__(self) -> GraphVideoModel:
        if self._stack is not None:
            raise Sam3TrtError("this GraphVideoModel is already installed")
        self._stack = install_video_steps(
            self.model, self.tracker, self.run_backbone_and_detection, self.tracker.update_memories
        )
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def _text(self, texts: tuple[str, ...], feature_cache: dict) -> tuple[np.ndarray, np.ndarray]:
        """Text features of upstream's text batch (``[text prompt, "visual"]``), cached as upstream caches them."""
        cached = feature_cache.get("text")
        if not cached or texts not in cached:
            out = self.backend.run("text_encoder", {"input_ids": self.tokenizer(list(texts))})
            # upstream keeps only the most recent text batch
            feature_cache["text"] = {texts: (np.array(out["text_features"]), np.array(out["text_mask"]))}
        return feature_cache["text"][texts]

    def run_backbone_and_detection(
        self,
        frame_idx: int,
        num_frames: int,
        input_batch: Any,
        geometric_prompt: Any,
        feature_cache: dict,
        reverse: bool,
        allow_new_detections: bool,
    ) -> dict[str, Any]:
        """Upstream's ``Sam3VideoBase.run_backbone_and_detection`` on the graphs (same arguments and result).

        Returns ``{"bbox": [D, 4] xyxy, "mask": [D, 288, 288] logits, "scores": [D]}`` for the detections
        kept after upstream's NMS and score threshold, and caches the frame's tracker features (stored in
        bfloat16, as upstream's detector hands them over) in ``feature_cache[frame_idx]``.
        """
        import torch
        from sam3.model.box_ops import box_cxcywh_to_xyxy
        from sam3.model.model_misc import inverse_sigmoid
        from sam3.perflib.nms import nms_masks

        model = self.model
        prompts = feature_cache.setdefault(DETECTION_PROMPTS, {})
        boxes, box_labels, box_mask = decoder_boxes(
            detection_prompt(prompts, frame_idx, num_frames, reverse, geometric_prompt)
        )
        features, text_mask = self._text(tuple(input_batch.find_text_batch), feature_cache)
        text_id = int(input_batch.find_inputs[frame_idx].text_ids[0])
        pixels = np.ascontiguousarray(to_float32(input_batch.img_batch[frame_idx])[None])
        vision = self.backend.run("video_vision_encoder", {"pixel_values": pixels})
        # the tracker levels outlive later runs; upstream's detector hands them over in bfloat16
        levels = [torch.from_numpy(np.array(vision[f"tracker_fpn{i}"])).to(torch.bfloat16).float() for i in range(3)]
        decoded = self.backend.run(
            "decoder",
            {
                "fpn0": vision["fpn0"],
                "fpn1": vision["fpn1"],
                "fpn2": vision["fpn2"],
                "text_features": features[text_id : text_id + 1],
                "text_mask": text_mask[text_id : text_id + 1],
                "boxes": boxes,
                "box_labels": box_labels,
                "box_mask": box_mask,
            },
        )
        logits = torch.from_numpy(np.array(decoded["pred_logits"]))[0]
        presence = torch.from_numpy(np.array(decoded["presence_logit"]))[0]
        masks = torch.from_numpy(np.array(decoded["pred_masks"]))[0]
        # the video builder's joint score (supervise_joint_box_scores): class probability x presence
        logits = inverse_sigmoid(logits.sigmoid() * presence.sigmoid()).clamp(min=-10.0, max=10.0)
        if model.det_nms_thresh > 0.0:
            keep = nms_masks(
                pred_probs=logits.sigmoid(),
                pred_masks=masks,
                prob_threshold=model.score_threshold_detection,
                iou_threshold=model.det_nms_thresh,
            )
            logits = logits - 1e4 * (~keep).float()
        probs = logits.sigmoid()
        self.last_probabilities = probs  # parity reports how close each query was to the threshold
        if not allow_new_detections:
            probs = probs - 1e8
        kept = torch.where(probs > model.score_threshold_detection)[0]
        boxes_xyxy = box_cxcywh_to_xyxy(torch.from_numpy(np.array(decoded["pred_boxes"]))[0])
        det_out = {"bbox": boxes_xyxy[kept], "mask": masks[kept], "scores": probs[kept]}

        if self._positions is None:
            self._positions = neck_positions(levels)
        _, backbone = build_feature_cache({frame_idx: levels}, positions=self._positions)[frame_idx]
        feature_cache[frame_idx] = (input_batch.img_batch[frame_idx], backbone)
        feature_cache.pop(frame_idx - 1 if not reverse else frame_idx + 1, None)
        return det_out


#: ``feature_cache`` key of the geometric prompts upstream's detector applies per frame (see
#: :func:`detection_prompt`); cleared with the cache when upstream resets the session.
DETECTION_PROMPTS = "sam3_trt_detection_prompts"


def detection_prompt(prompts: dict, frame_idx: int, num_frames: int, reverse: bool, geometric_prompt: Any) -> Any:
    """The geometric prompt upstream's detector applies to ``frame_idx``.

    Upstream's detector (``Sam3ImageOnVideoMultiGPU.forward_video_grounding_multigpu``) detects one chunk of
    frames ahead, with the geometric prompt of the call that computed them, and reuses those results when
    the frame comes; with one GPU a chunk is one frame. So frame f+1 (f-1 in reverse) is detected with frame
    f's prompt: a box prompted on a frame also applies to the next. This keeps the same bookkeeping, of
    prompts rather than results (the graphs run when the frame comes, with the same inputs).

    Args:
        prompts: Frame -> prompt, kept across calls in the session's feature cache.
        frame_idx: The frame being detected.
        num_frames: Frames in the clip.
        reverse: Tracking backwards.
        geometric_prompt: The prompt upstream passes for ``frame_idx``.
    """
    prompt = prompts.setdefault(frame_idx, geometric_prompt)
    prompts.pop(frame_idx + 1 if reverse else frame_idx - 1, None)  # the previous chunk leaves the buffer
    ahead = frame_idx - 1 if reverse else frame_idx + 1
    if 0 <= ahead < num_frames:
        prompts.setdefault(ahead, geometric_prompt)
    return prompt


def decoder_boxes(prompt: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The decoder graph's ``boxes``, ``box_labels``, ``box_mask`` for upstream's geometric ``Prompt``.

    Upstream's video prompts hold boxes only (normalised cx, cy, w, h, ``[seq, 1, 4]``); no box is one
    padding slot, as in the image processor.

    Args:
        prompt: Upstream ``Prompt`` (``box_embeddings``, ``box_labels``, ``box_mask`` may be ``None``).
    """
    points = getattr(prompt, "point_embeddings", None)
    if points is not None and points.shape[0]:
        raise Sam3TrtError("point prompts reach video detection only through the tracker (points with obj_id)")
    boxes = getattr(prompt, "box_embeddings", None)
    if boxes is None or not boxes.shape[0]:
        return np.zeros((1, 1, 4), np.float32), np.zeros((1, 1), bool), np.ones((1, 1), bool)
    count = boxes.shape[0]
    mask = prompt.box_mask
    pad = np.zeros((1, count), bool) if mask is None else np.asarray(mask.cpu(), bool).reshape(1, count)
    labels = np.asarray(prompt.box_labels.cpu()).reshape(count)[None].astype(bool)
    return np.ascontiguousarray(to_float32(boxes)[:, 0][None]), labels, pad


def _upstream_predictor() -> type:
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor as Upstream

    return Upstream


class Sam3VideoPredictor:
    """Upstream's ``Sam3VideoPredictor`` API on graphs (or on the eager model with ``backend="torch"``).

    Args:
        model: Upstream's video model (:func:`~.model.build_video_model`): its settings and host code run;
            on graph backends its weights are not used.
        artifacts: An export folder made with ``sam3-trt export --video``, an engine folder built from one
            (or a :class:`~sam3_trt.runtime.backends.Backend`); ``None`` with ``backend="torch"``.
        backend: ``"auto"`` (follows the folder), ``"onnxruntime"``, ``"tensorrt"``, a backend object, or
            ``"torch"`` (upstream's eager model, on CPU when there is no GPU).
        threads: ONNX Runtime intra-op threads (``None``: its default).
        memory_window: Frames of per-frame state kept behind the tracked frame (and each side of where a
            propagation started), see :mod:`.window`; ``None`` keeps every frame, as upstream does. Outputs
            are upstream's on clips of up to ``memory_window + 1`` frames; requests that would read dropped
            frames are refused.
        frame_cache: Frames of a folder, video file or image list decoded when the model reads them, this
            many kept (:class:`~.frames.ClipFrames`: memory independent of the clip's length); ``None``
            loads the whole clip up front with upstream's loaders, as upstream does (its OpenCV loader
            scales video frames to [-1, 509], see :mod:`.frames`).

    Requests and results are upstream's: ``handle_request({"type": "start_session", "resource_path": ...})``
    -> ``{"session_id"}``; ``{"type": "add_prompt", "session_id", "frame_index", "text" and/or
    "bounding_boxes" + "bounding_box_labels" | "points" + "point_labels" + "obj_id"}`` -> ``{"frame_index",
    "outputs"}``; ``handle_stream_request({"type":
    "propagate_in_video", ...})`` yields ``{"frame_index", "outputs"}`` per frame, ``outputs`` holding
    ``out_obj_ids``, ``out_probs``, ``out_boxes_xywh`` (normalised) and ``out_binary_masks`` ``[K, H, W]``.
    Sessions belong to this predictor (upstream keeps them in one dict shared by every predictor). Bad
    requests (unknown session or object, frame outside the clip, unsupported prompt) raise
    :class:`~sam3_trt.errors.Sam3TrtError` before the session changes.
    """

    def __init__(
        self,
        model: Any,
        artifacts: Any = None,
        backend: Any = "auto",
        threads: int | None = None,
        memory_window: int | None = DEFAULT_MEMORY_WINDOW,
        frame_cache: int | None = DEFAULT_CACHE_FRAMES,
    ) -> None:
        if frame_cache is not None and (
            isinstance(frame_cache, bool) or not isinstance(frame_cache, int) or frame_cache < 1
        ):
            raise Sam3TrtError(f"frame_cache={frame_cache!r}: give a frame count >= 1, or None for upstream's loaders")
        self.model = model
        self.window = MemoryWindow(memory_window)
        self.frame_cache = frame_cache
        # upstream's attributes its request code reads
        self.async_loading_frames = False
        self.video_loader_type = "cv2"
        self._ALL_INFERENCE_STATES: dict[str, dict] = {}
        self.backend: Any = None
        self.graph_model: GraphVideoModel | None = None
        if backend == "torch":
            if artifacts is not None:
                raise Sam3TrtError("backend='torch' runs the eager model; pass artifacts=None")
        else:
            from ..runtime.processor import make_backend
            from ..runtime.tokenizer import Tokenizer
            from ..specs import CONTEXT_LENGTH

            if artifacts is None and not hasattr(backend, "run"):
                raise Sam3TrtError(f"backend={backend!r} needs artifacts: an export folder made with --video")
            if isinstance(backend, str) and backend not in ("auto", "onnxruntime", "tensorrt"):
                raise Sam3TrtError(f"backend={backend!r}: use 'auto', 'onnxruntime', 'tensorrt' or 'torch'")
            self.backend, tokenizer_path = make_backend(artifacts, backend, threads, 0, "auto", True)
            self.graph_model = GraphVideoModel(model, self.backend, Tokenizer(tokenizer_path, CONTEXT_LENGTH))
        self._on_cpu = not _on_cuda(model)

    @contextlib.contextmanager
    def _installed(self) -> Iterator[None]:
        """The graph steps (and, without CUDA, upstream's CPU patches) for one request."""
        import torch

        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self._on_cpu:
                stack.enter_context(video_model_on_cpu(self.model))
            stack.enter_context(self.graph_model if self.graph_model is not None else host_ops())
            yield

    # -- upstream's request API -------------------------------------------------------------------
    def handle_request(self, request: dict) -> dict:
        """Upstream's ``handle_request``: start_session, add_prompt, remove_object, reset/close_session."""
        if not isinstance(request, dict) or "type" not in request:
            raise Sam3TrtError(f"a request is a dict with a 'type'; got {request!r}")
        return _upstream_predictor().handle_request(self, request)

    def handle_stream_request(self, request: dict) -> Iterator[dict]:
        """Upstream's ``handle_stream_request`` (``propagate_in_video``), one result per frame.

        Unlike upstream's generator, the request is checked when this is called, before any frame runs.
        """
        if not isinstance(request, dict) or request.get("type") != "propagate_in_video":
            raise Sam3TrtError(f"stream requests are {{'type': 'propagate_in_video', ...}}; got {request!r}")
        if "session_id" not in request:
            raise Sam3TrtError("propagate_in_video needs a session_id (from start_session)")
        return self.propagate_in_video(
            session_id=request["session_id"],
            propagation_direction=request.get("propagation_direction", "both"),
            start_frame_idx=request.get("start_frame_index", None),
            max_frame_num_to_track=request.get("max_frame_num_to_track", None),
        )

    def start_session(self, resource_path: Any, session_id: str | None = None) -> dict:
        """Open a video (MP4 file, folder of ``<index>.jpg`` frames, an image, a list of PIL images, or a
        :class:`~.frames.ClipFrames`); returns ``{"session_id"}``.

        The clip is decoded frame by frame as the model reads it (``frame_cache``), or whole by upstream's
        loaders (``frame_cache=None``).
        """
        import os
        import time
        import uuid

        from ..export.patches import swap_attr

        if session_id is not None and session_id in self._ALL_INFERENCE_STATES:
            raise Sam3TrtError(f"session_id={session_id!r} is already open; close it first or pass another ID")
        frames: ClipFrames | None = resource_path if isinstance(resource_path, ClipFrames) else None
        if frames is None:
            if isinstance(resource_path, os.PathLike):
                resource_path = os.fspath(resource_path)  # upstream's loaders take str paths only
            if self.frame_cache is not None:
                frames = ClipFrames(resource_path, self.frame_cache, self.model.image_size)  # checks it too
            else:
                check_clip(resource_path)  # what upstream's loaders would fail on deep inside, in one line
        elif frames.image_size != self.model.image_size:
            raise Sam3TrtError(
                f"resource_path: ClipFrames of {frames.image_size} px; this model reads {self.model.image_size} px"
            )
        resource = resource_path if frames is None else _upstream_resource(frames.resource)
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._installed())
            if frames is not None:
                import sam3.model.sam3_video_inference as inference

                def load(**_: Any) -> tuple[ClipFrames, int, int]:
                    return frames, frames.video_height, frames.video_width

                stack.enter_context(swap_attr(inference, "load_resource_as_video_frames", load))
            state = self.model.init_state(
                resource_path=resource,
                offload_video_to_cpu=self._on_cpu,
                async_loading_frames=self.async_loading_frames,
                video_loader_type=self.video_loader_type,
            )
        session_id = session_id or str(uuid.uuid4())
        self._ALL_INFERENCE_STATES[session_id] = {
            "state": state,
            "session_id": session_id,
            "start_time": time.time(),
            "frames": frames,
        }
        return {"session_id": session_id}

    def session_frames(self, session_id: str) -> ClipFrames | None:
        """The session's :class:`~.frames.ClipFrames` (``None`` when upstream's loader holds the whole clip)."""
        return self._get_session(session_id)["frames"]

    def add_prompt(
        self,
        session_id: str,
        frame_idx: int,
        text: str | None = None,
        points: list[list[float]] | None = None,
        point_labels: list[int] | None = None,
        bounding_boxes: list[list[float]] | None = None,
        bounding_box_labels: list[int] | None = None,
        obj_id: int | None = None,
    ) -> dict:
        """Upstream's ``add_prompt`` on a frame: text and/or one box (normalised x, y, w, h; label 1 positive,
        0 negative), which start the session's prompts over; or points (normalised x, y) with ``obj_id``,
        which add or refine that object."""
        state = self._get_session(session_id)["state"]
        _check_frame(frame_idx, state, "frame_index")
        if points is not None and obj_id is None:
            raise Sam3TrtError("points need obj_id (the object they click); text prompts take no obj_id")
        if points is not None and (text is not None or bounding_boxes is not None):
            raise Sam3TrtError("points go in their own add_prompt (with obj_id), not with text or bounding_boxes")
        if bounding_boxes is not None or bounding_box_labels is not None:
            _check_video_box(bounding_boxes, bounding_box_labels)
        if points is None and text is None and bounding_boxes is None:
            raise Sam3TrtError("add_prompt needs text, points (with obj_id) or bounding_boxes")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise Sam3TrtError(f"text={text!r}: give a non-empty noun phrase such as 'person'")
        if points is not None:  # a click starts from the frame's outputs of every object
            self.window.check_reads(state, [frame_idx], f"add_prompt on frame_index={frame_idx}")
        with self._installed():
            result = _upstream_predictor().add_prompt(
                self, session_id, frame_idx, text, points, point_labels, bounding_boxes, bounding_box_labels, obj_id
            )
        if points is None:  # text and boxes start the session over (upstream reset its state)
            forget(state)
        return result

    def remove_object(self, session_id: str, obj_id: int, is_user_action: bool = True) -> dict:
        """Upstream's ``remove_object`` (the object stops being tracked; its ID is not reused)."""
        state = self._get_session(session_id)["state"]
        known = [int(i) for i in state["tracker_metadata"].get("obj_ids_all_gpu", [])]
        if obj_id not in known:
            raise Sam3TrtError(f"obj_id={obj_id!r} is not tracked in session {session_id!r} (tracked: {known})")
        with self._installed():
            return _upstream_predictor().remove_object(self, session_id, obj_id, is_user_action)

    def propagate_in_video(
        self,
        session_id: str,
        propagation_direction: str = "both",
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
    ) -> Iterator[dict]:
        """Upstream's ``propagate_in_video``: yields ``{"frame_index", "outputs"}`` per frame.

        Arguments are checked when called, before the first frame runs.
        """
        state = self._get_session(session_id)["state"]
        if propagation_direction not in ("both", "forward", "backward"):
            raise Sam3TrtError(f"propagation_direction={propagation_direction!r}: use 'both', 'forward' or 'backward'")
        if start_frame_idx is not None:
            _check_frame(start_frame_idx, state, "start_frame_index")
        if max_frame_num_to_track is not None and (
            not isinstance(max_frame_num_to_track, int) or max_frame_num_to_track < 0
        ):
            raise Sam3TrtError(f"max_frame_num_to_track={max_frame_num_to_track!r}: give a frame count >= 0")
        if start_frame_idx is None and all(out is None for out in state["previous_stages_out"]):
            raise Sam3TrtError(f"session {session_id!r} has no prompt yet: add_prompt on a frame, then propagate")
        start = self._check_propagation_reads(state, propagation_direction, start_frame_idx, max_frame_num_to_track)
        return self._propagate(state, start, propagation_direction, start_frame_idx, max_frame_num_to_track)

    def _check_propagation_reads(
        self, state: dict, direction: str, start_frame_idx: int | None, max_frames: int | None
    ) -> int:
        """Refuse a propagation that would fetch or re-track frames the memory window dropped; returns the
        start frame (upstream's default: the first prompted frame)."""
        if start_frame_idx is None:
            start_frame_idx = min(t for t, out in enumerate(state["previous_stages_out"]) if out is not None)
        if dropped_frames(state):
            kind, _ = self.model.parse_action_history_for_propagation(state)
            if kind != "propagation_full":  # fetching results, or re-tracking edited objects over other results
                frames = [
                    frame
                    for reverse in (False, True)
                    if direction in ("both", "backward" if reverse else "forward")
                    for frame in self.model._get_processing_order(state, start_frame_idx, max_frames, reverse)[0]
                ]
                self.window.check_reads(state, frames, f"propagate_in_video ({direction}, {kind})")
        return int(start_frame_idx)

    def _propagate(
        self, state: dict, start: int, direction: str, start_frame_idx: int | None, max_frames: int | None
    ) -> Iterator[dict]:
        """Upstream's predictor loop (forward, then backward) with the memory window following the tracking."""
        from ..export.patches import swap_attr

        model = self.model
        tracked: list[int | None] = [None]  # the frame a full propagation tracked last, in this direction
        run_frame = model._run_single_frame_inference

        def run_and_evict(inference_state: dict, frame_idx: int, reverse: bool) -> Any:
            out = run_frame(inference_state, frame_idx, reverse)
            tracked[0] = frame_idx
            self.window.evict(inference_state, frame_idx, reverse)
            return out

        self.window.start(state, start)
        with self._installed(), swap_attr(model, "_run_single_frame_inference", run_and_evict):
            for reverse in (False, True):
                if direction not in ("both", "backward" if reverse else "forward"):
                    continue
                kind, _ = model.parse_action_history_for_propagation(state)  # what upstream is about to run
                tracked[0] = None
                stream = model.propagate_in_video(state, start_frame_idx, max_frames, reverse)
                for frame_idx, outputs in stream:
                    # a full propagation yields a frame hot-start-delay frames after tracking it (and caches its
                    # masks again then); a partial one tracks and yields each frame; a fetch adds no state
                    current = (
                        tracked[0] if tracked[0] is not None else (frame_idx if kind == "propagation_partial" else None)
                    )
                    if current is not None:
                        self.window.evict(state, current, reverse)
                    yield {"frame_index": frame_idx, "outputs": outputs}

    def memory_stats(self, session_id: str) -> dict[str, Any]:
        """What the session's per-frame state holds now: ``frames_held`` (frame indices), ``bytes_held``
        (tensors, views once), ``frames_dropped`` by the memory window, and the ``memory_window``."""
        state = self._get_session(session_id)["state"]
        return {
            "memory_window": self.window.frames,
            "frames_held": held_frames(state),
            "bytes_held": held_bytes(state),
            "frames_dropped": sorted(dropped_frames(state)),
        }

    def reset_session(self, session_id: str) -> dict:
        """Upstream's ``reset_session``: prompts and tracks gone, the video kept."""
        state = self._get_session(session_id)["state"]
        with self._installed():
            result = _upstream_predictor().reset_session(self, session_id)
        forget(state)
        return result

    def close_session(self, session_id: str) -> dict:
        """Upstream's ``close_session`` (idempotent: closing an unknown session succeeds)."""
        session = self._ALL_INFERENCE_STATES.pop(session_id, None)
        if session is not None and session.get("frames") is not None:
            session["frames"].close()
        return {"is_success": True}

    def _get_session(self, session_id: str) -> dict:
        session = self._ALL_INFERENCE_STATES.get(session_id)
        if session is None:
            raise Sam3TrtError(f"session_id={session_id!r} is not open (closed, or never started): start_session first")
        return session

    def _get_session_stats(self) -> str:
        sessions = [f"{sid!r} ({s['state']['num_frames']} frames)" for sid, s in self._ALL_INFERENCE_STATES.items()]
        return f"live sessions: [{', '.join(sessions)}]"

    def _get_torch_and_gpu_properties(self) -> str:
        return f"sam3-trt video predictor on the {self.backend.name if self.backend else 'torch'} backend"

    def close(self) -> None:
        """Close every session and the backend."""
        for session_id in list(self._ALL_INFERENCE_STATES):
            self.close_session(session_id)
        if self.backend is not None:
            self.backend.close()

    def __enter__(self) -> Sam3VideoPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def video_folder(artifacts: Any) -> Any:
    """The export or engine folder ``artifacts`` resolved (:func:`~sam3_trt.runtime.artifacts.resolve_artifacts`),
    refused in one line unless it holds every graph the video predictor runs."""
    from ..manifest import manifest_graphs
    from ..runtime.artifacts import resolve_artifacts

    found = resolve_artifacts(artifacts)
    missing = [g for g in VIDEO_PREDICTOR_GRAPHS if g not in manifest_graphs(found.manifest)]
    if missing:
        raise Sam3TrtError(
            f"--artifacts {artifacts}: video needs an export made with --video (or engines built from one) "
            f"holding {', '.join(missing)}; run `sam3-trt export --video --out {artifacts}`"
        )
    return found


def folder_predictor(
    folder: Any,
    variant: str,
    backend: str = "auto",
    max_objects: int | None = None,
    memory_window: int | None = DEFAULT_MEMORY_WINDOW,
) -> Sam3VideoPredictor:
    """A video predictor over an export or engine folder, with upstream's video model of ``variant`` for host code.

    The model's weights are never used on the graphs, so it is built with random weights (no checkpoint needed)
    and their storage is released once it is built (:func:`~.model.release_weights`).

    Args:
        folder: Export made with ``--video``, or engines built from one.
        variant: The folder's model variant (``full``, ``tiny``): upstream's settings and shapes.
        backend: ``auto``, ``onnxruntime`` or ``tensorrt``.
        max_objects: Upstream's ``max_num_objects`` (``None``: its default).
        memory_window: See :class:`Sam3VideoPredictor`.
    """
    from ..export.model import load_model
    from ..export.tracker_model import build_tracker
    from .model import build_video_model, release_weights

    image_model, _ = load_model(variant=variant, random_weights=True, seed=0, video=True)
    settings = {"max_num_objects": max_objects} if max_objects else {}
    model = build_video_model(image_model, build_tracker(variant, seed=0), **settings)
    del image_model
    release_weights(model)
    return Sam3VideoPredictor(model, folder, backend=backend, memory_window=memory_window)


def _check_frame(frame_idx: Any, state: dict, name: str) -> None:
    frames = state["num_frames"]
    if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)) or not 0 <= frame_idx < frames:
        raise Sam3TrtError(f"{name}={frame_idx!r} is outside the clip: give a frame index in 0..{frames - 1}")


def _check_video_box(boxes: Any, labels: Any) -> None:
    """What upstream asserts about a video box prompt, said in one line (it takes one box per prompt)."""
    import math

    if boxes is None or labels is None:
        raise Sam3TrtError("bounding_boxes and bounding_box_labels go together (labels: 1 positive, 0 negative)")
    if not isinstance(boxes, (list, tuple)) or len(boxes) != 1:
        count = len(boxes) if isinstance(boxes, (list, tuple)) else repr(boxes)
        raise Sam3TrtError(
            f"bounding_boxes: a video box prompt is one box [[x, y, w, h]] (upstream's visual prompt), got {count}; "
            "prompt one box, then add objects with points and obj_id"
        )
    box = boxes[0]
    ok = isinstance(box, (list, tuple, np.ndarray)) and len(box) == 4
    ok = ok and all(isinstance(v, (int, float, np.number)) and math.isfinite(v) for v in box)
    if ok:
        x, y, w, h = (float(v) for v in box)
        ok = all(0.0 <= v <= 1.0 for v in (x, y, w, h)) and x + w / 2 <= 1.0 and y + h / 2 <= 1.0
    if not ok:
        raise Sam3TrtError(
            f"bounding_boxes[0]={box!r}: give [x, y, w, h] normalised to 0..1 (top-left corner, size), "
            "centre inside the frame"
        )
    if not isinstance(labels, (list, tuple)) or len(labels) != 1 or labels[0] not in (0, 1):
        raise Sam3TrtError(f"bounding_box_labels={labels!r}: give one label per box, [1] positive or [0] negative")


def _upstream_resource(resource: Any) -> Any:
    """What upstream's ``init_state`` is given beside streamed frames (it reads the type: image or video)."""
    import os

    return resource if isinstance(resource, list) else os.fspath(resource)
