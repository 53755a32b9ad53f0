"""``sam3-trt fp16``, ``build``, ``calibrate``: precision passes and engines."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    Ui,
    artifacts_option,
    echo_json,
    force_option,
    handle_errors,
    out_dir_option,
    path_option,
    shape_buckets_option,
)


@click.command()
@click.option(
    "--gpu", "gpu_name", required=True, help="Target GPU: 5090, 4090, 3090, a100, h100, l4, t4, orin, smXY, or auto."
)
@path_option("--onnx-dir", help="Export folder (sam3-trt export).", required=True)
@path_option("--out", "out_root", help="Parent folder; engines go to OUT/<target>/.", default=Path("engines"),
             show_default=True)  # fmt: skip
@click.option(
    "--flavour",
    type=click.Choice(["rtx", "tensorrt"]),
    default=None,
    help="Override the target's default (RTX-class GPUs: rtx; data-centre/Jetson: tensorrt).",
)
@click.option(
    "--opt-level", type=click.IntRange(0, 5), default=3, show_default=True, help="Builder optimisation level."
)
@click.option("--workspace-gb", type=float, default=None, help="Workspace memory limit in GB.")
@click.option("--hardware-compatible", is_flag=True, help="TensorRT: AMPERE_PLUS engines (any Ampere or newer GPU).")
@click.option(
    "--version-compatible", is_flag=True, help="TensorRT: engines the same or later TensorRT versions can run."
)
@path_option("--timing-cache", help="TensorRT timing cache file.")
@click.option(
    "--tf32", is_flag=True, help="Let FP32 layers use TF32 tensor cores (faster, ~1e-3 relative error; off by default)."
)
@click.option(
    "--kernel-specialization",
    type=click.Choice(["eager", "lazy", "none"]),
    default="eager",
    show_default=True,
    help="TensorRT for RTX: when kernels for a new input shape are compiled (eager: on its first run; lazy: "
    "in the background, fallback kernels meanwhile). Recorded in the manifest, applied at run time.",
)
@click.option(
    "--cuda-graphs",
    type=click.Choice(["disabled", "whole_graph_capture"]),
    default="disabled",
    show_default=True,
    help="TensorRT for RTX: capture and replay a CUDA graph per shape. Recorded in the manifest.",
)
@shape_buckets_option(
    "TensorRT for RTX: prompt, box and text-batch counts the processor pads to (few shapes to compile); "
    "'none' runs exact counts. Recorded in the manifest."
)
@force_option("Replace an existing engine folder.")
@click.pass_obj
@handle_errors
def build(
    ui: Ui,
    gpu_name: str,
    onnx_dir: Path,
    out_root: Path,
    flavour: str | None,
    opt_level: int,
    workspace_gb: float | None,
    hardware_compatible: bool,
    version_compatible: bool,
    timing_cache: Path | None,
    tf32: bool,
    kernel_specialization: str,
    cuda_graphs: str,
    shape_buckets: str,
    force: bool,
) -> None:
    """Build TensorRT (on the target GPU) or TensorRT for RTX (ahead of time, no GPU needed) engines."""
    from ..device import gpu_info
    from ..engines.builder import BuildOptions, build_engines, build_summary
    from ..engines.rtx_runtime import RtxRuntimeSettings, parse_buckets
    from ..engines.targets import resolve_target

    rtx_runtime = RtxRuntimeSettings(
        kernel_specialization, cuda_graphs, parse_buckets(shape_buckets, "--shape-buckets")
    )
    target = resolve_target(gpu_name, gpu_info(), flavour)
    options = BuildOptions(
        opt_level, workspace_gb, hardware_compatible, version_compatible, timing_cache, tf32, rtx_runtime
    )
    manifest = build_engines(onnx_dir, out_root, target, options, progress=ui.progress, force=force)
    echo_json(build_summary(manifest, out_root / target.name))


@click.command()
@path_option("--onnx-dir", help="FP32 export folder.", required=True)
@out_dir_option("FP16 export folder to write.")
@click.option(
    "--policy",
    default="default",
    show_default=True,
    help="Precision policy: default (NVIDIA's SAM3 recipe), blanket (every op FP16), or a JSON file.",
)
@click.option(
    "--keep-fp32",
    "keep_fp32",
    multiple=True,
    help="Regex over node scopes (module path/op) to keep in FP32 (repeatable), e.g. 'trunk\\.blocks\\.0\\.'.",
)
@click.option("--no-estimate", is_flag=True, help="Skip the CPU FP16 accuracy estimate.")
@force_option("Replace an existing --out.")
@click.option(
    "--reuse", is_flag=True, help="Keep --out when the same policy made it from the same graphs, else rebuild."
)
@click.pass_obj
@handle_errors
def fp16(
    ui: Ui,
    onnx_dir: Path,
    out_dir: Path,
    policy: str,
    keep_fp32: tuple[str, ...],
    no_estimate: bool,
    force: bool,
    reuse: bool,
) -> None:
    """Mixed-precision pass: FP16 graphs with a keep-FP32 policy, checked, with a CPU FP16 error estimate.

    Exit 1 when the estimate exceeds the FP16 tolerances (the folder is kept as OUT.failed).
    """
    from ..engines.mixed import convert_export, convert_summary
    from ..engines.precision import load_policy

    chosen = load_policy(policy, keep_fp32)
    manifest = convert_export(
        onnx_dir, out_dir, chosen, progress=ui.progress, force=force, run_estimate=not no_estimate, reuse=reuse
    )
    echo_json(convert_summary(manifest, out_dir, chosen))


@click.command()
@artifacts_option("FP32 export folder.")
@path_option(
    "--images", help="Folder of calibration images (default: a generated set of drawn scenes in OUT/default_set)."
)
@path_option("--prompts", "prompts_file", help="One prompt per line.")
@click.option("--mode", type=click.Choice(["fp16-policy", "int8", "fp8"]), required=True)
@out_dir_option("Output folder.")
@click.option("--limit", type=int, default=None, help="Use at most this many images (sampled with --seed).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--range-fraction",
    type=float,
    default=0.5,
    show_default=True,
    help="fp16-policy: keep a tensor FP32 when its abs max reaches this fraction of 65504.",
)
@click.option(
    "--max-rel-err",
    type=float,
    default=1e-2,
    show_default=True,
    help="fp16-policy: keep a tensor FP32 when its FP16 round-trip error exceeds this.",
)
@click.option("--exclude", multiple=True, help="int8/fp8: scope regex of nodes to leave unquantized (repeatable).")
@click.option(
    "--quantize-attention",
    is_flag=True,
    help="int8/fp8: also quantize attention's activation x activation MatMuls (kept float by default).",
)
@click.option("--chunk-mb", type=int, default=4096, show_default=True, help="Tensor MB exposed per statistics pass.")
@click.pass_obj
@handle_errors
def calibrate(
    ui: Ui,
    artifacts: Path,
    images: Path | None,
    prompts_file: Path | None,
    mode: str,
    out_dir: Path,
    limit: int | None,
    seed: int,
    range_fraction: float,
    max_rel_err: float,
    exclude: tuple[str, ...],
    quantize_attention: bool,
    chunk_mb: int,
) -> None:
    """Data-driven precision: an FP16 keep-list (fp16-policy) or a Q/DQ vision encoder (int8, fp8)."""
    from ..calibration.fp16_policy import Fp16Thresholds
    from ..calibration.run import calibrate_folder, calibration_summary

    report = calibrate_folder(
        artifacts,
        mode,
        out_dir,
        images=images,
        prompts_file=prompts_file,
        limit=limit,
        seed=seed,
        thresholds=Fp16Thresholds(range_fraction, max_rel_err),
        exclude=exclude,
        chunk_bytes=chunk_mb << 20,
        quantize_attention=quantize_attention,
        progress=ui.progress,
    )
    echo_json(calibration_summary(report, mode, out_dir))


COMMANDS = [build, fp16, calibrate]
