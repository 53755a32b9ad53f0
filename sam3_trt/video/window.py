"""A bounded memory window for video sessions: per-frame state far from the frame being tracked is dropped.

Upstream's video model keeps, for every frame it has tracked and for as long as the session lives:

* each tracker state's non-conditioning outputs (``output_dict`` and the per-object views of it): memory
  features, 288-px mask logits and object pointers, about 1 MB per object and frame at full size;
* ``cached_frame_outputs``: every object's video-resolution boolean mask (2 MB per object at 1080p);
* a per-frame score dict (``obj_id_to_tracker_score_frame_wise``), which upstream deep-copies on every
  frame (so each frame also costs time proportional to the frames already tracked);
* the set of suppressed objects per frame.

On a long clip that grows without bound (1080p, 10 objects, 10,000 frames: about 30 GB). A
:class:`MemoryWindow` drops a frame's state once it lies more than ``frames`` behind the frame being tracked,
unless it lies within ``frames`` of a frame a propagation started from (the backward half of ``"both"``
reads the forward half's first frames). Upstream yields a frame 15 frames after tracking it (hot-start
delay): the window follows the frame tracked, not the frame yielded. Conditioning outputs (prompted and detector-added frames) are
never dropped, and neither is the small per-frame metadata of hot-start and association.

What the tracker reads: the last ``num_maskmem - 1`` (6) frames' memories and up to
``max_obj_ptrs_in_encoder - 1`` (15) frames' pointers, chosen by upstream's memory selection among the
frames whose IoU score passed its threshold, scanning back as far as it must. So:

* on a clip of up to ``frames + 1`` frames nothing is dropped: outputs are upstream's, bit for bit;
* on a longer clip, with ``frames`` >= 15, outputs are upstream's whenever 15 of each object's last
  ``frames`` frames passed memory selection (otherwise upstream would reach further back than the window);
* requests that read dropped frames (fetching results already tracked, re-propagating an edited object
  over them, a click on such a frame) are refused in one line naming the frames, before any work.

``frames=None`` keeps everything, as upstream does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import Sam3TrtError

#: Frames kept behind the tracked frame (about 2 s at 30 fps): on clips of up to 65 frames nothing is dropped,
#: and the tracker's own reach (15 pointer frames) is well inside it.
DEFAULT_MEMORY_WINDOW = 64

#: ``inference_state`` key of the window's record (propagation starts and dropped frames); cleared when the
#: session's prompts start over.
WINDOW_STATE = "sam3_trt_memory_window"


def check_window(frames: Any, name: str = "memory_window", keep_all: str = "None") -> int | None:
    """``frames`` as the window's size, or :class:`Sam3TrtError` in one line.

    Args:
        frames: A frame count >= 1, or ``None`` (keep every frame, as upstream).
        name: How the error names the value (``"memory_window"``, ``"--memory-window"``).
        keep_all: How the error spells "keep every frame" (``None``, ``all`` on the command line).
    """
    if frames is None:
        return None
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise Sam3TrtError(
            f"{name}={frames!r}: give the frames of tracking state to keep behind the tracked frame (1 or more; "
            f"default {DEFAULT_MEMORY_WINDOW}), or {keep_all} to keep every frame as upstream does"
        )
    return frames


def parse_memory_window(value: str | int | None, name: str = "--memory-window") -> int | None:
    """A memory window as given on a command line: a frame count, ``all`` (keep every frame: ``None``), or
    :data:`DEFAULT_MEMORY_WINDOW` when not given (``None``).

    Args:
        value: The text (or number) given.
        name: How errors name it.
    """
    if value is None:
        return DEFAULT_MEMORY_WINDOW
    if isinstance(value, str) and value.strip().lower() == "all":
        return None
    try:
        frames: Any = int(value)
    except ValueError:
        frames = value
    return check_window(frames, name, keep_all="all")


def _record(state: dict) -> dict:
    return state.setdefault(WINDOW_STATE, {"starts": set(), "dropped": set()})


def forget(state: dict) -> None:
    """Clear the window's record (the session's prompts started over: upstream cleared its state)."""
    state.pop(WINDOW_STATE, None)


def dropped_frames(state: dict) -> set[int]:
    """Frames whose per-frame state this session's window dropped."""
    return set(state.get(WINDOW_STATE, {}).get("dropped", ()))


def _tracker_frame_dicts(state: dict) -> Iterable[dict]:
    """Every ``frame -> output`` dict of the session's tracker states that holds non-conditioning frames."""
    for tracker_state in state.get("tracker_inference_states", []):
        yield tracker_state["output_dict"]["non_cond_frame_outputs"]
        for per_object in tracker_state["output_dict_per_obj"].values():
            yield per_object["non_cond_frame_outputs"]


