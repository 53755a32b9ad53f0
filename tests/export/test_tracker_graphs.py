"""The video tracker's graphs: exported from the tiny tracker, each checked against upstream's own method.

Random weights: the checks prove the graphs compute what upstream's tracker computes (same arithmetic,
same choices), not that real-weight masks track well.
"""

from __future__ import annotations

import numpy as np
import pytest

from sam3_trt.errors import Sam3TrtError
from sam3_trt.specs import VIDEO_SPECS


def test_every_tracker_graph_matches_upstream_at_profile_min_and_max(tracker_export):
    from sam3_trt.export.tracker_parity import PARITY_CASES

    _, manifest = tracker_export
    report = manifest["checks"]["video_parity"]
    assert report["passed"] and report["precision"] == "fp32"
    assert {c["graph"] for c in report["cases"]} == set(VIDEO_SPECS)
    assert len(report["cases"]) == sum(len(cases) for cases in PARITY_CASES.values()) + 2  # + vision B1, B2
    vision = [c for c in report["cases"] if c["graph"] == "video_vision_encoder"]
    assert [c["case"] for c in vision] == ["B1", "B2"]
    assert all(
        {o["name"] for o in c["outputs"]} == set(VIDEO_SPECS["video_vision_encoder"].output_names) for c in vision
    )
    # every dynamic axis of every tracker graph ran at its profile minimum and maximum: read from the input shapes
    # the report records for the cases that ran (not from the table of cases to run)
    for name in PARITY_CASES:
        spec = VIDEO_SPECS[name]
        ran = [c["input_shapes"] for c in report["cases"] if c["graph"] == name]
        for dim in spec.dims:
            seen = {
                shapes[t.name][axis]
                for shapes in ran
                for t in spec.inputs
                for axis, d in enumerate(t.shape)
                if d == dim.name
            }
            assert {dim.min, dim.max} <= seen, f"{name}: {dim.name} ran at {sorted(seen)}"
    # each mask-head mode has its own outputs checked
    outputs = {
        c["case"]: {o["name"] for o in c["outputs"]} for c in report["cases"] if c["graph"] == "tracker_mask_head"
    }
    assert "all_ious_multimask" in outputs["O3_K2_multimask"] and "iou" in outputs["O1_K1_single_first_frame"]
    assert {"obj_ptr", "object_score_logits"} <= outputs["O2_mask_prompt"]
    assert "all_ious_multimask" in outputs["O1_K1_refine_multimask"] and "iou" in outputs["O16_K16_refine"]
    # recorded beside the image graphs, with their specs and weights
    assert set(manifest["video"]["graphs"]) == set(VIDEO_SPECS)
    assert manifest["video"]["weights"] == {**manifest["video"]["weights"], "kind": "random", "variant": "tiny"}
    assert manifest["video"]["parameters"] > 1_000_000


def test_tracker_files_are_vouched_for_by_the_manifest(tracker_export, tmp_path):
    import shutil as sh

    from sam3_trt.manifest import manifest_files, verify_files

    folder, manifest = tracker_export
    listed = {rel for rel, *_ in manifest_files(manifest)}
    assert {f"{n}.onnx" for n in VIDEO_SPECS} | {f"{n}.onnx.data" for n in VIDEO_SPECS} <= listed
    copy = tmp_path / "copy"
    sh.copytree(folder, copy)
    verify_files(copy, manifest)
    with open(copy / "tracker_mask_head.onnx.data", "r+b") as f:  # same size, one byte changed
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(Sam3TrtError, match="tracker_mask_head"):
        verify_files(copy, manifest)


def test_rtx_parses_every_tracker_graph(tracker_export):
    from sam3_trt.engines.parse import rtx_available

    if not rtx_available():
        pytest.skip("tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')")
    rtx = tracker_export[1]["checks"]["rtx_parse"]
    assert rtx["status"] == "passed"
    for name in VIDEO_SPECS:
        assert rtx["graphs"][name]["ok"] and not rtx["graphs"][name]["errors"], name


