"""CPU-only rewrite for ONNX Runtime: attention sites as one ``com.microsoft.MultiHeadAttention`` node.

The exported graphs spell scaled dot-product attention out as ``MatMul -> Softmax -> MatMul`` (portable,
and what TensorRT's parser fuses by itself). ONNX Runtime's CPU provider runs that literally and holds
the ``[batch, heads, S, L]`` score matrix, then the probabilities: 1.7 GB each for a global block of the
ViT at 1008 px. Its contrib ``MultiHeadAttention`` kernel runs those sites with MLAS flash attention
(tiled, no score matrix). :func:`fuse_attention` rewrites every mask-free site it can prove to be plain
attention; sites with an additive mask, unknown head counts or shared intermediates stay as exported.

The rewrite is applied in memory by :class:`~sam3_trt.runtime.backends.OnnxRuntimeBackend` for the CPU
provider only; export folders keep the graphs as exported (TensorRT, parity and the FP16 pass read them).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

MS_DOMAIN = "com.microsoft"


def _constant_scalar(name: str, inits: dict[str, Any], producers: dict[str, Any]) -> float | None:
    """The value of a one-element float constant (initializer or ``Constant`` node), else ``None``."""
    from onnx import numpy_helper

    if name in inits:
        init = inits[name]
        if init.data_location == 1:  # external data is not loaded: scales are always stored inline
            return None
        arr = numpy_helper.to_array(init)
    elif name in producers and producers[name].op_type == "Constant":
        attr = next((a for a in producers[name].attribute if a.name == "value"), None)
        if attr is None:
            return None
        arr = numpy_helper.to_array(attr.t)
    else:
        return None
    if arr.size != 1 or arr.dtype.kind != "f":
        return None
    return float(arr.reshape(()))


def _split_scale(
    name: str, inits: dict[str, Any], producers: dict[str, Any], consumers: dict[str, list[Any]]
) -> tuple[str, float, Any | None]:
    """``(tensor, scale, Mul node)`` when ``name`` is ``Mul(tensor, constant)`` used once, else ``(name, 1.0, None)``."""
    node = producers.get(name)
    if node is None or node.op_type != "Mul" or len(consumers[name]) != 1:
        return name, 1.0, None
    for i in (0, 1):
        scale = _constant_scalar(node.input[1 - i], inits, producers)
        if scale is not None:
            return node.input[i], scale, node
    return name, 1.0, None


def _static_dims(shapes: dict[str, Any], name: str) -> list[int | None] | None:
    value = shapes.get(name)
    if value is None or not value.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def fuse_attention(model: Any) -> tuple[Any, int]:
    """Rewrite mask-free ``MatMul(q*a, kT*b) -> Softmax(-1) -> MatMul(., v)`` sites into ``MultiHeadAttention``.

    Args:
        model: ``onnx.ModelProto`` (external data need not be loaded); changed in place.

    Returns:
        ``(model, number of sites fused)``.
    """
    import onnx
    from onnx import helper

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    shapes = {v.name: v for v in (*inferred.value_info, *inferred.input, *inferred.output)}
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    outputs = {o.name for o in graph.output}

    removed: set[int] = set()
    inserts: dict[int, list[Any]] = {}
    position = {id(n): k for k, n in enumerate(graph.node)}
    fused = 0
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
        scores = producers.get(softmax.input[0])
        users = consumers[softmax.output[0]]
        if axis not in (-1, 3) or scores is None or scores.op_type != "MatMul" or len(users) != 1:
            continue
        out_mm = users[0]
        if out_mm.op_type != "MatMul" or out_mm.input[0] != softmax.output[0]:
            continue
        if len(consumers[scores.output[0]]) != 1 or {scores.output[0], softmax.output[0]} & outputs:
            continue
        q, q_scale, q_mul = _split_scale(scores.input[0], inits, producers, consumers)
        k_t, k_scale, k_mul = _split_scale(scores.input[1], inits, producers, consumers)
        v = out_mm.input[1]
        q_dims, k_dims, v_dims = (_static_dims(shapes, t) for t in (q, k_t, v))
        if q_dims is None or k_dims is None or v_dims is None or not len(q_dims) == len(k_dims) == len(v_dims) == 4:
            continue
        if any(shapes[t].type.tensor_type.elem_type != onnx.TensorProto.FLOAT for t in (q, k_t, v)):
            continue  # the CPU kernel is float32 only (FP16 graphs keep their MatMuls)
        heads, head_size, v_size = q_dims[1], q_dims[3], v_dims[3]
        if not heads or not head_size or not v_size:
            continue  # MultiHeadAttention needs the head count and sizes as attributes
        # kT is [B, heads, head_size, L] (the MatMul proves it); dims shape inference left open stay open
        if k_dims[1] not in (heads, None) or k_dims[2] not in (head_size, None) or v_dims[1] not in (heads, None):
            continue
        if any(id(n) in removed for n in (scores, softmax, out_mm, q_mul, k_mul) if n is not None):
            continue
        tag = f"sam3trt_mha{fused}"

        def const(name: str, values: list[int], tag: str = tag) -> str:
            full = f"{tag}_{name}"
            graph.initializer.append(onnx.numpy_helper.from_array(np.array(values, dtype=np.int64), full))
            return full

        to3 = const("to3", [0, 0, -1])
        new = [
            helper.make_node("Transpose", [q], [f"{tag}_qt"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"{tag}_qt", to3], [f"{tag}_q"]),
            helper.make_node("Transpose", [k_t], [f"{tag}_kt"], perm=[0, 3, 1, 2]),
            helper.make_node("Reshape", [f"{tag}_kt", to3], [f"{tag}_k"]),
            helper.make_node("Transpose", [v], [f"{tag}_vt"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"{tag}_vt", to3], [f"{tag}_v"]),
            helper.make_node(
                "MultiHeadAttention",
                [f"{tag}_q", f"{tag}_k", f"{tag}_v"],
                [f"{tag}_o"],
                domain=MS_DOMAIN,
                num_heads=int(heads),
                scale=float(q_scale * k_scale),
                name=f"{tag}_{softmax.name}",
            ),
            helper.make_node("Reshape", [f"{tag}_o", const("to4", [0, 0, int(heads), int(v_size)])], [f"{tag}_o4"]),
            helper.make_node("Transpose", [f"{tag}_o4"], [out_mm.output[0]], perm=[0, 2, 1, 3]),
        ]
        inserts[position[id(out_mm)]] = new
        removed.update(id(n) for n in (scores, softmax, out_mm, q_mul, k_mul) if n is not None)
        fused += 1
    if not fused:
        return model, 0
    nodes = []
    for k, n in enumerate(graph.node):
        nodes.extend(inserts.get(k, []))
        if id(n) not in removed:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    stale = [i for i in graph.initializer if i.name not in used]  # the removed Muls' scale constants
    for init in stale:
        graph.initializer.remove(init)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model, fused
