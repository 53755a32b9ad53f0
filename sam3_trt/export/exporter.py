"""Export sam3's image model to the three ONNX graphs of :mod:`sam3_trt.specs`, with checks.

``export(...)`` writes into a hidden sibling folder and renames it into place only after every check
passed, so a failed or interrupted export never leaves a folder that looks complete. Checks:

1. ``onnx.checker`` on each graph (with external data);
2. parity of every graph and of the chained pipeline against eager (:mod:`.graph_parity`);
3. TensorRT for RTX's ONNX parser (no GPU needed) imports each graph with zero errors.

A failed check still writes the folder (as ``<out>.failed``) with its manifest, for inspection, and
raises :class:`~sam3_trt.errors.ParityError` naming each failing output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..assets import BPE_FILE, BPE_SHA256, bpe_path
from ..errors import ParityError, Sam3TrtError
from ..manifest import MANIFEST_FILE, make_staging, publish, read_manifest, write_manifest
from ..specs import SPECS, VIDEO_SPECS, GraphSpec
from ..weights import tensor_digests
from .model import WeightsOrigin, sha256_file
from .patches import cpu_compat, empty_position_caches, export_patches
from .wrappers import WRAPPERS

OPSET = 18
#: Node metadata key holding the torch module path of the node (kept; everything else is stripped).
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
#: Trace with sizes >= 2 on every dynamic axis: torch.export specialises axes traced at size 1.
TRACE_SIZES = {"B": 2, "P": 2, "N": 2, "O": 2, "M": 2, "Q": 3, "K": 2, "S": 288}


@dataclasses.dataclass
class ExportOptions:
    """Knobs of one export.

    Args:
        graphs: Graphs to export (default: all three).
        simplify: Run onnxslim on each graph (parity is checked on the simplified files).
        parity: Run parity against eager.
        rtx_parse: Parse each graph with TensorRT for RTX (skipped with a note when it is not installed).
        vision_batches: Batch sizes for vision parity.
        force: Replace an existing export folder.
    """

    graphs: Sequence[str] = tuple(SPECS)
    simplify: bool = False
    parity: bool = True
    rtx_parse: bool = True
    vision_batches: Sequence[int] = (1,)
    force: bool = False


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes the exported bytes."""
    from importlib import metadata

    versions = {"python": platform.python_version(), "sam3_trt": __version__}
    for dist in ("torch", "torchvision", "sam3", "onnx", "onnxscript", "onnxruntime", "onnxslim", "tensorrt_rtx_cu13"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _dynamic_shapes(spec: GraphSpec) -> dict[str, Any]:
    import torch

    dims = {d.name: torch.export.Dim(d.name, min=d.min, max=d.max) for d in spec.dims}
    return {t.name: ({i: dims[n] for i, n in t.dynamic_axes().items()} or None) for t in spec.inputs}


def export_graph(model: Any, spec: GraphSpec, path: Path, wrapper: Any = None, patches: Any = None) -> None:
    """Export one graph to ``path`` (``{name}.onnx`` plus ``{name}.onnx.data``).

    Args:
        model: Eager sam3 image model (or the tracker, with ``wrapper``).
        spec: Graph spec (names, dtypes, dynamic axes).
        path: Destination ``.onnx`` file.
        wrapper: The module to export (default: the image graph's wrapper over ``model``).
        patches: Context manager of export-only patches (default: the image model's).
    """
    import torch

    wrapper = (wrapper if wrapper is not None else WRAPPERS[spec.name](model)).eval()
    sizes = {d.name: TRACE_SIZES[d.name] for d in spec.dims}
    feeds = spec.example_inputs(sizes)
    args = tuple(torch.from_numpy(feeds[n]) for n in spec.input_names)
    patches = patches if patches is not None else export_patches()
    with torch.inference_mode(False), torch.no_grad(), cpu_compat(), patches, empty_position_caches(model):
        program = torch.onnx.export(
            wrapper,
            args,
            dynamo=True,
            opset_version=OPSET,
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_shapes=_dynamic_shapes(spec),
            optimize=True,
            verbose=False,
        )
    _strip_trace_metadata(program.model)
    # Always external data, under one fixed file name, so bytes (and hashes) do not depend on size.
    program.save(str(path), external_data=True)
    _check_io(spec, path)


def _strip_trace_metadata(model: Any) -> None:
    """Drop trace metadata (Python stack traces with absolute paths, FX names, the export signature).

    Keeps each node's module path (:data:`NAME_SCOPES_KEY`): the mixed-precision policy matches on it.

    It makes the bytes depend on where the code is installed and on what ran before the export; the
    graph itself is unchanged.
    """
    model.metadata_props.clear()
    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        graph.metadata_props.clear()
        values = [*graph.inputs, *graph.outputs]
        if hasattr(graph, "initializers"):
            values += list(graph.initializers.values())
        for node in graph.all_nodes() if hasattr(graph, "all_nodes") else graph:
            scopes = node.metadata_props.get(NAME_SCOPES_KEY)
            node.metadata_props.clear()
            if scopes is not None:  # module paths: path-independent, read by the precision policy
                node.metadata_props[NAME_SCOPES_KEY] = scopes
            values += list(node.outputs)
        for value in values:
            value.metadata_props.clear()


def _check_io(spec: GraphSpec, path: Path) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != spec.input_names or got_out != spec.output_names:
        raise RuntimeError(
            f"{path.name}: graph I/O {got_in} -> {got_out} differs from spec {spec.input_names} -> {spec.output_names}"
        )
    onnx.checker.check_model(str(path))


def simplify_graph(path: Path) -> None:
    """Simplify ``path`` in place with onnxslim (parity is re-checked on the result)."""
    try:
        import onnxslim
    except ImportError:
        raise Sam3TrtError("--simplify needs onnxslim: pip install onnxslim (or make install)") from None
    import onnx

    slim = onnxslim.slim(str(path))
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save(slim, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)


def _prepare_out(out_dir: Path, force: bool) -> Path:
    """Check ``out_dir`` may be (over)written and make the hidden staging folder beside it."""
    if out_dir.exists() and not force:
        if (out_dir / MANIFEST_FILE).exists():
            raise Sam3TrtError(f"output folder {out_dir} already holds an export; pass --force to replace it")
        if any(out_dir.iterdir()):
            raise Sam3TrtError(f"output folder {out_dir} is not empty; choose another --out or pass --force")
    return make_staging(out_dir)


def rtx_parse_checks(folder: Path, graphs: Sequence[str]) -> dict[str, Any]:
    """Parse each graph with TensorRT for RTX; ``{"status": "skipped", ...}`` when it is not installed."""
    from ..engines.parse import parse_onnx, rtx_available

    if not rtx_available():
        return {"status": "skipped", "reason": "tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')"}
    specs = {**SPECS, **VIDEO_SPECS}
    results = {g: parse_onnx(folder / specs[g].onnx_file, flavour="rtx").to_dict() for g in graphs}
    ok = all(r["ok"] for r in results.values())
    return {"status": "passed" if ok else "failed", "graphs": results}


def export(
    model: Any,
    origin: WeightsOrigin,
    out_dir: str | os.PathLike[str],
    options: ExportOptions | None = None,
    progress: Callable[[str], None] | None = None,
    tracker: Any = None,
) -> dict[str, Any]:
    """Export, check and publish the graphs of ``model`` (and of the video tracker) to ``out_dir``.

    Args:
        model: Eager sam3 image model (:func:`~sam3_trt.export.model.load_model`).
        origin: Where its weights came from (recorded in the manifest).
        out_dir: Destination folder.
        options: :class:`ExportOptions`.
        progress: Called with one line per step.
        tracker: ``(tracker, WeightsOrigin)`` from :func:`~sam3_trt.export.tracker_model.load_tracker`: also
            export the video graphs (:data:`~sam3_trt.specs.VIDEO_SPECS`: the vision graph with the tracker's
            neck, from ``model`` built with ``video=True``, and the tracker's three), each checked against
            upstream (``checks.video_parity``) and parsed by TensorRT for RTX.

    Returns:
        The manifest written to ``out_dir/manifest.json``.

    Raises:
        Sam3TrtError: unwritable or occupied output folder.
        ParityError: a parity or parser check failed (the folder is left as ``<out>.failed``).
    """
    from .graph_parity import run_parity

    opts = options or ExportOptions()
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    unknown = [g for g in opts.graphs if g not in SPECS]
    if unknown:
        raise Sam3TrtError(f"unknown graphs {unknown}; expected a subset of {list(SPECS)}")
    if tracker is not None:
        from .tracker_model import check_video_model

        check_video_model(model)
    # before any export patch runs: what `load_state_dict` on a model built from this folder is checked against
    digests = tensor_digests(model.state_dict())
    tracker_digests = tensor_digests(tracker[0].state_dict()) if tracker is not None else None
    staging = _prepare_out(out, opts.force)
    try:
        timings: dict[str, float] = {}
        files: dict[str, Any] = {}
        for name in opts.graphs:
            spec = SPECS[name]
            path = staging / spec.onnx_file
            say(f"export: {name} (torch.onnx dynamo, opset {OPSET})")
            start = time.perf_counter()
            export_graph(model, spec, path)
            if opts.simplify:
                say(f"export: simplifying {name} with onnxslim")
                simplify_graph(path)
            timings[name] = round(time.perf_counter() - start, 2)
            files[name] = file_entry(path)
        video_files: dict[str, Any] = {}
        if tracker is not None:
            from .tracker_export import export_tracker, export_video_vision

            say("export: video_vision_encoder (torch.onnx dynamo)")
            video_files["video_vision_encoder"] = file_entry(export_video_vision(model, staging))
            for path in export_tracker(tracker[0], staging, progress=say):
                video_files[path.stem] = file_entry(path)
        shutil.copyfile(bpe_path(), staging / BPE_FILE)

        checks: dict[str, Any] = {}
        release_memory()  # the exporter's graph copies are garbage now; parity needs the room
        if opts.parity and set(opts.graphs) == set(SPECS):
            report = run_parity(model, staging, vision_batches=opts.vision_batches, progress=say)
            checks["parity"] = report.to_dict()
            for line in report.lines():
                say("  " + line)
        else:
            checks["parity"] = {"status": "skipped", "reason": "parity needs all three graphs and was not disabled"}
            report = None
        video_report = None
        if tracker is not None and opts.parity:
            from .tracker_parity import tracker_parity, video_vision_parity

            release_memory()
            say("parity: video graphs vs upstream (vision neck levels, tracker methods)")
            video_report = video_vision_parity(model, staging, opts.vision_batches)
            video_report.cases += tracker_parity(tracker[0], staging).cases
            checks["video_parity"] = video_report.to_dict()
            for line in video_report.lines():
                say("  " + line)
        if opts.rtx_parse:
            say("check: TensorRT for RTX ONNX parser")
            checks["rtx_parse"] = rtx_parse_checks(staging, [*opts.graphs, *video_files])
        manifest = {
            "kind": "onnx-export",
            "sam3_trt_version": __version__,
            "opset": OPSET,
            "weights": origin.to_dict(),
            "weight_digests": {"image": digests, **({"tracker": tracker_digests} if tracker is not None else {})},
            "model": {"variant": origin.variant, "parameters": sum(p.numel() for p in model.parameters())},
            "graphs": {n: {**files[n], "spec": SPECS[n].to_dict()} for n in opts.graphs},
            "tokenizer": {"file": BPE_FILE, "sha256": BPE_SHA256},
            "tools": tool_versions(),
            "export_seconds": timings,
            "simplified": opts.simplify,
            "checks": checks,
        }
        if tracker is not None:
            manifest["video"] = {
                "weights": tracker[1].to_dict(),
                "parameters": sum(p.numel() for p in tracker[0].parameters()),
                "graphs": {n: {**video_files[n], "spec": VIDEO_SPECS[n].to_dict()} for n in video_files},
            }
        write_manifest(staging, manifest)
        failures = report.failures() if report is not None else []
        if video_report is not None:
            failures += video_report.failures()
        rtx = checks.get("rtx_parse", {})
        if rtx.get("status") == "failed":
            failures += [
                f"{g}: TensorRT for RTX parser: {r['errors']}" for g, r in rtx["graphs"].items() if not r["ok"]
            ]
        if failures:
            failed = out.with_name(out.name + ".failed")
            publish(staging, failed)
            raise ParityError(
                f"export checks failed ({len(failures)}), folder kept as {failed}:\n" + "\n".join(failures)
            )
        publish(staging, out)
        return read_manifest(out, kind="onnx-export")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def file_entry(path: Path) -> dict[str, Any]:
    """Manifest entry of a graph file: name, sha256, external data file and its sha256, bytes."""
    entry: dict[str, Any] = {"file": path.name, "sha256": sha256_file(path), "file_bytes": path.stat().st_size}
    data = path.with_name(path.name + ".data")
    if data.exists():
        entry["data_file"] = data.name
        entry["data_sha256"] = sha256_file(data)
        entry["data_bytes"] = data.stat().st_size
        entry["bytes"] = path.stat().st_size + data.stat().st_size
    return entry


def summary(manifest: dict[str, Any]) -> str:
    """Short JSON summary of an export (files and check status)."""
    parity = manifest["checks"].get("parity", {})
    return json.dumps(
        {
            "weights": manifest["weights"]["kind"],
            "graphs": {n: g["sha256"][:16] for n, g in manifest["graphs"].items()},
            "parity_passed": parity.get("passed"),
            "rtx_parse": manifest["checks"].get("rtx_parse", {}).get("status"),
            **(
                {
                    "video_graphs": {n: g["sha256"][:16] for n, g in manifest["video"]["graphs"].items()},
                    "video_parity_passed": manifest["checks"].get("video_parity", {}).get("passed"),
                }
                if "video" in manifest
                else {}
            ),
        }
    )


def export_from_weights(
    out_dir: Path,
    options: ExportOptions,
    variant: str = "full",
    checkpoint: Path | None = None,
    from_hf: bool = False,
    random_weights: bool = False,
    seed: int = 0,
    allow_missing: bool = False,
    video: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``sam3-trt export``: load the weights (and with ``video`` the tracker's), then :func:`export`.

    Args:
        out_dir: Export folder to write.
        options: What to check and how.
        variant: ``full`` (the real architecture) or ``tiny`` (same classes, reduced).
        checkpoint: ``sam3.pt`` (or ``.safetensors``) in the official layout.
        from_hf: Download facebook/sam3 from the Hugging Face hub (gated, needs network).
        random_weights: Deterministic random weights (``seed``).
        seed: Seed of the random weights.
        allow_missing: Accept a checkpoint with missing keys (they keep random values).
        video: Also export the video graphs (``tracker.*`` and ``sam2_convs`` weights of the same checkpoint).
        progress: Called with progress lines (warnings about the checkpoint's keys included).

    Returns:
        The export's manifest.
    """
    from .model import load_model

    say = progress or (lambda _msg: None)
    say(f"loading sam3 ({variant})")
    model, origin = load_model(
        variant=variant,
        checkpoint=checkpoint,
        from_hf=from_hf,
        random_weights=random_weights,
        seed=seed,
        allow_missing=allow_missing,
        video=video,
    )
    say(f"weights: {origin.describe()}")
    if origin.unexpected_keys:
        say(
            f"warning: checkpoint has {len(origin.unexpected_keys)} keys the model does not use: {origin.unexpected_keys[:5]}"
        )
    if origin.missing_keys:
        say(f"warning: {len(origin.missing_keys)} keys missing from the checkpoint kept random values")
    tracker = None
    if video:
        from .tracker_model import load_tracker

        say(f"loading sam3's video tracker ({variant})")
        tracker = load_tracker(variant, origin.path if origin.kind != "random" else None, seed, allow_missing)
        if tracker[1].missing_keys:
            say(f"warning: {len(tracker[1].missing_keys)} tracker keys missing from the checkpoint kept random values")
    return export(model, origin, out_dir, options, progress=say, tracker=tracker)
