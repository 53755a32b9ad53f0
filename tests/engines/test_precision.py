"""The mixed-precision pass and the CPU FP16 estimate (engines issue: policy, conversion, planted overflow)."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest

from sam3_trt.engines.fp16_estimate import emulation_model, estimate
from sam3_trt.engines.precision import (
    BLANKET_FP16,
    DEFAULT_POLICY,
    KeepRule,
    PrecisionPolicy,
    float_tensors,
    load_policy,
    plan,
)
from sam3_trt.errors import ParityError, Sam3TrtError
from sam3_trt.specs import SPECS


# ---------------------------------------------------------------- policy as data (no graphs)
def test_policy_round_trips_through_json_and_extends(tmp_path):
    assert PrecisionPolicy.from_dict(DEFAULT_POLICY.to_dict()) == DEFAULT_POLICY
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"extends": "default", "keep_fp32": [{"pattern": r"blocks\.0\.", "reason": "mine"}]}))
    policy = load_policy(path, keep_fp32=[r"decoder\.layers\.5"])
    assert policy.fp16_op_types == DEFAULT_POLICY.fp16_op_types
    assert [r.pattern for r in policy.keep_fp32] == [
        *(r.pattern for r in DEFAULT_POLICY.keep_fp32),
        r"blocks\.0\.",
        r"decoder\.layers\.5",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"extends": "nope"}', "unknown precision policy 'nope'"),
        ('{"keep": []}', "unknown keys ['keep']"),
        ('{"extends": "default", "keep_fp32": ["x"]}', "keep_fp32 must be a list of"),
        ("[1, 2]", "expected a JSON object"),
        ("{not json", "not a readable JSON file"),
    ],
)
def test_bad_policy_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(Sam3TrtError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_policy(path)


def test_bad_regex_and_missing_file_are_user_errors(tmp_path):
    with pytest.raises(Sam3TrtError, match="not a valid regular expression"):
        KeepRule("(", "x")
    with pytest.raises(Sam3TrtError, match="neither a policy name"):
        load_policy(tmp_path / "missing.json")


# ---------------------------------------------------------------- the estimate's emulation is exact
def _tiny_graph(scale: float) -> onnx.ModelProto:
    """y = Relu(x @ W) + x*scale: one MatMul (FP16 under the default policy), elementwise ops FP32."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 4), 0.3, np.float32), "W")
    s = numpy_helper.from_array(np.array(scale, np.float32), "S")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
        helper.make_node("Relu", ["m"], ["r"], name="relu"),
        helper.make_node("Mul", ["x", "S"], ["xs"], name="mul"),
        helper.make_node("Add", ["r", "xs"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [w, s],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_emulation_rounds_exactly_the_fp16_nodes():
    model = _tiny_graph(scale=1000.0)
    x = np.array([[1.0001, 2.0003, -3.0007, 70.0001], [0.1, 0.2, 0.3, 0.4]], np.float32)
    decisions = plan(model, DEFAULT_POLICY)
    assert {d.node: d.precision for d in decisions} == {"mm": "fp16", "relu": "fp32", "mul": "fp32", "add": "fp32"}
    got = _run(emulation_model(model, decisions, float_tensors(model)), x)
    h = np.float16
    mm = (x.astype(h).astype(np.float32) @ np.full((4, 4), 0.3, np.float32).astype(h).astype(np.float32)).astype(h)
    expected = np.maximum(mm.astype(np.float32), 0) + x * 1000.0  # x*1000 stays FP32: 70000 does not overflow
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, _run(model, x))  # the rounding is really there

    blanket = _run(emulation_model(model, plan(model, BLANKET_FP16), float_tensors(model)), x)
    assert np.isinf(blanket[0, 3])  # 70000 > 65504: blanket FP16 overflows where the policy does not


# ---------------------------------------------------------------- on the tiny export
def test_default_policy_keeps_declared_nodes_fp32_and_io_types(tiny_fp16):
    from sam3_trt.engines.mixed import REPORT_FILE

    _, out, manifest = tiny_fp16
    decisions = json.loads((out / REPORT_FILE).read_text())
    for graph, spec in SPECS.items():
        model = onnx.load(str(out / spec.onnx_file), load_external_data=False)
        onnx.checker.check_model(str(out / spec.onnx_file))
        declared = {i.name: i.type.tensor_type.elem_type for i in (*model.graph.input, *model.graph.output)}
        for t in (*spec.inputs, *spec.outputs):
            assert onnx.helper.tensor_dtype_to_np_dtype(declared[t.name]) == np.dtype(t.dtype), (graph, t.name)
        kinds = {d["precision"] for d in decisions[graph]}
        assert kinds == {"fp16", "fp32"}, graph
        fp16_ops = {d["op_type"] for d in decisions[graph] if d["precision"] == "fp16"}
        assert fp16_ops <= set(DEFAULT_POLICY.fp16_op_types), graph
        assert all(
            d["precision"] == "fp32"
            for d in decisions[graph]
            if d["op_type"] in ("LayerNormalization", "Erf", "Add", "Sin", "Cos")
        ), graph
    # the ViT's fc1 matmuls are kept FP32 by the keep rule, with the rule named as the reason
    kept = manifest["precision"]["graphs"]["vision_encoder"]["fp32_compute_nodes"]
    assert kept and all(".mlp.fc1" in k["scope"] and "keep rule" in k["reason"] for k in kept)
    # read the converted graph itself: every node the manifest lists as kept reads only FP32 tensors
    model = onnx.load(str(out / SPECS["vision_encoder"].onnx_file), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.input)}
    types |= {i.name: i.data_type for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    for k in kept:
        node = nodes[k["node"]]
        assert node.op_type in ("MatMul", "Gemm"), k
        assert {types[t] for t in node.input if t} == {onnx.TensorProto.FLOAT}, k


def test_fp16_graph_stores_fp32_tensors_between_fp32_nodes(tiny_fp16):
    """No FP32 -> FP16 -> FP32 round trip survives between two FP32 nodes (the residual stream stays FP32)."""
    _, out, manifest = tiny_fp16
    for spec in SPECS.values():
        model = onnx.load(str(out / spec.onnx_file), load_external_data=False)
        readers: dict[str, list] = {}
        for node in model.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)

        def to(node):
            return next(a.i for a in node.attribute if a.name == "to")

        for node in model.graph.node:
            if node.op_type == "Cast" and to(node) == onnx.TensorProto.FLOAT16:
                back = [r for r in readers.get(node.output[0], []) if r.op_type == "Cast" and to(r) == 1]
                assert not back, (spec.name, node.name)
    assert manifest["precision"]["graphs"]["vision_encoder"]["conversion"]["round_trips_removed"] > 0


