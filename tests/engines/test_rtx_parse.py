"""The TensorRT for RTX parser check can fail: a graph with ONNX RoiAlign (a plugin op) does not parse."""

from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx")

from sam3_trt.engines.parse import parse_onnx, rtx_available  # noqa: E402

pytestmark = pytest.mark.skipif(
    not rtx_available(), reason="tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')"
)


def _roialign_model(path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])
    rois = helper.make_tensor_value_info("rois", TensorProto.FLOAT, [2, 4])
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 7, 7])
    node = helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], output_height=7, output_width=7)
    graph = helper.make_graph([node], "roialign", [x, rois, idx], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_plugin_op_fails_to_parse(tmp_path):
    _roialign_model(tmp_path / "roi.onnx")
    report = parse_onnx(tmp_path / "roi.onnx", flavour="rtx")
    assert not report.ok
    assert any("RoiAlign" in e or "ROIAlign" in e for e in report.errors)


def test_standard_tensorrt_is_refused_without_a_gpu(tmp_path):
    from sam3_trt.device import gpu_info
    from sam3_trt.errors import Sam3TrtError

    if gpu_info().available:
        pytest.skip("a GPU is present: standard TensorRT is allowed here")
    _roialign_model(tmp_path / "roi.onnx")
    with pytest.raises(Sam3TrtError, match="needs an NVIDIA GPU"):
        parse_onnx(tmp_path / "roi.onnx", flavour="tensorrt")
