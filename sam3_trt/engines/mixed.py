"""The mixed-precision pass: an FP32 export folder in, an FP16 export folder out.

Each graph's nodes get a precision from a :class:`~sam3_trt.engines.precision.PrecisionPolicy`;
onnxconverter-common (``convert_float_to_float16`` with the FP32 nodes as its block list) rewrites the
graph, keeping graph inputs and outputs FP32 so the runtime binds the same buffers. The output folder
is a normal export folder (ONNX Runtime runs it, the engine builder builds it strongly typed) whose
manifest adds ``precision``: the policy, per-graph node counts, every matmul/conv/softmax kept in FP32
and why, and the CPU FP16 estimate (:mod:`.fp16_estimate`). ``precision_report.json`` lists every
node's decision.

Checks before the folder is published: ``onnx.checker``, ONNX Runtime CPU loads and runs each graph on
the spec's example inputs with finite outputs, the declared FP32 nodes compute in FP32 and the I/O
dtypes match the spec. A failing FP16 estimate leaves the folder as ``<out>.failed``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..assets import BPE_FILE
from ..errors import ParityError, Sam3TrtError
from ..manifest import (
    graph_sources,
    make_staging,
    manifest_specs,
    publish,
    read_manifest,
    verify_files,
    write_manifest,
)
from ..specs import ALL_SPECS, SPECS, VIDEO_SPECS
from .precision import NodeDecision, PrecisionPolicy, float_tensors, plan, summarize

REPORT_FILE = "precision_report.json"


def convert_graph(src: Path, dst: Path, decisions: Sequence[NodeDecision]) -> dict[str, int]:
    """Write ``dst``: ``src`` with the FP16 nodes of ``decisions`` converted (I/O stays FP32).

    Large graphs (the vision encoder is 1.8 GB) are converted without protobuf's 2 GB serialisation:
    shapes are inferred on the weight-less graph, then weights are loaded and the converter runs with
    its own shape inference off; the result is saved with external data.

    Returns:
        ``{"constants_clipped": n, "round_trips_removed": n}`` (constants the converter clipped to
        +-10000 or 1e-7, and FP32 tensors it would have stored in FP16).
    """
    import onnx
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src), load_external_data=False)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    onnx.load_external_data_for_model(model, str(src.parent))
    float_outputs = [o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    blocked = [d.node for d in decisions if d.precision != "fp16"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = convert_float_to_float16(
            model,
            keep_io_types=True,
            disable_shape_infer=True,
            op_block_list=list(DEFAULT_OP_BLOCK_LIST),
            node_block_list=blocked,
        )
    del model
    restore_float_outputs(converted, float_outputs)
    rewired = drop_fp16_round_trips(converted)
    data = dst.with_name(dst.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save(converted, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
    return {"constants_clipped": len(caught), "round_trips_removed": rewired}


def restore_float_outputs(model: Any, names: Sequence[str]) -> None:
    """Make graph outputs ``names`` FP32 again where the converter left them FP16.

    onnxconverter-common 1.16 with ``keep_io_types`` still retypes an output produced by a blocked
    node (it appends its FP16 output cast and marks the output FP16); such a final cast becomes an FP32 cast.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    for out in graph.output:
        if out.name not in names or out.type.tensor_type.elem_type == TensorProto.FLOAT:
            continue
        node = producer[out.name]
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = TensorProto.FLOAT
        else:
            raw = f"{out.name}__fp16"
            node.output[list(node.output).index(out.name)] = raw
            graph.node.append(
                helper.make_node("Cast", [raw], [out.name], name=f"{out.name}__to_fp32", to=TensorProto.FLOAT)
            )
        out.type.tensor_type.elem_type = TensorProto.FLOAT


def drop_fp16_round_trips(model: Any) -> int:
    """Remove FP32 -> FP16 -> FP32 cast pairs between two FP32 nodes; returns how many tensors it rewired.

    onnxconverter-common wraps every blocked (FP32) node in casts: FP32 inputs, FP16 outputs. With a
    policy that keeps most nodes FP32 that would store every tensor between two FP32 nodes (the residual
    stream, LayerNorm inputs) in FP16, bringing back the overflow the policy exists to avoid. A tensor
    whose FP16 copy is only ever cast back to FP32 is wired straight to its FP32 readers instead.
    """
    from onnx import TensorProto

    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def is_cast(node: Any, to: int) -> bool:
        return node.op_type == "Cast" and any(a.name == "to" and a.i == to for a in node.attribute)

    removed: set[int] = set()
    renames: dict[str, str] = {}
    for node in graph.node:
        if not is_cast(node, TensorProto.FLOAT16) or node.output[0] in outputs:
            continue
        readers = consumers.get(node.output[0], [])
        back = [r for r in readers if is_cast(r, TensorProto.FLOAT)]
        if not back:
            continue
        for cast32 in back:
            renames[cast32.output[0]] = node.input[0]
            removed.add(id(cast32))
        if len(back) == len(readers):
            removed.add(id(node))
    if not renames:
        return 0
    kept = [n for n in graph.node if id(n) not in removed]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    for out in graph.output:
        if out.name in renames:  # a graph output fed by a dropped cast keeps its name via an Identity
            kept.append(_identity(renames[out.name], out.name))
    del graph.node[:]
    graph.node.extend(kept)
    live = {t for n in kept for t in (*n.input, *n.output)}
    stale = [v for v in graph.value_info if v.name not in live]
    for v in stale:
        graph.value_info.remove(v)
    return len(renames)


