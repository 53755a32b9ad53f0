"""SAM3's video tracker as graphs (memory attention, mask head, memory encoder), its image click head, and the video vision graph.

Each graph is a named ``torch.nn.Module`` over upstream's tracker (or image model), importable and testable by
name; :func:`tracker_wrappers` gives the three tracker graphs keyed by graph name.

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
* ``interactive_mask_head`` = the image model's ``predict_inst`` (clicks and boxes on one image, no memory).

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

from typing import Any

import torch
from torch import nn

from ..specs import MEMORY_MASK_SIDE, RESOLUTION
from .resize import bilinear_resize
from .tracker_model import FEAT_SIDE, grid_pos, model_builder_position_encoding


def suppress_shrinking_masks(masks: Any, shrink_threshold: float = 0.3) -> Any:
    """Upstream's ``_suppress_object_pw_area_shrinkage`` over the objects of ``masks [O,1,H,W]``.

    Each pixel is kept by the object with the highest logit (the others clamped to <= -10); an object
    whose area shrinks below ``shrink_threshold`` of its own area that way is clamped to <= -10 everywhere.
    Written without upstream's ``if batch_size == 1`` shortcut (it would fix the object count under export;
    with one object the argmax keeps every pixel, so the result is the same).
    """
    best = torch.argmax(masks, dim=0, keepdim=True)
    keep = best == torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    separated = torch.where(keep, masks, torch.clamp(masks, max=-10.0))
    area_before = torch.clamp((masks > 0).sum(dim=(-1, -2)), min=1.0)
    area_after = (separated > 0).sum(dim=(-1, -2))
    kept = (area_after / area_before) >= shrink_threshold
    return torch.where(kept[..., None, None], masks, torch.clamp(masks, max=-10.0))


class MemoryAttention(nn.Module):
    """Frame features conditioned on M memory frames and Q object pointers, for O objects."""

    def __init__(self, tracker: Any) -> None:
        super().__init__()
        self.tracker = tracker
        # constants upstream recomputes per call: the sine position encodings of the 72x72 grid
        vision_pos = grid_pos(model_builder_position_encoding(), tracker.hidden_dim, FEAT_SIDE)
        memory_pos = grid_pos(tracker.maskmem_backbone.position_encoding, tracker.mem_dim, FEAT_SIDE)
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
        from sam3.model.sam3_tracker_utils import get_1d_sine_pe

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


def prompted_masks(
    tracker: Any,
    image_embed: torch.Tensor,
    high_res: list[torch.Tensor],
    point_coords: torch.Tensor,
    point_labels: torch.Tensor,
    mask: torch.Tensor,
    use_mask: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Upstream's SAM prompt encoder and mask decoder, one row per object (or prompt set), as both heads run them.

    Points are padded with one ``-1`` point as upstream pads them; where ``use_mask`` is set the row's mask
    logits are the dense prompt, elsewhere the learned no-mask embedding.

    Returns:
        ``(masks, iou_pred, tokens, object_score_logits)`` of ``sam_mask_decoder.predict_masks``.
    """
    decoder, encoder = tracker.sam_mask_decoder, tracker.sam_prompt_encoder
    rows, side = image_embed.shape[0], encoder.image_embedding_size
    sparse = encoder._embed_points(point_coords, point_labels, pad=True)
    no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(rows, -1, side[0], side[1])
    dense = torch.where(use_mask[:, None, None, None], encoder.mask_downscaling(mask), no_mask)
    return decoder.predict_masks(
        image_embeddings=image_embed,
        image_pe=encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        repeat_image=False,
        high_res_features=high_res,
    )


