"""Upstream's tracking predictor with its per-frame step and memory encoding on the tracker graphs.

``sam3.model.sam3_tracking_predictor.Sam3TrackerPredictor`` keeps the per-object state, the prompts,
the consolidation across objects and the propagation order (host control flow, used as is). Two of its
methods hold all of its neural work, and :class:`GraphTracker` replaces exactly those, on the instance
and reversibly:

* ``track_step``: memory selection (:func:`~.memory.select_memories`) -> ``tracker_memory_attention``
  -> ``tracker_mask_head`` -> ``tracker_memory_encoder``; a mask prompt becomes the output as upstream's
  ``_use_mask_as_output`` makes it (its pointer from the mask head graph);
* ``_encode_new_memory``: ``tracker_memory_encoder`` (re-encoding after the predictor's consolidation).

Frame features: the predictor's feature cache must hold the tracker neck's **raw** levels (the video
vision graph's ``tracker_fpn0..2``): the mask head graph applies the decoder's ``conv_s0``/``conv_s1``
itself, where upstream's video model applies them before caching.

Clicks that refine an object on a frame it already has a mask on feed its earlier logits back to the mask
head (``prev_mask_logits``), as upstream's ``prev_sam_mask_logits``. Not in the graphs, refused with a
message rather than approximated: encoding a memory straight from a mask prompt (upstream's predictor
never asks for it: it encodes after consolidation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..runtime.arrays import to_float32
from ..specs import LOW_RES, MEMORY_MASK_SIDE, RESOLUTION, TRACKER_MEMORY_SLOTS, get_spec
from .memory import select_memories

#: Objects per graph run (the profiles' O maximum); more objects run in chunks (every per-object
#: computation is independent across objects).
MAX_OBJECTS = 16

#: Upstream settings the graphs and this step reproduce; any other value is refused by name.
SUPPORTED_SETTINGS: dict[str, Any] = {
    "num_maskmem": TRACKER_MEMORY_SLOTS,
    "training": False,
    "non_overlap_masks_for_mem_enc": False,
    "trim_past_non_cond_mem_for_eval": False,
    "offload_output_to_cpu_for_eval": False,
    "image_size": RESOLUTION,
    "input_mask_size": MEMORY_MASK_SIDE,
    "low_res_mask_size": LOW_RES,
}


def check_supported(tracker: Any) -> None:
    """Raise :class:`Sam3TrtError` naming any tracker setting the graph step does not reproduce."""
    bad = [
        f"{name}={getattr(tracker, name, None)!r} (supported: {value!r})"
        for name, value in SUPPORTED_SETTINGS.items()
        if getattr(tracker, name, None) != value
    ]
    for name in ("cond_frame_spatial_embedding", "cond_frame_obj_ptr_embedding"):
        if getattr(tracker, name, None) is not None:
            bad.append(f"{name} is set (the memory-attention graph has no such input)")
    if bad:
        raise Sam3TrtError("this tracker's settings differ from the exported graphs': " + "; ".join(bad))


def _level(flat: Any, size: tuple[int, int]) -> np.ndarray:
    """One object's ``[1, C, H, W]`` map from upstream's ``(HW) x B x C`` layout (objects share the frame)."""
    return np.ascontiguousarray(to_float32(flat[:, :1].permute(1, 2, 0).reshape(1, -1, *size)))


def neck_positions(levels: Sequence[Any]) -> list[Any]:
    """The tracker neck's sine position encodings for levels of these sizes (the same on every frame).

    About 0.35 s on the CPU for the three full-resolution levels: compute once per clip, not per frame.
    """
    from ..export.tracker_model import grid_pos, model_builder_position_encoding

    encoding = model_builder_position_encoding()
    return [grid_pos(encoding, x.shape[1], x.shape[-1]) for x in levels]


def feature_cache(
    levels: Mapping[int, Sequence[Any]], upstream_convs: Any = None, positions: Sequence[Any] | None = None
) -> dict[int, tuple[Any, dict]]:
    """The tracking predictor's ``cached_features`` from each frame's three neck levels.

    Args:
        levels: Frame index -> ``[tracker_fpn0, tracker_fpn1, tracker_fpn2]`` (torch ``[1, C, H, W]``), as
            the video vision graph returns them.
        upstream_convs: ``None`` for the graphs (raw levels); an upstream tracker to apply its decoder's
            ``conv_s0``/``conv_s1`` as upstream's video model does before caching (the eager reference).
        positions: :func:`neck_positions` of these levels' sizes, when the caller keeps them across calls
            (computed here otherwise). Every frame shares them, as upstream's frames share theirs.

    Returns:
        ``{frame: (image placeholder, {"tracker_backbone_out": {...}})}`` with the neck's sine position
        encodings (the predictor takes the feature sizes from them).
    """
    import torch

    cache: dict[int, tuple[Any, dict]] = {}
    pos: list[Any] | None = list(positions) if positions is not None else None
    for frame, (fpn0, fpn1, fpn2) in levels.items():
        if pos is None:
            pos = neck_positions((fpn0, fpn1, fpn2))
        if upstream_convs is not None:
            with torch.no_grad():
                decoder = upstream_convs.sam_mask_decoder
                fpn0, fpn1 = decoder.conv_s0(fpn0), decoder.conv_s1(fpn1)
        # the image is only expanded per object by the predictor (the memory encoder reads features)
        backbone = {"backbone_fpn": [fpn0, fpn1, fpn2], "vision_pos_enc": pos}
        cache[frame] = (torch.zeros(1, 3, 1, 1), {"tracker_backbone_out": backbone})
    return cache


def install_steps(tracker: Any, track_step: Any, encode_new_memory: Any) -> contextlib.ExitStack:
    """Put ``track_step`` and ``encode_new_memory`` in place of the tracker's two neural methods.

    Args:
        tracker: Upstream ``Sam3TrackerPredictor`` (patched on the instance, not the class).
        track_step: Replaces ``track_step``.
        encode_new_memory: Replaces ``_encode_new_memory``.

    Returns:
        The stack whose ``close()`` restores the tracker's own methods.
    """
    from ..export.patches import swap_attr

    stack = contextlib.ExitStack()
    stack.enter_context(swap_attr(tracker, "track_step", track_step))
    stack.enter_context(swap_attr(tracker, "_encode_new_memory", encode_new_memory))
    return stack


@contextlib.contextmanager
def upstream_on_cpu() -> Iterator[None]:
    """Upstream's tracking code on a machine without CUDA (its ``.cuda()`` calls become no-ops)."""
    import torch

    from ..export.patches import cpu_compat, swap_attr
    from ..export.tracker_model import identity_cuda

    with cpu_compat("cpu"), swap_attr(torch.Tensor, "cuda", identity_cuda):
        yield


