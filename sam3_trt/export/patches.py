"""Reversible patches applied to the upstream ``sam3`` package.

Nothing here edits site-packages: every patch is a context manager that swaps an attribute and
restores it on exit, so eager reference runs and exports can be interleaved in one process.

Two groups:

* :func:`cpu_compat` makes sam3 0.1.4 build and run without an accelerator (it hard-codes
  ``device="cuda"`` in ``PositionEmbeddingSine.__init__`` and ``TransformerDecoder.__init__`` and calls
  ``Tensor.pin_memory()`` in box encoding). Used for both eager reference runs and exports.
* :func:`export_patches` rewrites the few spots the dynamo ONNX exporter cannot trace with dynamic
  prompt/box counts, and routes box pooling through :func:`sam3_trt.export.roi_align.roi_align` instead
  of ``torchvision.ops.roi_align`` (which exports to ONNX ``RoiAlign``, a TensorRT plugin that TensorRT
  for RTX does not ship).
* :func:`empty_position_caches` keeps exports independent of what ran before them.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

_FACTORIES = ("zeros", "ones", "arange", "empty", "full", "tensor", "linspace", "rand", "randn")


class _DeviceRedirect(types.ModuleType):
    """A stand-in for the ``torch`` module inside one sam3 module.

    Factory calls with ``device="cuda"`` are redirected to ``device``; everything else is forwarded.
    """

    def __init__(self, torch_module: Any, device: str) -> None:
        super().__init__("torch")
        self._torch = torch_module
        self._device = device

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._torch, name)
        if name not in _FACTORIES:
            return attr

        def factory(*args: Any, **kwargs: Any) -> Any:
            dev = kwargs.get("device")
            if dev is not None and str(dev).startswith("cuda"):
                kwargs["device"] = self._device
            return attr(*args, **kwargs)

        return factory


@contextlib.contextmanager
def swap_attr(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Set ``obj.name = value`` for the duration of the block, then restore it exactly.

    Only what ``obj`` itself held is restored: patching a method on an instance leaves no instance
    attribute behind (a leftover bound method changes how torch.export records module paths).
    """
    missing = object()
    own = getattr(obj, "__dict__", None)
    old = own.get(name, missing) if own is not None else getattr(obj, name, missing)
    if old is missing and own is not None:
        # an nn.Module keeps submodules, parameters and buffers in its own stores, not in __dict__: restore
        # them there (deleting the attribute afterwards would remove the submodule)
        for store in ("_modules", "_parameters", "_buffers"):
            managed = own.get(store)
            if isinstance(managed, dict) and name in managed:
                old = managed[name]
                break
    setattr(obj, name, value)
    try:
        yield
    finally:
        if old is missing:
            delattr(obj, name)
        else:
            setattr(obj, name, old)


def _pin_memory_noop(self: Any, *args: Any, **kwargs: Any) -> Any:
    # Pinning only matters for async host-to-device copies; on a CPU-only run it is a no-op.
    return self


@contextlib.contextmanager
def cpu_compat(device: str = "cpu") -> Iterator[None]:
    """Let sam3 0.1.4 be constructed and run on ``device`` (default CPU) without CUDA.

    Args:
        device: Device that hard-coded ``"cuda"`` factory calls are redirected to.
    """
    import torch
    from sam3.model import decoder, position_encoding

    with contextlib.ExitStack() as stack:
        for module in (position_encoding, decoder):
            stack.enter_context(swap_attr(module, "torch", _DeviceRedirect(torch, device)))
        if not str(device).startswith("cuda"):
            stack.enter_context(swap_attr(torch.Tensor, "pin_memory", _pin_memory_noop))
        yield


def _encode_xy_traceable(self: Any, x: Any, y: Any) -> Any:
    """``PositionEmbeddingSine._encode_xy`` without ``len()`` asserts (symbolic under export)."""
    import torch

    x_embed = x * self.scale
    y_embed = y * self.scale
    dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
    dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
    pos_x = x_embed[:, None] / dim_t
    pos_y = y_embed[:, None] / dim_t
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    return pos_x, pos_y


def _is_right_padded_traceable(mask: Any) -> Any:
    # Upstream checks this with torch._assert_async, which has no ONNX lowering. The runtime
    # builds right-padded masks itself (see sam3_trt.specs), so the graph does not re-check.
    import torch

    return torch.ones((), dtype=torch.bool)


