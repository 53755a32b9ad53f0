"""``sam3-trt segment``: one image, text and/or box prompts, clicks or everything; an overlay and a detections JSON."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    Ui,
    artifacts_option,
    backend_option,
    boxes_option,
    echo_json,
    handle_errors,
    image_output_option,
    json_file_option,
    multimask_option,
    points_option,
    prompts_option,
    threshold_option,
)


@click.command()
@click.argument("image", type=click.Path(path_type=Path))
@prompts_option("Text prompt (repeatable; all run in one decoder batch).")
@boxes_option()
@artifacts_option()
@backend_option()
@threshold_option("Keep detections with score > threshold (0 to 1).")
@image_output_option(required=True)
@json_file_option("Detections JSON (RLE masks).")
@click.option(
    "--max-detections", type=int, default=10, show_default=True, help="Best detections drawn and written (by score)."
)
@points_option(
    "Click x,y[,neg] in pixels of IMAGE (repeatable; upstream's predict_inst, with at most one --box; needs an "
    "export made with --video)."
)
@multimask_option()
@click.option(
    "--everything", is_flag=True, help="Automatic masks: every object without a prompt (needs a --video export)."
)
@click.option("--points-per-side", type=int, help="--everything: grid clicks per side  [default: 32]")
@click.option("--pred-iou-thresh", type=float, help="--everything: keep predicted IoU above  [default: 0.8]")
@click.option("--stability-thresh", type=float, help="--everything: keep stability at least  [default: 0.95]")
@click.pass_obj
@handle_errors
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
    points: tuple[str, ...],
    multimask: bool,
    everything: bool,
    points_per_side: int | None,
    pred_iou_thresh: float | None,
    stability_thresh: float | None,
) -> None:
    """Segment IMAGE with text and/or box prompts; write an overlay PNG (and JSON).

    Or click objects (--point, upstream's predict_inst) or find every object (--everything, automatic masks):
    both need an export made with --video.
    """
    from ..errors import Sam3TrtError
    from ..runtime.segment import automatic_settings, segment_image

    knobs = {"points_per_side": points_per_side, "pred_iou_thresh": pred_iou_thresh}
    knobs["stability_score_thresh"] = stability_thresh
    automatic = automatic_settings(everything, knobs)
    if multimask and not points:
        raise Sam3TrtError("--multimask chooses among a click's three masks: give --point x,y too")
    given = click.get_current_context().get_parameter_source("threshold")
    if (points or everything) and given is click.core.ParameterSource.COMMANDLINE:
        raise Sam3TrtError(
            "--threshold filters concept detections (--prompt/--box); clicks and --everything score masks by "
            "predicted IoU: drop --threshold (--everything has --pred-iou-thresh)"
        )
    summary = segment_image(
        image,
        artifacts,
        output,
        prompts,
        boxes,
        backend,
        threshold,
        json_path,
        max_detections,
        progress=ui.progress,
        points=points,
        multimask=multimask,
        everything=everything,
        automatic=automatic,
    )
    echo_json(summary)


COMMANDS = [segment]
