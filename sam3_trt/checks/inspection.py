"""``sam3-trt inspect``: what an export or engine folder holds, like ``polygraphy inspect model``.

For each graph: inputs and outputs (names, dtypes, shapes with the dynamic axes' min..max), node counts by
op type and by compute precision (read from the ONNX graph itself), and the manifest's provenance. For an
engine folder the graphs come from the manifest's specs and the export it was built from; on a GPU (or
through the CI doubles) TensorRT's engine inspector adds the engine's layers.

A node's precision is what it computes in: ``int8``/``fp8`` when it reads a ``DequantizeLinear`` of
that type (Q/DQ), ``fp16`` when it reads FP16 floats, ``fp32`` when it reads FP32 floats, ``other``
when it reads no floats (shapes, indices). ``Cast``, ``QuantizeLinear`` and ``DequantizeLinear``
themselves are counted apart, as conversions.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import Sam3TrtError
from ..manifest import manifest_graphs
from ..specs import ALL_SPECS, GraphSpec

_CONVERSIONS = ("Cast", "QuantizeLinear", "DequantizeLinear")


def _dims(spec: GraphSpec, shape: tuple) -> list[Any]:
    out: list[Any] = []
    for d in shape:
        if isinstance(d, str):
            dim = spec.dim(d)
            out.append(f"{d}={dim.min}..{dim.max}")
        else:
            out.append(d)
    return out


def graph_io(spec: GraphSpec) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of a graph spec, dynamic axes written ``P=1..16``."""
    return {
        side: [{"name": t.name, "dtype": t.dtype, "shape": _dims(spec, t.shape)} for t in tensors]
        for side, tensors in (("inputs", spec.inputs), ("outputs", spec.outputs))
    }


