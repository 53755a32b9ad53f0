"""The tracker graphs' parity reference: inputs per case and what upstream's own method computes from them.

Each graph is checked against the method it replaces, called as upstream calls it
(``_prepare_memory_conditioned_features``, ``_forward_sam_heads``, ``_encode_new_memory`` /
``_tracker_update_memories``), on :data:`PARITY_CASES` (profile minimum and maximum of every dynamic axis).
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..errors import Sam3TrtError
from ..specs import MEMORY_MASK_SIDE, RESOLUTION, VIDEO_SPECS
from .patches import cpu_compat, swap_attr
from .tracker_model import FEAT_SIDE, grid_pos, identity_cuda, model_builder_position_encoding

#: Upstream's ``feat_sizes`` of the tracker's top level.
FEAT_SIZES = [(FEAT_SIDE, FEAT_SIDE)]


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


def _frame_features(tracker: Any, objects: int, gen: Any) -> tuple[Any, list[Any]]:
    """One random frame's features ``[1,C,72,72]`` and upstream's flattened view of them for ``objects`` objects."""
    import torch

    pix = torch.randn(1, tracker.hidden_dim, FEAT_SIDE, FEAT_SIDE, generator=gen)
    return pix, [pix.flatten(2).permute(2, 0, 1).expand(-1, objects, -1)]


def memory_attention_case(tracker: Any, sizes: dict[str, int], case: str, seed: int, gen: Any) -> tuple[dict, dict]:
    """``tracker_memory_attention`` against ``_prepare_memory_conditioned_features`` on a clip history
    (:func:`memory_scenario`) with ``sizes['M']`` memory frames and ``sizes['Q']`` pointers."""
    import torch

    objects = sizes["O"]
    pix, flat = _frame_features(tracker, objects, gen)
    prompted, tracked = memory_scenario(sizes["M"], sizes["Q"])
    frame_idx = prompted + tracked
    num_frames = max(frame_idx + 1, tracker.max_obj_ptrs_in_encoder)
    mem_pos = grid_pos(tracker.maskmem_backbone.position_encoding, tracker.mem_dim, FEAT_SIDE)
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
    vision_pos = grid_pos(model_builder_position_encoding(), tracker.hidden_dim, FEAT_SIDE)
    pos = [vision_pos.flatten(2).permute(2, 0, 1).expand(-1, objects, -1)]
    expected = tracker._prepare_memory_conditioned_features(
        frame_idx, False, flat, pos, FEAT_SIZES, output_dict, num_frames
    )
    # upstream's order: prompted frames (slot 0), then the previous frames oldest first (slots 1..6)
    recent = [f for f in range(frame_idx - 6, frame_idx) if f >= prompted]
    mem_frames = list(range(prompted)) + recent
    slots = [0] * prompted + [tracker.num_maskmem - (frame_idx - f) for f in recent]
    window = min(num_frames, tracker.max_obj_ptrs_in_encoder)
    ptr_frames = list(range(prompted)) + [f for f in range(frame_idx - 1, frame_idx - window, -1) if f >= prompted]
    ptr_tpos = [(frame_idx - f) / (window - 1) for f in ptr_frames]
    feeds = {
        "pix_feat": pix,
        "memory": torch.stack([outs[f]["maskmem_features"] for f in mem_frames], dim=1),
        "memory_tpos": torch.tensor(slots, dtype=torch.int64),
        "obj_ptrs": torch.stack([outs[f]["obj_ptr"] for f in ptr_frames], dim=1),
        "obj_ptr_tpos": torch.tensor(ptr_tpos, dtype=torch.float32),
    }
    expected = {"pix_feat_with_mem": expected}
    return feeds, expected


def mask_head_case(tracker: Any, sizes: dict[str, int], case: str, seed: int, gen: Any) -> tuple[dict, dict]:
    """``tracker_mask_head`` against ``_forward_sam_heads`` (and ``_use_mask_as_output``'s pointer for a
    mask prompt), for the ``case`` of :func:`reference_case`."""
    import torch

    objects = sizes["O"]
    spec = VIDEO_SPECS["tracker_mask_head"]
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
    return feeds, expected


def memory_encoder_case(tracker: Any, sizes: dict[str, int], case: str, seed: int, gen: Any) -> tuple[dict, dict]:
    """``tracker_memory_encoder`` against ``_encode_new_memory`` (after a tracker step) or upstream's
    video-model update (``case == "video_update"``: its resize and shrinkage suppression first)."""
    import torch
    import torch.nn.functional as F

    objects = sizes["O"]
    pix, flat = _frame_features(tracker, objects, gen)
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
        features, _ = tracker._encode_new_memory(None, flat, FEAT_SIZES, high_res, area_scores, False)
    else:  # after track_step: _forward_sam_heads' upsample to 1008, then _encode_new_memory
        high_res = F.interpolate(masks, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
        features, _ = tracker._encode_new_memory(None, flat, FEAT_SIZES, high_res, scores, binarize)
    feeds = {
        "pix_feat": pix,
        "masks": masks,
        "object_score_logits": scores,
        "binarize": torch.tensor([binarize]),
        "video_update": torch.tensor([update]),
    }
    expected = {"maskmem_features": features}
    return feeds, expected


def interactive_case(tracker: Any, sizes: dict[str, int], case: str, seed: int, gen: Any) -> tuple[dict, dict]:
    """``interactive_mask_head`` against the mask decoder called as ``SAM3InteractiveImagePredictor._predict``
    calls it (features as the image processor leaves them: ``conv_s0`` / ``conv_s1`` applied, ``no_mem_embed``
    added; the image repeated when several prompt sets run), once with ``multimask_output`` and once without.
    ``case``: ``"points"``, ``"box_points"`` (corner labels 2, 3 first) or ``"mask_input"`` (with points)."""
    import torch

    sets = sizes["O"]
    spec = VIDEO_SPECS["interactive_mask_head"]
    feeds = {k: torch.from_numpy(v) for k, v in spec.example_inputs(sizes, seed=seed).items()}
    if case == "box_points":
        feeds["point_labels"][:, :2] = torch.tensor([2, 3], dtype=torch.int32)
    feeds["use_mask_input"][:] = case == "mask_input"
    feeds["mask_input"] = (feeds["mask_input"] * 16).clamp(-32.0, 32.0)  # as a previous call returns them
    decoder, encoder = tracker.sam_mask_decoder, tracker.sam_prompt_encoder
    embed = feeds["tracker_fpn2"] + tracker.no_mem_embed.reshape(1, -1, 1, 1)
    high_res = [decoder.conv_s0(feeds["tracker_fpn0"]), decoder.conv_s1(feeds["tracker_fpn1"])]
    sparse, dense = encoder(
        points=(feeds["point_coords"], feeds["point_labels"]),
        boxes=None,
        masks=feeds["mask_input"] if case == "mask_input" else None,
    )
    outs = {}
    for multimask in (False, True):
        outs[multimask] = decoder(
            image_embeddings=embed,
            image_pe=encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=sets > 1,
            high_res_features=high_res,
        )
    expected = {
        "low_res_masks": torch.cat([outs[False][0], outs[True][0]], dim=1),
        "iou_predictions": torch.cat([outs[False][1], outs[True][1]], dim=1),
        "object_score_logits": outs[True][3],
    }
    return feeds, expected


#: Tracker graph -> the function that makes its reference case.
CASE_BUILDERS = {
    "tracker_memory_attention": memory_attention_case,
    "tracker_mask_head": mask_head_case,
    "tracker_memory_encoder": memory_encoder_case,
    "interactive_mask_head": interactive_case,
}


def reference_case(tracker: Any, graph: str, sizes: dict[str, int], case: str = "", seed: int = 0) -> tuple[dict, dict]:
    """Inputs for ``graph`` and what upstream's own method computes from them (numpy).

    Args:
        tracker: From :func:`~sam3_trt.export.tracker_model.build_tracker`.
        graph: A tracker graph (:data:`~sam3_trt.specs.TRACKER_GRAPHS`).
        sizes: Dynamic sizes (``O``, ``M``, ``Q``, ``K``, ``S``) of the case.
        case: Mask head: ``"multimask"``, ``"single"`` (an object's first frame), ``"mask_prompt"``, or
            ``"refine"`` / ``"refine_multimask"`` (clicks with the object's earlier logits); memory encoder:
            ``"binarize"``, ``"sigmoid"`` (after a tracker step) or ``"video_update"``; interactive head:
            ``"points"``, ``"box_points"`` or ``"mask_input"``.
        seed: Seed of the random features.

    Returns:
        ``(feeds, expected)``, both ``{name: numpy array}`` named as in the spec.
    """
    import numpy as np
    import torch

    from ..specs import TRACKER_GRAPHS

    if graph not in CASE_BUILDERS:
        raise Sam3TrtError(f"unknown tracker graph {graph!r}; expected one of {TRACKER_GRAPHS}")
    gen = torch.Generator().manual_seed(seed)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(cpu_compat("cpu"))
        stack.enter_context(swap_attr(torch.Tensor, "cuda", identity_cuda))
        # the graphs take the memories upstream would select; which ones is host logic, checked elsewhere
        stack.enter_context(swap_attr(tracker, "use_memory_selection", False))
        feeds, expected = CASE_BUILDERS[graph](tracker, sizes, case, seed, gen)
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
    "interactive_mask_head": (
        ("O1_K1_points", {"O": 1, "K": 1}, "points"),
        ("O2_K4_box_points", {"O": 2, "K": 4}, "box_points"),
        ("O1_K2_mask_input", {"O": 1, "K": 2}, "mask_input"),
        ("O64_K16_points", {"O": 64, "K": 16}, "points"),
    ),
    "tracker_memory_encoder": (
        ("O1_S288_binarize", {"O": 1, "S": 288}, "binarize"),
        ("O16_S288_sigmoid", {"O": 16, "S": 288}, "sigmoid"),
        ("O2_S1008_sigmoid", {"O": 2, "S": 1008}, "sigmoid"),
        ("O3_S288_video_update", {"O": 3, "S": 288}, "video_update"),
        ("O2_S1152_video_update", {"O": 2, "S": 1152}, "video_update"),
    ),
}


def tracker_parity(tracker: Any, folder: Any, threads: int | None = None, graphs: Any = None, cases: Any = None) -> Any:
    """Each exported tracker graph (ONNX Runtime) against upstream's method on :data:`PARITY_CASES`.

    Args:
        tracker: The tracker the graphs were exported from.
        folder: Folder holding the ``.onnx`` files.
        threads: ONNX Runtime threads.
        graphs: Graph names (default: all).
        cases: Graph name -> its cases, a subset of :data:`PARITY_CASES` (default: all of them).

    Returns:
        A :class:`~sam3_trt.export.graph_parity.ParityReport` (FP32 column of the tolerance table).
    """
    from pathlib import Path

    from ..compare import check_outputs
    from ..ort import ort_session
    from ..specs import TRACKER_GRAPHS, VIDEO_SPECS
    from ..tolerances import tolerance
    from .graph_parity import ParityCase, ParityReport

    report = ParityReport("fp32")
    for name in graphs or TRACKER_GRAPHS:
        spec = VIDEO_SPECS[name]
        session = ort_session(Path(folder) / spec.onnx_file, threads=threads)
        for label, sizes, case in (cases or PARITY_CASES)[name]:
            feeds, expected = reference_case(tracker, name, sizes, case)
            got = dict(zip(spec.output_names, session.run(spec.output_names, feeds), strict=True))
            if "all_ious_multimask" in expected:  # upstream returns the three multimask IoUs
                got["all_ious_multimask"] = got["all_ious"][:, 1:]
            tols = {out: tolerance(name, out) for out in expected} | {"": tolerance(name, "")}
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            report.cases.append(ParityCase(name, label, check_outputs(expected, got, tols), shapes))
        del session
    return report


def video_vision_parity(model: Any, folder: Any, batches: Any = (1,), threads: int | None = None) -> Any:
    """``video_vision_encoder`` (ONNX Runtime) against upstream's ``backbone.forward_image`` per batch size.

    Returns:
        A :class:`~sam3_trt.export.graph_parity.ParityReport` (FP32 column).
    """
    from pathlib import Path

    import numpy as np
    import torch

    from ..compare import check_outputs
    from ..ort import ort_session
    from ..specs import VIDEO_SPECS
    from ..tolerances import tolerance
    from .graph_parity import ParityCase, ParityReport

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
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        report.cases.append(ParityCase(spec.name, f"B{batch}", check_outputs(expected, got, tols), shapes))
    return report
