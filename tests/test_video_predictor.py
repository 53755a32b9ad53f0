"""``Sam3VideoPredictor``: upstream's video request API with detection and tracking on the graphs.

Upstream's video model (its builder's settings, ``max_num_objects`` lowered for the CPU) runs on the drawn
clip with a text prompt: detection on every frame (video vision graph + text encoder + decoder), new
objects from detections, tracking, association and hot-start heuristics (upstream's host code). Weights are
random, with decisive detection scores (``detecting_video_model``): the checks prove the graph path
computes what upstream computes from the same state, not that real-weight tracks are good.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from sam3_trt.errors import Sam3TrtError
from sam3_trt.tolerances import TRACKING_TOLERANCES

FRAMES = 6
#: Tracked objects at most (upstream setting; fewer keeps the eager CPU reference within minutes).
MAX_OBJECTS = 4
PROMPT = "square"


@pytest.fixture(scope="module")
def pipeline(detecting_video_model, tiny_tracker):
    """Upstream's video model over the tiny detector and tracker."""
    from sam3_trt.video.model import build_video_model

    return build_video_model(detecting_video_model[0], tiny_tracker, max_num_objects=MAX_OBJECTS)


@pytest.fixture(scope="module")
def frames():
    from sam3_trt.assets.images import demo_clip

    return demo_clip(FRAMES)


def _run(predictor, frames, prompt_frame: int = 0) -> dict[int, dict]:
    """Upstream's request sequence: start, text prompt, propagate forward. Returns outputs per frame."""
    session = predictor.handle_request({"type": "start_session", "resource_path": frames})["session_id"]
    first = predictor.handle_request(
        {"type": "add_prompt", "session_id": session, "frame_index": prompt_frame, "text": PROMPT}
    )
    out = {"prompt": first["outputs"]}
    request = {"type": "propagate_in_video", "session_id": session, "propagation_direction": "forward"}
    for result in predictor.handle_stream_request(request):
        out[result["frame_index"]] = result["outputs"]
    predictor.handle_request({"type": "close_session", "session_id": session})
    return out


@pytest.fixture(scope="module")
def eager_tracks(pipeline, tracker_export, frames):
    """Upstream's eager video model on the clip, every detection, tracker step and memory update shadowed on
    the graphs from the same state (upstream's results kept: they are its plain eager outputs)."""
    from sam3_trt.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from sam3_trt.runtime.tokenizer import Tokenizer
    from sam3_trt.video import GraphVideoModel, Sam3VideoPredictor, TeacherForcedVideo

    folder, _ = tracker_export
    with OnnxRuntimeBackend(folder) as backend:
        graphs = GraphVideoModel(pipeline, backend, Tokenizer(folder / "bpe_simple_vocab_16e6.txt.gz", 32))
        with TeacherForcedVideo(pipeline, graphs) as shadow:
            out = _run(Sam3VideoPredictor(pipeline, backend="torch"), frames)
        return out, shadow.report(), dict(backend.calls)


def test_teacher_forced_detection_and_tracking_match_upstream(eager_tracks):
    out, report, calls = eager_tracks
    assert report["passed"], report["failures"]
    detections = report["detections"]
    # the prompt frame, then every frame of the propagation
    assert [d["frame"] for d in detections] == [0, *range(FRAMES)]
    assert all(d["eager_kept"] >= 1 for d in detections), detections  # the test tracks something
    # the kept sets are decisive: every query's probability is far from the threshold (graph error ~1e-7)
    assert min(d["margin"] for d in detections) > 1e-2
    steps = report["steps"]
    assert steps["track_step"] >= FRAMES and steps["update_memory"] >= FRAMES - 1, steps
    assert calls["video_vision_encoder"] == calls["decoder"] == len(detections)
    assert calls["tracker_mask_head"] == steps["track_step"]
    assert all(len(out[f]["out_obj_ids"]) for f in range(FRAMES))  # upstream outputs the object on every frame


@pytest.fixture(scope="module")
def graph_tracks(pipeline, tracker_export, frames):
    """The clip tracked on the graphs (free-running), with the graph runs counted."""
    from sam3_trt.video import Sam3VideoPredictor

    with Sam3VideoPredictor(pipeline, tracker_export[0], backend="onnxruntime") as predictor:
        out = _run(predictor, frames)
        return out, dict(predictor.backend.calls)


