"""Export of the tracker graphs and of the video vision graph (``sam3-trt export --video``)."""

from __future__ import annotations

import contextlib
from typing import Any

from .tracker_model import check_video_model
from .tracker_wrappers import tracker_wrappers, video_vision_wrapper


def export_tracker(tracker: Any, out_dir: Any, graphs: Any = None, progress: Any = None) -> list[Any]:
    """Export the tracker graphs into ``out_dir`` (``{name}.onnx`` + ``.onnx.data`` each).

    Args:
        tracker: From :func:`build_tracker`.
        out_dir: Existing folder.
        graphs: Graph names (default: :data:`~sam3_trt.specs.TRACKER_GRAPHS`).
        progress: Called with one line per graph.

    Returns:
        The ``.onnx`` paths written.
    """
    from pathlib import Path

    from ..specs import TRACKER_GRAPHS, VIDEO_SPECS
    from .exporter import export_graph

    wrappers = tracker_wrappers(tracker)
    paths = []
    for name in graphs or TRACKER_GRAPHS:
        spec = VIDEO_SPECS[name]
        path = Path(out_dir) / spec.onnx_file
        if progress is not None:
            progress(f"export: {name} (torch.onnx dynamo)")
        # none of the image model's export patches apply to the tracker
        export_graph(tracker, spec, path, wrapper=wrappers[name], patches=contextlib.nullcontext())
        paths.append(path)
    return paths


def export_video_vision(model: Any, out_dir: Any) -> Any:
    """Export ``video_vision_encoder`` from the image model (built with ``video=True``); returns its path."""
    from pathlib import Path

    from ..specs import VIDEO_SPECS
    from .exporter import export_graph

    check_video_model(model)
    spec = VIDEO_SPECS["video_vision_encoder"]
    path = Path(out_dir) / spec.onnx_file
    export_graph(model, spec, path, wrapper=video_vision_wrapper(model))
    return path
