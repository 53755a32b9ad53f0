"""``sam3_trt.Sam3Processor``: upstream's ``Sam3Processor`` call shape over exported graphs or engines.

Swap one constructor::

    # from sam3.model.sam3_image_processor import Sam3Processor; processor = Sam3Processor(model)
    from sam3_trt import Sam3Processor
    processor = Sam3Processor("artifacts/full")          # export folder (ONNX Runtime) or engine folder

    state = processor.set_image(image)
    state = processor.set_text_prompt("a red car", state)
    masks, boxes, scores = state["masks"], state["boxes"], state["scores"]

Differences from upstream, on purpose:

* numpy images are read as ``HxWxC`` (upstream takes their size from the last two axes, i.e. W and C);
  16-bit and float images are scaled; grayscale/RGBA become RGB.
* ``set_image_batch`` returns **one state per image**, each usable with prompts (upstream returns a
  single state whose prompts fail). A processor built on :func:`sam3_trt.build_sam3_image_model`'s model keeps
  upstream's contract instead: one batch state (``original_heights``, ``original_widths``, batched
  ``backbone_out``), which ``predict_inst_batch`` takes and clients slice per image (segment-geospatial does).
* An empty text prompt is rejected (upstream runs it); boxes are validated (finite, inside [0, 1],
  positive width and height); a confidence threshold outside [0, 1] is rejected (upstream keeps all or
  nothing without a word). Errors are :class:`~sam3_trt.errors.Sam3TrtError` (a ``ValueError``) and
  leave the state unchanged.
* Image features stay in the state (any number of prompts per image encode it once); text features are
  cached per prompt string (bounded LRU); ``set_confidence_threshold`` re-thresholds the cached raw
  outputs instead of re-running the model.
* ``set_text_prompts([...], state)`` runs several prompts in one decoder batch.
* ``state["backbone_out"]`` holds the three feature levels the decoder needs (torch tensors when torch is
  installed, as upstream's; numpy arrays without torch; ``DeviceArray``s on the GPU with the cuda-python
  memory layer), not upstream's full backbone dictionary.

Results have upstream's keys, shapes and dtypes: ``masks`` bool ``[K,1,H,W]``, ``masks_logits`` (sigmoid
probabilities, as upstream) float32 ``[K,1,H,W]``, ``boxes`` float32 ``[K,4]`` pixel ``x0,y0,x1,y1``,
``scores`` float32 ``[K]``; torch tensors when torch is installed, numpy arrays otherwise.

Thread safety: one processor may be shared by threads (backend calls and the text cache are locked);
give each thread its own state.
"""

from __future__ import annotations

import collections
import functools
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engines.rtx_runtime import bucket
from ..errors import Sam3TrtError
from ..specs import ALL_SPECS, CLICK_GRAPHS, CONTEXT_LENGTH, RESOLUTION, SPECS
from .arrays import installed, to_float32
from .backends import Backend, OnnxRuntimeBackend, TensorRTBackend, TorchBackend
from .image import preprocess, to_uint8_hwc
from .interactive import GRAPH as INTERACTIVE_GRAPH
from .interactive import check_batch_lists, check_prompts, finish
from .model_builder import Sam3ImageModel, split_batch_state
from .tokenizer import Tokenizer

RESULT_KEYS = ("masks_logits", "masks", "boxes", "scores")
#: Decoder outputs of which only the kept queries' rows are copied back.
KEPT = ("pred_boxes", "pred_masks")
#: Text sam3 uses when only boxes are given.
VISUAL_PROMPT = "visual"
_BOX_EPS = 1e-6


def _has_torch() -> bool:
    return installed("torch")