def test_free_running_tracks_match_upstream(eager_tracks, graph_tracks):
    from sam3_trt.video.parity import mask_iou

    eager, _, _ = eager_tracks
    graphs, calls = graph_tracks
    assert calls["decoder"] == calls["video_vision_encoder"] == FRAMES + 1  # the prompt frame, then each frame
    assert calls["text_encoder"] == 1  # cached across frames, as upstream caches it
    assert set(graphs) == set(eager)
    worst = {"iou": 1.0, "probs": 0.0, "boxes": 0.0}
    for frame in eager:
        a, b = eager[frame], graphs[frame]
        assert list(a["out_obj_ids"]) == list(b["out_obj_ids"]), frame
        if len(a["out_obj_ids"]):
            worst["iou"] = min(worst["iou"], float(mask_iou(a["out_binary_masks"], b["out_binary_masks"]).min()))
            worst["probs"] = max(worst["probs"], float(np.abs(np.subtract(a["out_probs"], b["out_probs"])).max()))
            boxes = np.abs(np.subtract(a["out_boxes_xywh"], b["out_boxes_xywh"])).max()
            worst["boxes"] = max(worst["boxes"], float(boxes))
    print("free-running vs eager:", worst)
    tol = TRACKING_TOLERANCES["fp32"]
    assert worst["iou"] >= tol["mask_iou_min"], worst
    assert worst["probs"] <= tol["det_score_max_abs"] and worst["boxes"] <= tol["det_box_max_abs"], worst
    assert all(len(eager[f]["out_obj_ids"]) for f in range(FRAMES))


