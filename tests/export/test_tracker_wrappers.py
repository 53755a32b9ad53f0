"""Each tracker graph wrapper, by name, in eager torch against upstream's own method (no export).

The wrappers are what the exporter traces; here they run as ``nn.Module`` on the tiny tracker (random weights)
and must give what upstream's method gives on the same inputs, within the FP32 column of the tolerance table.
Random weights: this proves the wrappers compute upstream's arithmetic, not real-weight quality.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

#: One parity case per wrapper (its profile minimum where a case has one): eager runs, no ONNX Runtime.
CASES = {
    "MemoryAttention": ("tracker_memory_attention", {"O": 1, "M": 1, "Q": 1}, ""),
    "MaskHead": ("tracker_mask_head", {"O": 3, "K": 2}, "multimask"),
    "MemoryEncoder": ("tracker_memory_encoder", {"O": 3, "S": 288}, "video_update"),
    "InteractiveMaskHead": ("interactive_mask_head", {"O": 2, "K": 3}, "mask_input"),
}


@pytest.mark.parametrize("class_name", sorted(CASES))
def test_tracker_wrapper_matches_upstream_method(tiny_tracker, class_name):
    import torch

    from sam3_trt.compare import check_outputs
    from sam3_trt.export import tracker_wrappers
    from sam3_trt.export.patches import cpu_compat
    from sam3_trt.export.tracker_parity import reference_case
    from sam3_trt.specs import VIDEO_SPECS
    from sam3_trt.tolerances import tolerance

    graph, sizes, case = CASES[class_name]
    cls = getattr(tracker_wrappers, class_name)
    assert tracker_wrappers.TRACKER_WRAPPERS[graph] is cls  # the exporter traces this class for this graph
    spec = VIDEO_SPECS[graph]
    feeds, expected = reference_case(tiny_tracker, graph, sizes, case)
    wrapper = cls(tiny_tracker).eval()
    with torch.no_grad(), cpu_compat("cpu"):
        outs = wrapper(*(torch.from_numpy(feeds[n]) for n in spec.input_names))
    outs = outs if isinstance(outs, tuple) else (outs,)
    got = {n: o.float().numpy() for n, o in zip(spec.output_names, outs, strict=True)}
    if "all_ious_multimask" in expected:  # upstream returns the three multimask IoUs
        got["all_ious_multimask"] = got["all_ious"][:, 1:]
    tols = {out: tolerance(graph, out) for out in expected} | {"": tolerance(graph, "")}
    checks = check_outputs(expected, got, tols)
    assert checks and all(c.passed for c in checks), [c for c in checks if not c.passed]
    # the check can fail: a wrapper output moved off upstream's by more than its tolerance is caught
    name = next(iter(expected))
    moved = dict(got, **{name: got[name] + 1.0})
    assert not all(c.passed for c in check_outputs(expected, moved, tols))


def test_video_vision_encoder_is_a_named_wrapper(video_model):
    import torch

    from sam3_trt.export.patches import cpu_compat
    from sam3_trt.export.tracker_wrappers import VideoVisionEncoder, video_vision_wrapper
    from sam3_trt.specs import VIDEO_SPECS

    model, _ = video_model
    wrapper = video_vision_wrapper(model)
    assert isinstance(wrapper, VideoVisionEncoder) and not wrapper.training
    spec = VIDEO_SPECS["video_vision_encoder"]
    pixels = torch.from_numpy(spec.example_inputs({"B": 1}, seed=0)["pixel_values"])
    with torch.no_grad(), cpu_compat("cpu"):
        outs = wrapper(pixels)
        direct = model.backbone.forward_image(pixels)
    assert len(outs) == len(spec.output_names)
    levels = [*direct["backbone_fpn"], *direct["sam2_backbone_out"]["backbone_fpn"]]
    for got, want in zip(outs, levels, strict=True):
        assert torch.equal(got, want)
