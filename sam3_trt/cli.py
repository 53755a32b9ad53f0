"""``sam3-trt``: a thin click CLI over the Python API.

User errors (:class:`~sam3_trt.errors.Sam3TrtError`) print one line and exit 2, without a traceback;
failed checks (:class:`~sam3_trt.errors.ParityError`) print every failing output and exit 1.
"""

from __future__ import annotations

import json
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sam3-trt")
@click.option("--quiet", "-q", is_flag=True, help="Only print results and errors.")
@click.option("--verbose", "-v", is_flag=True, help="Print extra detail.")
@click.pass_context
def main(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """SAM3 on TensorRT: export, build engines, run, check parity."""
    ctx.obj = Ui(quiet=quiet, verbose=verbose)


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
) -> None:
    """Export sam3 to vision_encoder.onnx, text_encoder.onnx and decoder.onnx, with parity checks."""
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
    )
    ui.progress(f"weights: {origin.describe()}")
    if origin.unexpected_keys:
        ui.progress(
            f"warning: checkpoint has {len(origin.unexpected_keys)} keys the model does not use: {origin.unexpected_keys[:5]}"
        )
    if origin.missing_keys:
        ui.progress(f"warning: {len(origin.missing_keys)} keys missing from the checkpoint kept random values")
    options = ExportOptions(
        simplify=simplify, parity=not no_parity, rtx_parse=not no_rtx_parse, vision_batches=vision_batches, force=force
    )
    manifest = run_export(model, origin, out_dir, options, progress=ui.progress)
    ui.progress(f"wrote {out_dir} (manifest.json holds specs, sha256s, tool versions, weights origin, parity)")
    click.echo(summary(manifest))


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--prompt", "prompts", multiple=True, help="Text prompt (repeatable; all run in one decoder batch).")
@click.option("--box", "boxes", multiple=True, help="Box prompt x0,y0,x1,y1[,neg] in pixels of IMAGE (repeatable).")
@click.option("--artifacts", type=click.Path(path_type=Path), required=True, help="Export folder or engine folder.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto", show_default=True)
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Keep detections with score > threshold.")
@click.option("--output", type=click.Path(path_type=Path), required=True, help="Overlay PNG to write.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Detections JSON (RLE masks).")
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
) -> None:
    """Segment IMAGE with text and/or box prompts; write an overlay PNG (and JSON)."""
    from .export.model import WeightsOrigin
    from .runtime.artifacts import resolve_artifacts
    from .runtime.image import open_image, to_uint8_hwc
    from .runtime.processor import Sam3Processor
    from .segment import parse_box, write_outputs
    from .segment import segment as run_segment

    picture = open_image(image)
    rgb = to_uint8_hwc(picture)
    height, width = rgb.shape[:2]
    parsed = [parse_box(b, width, height) for b in boxes]
    for target in (output, json_path):
        if target is not None and not target.parent.is_dir():
            raise Sam3TrtError(f"cannot write {target}: folder {target.parent} does not exist")
    found = resolve_artifacts(artifacts)
    weights = WeightsOrigin.from_dict(found.manifest.get("weights", {"kind": "unknown", "variant": "?"})).describe()
    with Sam3Processor(found.folder, backend=backend, confidence_threshold=threshold) as processor:
        ui.progress(f"backend {processor.backend.name}; {weights}")
        detections = run_segment(processor, picture, prompts, parsed)
        info = {
            "image": str(image),
            "size": [width, height],
            "backend": processor.backend.name,
            "threshold": threshold,
            "weights": weights,
        }
    write_outputs(rgb, detections, output, json_path, info)
    summary_line = {"detections": len(detections), "output": str(output), "json": str(json_path) if json_path else None}
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
@click.option("--version-compatible", is_flag=True, help="TensorRT: engines later TensorRT versions can run.")
@click.option("--timing-cache", type=click.Path(path_type=Path), default=None, help="TensorRT timing cache file.")
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
    force: bool,
) -> None:
    """Build TensorRT (on the target GPU) or TensorRT for RTX (ahead of time, no GPU needed) engines."""
    from .device import gpu_info
    from .engines.builder import BuildOptions, build_engines
    from .engines.targets import resolve_target

    target = resolve_target(gpu_name, gpu_info(), flavour)
    options = BuildOptions(opt_level, workspace_gb, hardware_compatible, version_compatible, timing_cache)
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
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the report as JSON.")
@click.pass_obj
@_handle_errors
def parity(
    ui: Ui,
    artifacts: Path,
    backend: str,
    reference: str,
    checkpoint: Path | None,
    images: tuple[Path, ...],
    json_path: Path | None,
) -> None:
    """Compare a backend's detections with upstream eager sam3 (exit 1 on failure)."""
    from .assets.images import demo_image
    from .export.model import model_from_manifest
    from .parity import run_detection_parity
    from .runtime.artifacts import resolve_artifacts
    from .runtime.image import open_image
    from .runtime.processor import Sam3Processor

    found = resolve_artifacts(artifacts)
    pictures = [open_image(p) for p in images] or [demo_image()]
    ui.progress(f"reference: upstream sam3 ({reference}) from {found.manifest.get('weights', {}).get('kind')} weights")
    model, origin = model_from_manifest(found.manifest, checkpoint)
    with Sam3Processor(found.folder, backend=backend) as candidate:
        report = run_detection_parity(
            model, candidate, pictures, weights=origin.describe(), backend=candidate.backend.name, progress=ui.progress
        )
    for case in report.cases:
        click.echo(case.describe())
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2))
    if not report.passed:
        failing = [c.case for c in report.cases if not c.passed]
        raise ParityError(f"parity failed for {len(failing)} case(s): {', '.join(failing)}")
    click.echo(f"parity passed: {len(report.cases)} cases, backend {report.backend}, {origin.describe()}")


if __name__ == "__main__":  # pragma: no cover
    main()
