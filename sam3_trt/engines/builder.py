"""Build engines from an export folder, for TensorRT or TensorRT for RTX, behind one function.

Networks are strongly typed (precision comes from the ONNX graph: the only path TensorRT 11 keeps, and
TensorRT 10 supports with the same flag); optimisation profiles come from :mod:`sam3_trt.specs`
(min/opt/max per dynamic axis). TensorRT for RTX builds ahead of time for chosen compute capabilities
with no GPU; standard TensorRT builds on the target GPU and refuses to start without one (its objects can
crash a process that has no driver).

The engine folder is self-contained: three ``.engine`` files, the tokenizer vocabulary, and a manifest
with the target, flavour and exact version, compute capabilities, the device seen, profiles, ONNX
sha256s, build flags and time, plus the export's weights origin (for parity runs against eager).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..assets import BPE_FILE, BPE_SHA256
from ..device import GpuInfo, gpu_info
from ..errors import Sam3TrtError
from ..manifest import (
    make_staging,
    manifest_graphs,
    manifest_specs,
    publish,
    read_manifest,
    verify_files,
    write_manifest,
)
from ..specs import ALL_SPECS
from .parse import load_trt, make_logger, strongly_typed_network
from .rtx_runtime import RtxRuntimeSettings
from .targets import TARGETS, Target


@dataclasses.dataclass
class BuildOptions:
    """Builder knobs.

    Args:
        opt_level: Builder optimisation level (0-5; TensorRT's default is 3).
        workspace_gb: Workspace memory pool limit (``None``: TensorRT's default).
        hardware_compatible: TensorRT only: ``AMPERE_PLUS`` engines that run on any Ampere or newer GPU.
        version_compatible: TensorRT only: engines the same or a later TensorRT can run (they embed a lean
            runtime; the runtime allows their host code because the manifest says so).
        timing_cache: File to load and save TensorRT's timing cache (repeat builds are faster).
        tf32: Let FP32 layers use TF32 tensor cores (TensorRT's default, ~1e-3 relative error). Off by
            default so FP32 engines are FP32 and meet the FP32 parity bar; parity of TF32 engines uses the
            ``tf32`` tolerance column.
        rtx_runtime: TensorRT for RTX only: the runtime settings the folder's manifest records and every
            process running it applies (:mod:`.rtx_runtime`: kernel specialisation, CUDA graphs, shape buckets).
    """

    opt_level: int = 3
    workspace_gb: float | None = None
    hardware_compatible: bool = False
    version_compatible: bool = False
    timing_cache: Path | None = None
    tf32: bool = False
    rtx_runtime: RtxRuntimeSettings = dataclasses.field(default_factory=RtxRuntimeSettings)


PLAN_SUFFIX = ".plan.json"


def parity_column(mode: str, tf32: bool) -> str:
    """Tolerance column (:mod:`sam3_trt.tolerances`) parity of engines of this precision uses."""
    return "tf32" if mode == "fp32" and tf32 else mode


def precision_summary(export_manifest: dict[str, Any]) -> dict[str, Any]:
    """What an export's precision is (FP32, FP16 policy, INT8/FP8 Q/DQ), for plans and engine manifests."""
    precision = export_manifest.get("precision")
    if not precision:
        return {"mode": "fp32", "policy": None}
    summary: dict[str, Any] = {"mode": precision["mode"], "policy": precision.get("policy")}
    if "graphs" in precision:  # FP16 pass
        estimate = export_manifest.get("checks", {}).get("fp16_estimate", {})
        summary["fp16_nodes"] = {g: s["fp16_nodes"] for g, s in precision["graphs"].items()}
        summary["fp16_estimate_passed"] = estimate.get("passed")
    if "quantization" in precision:  # calibration: Q/DQ graphs
        summary["graphs_quantized"] = precision["graphs_quantized"]
        summary["calibration_set_sha256"] = precision["calibration_set"]["sha256"]
    return summary


def tool_commands(onnx: Path, engine: Path, graph: str, opts: BuildOptions) -> dict[str, str]:
    """The same build with ``trtexec`` and ``polygraphy convert`` (standard TensorRT on the target GPU).

    Shapes come from the specs (min/opt/max per dynamic axis); flags mirror :class:`BuildOptions`
    (strongly typed, TF32 off unless asked, optimisation level, compatibility modes).
    """
    spec = ALL_SPECS[graph]

    def dims(tensor: Any, which: str) -> tuple[int, ...]:
        return tensor.resolve(spec.sizes(which))

    def trtexec_shapes(which: str) -> str:
        return ",".join(f"{t.name}:{'x'.join(map(str, dims(t, which)))}" for t in spec.inputs)

    def polygraphy_shapes(which: str) -> str:
        return " ".join(f"{t.name}:[{','.join(map(str, dims(t, which)))}]" for t in spec.inputs)

    trtexec = [
        f"trtexec --onnx={onnx} --saveEngine={engine} --stronglyTyped",
        *(f"--{w}Shapes={trtexec_shapes(w)}" for w in ("min", "opt", "max")),
        f"--builderOptimizationLevel={opts.opt_level}",
    ]
    polygraphy = [
        f"polygraphy convert {onnx} --convert-to trt -o {engine} --strongly-typed",
        *(f"--trt-{w}-shapes {polygraphy_shapes(w)}" for w in ("min", "opt", "max")),
        f"--builder-optimization-level {opts.opt_level}",
    ]
    if opts.tf32:
        polygraphy.append("--tf32")  # Polygraphy leaves TF32 off unless asked; trtexec turns it on
    else:
        trtexec.append("--noTF32")
    if opts.workspace_gb:
        trtexec.append(f"--memPoolSize=workspace:{int(opts.workspace_gb * 1024)}M")
        polygraphy.append(f"--pool-limit workspace:{int(opts.workspace_gb * (1 << 30))}")
    if opts.version_compatible:
        trtexec.append("--versionCompatible")
        polygraphy.append("--version-compatible")
    if opts.hardware_compatible:
        trtexec.append("--hardwareCompatibilityLevel=ampere+")
        polygraphy.append("--hardware-compatibility-level ampere_plus")
    return {"trtexec": " ".join(trtexec), "polygraphy": " ".join(polygraphy)}


def build_plan(
    onnx_dir: Path, export_manifest: dict[str, Any], out_root: Path, target: Target, opts: BuildOptions
) -> dict[str, Any]:
    """What a build of ``onnx_dir`` for ``target`` will do, written before building (and kept when it cannot run here).

    Args:
        onnx_dir: Export folder (FP32 or FP16).
        export_manifest: Its manifest.
        out_root: Parent of the engine folder.
        target: Build target.
        opts: Builder options.
    """
    needs = (
        "nothing: TensorRT for RTX builds ahead of time without a GPU"
        if target.flavour == "rtx"
        else f"the target GPU, {target.description} ({target.sm}), with TensorRT 10.x or 11.x (pip install 'sam3-trt[gpu]')"
    )
    command = f"sam3-trt build --gpu {target.name} --onnx-dir {onnx_dir} --out {out_root}"
    sources = manifest_graphs(export_manifest)
    if target.name in TARGETS and target.flavour != TARGETS[target.name].flavour:
        command += f" --flavour {target.flavour}"
    return {
        "kind": "build-plan",
        "target": dataclasses.asdict(target),
        "needs": needs,
        "engine_folder": str(out_root / target.name),
        "precision": precision_summary(export_manifest),
        "graphs": {
            name: {
                "onnx": str(onnx_dir / spec.onnx_file),
                "onnx_sha256": sources[name]["sha256"],
                "engine": spec.engine_file,
                "profile": {k: [list(s) for s in v] for k, v in spec.profile().items()},
                "same_build_with": tool_commands(
                    onnx_dir / spec.onnx_file, out_root / target.name / spec.engine_file, name, opts
                ),
            }
            for name, spec in manifest_specs(export_manifest).items()
        },
        "tools_note": (
            "same_build_with: the equivalent standard-TensorRT build with trtexec or polygraphy, run on the target "
            "GPU; TensorRT for RTX targets build with `sam3-trt build` (ahead of time)"
        ),
        "options": dataclasses.asdict(opts) | {"timing_cache": str(opts.timing_cache) if opts.timing_cache else None},
        "run_on_the_target": [
            "pip install 'sam3-trt[gpu]'  # TensorRT 10.x or 11.x",
            f"copy {onnx_dir} to the GPU machine (or re-run the export there)",
            command,
        ],
    }


def _check_target_gpu(target: Target, gpu: GpuInfo, plan_path: Path) -> None:
    if target.flavour == "rtx" and target.sm == "current" and not gpu.available:
        raise Sam3TrtError(
            f"{target.name}: ComputeCapability.CURRENT builds for the local GPU and there is none ({gpu.reason})"
        )
    if target.flavour == "rtx":
        return  # ahead of time: no GPU needed
    if not gpu.available:
        raise Sam3TrtError(
            f"{target.name} ({target.description}) needs standard TensorRT, which builds on the target GPU, and this "
            f"machine has none ({gpu.reason}); the build plan is in {plan_path}: run its commands on a machine with "
            f"that GPU (`sam3-trt build --gpu {target.name} --onnx-dir EXPORT` there)"
        )
    if gpu.sm != target.sm:
        raise Sam3TrtError(
            f"asked for {target.name} ({target.sm}) but this machine has {gpu.names[0]} ({gpu.sm}); standard TensorRT "
            f"builds for the local GPU: use GPU=auto here, or build on a {target.description} (plan: {plan_path})"
        )


def build_engines(
    onnx_dir: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    target: Target,
    options: BuildOptions | None = None,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Build the engines of an export into ``out_root/<target.name>/``: its image graphs and, for an export
    made with ``--video``, its tracker graphs.

    Args:
        onnx_dir: Export folder (checked against its manifest's sha256s first).
        out_root: Parent folder for engine folders (``engines/``).
        target: From :func:`~sam3_trt.engines.targets.resolve_target`.
        options: :class:`BuildOptions`.
        progress: Called with one line per step.
        force: Replace an existing engine folder.

    Returns:
        The engine folder's manifest.
    """
    opts = options or BuildOptions()
    say = progress or (lambda _m: None)
    onnx_dir = Path(onnx_dir)
    export_manifest = read_manifest(onnx_dir, kind="onnx-export")
    verify_files(onnx_dir, export_manifest)
    out_root = Path(out_root)
    out = out_root / target.name
    if out.exists() and not force:
        raise Sam3TrtError(f"engine folder {out} exists; pass --force to rebuild it")
    plan = build_plan(onnx_dir, export_manifest, out_root, target, opts)
    plan_path = out_root / f"{target.name}{PLAN_SUFFIX}"
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    except OSError as exc:
        raise Sam3TrtError(
            f"cannot write to --out {out_root} ({exc.strerror or exc}); choose a writable folder"
        ) from None
    say(f"build plan: {plan_path}")
    gpu = gpu_info()
    _check_target_gpu(target, gpu, plan_path)
    trt = load_trt(target.flavour)
    staging = make_staging(out)
    try:
        logger = make_logger(trt)
        timings: dict[str, float] = {}
        engines: dict[str, Any] = {}
        sources = manifest_graphs(export_manifest)
        for name, spec in manifest_specs(export_manifest).items():
            say(f"build: {name} ({target.flavour} {trt.__version__}, {target.sm})")
            start = time.perf_counter()
            data = _build_one(trt, logger, onnx_dir / spec.onnx_file, name, target, opts)
            (staging / spec.engine_file).write_bytes(data)
            timings[name] = round(time.perf_counter() - start, 2)
            engines[name] = {
                "file": spec.engine_file,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "onnx_sha256": sources[name]["sha256"],
                "profile": {k: [list(s) for s in v] for k, v in spec.profile().items()},
                "spec": spec.to_dict(),
            }
            say(f"build: {name} done in {timings[name]} s ({len(data) / 1e6:.1f} MB)")
        shutil.copyfile(onnx_dir / BPE_FILE, staging / BPE_FILE)
        manifest = {
            "kind": "engines",
            "sam3_trt_version": __version__,
            "target": target.name,
            "flavour": target.flavour,
            "trt_version": str(trt.__version__),
            # CURRENT builds for the GPU it runs on: record which, so the runtime's check can match it
            "compute_capabilities": [gpu.sm if target.sm == "current" else target.sm],
            "hardware_compatibility": "ampere_plus"
            if opts.hardware_compatible and target.flavour == "tensorrt"
            else "none",
            "version_compatible": bool(opts.version_compatible and target.flavour == "tensorrt"),
            "runs_on": (
                "this or a newer TensorRT (version-compatible: the runtime allows the plan's embedded host code)"
                if opts.version_compatible and target.flavour == "tensorrt"
                else "this exact TensorRT version"
            ),
            "device_seen": list(gpu.names) if gpu.available else "built ahead of time without a GPU",
            "precision": precision_summary(export_manifest)
            | {
                "network": "strongly typed (types from the ONNX graphs)",
                "tf32": bool(opts.tf32),
                "parity_column": parity_column(precision_summary(export_manifest)["mode"], opts.tf32),
            },
            "build_flags": {k: v for k, v in dataclasses.asdict(opts).items() if k != "rtx_runtime"}
            | {"timing_cache": str(opts.timing_cache) if opts.timing_cache else None},
            **({"rtx_runtime": opts.rtx_runtime.to_manifest()} if target.flavour == "rtx" else {}),
            "build_seconds": timings,
            "graphs": engines,
            "weights": export_manifest["weights"],
            **({"weight_digests": export_manifest["weight_digests"]} if "weight_digests" in export_manifest else {}),
            "export": {"folder": str(onnx_dir), "tools": export_manifest.get("tools", {})},
            # a --video export's tracker origin (its engines are listed under graphs with the others)
            **(
                {"video": {k: v for k, v in export_manifest["video"].items() if k != "graphs"}}
                if "video" in export_manifest
                else {}
            ),
            "tokenizer": {"file": BPE_FILE, "sha256": BPE_SHA256},
        }
        write_manifest(staging, manifest)
        publish(staging, out)
        return read_manifest(out, kind="engines")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _build_one(trt: Any, logger: Any, path: Path, name: str, target: Target, opts: BuildOptions) -> bytes:
    builder = trt.Builder(logger)
    network = strongly_typed_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(path)) or parser.num_errors:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise Sam3TrtError(f"{target.flavour} cannot parse {path}: {errors}")
    config, _ = build_config(trt, builder, name, target, opts)
    cache = None
    if opts.timing_cache is not None and target.flavour == "tensorrt":
        blob = opts.timing_cache.read_bytes() if opts.timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            raise Sam3TrtError(
                f"TensorRT refused the timing cache {opts.timing_cache} (made by another TensorRT or GPU); "
                "delete it or pass another --timing-cache"
            )
    data = builder.build_serialized_network(network, config)
    if data is None:
        why = logger.last_error() or "no message from TensorRT"
        raise Sam3TrtError(f"{target.flavour} failed to build {name} for {target.sm}: {why}")
    if cache is not None:
        opts.timing_cache.write_bytes(bytes(cache.serialize()))
    return bytes(data)


def build_config(trt: Any, builder: Any, graph: str, target: Target, opts: BuildOptions) -> tuple[Any, Any]:
    """The builder config of one graph: its optimisation profile from the specs, precision and target flags.

    Args:
        trt: The flavour's TensorRT module.
        builder: ``trt.Builder``.
        graph: Graph name (its spec gives the profile).
        target: Build target.
        opts: Builder options.

    Returns:
        ``(IBuilderConfig, IOptimizationProfile)``: the profile is the one added to the config.
    """
    config = builder.create_builder_config()
    if not opts.tf32:  # TensorRT turns TF32 on by default: FP32 layers would round inputs to 10-bit mantissas
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for tensor, (lo, opt, hi) in ALL_SPECS[graph].profile().items():
        profile.set_shape(tensor, lo, opt, hi)
    if config.add_optimization_profile(profile) < 0:
        raise Sam3TrtError(f"TensorRT rejected the optimisation profile of {graph}: {ALL_SPECS[graph].profile()}")
    config.builder_optimization_level = int(opts.opt_level)
    if opts.workspace_gb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * (1 << 30)))
    if target.flavour == "rtx":
        config.num_compute_capabilities = 1
        if not config.set_compute_capability(getattr(trt.ComputeCapability, target.sm.upper()), 0):
            raise Sam3TrtError(
                f"TensorRT for RTX {trt.__version__} refused compute capability {target.sm} for {graph}: "
                "choose another --gpu target (docs: engines, Targets)"
            )
    else:
        if opts.hardware_compatible:
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        if opts.version_compatible:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    return config, profile


def build_summary(manifest: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The line ``sam3-trt build`` prints: where the engines went, for which TensorRT and compute capabilities."""
    return {
        "folder": str(folder),
        "flavour": manifest["flavour"],
        "trt_version": manifest["trt_version"],
        "compute_capabilities": manifest["compute_capabilities"],
        "device_seen": manifest["device_seen"],
        **({"rtx_runtime": manifest["rtx_runtime"]} if "rtx_runtime" in manifest else {}),
    }
