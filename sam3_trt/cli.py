"""``sam3-trt``: a thin click CLI over the Python API.

User errors (:class:`~sam3_trt.errors.Sam3TrtError`) print one line and exit 2, without a traceback;
failed checks (:class:`~sam3_trt.errors.ParityError`) print every failing output and exit 1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import ParityError, Sam3TrtError


class Ui:
    """Where progress and results go (``--quiet`` hides progress, ``--verbose`` adds detail)."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose

    def progress(self, msg: str) -> None:
        if not self.quiet:
            click.echo(msg, err=True)

    def detail(self, msg: str) -> None:
        if self.verbose and not self.quiet:
            click.echo(msg, err=True)


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ParityError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Sam3TrtError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def check_output_file(path: Path | None, option: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Refuse an output file before any work starts: one line naming the option, the path and the fix.

    Args:
        path: The file to be written (``None``: not asked for).
        option: The option that named it (``--json``).
        suffixes: Accepted suffixes, when the format follows the suffix.
    """
    if path is None:
        return
    if path.is_dir():
        raise Sam3TrtError(
            f"{option} {path} is a folder; give a file name inside it, e.g. {path / ('out' + (suffixes or ('.json',))[0])}"
        )
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise Sam3TrtError(f"{option} {path}: the suffix picks the format; use one of {', '.join(suffixes)}")
    check_output_folder(path.parent, option, create=False)


def check_output_folder(folder: Path, option: str, create: bool = True) -> None:
    """Refuse a folder that cannot be written (created when missing and ``create``), before any work starts."""
    import tempfile

    if create and not folder.exists():
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise Sam3TrtError(
                f"{option}: cannot create folder {folder} ({exc.strerror or exc}); choose a writable place"
            ) from None
    if not folder.is_dir():
        raise Sam3TrtError(f"{option}: folder {folder} does not exist; create it or choose another path")
    try:  # permissions alone do not tell (root, read-only mounts, sysfs): try it
        with tempfile.TemporaryFile(dir=folder, prefix=".sam3-trt-write-check-"):
            pass
    except OSError as exc:
        raise Sam3TrtError(
            f"{option}: cannot write in {folder} ({exc.strerror or exc}); choose a writable folder"
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sam3-trt")
@click.option("--quiet", "-q", is_flag=True, help="Only print results and errors.")
@click.option("--verbose", "-v", is_flag=True, help="Print extra detail.")
@click.pass_context
def main(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """SAM3 on TensorRT: export, build engines, run, check parity."""
    ctx.obj = Ui(quiet=quiet, verbose=verbose)
    _route_tensorrt_log(quiet, verbose)


def _route_tensorrt_log(quiet: bool, verbose: bool) -> None:
    """TensorRT's messages go to stderr (stdout carries results only): errors with -q, everything with -v."""
    import logging

    from .engines.parse import LOG, set_trt_log_level

    set_trt_log_level("ERROR" if quiet else "VERBOSE" if verbose else "WARNING")
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.DEBUG)
        LOG.propagate = False


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_handle_errors
def doctor(as_json: bool) -> None:
    """Show which components and GPUs are installed and usable, or why not."""
    from .doctor import format_report, report

    data = report()
    click.echo(json.dumps(data, indent=2) if as_json else format_report(data))


@main.command()
@click.option(
    "--variant",
    type=click.Choice(["full", "tiny"]),
    default="full",
    show_default=True,
    help="full: the real sam3 architecture; tiny: same classes, reduced, for tests.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="sam3.pt (or .safetensors) in the official layout.",
)
@click.option(
    "--from-hf", is_flag=True, help="Download facebook/sam3 from the Hugging Face hub (gated, needs network)."
)
@click.option("--random-weights", is_flag=True, help="Deterministic random weights (no checkpoint needed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-weights.")
@click.option("--allow-missing", is_flag=True, help="Accept a checkpoint with missing keys (they keep random values).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Export folder to write.")
@click.option("--simplify", is_flag=True, help="Simplify graphs with onnxslim (parity is checked after).")
@click.option("--no-parity", is_flag=True, help="Skip parity against eager (not recommended).")
@click.option("--no-rtx-parse", is_flag=True, help="Skip the TensorRT for RTX parser check.")
@click.option(
    "--vision-batch",
    "vision_batches",
    type=int,
    multiple=True,
    default=(1,),
    show_default=True,
    help="Image batch sizes to check vision parity at (repeatable).",
)
@click.option("--force", is_flag=True, help="Replace an existing export in --out.")
@click.option(
    "--video",
    is_flag=True,
    help="Also export the video graphs (tracker.* and sam2_convs weights of the same checkpoint).",
)
@click.pass_obj
@_handle_errors
def export(
    ui: Ui,
    variant: str,
    checkpoint: Path | None,
    from_hf: bool,
    random_weights: bool,
    seed: int,
    allow_missing: bool,
    out_dir: Path,
    simplify: bool,
    no_parity: bool,
    no_rtx_parse: bool,
    vision_batches: tuple[int, ...],
    force: bool,
    video: bool,
) -> None:
    """Export sam3 to vision_encoder.onnx, text_encoder.onnx and decoder.onnx, with parity checks.

    With --video, also the video graphs (video_vision_encoder, tracker_memory_attention, tracker_mask_head,
    tracker_memory_encoder), each checked against upstream.
    """
    from .export.exporter import ExportOptions, summary
    from .export.exporter import export as run_export
    from .export.model import load_model

    ui.progress(f"loading sam3 ({variant})")
    model, origin = load_model(
        variant=variant,
        checkpoint=checkpoint,
        from_hf=from_hf,
        random_weights=random_weights,
        seed=seed,
        allow_missing=allow_missing,
        video=video,
    )
    ui.progress(f"weights: {origin.describe()}")
    if origin.unexpected_keys:
        ui.progress(
            f"warning: checkpoint has {len(origin.unexpected_keys)} keys the model does not use: {origin.unexpected_keys[:5]}"
        )
    if origin.missing_keys:
        ui.progress(f"warning: {len(origin.missing_keys)} keys missing from the checkpoint kept random values")
    tracker = None
    if video:
        from .export.tracker import load_tracker

        ui.progress(f"loading sam3's video tracker ({variant})")
        tracker = load_tracker(variant, origin.path if origin.kind != "random" else None, seed, allow_missing)
        if tracker[1].missing_keys:
            ui.progress(
                f"warning: {len(tracker[1].missing_keys)} tracker keys missing from the checkpoint kept random values"
            )
    options = ExportOptions(
        simplify=simplify, parity=not no_parity, rtx_parse=not no_rtx_parse, vision_batches=vision_batches, force=force
    )
    manifest = run_export(model, origin, out_dir, options, progress=ui.progress, tracker=tracker)
    ui.progress(f"wrote {out_dir} (manifest.json holds specs, sha256s, tool versions, weights origin, parity)")
    click.echo(summary(manifest))