class GraphTracker:
    """Runs ``tracker``'s neural steps on graphs while installed.

    Args:
        tracker: Upstream ``Sam3TrackerPredictor`` (settings and host logic; the replaced steps use none
            of its weights).
        backend: A :class:`~sam3_trt.runtime.backends.Backend` that runs the tracker graphs, e.g.
            ``OnnxRuntimeBackend`` over an export made with ``--video``.

    Use as a context manager (``with GraphTracker(tracker, backend): ...``) around upstream calls such as
    ``init_state``, ``add_new_points_or_box``, ``add_new_mask`` and ``propagate_in_video``.
    """

    def __init__(self, tracker: Any, backend: Any) -> None:
        check_supported(tracker)
        self.tracker = tracker
        self.backend = backend
        self._stack: contextlib.ExitStack | None = None
        self._memory_pos: Any = None

    # -- installation -------------------------------------------------------------------------------
    def __enter__(self) -> GraphTracker:
        if self._stack is not None:
            raise Sam3TrtError("this GraphTracker is already installed")
        self._stack = install_steps(self.tracker, self.track_step, self.encode_new_memory)
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    # -- graph runs ---------------------------------------------------------------------------------
    def _run(self, graph: str, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run ``graph``, in chunks of at most :data:`MAX_OBJECTS` objects, concatenating per-object outputs."""
        spec = get_spec(graph)
        per_object = {t.name for t in spec.inputs if t.shape and t.shape[0] == "O"}
        objects = next(len(feeds[n]) for n in spec.input_names if n in per_object)
        if objects <= MAX_OBJECTS:
            return self.backend.run(graph, feeds)
        parts = []
        for start in range(0, objects, MAX_OBJECTS):
            chunk = {n: (v[start : start + MAX_OBJECTS] if n in per_object else v) for n, v in feeds.items()}
            parts.append(self.backend.run(graph, chunk))
        return {n: np.concatenate([np.asarray(p[n]) for p in parts], axis=0) for n in spec.output_names}

    def _memory_pos_enc(self, objects: int) -> list[Any]:
        """Upstream's ``maskmem_pos_enc`` (a constant the predictor stores; the graphs bake it in)."""
        if self._memory_pos is None:
            from ..export.tracker_model import FEAT_SIDE, grid_pos

            t = self.tracker
            self._memory_pos = grid_pos(t.maskmem_backbone.position_encoding, t.mem_dim, FEAT_SIDE)
        return [self._memory_pos.expand(objects, -1, -1, -1)]

    def _mask_head(
        self,
        embed: np.ndarray,
        no_memory: bool,
        fpn0: np.ndarray,
        fpn1: np.ndarray,
        point_inputs: dict | None,
        mask_prompt: np.ndarray | None,
        multimask: bool,
        prev_logits: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        objects = embed.shape[0]
        if point_inputs is not None:
            coords = to_float32(point_inputs["point_coords"])
            labels = point_inputs["point_labels"].cpu().numpy().astype(np.int32)
        else:  # upstream pads a prompt-less call with one point labelled -1
            coords = np.zeros((objects, 1, 2), np.float32)
            labels = -np.ones((objects, 1), np.int32)
        use_mask = mask_prompt is not None
        if mask_prompt is None:
            mask_prompt = np.zeros((objects, 1, MEMORY_MASK_SIDE, MEMORY_MASK_SIDE), np.float32)
        use_prev = prev_logits is not None
        if prev_logits is None:
            prev_logits = np.zeros((objects, 1, LOW_RES, LOW_RES), np.float32)
        return self._run(
            "tracker_mask_head",
            {
                "image_embed": embed,
                "no_memory": np.full((objects,), no_memory),
                "tracker_fpn0": fpn0,
                "tracker_fpn1": fpn1,
                "point_coords": np.ascontiguousarray(coords),
                "point_labels": np.ascontiguousarray(labels),
                "mask_prompt": mask_prompt,
                "use_mask_prompt": np.full((objects,), use_mask),
                "prev_mask_logits": np.ascontiguousarray(prev_logits, dtype=np.float32),
                "use_prev_mask": np.full((objects,), use_prev),
                "multimask": np.array([multimask]),
            },
        )

    def _encode(self, pix: np.ndarray, masks: np.ndarray, scores: np.ndarray, binarize: bool) -> np.ndarray:
        return self._run(
            "tracker_memory_encoder",
            {
                "pix_feat": pix,
                "masks": np.ascontiguousarray(masks, dtype=np.float32),
                "object_score_logits": np.ascontiguousarray(scores, dtype=np.float32),
                "binarize": np.array([binarize]),
                "video_update": np.array([False]),
            },
        )["maskmem_features"]

    # -- upstream's two methods ---------------------------------------------------------------------
    def track_step(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: list[Any],
        current_vision_pos_embeds: list[Any],
        feat_sizes: list[tuple[int, int]],
        image: Any,
        point_inputs: dict | None,
        mask_inputs: Any,
        output_dict: dict,
        num_frames: int,
        track_in_reverse: bool = False,
        run_mem_encoder: bool = True,
        prev_sam_mask_logits: Any = None,
        use_prev_mem_frame: bool = True,
        **training_only: Any,
    ) -> dict[str, Any]:
        """Upstream's ``track_step`` on the graphs: same arguments and result keys, except no
        ``pred_masks_high_res`` after a mask head run (the predictor never reads it).

        Args:
            frame_idx: Frame being tracked.
            is_init_cond_frame: The objects' first prompted frame (no memory yet).
            current_vision_feats: The three neck levels, ``(HW) x objects x C`` (raw, see the module doc).
            current_vision_pos_embeds: Their position encodings (baked into the graphs; unused).
            feat_sizes: The levels' sides.
            image: Unused (the memory encoder takes the features only, as upstream's does).
            point_inputs: ``{"point_coords", "point_labels"}`` or ``None``.
            mask_inputs: A ``[objects, 1, 1152, 1152]`` mask prompt or ``None``.
            output_dict: The objects' earlier outputs (prompted and tracked frames).
            num_frames: Frames in the clip.
            track_in_reverse: Tracking backwards.
            run_mem_encoder: Encode this frame's mask into a memory.
            prev_sam_mask_logits: The object's earlier mask logits on this frame (clamped by upstream's
                predictor), given with refining clicks; resized to 288 as upstream's ``_forward_sam_heads``
                does when another size. Ignored with a mask prompt, as upstream ignores it.
            use_prev_mem_frame: ``False``: attend to no memory (as a first frame).
            training_only: Training-time arguments some upstream callers pass (``gt_masks``, ...): unused.
        """
        import torch
        import torch.nn.functional as F

        t = self.tracker
        if prev_sam_mask_logits is not None and mask_inputs is None and point_inputs is None:
            # upstream asserts it: an object's earlier logits come back with new clicks
            raise Sam3TrtError(f"frame {frame_idx}: earlier mask logits are fed back with clicks only")
        objects = current_vision_feats[-1].shape[1]
        pix = _level(current_vision_feats[-1], feat_sizes[-1])
        fpn0 = _level(current_vision_feats[0], feat_sizes[0])
        fpn1 = _level(current_vision_feats[1], feat_sizes[1])

        def pix_all() -> np.ndarray:
            """The frame's features once per object (the mask head's input when no memory attention ran)."""
            return np.ascontiguousarray(np.broadcast_to(pix, (objects, *pix.shape[1:])))

        current_out: dict[str, Any] = {"point_inputs": point_inputs, "mask_inputs": mask_inputs}

        if mask_inputs is not None:
            # upstream's _use_mask_as_output: the mask itself (+-10 logits) is the output; the pointer comes
            # from the mask head run on it
            mask = mask_inputs.float()
            if mask.shape[-1] != MEMORY_MASK_SIDE:
                if bool((mask != 0).any()):
                    raise Sam3TrtError(
                        f"frame {frame_idx}: mask prompts are {MEMORY_MASK_SIDE}x{MEMORY_MASK_SIDE} in the graphs "
                        f"(upstream's input_mask_size), got {tuple(mask.shape[-2:])}"
                    )
                # an empty mask at another size (upstream's empty-mask pointer) is the same empty mask here
                mask = mask.new_zeros(mask.shape[0], 1, MEMORY_MASK_SIDE, MEMORY_MASK_SIDE)
            if run_mem_encoder:
                raise Sam3TrtError(
                    f"frame {frame_idx}: encoding a memory straight from a mask prompt is not in the exported "
                    "graphs (upstream's predictor encodes it after consolidation)"
                )
            heads = self._mask_head(pix_all(), False, fpn0, fpn1, None, to_float32(mask), False)
            high_res = mask_inputs.float() * 20.0 - 10.0
            side = high_res.shape[-1] // t.backbone_stride * 4
            low_res = F.interpolate(high_res, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
            appearing = (mask_inputs.flatten(1).float() > 0).any(dim=1, keepdim=True).float()
            current_out["pred_masks"] = low_res
            current_out["pred_masks_high_res"] = high_res
            current_out["obj_ptr"] = torch.from_numpy(heads["obj_ptr"])
            scores = 20.0 * appearing - 10.0
            ious = torch.ones(objects, 1)
        else:
            if is_init_cond_frame or not use_prev_mem_frame:
                embed, no_memory = pix_all(), True  # the graph adds upstream's no-memory embedding
            else:
                memory = select_memories(t, frame_idx, output_dict, num_frames, track_in_reverse)
                embed = self._run("tracker_memory_attention", {"pix_feat": pix, **memory.feeds()})["pix_feat_with_mem"]
                no_memory = False
            multimask = t._use_multimask(is_init_cond_frame, point_inputs)
            prev = None
            if prev_sam_mask_logits is not None:
                prev = prev_sam_mask_logits.float()
                if prev.shape[-2:] != (LOW_RES, LOW_RES):
                    prev = F.interpolate(
                        prev, size=(LOW_RES, LOW_RES), mode="bilinear", align_corners=False, antialias=True
                    )
                prev = to_float32(prev)
            heads = self._mask_head(embed, no_memory, fpn0, fpn1, point_inputs, None, multimask, prev)
            low_res = torch.from_numpy(heads["low_res_masks"])
            # no pred_masks_high_res (upstream's 1008 upsample): nothing in the predictor reads it, and the
            # memory encoder graph upsamples the 288 logits itself
            current_out["pred_masks"] = low_res
            current_out["obj_ptr"] = torch.from_numpy(heads["obj_ptr"])
            scores = torch.from_numpy(heads["object_score_logits"])
            ious = torch.from_numpy(heads["iou"])

        current_out["object_score_logits"] = scores
        if t.use_memory_selection:
            iou_score = ious.max(-1)[0]
            current_out["iou_score"] = iou_score
            current_out["eff_iou_score"] = t.cal_mem_score(scores, iou_score)
        if run_mem_encoder and t.num_maskmem > 0:
            features = self._encode(pix, low_res.numpy(), scores.numpy(), point_inputs is not None)
            current_out["maskmem_features"] = torch.from_numpy(features)
            current_out["maskmem_pos_enc"] = self._memory_pos_enc(objects)
        else:
            current_out["maskmem_features"] = None
            current_out["maskmem_pos_enc"] = None
        return current_out

    def encode_new_memory(
        self,
        image: Any,
        current_vision_feats: list[Any],
        feat_sizes: list[tuple[int, int]],
        pred_masks_high_res: Any,
        object_score_logits: Any,
        is_mask_from_pts: bool,
        output_dict: dict | None = None,
        is_init_cond_frame: bool = False,
    ) -> tuple[Any, list[Any]]:
        """Upstream's ``_encode_new_memory`` on the memory encoder graph (masks up to 1008x1008).

        Args:
            image: Unused.
            current_vision_feats: The neck levels (the top one is encoded).
            feat_sizes: Their sides.
            pred_masks_high_res: ``[objects, 1, S, S]`` mask logits, S <= 1008.
            object_score_logits: ``[objects, 1]``.
            is_mask_from_pts: Binarize the mask (it came from clicks).
            output_dict: Unused (as upstream).
            is_init_cond_frame: Unused (as upstream).
        """
        import torch

        side = pred_masks_high_res.shape[-1]
        if side > RESOLUTION:
            raise Sam3TrtError(
                f"memory encoding takes mask logits up to {RESOLUTION}x{RESOLUTION} after a tracker step, got {side}"
            )
        pix = _level(current_vision_feats[-1], feat_sizes[-1])
        masks = to_float32(pred_masks_high_res)
        features = self._encode(pix, masks, to_float32(object_score_logits), bool(is_mask_from_pts))
        return torch.from_numpy(features), self._memory_pos_enc(masks.shape[0])

    def update_features(self, states: list[Any], frame_idx: int, low_res_masks: Any) -> np.ndarray:
        """The memory encoder graph's ``video_update`` run for :meth:`update_memories` (nothing stored).

        Args:
            states: Tracker states holding objects, in order (their first state reads the frame's features).
            frame_idx: The frame.
            low_res_masks: ``[objects, 288, 288]`` mask logits of all objects of ``states``.

        Returns:
            ``[objects, 64, 72, 72]`` float32 memories.
        """
        objects = int(low_res_masks.shape[0])
        if objects > MAX_OBJECTS:
            raise Sam3TrtError(
                f"frame {frame_idx}: {objects} tracked objects; the memory update suppresses overlaps across all "
                f"objects in one graph run, whose profile allows up to {MAX_OBJECTS}"
            )
        _, _, feats, _, sizes = self.tracker._get_image_feature(states[0], frame_idx, 1)
        pix = _level(feats[-1], sizes[-1])
        masks = to_float32(low_res_masks)[:, None]
        return self.backend.run(
            "tracker_memory_encoder",
            {
                "pix_feat": pix,
                "masks": np.ascontiguousarray(masks),
                "object_score_logits": np.zeros((objects, 1), np.float32),  # video_update scores by area
                "binarize": np.array([False]),
                "video_update": np.array([True]),
            },
        )["maskmem_features"]

    def update_memories(
        self,
        tracker_inference_states: list[Any],
        frame_idx: int,
        tracker_metadata: dict[str, Any],
        low_res_masks: Any,
    ) -> None:
        """Upstream's video-model ``_tracker_update_memories`` on the memory encoder graph (``video_update``).

        Re-encodes frame ``frame_idx``'s memories of every object from the final ``[objects, 288, 288]``
        masks: resize to 1152, suppress masks that shrink under the non-overlap constraint (across *all*
        objects, so they run in one graph call), score objects by mask area; then stores each tracker
        state's slice as upstream does.

        Args:
            tracker_inference_states: The video model's tracker states (objects in order).
            frame_idx: The frame.
            tracker_metadata: Unused on one device (upstream reads its per-GPU object counts).
            low_res_masks: ``[objects, 288, 288]`` mask logits.
        """
        import torch

        states = [s for s in tracker_inference_states if len(s["obj_ids"])]
        if not states:
            return
        features = self.update_features(states, frame_idx, low_res_masks)
        start = 0
        for state in states:
            count = len(state["obj_ids"])
            local = torch.from_numpy(features[start : start + count]).to(torch.bfloat16)  # upstream stores bf16
            pos = self._memory_pos_enc(count)
            output_dict = state["output_dict"]
            for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
                if frame_idx not in output_dict[key]:
                    continue
                output_dict[key][frame_idx]["maskmem_features"] = local
                output_dict[key][frame_idx]["maskmem_pos_enc"] = list(pos)
                self.tracker._add_output_per_object(
                    inference_state=state, frame_idx=frame_idx, current_out=output_dict[key][frame_idx], storage_key=key
                )
            start += count
