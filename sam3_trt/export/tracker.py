"""SAM3's video tracker as three graphs (memory attention, mask head, memory encoder), and the video vision graph.

The tracker (``sam3.model.sam3_tracking_predictor.Sam3TrackerPredictor``, built by upstream's
``build_tracker``) conditions each frame's features on memories of earlier frames, predicts each object's
mask with a SAM-style head and encodes the result into a new memory. The neural parts run as graphs
(:data:`sam3_trt.specs.VIDEO_SPECS`, with the vision graph that also returns the tracker's neck levels);
the choices between them (which memories, which objects, when
to re-condition) are host control flow and stay out of the graphs.

Graph boundaries follow upstream's own methods, so each graph is checked against the method it
replaces, called as upstream calls it:

* ``tracker_memory_attention`` = ``_prepare_memory_conditioned_features`` on a non-initial frame
  (memories + object pointers -> memory-conditioned features).
* ``tracker_mask_head`` = ``_forward_sam_heads`` (points and/or a mask prompt -> masks, IoU, object
  pointer, object score), with upstream's multimask choice made in the graph from a flag input; for a
  mask prompt (1152, as ``add_new_mask`` gives it) the pointer is ``_use_mask_as_output``'s.
* ``tracker_memory_encoder`` = ``_encode_new_memory`` (features + predicted mask -> spatial memory).

Constant inputs upstream recomputes per call (the sine position encodings of the 72x72 grid) are baked
into the graphs. Two export-only changes: rotary position encoding on its real formulation
(``use_rope_real``, upstream's own alternative: the complex one does not export), and the memory
encoder's bilinear upsamplings (mask logits to 1008 or 1152, and the 1008 -> 1152 resize upstream's
downsampler does with ``antialias``, which TensorRT's Resize lacks and which changes nothing for an
upsample) written in the wrapper as :func:`~.resize.bilinear_resize` gathers, so the downsampler
receives 1152 masks and resizes nothing: ONNX ``Resize`` lands up to 2e-3 away from torch in ONNX
Runtime on these steep logits, and the memory encoder's LayerNorms amplify it to 6e-2.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import Sam3TrtError
from ..specs import LOW_RES, MEMORY_MASK_SIDE, RESOLUTION
from .patches import cpu_compat, swap_attr
from .resize import bilinear_resize

#: Tiny tracker: the same classes, one memory-attention layer, narrower feed-forward, one fuser block.
TINY_TRACKER_OVERRIDES: dict[str, dict[str, Any]] = {
    "TransformerEncoderCrossAttention": {"num_layers": 1},
    "TransformerDecoderLayerv2": {"dim_feedforward": 256},
    "SimpleFuser": {"num_layers": 1},
}

#: Side of the tracker's top feature level (1008 / 14; its low-resolution masks are 4x that).
FEAT_SIDE = LOW_RES // 4


@contextlib.contextmanager
def _tracker_overrides(variant: str) -> Iterator[None]:
    from .model import _forcing, import_sam3_builder

    model_builder = import_sam3_builder()
    with contextlib.ExitStack() as stack:
        if variant == "tiny":
            for name, overrides in TINY_TRACKER_OVERRIDES.items():
                cls = getattr(model_builder, name)
                stack.enter_context(swap_attr(model_builder, name, _forcing(cls, overrides)))
        yield


def build_tracker(variant: str = "full", seed: int = 0) -> Any:
    """Build sam3's tracker (eval mode, CPU) with deterministic random weights.

    Args:
        variant: ``"full"`` (upstream's tracker, 11.7 M parameters) or ``"tiny"`` (same classes, reduced).
        seed: Seed for every parameter.

    Returns:
        A ``Sam3TrackerPredictor`` whose rotary attention uses its real formulation.
    """
    from .model import VARIANTS, import_sam3_builder

    if variant not in VARIANTS:
        raise Sam3TrtError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
    import torch

    model_builder = import_sam3_builder()
    torch.manual_seed(seed)
    with cpu_compat("cpu"), _tracker_overrides(variant):
        tracker = model_builder.build_tracker(apply_temporal_disambiguation=True)
    use_real_rope(tracker)
    tracker = tracker.eval()
    bad = [n for n, p in tracker.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise RuntimeError(f"non-finite tracker parameters after init: {bad}")
    return tracker


def use_real_rope(tracker: Any) -> None:
    """Switch every rotary attention to upstream's real-valued formulation (bit-identical in eager).

    Torch's ONNX exporter has no decomposition for complex tensors; ``use_rope_real`` is upstream's own
    path for that, selected at construction in upstream's builder. Setting it after construction keeps
    the weights and the frequencies unchanged.
    """
    from sam3.sam.transformer import RoPEAttention

    for module in tracker.modules():
        if isinstance(module, RoPEAttention):
            module.use_rope_real = True
            module.freqs_cis_real = module.freqs_cis.real
            module.freqs_cis_imag = module.freqs_cis.imag


def model_builder_position_encoding() -> Any:
    """The sine position encoding upstream's vision neck uses (tracker levels included)."""
    from .model import import_sam3_builder

    return import_sam3_builder()._create_position_encoding(precompute_resolution=None)


def _grid_pos(encoding: Any, channels: int, side: int) -> Any:
    import torch

    with cpu_compat("cpu"):
        return encoding(torch.zeros(1, channels, side, side)).detach().clone()


def suppress_shrinking_masks(masks: Any, shrink_threshold: float = 0.3) -> Any:
    """Upstream's ``_suppress_object_pw_area_shrinkage`` over the objects of ``masks [O,1,H,W]``.

    Each pixel is kept by the object with the highest logit (the others clamped to <= -10); an object
    whose area shrinks below ``shrink_threshold`` of its own area that way is clamped to <= -10 everywhere.
    Written without upstream's ``if batch_size == 1`` shortcut (it would fix the object count under export;
    with one object the argmax keeps every pixel, so the result is the same).
    """
    import torch

    best = torch.argmax(masks, dim=0, keepdim=True)
    keep = best == torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    separated = torch.where(keep, masks, torch.clamp(masks, max=-10.0))
    area_before = torch.clamp((masks > 0).sum(dim=(-1, -2)), min=1.0)
    area_after = (separated > 0).sum(dim=(-1, -2))
    kept = (area_after / area_before) >= shrink_threshold
    return torch.where(kept[..., None, None], masks, torch.clamp(masks, max=-10.0))


def make_wrappers(tracker: Any) -> dict[str, Any]:
    """The three graph wrappers (``torch.nn.Module`` each) over ``tracker``, keyed by graph name."""
    import torch
    from sam3.model.sam3_tracker_base import NO_OBJ_SCORE
    from sam3.model.sam3_tracker_utils import get_1d_sine_pe

    vision_pos = _grid_pos(model_builder_position_encoding(), tracker.hidden_dim, FEAT_SIDE)
    memory_pos = _grid_pos(tracker.maskmem_backbone.position_encoding, tracker.mem_dim, FEAT_SIDE)

    class MemoryAttention(torch.nn.Module):
        """Frame features conditioned on M memory frames and Q object pointers, for O objects."""

        def __init__(self) -> None:
            super().__init__()
            self.tracker = tracker
            self.register_buffer("vision_pos", vision_pos, persistent=False)
            self.register_buffer("memory_pos", memory_pos, persistent=False)

        def forward(
            self,
            pix_feat: torch.Tensor,
            memory: torch.Tensor,
            memory_tpos: torch.Tensor,
            obj_ptrs: torch.Tensor,
            obj_ptr_tpos: torch.Tensor,
        ) -> torch.Tensor:
            t = self.tracker
            objects, frames, mem_dim = memory.shape[0], memory.shape[1], memory.shape[2]
            hw = FEAT_SIDE * FEAT_SIDE
            channels = t.hidden_dim
            src = pix_feat.flatten(2).permute(2, 0, 1).expand(hw, objects, channels)
            src_pos = self.vision_pos.flatten(2).permute(2, 0, 1).expand(hw, objects, channels)
            # [O, M, C, H, W] -> frames one after another, each (HW) x O x C, as upstream concatenates them
            mem = memory.permute(1, 3, 4, 0, 2).reshape(frames * hw, objects, mem_dim)
            tpos = t.maskmem_tpos_enc[t.num_maskmem - 1 - memory_tpos]  # [M, 1, 1, C]
            mem_pos = self.memory_pos.flatten(2).permute(2, 0, 1)[None] + tpos  # [M, HW, 1, C]
            mem_pos = mem_pos.reshape(frames * hw, 1, mem_dim).expand(frames * hw, objects, mem_dim)
            # pointers: Q x O x 256 split into 256/C tokens of width C, as upstream does for mem_dim < C
            split = channels // mem_dim
            ptrs = obj_ptrs.permute(1, 0, 2).reshape(-1, objects, split, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            ptr_pos = t.obj_ptr_tpos_proj(get_1d_sine_pe(obj_ptr_tpos, dim=channels))
            ptr_pos = ptr_pos.unsqueeze(1).expand(-1, objects, -1).repeat_interleave(split, dim=0)
            out = t.transformer.encoder(
                src=[src],
                src_key_padding_mask=[None],
                src_pos=[src_pos],
                prompt=torch.cat([mem, ptrs], dim=0),
                prompt_pos=torch.cat([mem_pos, ptr_pos], dim=0),
                prompt_key_padding_mask=None,
                feat_sizes=[(FEAT_SIDE, FEAT_SIDE)],
                num_obj_ptr_tokens=ptrs.shape[0],
            )
            return out["memory"].permute(1, 2, 0).reshape(objects, channels, FEAT_SIDE, FEAT_SIDE)

    class MaskHead(torch.nn.Module):
        """SAM prompt encoder + mask decoder for O objects, upstream's multimask choice in the graph."""

        def __init__(self) -> None:
            super().__init__()
            self.tracker = tracker

        def forward(
            self,
            image_embed: torch.Tensor,
            no_memory: torch.Tensor,
            tracker_fpn0: torch.Tensor,
            tracker_fpn1: torch.Tensor,
            point_coords: torch.Tensor,
            point_labels: torch.Tensor,
            mask_prompt: torch.Tensor,
            use_mask_prompt: torch.Tensor,
            prev_mask_logits: torch.Tensor,
            use_prev_mask: torch.Tensor,
            multimask: torch.Tensor,
        ) -> tuple[torch.Tensor, ...]:
            t = self.tracker
            decoder, encoder = t.sam_mask_decoder, t.sam_prompt_encoder
            objects = image_embed.shape[0]
            # first frame of an object: upstream adds the learned "no memory" embedding instead of attention
            image_embed = image_embed + no_memory.float()[:, None, None, None] * t.no_mem_embed.reshape(1, -1, 1, 1)
            high_res = [decoder.conv_s0(tracker_fpn0), decoder.conv_s1(tracker_fpn1)]
            sparse = encoder._embed_points(point_coords, point_labels, pad=True)
            # mask prompts (upstream _use_mask_as_output): the 4x4 stride-4 conv takes the 1152 mask to 288,
            # the prompt encoder's size, so upstream resizes nothing after it. Refining clicks (upstream
            # prev_sam_mask_logits) give the prompt encoder the object's earlier 288 logits as they are.
            prompt = torch.where(use_prev_mask[:, None, None, None], prev_mask_logits, t.mask_downsample(mask_prompt))
            no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(objects, -1, FEAT_SIDE, FEAT_SIDE)
            with_mask = (use_mask_prompt | use_prev_mask)[:, None, None, None]
            dense = torch.where(with_mask, encoder.mask_downscaling(prompt), no_mask)
            masks, iou_pred, tokens, object_score_logits = decoder.predict_masks(
                image_embeddings=image_embed,
                image_pe=encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                repeat_image=False,
                high_res_features=high_res,
            )
            batch = torch.arange(objects, device=masks.device)
            # multimask: best of tokens 1..3 by predicted IoU, its token for the pointer
            best = torch.argmax(iou_pred[:, 1:], dim=-1)
            multi_mask = masks[:, 1:][batch, best].unsqueeze(1)
            multi_iou = iou_pred[:, 1:][batch, best].unsqueeze(1)
            multi_token = tokens[:, 1:][batch, best]
            # single mask: token 0, unless unstable (then the best multimask), pointer from token 0
            single_mask, single_iou = decoder._dynamic_multimask_via_stability(masks, iou_pred)
            iou = torch.where(multimask, multi_iou, single_iou)
            token = torch.where(multimask, multi_token, tokens[:, 0])
            # hidden object: masks become "no object" logits and the pointer the no-object pointer
            appearing = object_score_logits > 0
            low_res_masks = torch.where(
                appearing[:, :, None, None], torch.where(multimask, multi_mask, single_mask), NO_OBJ_SCORE
            )
            multimasks = torch.where(appearing[:, :, None, None], masks[:, 1:], NO_OBJ_SCORE)
            appear = appearing.float()
            obj_ptr = appear * t.obj_ptr_proj(token) + (1 - appear) * t.no_obj_ptr
            # an empty mask prompt is an absent object whatever the head scores (upstream _use_mask_as_output)
            empty = use_mask_prompt & ~(mask_prompt > 0).flatten(1).any(dim=1)
            obj_ptr = torch.where(empty[:, None], t.no_obj_ptr, obj_ptr)
            return low_res_masks, iou, multimasks, iou_pred, obj_ptr, object_score_logits

    class MemoryEncoder(torch.nn.Module):
        """Spatial memory of O objects from one frame's features and their mask logits."""

        def __init__(self) -> None:
            super().__init__()
            self.tracker = tracker

        def forward(
            self,
            pix_feat: torch.Tensor,
            masks: torch.Tensor,
            object_score_logits: torch.Tensor,
            binarize: torch.Tensor,
            video_update: torch.Tensor,
        ) -> torch.Tensor:
            t = self.tracker
            scale, bias = t.sigmoid_scale_for_mem_enc, t.sigmoid_bias_for_mem_enc
            side = (MEMORY_MASK_SIDE, MEMORY_MASK_SIDE)
            # after a tracker step upstream encodes the 1008x1008 logits (upsampled from 288 by
            # _forward_sam_heads; the tracking predictor's consolidated 1008 masks resize by an identity), and
            # its downsampler resizes the sigmoid-scaled mask to 1152. (A 1152 mask here would be resized down
            # and up, where upstream resizes nothing: the runtime never sends one, see sam3_trt.video.)
            stepped = bilinear_resize(masks, (RESOLUTION, RESOLUTION))
            stepped = torch.where(binarize, (stepped > 0).float(), torch.sigmoid(stepped)) * scale + bias
            stepped = bilinear_resize(stepped, side)
            # the video model's update resizes the logits straight to 1152 and suppresses masks that shrink
            # under pixel-wise non-overlap (_suppress_object_pw_area_shrinkage), scoring objects by mask area
            updated = suppress_shrinking_masks(bilinear_resize(masks, side))
            area_score = torch.where((updated > 0).flatten(1).any(dim=1, keepdim=True), 10.0, -10.0)
            mask_for_mem = torch.where(video_update, torch.sigmoid(updated) * scale + bias, stepped)
            scores = torch.where(video_update, area_score, object_score_logits)
            out = t.maskmem_backbone(pix_feat, mask_for_mem, skip_mask_sigmoid=True)  # 1152: no resize inside
            features = out["vision_features"]
            absent = 1 - (scores > 0).float()
            return features + absent[..., None, None] * t.no_obj_embed_spatial[..., None, None]

    return {
        "tracker_memory_attention": MemoryAttention().eval(),
        "tracker_mask_head": MaskHead().eval(),
        "tracker_memory_encoder": MemoryEncoder().eval(),
    }


def memory_scenario(frames: int, pointers: int) -> tuple[int, int]:
    """A clip history for which upstream attends to ``frames`` memory frames and ``pointers`` pointers.

    Frames ``0..prompted-1`` are prompted (conditioning) frames, the next ``tracked`` frames were tracked,
    and the current frame follows them. Upstream takes every prompted frame (up to 4) and the last 6
    tracked frames as memories, and pointers from every prompted frame and the last 15 tracked frames
    (with a clip of at least 16 frames).

    Returns:
        ``(prompted, tracked)``.
    """
    for prompted in range(1, 5):
        for tracked in range(0, 17):
            if prompted + min(6, tracked) == frames and prompted + min(15, tracked) == pointers:
                return prompted, tracked
    raise Sam3TrtError(f"no clip history gives {frames} memory frames and {pointers} object pointers")


def _identity_cuda(self: Any, *args: Any, **kwargs: Any) -> Any:
    return self  # upstream moves offloaded memories back with .cuda(); on a CPU run they are already here


def reference_case(tracker: Any, graph: str, sizes: dict[str, int], case: str = "", seed: int = 0) -> tuple[dict, dict]:
    """Inputs for ``graph`` and what upstream's own method computes from them (numpy).

    Args:
        tracker: From :func:`build_tracker`.
        graph: A tracker graph (:data:`~sam3_trt.specs.TRACKER_GRAPHS`).
        sizes: Dynamic sizes (``O``, ``M``, ``Q``, ``K``, ``S``) of the case.
        case: Mask head: ``"multimask"``, ``"single"`` (an object's first frame), ``"mask_prompt"``, or
            ``"refine"`` / ``"refine_multimask"`` (clicks with the object's earlier logits); memory encoder:
            ``"binarize"``, ``"sigmoid"`` (after a tracker step) or ``"video_update"``.
        seed: Seed of the random features.

    Returns:
        ``(feeds, expected)``, both ``{name: numpy array}`` named as in the spec.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ..specs import TRACKER_GRAPHS, VIDEO_SPECS

    spec = VIDEO_SPECS[graph]
    gen = torch.Generator().manual_seed(seed)
    objects = sizes["O"]
    pix = torch.randn(1, tracker.hidden_dim, FEAT_SIDE, FEAT_SIDE, generator=gen)
    flat = [pix.flatten(2).permute(2, 0, 1).expand(-1, objects, -1)]
    feat_sizes = [(FEAT_SIDE, FEAT_SIDE)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(cpu_compat("cpu"))
        stack.enter_context(swap_attr(torch.Tensor, "cuda", _identity_cuda))
        # the graphs take the memories upstream would select; which ones is host logic, checked elsewhere
        stack.enter_context(swap_attr(tracker, "use_memory_selection", False))
        if graph == "tracker_memory_attention":
            prompted, tracked = memory_scenario(sizes["M"], sizes["Q"])
            frame_idx = prompted + tracked
            num_frames = max(frame_idx + 1, tracker.max_obj_ptrs_in_encoder)
            mem_pos = _grid_pos(tracker.maskmem_backbone.position_encoding, tracker.mem_dim, FEAT_SIDE)
            outs = {
                f: {
                    "maskmem_features": torch.randn(objects, tracker.mem_dim, FEAT_SIDE, FEAT_SIDE, generator=gen),
                    "maskmem_pos_enc": [mem_pos.expand(objects, -1, -1, -1)],
                    "obj_ptr": torch.randn(objects, tracker.hidden_dim, generator=gen),
                }
                for f in range(frame_idx)
            }
            output_dict = {
                "cond_frame_outputs": {f: outs[f] for f in range(prompted)},
                "non_cond_frame_outputs": {f: outs[f] for f in range(prompted, frame_idx)},
            }
            vision_pos = _grid_pos(model_builder_position_encoding(), tracker.hidden_dim, FEAT_SIDE)
            pos = [vision_pos.flatten(2).permute(2, 0, 1).expand(-1, objects, -1)]
            expected = tracker._prepare_memory_conditioned_features(
                frame_idx, False, flat, pos, feat_sizes, output_dict, num_frames
            )
            # upstream's order: prompted frames (slot 0), then the previous frames oldest first (slots 1..6)
            recent = [f for f in range(frame_idx - 6, frame_idx) if f >= prompted]
            mem_frames = list(range(prompted)) + recent
            slots = [0] * prompted + [tracker.num_maskmem - (frame_idx - f) for f in recent]
            window = min(num_frames, tracker.max_obj_ptrs_in_encoder)
            ptr_frames = list(range(prompted)) + [
                f for f in range(frame_idx - 1, frame_idx - window, -1) if f >= prompted
            ]
            ptr_tpos = [(frame_idx - f) / (window - 1) for f in ptr_frames]
            feeds = {
                "pix_feat": pix,
                "memory": torch.stack([outs[f]["maskmem_features"] for f in mem_frames], dim=1),
                "memory_tpos": torch.tensor(slots, dtype=torch.int64),
                "obj_ptrs": torch.stack([outs[f]["obj_ptr"] for f in ptr_frames], dim=1),
                "obj_ptr_tpos": torch.tensor(ptr_tpos, dtype=torch.float32),
            }
            expected = {"pix_feat_with_mem": expected}
        elif graph == "tracker_mask_head":
            feeds = {k: torch.from_numpy(v) for k, v in spec.example_inputs(sizes, seed=seed).items()}
            multimask = case in ("multimask", "refine_multimask")
            no_memory = case == "single"
            use_mask = case == "mask_prompt"
            refine = case.startswith("refine")  # clicks with the object's earlier logits (clamped as upstream)
            feeds["multimask"][:] = multimask
            feeds["no_memory"][:] = no_memory
            feeds["use_mask_prompt"][:] = use_mask
            feeds["use_prev_mask"][:] = refine
            feeds["prev_mask_logits"] = (feeds["prev_mask_logits"] * 16).clamp(-32.0, 32.0)
            if use_mask:  # upstream runs a mask prompt with one padding point
                feeds["point_coords"] = torch.zeros(objects, 1, 2)
                feeds["point_labels"] = -torch.ones(objects, 1, dtype=torch.int32)
                feeds["mask_prompt"][-1] = 0.0  # the last object's mask is empty: the no-object pointer
            embed = feeds["image_embed"] + (tracker.no_mem_embed.reshape(1, -1, 1, 1) if no_memory else 0)
            decoder = tracker.sam_mask_decoder
            high_res = [decoder.conv_s0(feeds["tracker_fpn0"]), decoder.conv_s1(feeds["tracker_fpn1"])]
            out = tracker._forward_sam_heads(
                backbone_features=embed,
                point_inputs=None
                if use_mask
                else {"point_coords": feeds["point_coords"], "point_labels": feeds["point_labels"]},
                mask_inputs=tracker.mask_downsample(feeds["mask_prompt"])
                if use_mask
                else (feeds["prev_mask_logits"] if refine else None),
                high_res_features=high_res,
                multimask_output=multimask,
            )
            multimasks, _, ious, low_res_masks, _, obj_ptr, scores = out
            if use_mask:  # the pointer as upstream's _use_mask_as_output makes it (the rest is the head's)
                obj_ptr = tracker._use_mask_as_output(embed, high_res, feeds["mask_prompt"])[5]
            expected = {"low_res_masks": low_res_masks, "obj_ptr": obj_ptr, "object_score_logits": scores}
            if multimask:
                expected["low_res_multimasks"] = multimasks
                expected["all_ious_multimask"] = ious
            else:
                expected["iou"] = ious
        elif graph == "tracker_memory_encoder":
            side = sizes["S"]
            masks = torch.randn(objects, 1, side, side, generator=gen) * 8
            scores = torch.randn(objects, 1, generator=gen)
            binarize = case == "binarize"
            update = case == "video_update"
            if update:  # upstream's _tracker_update_memories, with its own resize and suppression
                if objects > 1:  # object 1 lies under object 0 everywhere: it loses every pixel, is suppressed
                    masks[1] = masks[0] - 1.0
                high_res = F.interpolate(masks, size=(MEMORY_MASK_SIDE,) * 2, mode="bilinear", align_corners=False)
                high_res = tracker._suppress_object_pw_area_shrinkage(high_res)
                area_scores = torch.where((high_res > 0).any(dim=(-1, -2)), 10.0, -10.0)
                features, _ = tracker._encode_new_memory(None, flat, feat_sizes, high_res, area_scores, False)
            else:  # after track_step: _forward_sam_heads' upsample to 1008, then _encode_new_memory
                high_res = F.interpolate(masks, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
                features, _ = tracker._encode_new_memory(None, flat, feat_sizes, high_res, scores, binarize)
            feeds = {
                "pix_feat": pix,
                "masks": masks,
                "object_score_logits": scores,
                "binarize": torch.tensor([binarize]),
                "video_update": torch.tensor([update]),
            }
            expected = {"maskmem_features": features}
        else:
            raise Sam3TrtError(f"unknown tracker graph {graph!r}; expected one of {TRACKER_GRAPHS}")
    return (
        {k: np.ascontiguousarray(v.numpy()) for k, v in feeds.items()},
        {k: np.ascontiguousarray(v.float().numpy()) for k, v in expected.items()},
    )


#: Parity cases per graph: (label, sizes, case). Profile minimum and maximum of every dynamic axis; the
#: memory attention's largest memory (10 frames, 19 pointers) runs with 2 objects, because ONNX Runtime
#: materialises the 5184 x 51840 attention matrix per object (1 GB each), and 16 objects with 1 frame.
PARITY_CASES: dict[str, tuple[tuple[str, dict[str, int], str], ...]] = {
    "tracker_memory_attention": (
        ("O1_M1_Q1", {"O": 1, "M": 1, "Q": 1}, ""),
        ("O16_M1_Q1", {"O": 16, "M": 1, "Q": 1}, ""),
        ("O2_M7_Q8", {"O": 2, "M": 7, "Q": 8}, ""),
        ("O2_M10_Q19", {"O": 2, "M": 10, "Q": 19}, ""),
    ),
    "tracker_mask_head": (
        ("O1_K1_single_first_frame", {"O": 1, "K": 1}, "single"),
        ("O3_K2_multimask", {"O": 3, "K": 2}, "multimask"),
        ("O2_mask_prompt", {"O": 2, "K": 1}, "mask_prompt"),
        ("O1_K1_refine_multimask", {"O": 1, "K": 1}, "refine_multimask"),
        ("O16_K16_multimask", {"O": 16, "K": 16}, "multimask"),
        ("O16_K16_refine", {"O": 16, "K": 16}, "refine"),
    ),
    "tracker_memory_encoder": (
        ("O1_S288_binarize", {"O": 1, "S": 288}, "binarize"),
        ("O16_S288_sigmoid", {"O": 16, "S": 288}, "sigmoid"),
        ("O2_S1008_sigmoid", {"O": 2, "S": 1008}, "sigmoid"),
        ("O3_S288_video_update", {"O": 3, "S": 288}, "video_update"),
        ("O2_S1152_video_update", {"O": 2, "S": 1152}, "video_update"),
    ),
}


def export_tracker(tracker: Any, out_dir: Any, graphs: Any = None, progress: Any = None) -> list[Any]:
    """Export the tracker graphs into ``out_dir`` (``{name}.onnx`` + ``.onnx.data`` each).

    Args:
        tracker: From :func:`build_tracker`.
        out_dir: Existing folder.
        graphs: Graph names (default: :data:`~sam3_trt.specs.TRACKER_GRAPHS`).
        progress: Called with one line per graph.

    Returns:
        The ``.onnx`` paths written.
    """
    from pathlib import Path

    from ..specs import TRACKER_GRAPHS, VIDEO_SPECS
    from .exporter import export_graph

    wrappers = make_wrappers(tracker)
    paths = []
    for name in graphs or TRACKER_GRAPHS:
        spec = VIDEO_SPECS[name]
        path = Path(out_dir) / spec.onnx_file
        if progress is not None:
            progress(f"export: {name} (torch.onnx dynamo)")
        # none of the image model's export patches apply to the tracker
        export_graph(tracker, spec, path, wrapper=wrappers[name], patches=contextlib.nullcontext())
        paths.append(path)
    return paths


def tracker_parity(tracker: Any, folder: Any, threads: int | None = None, graphs: Any = None) -> Any:
    """Each exported tracker graph (ONNX Runtime) against upstream's method on :data:`PARITY_CASES`.

    Args:
        tracker: The tracker the graphs were exported from.
        folder: Folder holding the ``.onnx`` files.
        threads: ONNX Runtime threads.
        graphs: Graph names (default: all).

    Returns:
        A :class:`~sam3_trt.export.parity.ParityReport` (FP32 column of the tolerance table).
    """
    from pathlib import Path

    from ..compare import check_outputs
    from ..ort import ort_session
    from ..specs import TRACKER_GRAPHS, VIDEO_SPECS
    from ..tolerances import tolerance
    from .parity import ParityCase, ParityReport

    report = ParityReport("fp32")
    for name in graphs or TRACKER_GRAPHS:
        spec = VIDEO_SPECS[name]
        session = ort_session(Path(folder) / spec.onnx_file, threads=threads)
        for label, sizes, case in PARITY_CASES[name]:
            feeds, expected = reference_case(tracker, name, sizes, case)
            got = dict(zip(spec.output_names, session.run(spec.output_names, feeds), strict=True))
            if "all_ious_multimask" in expected:  # upstream returns the three multimask IoUs
                got["all_ious_multimask"] = got["all_ious"][:, 1:]
            tols = {out: tolerance(name, out) for out in expected} | {"": tolerance(name, "")}
            report.cases.append(ParityCase(name, label, check_outputs(expected, got, tols)))
        del session
    return report


def load_tracker(
    variant: str = "full",
    checkpoint: Any = None,
    seed: int = 0,
    allow_missing: bool = False,
) -> tuple[Any, Any]:
    """The tracker with weights from the official ``sam3.pt`` layout (``tracker.*`` keys), or random.

    Args:
        variant: ``"full"`` or ``"tiny"``.
        checkpoint: ``sam3.pt`` (or ``.safetensors``); ``None`` keeps the seeded random weights.
        seed: Seed of the random weights.
        allow_missing: Keep random values for tracker keys the checkpoint lacks instead of failing.

    Returns:
        ``(tracker, WeightsOrigin)``.
    """
    import dataclasses

    from .model import WeightsOrigin, load_checkpoint_into, read_checkpoint

    if checkpoint is not None:
        read_checkpoint(checkpoint, "tracker.")  # a bad file fails before the build
    tracker = build_tracker(variant, seed)
    if checkpoint is None:
        return tracker, WeightsOrigin(kind="random", variant=variant, seed=seed)
    origin = load_checkpoint_into(tracker, checkpoint, allow_missing=allow_missing, prefix="tracker.")
    return tracker, dataclasses.replace(origin, variant=variant)


def video_vision_wrapper(model: Any) -> Any:
    """``pixel_values`` -> the detector's ``fpn0..2`` and the tracker's ``tracker_fpn0..2``, one ViT pass."""
    import torch

    class VideoVisionEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = model.backbone

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.backbone.forward_image(pixel_values)
            return (*out["backbone_fpn"], *out["sam2_backbone_out"]["backbone_fpn"])

    return VideoVisionEncoder().eval()


def check_video_model(model: Any) -> None:
    """Refuse an image model without the tracker's neck levels (built without ``video=True``)."""
    if getattr(model.backbone.vision_backbone, "sam2_convs", None) is None:
        raise Sam3TrtError(
            "the video graphs need the vision neck's tracker levels (sam2_convs): load the model with video=True "
            "(sam3-trt export --video)"
        )


def export_video_vision(model: Any, out_dir: Any) -> Any:
    """Export ``video_vision_encoder`` from the image model (built with ``video=True``); returns its path."""
    from pathlib import Path

    from ..specs import VIDEO_SPECS
    from .exporter import export_graph

    check_video_model(model)
    spec = VIDEO_SPECS["video_vision_encoder"]
    path = Path(out_dir) / spec.onnx_file
    export_graph(model, spec, path, wrapper=video_vision_wrapper(model))
    return path


def video_vision_parity(model: Any, folder: Any, batches: Any = (1,), threads: int | None = None) -> Any:
    """``video_vision_encoder`` (ONNX Runtime) against upstream's ``backbone.forward_image`` per batch size.

    Returns:
        A :class:`~sam3_trt.export.parity.ParityReport` (FP32 column).
    """
    from pathlib import Path

    import numpy as np
    import torch

    from ..compare import check_outputs
    from ..ort import ort_session
    from ..specs import VIDEO_SPECS
    from ..tolerances import tolerance
    from .parity import ParityCase, ParityReport

    spec = VIDEO_SPECS["video_vision_encoder"]
    session = ort_session(Path(folder) / spec.onnx_file, threads=threads)
    report = ParityReport("fp32")
    for batch in batches:
        feeds = spec.example_inputs({"B": batch}, seed=batch)
        with torch.inference_mode(), cpu_compat("cpu"):
            out = model.backbone.forward_image(torch.from_numpy(feeds["pixel_values"]))
        levels = [*out["backbone_fpn"], *out["sam2_backbone_out"]["backbone_fpn"]]
        expected = {n: np.ascontiguousarray(t.numpy()) for n, t in zip(spec.output_names, levels, strict=True)}
        got = dict(zip(spec.output_names, session.run(spec.output_names, feeds), strict=True))
        tols = {n: tolerance(spec.name, n) for n in expected} | {"": tolerance(spec.name, "")}
        report.cases.append(ParityCase(spec.name, f"B{batch}", check_outputs(expected, got, tols)))
    return report
