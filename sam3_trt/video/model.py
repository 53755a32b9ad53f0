"""Upstream's video model (``Sam3VideoInferenceWithInstanceInteractivity``) from our loaded parts, and what it
needs to run without CUDA.

The video model is host control flow (association, hot-start, re-conditioning, occlusion suppression, NMS,
hole filling) around three neural pieces: the detector (:mod:`sam3.model.sam3_image`), the tracker and the
per-frame memory update. :func:`build_video_model` assembles it as ``sam3.model_builder.build_sam3_video_model``
does, from an image model loaded with the tracker neck (``load_model(..., video=True)``) and a tracker
(``export.tracker_model.build_tracker``); :mod:`.predictor` then puts the neural pieces on graphs.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

#: The settings ``build_sam3_video_model`` gives the video model (``apply_temporal_disambiguation=True``).
VIDEO_MODEL_SETTINGS: dict[str, Any] = {
    "score_threshold_detection": 0.5,
    "assoc_iou_thresh": 0.1,
    "det_nms_thresh": 0.1,
    "new_det_thresh": 0.7,
    "hotstart_delay": 15,
    "hotstart_unmatch_thresh": 8,
    "hotstart_dup_thresh": 8,
    "suppress_unmatched_only_within_hotstart": True,
    "min_trk_keep_alive": -1,
    "max_trk_keep_alive": 30,
    "init_trk_keep_alive": 30,
    "suppress_overlapping_based_on_recent_occlusion_threshold": 0.7,
    "suppress_det_close_to_boundary": False,
    "fill_hole_area": 16,
    "recondition_every_nth_frame": 16,
    "masklet_confirmation_enable": False,
    "decrease_trk_keep_alive_for_empty_masklets": False,
    "image_size": 1008,
    "image_mean": (0.5, 0.5, 0.5),
    "image_std": (0.5, 0.5, 0.5),
}


def build_video_model(image_model: Any, tracker: Any, **overrides: Any) -> Any:
    """Upstream's video model around ``image_model`` (as its detector) and ``tracker``.

    The detector shares ``image_model``'s modules (no weights are copied); it takes upstream's video detector
    class and the joint box score (class probability x presence) the video builder turns on, without
    changing ``image_model`` itself.

    Args:
        image_model: ``Sam3Image`` with the tracker neck (``sam3_trt.export.model.load_model(..., video=True)``).
        tracker: Upstream ``Sam3TrackerPredictor`` (``sam3_trt.export.tracker_model.build_tracker``).
        overrides: Video model settings to change from :data:`VIDEO_MODEL_SETTINGS` (e.g. ``max_num_objects``).
    """
    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU
    from sam3.model.sam3_video_inference import Sam3VideoInferenceWithInstanceInteractivity

    from ..errors import Sam3TrtError

    if not hasattr(image_model.backbone, "vision_backbone") or not getattr(
        image_model.backbone.vision_backbone, "sam2_convs", None
    ):
        raise Sam3TrtError(
            "image_model has no tracker neck (sam2_convs): load it with load_model(..., video=True) or build it "
            "with enable_inst_interactivity=True"
        )
    detector = copy.copy(image_model)  # a new instance over the same submodules and parameters
    detector.__class__ = Sam3ImageOnVideoMultiGPU
    # Sam3ImageOnVideoMultiGPU.__init__'s attributes, for one process
    detector.rank, detector.world_size = 0, 1
    detector.async_all_gather, detector.gather_backbone_out = True, True
    detector.supervise_joint_box_scores = True
    settings = {**VIDEO_MODEL_SETTINGS, **overrides}
    return Sam3VideoInferenceWithInstanceInteractivity(detector=detector, tracker=tracker, **settings).eval()


def release_weights(model: Any) -> int:
    """Free the storage of every parameter of ``model``, keeping each one's shape, dtype and device.

    For a video model whose neural work runs on graphs: upstream's host code reads the model's settings,
    buffers and device (from its parameters), never its weights, so holding them (3.4 GB at full size) is
    waste. A released weight reads as NaN everywhere, so a host path that did use one would show at once.

    Args:
        model: A ``torch.nn.Module``.

    Returns:
        The bytes released.
    """
    import torch

    released = 0
    with torch.no_grad():
        for param in model.parameters():
            released += param.numel() * param.element_size()
            nan = torch.full((1,), float("nan"), dtype=param.dtype, device=param.device)
            param.data = nan.reshape((1,) * param.dim()).expand(param.shape)
    _return_freed_memory()
    return released


def _return_freed_memory() -> None:
    """Hand memory freed inside the C allocator back to the system (glibc keeps freed heap memory for reuse:
    without this, releasing the full-size weights lowered the resident size by 0.2 of 3.4 GB, with it by 3.2)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the memory is reused by this process instead
        pass