def test_graph_io_is_the_spec(tracker_export, graph_io_check):
    """Names, element types and static/dynamic axes of every video graph are its spec's; no complex tensor
    anywhere (RoPE on its real form) and no antialiased Resize (TensorRT has none)."""
    import onnx

    folder, _ = tracker_export
    for spec in VIDEO_SPECS.values():
        graph_io_check(folder / spec.onnx_file, spec)
        model = onnx.load(str(folder / spec.onnx_file), load_external_data=False)
        ops = {(n.op_type, a.name, a.i) for n in model.graph.node for a in n.attribute}
        assert ("Resize", "antialias", 1) not in ops


def test_refining_clicks_read_the_earlier_logits(tracker_export, tiny_tracker):
    """The mask head's refine mode matches upstream's clicks with ``prev_sam_mask_logits`` and depends on them:
    the same clicks with the logits switched off (``use_prev_mask`` False) land far outside the FP32 bar."""
    from sam3_trt.export.tracker_parity import reference_case
    from sam3_trt.ort import ort_session
    from sam3_trt.tolerances import tolerance

    spec = VIDEO_SPECS["tracker_mask_head"]
    session = ort_session(tracker_export[0] / spec.onnx_file)
    feeds, expected = reference_case(tiny_tracker, spec.name, {"O": 2, "K": 2}, "refine")
    assert feeds["use_prev_mask"].all() and np.abs(feeds["prev_mask_logits"]).max() == 32.0  # clamped as upstream

    def masks(f):
        return session.run(["low_res_masks"], f)[0]

    bar = tolerance(spec.name, "low_res_masks")["max_abs"]
    assert np.abs(masks(feeds) - expected["low_res_masks"]).max() <= bar
    ignored = masks({**feeds, "use_prev_mask": np.zeros_like(feeds["use_prev_mask"])})
    assert np.abs(ignored - expected["low_res_masks"]).max() > 100 * bar


#: The full-size tracker's cases in every CI run: each graph at its profile minimum, the mask head at its maximum.
#: The largest memory (10 frames, 19 pointers: a 1 GB attention matrix per object on ONNX Runtime) and the
#: 1008/1152 memory-encoder sizes run in `make test-full`, whose full-size `export --video` checks every case.
FULL_SIZE_CI_CASES = ("O1_M1_Q1", "O1_K1_single_first_frame", "O16_K16_refine", "O1_S288_binarize")


@pytest.mark.export  # exports by itself (about 2 min)
def test_full_size_tracker_graphs_match_upstream_and_parse(tmp_path):
    """Upstream's full-size tracker (11.7 M parameters, random weights): its three video graphs exported, checked
    against its own methods (:data:`FULL_SIZE_CI_CASES`; every case in ``make test-full``) and parsed by
    TensorRT for RTX, in every CI run. The image click head runs the same prompt encoder and mask decoder
    modules as the mask head: CI checks it at tiny size, ``make test-full`` at full size."""
    from sam3_trt.export.exporter import rtx_parse_checks
    from sam3_trt.export.tracker_export import export_tracker
    from sam3_trt.export.tracker_model import build_tracker
    from sam3_trt.export.tracker_parity import PARITY_CASES, tracker_parity
    from sam3_trt.specs import TRACKER_GRAPHS

    graphs = [g for g in TRACKER_GRAPHS if g != "interactive_mask_head"]
    cases = {g: tuple(c for c in PARITY_CASES[g] if c[0] in FULL_SIZE_CI_CASES) for g in graphs}
    assert all(cases.values())  # every graph keeps a case
    tracker = build_tracker("full", seed=0)
    assert 11_000_000 < sum(p.numel() for p in tracker.parameters()) < 13_000_000  # upstream's tracker
    export_tracker(tracker, tmp_path, graphs=graphs)
    report = tracker_parity(tracker, tmp_path, graphs=graphs, cases=cases)
    print("full-size tracker parity:", {c.case: max(o.max_abs for o in c.checks) for c in report.cases})
    assert report.passed, report.failures()
    assert {c.case for c in report.cases} == set(FULL_SIZE_CI_CASES)
    from sam3_trt.engines.parse import rtx_available

    if not rtx_available():
        pytest.skip("parity passed; the parse needs tensorrt_rtx (pip install 'sam3-trt[rtx]')")
    rtx = rtx_parse_checks(tmp_path, graphs)
    assert rtx["status"] == "passed" and set(rtx["graphs"]) == set(graphs), rtx
    assert all(r["ok"] and not r["errors"] for r in rtx["graphs"].values()), rtx


