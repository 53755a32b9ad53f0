"""``sam3-trt track`` and ``bench-video``: a prompt tracked through a clip, and the video stages timed."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    Ui,
    artifacts_option,
    backend_option,
    echo_json,
    figure_option,
    handle_errors,
    json_file_option,
    max_objects_option,
    path_option,
)

VIDEO_ARTIFACTS_HELP = "Export folder made with `export --video`, or engines built from one."


@click.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--prompt", default=None, help="Text prompt (a noun phrase) given on --prompt-frame.")
@click.option("--box", default=None, help="Box prompt x0,y0,x1,y1[,neg] in pixels of the frames, on --prompt-frame.")
@artifacts_option(VIDEO_ARTIFACTS_HELP)
@backend_option()
@path_option("--output", help="Overlay video (.mp4) or folder for overlay frames 00000.png ...", required=True)
@json_file_option("Tracks JSON (RLE masks).")
@click.option("--prompt-frame", type=int, default=0, show_default=True, help="Frame index the prompt is given on.")
@max_objects_option("Track at most this many objects (upstream max_num_objects).")
@click.option(
    "--memory-window",
    default=None,
    help="Frames of tracking state kept behind the tracked frame (default 64), or 'all' to keep every frame.",
)
@click.option("--fps", type=float, default=None, help="Frame rate of an .mp4 --output (default: VIDEO's, or 30).")
@click.pass_obj
@handle_errors
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
    from ..video.track import track_video

    summary = track_video(
        video, artifacts, output, prompt, box, backend, json_path, prompt_frame, max_objects, memory_window, fps,
        progress=ui.progress,
    )  # fmt: skip
    echo_json(summary)


@click.command("bench-video")
@artifacts_option(VIDEO_ARTIFACTS_HELP)
@backend_option()
@click.option("--frames", type=int, default=8, show_default=True, help="Frames of the drawn clip (2 or more).")
@click.option("--prompt", default="square", show_default=True, help="Text prompt given on frame 0.")
@max_objects_option("Track at most this many objects.")
@json_file_option()
@figure_option("Bar chart PNG of the stages.")
@click.pass_obj
@handle_errors
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
    from ..video.bench_video import run_video_bench, video_bench_lines

    report = run_video_bench(
        artifacts, backend, frames, prompt, max_objects, progress=ui.progress, json_path=json_path, figure=figure
    )
    for line in video_bench_lines(report):
        click.echo(line)


COMMANDS = [track, bench_video]