class Sam3Processor:
    """Drop-in replacement for ``sam3.model.sam3_image_processor.Sam3Processor``.

    Args:
        artifacts: Export folder (ONNX), engine folder, a parent of engine folders (the one matching this
            GPU and TensorRT is chosen), the model :func:`sam3_trt.build_sam3_image_model` returned (its
            backend is shared, not owned: constructing a processor per request is cheap), or an eager sam3
            model (with ``backend="torch"``).
        backend: ``"auto"``: the folder decides: an export folder runs on ONNX Runtime, an engine folder
            (or the engine folder under a parent that matches this GPU) on TensorRT; an engine folder that
            cannot run here is an error naming why, never a silent fall back to the CPU. Or
            ``"onnxruntime"``, ``"tensorrt"``, ``"torch"``, or a :class:`~sam3_trt.runtime.backends.Backend`.
        resolution: Must equal the graphs' resolution (1008).
        device: Torch device for results (default: the backend's: the GPU for TensorRT with torch memory,
            else ``cpu``).
        confidence_threshold: Keep detections with score ``> threshold``.
        text_cache_size: Prompts whose text features are kept.
        threads: ONNX Runtime intra-op threads.
        device_index: CUDA device for TensorRT.
        device_memory: TensorRT device memory: ``"auto"`` (torch when installed with CUDA, else
            cuda-python), ``"torch"`` or ``"cuda-python"`` (no torch needed).
        verify: Check the folder's files against its manifest first (sizes every time; sha256 once, then
            remembered beside the files until a file changes). ``False`` skips it.
        max_detections: Keep at most this many detections per prompt, the best scores, chosen before any mask
            is upsampled (``None``: all above the threshold, as upstream). Results hold full-size masks, so
            this bounds their memory whatever the threshold.
        interactive: Also serve clicks (:meth:`predict_inst`): images are encoded by the vision graph that
            gives the tracker neck's levels too (one ViT pass), which a folder exported with ``--video`` has.
            Upstream's ``build_sam3_image_model(enable_inst_interactivity=True)``.
    """

    def __init__(
        self,
        artifacts: Any,
        backend: str | Backend = "auto",
        resolution: int = RESOLUTION,
        device: str | None = None,
        confidence_threshold: float = 0.5,
        text_cache_size: int = 64,
        threads: int | None = None,
        device_index: int = 0,
        device_memory: str = "auto",
        verify: bool = True,
        max_detections: int | None = None,
        interactive: bool = False,
    ) -> None:
        if resolution != RESOLUTION:
            raise Sam3TrtError(
                f"resolution={resolution}: the graphs are exported for {RESOLUTION}x{RESOLUTION}; "
                f"pass resolution={RESOLUTION} (or re-export for another size)"
            )
        self.resolution = resolution
        self.confidence_threshold = check_threshold(confidence_threshold)
        self.max_detections = check_max_detections(max_detections)
        #: Built on a graph-backed model: share its backend and keep upstream's single batch state.
        self._model = artifacts if isinstance(artifacts, Sam3ImageModel) else None
        if self._model is not None:
            self.backend, tokenizer_path = self._model.backend, self._model.tokenizer_path
            interactive = interactive or self._model.interactive
        else:
            self.backend, tokenizer_path = make_backend(
                artifacts, backend, threads, device_index, device_memory, verify
            )
        self.device = device or (self._model.device if self._model is not None else self.backend.result_device)
        self.tokenizer = _tokenizer(tokenizer_path)
        self._torch = _has_torch()
        self._text_cache: collections.OrderedDict[str, tuple[Any, Any]] = collections.OrderedDict()
        self._text_cache_size = max(1, int(text_cache_size))
        self._lock = threading.Lock()
        self.interactive = bool(interactive)
        self._vision_graph = "vision_encoder"
        if self.interactive:
            missing = [g for g in CLICK_GRAPHS if g not in self.backend.graphs]
            if missing:
                where = getattr(self.backend, "folder", None) or f"the {self.backend.name} backend"
                raise Sam3TrtError(
                    f"interactive=True: {where} has no {' or '.join(missing)} graph; clicks need an export made "
                    "with `sam3-trt export --video` (it carries the tracker neck and the click head), or its engines"
                )
            self._vision_graph = "video_vision_encoder"

    @property
    def graphs(self) -> tuple[str, ...]:
        """The graphs this processor runs (the vision graph, text encoder and decoder, and the click head)."""
        return (self._vision_graph, "text_encoder", "decoder", *((INTERACTIVE_GRAPH,) if self.interactive else ()))

    # -- images ---------------------------------------------------------------------------------
    def set_image(self, image: Any, state: dict | None = None) -> dict:
        """Encode one image; returns the state that prompts run on.

        Args:
            image: PIL image, ``HxWxC``/``HxW`` numpy array or ``CxHxW`` tensor (see :mod:`.image`).
            state: Dict to fill (a new one when ``None``); its earlier image and prompts are replaced.
        """
        return self.set_image_batch([image], states=[state])[0]

    def set_image_batch(
        self, images: Sequence[Any], state: dict | None = None, states: Sequence[dict | None] | None = None
    ) -> Any:
        """Encode several images in batches of the vision graph; returns **one state per image** (a list).

        On a processor built on :func:`sam3_trt.build_sam3_image_model`'s model: upstream's single batch state
        instead (a dict; ``state`` is filled when given), for :meth:`predict_inst_batch` and clients that slice it.

        Args:
            images: Images as for :meth:`set_image`.
            state: Upstream's batch state to fill (model-built processors only; others return one state per
                image, so must get ``None``).
            states: Optional dicts to fill, one per image.
        """
        if self._model is not None and states is None:
            return self._batch_state(self.set_image_batch(images, states=[None] * len(images)), state)
        if state is not None:
            raise Sam3TrtError(
                "set_image_batch returns one state per image; pass states=[...] (one per image) or nothing"
            )
        if not isinstance(images, (list, tuple)) or not images:
            raise Sam3TrtError("set_image_batch needs a non-empty list of images")
        states = list(states) if states is not None else [None] * len(images)
        if len(states) != len(images):
            raise Sam3TrtError(f"got {len(states)} states for {len(images)} images")
        prepared = [to_uint8_hwc(im) for im in images]  # validate every image before touching any state
        max_batch = ALL_SPECS[self._vision_graph].dim("B").max
        out: list[dict] = []
        for start in range(0, len(prepared), max_batch):
            chunk = prepared[start : start + max_batch]
            pixels = np.concatenate([preprocess(im, self.resolution) for im in chunk])
            feats = self.backend.run(self._vision_graph, {"pixel_values": pixels})
            for i, im in enumerate(chunk):
                st = states[start + i]
                st = {} if st is None else st
                st.clear()
                st["original_height"], st["original_width"] = int(im.shape[0]), int(im.shape[1])
                fpn = [self._state_tensor(self._keep(feats[name][i : i + 1])) for name in ("fpn0", "fpn1", "fpn2")]
                st["backbone_out"] = {"backbone_fpn": fpn, "vision_features": fpn[-1]}
                if self.interactive:  # the tracker neck's levels, before the click head's conv_s0 / conv_s1
                    levels = [self._state_tensor(self._keep(feats[f"tracker_fpn{k}"][i : i + 1])) for k in range(3)]
                    st["backbone_out"]["sam2_backbone_out"] = {"backbone_fpn": levels}
                out.append(st)
        return out

    def _batch_state(self, states: list[dict], state: dict | None) -> dict:
        """Upstream's single batch state from per-image states (the levels concatenated on the batch axis)."""
        if any(is_device_array(f) for f in states[0]["backbone_out"]["backbone_fpn"]):
            raise Sam3TrtError(
                "set_image_batch: upstream's batch state needs torch or host arrays; build the model with torch "
                "installed (device memory 'torch'), or use set_image per image"
            )
        state = {} if state is None else state
        state.clear()
        state["original_heights"] = [s["original_height"] for s in states]
        state["original_widths"] = [s["original_width"] for s in states]
        fpn = [_concat([s["backbone_out"]["backbone_fpn"][k] for s in states]) for k in range(3)]
        state["backbone_out"] = {"backbone_fpn": fpn, "vision_features": fpn[-1]}
        if self.interactive:
            levels = [s["backbone_out"]["sam2_backbone_out"]["backbone_fpn"] for s in states]
            state["backbone_out"]["sam2_backbone_out"] = {
                "backbone_fpn": [_concat([lv[k] for lv in levels]) for k in range(3)]
            }
        return state

    # -- prompts --------------------------------------------------------------------------------
    def set_text_prompt(self, prompt: str, state: dict) -> dict:
        """Set the text prompt (keeping boxes already added) and run detection.

        Args:
            prompt: Non-empty text.
            state: State from :meth:`set_image`.
        """
        _check_image(state, "set_text_prompt")
        prompt = _check_prompt(prompt)
        raw = self._ground([prompt], state.get("geometric_prompt", []), state)[0]
        state["text_prompt"] = prompt
        return self._store(state, raw)

    def set_text_prompts(
        self, prompts: Sequence[str], state: dict, full_masks: bool = True, max_detections: int | None = None
    ) -> list[dict]:
        """Run several text prompts in one decoder batch; returns one result dict per prompt.

        Each result has the processor's result keys plus ``prompt``, ``best_score`` (the highest score of any
        query, kept or not) and ``detections_total`` (queries above the threshold, before ``max_detections``).
        The state's boxes apply to every prompt; its own prompt and results are not changed.

        Args:
            prompts: Non-empty texts.
            state: State from :meth:`set_image`.
            full_masks: ``False``: no full-size masks; results hold ``low_res_masks`` (``[K, 288, 288]`` mask
                logits of the kept queries) instead of ``masks`` and ``masks_logits``, for callers that
                upsample one mask at a time (:func:`~sam3_trt.runtime.segment.detect`).
            max_detections: At most this many detections per prompt for this call, on top of the processor's
                own ``max_detections`` (the smaller applies; ``None``: the processor's).
        """
        limit = check_max_detections(max_detections)
        _check_image(state, "set_text_prompts")
        if isinstance(prompts, str) or not prompts:
            raise Sam3TrtError("set_text_prompts needs a non-empty list of prompts")
        prompts = [_check_prompt(p) for p in prompts]
        max_p = SPECS["decoder"].dim("P").max
        results = []
        for start in range(0, len(prompts), max_p):
            chunk = prompts[start : start + max_p]
            raws = self._ground(chunk, state.get("geometric_prompt", []), state)
            finished = self._finish(raws, state, full_masks, limit)
            for prompt, (result, extras) in zip(chunk, finished, strict=True):
                results.append({"prompt": prompt, **result, **extras})
        return results

    def add_geometric_prompt(self, box: Sequence[float], label: bool, state: dict) -> dict:
        """Add a box prompt (normalised ``cx, cy, w, h``; ``label`` True positive, False negative) and run detection.

        With no text prompt, the text ``"visual"`` stands in, as upstream.
        """
        _check_image(state, "add_geometric_prompt")
        checked = check_box(box)
        if not isinstance(label, (bool, np.bool_)) and label not in (0, 1):
            raise Sam3TrtError(f"box label must be True (positive) or False (negative), got {label!r}")
        boxes = [*state.get("geometric_prompt", []), (checked, bool(label))]
        max_n = SPECS["decoder"].dim("N").max
        if len(boxes) > max_n:
            raise Sam3TrtError(f"at most {max_n} boxes per prompt are supported (re-export with a larger N max)")
        prompt = state.get("text_prompt") or VISUAL_PROMPT
        raw = self._ground([prompt], boxes, state)[0]
        state["geometric_prompt"] = boxes
        return self._store(state, raw)

    def reset_all_prompts(self, state: dict) -> None:
        """Remove the text prompt, boxes and results (the image stays encoded)."""
        for key in ("text_prompt", "geometric_prompt", "_raw", *RESULT_KEYS):
            state.pop(key, None)

    def set_confidence_threshold(self, threshold: float, state: dict | None = None) -> dict | None:
        """Set the threshold; with a state that has results, re-threshold them (no model run)."""
        self.confidence_threshold = check_threshold(threshold)
        if state is not None and "_raw" in state:
            return self._store(state, state["_raw"])
        return state

    def clear_text_cache(self) -> None:
        """Forget cached text features (the next prompt runs the text encoder again)."""
        with self._lock:
            self._text_cache.clear()

    def warm_up(self, vision_batches: Sequence[int] = (1,)) -> dict[str, list[tuple[int, ...]]]:
        """Run each shape the prompt calls can take once, before the first request.

        On TensorRT for RTX this compiles the kernels of every bucketed shape (the backend's
        ``shape_buckets``: each text batch, each prompt batch with one box, each box count with one prompt),
        so no request waits for compilation and the runtime cache holds them all; on other backends it runs
        each graph once at its smallest shape (sessions created, memory pools filled). The text cache and the
        processor's results are left as they were.

        Args:
            vision_batches: Image batch sizes to run the vision graph at (``set_image`` uses 1;
                ``set_image_batch`` of B images uses up to the graph's maximum).

        Returns:
            ``{graph: [sizes run]}``: the vision graph's batch sizes, the text encoder's batch sizes, the
            decoder's ``(prompts, boxes)`` and, with ``interactive=True``, the click head's ``(sets, points)``.
        """
        most = ALL_SPECS[self._vision_graph].dim("B").max
        bad = [b for b in vision_batches if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= most]
        if bad or not vision_batches:
            raise Sam3TrtError(f"warm_up: vision_batches {list(vision_batches)} must be sizes from 1 to {most}")
        image = np.full((64, 64, 3), 128, np.uint8)
        ran: dict[str, list[tuple[int, ...]]] = {self._vision_graph: [], "text_encoder": [], "decoder": []}
        for b in vision_batches:
            states = self.set_image_batch([image] * b, states=[None] * b)
            ran[self._vision_graph].append((b,))
        state = states[0]
        most_p, most_n = SPECS["decoder"].dim("P").max, SPECS["decoder"].dim("N").max
        counts = sorted({min(b, most_p) for b in self.backend.shape_buckets} or {1})
        box_counts = sorted({min(b, most_n) for b in self.backend.shape_buckets} or {1})
        with self._lock:
            before = set(self._text_cache)
        names = [f"sam3-trt warm-up {i}" for i in range(max(counts))]
        try:
            for p in counts:  # fresh texts each time: the text encoder runs at every bucket too
                self._forget_texts(names)
                self._text_features(names[:p])
                ran["text_encoder"].append((self._bucket("text_encoder", p),))
                self._ground(names[:p], [], state)
                ran["decoder"].append((self._bucket("decoder", p), 1))
            box = ([0.5, 0.5, 0.25, 0.25], True)
            for n in box_counts[1:]:
                self._ground(names[:1], [box] * n, state)
                ran["decoder"].append((self._bucket("decoder", 1), n))
            if self.interactive:
                low_res, _ = self.predict_inst_low_res(state, point_coords=[[32.0, 32.0]], point_labels=[1])
                ran[INTERACTIVE_GRAPH] = [(int(low_res.shape[0]), 1)]
            self.backend.synchronize()  # returns once every run (and any compilation it caused) is done
        finally:
            self._forget_texts([n for n in names if n not in before])
        return ran

    def _forget_texts(self, prompts: Sequence[str]) -> None:
        with self._lock:
            for p in prompts:
                self._text_cache.pop(p, None)

    # -- internals ------------------------------------------------------------------------------
    def _text_features(self, prompts: Sequence[str]) -> tuple[Any, Any]:
        with self._lock:
            missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            ids = self.tokenizer(missing)
            ids = ids[_padded_rows(len(missing), self._bucket("text_encoder", len(missing)))]
            out = self.backend.run("text_encoder", {"input_ids": ids})
            with self._lock:
                for i, p in enumerate(missing):
                    self._text_cache[p] = (self._keep(out["text_features"][i]), self._keep(out["text_mask"][i]))
        with self._lock:
            entries = []
            for p in prompts:
                self._text_cache.move_to_end(p)
                entries.append(self._text_cache[p])
            while len(self._text_cache) > self._text_cache_size:
                self._text_cache.popitem(last=False)
        return _stack([e[0] for e in entries]), _stack([e[1] for e in entries])

    def _bucket(self, graph: str, count: int) -> int:
        """Rows a batch of ``count`` runs at: the backend's shape bucket (padding rows), else ``count``."""
        return bucket(count, self.backend.shape_buckets, ALL_SPECS[graph].dim("P").max)

    def _ground(self, prompts: Sequence[str], boxes: Sequence[tuple[list[float], bool]], state: dict) -> list[dict]:
        count = len(prompts)
        # padded rows repeat the last prompt (the decoder treats prompts independently) and are dropped below;
        # padded boxes are marked as padding, as a prompt without boxes already passes one
        rows = self._bucket("decoder", count)
        features, mask = self._text_features([*prompts, *[prompts[-1]] * (rows - count)])
        n = bucket(max(1, len(boxes)), self.backend.shape_buckets, SPECS["decoder"].dim("N").max)
        box_arr = np.zeros((rows, n, 4), dtype=np.float32)
        labels = np.zeros((rows, n), dtype=bool)
        pad = np.ones((rows, n), dtype=bool)
        for i, (box, label) in enumerate(boxes):
            box_arr[:, i] = box
            labels[:, i] = label
            pad[:, i] = False
        fpn = state["backbone_out"]["backbone_fpn"]
        feeds = {
            "fpn0": fpn[0],
            "fpn1": fpn[1],
            "fpn2": fpn[2],
            "text_features": features,
            "text_mask": mask,
            "boxes": box_arr,
            "box_labels": labels,
            "box_mask": pad,
        }
        out = self.backend.run("decoder", feeds)
        return [
            {k: self._keep(out[k][i]) for k in ("pred_logits", "pred_boxes", "presence_logit", "pred_masks")}
            for i in range(count)
        ]

    def _finish(
        self, raws: Sequence[dict], state: dict, full_masks: bool = True, max_detections: int | None = None
    ) -> list[tuple[dict, dict]]:
        """Upstream's results of each prompt's raw outputs, and ``{"best_score", "detections_total"}`` of each.

        Outputs in device memory without torch (cuda-python :class:`DeviceArray`) are copied back in two steps
        for all prompts together: the query logits and presence first, then only the kept rows of boxes and
        masks (two synchronisations per decoder batch, whatever the number of prompts).
        """
        from .postprocess import boxes_to_pixels, select_queries, upsample_probs

        height, width = state["original_height"], state["original_width"]
        limits = [n for n in (self.max_detections, max_detections) if n is not None]
        threshold, limit = self.confidence_threshold, min(limits) if limits else None
        selected = []  # per prompt: (scores, kept boxes, kept masks, extras)
        if raws and is_device_array(raws[0]["pred_logits"]):
            memory = raws[0]["pred_logits"]._memory
            small = memory.gather_to_host([(r[k], None) for r in raws for k in ("pred_logits", "presence_logit")])
            picks = [select_queries(small[2 * i], small[2 * i + 1], threshold, limit) for i in range(len(raws))]
            wanted = [(r[k], keep) for r, (keep, _, _) in zip(raws, picks, strict=True) if keep.size for k in KEPT]
            rows = iter(memory.gather_to_host(wanted) if wanted else [])
            for i, (raw, (keep, scores, total)) in enumerate(zip(raws, picks, strict=True)):
                if keep.size:
                    boxes, masks = next(rows), next(rows)
                else:
                    boxes = np.zeros((0, 4), np.float32)
                    masks = np.zeros((0, *raw["pred_masks"].shape[1:]), np.float32)
                best = best_score({"pred_logits": small[2 * i], "presence_logit": small[2 * i + 1]})
                extras = {"best_score": best, "detections_total": total}
                selected.append((*(self._as_result_tensor(x) for x in (scores, boxes, masks)), extras))
        else:
            for raw in raws:
                t = {k: self._as_result_tensor(v) for k, v in raw.items()}
                keep, scores, total = select_queries(t["pred_logits"], t["presence_logit"], threshold, limit)
                extras = {"best_score": best_score(t), "detections_total": total}
                selected.append((scores, t["pred_boxes"][keep], t["pred_masks"][keep], extras))
        out = []
        for scores, kept_boxes, kept_masks, extras in selected:
            result = {"boxes": boxes_to_pixels(kept_boxes, height, width), "scores": scores}
            if full_masks:
                probs = upsample_probs(kept_masks, height, width)
                result = {"masks_logits": probs, "masks": probs > 0.5, **result}
            else:
                result["low_res_masks"] = kept_masks
            out.append((result, extras))
        return out

    def _store(self, state: dict, raw: dict) -> dict:
        state["_raw"] = raw
        state.update(self._finish([raw], state)[0][0])
        return state

    def _keep(self, x: Any) -> Any:
        """``x`` to hold past the next run: copied only when the backend reuses its output buffers."""
        return _copy(x) if self.backend.reuses_outputs else x

    def _state_tensor(self, x: Any) -> Any:
        """Image features as upstream keeps them (torch tensors) when torch is installed; no copy."""
        if self._torch and isinstance(x, np.ndarray):
            import torch

            return torch.from_numpy(x)
        return x

    def _as_result_tensor(self, x: Any) -> Any:
        if not self._torch:
            return np.asarray(x)
        import torch

        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        return t.to(self.device)

    # -- clicks ---------------------------------------------------------------------------------
    def predict_inst(
        self,
        inference_state: dict,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for clicks and/or a box on the state's image: upstream's ``model.predict_inst(state, ...)``.

        Args:
            inference_state: A state from :meth:`set_image` of a processor made with ``interactive=True``.
            point_coords: ``[N, 2]`` x, y (or ``[B, N, 2]``: B prompt sets, one graph run).
            point_labels: ``[N]`` (or ``[B, N]``): 1 positive, 0 negative.
            box: ``[4]`` (or ``[B, 4]``) x0, y0, x1, y1.
            mask_input: ``[1, 288, 288]`` low-res logits of a previous call (the refine loop).
            multimask_output: Three masks (ambiguous single clicks) or one.
            return_logits: Full-size logits instead of 0/1 masks.
            normalize_coords: Coordinates are pixels of the image (``True``) or already in [0, 1].

        Returns:
            ``(masks [C, H, W], iou_predictions [C], low_res_masks [C, 288, 288])`` float32 numpy arrays, a
            leading ``B`` for several prompt sets, as upstream's. Bad prompts raise one line and change nothing.
        """
        hw = (inference_state["original_height"], inference_state["original_width"])
        low_res, iou = self.predict_inst_low_res(
            inference_state, point_coords, point_labels, box, mask_input, multimask_output, normalize_coords
        )
        return finish(low_res, iou, hw, bool(return_logits))

    def predict_inst_low_res(
        self,
        inference_state: dict,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The click head's answer before any full-size mask is made: ``(low_res_logits [B, C, 288, 288] (not
        clamped), iou_predictions [B, C])`` float32 numpy. Arguments as :meth:`predict_inst`; for callers that
        upsample only what they keep (:class:`~sam3_trt.runtime.automatic.Sam3AutomaticMaskGenerator`)."""
        return self._run_clicks(
            self._click_feeds(
                inference_state, "predict_inst", point_coords, point_labels, box, mask_input, normalize_coords
            ),
            multimask_output,
        )

    def _click_feeds(
        self,
        state: Any,
        call: str,
        point_coords: Any,
        point_labels: Any,
        box: Any,
        mask_input: Any,
        normalize_coords: bool,
    ) -> dict[str, Any]:
        """The click head's feeds for one state's prompts, every value checked (nothing runs here)."""
        self._check_interactive(state, call)
        hw = (state["original_height"], state["original_width"])
        feeds = check_prompts(point_coords, point_labels, box, mask_input, hw, normalize_coords)
        levels = state["backbone_out"]["sam2_backbone_out"]["backbone_fpn"]
        return {**feeds, **{f"tracker_fpn{k}": level for k, level in enumerate(levels)}}

    def _run_clicks(self, feeds: dict[str, Any], multimask_output: bool) -> tuple[np.ndarray, np.ndarray]:
        chosen = slice(1, 4) if multimask_output else slice(0, 1)
        with self._lock:
            out = self.backend.run(INTERACTIVE_GRAPH, feeds)
            return _host_tokens(out["low_res_masks"], chosen), _host_tokens(out["iou_predictions"], chosen)

    def predict_inst_batch(
        self,
        inference_states: Sequence[dict],
        point_coords_batch: Sequence[Any] | None = None,
        point_labels_batch: Sequence[Any] | None = None,
        box_batch: Sequence[Any] | None = None,
        mask_input_batch: Sequence[Any] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """:meth:`predict_inst` per image: upstream's ``predict_inst_batch`` (lists of per-image results).

        Args:
            inference_states: What :meth:`set_image_batch` returned: one state per image, or upstream's single
                batch state (a dict with ``original_heights``).
            point_coords_batch: One entry per image (or ``None``), as ``point_coords``.
            point_labels_batch: One entry per image, as ``point_labels``.
            box_batch: One entry per image, as ``box``.
            mask_input_batch: One entry per image, as ``mask_input``.
            multimask_output: As in :meth:`predict_inst`.
            return_logits: As in :meth:`predict_inst`.
            normalize_coords: As in :meth:`predict_inst`.
        """
        if isinstance(inference_states, dict) and "original_heights" in inference_states:
            states = split_batch_state(inference_states)  # upstream's single batch state
        elif isinstance(inference_states, dict):
            raise Sam3TrtError(
                "predict_inst_batch takes the list of states set_image_batch returned (one per image), got one state"
            )
        else:
            states = list(inference_states)
        lists = {
            "point_coords_batch": point_coords_batch,
            "point_labels_batch": point_labels_batch,
            "box_batch": box_batch,
            "mask_input_batch": mask_input_batch,
        }
        check_batch_lists(lists, len(states))
        prompts = [[v[i] if v is not None else None for v in lists.values()] for i in range(len(states))]
        # every image's prompts checked before any graph runs
        feeds = [
            self._click_feeds(state, f"predict_inst_batch image {i}", *p, normalize_coords)
            for i, (state, p) in enumerate(zip(states, prompts, strict=True))
        ]
        masks, ious, low_res = [], [], []
        for state, f in zip(states, feeds, strict=True):
            hw = (state["original_height"], state["original_width"])
            m, iou, low = finish(*self._run_clicks(f, multimask_output), hw, bool(return_logits))
            masks.append(m)
            ious.append(iou)
            low_res.append(low)
        return masks, ious, low_res

    def _check_interactive(self, state: Any, call: str) -> None:
        _check_image(state, call)
        if not self.interactive:
            raise Sam3TrtError(
                f"{call}: this processor was made without clicks; pass interactive=True (with a folder exported "
                "with `sam3-trt export --video`)"
            )
        if "sam2_backbone_out" not in state["backbone_out"]:
            raise Sam3TrtError(f"{call}: the state's image was encoded by another processor; call set_image again")

    # -- resources ------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the backend's sessions, engines and device memory (a model's backend stays: the model owns it)."""
        if self._model is None:
            self.backend.close()
        self._text_cache.clear()

    def __enter__(self) -> Sam3Processor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=4)
def _tokenizer(path: Path) -> Tokenizer:
    """One tokenizer per vocabulary file, read once: processors built per request share it (its only state is
    a memo of BPE merges, safe to share between threads)."""
    return Tokenizer(path, context_length=CONTEXT_LENGTH)


def best_score(raw: dict) -> float:
    """Highest ``sigmoid(logit) * sigmoid(presence)`` over the queries of one prompt's raw outputs."""
    from .arrays import to_numpy

    logits = to_numpy(raw["pred_logits"]).astype(np.float64)
    presence = to_numpy(raw["presence_logit"]).astype(np.float64).reshape(())
    return float((1 / (1 + np.exp(-logits))).max() / (1 + np.exp(-presence)))


def is_device_array(x: Any) -> bool:
    """Whether ``x`` is the cuda-python layer's :class:`~.device_memory.cuda_python.DeviceArray` (checked by type
    name, so cuda-python is never imported here)."""
    return type(x).__name__ == "DeviceArray" and hasattr(x, "_memory")


def check_max_detections(value: Any, name: str = "max_detections") -> int | None:
    """``value`` as a positive int or ``None``, or one line naming ``name``, the value and the fix.

    Args:
        value: The value given.
        name: What to call it in the message (``--max-detections``, ``input max_detections``).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise Sam3TrtError(f"{name} {value!r}: use a whole number >= 1 (or None for no limit)")
    return int(value)


def _host_tokens(x: Any, chosen: slice) -> np.ndarray:
    """The chosen mask tokens of ``x`` as float32 on the host: only they are copied where the array type can
    slice on the device (torch, numpy); the cuda-python layer's arrays come back whole, then are sliced."""
    if is_device_array(x):
        return to_float32(x)[:, chosen]
    return to_float32(x[:, chosen])


def _padded_rows(count: int, rows: int) -> list[int]:
    """Row indices that pad ``count`` rows to ``rows`` by repeating the last."""
    return [*range(count), *[count - 1] * (rows - count)]


def _copy(x: Any) -> Any:
    return x.clone() if hasattr(x, "clone") else np.array(x, copy=True)


def _concat(items: Sequence[Any]) -> Any:
    if hasattr(items[0], "clone"):
        import torch

        return torch.cat(list(items))
    return np.concatenate(items)


def _stack(items: Sequence[Any]) -> Any:
    if is_device_array(items[0]):
        return items[0]._memory.stack(items)
    if hasattr(items[0], "clone"):
        import torch

        return torch.stack(list(items))
    return np.stack(items)


def _check_image(state: Any, call: str) -> None:
    if not isinstance(state, dict) or "backbone_out" not in state:
        raise Sam3TrtError(f"{call}: call set_image(image) first and pass the state it returns")
    if "original_heights" in state:
        raise Sam3TrtError(
            f"{call}: this is set_image_batch's batch state; call set_image for one image (or slice one image's "
            "state from the batch, with original_height and original_width)"
        )


def _check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise Sam3TrtError(f"text prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise Sam3TrtError(
            "text prompt is empty; pass a phrase such as 'a red car' (use add_geometric_prompt for boxes only)"
        )
    return prompt


def check_threshold(threshold: Any, name: str = "confidence threshold") -> float:
    """``threshold`` as a float in [0, 1], or one line naming ``name``, the value and the fix.

    Scores are probabilities: outside [0, 1] a threshold keeps everything or nothing, which is always a mistake
    (upstream accepts it silently); 0 keeps every query. The processor, ``segment``, ``client`` and the server
    check thresholds here.

    Args:
        threshold: The value given.
        name: What to call it in the message (``--threshold``, ``input threshold``).
    """
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise Sam3TrtError(f"{name} must be a number in [0, 1], got {threshold!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise Sam3TrtError(
            f"{name} {threshold!r} is outside [0, 1]: scores are probabilities; use e.g. 0.5 (0 keeps every detection)"
        )
    return value


def check_box(box: Any) -> list[float]:
    """``box`` (normalised ``cx, cy, w, h``, inside the image) as 4 floats, or one line saying what is wrong."""
    try:
        values = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        raise Sam3TrtError(f"box must be 4 numbers (normalised cx, cy, w, h), got {box!r}") from None
    if len(values) != 4:
        raise Sam3TrtError(f"box must be 4 numbers (normalised cx, cy, w, h), got {len(values)}: {box!r}")
    if not all(math.isfinite(v) for v in values):
        raise Sam3TrtError(f"box {values} has NaN or infinite values")
    cx, cy, w, h = values
    if w <= 0 or h <= 0:
        raise Sam3TrtError(
            f"box {values} has width {w} and height {h}: both must be > 0 (cx, cy, w, h format; inverted or zero-area box)"
        )
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if min(x0, y0) < -_BOX_EPS or max(x1, y1) > 1 + _BOX_EPS:
        raise Sam3TrtError(
            f"box {values} spans x [{x0:.4g}, {x1:.4g}], y [{y0:.4g}, {y1:.4g}]; it must lie inside the image, "
            "in [0, 1] normalised coordinates (divide pixel coordinates by the image width and height)"
        )
    return values


def make_backend(
    artifacts: Any, backend: str | Backend, threads: int | None, device_index: int, device_memory: str, verify: bool
) -> tuple[Backend, Path]:
    """The backend that runs ``artifacts`` and the tokenizer vocabulary beside it (the image and video runtimes').

    Args:
        artifacts: Export or engine folder, or the eager sam3 model (``backend`` ``torch`` or ``auto``).
        backend: ``auto``, ``onnxruntime``, ``tensorrt``, ``torch``, or a :class:`Backend` to use as it is.
        threads: ONNX Runtime threads.
        device_index: CUDA device of engine folders.
        device_memory: Device-memory provider of the TensorRT backend (``auto``, ``torch``, ``cuda-python``).
        verify: Check every file's sha256 against the manifest first.

    Returns:
        ``(backend, tokenizer vocabulary path)``.
    """
    from ..assets import BPE_FILE, bpe_path
    from .artifacts import resolve_artifacts

    if isinstance(backend, Backend):
        folder = getattr(backend, "folder", None)
        return backend, (Path(folder) / BPE_FILE if folder else bpe_path())
    if backend not in ("auto", "onnxruntime", "tensorrt", "torch"):
        raise Sam3TrtError(f"backend={backend!r}: use 'auto', 'onnxruntime', 'tensorrt' or 'torch'")
    if not isinstance(artifacts, (str, Path)):
        if backend not in ("torch", "auto"):
            raise Sam3TrtError(f"backend={backend!r} needs an artifacts folder, got a {type(artifacts).__name__}")
        return TorchBackend(artifacts), bpe_path()
    if backend == "torch":
        raise Sam3TrtError("backend='torch' takes the eager sam3 model as `artifacts`, not a folder")
    found = resolve_artifacts(artifacts, device_index=device_index)
    if verify:
        from ..manifest import verify_files

        verify_files(found.folder, found.manifest)
    check_folder_backend(found, backend)
    if found.kind == "onnx-export":
        return OnnxRuntimeBackend(found.folder, threads=threads), found.tokenizer_path
    return TensorRTBackend(found.folder, found.manifest, device_index, device_memory), found.tokenizer_path


def check_folder_backend(found: Any, backend: str) -> None:
    """Raise unless ``backend`` (``auto``, ``onnxruntime``, ``tensorrt``) runs ``found``'s kind of folder.

    Args:
        found: :func:`~sam3_trt.runtime.artifacts.resolve_artifacts` result.
        backend: The backend asked for.
    """
    if found.kind == "onnx-export" and backend == "tensorrt":
        raise Sam3TrtError(
            f"{found.folder} is an ONNX export; build engines first (`sam3-trt build --gpu auto --onnx-dir "
            f"{found.folder} --out engines`) or use --backend onnxruntime"
        )
    if found.kind != "onnx-export" and backend == "onnxruntime":
        raise Sam3TrtError(f"{found.folder} is an engine folder; pass the export folder for --backend onnxruntime")