class MaskHead(nn.Module):
    """SAM prompt encoder + mask decoder for O objects, upstream's multimask choice in the graph."""

    def __init__(self, tracker: Any) -> None:
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
        from sam3.model.sam3_tracker_base import NO_OBJ_SCORE

        t = self.tracker
        decoder = t.sam_mask_decoder
        objects = image_embed.shape[0]
        # first frame of an object: upstream adds the learned "no memory" embedding instead of attention
        image_embed = image_embed + no_memory.float()[:, None, None, None] * t.no_mem_embed.reshape(1, -1, 1, 1)
        high_res = [decoder.conv_s0(tracker_fpn0), decoder.conv_s1(tracker_fpn1)]
        # mask prompts (upstream _use_mask_as_output): the 4x4 stride-4 conv takes the 1152 mask to 288,
        # the prompt encoder's size, so upstream resizes nothing after it. Refining clicks (upstream
        # prev_sam_mask_logits) give the prompt encoder the object's earlier 288 logits as they are.
        prompt = torch.where(use_prev_mask[:, None, None, None], prev_mask_logits, t.mask_downsample(mask_prompt))
        masks, iou_pred, tokens, object_score_logits = prompted_masks(
            t, image_embed, high_res, point_coords, point_labels, prompt, use_mask_prompt | use_prev_mask
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


class InteractiveMaskHead(nn.Module):
    """Upstream's ``predict_inst`` network part (``SAM3InteractiveImagePredictor._predict``) for O prompt sets.

    The image model's processor gives the predictor the tracker neck's levels with ``conv_s0`` / ``conv_s1``
    applied and ``no_mem_embed`` added to the top level; the graph does both, then the prompt encoder (points
    padded with one ``-1`` point, as upstream pads when no box is passed separately: boxes arrive as corner
    points 2/3) and the mask decoder with the image repeated per prompt set. It returns all four tokens' logits,
    token 0 already replaced by upstream's stability fallback (``_dynamic_multimask_via_stability``), so the
    host picks ``[:, 1:]`` (multimask) or ``[:, :1]`` without a second run. Unlike ``tracker_mask_head`` nothing
    is replaced for an absent object: ``predict_inst`` returns the logits as they are.
    """

    def __init__(self, tracker: Any) -> None:
        super().__init__()
        self.tracker = tracker

    def forward(
        self,
        tracker_fpn0: torch.Tensor,
        tracker_fpn1: torch.Tensor,
        tracker_fpn2: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        use_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        t = self.tracker
        decoder = t.sam_mask_decoder
        sets = point_coords.shape[0]
        image_embed = (tracker_fpn2 + t.no_mem_embed.reshape(1, -1, 1, 1)).expand(sets, -1, -1, -1)
        high_res = [
            decoder.conv_s0(tracker_fpn0).expand(sets, -1, -1, -1),
            decoder.conv_s1(tracker_fpn1).expand(sets, -1, -1, -1),
        ]
        masks, iou_pred, _, object_score_logits = prompted_masks(
            t, image_embed, high_res, point_coords, point_labels, mask_input, use_mask_input
        )
        single_mask, single_iou = decoder._dynamic_multimask_via_stability(masks, iou_pred)
        low_res_masks = torch.cat([single_mask, masks[:, 1:]], dim=1)
        iou_predictions = torch.cat([single_iou, iou_pred[:, 1:]], dim=1)
        return low_res_masks, iou_predictions, object_score_logits


class MemoryEncoder(nn.Module):
    """Spatial memory of O objects from one frame's features and their mask logits."""

    def __init__(self, tracker: Any) -> None:
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


class VideoVisionEncoder(nn.Module):
    """``pixel_values`` -> the detector's ``fpn0..2`` and the tracker's ``tracker_fpn0..2``, one ViT pass.

    Needs the image model built with the tracker's neck levels (``video=True``: ``sam2_convs``).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.backbone.forward_image(pixel_values)
        return (*out["backbone_fpn"], *out["sam2_backbone_out"]["backbone_fpn"])


#: Tracker graph name -> its wrapper class (:data:`~sam3_trt.specs.TRACKER_GRAPHS` order).
TRACKER_WRAPPERS: dict[str, type[nn.Module]] = {
    "tracker_memory_attention": MemoryAttention,
    "tracker_mask_head": MaskHead,
    "tracker_memory_encoder": MemoryEncoder,
    "interactive_mask_head": InteractiveMaskHead,
}


def tracker_wrappers(tracker: Any) -> dict[str, nn.Module]:
    """The three tracker graph wrappers over ``tracker`` (eval mode), keyed by graph name.

    Args:
        tracker: Upstream's ``Sam3TrackerPredictor`` (:func:`~sam3_trt.export.tracker_model.build_tracker`).
    """
    return {name: cls(tracker).eval() for name, cls in TRACKER_WRAPPERS.items()}


def video_vision_wrapper(model: Any) -> nn.Module:
    """:class:`VideoVisionEncoder` over the image model ``model`` (eval mode)."""
    return VideoVisionEncoder(model).eval()