@main.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--prompt", default=None, help="Text prompt (a noun phrase) given on --prompt-frame.")
@click.option("--box", default=None, help="Box prompt x0,y0,x1,y1[,neg] in pixels of the frames, on --prompt-frame.")
@click.option(
    "--artifacts",
    type=click.Path(path_type=Path),
    required=True,
    help="Export folder made with `export --video`, or engines built from one.",
)
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto", show_default=True)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Overlay video (.mp4) or folder for overlay frames 00000.png ...",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Tracks JSON (RLE masks).")
@click.option("--prompt-frame", type=int, default=0, show_default=True, help="Frame index the prompt is given on.")
@click.option(
    "--max-objects", type=int, default=None, help="Track at most this many objects (upstream max_num_objects)."
)
@click.option(
    "--memory-window",
    default=None,
    help="Frames of tracking state kept behind the tracked frame (default 64), or 'all' to keep every frame.",
)
@click.option("--fps", type=float, default=None, help="Frame rate of an .mp4 --output (default: VIDEO's, or 30).")
@click.pass_obj
@_handle_errors
def track(
    ui: Ui,
    video: Path,
    prompt: str | None,
    box: str | None,
    artifacts: Path,
    backend: str,
    output: Path,
    json_path: Path | None,
    prompt_frame: int,
    max_objects: int | None,
    memory_window: str | None,
    fps: float | None,
) -> None:
    """Track what --prompt names (or what --box outlines) through VIDEO (an .mp4 file, a folder of <index>.jpg
    frames, or one image).

    Runs upstream's video model (detection on every frame, association, hot-start, tracking) with its neural
    work on the exported graphs (ONNX Runtime) or their engines (TensorRT); writes each frame's overlay (one
    colour per object ID) as it is tracked and, with --json, each frame's objects.
    """
    from .export.model import WeightsOrigin
    from .runtime.processor import check_folder_backend
    from .segment import parse_pixel_box, pixel_box_to_prompt
    from .video.frames import ClipFrames
    from .video.predictor import folder_predictor, video_folder
    from .video.track import DEFAULT_FPS, TrackWriter, check_video_output, frame_objects
    from .video.track import track as run_track

    if prompt is None and box is None:
        raise Sam3TrtError("give --prompt (a noun phrase), --box x0,y0,x1,y1, or both")
    if prompt is not None and not prompt.strip():
        raise Sam3TrtError("--prompt is empty: give a noun phrase such as 'person'")
    pixels = parse_pixel_box(box) if box is not None else None
    if max_objects is not None and max_objects < 1:
        raise Sam3TrtError(f"--max-objects {max_objects}: use 1 or more (or leave it out: no limit)")
    window = _memory_window(memory_window)
    if fps is not None and not fps > 0:
        raise Sam3TrtError(f"--fps {fps}: give frames per second > 0 (e.g. 30)")
    check_output_file(json_path, "--json", (".json",))
    to_video = check_video_output(output)
    found = video_folder(artifacts)
    check_folder_backend(found, backend)  # before the host model is built
    frames = ClipFrames(video, name=f"VIDEO {str(video)!r}")  # decoded frame by frame as it is tracked
    size = (frames.video_width, frames.video_height)
    if not 0 <= prompt_frame < len(frames):
        raise Sam3TrtError(f"--prompt-frame {prompt_frame} is outside the clip: use 0..{len(frames) - 1}")
    box_prompt = None
    if pixels is not None:
        cx, cy, w, h = pixel_box_to_prompt(pixels[0], *size, f"--box {box!r}")
        box_prompt = ([cx - w / 2, cy - h / 2, w, h], pixels[1])  # upstream's video boxes: normalised x, y, w, h
    check_output_folder(output.parent if to_video else output, "--output")
    weights_dict = found.manifest.get("weights", {"kind": "unknown", "variant": "full"})
    variant = weights_dict.get("variant") or "full"
    ui.progress(f"{len(frames)} frames; building upstream's video model ({variant}) for its host code")
    predictor = folder_predictor(found.folder, variant, backend, max_objects, window)
    info = {
        "video": str(video),
        "prompt": prompt,
        "box_xyxy": pixels[0] if pixels is not None else None,
        "box_positive": pixels[1] if pixels is not None else None,
        "prompt_frame": prompt_frame,
        "size": list(size),
        "backend": predictor.backend.name,
        "memory_window": window,
        "weights": WeightsOrigin.from_dict(weights_dict).describe(),
        "weights_kind": weights_dict.get("kind"),
    }
    writer = TrackWriter(output, size, len(frames), json_path, info, fps or frames.fps or DEFAULT_FPS)
    try:
        with predictor:
            for index in range(prompt_frame):  # before the prompt: forward tracking does not reach them
                writer.write(index, frames.original(index), None)
            for index, outputs in run_track(predictor, frames, prompt, prompt_frame, box_prompt):
                objects = frame_objects(outputs)
                writer.write(index, frames.original(index), objects)
                ui.progress(f"frame {index}: objects {[o['id'] for o in objects]}")
        doc = writer.close()
    except BaseException:
        writer.abort()
        raise
    click.echo(
        json.dumps(
            {
                "frames": len(frames),
                "tracked_frames": sum(f["tracked"] for f in doc["frames"]),
                "object_ids": doc["object_ids"],
                "output": str(output),
                "json": str(json_path) if json_path else None,
            }
        )
    )


