"""The graph I/O check the export tests use (conftest ``check_graph_io``) fails on what it claims to catch."""

from __future__ import annotations

import types

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _spec(dtype: str = "float32") -> types.SimpleNamespace:
    t = types.SimpleNamespace
    return t(name="g", inputs=[t(name="x", dtype="float32", shape=("N", 4))],
             outputs=[t(name="y", dtype=dtype, shape=("N", 4))])  # fmt: skip


def _save(tmp_path, nodes, out_type=TensorProto.FLOAT, extra_value_info=()):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", out_type, ["N", 4])],
        value_info=list(extra_value_info),
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_graph_io_check_passes_a_matching_graph_and_fails_each_mismatch(tmp_path, graph_io_check):
    good = _save(tmp_path, [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])])
    graph_io_check(good, _spec())
    with pytest.raises(AssertionError):  # element type: the graph gives float32, the spec says int64
        graph_io_check(good, _spec("int64"))
    wrong_name = types.SimpleNamespace(**{**vars(_spec()), "outputs": [types.SimpleNamespace(name="z", dtype="float32",
                                                                                          shape=("N", 4))]})  # fmt: skip
    with pytest.raises(AssertionError):
        graph_io_check(good, wrong_name)
    static = types.SimpleNamespace(**{**vars(_spec()), "inputs": [types.SimpleNamespace(name="x", dtype="float32",
                                                                                      shape=(2, 4))]})  # fmt: skip
    with pytest.raises(AssertionError):  # a dynamic axis where the spec has a static one
        graph_io_check(good, static)


def test_graph_io_check_finds_a_complex_tensor_inside(tmp_path, graph_io_check):
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])]
    complex_h = helper.make_tensor_value_info("h", TensorProto.COMPLEX64, ["N", 4])
    path = _save(tmp_path, nodes, extra_value_info=[complex_h])
    with pytest.raises(AssertionError, match="'h'"):
        graph_io_check(path, _spec())