def test_parity_fails_on_graphs_of_other_weights(tracker_export):
    """The check can fail: graphs of seed 0 against upstream's tracker with seed 1's weights."""
    from sam3_trt.export.tracker_model import build_tracker
    from sam3_trt.export.tracker_parity import tracker_parity

    report = tracker_parity(build_tracker("tiny", seed=1), tracker_export[0], graphs=["tracker_memory_encoder"])
    assert not report.passed
    assert report.failures() and all("tracker_memory_encoder" in line for line in report.failures())


def test_tracker_checkpoint_round_trip_and_refusals(tiny_model, tmp_path):
    """``tracker.*`` keys of the official layout load strictly into the tracker."""
    import torch

    from sam3_trt.export.model import save_checkpoint
    from sam3_trt.export.tracker_model import build_tracker, load_tracker

    model, _ = tiny_model
    saved = build_tracker("tiny", seed=3)
    save_checkpoint(model, tmp_path / "sam3.pt", tracker=saved)
    tracker, origin = load_tracker("tiny", tmp_path / "sam3.pt", seed=0)
    assert origin.kind == "checkpoint" and origin.variant == "tiny" and not origin.missing_keys
    for key, value in saved.state_dict().items():
        assert torch.equal(tracker.state_dict()[key], value), key
    save_checkpoint(model, tmp_path / "image_only.pt")  # dummy tracker keys, as a file of another model would hold
    with pytest.raises(Sam3TrtError, match=r"missing \d+ of the model's \d+ keys .* not a sam3 tracker checkpoint"):
        load_tracker("tiny", tmp_path / "image_only.pt")
    _, origin = load_tracker("tiny", tmp_path / "image_only.pt", allow_missing=True)
    assert origin.missing_keys and origin.unexpected_keys == ("dummy_0.weight", "dummy_1.weight")
    torch.save({"model": {f"detector.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "no_tracker.pt")
    with pytest.raises(Sam3TrtError, match="has no tracker weights"):
        load_tracker("tiny", tmp_path / "no_tracker.pt")


def test_memory_scenarios_give_upstream_sizes_and_refuse_impossible_ones():
    from sam3_trt.export.tracker_parity import memory_scenario

    assert memory_scenario(1, 1) == (1, 0)
    assert memory_scenario(10, 19) == (4, 15)
    with pytest.raises(Sam3TrtError, match="3 memory frames and 5 object pointers"):
        memory_scenario(3, 5)


def test_tracker_specs_accept_their_own_example_inputs_and_name_bad_ones():
    for spec in VIDEO_SPECS.values():
        for which in ("min", "opt", "max"):
            assert spec.infer_sizes(spec.example_inputs(spec.sizes(which))) == spec.sizes(which)
    spec = VIDEO_SPECS["tracker_memory_attention"]
    feeds = spec.example_inputs(spec.sizes("min"))
    feeds["memory_tpos"] = feeds["memory_tpos"].astype(np.int32)
    with pytest.raises(Sam3TrtError, match="memory_tpos, got dtype int32, expected int64"):
        spec.infer_sizes(feeds)


def test_bilinear_resize_is_torchs_arithmetic_in_onnx_runtime_with_a_dynamic_input_size(tmp_path):
    """The gather resize matches torch (float32 coordinate rounding only) and ONNX Runtime runs it alike."""
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F

    from sam3_trt.export.resize import bilinear_resize

    def logits(side):
        return torch.sigmoid(torch.randn(2, 1, side, side, generator=torch.Generator().manual_seed(side)) * 8) * 20 - 10

    for side, out in ((288, 1008), (1008, 1152), (1008, 1008), (7, 5)):
        x = logits(side)
        ref = F.interpolate(x, size=(out, out), mode="bilinear", align_corners=False)
        # ~1 float32 ulp of the source coordinate times the steepest logit slope (measured 3e-4 at 288 -> 1008)
        assert (bilinear_resize(x, (out, out)) - ref).abs().max() < 1e-3, (side, out)
    upsample_aa = F.interpolate(logits(1008), size=(1152, 1152), mode="bilinear", align_corners=False, antialias=True)
    assert (bilinear_resize(logits(1008), (1152, 1152)) - upsample_aa).abs().max() < 1e-5

    class Resize(torch.nn.Module):
        def forward(self, x):
            return bilinear_resize(x, (1008, 1008))

    side = torch.export.Dim("S", min=288, max=1008)
    torch.onnx.export(
        Resize(), (logits(288),), tmp_path / "r.onnx", dynamo=True, dynamic_shapes={"x": {2: side, 3: side}}
    )
    session = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    for n in (288, 500, 1008):
        x = logits(n)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(got - Resize()(x).numpy()).max() <= 1e-5, n


def test_export_video_refuses_a_checkpoint_without_tracker_weights_in_one_line(video_model, tmp_path):
    import subprocess
    import sys

    import torch

    model, _ = video_model
    torch.save({"model": {f"detector.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "sam3.pt")
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "sam3_trt.cli", "export", "--variant", "tiny", "--checkpoint", str(tmp_path / "sam3.pt"),
           "--video", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no tracker weights" in lines[0] and "sam3.pt" in lines[0]
    assert not out.exists()


def test_video_model_adds_only_the_tracker_neck_and_export_refuses_a_model_without_it(
    video_model, tiny_model, tiny_tracker, tmp_path
):
    import torch

    from sam3_trt.export.exporter import ExportOptions, export
    from sam3_trt.export.model import WeightsOrigin

    video, image = video_model[0].state_dict(), tiny_model[0].state_dict()
    added = sorted(set(video) - set(image))
    assert added and all(".sam2_convs." in k for k in added) and not set(image) - set(video)
    assert all(torch.equal(video[k], image[k]) for k in image)  # the image weights do not change with --video
    neck = "backbone.vision_backbone."
    assert not torch.equal(video[f"{neck}sam2_convs.0.dconv_2x2_0.weight"], video[f"{neck}convs.0.dconv_2x2_0.weight"])
    tracker = (tiny_tracker, WeightsOrigin(kind="random", variant="tiny", seed=0))
    with pytest.raises(Sam3TrtError, match=r"sam2_convs.*--video"):
        export(tiny_model[0], tiny_model[1], tmp_path / "o", ExportOptions(graphs=("text_encoder",)), tracker=tracker)
    assert not (tmp_path / "o").exists()


def test_shrinking_masks_are_suppressed_as_upstream_does(tiny_tracker):
    import torch

    from sam3_trt.export.tracker_wrappers import suppress_shrinking_masks

    gen = torch.Generator().manual_seed(0)
    masks = torch.randn(3, 1, 64, 64, generator=gen) * 8
    masks[1] = masks[0] - 1.0  # under object 0 everywhere: keeps no pixel after non-overlap
    ours = suppress_shrinking_masks(masks)
    assert torch.equal(ours, tiny_tracker._suppress_object_pw_area_shrinkage(masks))
    assert (ours[1] <= -10).all() and torch.equal(ours[0], masks[0])
    one = masks[:1]  # upstream returns a single object unchanged (its shortcut); so does the graph's form
    assert torch.equal(suppress_shrinking_masks(one), one)