def _memory_window(value: str | None) -> int | None:
    """``--memory-window``: a frame count, ``all`` (keep every frame), or the default when not given."""
    from .video.window import DEFAULT_MEMORY_WINDOW, check_window

    if value is None:
        return DEFAULT_MEMORY_WINDOW
    if value.strip().lower() == "all":
        return None
    try:
        frames = int(value)
    except ValueError:
        frames = value
    return check_window(frames, "--memory-window", keep_all="all")


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--prompt", "prompts", multiple=True, help="Text prompt (repeatable; all run in one decoder batch).")
@click.option("--box", "boxes", multiple=True, help="Box prompt x0,y0,x1,y1[,neg] in pixels of IMAGE (repeatable).")
@click.option("--artifacts", type=click.Path(path_type=Path), required=True, help="Export folder or engine folder.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto", show_default=True)
@click.option(
    "--threshold", type=float, default=0.5, show_default=True, help="Keep detections with score > threshold (0 to 1)."
)
@click.option("--output", type=click.Path(path_type=Path), required=True, help="Overlay to write: .png, .jpg or .webp.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Detections JSON (RLE masks).")
@click.option(
    "--max-detections", type=int, default=10, show_default=True, help="Best detections drawn and written (by score)."
)
@click.pass_obj
@_handle_errors
def segment(
    ui: Ui,
    image: Path,
    prompts: tuple[str, ...],
    boxes: tuple[str, ...],
    artifacts: Path,
    backend: str,
    threshold: float,
    output: Path,
    json_path: Path | None,
    max_detections: int,
) -> None:
    """Segment IMAGE with text and/or box prompts; write an overlay PNG (and JSON)."""
    from .export.model import WeightsOrigin
    from .runtime.artifacts import resolve_artifacts
    from .runtime.image import open_image, to_uint8_hwc
    from .runtime.processor import Sam3Processor
    from .segment import IMAGE_FORMATS, parse_box, write_outputs
    from .segment import segment as run_segment

    if not 0.0 <= threshold <= 1.0:  # NaN too
        raise Sam3TrtError(f"--threshold {threshold}: scores are probabilities; use a value in [0, 1], e.g. 0.5")
    if max_detections < 1:
        raise Sam3TrtError(f"--max-detections {max_detections}: use 1 or more")
    if not prompts and not boxes:
        raise Sam3TrtError("give at least one --prompt TEXT or --box x0,y0,x1,y1[,neg]")
    check_output_file(output, "--output", tuple(IMAGE_FORMATS))  # the suffix picks PNG, JPEG or WebP
    check_output_file(json_path, "--json", (".json",))
    picture = open_image(image)
    rgb = to_uint8_hwc(picture)
    height, width = rgb.shape[:2]
    parsed = [parse_box(b, width, height) for b in boxes]
    found = resolve_artifacts(artifacts)
    weights_dict = found.manifest.get("weights", {"kind": "unknown", "variant": "?"})
    weights = WeightsOrigin.from_dict(weights_dict).describe()
    with Sam3Processor(found.folder, backend=backend, confidence_threshold=threshold) as processor:
        ui.progress(f"backend {processor.backend.name}; {weights}")
        detections, best = run_segment(processor, picture, prompts, parsed)
        info = {
            "image": str(image),
            "size": [width, height],
            "prompts": list(prompts),
            "boxes": list(boxes),
            "threshold": threshold,
            "backend": processor.backend.name,
            "precision": found.manifest.get("precision", {}).get("mode", "fp32"),
            "weights": weights,
            "weights_kind": weights_dict.get("kind"),
            "best_score": round(best, 6),
        }
    if not detections:
        ui.progress(
            f"no detection scored above --threshold {threshold}; the best score was {best:.3f}: "
            f"lower --threshold (e.g. --threshold {max(0.0, best - 0.01):.2f}) to see it"
        )
    write_outputs(rgb, detections, output, json_path, info, parsed, max_detections)
    summary_line = {
        "detections": len(detections),
        "drawn": min(len(detections), max_detections),
        "best_score": round(best, 6),
        "output": str(output),
        "json": str(json_path) if json_path else None,
    }
    click.echo(json.dumps(summary_line))