def _identity(src: str, dst: str) -> Any:
    from onnx import helper

    return helper.make_node("Identity", [src], [dst], name=f"{dst}__identity")


def check_converted(path: Path, graph: str, decisions: Sequence[NodeDecision]) -> dict[str, Any]:
    """Validate a converted graph: checker, I/O dtypes, FP32 nodes still FP32, ONNX Runtime runs it.

    Returns:
        ``{"fp16_initializers": n, "fp32_nodes_checked": n, "ort_outputs_finite": True}``.

    Raises:
        Sam3TrtError: naming the graph and what is wrong.
    """
    import onnx

    from ..ort import ort_session, run_graph

    onnx.checker.check_model(str(path))
    spec = ALL_SPECS[graph]
    model = onnx.load(str(path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    dtype_name = {
        onnx.TensorProto.FLOAT: "float32",
        onnx.TensorProto.INT64: "int64",
        onnx.TensorProto.INT32: "int32",
        onnx.TensorProto.BOOL: "bool",
    }
    for values, tensors in ((model.graph.input, spec.inputs), (model.graph.output, spec.outputs)):
        for value, tensor in zip(values, tensors, strict=True):
            got = dtype_name.get(value.type.tensor_type.elem_type, str(value.type.tensor_type.elem_type))
            if value.name != tensor.name or got != tensor.dtype:
                raise Sam3TrtError(f"{graph}: {value.name} is {got} after conversion, the spec says {tensor.dtype}")
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}
    types |= {i.name: i.data_type for i in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    kept = [d for d in decisions if d.precision == "fp32" and d.op_type in {"MatMul", "Gemm", "Conv", "Softmax"}]
    for d in kept:
        node = by_name.get(d.node)
        if node is None:
            raise Sam3TrtError(f"{graph}: node {d.node} declared FP32 is missing after conversion")
        half = [t for t in node.input if types.get(t) == onnx.TensorProto.FLOAT16]
        if half:
            raise Sam3TrtError(f"{graph}: node {d.node} ({d.reason}) was meant to stay FP32 but reads FP16 {half}")
    fp16_inits = sum(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    try:
        session = ort_session(path)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types for invalid graphs
        first = str(exc).strip().splitlines()[0][:300]
        raise Sam3TrtError(f"{graph}: ONNX Runtime cannot load the converted graph ({first})") from None
    outs = run_graph(session, graph, spec.example_inputs(seed=1))
    bad = [n for n, v in outs.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]
    if bad:
        raise Sam3TrtError(f"{graph}: ONNX Runtime gives non-finite {bad} on the converted graph")
    return {"fp16_initializers": fp16_inits, "fp32_nodes_checked": len(kept), "ort_outputs_finite": True}


def convert_export(
    onnx_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    policy: PrecisionPolicy,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
    run_estimate: bool = True,
    table: Mapping[str, Any] | None = None,
    reuse: bool = False,
    image: Any = None,
) -> dict[str, Any]:
    """Mixed-precision pass over an FP32 export folder, with checks and the FP16 estimate.

    Args:
        onnx_dir: FP32 export folder (verified against its manifest first).
        out_dir: FP16 export folder to write.
        policy: Which nodes run in FP16.
        progress: Called with one line per step.
        force: Replace an existing ``out_dir``.
        run_estimate: Run the CPU FP16 estimate (:mod:`.fp16_estimate`).
        table: Tolerance table override for the estimate (tests).
        reuse: Return ``out_dir`` as it is when it was made by this policy from these exact FP32 graphs
            (its files are verified); otherwise rebuild it.
        image: Image the estimate runs on (default: the bundled demo image).

    Returns:
        The new folder's manifest.

    Raises:
        ParityError: the estimate exceeds a tolerance (folder kept as ``<out>.failed``).
    """
    import onnx

    from .fp16_estimate import estimate

    say = progress or (lambda _m: None)
    src, out = Path(onnx_dir), Path(out_dir)
    source = read_manifest(src, kind="onnx-export")
    if source.get("precision", {}).get("mode", "fp32") != "fp32":
        raise Sam3TrtError(f"{src} is already a {source['precision']['mode']} export; pass the FP32 export folder")
    verify_files(src, source)
    if reuse and (reused := _reusable(out, source, policy, run_estimate)) is not None:
        say(f"fp16: {out} was made by policy {policy.name!r} from these graphs; reusing it")
        return reused
    if out.exists() and not force and not reuse:
        raise Sam3TrtError(f"output folder {out} exists; pass --force to replace it")
    if out.resolve() == src.resolve():
        raise Sam3TrtError(f"--out {out} is the FP32 export itself; choose another folder (e.g. {src}-fp16)")
    # every graph of the export, a --video export's tracker graphs included (same policy, same checks)
    specs = manifest_specs(source)
    if run_estimate and not set(SPECS) <= set(specs):
        raise Sam3TrtError(
            f"{src} lacks {sorted(set(SPECS) - set(specs))}: the FP16 estimate runs the image pipeline; "
            "convert without it (--no-estimate) or export every image graph"
        )
    staging = make_staging(out)
    try:
        from ..export.exporter import file_entry

        decisions: dict[str, list[NodeDecision]] = {}
        graphs: dict[str, Any] = {}
        summaries: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        for name, spec in specs.items():
            start = time.perf_counter()
            path = src / spec.onnx_file
            model = onnx.load(str(path), load_external_data=False)
            decisions[name] = plan(model, policy, float_tensors(model), graph=name)
            del model
            summaries[name] = summarize(decisions[name])
            say(
                f"fp16: {name}: {summaries[name]['fp16_nodes']} of {summaries[name]['nodes']} nodes FP16, "
                f"{len(summaries[name]['fp32_compute_nodes'])} matmul/conv/softmax kept FP32"
            )
            summaries[name]["conversion"] = convert_graph(path, staging / spec.onnx_file, decisions[name])
            summaries[name]["checks"] = check_converted(staging / spec.onnx_file, name, decisions[name])
            graphs[name] = {**file_entry(staging / spec.onnx_file), "spec": spec.to_dict()}
            seconds[name] = round(time.perf_counter() - start, 2)
            say(f"fp16: {name} converted and checked in {seconds[name]} s")
        shutil.copyfile(src / BPE_FILE, staging / BPE_FILE)
        (staging / REPORT_FILE).write_text(
            json.dumps(
                {g: [d.__dict__ for d in ds] for g, ds in decisions.items()},
                indent=1,
            )
            + "\n"
        )
        report = None
        if run_estimate:
            report = estimate(src, decisions, policy.name, progress=say, table=table, image=image)
            for line in report.lines():
                say("  " + line)
        manifest = {
            **{k: v for k, v in source.items() if k not in ("format", "graphs", "checks", "precision")},
            "sam3_trt_version": __version__,
            "graphs": {n: g for n, g in graphs.items() if n in SPECS},
            "precision": {
                "mode": "fp16",
                "policy": policy.to_dict(),
                "tool": _tool_version(),
                "source": {"folder": str(src), "graphs": graph_sources(source)},
                "graphs": summaries,
                "report_file": REPORT_FILE,
                "seconds": seconds,
            },
            "checks": {
                "source_parity": source.get("checks", {}).get("parity", {}).get("passed"),
                "fp16_estimate": report.to_dict() if report else {"status": "skipped"},
            },
        }
        if "video" in source:
            manifest["video"] = {**source["video"], "graphs": {n: g for n, g in graphs.items() if n in VIDEO_SPECS}}
            manifest["checks"]["video_fp16_estimate"] = {
                "status": "not measured",
                "reason": "the CPU FP16 estimate runs the image pipeline; the tracker graphs were checked to load "
                "and give finite outputs only",
            }
        write_manifest(staging, manifest)
        if report is not None and not report.passed:
            failed = out.with_name(out.name + ".failed")
            publish(staging, failed)
            raise ParityError(
                f"FP16 estimate of policy {policy.name!r} exceeds its tolerances, folder kept as {failed}: "
                + ", ".join(report.failures())
            )
        publish(staging, out)
        return read_manifest(out, kind="onnx-export")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _reusable(out: Path, source: dict[str, Any], policy: PrecisionPolicy, estimated: bool) -> dict[str, Any] | None:
    try:
        existing = read_manifest(out, kind="onnx-export")
        verify_files(out, existing)
    except Sam3TrtError:
        return None
    precision = existing.get("precision", {})
    same_source = precision.get("source", {}).get("graphs") == graph_sources(source)
    has_estimate = existing.get("checks", {}).get("fp16_estimate", {}).get("passed") is True or not estimated
    return existing if same_source and precision.get("policy") == policy.to_dict() and has_estimate else None


def _tool_version() -> str:
    from importlib import metadata

    return f"onnxconverter-common {metadata.version('onnxconverter-common')}"


def convert_summary(manifest: dict[str, Any], folder: Path, policy: PrecisionPolicy) -> dict[str, Any]:
    """The line ``sam3-trt fp16`` prints: FP16 node counts per graph and the estimate's verdict and worst output."""
    est = manifest["checks"]["fp16_estimate"]
    worst = {
        f"{c['graph']}.{o['name']}": o["rel_l2"] for c in est.get("cases", []) for o in c["outputs"] if o["rel_l2"] > 0
    }
    return {
        "folder": str(folder),
        "policy": policy.name,
        "fp16_nodes": {g: s["fp16_nodes"] for g, s in manifest["precision"]["graphs"].items()},
        "estimate_passed": est.get("passed"),
        "worst_rel_l2": max(worst.items(), key=lambda kv: kv[1]) if worst else None,
    }