def mask_iou(pred_masks: Any, gt_masks: Any) -> Any:
    """``sam3.perflib.masks_ops.mask_iou`` as a matrix product: the same IoUs in O(N·M) memory, not O(N·M·HW).

    Upstream broadcasts ``[N, 1, HW] & [1, M, HW]``: tens of GB for the hundreds of detections random weights
    give. Intersections are sums of 0/1 products below 2**24, so float32 sums are exact in any order.
    """
    pred = pred_masks.flatten(1).float()
    gt = gt_masks.flatten(1).float()
    inter = pred @ gt.T
    union = pred.sum(1)[:, None] + gt.sum(1)[None, :] - inter
    return inter / union.clamp(min=1)


def connected_components_cpu(input_tensor: Any) -> tuple[Any, Any]:
    """``sam3.perflib.connected_components.connected_components_cpu`` with the same labels and sizes.

    Upstream's fails on an empty batch (``torch.stack([])``: a frame with no object, which hole filling
    meets on any clip where nothing is tracked) and sizes components with one full-image pass each; here
    one ``bincount`` per mask.
    """
    import numpy as np
    import torch
    from skimage.measure import label

    out_shape = input_tensor.shape
    masks = input_tensor.squeeze(1) if input_tensor.dim() == 4 and input_tensor.shape[1] == 1 else input_tensor
    if masks.dim() != 3:
        raise ValueError(f"connected components take (B, H, W) or (B, 1, H, W) masks, got {tuple(out_shape)}")
    if masks.shape[0] == 0:
        empty = torch.zeros(out_shape, dtype=torch.int64, device=input_tensor.device)
        return empty, empty.clone()
    labels_list, counts_list = [], []
    for mask in masks:
        labels, num = label(mask.cpu().numpy(), return_num=True)
        sizes = np.bincount(labels.ravel(), minlength=num + 1)
        sizes[0] = 0  # background keeps size 0, as upstream
        labels_list.append(torch.from_numpy(labels.astype(np.int64)))
        counts_list.append(torch.from_numpy(sizes[labels].astype(np.int64)))
    labels_t = torch.stack(labels_list).to(input_tensor.device).view(out_shape)
    counts_t = torch.stack(counts_list).to(input_tensor.device).view(out_shape)
    return labels_t, counts_t


@contextlib.contextmanager
def host_ops() -> Iterator[None]:
    """Upstream's host-side mask NMS and connected components, fixed for the host (same results).

    :func:`mask_iou` bounds NMS memory; :func:`connected_components_cpu` handles a frame with no object.
    Both run on host tensors, which is where the graph backends leave every mask.
    """
    import sam3.perflib.connected_components as components
    import sam3.perflib.nms as nms

    from ..export.patches import swap_attr

    with (
        swap_attr(nms, "mask_iou", mask_iou),
        swap_attr(components, "connected_components_cpu", connected_components_cpu),
    ):
        yield


def _gather_as_float32(x: Any) -> tuple[list[Any], None]:
    """The detector's ``_gather_tensor`` for one process, handing bfloat16 tensors back as float32 (same values)."""
    import torch

    return [x.float() if x.dtype == torch.bfloat16 else x], None


@contextlib.contextmanager
def video_model_on_cpu(model: Any) -> Iterator[None]:
    """Upstream's video model on a machine without CUDA, reversibly.

    On top of :func:`~.tracker.upstream_on_cpu`: tracker states kept on the CPU (the video model creates them
    with CUDA storage), and the tracker neck levels the detector hands over in bfloat16 (rounded for its
    all-gather) given to the tracker as float32 with the same values: on a GPU, upstream's global bfloat16
    autocast takes them as they are; CPU kernels do not mix bfloat16 inputs with float32 weights.
    """
    import functools

    from ..export.patches import swap_attr
    from .tracker import upstream_on_cpu

    tracker = model.tracker
    init_state = functools.partial(
        type(tracker).init_state, tracker, offload_video_to_cpu=True, offload_state_to_cpu=True
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(upstream_on_cpu())
        stack.enter_context(swap_attr(tracker, "init_state", init_state))
        stack.enter_context(swap_attr(model.detector, "_gather_tensor", _gather_as_float32))
        yield
