"""Tracking on the exported graphs inside upstream's tracking predictor, against upstream's eager tracker.

The clip is drawn (:func:`sam3_trt.assets.images.demo_clip`: a square moving right, a disc moving left)
and encoded by the tiny video vision graph; object 1 is clicked, object 2 given as a mask on frame 0, and
upstream's own ``propagate_in_video`` tracks them. Random weights: the checks prove the graph steps
compute what upstream's steps compute from the same state, not that real-weight masks track well.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from sam3_trt.errors import Sam3TrtError

FRAMES = 6


@pytest.fixture(scope="module")
def clip(tracker_export):
    """The drawn clip and, per frame, the tracker neck's raw levels from the tiny video vision graph."""
    import torch

    from sam3_trt.assets.images import demo_clip
    from sam3_trt.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from sam3_trt.runtime.image import preprocess

    out, _ = tracker_export
    frames = demo_clip(FRAMES)
    levels = {}
    with OnnxRuntimeBackend(out) as backend:
        for f, frame in enumerate(frames):
            res = backend.run("video_vision_encoder", {"pixel_values": preprocess(frame)})
            levels[f] = [torch.from_numpy(res[f"tracker_fpn{i}"]) for i in range(3)]
    return frames, levels


#: Normalised centre of the square on frame 0 (demo_image).
SQUARE_CENTRE = [0.2125, 0.3]


def _square_mask(frame):
    rgb = np.asarray(frame)
    return (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)


def _track(tracker, frames, levels, graph_levels: bool, mode, num_frames: int = FRAMES):
    """Upstream's predictor: clicks on the disc (object 1), the square's mask (object 2), propagate forward.

    Returns ``{frame: (object IDs, video-resolution mask logits)}``.
    """
    import torch

    from sam3_trt.video import feature_cache, upstream_on_cpu

    width, height = frames[0].size
    square = torch.from_numpy(_square_mask(frames[0])).float()
    disc = [[0.68, 0.55]]  # normalised centre of the disc on frame 0 (demo_image)
    cache = feature_cache({f: levels[f] for f in range(num_frames)}, None if graph_levels else tracker)
    result = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        stack.enter_context(upstream_on_cpu())
        state = tracker.init_state(
            video_height=height,
            video_width=width,
            num_frames=num_frames,
            cached_features=cache,
            offload_state_to_cpu=True,
        )
        stack.enter_context(mode)
        tracker.add_new_points_or_box(state, 0, 1, points=torch.tensor(disc), labels=torch.tensor([1]))
        tracker.add_new_mask(state, 0, 2, mask=square)
        for f, ids, _, video_res, _ in tracker.propagate_in_video(
            state, 0, num_frames, False, tqdm_disable=True, propagate_preflight=True
        ):
            result[f] = (list(ids), video_res.clone())
    return result


def test_tracking_on_graphs_matches_upstream_teacher_forced_and_free_running(tiny_tracker, tracker_export, clip):
    from sam3_trt.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from sam3_trt.tolerances import TRACKING_TOLERANCES
    from sam3_trt.video import GraphTracker, TeacherForced, compare_tracks

    out, _ = tracker_export
    frames, levels = clip
    with OnnxRuntimeBackend(out) as backend:
        graphs = GraphTracker(tiny_tracker, backend)
        # teacher-forced: every step runs eagerly and on the graphs from upstream's state
        forced = TeacherForced(tiny_tracker, graphs, levels)
        reference = _track(tiny_tracker, frames, levels, graph_levels=False, mode=forced)
        report = forced.report()
        assert report["passed"], report["failures"][:3]
        # frame 0: one step per prompt; frames 1..5: one step for both objects. Memories: the preflight
        # re-encodes frame 0, and upstream's step encodes each tracked frame through the same method
        steps = {"track_step": 2 + FRAMES - 1, "encode_memory": 1 + FRAMES - 1, "update_memory": 0, "refine": 0}
        assert report["steps"] == steps
        assert report["worst"]["mask_iou_min"] >= TRACKING_TOLERANCES["fp32"]["mask_iou_min"]
        # free-running: upstream's predictor with the graph steps installed, from the graphs' features
        before = dict(backend.calls)
        free = _track(tiny_tracker, frames, levels, graph_levels=True, mode=graphs)
        ran = {g: backend.calls[g] - before[g] for g in ("tracker_memory_attention", "tracker_mask_head")}
        assert ran == {"tracker_memory_attention": FRAMES - 1, "tracker_mask_head": 2 + FRAMES - 1}
    # the graph steps were uninstalled: the tracker's own methods are back
    assert "track_step" not in vars(tiny_tracker) and "_encode_new_memory" not in vars(tiny_tracker)
    tracks = compare_tracks(reference, free)
    assert tracks["passed"], tracks
    assert [len(e["iou"]) for e in tracks["frames"]] == [2] * FRAMES
    # the logits themselves, every frame and object, within the FP32 tracking bar (IoU alone passes empty masks)
    worst = _free_running_logits_error(reference, free)
    print("free-running mask logits vs upstream:", worst)
    assert worst <= TRACKING_TOLERANCES["fp32"]["mask_logits_max_abs"], worst
    # not vacuous: each object covers between 5 % and 95 % of the frame on some frame compared, so a mask that
    # is all or nothing would not pass as agreement
    coverage = np.array([(masks > 0).flatten(1).float().mean(dim=1).tolist() for _, masks in reference.values()])
    print("coverage per frame and object:", coverage.round(3).tolist())
    assert ((coverage >= 0.05) & (coverage <= 0.95)).any(axis=0).all(), coverage