@main.command()
@click.option(
    "--gpu", "gpu_name", required=True, help="Target GPU: 5090, 4090, 3090, a100, h100, l4, t4, orin, smXY, or auto."
)
@click.option("--onnx-dir", type=click.Path(path_type=Path), required=True, help="Export folder (sam3-trt export).")
@click.option(
    "--out",
    "out_root",
    type=click.Path(path_type=Path),
    default=Path("engines"),
    show_default=True,
    help="Parent folder; engines go to OUT/<target>/.",
)
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
@click.option("--timing-cache", type=click.Path(path_type=Path), default=None, help="TensorRT timing cache file.")
@click.option(
    "--tf32", is_flag=True, help="Let FP32 layers use TF32 tensor cores (faster, ~1e-3 relative error; off by default)."
)
@click.option("--force", is_flag=True, help="Replace an existing engine folder.")
@click.pass_obj
@_handle_errors
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
    force: bool,
) -> None:
    """Build TensorRT (on the target GPU) or TensorRT for RTX (ahead of time, no GPU needed) engines."""
    from .device import gpu_info
    from .engines.builder import BuildOptions, build_engines
    from .engines.targets import resolve_target

    target = resolve_target(gpu_name, gpu_info(), flavour)
    options = BuildOptions(opt_level, workspace_gb, hardware_compatible, version_compatible, timing_cache, tf32)
    manifest = build_engines(onnx_dir, out_root, target, options, progress=ui.progress, force=force)
    click.echo(
        json.dumps(
            {
                "folder": str(out_root / target.name),
                "flavour": manifest["flavour"],
                "trt_version": manifest["trt_version"],
                "compute_capabilities": manifest["compute_capabilities"],
                "device_seen": manifest["device_seen"],
            }
        )
    )


@main.command()
@click.option("--onnx-dir", type=click.Path(path_type=Path), required=True, help="FP32 export folder.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="FP16 export folder to write.")
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
@click.option("--force", is_flag=True, help="Replace an existing --out.")
@click.option(
    "--reuse", is_flag=True, help="Keep --out when the same policy made it from the same graphs, else rebuild."
)
@click.pass_obj
@_handle_errors
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
    from .engines.mixed import convert_export
    from .engines.precision import load_policy

    chosen = load_policy(policy, keep_fp32)
    manifest = convert_export(
        onnx_dir, out_dir, chosen, progress=ui.progress, force=force, run_estimate=not no_estimate, reuse=reuse
    )
    est = manifest["checks"]["fp16_estimate"]
    worst = {
        f"{c['graph']}.{o['name']}": o["rel_l2"] for c in est.get("cases", []) for o in c["outputs"] if o["rel_l2"] > 0
    }
    click.echo(
        json.dumps(
            {
                "folder": str(out_dir),
                "policy": chosen.name,
                "fp16_nodes": {g: s["fp16_nodes"] for g, s in manifest["precision"]["graphs"].items()},
                "estimate_passed": est.get("passed"),
                "worst_rel_l2": max(worst.items(), key=lambda kv: kv[1]) if worst else None,
            }
        )
    )


@main.command()
@click.option("--artifacts", type=click.Path(path_type=Path), required=True, help="Export folder or engine folder.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto", show_default=True)
@click.option(
    "--reference",
    type=click.Choice(["torch"]),
    default="torch",
    show_default=True,
    help="Reference implementation: upstream sam3 eager Sam3Processor.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint for the reference (default: the one recorded in the manifest).",
)
@click.option(
    "--image",
    "images",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Image file (repeatable; default: a bundled drawn image).",
)
@click.option(
    "--prompt",
    "prompts",
    multiple=True,
    help="Text prompt (repeatable; default: text, text + negative box and box-only cases).",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the report as JSON.")
@click.option(
    "--figure",
    type=click.Path(path_type=Path),
    default=None,
    help="PNG: reference masks, candidate masks, difference map.",
)
@click.option("--no-stages", is_flag=True, help="Skip the per-graph (vision, text, decoder) checks.")
@click.option(
    "--save-outputs",
    type=click.Path(path_type=Path),
    default=None,
    help="Per-stage outputs of both sides as Polygraphy RunResults JSON (each graph's inputs beside it).",
)
@click.pass_obj
@_handle_errors
def parity(
    ui: Ui,
    artifacts: Path,
    backend: str,
    reference: str,
    checkpoint: Path | None,
    images: tuple[Path, ...],
    prompts: tuple[str, ...],
    json_path: Path | None,
    figure: Path | None,
    no_stages: bool,
    save_outputs: Path | None,
) -> None:
    """Compare a backend with upstream eager sam3, per stage and end to end (exit 1 on failure).

    Tolerances come from sam3_trt.tolerances for the artifact's precision (FP32 or FP16).
    """
    from .assets.images import demo_image
    from .export.model import model_from_manifest
    from .parity import DEFAULT_CASES, run_detection_parity
    from .runtime.artifacts import artifact_precision, resolve_artifacts
    from .runtime.image import open_image
    from .runtime.processor import Sam3Processor

    check_output_file(json_path, "--json", (".json",))
    check_output_file(figure, "--figure", (".png",))
    check_output_file(save_outputs, "--save-outputs", (".json",))
    if save_outputs is not None:
        if no_stages:
            raise Sam3TrtError("--save-outputs writes the per-stage outputs: drop --no-stages")
        try:
            import polygraphy  # noqa: F401 - checked before the long run
        except ImportError:
            raise Sam3TrtError("--save-outputs needs polygraphy: pip install polygraphy") from None
    found = resolve_artifacts(artifacts)
    precision = artifact_precision(found.manifest)  # picks the tolerance column
    pictures = [open_image(p) for p in images] or [demo_image()]
    ui.progress(f"reference: upstream sam3 ({reference}) from {found.manifest.get('weights', {}).get('kind')} weights")
    model, origin = model_from_manifest(found.manifest, checkpoint)
    with Sam3Processor(found.folder, backend=backend) as candidate:
        report = run_detection_parity(
            model,
            candidate,
            pictures,
            weights=origin.describe(),
            backend=candidate.backend.name,
            progress=ui.progress,
            precision=precision,
            cases=[(f"text:{p}", p, ()) for p in prompts] or DEFAULT_CASES,
            stages=not no_stages,
        )
    for stage in report.stages:
        click.echo(stage.describe())
    for case in report.cases:
        click.echo(case.describe())
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2))
    if save_outputs is not None:
        from .parity import save_run_results

        save_run_results(report, save_outputs)
    if figure is not None and report.figure_data is not None:
        from .figures import parity_panels

        random = found.manifest.get("weights", {}).get("kind") == "random"
        parity_panels(report.figure_data, figure, ("upstream eager", f"sam3-trt {report.backend}"), random)
    if not report.passed:
        failing = report.failures()
        raise ParityError(f"parity failed ({precision} tolerances): {', '.join(failing)}")
    click.echo(f"parity passed: {len(report.cases)} cases, backend {report.backend}, {origin.describe()}")


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise Sam3TrtError(f"--image-size {text!r}: use WIDTHxHEIGHT, e.g. 1008x1008")
    return int(parts[0]), int(parts[1])


