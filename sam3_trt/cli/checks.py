"""``sam3-trt doctor``, ``parity``, ``bench``, ``inspect``, ``gpu-check``: what is installed, correct and fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import ParityError
from .common import (
    Ui,
    artifacts_option,
    backend_option,
    echo_json,
    figure_option,
    handle_errors,
    json_file_option,
    json_flag_option,
    path_option,
    shape_buckets_option,
)


@click.command()
@json_flag_option()
@handle_errors
def doctor(as_json: bool) -> None:
    """Show which components and GPUs are installed and usable, or why not."""
    from ..checks.doctor import format_report, report

    data = report()
    click.echo(json.dumps(data, indent=2) if as_json else format_report(data))


@click.command()
@artifacts_option()
@backend_option()
@click.option(
    "--reference",
    type=click.Choice(["torch"]),
    default="torch",
    show_default=True,
    help="Reference implementation: upstream sam3 eager Sam3Processor.",
)
@path_option("--checkpoint", help="Checkpoint for the reference (default: the one recorded in the manifest).")
@path_option("--image", "images", help="Image file (repeatable; default: a bundled drawn image).", multiple=True)
@click.option(
    "--prompt",
    "prompts",
    multiple=True,
    help="Text prompt (repeatable; default: text, text + negative box and box-only cases).",
)
@json_file_option()
@figure_option("PNG: reference masks, candidate masks, difference map.")
@click.option("--no-stages", is_flag=True, help="Skip the per-graph (vision, text, decoder) checks.")
@path_option(
    "--save-outputs",
    help="Per-stage outputs of both sides as Polygraphy RunResults JSON (each graph's inputs beside it).",
)
@click.pass_obj
@handle_errors
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
    from ..checks.detection_parity import parity_against_eager

    report, precision, origin = parity_against_eager(
        artifacts, backend, checkpoint, images, prompts, json_path, figure, not no_stages, save_outputs, ui.progress
    )
    for line in [s.describe() for s in report.stages] + [c.describe() for c in report.cases]:
        click.echo(line)
    if not report.passed:
        raise ParityError(f"parity failed ({precision} tolerances): {', '.join(report.failures())}")
    click.echo(f"parity passed: {len(report.cases)} cases, backend {report.backend}, {origin.describe()}")


@click.command()
@artifacts_option("Export folder (FP32 or FP16).")
@click.option(
    "--backends",
    default="torch,onnxruntime",
    show_default=True,
    help="Comma list of torch (upstream eager), onnxruntime, tensorrt.",
)
@path_option("--engines", help="Engine folder for tensorrt.")
@path_option(
    "--int8-artifacts", help="Also run ONNX Runtime on this `calibrate --mode int8` folder (as onnxruntime-int8)."
)
@click.option("--image-size", default="1008x1008", show_default=True, help="WIDTHxHEIGHT of the drawn test image.")
@path_option("--image", help="Use this image file instead.")
@click.option("--prompts", type=int, default=1, show_default=True, help="Text prompts per image (K).")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed runs per backend.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=int, default=None, help="CPU threads for every backend (default: all cores).")
@click.option(
    "--clicks",
    is_flag=True,
    help="Also time a click and a refining click after set_image (an export made with --video).",
)
@click.option(
    "--automatic",
    type=int,
    default=0,
    show_default=True,
    help="Also time automatic masks of the image on an N x N grid of clicks, filters off, beside upstream's "
    "(SAM2's generator over SAM3's click predictor); an export made with --video. 0: off.",
)
@json_file_option()
@figure_option("Bar chart PNG of stage medians.")
@click.pass_obj
@handle_errors
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
    clicks: bool,
    automatic: int,
    json_path: Path | None,
    figure: Path | None,
) -> None:
    """Per-stage latency of each backend beside upstream eager, each in its own process."""
    from ..checks.bench import bench_folder, bench_lines

    report = bench_folder(
        artifacts, backends, image_size, image, json_path, figure, prompts=prompts, repeats=repeats, warmup=warmup,
        threads=threads, engines=engines, progress=ui.progress, int8_artifacts=int8_artifacts, clicks=clicks,
        automatic=automatic,
    )  # fmt: skip
    for line in bench_lines(report):
        click.echo(line)


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@json_flag_option()
@click.option("--no-layers", is_flag=True, help="Engine folders: skip TensorRT's layer information (needs a GPU).")
@click.pass_obj
@handle_errors
def inspect(ui: Ui, path: Path, as_json: bool, no_layers: bool) -> None:
    """What an export or engine folder holds: graph I/O with dynamic ranges, node counts by op and precision."""
    from ..checks.inspection import format_inspect, inspect_folder

    report = inspect_folder(path, layers=not no_layers)
    click.echo(json.dumps(report, indent=2) if as_json else format_inspect(report))


@click.command(name="gpu-check")
@path_option("--out", "out_dir", help=None, default=Path("reports/gpu-check"), show_default=True)
@click.option(
    "--stages", default="all", show_default=True, help="Comma list of stage letters a,b,c,d,e (listed above)."
)
@click.option("--deadline", type=float, default=None, help="Stop cleanly this many seconds after the start.")
@click.option("--resume", is_flag=True, help="Keep the stages an earlier run into --out finished; run the rest.")
@click.option("--simulate", is_flag=True, help="Run every stage on the CPU through GPU doubles (no measurement).")
@path_option("--tiny-export", help="Tiny FP32 export to reuse (default: made).")
@click.option(
    "--full-variant", type=click.Choice(["full", "tiny"]), default="full", show_default=True, help="Model of d and e."
)
@click.option("--flavour", type=click.Choice(["auto", "rtx", "tensorrt"]), default="auto", show_default=True)
@click.option("--rtx-cc", default=None, help="TensorRT for RTX compute capability: current or smXY.")
@path_option("--aot-engines", help="Engines built elsewhere, run in stage b.")
@click.option("--repeats", type=int, default=5, show_default=True, help="Timed bench runs per backend (stage d).")
@shape_buckets_option("TensorRT for RTX engines built here: the shape buckets they record (see build --shape-buckets).")
@click.pass_obj
@handle_errors
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
    shape_buckets: str,
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
    from ..checks.gpu_check import STAGES, GpuCheckOptions, gpu_check
    from ..engines.rtx_runtime import parse_buckets
    from ..paths import check_output_folder

    keys = tuple(s.key for s in STAGES) if stages == "all" else tuple(k.strip() for k in stages.split(","))
    options = GpuCheckOptions(out=out_dir, stages=keys, deadline_s=deadline, resume=resume, simulate=simulate,
                              tiny_export=tiny_export, full_variant=full_variant, flavour=flavour, rtx_cc=rtx_cc,
                              aot_engines=aot_engines, repeats=repeats,
                              shape_buckets=parse_buckets(shape_buckets, "--shape-buckets"))  # fmt: skip
    options.check()
    check_output_folder(out_dir, "--out")
    data = gpu_check(options, progress=ui.progress)
    status = {k: v["status"] for k, v in data["stages"].items()}
    echo_json({"report": str(out_dir / "gpu-check.json"), "stages": status})
    bad = {k: v for k, v in status.items() if v != "ok"}
    if bad:
        click.echo(
            f"error: gpu-check stages not ok: {', '.join(f'{k} {v}' for k, v in bad.items())} "
            f"(details in {out_dir / 'summary.md'})",
            err=True,
        )
        sys.exit(1)


COMMANDS = [doctor, parity, bench, inspect, gpu_check_cmd]