def _free_running_logits_error(reference: dict, free: dict) -> float:
    """Worst absolute difference of the video-resolution mask logits, same IDs on every frame; NaN fails."""
    import torch

    assert set(free) == set(reference)
    worst = 0.0
    for f, (ids, masks) in reference.items():
        free_ids, free_masks = free[f]
        assert free_ids == ids, (f, ids, free_ids)
        assert torch.isfinite(free_masks).all(), f
        worst = max(worst, float((masks.float() - free_masks.float()).abs().max()))
    return worst


def _drifting(folder, output: str, delta: float):
    """ONNX Runtime over ``folder`` whose mask head's ``output`` is off by ``delta`` (a graph that drifts)."""
    from sam3_trt.runtime.backends.onnxruntime import OnnxRuntimeBackend

    class Drifting(OnnxRuntimeBackend):
        def run(self, graph, feeds):
            out = super().run(graph, feeds)
            if graph == "tracker_mask_head":
                out[output] = out[output] + np.float32(delta)
            return out

    return Drifting(folder)


def test_free_running_check_catches_a_mask_head_that_drifts(tiny_tracker, tracker_export, clip):
    """The free-running comparison can fail: mask-head logits off by 0.05 land beyond the bar."""
    from sam3_trt.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from sam3_trt.tolerances import TRACKING_TOLERANCES
    from sam3_trt.video import GraphTracker

    out, _ = tracker_export
    frames, levels = clip
    with OnnxRuntimeBackend(out) as backend:
        reference = _track(tiny_tracker, frames, levels, graph_levels=True, mode=GraphTracker(tiny_tracker, backend),
                           num_frames=2)  # fmt: skip
    with _drifting(out, "low_res_masks", 5e-2) as backend:
        drifted = _track(tiny_tracker, frames, levels, graph_levels=True, mode=GraphTracker(tiny_tracker, backend),
                         num_frames=2)  # fmt: skip
    assert _free_running_logits_error(reference, reference) == 0.0
    assert _free_running_logits_error(reference, drifted) > TRACKING_TOLERANCES["fp32"]["mask_logits_max_abs"]


def test_teacher_forcing_catches_a_graph_that_drifts(tiny_tracker, tracker_export, clip):
    """A backend whose object pointers are off by 1e-2 fails the check (so the check can fail)."""
    from sam3_trt.video import GraphTracker, TeacherForced

    out, _ = tracker_export
    frames, levels = clip
    with _drifting(out, "obj_ptr", 1e-2) as backend:
        forced = TeacherForced(tiny_tracker, GraphTracker(tiny_tracker, backend), levels)
        _track(tiny_tracker, frames, levels, graph_levels=False, mode=forced, num_frames=2)
    report = forced.report()
    assert not report["passed"]
    assert all(any("obj_ptr_max_abs" in f for f in c["failures"]) for c in report["failures"])


