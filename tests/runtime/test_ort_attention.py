"""The CPU attention rewrite: which sites it fuses, and that fused graphs compute the same values."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from sam3_trt.runtime.ort_attention import fuse_attention  # noqa: E402
from sam3_trt.specs import SPECS  # noqa: E402

B, N, S, L, H = 2, 4, 48, 40, 8


def _attention_graph(
    mask: bool = False, extra_softmax_use: bool = False, heads_known: bool = True, dtype: int = TensorProto.FLOAT
) -> onnx.ModelProto:
    """``softmax(q*c @ (k^T)*c [+ mask]) @ v`` as the dynamo exporter spells SDPA (c = H**-0.25)."""
    c = helper.make_tensor("c", dtype, [], [H**-0.25])
    nodes = [
        helper.make_node("Mul", ["q", "c"], ["qs"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("Mul", ["kt", "c"], ["ks"]),
        helper.make_node("MatMul", ["qs", "ks"], ["scores"]),
    ]
    logits = "scores"
    if mask:
        nodes.append(helper.make_node("Add", ["scores", "m"], ["masked"]))
        logits = "masked"
    nodes += [
        helper.make_node("Softmax", [logits], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"]),
    ]
    heads = N if heads_known else "heads"
    outputs = [helper.make_tensor_value_info("o", dtype, ["b", heads, S, H])]
    if extra_softmax_use:
        outputs.append(helper.make_tensor_value_info("p", dtype, ["b", heads, S, L]))
    inputs = [
        helper.make_tensor_value_info("q", dtype, ["b", heads, S, H]),
        helper.make_tensor_value_info("k", dtype, ["b", heads, L, H]),
        helper.make_tensor_value_info("v", dtype, ["b", heads, L, H]),
    ]
    if mask:
        inputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, ["b", 1, 1, L]))
    graph = helper.make_graph(nodes, "attn", inputs, outputs, initializer=[c])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["o"], feeds)[0]


def test_plain_attention_becomes_one_multi_head_attention_with_the_same_values():
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((B, N, S if n == "q" else L, H)).astype(np.float32) for n in "qkv"}
    reference = _run(_attention_graph(), feeds)
    fused, count = fuse_attention(_attention_graph())
    assert count == 1
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("MultiHeadAttention") == 1 and "Softmax" not in ops and "Mul" not in ops
    mha = next(n for n in fused.graph.node if n.op_type == "MultiHeadAttention")
    attrs = {a.name: helper.get_attribute_value(a) for a in mha.attribute}
    assert attrs["num_heads"] == N and attrs["scale"] == pytest.approx(H**-0.5, rel=1e-6)
    assert [i.name for i in fused.graph.initializer if i.name == "c"] == []  # the scale constant went with its Muls
    onnx.checker.check_model(fused)
    out = _run(fused, feeds)
    assert out.shape == reference.shape == (B, N, S, H)
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"mask": True}, "an additive mask"),
        ({"extra_softmax_use": True}, "probabilities used elsewhere"),
        ({"heads_known": False}, "head count unknown"),
        ({"dtype": TensorProto.FLOAT16}, "FP16 (the CPU kernel is float32 only)"),
    ],
)
def test_sites_that_are_not_plain_attention_stay_as_exported(kwargs, why):
    model, count = fuse_attention(_attention_graph(**kwargs))
    assert count == 0, why
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in _attention_graph(**kwargs).graph.node]


def test_tiny_backend_fuses_the_heavy_sites_and_matches_the_graph_as_exported(tiny_export):
    from sam3_trt.runtime.backends import OnnxRuntimeBackend

    out, _ = tiny_export
    spec = SPECS["vision_encoder"]
    feeds = spec.example_inputs(spec.sizes("opt"))
    with OnnxRuntimeBackend(out) as fused, OnnxRuntimeBackend(out, fuse_attention=False) as plain:
        got, want = fused.run("vision_encoder", feeds), plain.run("vision_encoder", feeds)
        dec = SPECS["decoder"]
        dec_feeds = {**dec.example_inputs(dec.sizes("opt")), **{k: got[k] for k in ("fpn0", "fpn1", "fpn2")}}
        got_dec, want_dec = fused.run("decoder", dec_feeds), plain.run("decoder", dec_feeds)
        # every ViT block's attention; the decoder's unmasked self-attention over image tokens
        assert fused.fused_sites["vision_encoder"] == 2 and fused.fused_sites["decoder"] >= 1
        assert plain.fused_sites == {"vision_encoder": 0, "decoder": 0}
    for name in (*got, *got_dec):
        a, b = (got | got_dec)[name], (want | want_dec)[name]
        rel = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)
        assert rel <= 1e-5, (name, rel)