def node_precisions(path: Path) -> dict[str, Any]:
    """Node counts of an ONNX file by op type and by compute precision (weights are not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.input, *inferred.output)}
    types |= {i.name: i.data_type for i in graph.initializer}
    tp = onnx.TensorProto
    float_types = {tp.FLOAT: "fp32", tp.FLOAT16: "fp16", tp.BFLOAT16: "bf16", tp.DOUBLE: "fp64"}
    producers = {o: n for n in graph.node for o in n.output}
    quantized = {}
    for n in graph.node:
        if n.op_type == "DequantizeLinear":
            source = types.get(n.input[0])
            if source is None and n.input[0] in producers:  # quantized on the fly: QuantizeLinear's output type
                source = next((a.i for a in producers[n.input[0]].attribute if a.name == "output_dtype"), tp.INT8)
            quantized[n.output[0]] = "fp8" if source in (tp.FLOAT8E4M3FN, tp.FLOAT8E5M2) else "int8"
    by_precision: Counter[str] = Counter()
    for n in graph.node:
        if n.op_type in _CONVERSIONS:
            by_precision["conversion"] += 1
            continue
        q = [quantized[i] for i in n.input if i in quantized]
        if q:
            by_precision[q[0]] += 1
            continue
        floats = {float_types[types[i]] for i in n.input if types.get(i) in float_types}
        by_precision["fp16" if "fp16" in floats else "fp32" if "fp32" in floats else min(floats, default="other")] += 1
    return {
        "nodes": len(graph.node),
        "by_precision": dict(sorted(by_precision.items())),
        "by_op": dict(Counter(n.op_type for n in graph.node).most_common()),
    }


def inspect_folder(path: str | Path, layers: bool = True) -> dict[str, Any]:
    """Everything ``sam3-trt inspect`` prints, as data.

    Args:
        path: Export folder or engine folder.
        layers: For engine folders on a GPU, add TensorRT's layer information.

    Raises:
        Sam3TrtError: not an artifact folder.
    """
    from ..manifest import read_manifest
    from ..specs import specs_from_dict

    folder = Path(path)
    manifest = read_manifest(folder)
    kind = manifest.get("kind")
    if kind not in ("onnx-export", "engines"):
        raise Sam3TrtError(f"{folder} holds {kind!r} artifacts; inspect reads export and engine folders")
    report: dict[str, Any] = {
        "folder": str(folder),
        "kind": kind,
        "precision": manifest.get("precision", {}).get("mode", "fp32"),
        "weights": manifest.get("weights", {}),
        "provenance": {
            k: manifest[k]
            for k in ("sam3_trt_version", "tools", "opset", "target", "flavour", "trt_version", "compute_capabilities")
            if k in manifest
        },
        "graphs": {},
    }
    onnx_dir = folder if kind == "onnx-export" else Path(manifest.get("export", {}).get("folder", ""))
    for name, entry in manifest_graphs(manifest).items():
        spec = specs_from_dict({name: entry["spec"]})[name] if "spec" in entry else ALL_SPECS[name]
        info: dict[str, Any] = {"file": entry.get("file"), **graph_io(spec)}
        if kind == "engines":
            info["bytes"] = entry.get("bytes")
            info["profile"] = entry.get("profile")
        source = onnx_dir / ALL_SPECS[name].onnx_file
        if source.is_file():
            info["onnx"] = str(source)
            info |= node_precisions(source)
        else:
            info["onnx"] = f"{source} (not found: node counts need the export the engines were built from)"
        report["graphs"][name] = info
    if kind == "engines" and layers:
        report["engine_layers"] = _engine_layers(folder, manifest)
    return report


def _engine_layers(folder: Path, manifest: dict[str, Any]) -> dict[str, Any] | str:
    """TensorRT's engine inspector output per graph, or why it is not available here."""
    from ..device import gpu_info
    from ..runtime.artifacts import engine_mismatch, installed_trt_version

    gpu = gpu_info()
    why = engine_mismatch(manifest, gpu, installed_trt_version(manifest.get("flavour", "tensorrt")))
    if why is not None:
        return f"not available: {why} (layer information needs the engines loaded on their GPU)"
    import json

    from ..runtime.backends.tensorrt import TensorRTBackend

    out = {}
    with TensorRTBackend(folder, manifest) as backend:
        trt = backend.trt
        for name, engine in backend.engines.items():
            inspector = engine.create_engine_inspector()
            text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
            try:
                out[name] = json.loads(text)
            except ValueError:
                out[name] = text
    return out


def format_inspect(report: dict[str, Any]) -> str:
    """Human-readable rendering of :func:`inspect_folder`."""
    lines = [
        f"{report['folder']}: {report['kind']}, precision {report['precision']}, weights {report['weights'].get('kind')}",
    ]
    for key, value in report["provenance"].items():
        lines.append(f"  {key}: {value}")
    for name, g in report["graphs"].items():
        lines.append(f"{name} ({g.get('file')})")
        for side in ("inputs", "outputs"):
            for t in g[side]:
                shape = "[" + ", ".join(str(d) for d in t["shape"]) + "]"
                lines.append(f"  {side[:-1]:<6} {t['name']:<16} {t['dtype']:<8} {shape}")
        if "by_precision" in g:
            counts = ", ".join(f"{k} {v}" for k, v in g["by_precision"].items())
            lines.append(f"  nodes  {g['nodes']} ({counts})")
            top = ", ".join(f"{k} {v}" for k, v in list(g["by_op"].items())[:8])
            lines.append(f"  ops    {top}{', ...' if len(g['by_op']) > 8 else ''}")
        else:
            lines.append(f"  nodes  {g['onnx']}")
    layers = report.get("engine_layers")
    if isinstance(layers, str):
        lines.append(f"engine layers: {layers}")
    elif isinstance(layers, dict):
        for name, info in layers.items():
            count = len(info.get("Layers", [])) if isinstance(info, dict) else "?"
            lines.append(f"engine layers: {name}: {count}")
    return "\n".join(lines)