def test_default_policy_estimate_within_tolerance_on_tiny(tiny_fp16):
    _, _, manifest = tiny_fp16
    est = manifest["checks"]["fp16_estimate"]
    graphs = {c["graph"] for c in est["cases"]}
    assert graphs == {"vision_encoder", "text_encoder", "decoder", "pipeline"}
    moved = [
        o["rel_l2"] for c in est["cases"] for o in c["outputs"] if o["name"] in ("fpn2", "text_features", "pred_masks")
    ]
    assert all(0 < r < 2e-2 for r in moved), moved  # FP16 rounding is visible and bounded


def test_onnxruntime_fp16_graph_error_is_no_larger_than_the_estimate(tiny_fp16):
    """ORT runs the converted graph; its error vs FP32 stays at or below the estimate's (the estimate is not optimistic)."""
    from sam3_trt.compare import metrics
    from sam3_trt.engines.fp16_estimate import estimate_inputs
    from sam3_trt.ort import ort_session, run_graph

    src, out, manifest = tiny_fp16
    feeds = estimate_inputs(src)
    est = {
        (c["graph"], o["name"]): o["rel_l2"] for c in manifest["checks"]["fp16_estimate"]["cases"] for o in c["outputs"]
    }
    for graph in ("vision_encoder", "text_encoder"):
        ref = run_graph(ort_session(src / SPECS[graph].onnx_file), graph, feeds)
        half = run_graph(ort_session(out / SPECS[graph].onnx_file), graph, feeds)
        for name, value in ref.items():
            if value.dtype == np.float32:
                rel = metrics(value, half[name])[1]
                assert 0 < rel <= 1.5 * est[(graph, name)], (graph, name, rel, est[(graph, name)])


@pytest.mark.slow  # the estimate's negative control (39 s): make test-full
def test_estimate_fails_on_tight_tolerances_and_keeps_failed_folder(tiny_export, tmp_path):
    from sam3_trt.engines.mixed import convert_export
    from sam3_trt.tolerances import TOLERANCES

    tight = copy.deepcopy(TOLERANCES)
    tight["fp16"]["vision_encoder"][""] = {"max_abs": 1e-6, "rel_l2": 1e-6}
    src, _ = tiny_export
    with pytest.raises(ParityError, match=r"vision_encoder\.fpn0"):
        convert_export(src, tmp_path / "fp16", DEFAULT_POLICY, table=tight)
    assert not (tmp_path / "fp16").exists()
    assert (tmp_path / "fp16.failed" / "manifest.json").is_file()


