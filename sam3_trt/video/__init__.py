"""Video: SAM3's detector and tracker on the exported graphs, inside upstream's own host control flow.

:mod:`.predictor` is upstream's video predictor API (:class:`Sam3VideoPredictor`) over upstream's video model
(:mod:`.model` builds it from our parts) with its neural work on graphs; :mod:`.tracker` runs the tracker's
per-frame step and memory encoding on the tracker graphs; :mod:`.memory` picks the memories and object
pointers a frame attends to (upstream's selection, as graph inputs); :mod:`.window` bounds a session's
per-frame state; :mod:`.teacher_forced` checks all of it against upstream's eager model; :mod:`.track` and
:mod:`.bench` are ``sam3-trt track`` and ``sam3-trt bench-video``.
"""

from .memory import MemoryFeeds, select_memories
from .model import build_video_model
from .predictor import GraphVideoModel, Sam3VideoPredictor
from .teacher_forced import TeacherForced, TeacherForcedVideo, compare_tracks
from .tracker import GraphTracker, feature_cache, upstream_on_cpu
from .window import DEFAULT_MEMORY_WINDOW, MemoryWindow

__all__ = [
    "DEFAULT_MEMORY_WINDOW",
    "GraphTracker",
    "GraphVideoModel",
    "MemoryFeeds",
    "MemoryWindow",
    "Sam3VideoPredictor",
    "TeacherForced",
    "TeacherForcedVideo",
    "build_video_model",
    "compare_tracks",
    "feature_cache",
    "select_memories",
    "upstream_on_cpu",
]