def test_memory_selection_is_upstreams(tiny_tracker):
    """The memories, pointers and their temporal encodings equal what upstream's own method attends to.

    Upstream's attention module is swapped for a recorder (the attention itself is the graph's, checked
    by the export's parity); frames carry their index in their memory and pointer values.
    """
    import torch
    from sam3.model.sam3_tracker_utils import get_1d_sine_pe

    from sam3_trt.export.patches import swap_attr
    from sam3_trt.export.tracker_model import FEAT_SIDE, grid_pos
    from sam3_trt.video import select_memories, upstream_on_cpu

    t = tiny_tracker
    objects, hw = 2, FEAT_SIDE * FEAT_SIDE
    mem_pos = grid_pos(t.maskmem_backbone.position_encoding, t.mem_dim, FEAT_SIDE)

    def out(f, score=1.0):
        return {
            "maskmem_features": torch.full((objects, t.mem_dim, FEAT_SIDE, FEAT_SIDE), f + 1.0).to(torch.bfloat16),
            "maskmem_pos_enc": [mem_pos.expand(objects, -1, -1, -1)],
            "obj_ptr": torch.full((objects, t.hidden_dim), f + 1.0),
            "eff_iou_score": torch.tensor(score),
        }

    class Recorder(torch.nn.Module):
        def forward(self, src, prompt, prompt_pos, num_obj_ptr_tokens, **_):
            self.prompt, self.prompt_pos, self.ptr_tokens = prompt, prompt_pos, num_obj_ptr_tokens
            return {"memory": src[0]}

    # (prompted frames, tracked frames, frames whose memory selection score is too low, frame, clip, reverse)
    scenarios = [
        ([0], range(1, 20), (), 20, 30, False),  # 1 prompted + 6 previous memories, 1 + 15 pointers
        ([0, 5, 12, 20, 25], [13, 14, 15], (), 16, 30, False),  # 5 prompted frames: the 4 closest are taken
        ([0], range(1, 12), (9, 10), 12, 30, False),  # low-score frames are filtered out
        ([29], range(21, 29), (), 20, 30, True),  # backwards
        ([0], range(1, 5), (), 5, 8, False),  # a short clip: pointer window of 8
    ]
    recorder = Recorder()
    pix = [torch.zeros(hw, objects, t.hidden_dim)]
    for prompted, tracked, low, frame, num_frames, reverse in scenarios:
        output_dict = {
            "cond_frame_outputs": {f: out(f) for f in prompted},
            "non_cond_frame_outputs": {f: out(f, 0.0 if f in low else 1.0) for f in tracked},
        }
        ours = select_memories(t, frame, output_dict, num_frames, reverse)
        with torch.no_grad(), upstream_on_cpu(), swap_attr(t.transformer, "encoder", recorder):
            t._prepare_memory_conditioned_features(
                frame, False, pix, pix, [(FEAT_SIDE, FEAT_SIDE)], output_dict, num_frames, track_in_reverse=reverse
            )
        m = len(ours.memory_frames)
        split = t.hidden_dim // t.mem_dim
        memories = recorder.prompt[: m * hw].reshape(m, hw, objects, t.mem_dim)
        pointers = recorder.prompt[m * hw :]
        label = f"frame {frame}, prompted {prompted}, reverse {reverse}"
        assert pointers.shape[0] == recorder.ptr_tokens == len(ours.pointer_frames) * split, label
        assert [int(v) - 1 for v in memories[:, 0, 0, 0].float()] == ours.memory_frames, label
        assert [int(v) - 1 for v in pointers[::split, 0, 0]] == ours.pointer_frames, label
        assert set(ours.memory_frames).isdisjoint(low) and set(ours.pointer_frames).isdisjoint(low), label
        np.testing.assert_array_equal(ours.memory[:, :, 0, 0, 0], memories[:, 0, :, 0].float().numpy().T)
        # temporal encodings: each memory's slot embedding, each pointer's projected sine encoding
        slots = recorder.prompt_pos[: m * hw : hw, 0] - mem_pos.flatten(2)[0, :, 0]
        expected_slots = t.maskmem_tpos_enc[t.num_maskmem - 1 - torch.from_numpy(ours.memory_tpos)].reshape(m, -1)
        torch.testing.assert_close(slots, expected_slots, rtol=0, atol=1e-5)
        ptr_pos = t.obj_ptr_tpos_proj(get_1d_sine_pe(torch.from_numpy(ours.obj_ptr_tpos), dim=t.hidden_dim))
        torch.testing.assert_close(recorder.prompt_pos[m * hw :: split, 0], ptr_pos, rtol=0, atol=1e-5)