def test_fp16_pass_refuses_an_fp16_export_and_a_changed_file(tiny_fp16, tmp_path):
    import shutil

    from sam3_trt.engines.mixed import convert_export

    src, out, _ = tiny_fp16
    with pytest.raises(Sam3TrtError, match="already a fp16 export"):
        convert_export(out, tmp_path / "again", DEFAULT_POLICY)
    copy_dir = tmp_path / "copy"
    shutil.copytree(src, copy_dir)
    with open(copy_dir / "text_encoder.onnx.data", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(Sam3TrtError, match="does not match its manifest sha256"):
        convert_export(copy_dir, tmp_path / "x", DEFAULT_POLICY, run_estimate=False)


# ---------------------------------------------------------------- planted activation: blanket fails, policy passes
@pytest.fixture(scope="module")
def planted_export(tiny_model, tmp_path_factory):
    """The tiny model with one planted activation of about -3.2e5 in the first ViT block's fc1 output.

    norm2's bias is set to 1 (its output becomes z + 1, summing to the width) and fc1's row 7 to -5000:
    fc1 channel 7 is about -5000 * 64 = -3.2e5 on every token. FP32 GELU maps it to 0, so the model stays
    finite; in FP16 (max 65504) it overflows. Weights stay under the converter's 10000 clip, so only the
    computed activation is out of range, as with the outliers of trained weights.
    """
    import torch

    from sam3_trt.export.exporter import ExportOptions, export

    model, origin = tiny_model
    planted = copy.deepcopy(model)
    block = planted.backbone.vision_backbone.trunk.blocks[0]
    with torch.no_grad():
        block.norm2.bias.fill_(1.0)
        block.mlp.fc1.weight[7].fill_(-5000.0)
    out = tmp_path_factory.mktemp("planted") / "tiny-planted"
    export(planted, origin, out, ExportOptions(parity=False, rtx_parse=False))
    return out


@pytest.mark.slow  # 113 s with its export: `make test-full` (calibration's planted overflow runs in CI)
def test_planted_activation_blanket_fp16_fails_where_the_policy_passes(planted_export):
    src = planted_export
    decisions = {}
    for policy in (DEFAULT_POLICY, BLANKET_FP16):
        decisions[policy.name] = {
            g: plan(onnx.load(str(src / s.onnx_file), load_external_data=False), policy) for g, s in SPECS.items()
        }
    policy_report = estimate(src, decisions["default"], "default")
    blanket_report = estimate(src, decisions["blanket"], "blanket")
    assert policy_report.passed, policy_report.lines()
    assert not blanket_report.passed
    vision = next(c for c in blanket_report.cases if c.graph == "vision_encoder")
    assert all(vision.nonfinite[o] > 0 for o in ("fpn0", "fpn1", "fpn2")), vision.nonfinite
    assert "vision_encoder.fpn0" in blanket_report.failures()


# ---------------------------------------------------------------- TensorRT for RTX builds the FP16 graphs
def test_rtx_builds_fp16_engines_of_the_tiny_export(tiny_fp16, tmp_path):
    from sam3_trt.engines.parse import rtx_available

    if not rtx_available():
        pytest.skip("tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')")
    from sam3_trt.engines.builder import build_engines
    from sam3_trt.engines.targets import resolve_target

    _, out, _ = tiny_fp16
    manifest = build_engines(out, tmp_path, resolve_target("4090"))
    assert manifest["precision"]["mode"] == "fp16"
    assert manifest["precision"]["policy"]["name"] == "default"
    assert manifest["precision"]["fp16_estimate_passed"] is True
    for name in SPECS:
        assert (tmp_path / "4090" / manifest["graphs"][name]["file"]).stat().st_size > 1e5, name
    plan_file = json.loads((tmp_path / "4090.plan.json").read_text())
    assert plan_file["precision"]["mode"] == "fp16" and plan_file["target"]["sm"] == "sm89"


def test_reuse_needs_the_same_weights_not_only_the_same_graph_files(tiny_fp16):
    """Exports are byte-reproducible: a checkpoint export shares the random-weight export's .onnx files."""
    from sam3_trt.engines.mixed import _reusable
    from sam3_trt.manifest import read_manifest

    src, out, _ = tiny_fp16
    source = read_manifest(src, kind="onnx-export")
    assert _reusable(out, source, DEFAULT_POLICY, True) is not None
    other_weights = copy.deepcopy(source)
    other_weights["graphs"]["text_encoder"]["data_sha256"] = "0" * 64  # same .onnx, other .onnx.data
    assert _reusable(out, other_weights, DEFAULT_POLICY, True) is None
    assert _reusable(out, source, BLANKET_FP16, True) is None  # another policy
