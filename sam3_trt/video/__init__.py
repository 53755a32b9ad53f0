"""Video: SAM3's tracker on the exported graphs, inside upstream's own host control flow.

:mod:`.memory` picks the memories and object pointers a frame attends to (upstream's selection, as data
for the memory-attention graph); :mod:`.tracker` runs upstream's tracking predictor with its per-frame
step and memory encoding on the graphs.
"""

from .memory import MemoryFeeds, select_memories
from .parity import TeacherForced, compare_tracks
from .tracker import GraphTracker, feature_cache, upstream_on_cpu

__all__ = [
    "GraphTracker",
    "MemoryFeeds",
    "TeacherForced",
    "compare_tracks",
    "feature_cache",
    "select_memories",
    "upstream_on_cpu",
]