def test_refining_logits_of_another_size_are_resized_as_upstream(tiny_tracker, tracker_export, clip):
    """A click with earlier logits that are not 288 px (a mask prompt's output is 328 px) on the graphs: resized
    to the prompt encoder's 288 as upstream's ``_forward_sam_heads`` does, then the same step as upstream's."""
    import torch

    from sam3_trt.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from sam3_trt.video import GraphTracker, TeacherForced, feature_cache, upstream_on_cpu

    frames, levels = clip
    width, height = frames[0].size
    prev = (torch.randn(1, 1, 328, 328, generator=torch.Generator().manual_seed(0)) * 16).clamp(-32.0, 32.0)
    clicks = {"point_coords": torch.tensor([[SQUARE_CENTRE]]) * 1008, "point_labels": torch.tensor([[1]])}
    with OnnxRuntimeBackend(tracker_export[0]) as backend, torch.inference_mode(), upstream_on_cpu():
        state = tiny_tracker.init_state(
            video_height=height,
            video_width=width,
            num_frames=1,
            cached_features=feature_cache({0: levels[0]}, tiny_tracker),
            offload_state_to_cpu=True,
        )
        _, _, feats, pos, sizes = tiny_tracker._get_image_feature(state, 0, 1)
        forced = TeacherForced(tiny_tracker, GraphTracker(tiny_tracker, backend), levels)
        with forced:
            tiny_tracker.track_step(
                frame_idx=0,
                is_init_cond_frame=True,
                current_vision_feats=feats,
                current_vision_pos_embeds=pos,
                feat_sizes=sizes,
                image=None,
                point_inputs=clicks,
                mask_inputs=None,
                output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
                num_frames=1,
                run_mem_encoder=False,
                prev_sam_mask_logits=prev,
            )
    report = forced.report()
    assert report["passed"], report["failures"]
    # what was measured on that step, not how many steps the test itself asked for
    worst, tol = report["worst"], report["tolerance"]
    for key in ("mask_logits_max_abs", "obj_ptr_max_abs", "score_max_abs"):
        assert 0 <= worst[key] <= tol[key], (key, worst[key])  # NaN (nothing compared) fails here
    assert worst["mask_iou_min"] >= tol["mask_iou_min"]


def test_graph_step_refuses_what_the_graphs_do_not_reproduce(tiny_tracker):
    import torch

    from sam3_trt.export.patches import swap_attr
    from sam3_trt.video import GraphTracker

    with swap_attr(tiny_tracker, "non_overlap_masks_for_mem_enc", True):
        with pytest.raises(Sam3TrtError, match=r"non_overlap_masks_for_mem_enc=True \(supported: False\)"):
            GraphTracker(tiny_tracker, backend=None)
    graphs = GraphTracker(tiny_tracker, backend=None)
    feats = [torch.zeros(s * s, 1, 256) for s in (288, 144, 72)]
    sizes = [(288, 288), (144, 144), (72, 72)]
    common = dict(
        frame_idx=3,
        is_init_cond_frame=False,
        current_vision_feats=feats,
        current_vision_pos_embeds=feats,
        feat_sizes=sizes,
        image=None,
        output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
        num_frames=6,
    )
    with pytest.raises(Sam3TrtError, match=r"frame 3: earlier mask logits are fed back with clicks only"):
        graphs.track_step(
            point_inputs=None, mask_inputs=None, prev_sam_mask_logits=torch.zeros(1, 1, 288, 288), **common
        )
    with pytest.raises(Sam3TrtError, match=r"frame 3: mask prompts are 1152x1152.*got \(1008, 1008\)"):
        graphs.track_step(point_inputs=None, mask_inputs=torch.ones(1, 1, 1008, 1008), **common)
    with pytest.raises(Sam3TrtError, match=r"frame 3: no prompted frame to track from"):
        graphs.track_step(point_inputs=None, mask_inputs=None, **common)
    with pytest.raises(Sam3TrtError, match=r"up to 1008x1008.*got 1152"):
        graphs.encode_new_memory(None, feats, sizes, torch.zeros(1, 1, 1152, 1152), torch.zeros(1, 1), False)
    with graphs, pytest.raises(Sam3TrtError, match="already installed"):
        graphs.__enter__()
    assert "track_step" not in vars(tiny_tracker)