@main.command()
@click.option("--artifacts", type=click.Path(path_type=Path), required=True, help="Export folder (FP32 or FP16).")
@click.option(
    "--backends",
    default="torch,onnxruntime",
    show_default=True,
    help="Comma list of torch (upstream eager), onnxruntime, tensorrt.",
)
@click.option("--engines", type=click.Path(path_type=Path), default=None, help="Engine folder for tensorrt.")
@click.option(
    "--int8-artifacts",
    type=click.Path(path_type=Path),
    default=None,
    help="Also run ONNX Runtime on this `calibrate --mode int8` folder (as onnxruntime-int8).",
)
@click.option("--image-size", default="1008x1008", show_default=True, help="WIDTHxHEIGHT of the drawn test image.")
@click.option("--image", type=click.Path(path_type=Path), default=None, help="Use this image file instead.")
@click.option("--prompts", type=int, default=1, show_default=True, help="Text prompts per image (K).")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed runs per backend.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=int, default=None, help="CPU threads for every backend (default: all cores).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the report as JSON.")
@click.option("--figure", type=click.Path(path_type=Path), default=None, help="Bar chart PNG of stage medians.")
@click.pass_obj
@_handle_errors
def bench(
    ui: Ui,
    artifacts: Path,
    backends: str,
    engines: Path | None,
    int8_artifacts: Path | None,
    image_size: str,
    image: Path | None,
    prompts: int,
    repeats: int,
    warmup: int,
    threads: int | None,
    json_path: Path | None,
    figure: Path | None,
) -> None:
    """Per-stage latency of each backend beside upstream eager, each in its own process."""
    from .bench import bench_figure, bench_lines, run_bench

    check_output_file(json_path, "--json", (".json",))
    check_output_file(figure, "--figure", (".png",))
    if image is not None and not image.is_file():
        raise Sam3TrtError(f"--image {image} does not exist")
    report = run_bench(
        artifacts,
        [b.strip() for b in backends.split(",") if b.strip()],
        image_size=_size(image_size),
        prompts=prompts,
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        engines=engines,
        image=image,
        progress=ui.progress,
        int8_artifacts=int8_artifacts,
    )
    for line in bench_lines(report):
        click.echo(line)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if figure is not None:
        bench_figure(report, figure)


@main.command("bench-video")
@click.option(
    "--artifacts",
    type=click.Path(path_type=Path),
    required=True,
    help="Export folder made with `export --video`, or engines built from one.",
)
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto", show_default=True)
@click.option("--frames", type=int, default=8, show_default=True, help="Frames of the drawn clip (2 or more).")
@click.option("--prompt", default="square", show_default=True, help="Text prompt given on frame 0.")
@click.option("--max-objects", type=int, default=None, help="Track at most this many objects.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the report as JSON.")
@click.option("--figure", type=click.Path(path_type=Path), default=None, help="Bar chart PNG of the stages.")
@click.pass_obj
@_handle_errors
def bench_video(
    ui: Ui,
    artifacts: Path,
    backend: str,
    frames: int,
    prompt: str,
    max_objects: int | None,
    json_path: Path | None,
    figure: Path | None,
) -> None:
    """Per-frame and per-object latency of each video stage (vision, detection, tracker graphs, host code)."""
    from .video.bench import run_video_bench, video_bench_figure, video_bench_lines

    check_output_file(json_path, "--json", (".json",))
    check_output_file(figure, "--figure", (".png",))
    if frames < 2:
        raise Sam3TrtError(f"--frames {frames}: give 2 or more (the prompt frame and frames tracked after it)")
    if not prompt.strip():
        raise Sam3TrtError("--prompt is empty: give a noun phrase such as 'square'")
    if max_objects is not None and max_objects < 1:
        raise Sam3TrtError(f"--max-objects {max_objects}: use 1 or more (or leave it out: no limit)")
    report = run_video_bench(artifacts, backend, frames, prompt, max_objects, progress=ui.progress)
    for line in video_bench_lines(report):
        click.echo(line)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if figure is not None:
        video_bench_figure(report, figure)


