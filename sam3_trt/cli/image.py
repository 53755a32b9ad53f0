"""``sam3-trt segment``: one image, text and/or box prompts, an overlay and a detections JSON."""

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
) -> None:
    """Segment IMAGE with text and/or box prompts; write an overlay PNG (and JSON)."""
    from ..runtime.segment import segment_image

    summary = segment_image(
        image, artifacts, output, prompts, boxes, backend, threshold, json_path, max_detections, progress=ui.progress
    )
    echo_json(summary)


COMMANDS = [segment]