def test_track_cli_writes_overlays_and_tracks_that_decode(tracker_export, graph_tracks, frames, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from sam3_trt.cli import main
    from sam3_trt.rle import rle_to_mask

    clip = tmp_path / "clip"
    clip.mkdir()
    for i, frame in enumerate(frames):
        frame.save(clip / f"{i:05d}.png")  # lossless: the same pixels as the predictor's frames
    out, tracks = tmp_path / "overlays", tmp_path / "tracks.json"
    args = ["track", str(clip), "--prompt", PROMPT, "--artifacts", str(tracker_export[0]), "--output", str(out)]
    result = CliRunner().invoke(main, [*args, "--json", str(tracks), "--max-objects", str(MAX_OBJECTS)])
    assert result.exit_code == 0, result.output
    doc = json.loads(tracks.read_text())
    assert doc["frames_total"] == FRAMES and doc["prompt"] == PROMPT and doc["weights_kind"] == "random"
    graphs, _ = graph_tracks
    width, height = frames[0].size
    for entry in doc["frames"]:
        expected = graphs[entry["frame"]]
        assert [o["id"] for o in entry["objects"]] == [int(i) for i in expected["out_obj_ids"]]
        for obj, mask in zip(entry["objects"], expected["out_binary_masks"], strict=True):
            assert np.array_equal(rle_to_mask(obj["mask_rle"]), np.asarray(mask, bool))
        overlay = Image.open(out / f"{entry['frame']:05d}.png")
        assert overlay.size == (width, height)
    assert doc["object_ids"] and sorted({o["id"] for f in doc["frames"] for o in f["objects"]}) == doc["object_ids"]
    # one colour per object ID on every frame: the ID's colour appears where its mask outline is drawn
    from sam3_trt.segment import _colour

    first = next(f for f in doc["frames"] if f["objects"])
    pixels = np.asarray(Image.open(out / f"{first['frame']:05d}.png"))
    assert (pixels == np.array(_colour(first["objects"][0]["id"]), np.uint8)).all(axis=-1).any()


def test_track_cli_refuses_bad_input_before_any_work(tracker_export, tmp_path):
    from click.testing import CliRunner

    from sam3_trt.cli import main

    clip = tmp_path / "clip"
    clip.mkdir()
    from sam3_trt.assets.images import demo_clip

    for i, frame in enumerate(demo_clip(2)):
        frame.save(clip / f"{i}.png")
    image_only = tmp_path / "image_export"
    image_only.mkdir()
    (image_only / "manifest.json").write_text('{"format": 1, "kind": "onnx-export", "graphs": {"vision_encoder": {}}}')
    art = str(tracker_export[0])
    cases = [
        ([str(tmp_path / "nope"), "--artifacts", art], "does not exist"),
        ([str(clip), "--artifacts", art, "--prompt-frame", "2"], r"--prompt-frame 2 is outside the clip: use 0\.\.1"),
        ([str(clip), "--artifacts", str(image_only)], "export made with --video"),
        ([str(clip), "--artifacts", art, "--max-objects", "0"], "--max-objects 0"),
        ([str(tmp_path / "clip.mp4"), "--artifacts", art], "does not exist"),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        result = CliRunner().invoke(main, ["track", *args, "--prompt", PROMPT, "--output", str(out)])
        assert result.exit_code == 2, (args, result.output)
        assert re.search(message, result.output), result.output
        assert not out.exists()  # nothing written before the input was checked


def test_bad_requests_say_what_is_wrong_and_leave_the_session_as_it_was(pipeline, tracker_export, frames, tmp_path):
    from sam3_trt.video import Sam3VideoPredictor

    folder, _ = tracker_export
    with Sam3VideoPredictor(pipeline, folder) as predictor:
        for bad, match in [
            (str(tmp_path / "missing.mp4"), "does not exist"),
            (str(tmp_path), "no frames"),
            ([], "non-empty list of PIL images"),
            (42, "MP4 file, a folder"),
        ]:
            with pytest.raises(Sam3TrtError, match=match):
                predictor.start_session(bad)
        assert predictor._ALL_INFERENCE_STATES == {}
        session = predictor.start_session(frames, session_id="s")["session_id"]
        with pytest.raises(Sam3TrtError, match="already open"):
            predictor.start_session(frames, session_id="s")
        state = predictor._ALL_INFERENCE_STATES["s"]["state"]
        before = (list(state["previous_stages_out"]), state["input_batch"].find_text_batch[0])
        requests = [
            ({"type": "add_prompt", "session_id": "nope", "frame_index": 0, "text": PROMPT}, "not open"),
            ({"type": "add_prompt", "session_id": session, "frame_index": FRAMES, "text": PROMPT}, r"outside.*0\.\.5"),
            ({"type": "add_prompt", "session_id": session, "frame_index": -1, "text": PROMPT}, "outside the clip"),
            ({"type": "add_prompt", "session_id": session, "frame_index": 0, "text": " "}, "non-empty"),
            ({"type": "add_prompt", "session_id": session, "frame_index": 0, "points": [[0.5, 0.5]]}, "need obj_id"),
            (
                {"type": "add_prompt", "session_id": session, "frame_index": 0, "bounding_boxes": [[0, 0, 0.5, 0.5]]},
                "box prompts in video",
            ),
            ({"type": "remove_object", "session_id": session, "obj_id": 7}, "obj_id=7 is not tracked"),
            ({"type": "reset_session", "session_id": "nope"}, "not open"),
        ]
        for request, match in requests:
            with pytest.raises(Sam3TrtError, match=match):
                predictor.handle_request(request)
        for stream, match in [
            ({"session_id": session, "propagation_direction": "sideways"}, "sideways"),
            ({"session_id": session, "start_frame_index": 9}, "start_frame_index=9"),
            ({"session_id": session}, "no prompt yet"),
        ]:
            with pytest.raises(Sam3TrtError, match=match):
                predictor.handle_stream_request({"type": "propagate_in_video", **stream})
        assert (list(state["previous_stages_out"]), state["input_batch"].find_text_batch[0]) == before
        assert predictor.backend.calls["decoder"] == 0  # nothing ran
        assert predictor.handle_request({"type": "close_session", "session_id": session}) == {"is_success": True}
        with pytest.raises(Sam3TrtError, match="not open"):
            predictor.handle_request({"type": "add_prompt", "session_id": session, "frame_index": 0, "text": PROMPT})
    with pytest.raises(Sam3TrtError, match="does not run"):
        from sam3_trt.runtime.backends.base import Backend

        Sam3VideoPredictor(pipeline, backend=Backend())
