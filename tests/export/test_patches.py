"""Patches are reversible and scoped: nothing in sam3 stays changed after the block."""

from __future__ import annotations

import pytest

pytest.importorskip("sam3")
torch = pytest.importorskip("torch")

from sam3_trt.export.patches import cpu_compat, export_patches, swap_attr  # noqa: E402


def _snapshot():
    from sam3.model import decoder, geometry_encoders, position_encoding

    return {
        "pe.torch": position_encoding.torch,
        "dec.torch": decoder.torch,
        "pin_memory": torch.Tensor.pin_memory,
        "_encode_xy": position_encoding.PositionEmbeddingSine.__dict__["_encode_xy"],
        "_encode_boxes": geometry_encoders.SequenceGeometryEncoder.__dict__["_encode_boxes"],
        "_encode_points": geometry_encoders.SequenceGeometryEncoder.__dict__["_encode_points"],
        "is_right_padded": geometry_encoders.is_right_padded,
        "rpb": decoder.TransformerDecoder.__dict__["_get_rpb_matrix"],
    }


def test_patches_restore_everything_even_after_an_error():
    before = _snapshot()
    with pytest.raises(RuntimeError, match="boom"), cpu_compat(), export_patches():
        assert _snapshot() != before
        raise RuntimeError("boom")
    assert _snapshot() == before


def test_cpu_compat_redirects_hard_coded_cuda_factories():
    from sam3.model import position_encoding

    original_pin = torch.Tensor.pin_memory
    x = torch.arange(4.0)
    with cpu_compat():
        t = position_encoding.torch.zeros((1, 2), device="cuda")
        assert t.device.type == "cpu"
        pinned = x.pin_memory()  # no accelerator: the patch hands the tensor back as it is
        assert pinned is x and pinned.device.type == "cpu" and pinned.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert torch.Tensor.pin_memory is original_pin  # undone after the block


def test_swap_attr_removes_attributes_it_added():
    class Box:
        pass

    with swap_attr(Box, "extra", 1):
        assert Box.extra == 1
    assert not hasattr(Box, "extra")


def test_swap_attr_on_an_instance_method_leaves_no_instance_attribute():
    """A leftover bound method on the model changed torch.export's module paths (and export bytes)."""
    from sam3_trt.export.patches import swap_attr

    class Model:
        def forward_grounding(self):
            return "class"

    m = Model()
    with swap_attr(m, "forward_grounding", lambda: "patched"):
        assert m.forward_grounding() == "patched"
    assert "forward_grounding" not in vars(m) and m.forward_grounding() == "class"
    m.forward_grounding = lambda: "own"  # an attribute the instance did hold comes back as it was
    with swap_attr(m, "forward_grounding", lambda: "patched"):
        pass
    assert m.forward_grounding() == "own"


def test_swap_attr_puts_back_a_submodule_parameter_and_buffer():
    """nn.Module keeps these outside ``__dict__``; swapping one for a block must not delete it afterwards."""
    import torch

    outer = torch.nn.Module()
    outer.inner = torch.nn.Linear(2, 2)
    outer.weight = torch.nn.Parameter(torch.ones(1))
    outer.register_buffer("stat", torch.zeros(1))
    inner, weight, stat = outer.inner, outer.weight, outer.stat
    with (
        swap_attr(outer, "inner", torch.nn.Identity()),
        swap_attr(outer, "weight", torch.nn.Parameter(torch.zeros(1))),
        swap_attr(outer, "stat", torch.ones(1)),
    ):
        assert isinstance(outer.inner, torch.nn.Identity) and outer.weight.item() == 0 and outer.stat.item() == 1
    assert outer.inner is inner and outer.weight is weight and outer.stat is stat
    assert set(dict(outer.named_children())) == {"inner"} and "inner" not in vars(outer)