@main.command()
@click.option("--artifacts", type=click.Path(path_type=Path), required=True, help="FP32 export folder.")
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of calibration images (default: a generated set of drawn scenes in OUT/default_set).",
)
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path), default=None, help="One prompt per line.")
@click.option("--mode", type=click.Choice(["fp16-policy", "int8", "fp8"]), required=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
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
@_handle_errors
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
    from .calibration.dataset import default_set, load_set
    from .calibration.fp16_policy import Fp16Thresholds
    from .calibration.run import calibrate as run_calibrate

    if images is None:
        if prompts_file is not None:
            raise Sam3TrtError("--prompts needs --images (or leave both out for the generated default set)")
        cal = default_set(out_dir / "default_set", limit=limit, seed=seed)
    else:
        if prompts_file is None:
            raise Sam3TrtError(f"--images {images} needs --prompts FILE (one text prompt per line)")
        cal = load_set(images, prompts_file, limit=limit, seed=seed)
    if not 0 < range_fraction <= 1:
        raise Sam3TrtError(f"--range-fraction {range_fraction}: use a value in (0, 1]")
    ui.progress(f"calibration set: {len(cal.images)} images, {len(cal.prompts)} prompts, sha256 {cal.sha256[:16]}")
    report = run_calibrate(
        artifacts,
        cal,
        mode,
        out_dir,
        thresholds=Fp16Thresholds(range_fraction, max_rel_err),
        exclude=exclude,
        chunk_bytes=chunk_mb << 20,
        progress=ui.progress,
        quantize_attention=quantize_attention,
    )
    if mode == "fp16-policy":
        est = report["estimate_on_first_image"]
        summary = {
            "changed_nodes": len(report["changed_nodes"]),
            "default_estimate_passed": est["default"]["passed"],
            "calibrated_estimate_passed": est["calibrated"]["passed"],
            "policy": str(out_dir / "policy.json"),
            "fp16_export": report["fp16_export"],
        }
    else:
        summary = {"export_folder": report["export_folder"], "accuracy": report["accuracy"]}
    click.echo(json.dumps(summary))


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-layers", is_flag=True, help="Engine folders: skip TensorRT's layer information (needs a GPU).")
@click.pass_obj
@_handle_errors
def inspect(ui: Ui, path: Path, as_json: bool, no_layers: bool) -> None:
    """What an export or engine folder holds: graph I/O with dynamic ranges, node counts by op and precision."""
    from .inspection import format_inspect, inspect_folder

    report = inspect_folder(path, layers=not no_layers)
    click.echo(json.dumps(report, indent=2) if as_json else format_inspect(report))


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Bundle folder to write.")
@click.option("--python", "python_version", default="3.12", show_default=True, help="Target Python version.")
@click.option("--platform", default="manylinux_2_28_x86_64", show_default=True, help="Target platform tag.")
@click.option("--part-mb", type=float, default=60.0, show_default=True, help="Split files larger than this (MiB).")
@click.option("--call-mb", type=float, default=60.0, show_default=True, help="Most MiB per callN/ transfer folder.")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder.")
@click.pass_obj
@_handle_errors
def bundle(
    ui: Ui, out_dir: Path, python_version: str, platform: str, part_mb: float, call_mb: float, force: bool
) -> None:
    """Wheels an offline GPU machine needs (TensorRT for RTX, sam3, sam3-trt ...), split to fit transfers."""
    from .bundle import build_bundle

    manifest = build_bundle(out_dir, python_version, platform, part_mb, call_mb, progress=ui.progress, force=force)
    click.echo(json.dumps({"folder": str(out_dir), "calls": manifest["calls"], "files": len(manifest["files"])}))


@main.command(name="gpu-check")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/gpu-check"), show_default=True)
@click.option(
    "--stages", default="all", show_default=True, help="Comma list of stage letters a,b,c,d,e (listed above)."
)
@click.option("--deadline", type=float, default=None, help="Stop cleanly this many seconds after the start.")
@click.option("--resume", is_flag=True, help="Keep the stages an earlier run into --out finished; run the rest.")
@click.option("--simulate", is_flag=True, help="Run every stage on the CPU through GPU doubles (no measurement).")
@click.option(
    "--tiny-export", type=click.Path(path_type=Path), default=None, help="Tiny FP32 export to reuse (default: made)."
)
@click.option(
    "--full-variant", type=click.Choice(["full", "tiny"]), default="full", show_default=True, help="Model of d and e."
)
@click.option("--flavour", type=click.Choice(["auto", "rtx", "tensorrt"]), default="auto", show_default=True)
@click.option("--rtx-cc", default=None, help="TensorRT for RTX compute capability: current or smXY.")
@click.option(
    "--aot-engines", type=click.Path(path_type=Path), default=None, help="Engines built elsewhere, run in stage b."
)
@click.option("--repeats", type=int, default=5, show_default=True, help="Timed bench runs per backend (stage d).")
@click.pass_obj
@_handle_errors
def gpu_check_cmd(
    ui: Ui,
    out_dir: Path,
    stages: str,
    deadline: float | None,
    resume: bool,
    simulate: bool,
    tiny_export: Path | None,
    full_variant: str,
    flavour: str,
    rtx_cc: str | None,
    aot_engines: Path | None,
    repeats: int,
) -> None:
    """sam3-trt on this GPU, in stages, into one report folder (gpu-check.json, summary.md, JSON/PNG per stage).

    \b
    a environment     GPU, driver, compute capability, versions
    b engines         tiny FP32/FP16 engines built on this GPU and run; --aot-engines run too
    c tiny-parity     those engines against eager FP32 (per graph, per detection)
    d full-latency    full-size FP16 engines vs eager FP32 and bf16 on this GPU (bench)
    e fp16-accuracy   default and attention-FP32 policies vs FP32 eager (cosine fpn0..2, mask IoU, score)

    Without a GPU it runs stage a and exits 2 naming the first stage that needs one. Exit 1 when a stage
    failed or raised (the report says which and why), 124 when --deadline stopped it.
    """
    from .gpu_check import STAGES, GpuCheckOptions, gpu_check

    keys = tuple(s.key for s in STAGES) if stages == "all" else tuple(k.strip() for k in stages.split(","))
    options = GpuCheckOptions(
        out=out_dir,
        stages=keys,
        deadline_s=deadline,
        resume=resume,
        simulate=simulate,
        tiny_export=tiny_export,
        full_variant=full_variant,
        flavour=flavour,
        rtx_cc=rtx_cc,
        aot_engines=aot_engines,
        repeats=repeats,
    )
    options.check()
    check_output_folder(out_dir, "--out")
    data = gpu_check(options, progress=ui.progress)
    bad = {k: v["status"] for k, v in data["stages"].items() if v["status"] not in ("ok",)}
    click.echo(
        json.dumps(
            {"report": str(out_dir / "gpu-check.json"), "stages": {k: v["status"] for k, v in data["stages"].items()}}
        )
    )
    if bad:
        click.echo(
            f"error: gpu-check stages not ok: {', '.join(f'{k} {v}' for k, v in bad.items())} "
            f"(details in {out_dir / 'summary.md'})",
            err=True,
        )
        sys.exit(1)


# -- serving --------------------------------------------------------------------------------------
@main.command()
@click.option("--artifacts", type=click.Path(path_type=Path), required=True, help="Export folder or engine folder.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True, help="Prometheus metrics (/metrics).")
@click.option("--instances", type=int, default=1, show_default=True, help="Model instances (spread over the GPUs).")
@click.option("--max-batch", type=int, default=None, help="Requests the dynamic batcher groups [vision graph's B max].")
@click.option("--max-queue-delay-us", type=int, default=2000, show_default=True, help="Batcher wait to fill a batch.")
@click.option("--max-image-pixels", type=int, default=None, help="Largest image (width x height) [4096x4096].")
@click.option("--max-prompts", type=int, default=None, help="Text prompts per request [64].")
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads per instance [CPUs / instances].")
@click.option("--exit-timeout", type=int, default=30, show_default=True,
              help="On SIGTERM/Ctrl-C, seconds in-flight requests get to finish.")  # fmt: skip
@click.option("--triton-log", type=click.Path(path_type=Path), default=None,
              help="tritonserver's log file [<temp>/sam3-trt-serve-<http port>.log].")  # fmt: skip
@click.option("--warm-up/--no-warm-up", default=True, show_default=True,
              help="Run the largest batch before 'ready', so memory does not grow under load.")  # fmt: skip
@click.pass_obj
@_handle_errors
def serve(
    ui: Ui,
    artifacts: Path,
    backend: str,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    instances: int,
    max_batch: int | None,
    max_queue_delay_us: int,
    max_image_pixels: int | None,
    max_prompts: int | None,
    threads: int | None,
    exit_timeout: int,
    triton_log: Path | None,
    warm_up: bool,
) -> None:
    """Serve the sam3 model on Triton Inference Server (PyTriton) until Ctrl-C or SIGTERM.

    Prints one JSON line with the endpoints once the model is ready.
    """
    from .serving.handler import ServeLimits
    from .serving.server import ServeOptions, check_serving_python
    from .serving.server import serve as run_serve

    limits = ServeLimits()
    limits = dataclasses.replace(
        limits,
        max_image_pixels=limits.max_image_pixels if max_image_pixels is None else max_image_pixels,
        max_prompts=limits.max_prompts if max_prompts is None else max_prompts,
    )
    options = ServeOptions(
        artifacts=artifacts,
        backend=backend,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        instances=instances,
        max_batch=ServeOptions.max_batch if max_batch is None else max_batch,
        max_queue_delay_us=max_queue_delay_us,
        limits=limits,
        threads=threads,
        exit_timeout_s=exit_timeout,
        triton_log=triton_log,
        warm_up=warm_up,
    ).check()
    check_output_file(options.log_path, "--triton-log")
    check_serving_python()
    ui.progress(f"serve: loading {instances} instance(s) of {artifacts}; Triton's log: {options.log_path}")

    # tritonserver and PyTriton print to stdout (NVML notices, log lines): send all of it to stderr so stdout
    # carries only the ready line, which scripts wait for
    sys.stdout.flush()
    stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def ready(endpoints: dict[str, Any]) -> None:
        stdout.write(json.dumps({"ready": True, **endpoints}) + "\n")
        stdout.flush()

    try:
        run_serve(options, ready=ready)
    finally:
        stdout.close()
    ui.progress("serve: stopped")


@main.command()
@click.argument("url")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--prompt", "prompts", multiple=True, help="Text prompt (repeatable; one decoder batch on the server).")
@click.option("--box", "boxes", multiple=True, help="Box prompt x0,y0,x1,y1[,neg] in pixels of IMAGE (repeatable).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Keep detections scoring above it.")
@click.option("--mask-format", type=click.Choice(["rle", "bitmask"]), default="rle", show_default=True)
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Overlay to write: .png, .jpg or .webp.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Detections JSON (RLE masks).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Network timeout in seconds.")
@click.pass_obj
@_handle_errors
def client(
    ui: Ui,
    url: str,
    image: Path,
    prompts: tuple[str, ...],
    boxes: tuple[str, ...],
    threshold: float,
    mask_format: str,
    output: Path | None,
    json_path: Path | None,
    timeout: float,
) -> None:
    """Send IMAGE with prompts to a sam3 server at URL (http://host:port or grpc://host:port)."""
    from .runtime.image import open_image, to_uint8_hwc
    from .segment import IMAGE_FORMATS, parse_pixel_box, pixel_box_to_prompt, write_outputs
    from .serving.client import Sam3Client, parse_url

    parse_url(url)
    if not 0.0 <= threshold <= 1.0:
        raise Sam3TrtError(f"--threshold {threshold}: scores are probabilities; use a value in [0, 1], e.g. 0.5")
    if not prompts and not boxes:
        raise Sam3TrtError("give at least one --prompt TEXT or --box x0,y0,x1,y1[,neg]")
    check_output_file(output, "--output", tuple(IMAGE_FORMATS))
    check_output_file(json_path, "--json", (".json",))
    rgb = to_uint8_hwc(open_image(image))  # a file the server could not read fails here, before sending
    height, width = rgb.shape[:2]
    parsed = [parse_pixel_box(b) for b in boxes]
    for text, (pixels, _) in zip(boxes, parsed, strict=True):
        pixel_box_to_prompt(pixels, width, height, f"--box {text!r}")
    with Sam3Client(url, timeout_s=timeout) as conn:
        detections = conn.infer(
            image.read_bytes(),
            prompts,
            [p for p, _ in parsed],
            [positive for _, positive in parsed],
            threshold,
            mask_format,
        )
    info = {"server": url, "image": str(image), "size": [width, height], "prompts": list(prompts),
            "boxes": list(boxes), "threshold": threshold}  # fmt: skip
    if output is not None:
        prompt_boxes = [(pixel_box_to_prompt(p, width, height, "box"), positive) for p, positive in parsed]
        write_outputs(rgb, detections, output, json_path, info, prompt_boxes, max_detections=len(detections) or 1)
    elif json_path is not None:
        from .segment import detections_json

        json_path.write_text(json.dumps(detections_json(detections, info, len(detections)), indent=1))
    best = max((d["score"] for d in detections), default=None)
    click.echo(json.dumps({"detections": len(detections), "best_score": best, "output": str(output) if output else None,
                           "json": str(json_path) if json_path else None}))  # fmt: skip


@main.command("triton-repo")
@click.option("--artifacts", type=click.Path(path_type=Path), required=True,
              help="Engine folder (tensorrt_plan models; standard TensorRT) or export folder (onnxruntime_onnx).")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Model repository to write.")
@click.option("--instances", type=int, default=1, show_default=True, help="Instances of each model.")
@click.option("--gpus", default="", help="GPU ids for the graph models, e.g. 0,1 (default: every GPU).")
@click.option("--cpu", is_flag=True, help="Graph models on the CPU (export folders only): try it without a GPU.")
@click.option("--max-batch", type=int, default=None, help="The sam3 model's dynamic batch [vision graph's B max].")
@click.option("--force", is_flag=True, help="Replace an existing repository in --out.")
@click.pass_obj
@_handle_errors
def triton_repo(
    ui: Ui, artifacts: Path, out_dir: Path, instances: int, gpus: str, cpu: bool, max_batch: int | None, force: bool
) -> None:
    """Write a Triton model repository: the three graphs plus a Python-backend sam3 model (BLS)."""
    from .serving.triton_repo import RepoOptions, write_repo

    try:
        gpu_ids = tuple(int(g) for g in gpus.split(",") if g.strip())
    except ValueError:
        raise Sam3TrtError(f"--gpus {gpus!r}: give GPU ids separated by commas, e.g. 0,1") from None
    if any(g < 0 for g in gpu_ids):
        raise Sam3TrtError(f"--gpus {gpus!r}: GPU ids are 0 or more")
    options = RepoOptions(
        artifacts=artifacts,
        out=out_dir,
        instances=instances,
        gpus=gpu_ids,
        cpu=cpu,
        max_batch=RepoOptions.max_batch if max_batch is None else max_batch,
        force=force,
    )
    summary_data = write_repo(options)
    validation = summary_data["validation"]
    if validation["status"] != "passed":
        ui.progress(f"warning: configs not checked against Triton's schema: {validation['reason']}")
    click.echo(json.dumps(summary_data))


if __name__ == "__main__":  # pragma: no cover
    main()
