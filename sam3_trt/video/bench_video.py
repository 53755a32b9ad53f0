"""``sam3-trt bench-video``: per-frame and per-object stage latency of the video predictor on a drawn clip.

The predictor runs upstream's requests on the clip (a text prompt on frame 0, tracked forward). Every graph
run goes through :class:`~.predictor.HostOutputs`, which counts and times it (run plus copy of the outputs
to the host, which waits for a GPU); the propagation's wall time per frame, minus the graph time, is the
host time (upstream's association, hot-start, NMS and memory selection, and this runtime's feeds).

Stages (per tracked frame): ``video_vision_encoder`` (one ViT pass, both necks), ``decoder`` (detection),
``text_encoder`` (once per prompt: cached), and the tracker's ``tracker_memory_attention``,
``tracker_mask_head``, ``tracker_memory_encoder``, whose cost grows with the objects tracked (also given
per object). First runs are inside the measurement: use enough frames that they do not dominate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import Sam3TrtError

#: The clock the bench reads (a test plants times through it).
clock = time.perf_counter

#: Stage order in reports and figures (the pipeline's order for a frame).
VIDEO_STAGES = (
    "video_vision_encoder",
    "text_encoder",
    "decoder",
    "tracker_memory_attention",
    "tracker_mask_head",
    "tracker_memory_encoder",
)


def run_video_bench(
    artifacts: Path,
    backend: str = "auto",
    frames: int = 8,
    prompt: str = "square",
    max_objects: int | None = None,
    progress: Callable[[str], None] | None = None,
    json_path: Path | None = None,
    figure: Path | None = None,
) -> dict[str, Any]:
    """Track ``prompt`` through a drawn clip of ``frames`` frames and report each stage's time.

    Args:
        artifacts: Export made with ``--video``, or engines built from one.
        backend: ``auto``, ``onnxruntime`` or ``tensorrt``.
        frames: Frames in the drawn clip (2 or more).
        prompt: Text prompt given on frame 0.
        max_objects: Upstream's ``max_num_objects``.
        progress: Called with one line per step.
        json_path: Report JSON to write (checked before the run).
        figure: Bar chart PNG of the stages to draw (checked before the run).

    Returns:
        The report: ``frame_ms`` (propagation wall per frame), ``host_ms_per_frame``, ``prompt_ms`` and per
        stage ``calls``, ``ms_per_call``, ``ms_per_frame`` and ``ms_per_object`` (tracker stages).
    """
    from ..assets.images import demo_clip
    from ..checks.bench import machine_info
    from ..paths import check_output_file, write_json
    from ..runtime.processor import check_folder_backend
    from .predictor import folder_predictor, video_folder

    check_output_file(json_path, "--json", (".json",))
    check_output_file(figure, "--figure", (".png",))
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise Sam3TrtError(f"--frames {frames!r}: give 2 or more (the prompt frame and frames tracked after it)")
    if not prompt.strip():
        raise Sam3TrtError("--prompt is empty: give a noun phrase such as 'square'")
    if max_objects is not None and max_objects < 1:
        raise Sam3TrtError(f"--max-objects {max_objects}: use 1 or more (or leave it out: no limit)")

    found = video_folder(artifacts)
    check_folder_backend(found, backend)  # before the host model is built
    weights = found.manifest.get("weights", {"variant": "full", "kind": "unknown"})
    say = progress or (lambda _line: None)
    say(f"building upstream's video model ({weights.get('variant', 'full')}) for its host code")
    clip = demo_clip(frames)
    predictor = folder_predictor(found.folder, weights.get("variant") or "full", backend, max_objects)
    with predictor:
        timed = predictor.graph_model.backend
        session = predictor.start_session(clip)["session_id"]
        start = clock()
        predictor.add_prompt(session, 0, text=prompt)
        prompt_s = clock() - start
        before = {g: dict(v) for g, v in timed.stats.items()}
        objects = []
        start = clock()
        for result in predictor.propagate_in_video(session, "forward", 0, None):
            objects.append(len(result["outputs"]["out_obj_ids"]))
            say(f"frame {result['frame_index']}: {objects[-1]} objects")
        wall = clock() - start
        after = timed.stats
        name = predictor.backend.name
    stages = {}
    graph_s = 0.0
    for graph in VIDEO_STAGES:
        was = before.get(graph, {"calls": 0, "seconds": 0.0, "objects": 0})
        now = after.get(graph, was)
        calls, seconds, objs = (now[k] - was[k] for k in ("calls", "seconds", "objects"))
        graph_s += seconds
        stages[graph] = {
            "calls": int(calls),
            "ms_per_call": 1e3 * seconds / calls if calls else None,
            "ms_per_frame": 1e3 * seconds / frames,
            "ms_per_object": 1e3 * seconds / objs if objs else None,
        }
    report = {
        "kind": "video",
        "backend": name,
        "artifacts": str(artifacts),
        "weights": weights,
        "precision": found.manifest.get("precision", {}).get("mode", "fp32"),
        "frames": frames,
        "prompt": prompt,
        "objects_per_frame": sum(objects) / len(objects) if objects else 0.0,
        "prompt_ms": 1e3 * prompt_s,
        "frame_ms": 1e3 * wall / frames,
        "host_ms_per_frame": 1e3 * (wall - graph_s) / frames,
        "stages": stages,
        "machine": machine_info(),
        "note": "graph times include copying outputs to the host; first runs are included",
    }
    write_json(json_path, report)
    if figure is not None:
        video_bench_figure(report, figure)
    return report


def video_bench_lines(report: dict[str, Any]) -> list[str]:
    """The report as text lines (one per stage)."""
    lines = [
        f"video bench: {report['backend']}, {report['weights'].get('variant', '?')} model "
        f"({report['weights'].get('kind', '?')} weights), {report['frames']} frames, "
        f"{report['objects_per_frame']:.1f} objects per frame",
        f"  frame (propagation wall)     {report['frame_ms']:9.1f} ms",
        f"  host (upstream + feeds)      {report['host_ms_per_frame']:9.1f} ms per frame",
        f"  prompt (add_prompt, frame 0) {report['prompt_ms']:9.1f} ms",
    ]
    for graph, stage in report["stages"].items():
        per_object = stage["ms_per_object"]
        extra = f", {per_object:.1f} ms per object" if per_object is not None else ""
        lines.append(f"  {graph:28s} {stage['ms_per_frame']:9.1f} ms per frame ({stage['calls']} runs{extra})")
    return lines


def video_bench_figure(report: dict[str, Any], path: Path) -> None:
    """Bar chart of each stage's milliseconds per frame (and per object), with the frame and host time."""
    from ..checks.figures import bar_chart

    short = {"video_vision_encoder": "vision", "tracker_memory_attention": "memory attention"}
    short |= {"tracker_mask_head": "mask head", "tracker_memory_encoder": "memory encoder"}
    groups = ["frame", "host", *(short.get(g, g) for g in report["stages"])]
    per_frame = [report["frame_ms"], report["host_ms_per_frame"]]
    per_frame += [s["ms_per_frame"] for s in report["stages"].values()]
    per_object = [None, None, *(s["ms_per_object"] for s in report["stages"].values())]
    machine = report["machine"]
    gpu = machine.get("gpu")
    title = (
        f"sam3-trt video bench: {report['weights'].get('variant', '?')} model, "
        f"{report['weights'].get('kind', '?')} weights, {report['backend']}: ms per frame (log scale)"
    )
    subtitle = (
        f"{machine.get('cpu', 'CPU ?')}, {machine.get('cpu_count', '?')} cores; "
        f"{', '.join(gpu) if isinstance(gpu, list) else 'no GPU'}; {report['frames']} frames, "
        f"{report['objects_per_frame']:.1f} objects per frame"
    )
    bar_chart(groups, {"per frame": per_frame, "per object": per_object}, path, title, subtitle=subtitle)