def _encode_boxes_native(self: Any, boxes: Any, boxes_mask: Any, boxes_labels: Any, img_feats: Any) -> Any:
    """``SequenceGeometryEncoder._encode_boxes`` with a traceable, plugin-free RoIAlign.

    Upstream unbinds the boxes per prompt (a Python list whose length would fix the prompt count in
    the graph) and pins host memory; here the boxes stay one ``[P, N, 4]`` tensor. Everything else is
    upstream's computation in upstream's order.
    """
    import torch
    from sam3.model.box_ops import box_cxcywh_to_xyxy

    from .roi_align import roi_align

    boxes_embed = None
    if self.boxes_direct_project is not None:
        boxes_embed = self.boxes_direct_project(boxes)
    if self.boxes_pool_project is not None:
        height, width = img_feats.shape[-2:]
        scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
        boxes_xyxy = box_cxcywh_to_xyxy(boxes) * scale.view(1, 1, 4)
        sampled = roi_align(img_feats, boxes_xyxy.float().transpose(0, 1), self.roi_size)
        proj = self.boxes_pool_project(sampled)
        proj = proj.view(boxes.shape[1], boxes.shape[0], self.d_model).transpose(0, 1)
        boxes_embed = proj if boxes_embed is None else boxes_embed + proj
    if self.boxes_pos_enc_project is not None:
        cx, cy, w, h = boxes.unbind(-1)
        enc = self.pos_enc.encode_boxes(cx.flatten(), cy.flatten(), w.flatten(), h.flatten())
        enc = enc.view(boxes.shape[0], boxes.shape[1], enc.shape[-1])
        proj = self.boxes_pos_enc_project(enc)
        boxes_embed = proj if boxes_embed is None else boxes_embed + proj
    type_embed = self.label_embed(boxes_labels.long())
    return type_embed + boxes_embed, boxes_mask


def _static_rpb(original: Any) -> Any:
    def get_rpb_matrix(self: Any, reference_boxes: Any, feat_size: Any) -> Any:
        # Upstream passes (spatial_shapes[0, 0], spatial_shapes[0, 1]): tensor elements, data-dependent
        # under export. The graphs have a static 72x72 level (specs.DECODER), which is exactly the size
        # the decoder precomputed its coordinate cache for (resolution // stride).
        return original(self, reference_boxes, self.compilable_stored_size)

    return get_rpb_matrix


def _skip_empty_points(original: Any) -> Any:
    def encode_points(self: Any, points: Any, points_mask: Any, points_labels: Any, img_feats: Any) -> Any:
        # The graphs take no point prompts (sam3's image API has none), so the point sequence is always
        # empty. Upstream still runs projections, grid_sample and reshapes on the empty tensors, which
        # export to Reshape nodes with a 0 beside a -1 (invalid ONNX). Empty in, empty out.
        if points.shape[0] == 0:
            import torch

            return torch.zeros((0, points.shape[1], self.d_model), dtype=points.dtype), points_mask
        return original(self, points, points_mask, points_labels, img_feats)

    return encode_points


@contextlib.contextmanager
def export_patches() -> Iterator[None]:
    """Patches that make the decoder traceable with dynamic prompt and box counts.

    * ``PositionEmbeddingSine._encode_xy``: drop the ``len(x) == len(y)`` assert.
    * ``TransformerDecoder._get_rpb_matrix``: use the static feature size (72x72), not tensor elements.
    * ``SequenceGeometryEncoder._encode_points``: the (always empty) point sequence is built directly.
    * ``geometry_encoders.is_right_padded``: drop the async assert (no ONNX lowering).
    * ``SequenceGeometryEncoder._encode_boxes``: one batched, matmul-based RoIAlign (no plugin).
    """
    from sam3.model import decoder, geometry_encoders, position_encoding

    rpb = decoder.TransformerDecoder._get_rpb_matrix
    with contextlib.ExitStack() as stack:
        stack.enter_context(swap_attr(decoder.TransformerDecoder, "_get_rpb_matrix", _static_rpb(rpb)))
        stack.enter_context(swap_attr(position_encoding.PositionEmbeddingSine, "_encode_xy", _encode_xy_traceable))
        encoder_cls = geometry_encoders.SequenceGeometryEncoder
        stack.enter_context(swap_attr(encoder_cls, "_encode_points", _skip_empty_points(encoder_cls._encode_points)))
        stack.enter_context(swap_attr(geometry_encoders, "is_right_padded", _is_right_padded_traceable))
        stack.enter_context(swap_attr(geometry_encoders.SequenceGeometryEncoder, "_encode_boxes", _encode_boxes_native))
        yield


@contextlib.contextmanager
def empty_position_caches(model: Any) -> Iterator[None]:
    """Trace every ``PositionEmbeddingSine`` with an empty cache, and restore the cache afterwards.

    The sine encodings are cached per feature size on first use. Tracing a warm cache bakes the
    encodings into the graph as large constants (85 MB at 288x288); tracing a cold one computes them
    with a few ops, and torch.export writes traced values into the cache. Either way the graph would
    depend on what ran before the export; an empty, restored cache makes exports reproducible.
    """
    from sam3.model.position_encoding import PositionEmbeddingSine

    with contextlib.ExitStack() as stack:
        for module in model.modules():
            if isinstance(module, PositionEmbeddingSine):
                stack.enter_context(swap_attr(module, "cache", {}))
        yield