def test_memory_update_across_tracker_states_is_upstreams(tiny_tracker, tracker_export, clip):
    """The video model's per-frame memory update (one resize to 1152, overlap suppression across every
    object of every tracker state, area scores) on the graph equals upstream's method, state by state."""
    from types import SimpleNamespace

    import torch
    from sam3.model.sam3_video_base import Sam3VideoBase

    from sam3_trt.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from sam3_trt.tolerances import TRACKING_TOLERANCES
    from sam3_trt.video import GraphTracker, feature_cache, upstream_on_cpu

    out, _ = tracker_export
    _, levels = clip
    frame, groups = 2, ([1, 2], [3])
    gen = torch.Generator().manual_seed(0)
    masks = torch.randn(3, 288, 288, generator=gen) * 8
    masks[1] = masks[0] - 1.0  # object 2 lies under object 1 everywhere: suppressed

    def states(cache):
        made = []
        for ids in groups:
            state = tiny_tracker.init_state(
                video_height=240, video_width=320, num_frames=FRAMES, cached_features=cache, offload_state_to_cpu=True
            )
            for obj_id in ids:
                tiny_tracker._obj_id_to_idx(state, obj_id)
            n = len(ids)
            state["output_dict"]["non_cond_frame_outputs"][frame] = {
                "maskmem_features": None,
                "maskmem_pos_enc": None,
                "pred_masks": torch.zeros(n, 1, 288, 288),
                "obj_ptr": torch.zeros(n, 256),
                "object_score_logits": torch.zeros(n, 1),
                "iou_score": torch.zeros(n),
            }
            made.append(state)
        return made

    meta = {"num_obj_per_gpu": [3]}
    with torch.inference_mode(), upstream_on_cpu():
        eager = states(feature_cache(levels, tiny_tracker))
        upstream = SimpleNamespace(tracker=tiny_tracker, rank=0)
        Sam3VideoBase._tracker_update_memories(upstream, eager, frame, meta, masks)
        ours = states(feature_cache(levels))
        with OnnxRuntimeBackend(out) as backend:
            GraphTracker(tiny_tracker, backend).update_memories(ours, frame, meta, masks)
    tol = TRACKING_TOLERANCES["fp32"]["memory_max_abs"]
    for e, o in zip(eager, ours, strict=True):
        mine = o["output_dict"]["non_cond_frame_outputs"][frame]["maskmem_features"]
        theirs = e["output_dict"]["non_cond_frame_outputs"][frame]["maskmem_features"]
        assert mine.dtype == theirs.dtype == torch.bfloat16
        # bf16 storage: one bf16 step of the largest value bounds the difference
        assert float((mine.float() - theirs.float()).abs().max()) <= max(tol, float(theirs.float().abs().max()) / 128)
        for idx in e["output_dict_per_obj"]:
            per_obj = o["output_dict_per_obj"][idx]["non_cond_frame_outputs"][frame]["maskmem_features"]
            assert torch.equal(per_obj, mine[idx : idx + 1])
    # the suppressed object got the no-object memory, so it differs from object 1's
    first = ours[0]["output_dict"]["non_cond_frame_outputs"][frame]["maskmem_features"].float()
    assert not torch.allclose(first[0], first[1])


def test_backends_that_do_not_run_video_graphs_say_so(tmp_path):
    from sam3_trt.runtime.backends.base import Backend
    from sam3_trt.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from sam3_trt.specs import ALL_SPECS

    with pytest.raises(
        Sam3TrtError, match=r"base backend does not run 'tracker_mask_head'.*ONNX Runtime.*TensorRT over engines"
    ):
        Backend().run("tracker_mask_head", {})
    # ONNX Runtime runs the graphs whose files the folder holds (an image export has no video graphs)
    (tmp_path / ALL_SPECS["decoder"].onnx_file).write_bytes(b"")
    backend = OnnxRuntimeBackend(tmp_path)
    assert backend.graphs == ("decoder",)
    with pytest.raises(Sam3TrtError, match=r"onnxruntime backend does not run 'tracker_mask_head' \(it runs decoder\)"):
        backend.run("tracker_mask_head", {})