def _frame_dicts(state: dict) -> Iterable[dict]:
    """Every per-frame dict the window bounds (tracker outputs, cached masks, per-frame scores)."""
    yield from _tracker_frame_dicts(state)
    yield state.get("cached_frame_outputs", {})
    metadata = state.get("tracker_metadata", {})
    if "obj_id_to_tracker_score_frame_wise" in metadata:
        yield metadata["obj_id_to_tracker_score_frame_wise"]
    suppressed = metadata.get("rank0_metadata", {}).get("suppressed_obj_ids")
    if suppressed is not None:
        yield suppressed


def held_frames(state: dict) -> list[int]:
    """Frames whose tracker outputs or cached masks the session holds (conditioning frames excluded)."""
    frames: set[int] = set(state.get("cached_frame_outputs", {}))
    for outputs in _tracker_frame_dicts(state):
        frames.update(outputs)
    return sorted(frames)


def held_bytes(state: dict) -> int:
    """Bytes of the tensors and arrays in the per-frame state the window bounds (views counted once)."""
    seen: set[int] = set()
    total = 0

    def walk(value: Any) -> None:
        nonlocal total
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif hasattr(value, "untyped_storage"):  # torch: views share one storage
            storage = value.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif hasattr(value, "nbytes") and hasattr(value, "base"):  # numpy
            base = value if value.base is None else value.base
            if id(base) not in seen:
                seen.add(id(base))
                total += int(base.nbytes)

    walk(state.get("cached_frame_outputs", {}))
    for outputs in _tracker_frame_dicts(state):
        walk(outputs)
    return total


class MemoryWindow:
    """Drops a session's per-frame state more than ``frames`` behind the tracked frame (not near a start).

    Args:
        frames: Frames kept behind the tracked frame and each side of a propagation's start (see
            :data:`DEFAULT_MEMORY_WINDOW`); ``None`` keeps every frame.
    """

    def __init__(self, frames: int | None = DEFAULT_MEMORY_WINDOW) -> None:
        self.frames = check_window(frames)

    def start(self, state: dict, start_frame: int) -> None:
        """Record that a propagation starts at ``start_frame`` (its neighbourhood is kept for the session)."""
        if self.frames is not None:
            _record(state)["starts"].add(int(start_frame))

    def keeps(self, state: dict, frame: int, current: int, reverse: bool) -> bool:
        """Whether ``frame``'s state stays while ``current`` is tracked (frames ahead of it always stay:
        re-tracking an object reads the other objects' results on the frames it comes to)."""
        if self.frames is None:
            return True
        behind = frame > current + self.frames if reverse else frame < current - self.frames
        return not behind or any(abs(frame - start) <= self.frames for start in _record(state)["starts"])

    def evict(self, state: dict, current: int, reverse: bool) -> list[int]:
        """Drop the per-frame state of frames the window no longer keeps; returns the frames dropped.

        Args:
            state: The session's inference state.
            current: The frame tracked last.
            reverse: Tracking backwards (frames after ``current`` are behind it).
        """
        if self.frames is None:
            return []
        dropped: set[int] = set()
        for per_frame in _frame_dicts(state):
            for frame in [f for f in per_frame if not self.keeps(state, f, current, reverse)]:
                del per_frame[frame]
                dropped.add(frame)
        for tracker_state in state.get("tracker_inference_states", []):
            tracker_state["consolidated_frame_inds"]["non_cond_frame_outputs"].difference_update(dropped)
        _record(state)["dropped"].update(dropped)
        return sorted(dropped)

    def check_reads(self, state: dict, frames: Iterable[int], request: str) -> None:
        """Refuse a request that reads the state of frames this window dropped.

        Args:
            state: The session's inference state.
            frames: Frames the request reads.
            request: How the error names the request.
        """
        gone = sorted(dropped_frames(state).intersection(frames))
        if gone:
            shown = _ranges(gone)
            raise Sam3TrtError(
                f"{request} reads frames {shown}, whose outputs left the memory window "
                f"(memory_window={self.frames} frames behind the tracked frame); track them again after a "
                "new text/box prompt (start_frame_index near them), or open the session on a predictor with "
                "memory_window=None to keep every frame as upstream does"
            )


def _ranges(frames: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1..3, 7"``."""
    parts: list[str] = []
    start = prev = frames[0]
    for frame in [*frames[1:], None]:
        if frame is not None and frame == prev + 1:
            prev = frame
            continue
        parts.append(str(start) if start == prev else f"{start}..{prev}")
        if frame is not None:
            start = prev = frame
    return ", ".join(parts)
