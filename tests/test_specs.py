"""Graph specs: the one source of truth for names, dtypes and dynamic axes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sam3_trt.errors import Sam3TrtError
from sam3_trt.specs import DECODER, SPECS, TEXT_ENCODER, VISION_ENCODER, Dim, get_spec, specs_from_dict, specs_to_json


def test_three_graphs_with_the_agreed_files():
    assert [s.onnx_file for s in SPECS.values()] == ["vision_encoder.onnx", "text_encoder.onnx", "decoder.onnx"]
    assert VISION_ENCODER.output_names == ["fpn0", "fpn1", "fpn2"]
    assert TEXT_ENCODER.output_names == ["text_features", "text_mask"]
    assert DECODER.output_names == ["pred_logits", "pred_boxes", "presence_logit", "pred_masks", "semantic_seg"]


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_every_dynamic_axis_is_declared_and_used(spec):
    used = {d for t in spec.inputs + spec.outputs for d in t.shape if isinstance(d, str)}
    assert used == {d.name for d in spec.dims}
    # every output's dynamic axis is resolvable from inputs alone (runtime sizes buffers from feeds)
    from_inputs = {d for t in spec.inputs for d in t.shape if isinstance(d, str)}
    assert used <= from_inputs


def test_decoder_image_features_are_not_batched_per_prompt():
    for name in ("fpn0", "fpn1", "fpn2"):
        assert DECODER.tensor(name).shape[0] == 1


def test_profile_shapes_from_dims():
    prof = DECODER.profile()
    p, n = DECODER.dim("P"), DECODER.dim("N")
    assert prof["boxes"] == ((p.min, n.min, 4), (p.opt, n.opt, 4), (p.max, n.max, 4))
    assert prof["fpn0"][0] == prof["fpn0"][2] == (1, 256, 288, 288)


def test_dim_rejects_bad_ranges():
    with pytest.raises(ValueError):
        Dim("P", 2, 1, 4)


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_example_inputs_respect_the_spec(spec):
    feeds = spec.example_inputs()
    sizes = spec.infer_sizes(feeds)
    assert sizes == spec.sizes("opt")
    assert set(spec.output_shapes(sizes)) == set(spec.output_names)


def test_infer_sizes_names_the_tensor_and_the_fix():
    feeds = DECODER.example_inputs({"P": 2, "N": 3})
    feeds["boxes"] = np.zeros((2, 99, 4), np.float32)
    feeds["box_labels"] = np.zeros((2, 99), bool)
    feeds["box_mask"] = np.zeros((2, 99), bool)
    with pytest.raises(Sam3TrtError, match=r"For input: boxes, failed to set shape to: \(2, 99, 4\).*N=99.*\[1, 16\]"):
        DECODER.infer_sizes(feeds)
    feeds = DECODER.example_inputs({"P": 2, "N": 3})
    feeds["text_mask"] = feeds["text_mask"][:1]
    with pytest.raises(Sam3TrtError, match="For input: text_mask"):
        DECODER.infer_sizes(feeds)
    feeds = TEXT_ENCODER.example_inputs()
    feeds["input_ids"] = feeds["input_ids"].astype(np.int32)
    with pytest.raises(Sam3TrtError, match="For input: input_ids, got dtype int32, expected int64"):
        TEXT_ENCODER.infer_sizes(feeds)


def test_json_round_trip():
    assert specs_from_dict(json.loads(specs_to_json())) == SPECS


def test_unknown_graph_is_a_clear_error():
    with pytest.raises(Sam3TrtError, match="unknown graph 'mask_decoder'"):
        get_spec("mask_decoder")


def test_a_folder_made_with_other_graph_io_is_refused_by_name(tmp_path):
    """A manifest whose recorded spec differs from this version's (an export made before the mask head took
    refining logits, say) is refused in one line naming the graph, what differs and the command that remakes
    it; the same manifest with this version's specs reads."""
    import dataclasses

    from sam3_trt.manifest import read_manifest, write_manifest
    from sam3_trt.specs import VIDEO_SPECS

    head = VIDEO_SPECS["tracker_mask_head"]
    older = dataclasses.replace(head, inputs=tuple(t for t in head.inputs if "prev" not in t.name))
    graphs = {"decoder": {"file": "decoder.onnx", "spec": DECODER.to_dict()}}
    video = {"graphs": {head.name: {"file": head.onnx_file, "spec": head.to_dict()}}}
    write_manifest(tmp_path, {"kind": "onnx-export", "graphs": graphs, "video": video})
    assert read_manifest(tmp_path, kind="onnx-export")["video"] == json.loads(json.dumps(video))
    video["graphs"][head.name]["spec"] = older.to_dict()
    write_manifest(tmp_path, {"kind": "onnx-export", "graphs": graphs, "video": video})
    with pytest.raises(Sam3TrtError) as err:
        read_manifest(tmp_path)
    line = str(err.value)
    assert "\n" not in line and "graph tracker_mask_head was made by another sam3-trt version" in line
    assert "this version's are [" in line and "'prev_mask_logits', 'use_prev_mask'" in line
    assert f"sam3-trt export --video --out {tmp_path} --force" in line
    bad_dtype = DECODER.to_dict()
    bad_dtype["inputs"][4]["dtype"] = "int64"  # text_mask
    write_manifest(tmp_path, {"kind": "onnx-export", "graphs": {"decoder": {"file": "d.onnx", "spec": bad_dtype}}})
    with pytest.raises(Sam3TrtError, match=r"graph decoder .*text_mask is int64\['P', 32\], this version's is bool"):
        read_manifest(tmp_path)
