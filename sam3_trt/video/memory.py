"""Which memories and object pointers a tracked frame attends to, as inputs of ``tracker_memory_attention``.

Upstream's ``_prepare_memory_conditioned_features`` chooses them and runs the attention in one method;
the attention is a graph here, so the choice is made on the host, by the same rules and with upstream's
own helpers (``select_closest_cond_frames`` and the tracker's ``frame_filter`` memory selection):

* memory frames: the (up to ``max_cond_frames_in_attn``) prompted frames closest in time, temporal slot 0,
  then up to ``num_maskmem - 1`` earlier tracked frames, slot ``num_maskmem - distance rank``;
* object pointers: the prompted frames not after this one (signed frame distance), then up to
  ``min(num_frames, max_obj_ptrs_in_encoder) - 1`` earlier tracked frames (their rank), each distance
  divided by that window minus one, as upstream's ``_get_tpos_enc`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from ..runtime.arrays import to_float32


@dataclass
class MemoryFeeds:
    """Inputs of ``tracker_memory_attention`` (without ``pix_feat``) and the frames they came from.

    Attributes:
        memory: ``[O, M, 64, 72, 72]`` float32 spatial memories.
        memory_tpos: ``[M]`` int64 temporal slots (0: prompted frame).
        obj_ptrs: ``[O, Q, 256]`` float32 object pointers.
        obj_ptr_tpos: ``[Q]`` float32 normalised frame distances.
        memory_frames: Frame index of each memory, in order.
        pointer_frames: Frame index of each pointer, in order.
    """

    memory: np.ndarray
    memory_tpos: np.ndarray
    obj_ptrs: np.ndarray
    obj_ptr_tpos: np.ndarray
    memory_frames: list[int]
    pointer_frames: list[int]

    def feeds(self) -> dict[str, np.ndarray]:
        """The graph inputs by name."""
        return {
            "memory": self.memory,
            "memory_tpos": self.memory_tpos,
            "obj_ptrs": self.obj_ptrs,
            "obj_ptr_tpos": self.obj_ptr_tpos,
        }


def select_memories(
    tracker: Any, frame_idx: int, output_dict: dict, num_frames: int, reverse: bool = False
) -> MemoryFeeds:
    """Memories and pointers upstream's tracker attends to on ``frame_idx`` (a frame after the prompt).

    Args:
        tracker: Upstream ``Sam3TrackerPredictor`` (its settings and ``frame_filter``).
        frame_idx: The frame being tracked.
        output_dict: ``{"cond_frame_outputs": {...}, "non_cond_frame_outputs": {...}}`` of the objects.
        num_frames: Frames in the clip.
        reverse: Tracking backwards in time.

    Returns:
        The graph inputs, with the frames they were taken from.

    Raises:
        Sam3TrtError: No prompted frame yet, or no pointer (the graph needs at least one of each).
    """
    from sam3.model.sam3_tracker_utils import select_closest_cond_frames

    cond = output_dict["cond_frame_outputs"]
    non_cond = output_dict["non_cond_frame_outputs"]
    if not cond:
        raise Sam3TrtError(f"frame {frame_idx}: no prompted frame to track from; add a prompt first")
    sign = -1 if reverse else 1
    selected, unselected = select_closest_cond_frames(
        frame_idx, cond, tracker.max_cond_frames_in_attn, keep_first_cond_frame=tracker.keep_first_cond_frame
    )
    stride = tracker.memory_temporal_stride_for_eval
    valid = (
        tracker.frame_filter(output_dict, reverse, frame_idx, num_frames, stride)
        if tracker.use_memory_selection
        else None
    )

    memories: list[tuple[int, int, Any]] = [(0, t, out) for t, out in selected.items()]
    slots = tracker.num_maskmem
    for slot in range(1, slots):
        back = slots - slot  # how many frames before this one
        if valid is not None:
            if back > len(valid):
                continue
            prev = valid[-back]
        elif back == 1:
            prev = frame_idx - sign
        elif not reverse:
            prev = ((frame_idx - 2) // stride) * stride - (back - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (back - 2) * stride
        out = non_cond.get(prev, unselected.get(prev))
        if out is not None:
            memories.append((slot, prev, out))

    window = min(num_frames, tracker.max_obj_ptrs_in_encoder)
    pointers: list[tuple[int, int, Any]] = [
        ((frame_idx - t) * sign, t, out)
        for t, out in selected.items()
        if (t >= frame_idx if reverse else t <= frame_idx)
    ]
    for step in range(1, window):
        if valid is None:
            t = frame_idx + step if reverse else frame_idx - step
            if t < 0 or t >= num_frames:
                break
        else:
            if step >= len(valid):
                break
            t = valid[-step]
        out = non_cond.get(t, unselected.get(t))
        if out is not None:
            pointers.append((step, t, out))
    if not pointers or window < 2:
        raise Sam3TrtError(
            f"frame {frame_idx}: no object pointer to attend to (prompted frames {sorted(cond)}, clip of "
            f"{num_frames} frames); track from a prompted frame in the tracking direction"
        )

    # upstream stores memories in bfloat16; the graphs take float32
    return MemoryFeeds(
        memory=np.stack([to_float32(out["maskmem_features"]) for _, _, out in memories], axis=1),
        memory_tpos=np.asarray([slot for slot, _, _ in memories], dtype=np.int64),
        obj_ptrs=np.stack([to_float32(out["obj_ptr"]) for _, _, out in pointers], axis=1),
        obj_ptr_tpos=np.asarray([dist / (window - 1) for dist, _, _ in pointers], dtype=np.float32),
        memory_frames=[t for _, t, _ in memories],
        pointer_frames=[t for _, t, _ in pointers],
    )
