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


@pytest.fixture(scope="module")
def clip_folder(frames, tmp_path_factory):
    """The clip as a folder of ``00000.png`` ... frames (lossless), as ``track`` and upstream read folders."""
    folder = tmp_path_factory.mktemp("clip")
    for i, frame in enumerate(frames):
        frame.save(folder / f"{i:05d}.png")
    return folder


#: The drawn square on frame 2 of the clip (normalised x, y, w, h) and a point on the disc on frame 3.
SQUARE_ON_FRAME_2 = [0.1375, 0.15, 0.225, 0.3]
DISC_ON_FRAME_3 = [0.624, 0.55]
#: A negative click beside the disc on frame 3, refining the clicked object.
REFINE_ON_FRAME_3 = [0.7, 0.45]
CLICKED_ID = 7
#: Frames detected, in order: the prompt; forward 2..5; backward 1..0; the click's frame; the refining
#: click's frame; 3..4 again.
DETECTED = [2, 2, 3, 4, 5, 1, 0, 3, 3, 3, 4]


def _session(predictor, frames) -> tuple[dict, int]:
    """Upstream's requests: text and a box on frame 2, tracked both ways through the clip; a new object
    clicked on frame 3 (added mid-clip), then refined with a second click there; the first object removed;
    tracked again over frames 3..4.

    Returns:
        Outputs keyed ``"prompt"``, ``"click"``, ``"refine"`` and ``(pass, n, frame)`` per propagated frame;
        the removed ID.
    """
    session = predictor.handle_request({"type": "start_session", "resource_path": frames})["session_id"]
    out = {}

    def request(key, **kw):
        out[key] = predictor.handle_request({"session_id": session, **kw})["outputs"]

    def propagate(key, direction, start, count=None):
        stream = {"type": "propagate_in_video", "session_id": session, "propagation_direction": direction}
        stream.update(start_frame_index=start, max_frame_num_to_track=count)
        for n, result in enumerate(predictor.handle_stream_request(stream)):
            out[key, n, result["frame_index"]] = result["outputs"]

    box = {"bounding_boxes": [SQUARE_ON_FRAME_2], "bounding_box_labels": [1]}
    request("prompt", type="add_prompt", frame_index=2, text=PROMPT, **box)
    propagate("both", "both", 2)
    request("click", type="add_prompt", frame_index=3, points=[DISC_ON_FRAME_3], point_labels=[1], obj_id=CLICKED_ID)
    # a second click on the object just added: upstream refines it, feeding its mask logits back
    request("refine", type="add_prompt", frame_index=3, points=[REFINE_ON_FRAME_3], point_labels=[0], obj_id=CLICKED_ID)
    removed = int(out["prompt"]["out_obj_ids"][0])
    predictor.handle_request({"type": "remove_object", "session_id": session, "obj_id": removed})
    propagate("again", "forward", 3, 1)
    predictor.handle_request({"type": "close_session", "session_id": session})
    return out, removed


@pytest.fixture(scope="module")
def eager_session(pipeline, tracker_export, clip_folder):
    """:func:`_session` on upstream's eager video model, every detection, tracker step and memory update
    shadowed on the graphs from the same state (upstream's results kept: they are its plain eager outputs)."""
    from sam3_trt.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from sam3_trt.runtime.tokenizer import Tokenizer
    from sam3_trt.video import GraphVideoModel, Sam3VideoPredictor, TeacherForcedVideo

    folder, _ = tracker_export
    with OnnxRuntimeBackend(folder) as backend:
        graphs = GraphVideoModel(pipeline, backend, Tokenizer(folder / "bpe_simple_vocab_16e6.txt.gz", 32))
        with TeacherForcedVideo(pipeline, graphs) as shadow:
            out = _session(Sam3VideoPredictor(pipeline, backend="torch"), str(clip_folder))
        return out, shadow.report()


def test_teacher_forced_detection_and_tracking_match_upstream(eager_session):
    """Text + box, both directions, a click and a removal: every detection (the box included on its frame and,
    as upstream's one-frame-ahead detection has it, the next one each way) and every tracker step, memory
    encoding and memory update computed on the graphs from upstream's state matches upstream's."""
    (out, removed), report = eager_session
    print("teacher-forced worst:", report["worst"], "steps:", report["steps"])
    assert report["passed"], report["failures"]
    detections = report["detections"]
    assert [d["frame"] for d in detections] == DETECTED
    assert all(d["eager_kept"] >= 1 for d in detections), detections  # the test tracks something
    # the kept sets are decisive: every query's probability is far from the threshold (graph error ~1e-7)
    assert min(d["margin"] for d in detections) > 1e-2
    steps = report["steps"]  # the click ran the mask head on its points and encoded that memory
    assert steps["track_step"] >= 8 and steps["encode_memory"] >= 3 and steps["update_memory"] >= 6, steps
    assert steps["refine"] == 1, steps  # the second click fed the object's logits back, on the graphs too
    # upstream outputs an object on every frame; the clicked object joins and the removed one leaves
    assert all(len(v["out_obj_ids"]) for k, v in out.items() if k[0] == "both")
    assert CLICKED_ID in [int(i) for i in out["click"]["out_obj_ids"]]
    assert CLICKED_ID in [int(i) for i in out["refine"]["out_obj_ids"]]
    for key in [k for k in out if k[0] == "again"]:
        ids = [int(i) for i in out[key]["out_obj_ids"]]
        assert CLICKED_ID in ids and removed not in ids, (key, ids)


def _assert_same_outputs(eager: dict, graphs: dict) -> None:
    """Same object IDs on every output; masks, probabilities and boxes finite and within the FP32 tracking bar.

    Differences are reduced with numpy, which carries a NaN through (Python's ``max(0.0, nan)`` is 0.0).
    """
    from sam3_trt.video.teacher_forced import mask_iou

    assert set(graphs) == set(eager)
    ious, probs, boxes = [1.0], [0.0], [0.0]
    for key in eager:
        a, b = eager[key], graphs[key]
        assert list(a["out_obj_ids"]) == list(b["out_obj_ids"]), key
        for name in ("out_probs", "out_boxes_xywh"):
            assert np.isfinite(np.asarray(b[name], np.float64)).all(), (key, name, b[name])
        if len(a["out_obj_ids"]):
            ious.extend(np.asarray(mask_iou(a["out_binary_masks"], b["out_binary_masks"]), np.float64).ravel())
            probs.append(np.abs(np.subtract(a["out_probs"], b["out_probs"], dtype=np.float64)).max())
            boxes.append(np.abs(np.subtract(a["out_boxes_xywh"], b["out_boxes_xywh"], dtype=np.float64)).max())
    worst = {"iou": float(np.min(ious)), "probs": float(np.max(probs)), "boxes": float(np.max(boxes))}
    print("free-running vs eager:", worst)
    tol = TRACKING_TOLERANCES["fp32"]
    assert worst["iou"] >= tol["mask_iou_min"], worst  # NaN fails each of these comparisons
    assert worst["probs"] <= tol["det_score_max_abs"] and worst["boxes"] <= tol["det_box_max_abs"], worst


def test_same_outputs_check_fails_on_nan_and_on_drift():
    """The helper above can fail: a NaN probability, a NaN box and a drifted box are each caught."""
    masks = np.zeros((1, 1, 4, 4), bool)
    masks[..., :2, :2] = True
    good = {"out_obj_ids": np.array([1]), "out_probs": np.array([0.9], np.float32),
            "out_boxes_xywh": np.array([[0.1, 0.1, 0.2, 0.2]], np.float32), "out_binary_masks": masks}  # fmt: skip
    _assert_same_outputs({0: good}, {0: dict(good)})
    for name, value in [("out_probs", np.array([np.nan], np.float32)),
                        ("out_boxes_xywh", np.array([[np.nan, 0.1, 0.2, 0.2]], np.float32)),
                        ("out_boxes_xywh", np.array([[0.2, 0.1, 0.2, 0.2]], np.float32))]:  # fmt: skip
        with pytest.raises(AssertionError):
            _assert_same_outputs({0: good}, {0: dict(good, **{name: value})})


@pytest.fixture(scope="module")
def video_engines(tracker_export, tmp_path_factory):
    """TensorRT for RTX engines (FP32) of the video export, built ahead of time for sm120 (no GPU needed)."""
    from sam3_trt.engines.parse import rtx_available

    if not rtx_available():
        pytest.skip("tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')")
    from conftest import ci_build_options

    from sam3_trt.engines.builder import build_engines
    from sam3_trt.engines.targets import resolve_target

    root = tmp_path_factory.mktemp("video-engines")
    manifest = build_engines(tracker_export[0], root, resolve_target("5090"), ci_build_options())
    return root / "5090", manifest


def test_free_running_on_tensorrt_engines_matches_upstream(
    video_engines, tracker_export, pipeline, clip_folder, eager_session
):
    """The session free-running on TensorRT engines (through the doubles: each engine runs as the graph it was
    built from) gives upstream's outputs: same IDs, masks, probabilities and boxes, every graph an engine."""
    from sam3_trt.specs import VIDEO_SPECS
    from sam3_trt.testing import gpu_doubles
    from sam3_trt.video import Sam3VideoPredictor
    from sam3_trt.video.predictor import VIDEO_PREDICTOR_GRAPHS

    folder, manifest = video_engines
    assert list(manifest["graphs"]) == ["text_encoder", "decoder", *VIDEO_SPECS]  # the export's graphs, built
    assert manifest["video"]["weights"]["variant"] == "tiny"
    with gpu_doubles(folder, tracker_export[0], memory="torch"):
        with Sam3VideoPredictor(pipeline, folder) as predictor:  # "auto" follows the engine folder
            assert predictor.backend.name == "tensorrt"
            out, removed = _session(predictor, clip_folder)
            gpu_ms, calls = predictor.backend.last_gpu_ms, dict(predictor.backend.calls)
    assert set(gpu_ms) == set(VIDEO_PREDICTOR_GRAPHS) and all(ms > 0 for ms in gpu_ms.values())
    # one vision pass and one decoder run per detected frame; the text encoded once (cached, as upstream)
    assert calls["decoder"] == calls["video_vision_encoder"] == len(DETECTED) and calls["text_encoder"] == 1
    (eager, eager_removed), _ = eager_session
    assert removed == eager_removed
    _assert_same_outputs(eager, out)


def test_clicks_on_tensorrt_engines_match_onnx_runtime(video_engines, tracker_export):
    """``Sam3Processor(..., interactive=True).predict_inst`` on the engines of a video export (through the doubles:
    each engine runs as the graph it was built from), with torch and with cuda-python device memory, equals the
    same call on ONNX Runtime (which tests/runtime/test_interactive.py checks against upstream's eager
    ``predict_inst``): one vision pass gives the tracker levels, one click-head run per call."""
    from sam3_trt import Sam3Processor
    from sam3_trt.assets.images import demo_image
    from sam3_trt.compare import check_outputs
    from sam3_trt.testing import gpu_doubles
    from sam3_trt.tolerances import TOLERANCES

    folder, _ = video_engines
    image = demo_image(420, 300)
    prompt = {
        "point_coords": np.array([[150.0, 120.0], [300.0, 200.0]]),
        "point_labels": np.array([1, 0]),
        "box": np.array([60.0, 40.0, 260.0, 230.0]),
        "return_logits": True,
    }
    names = ("masks", "iou_predictions", "low_res_masks")
    with Sam3Processor(tracker_export[0], backend="onnxruntime", interactive=True) as cpu:
        expected = dict(zip(names, cpu.predict_inst(cpu.set_image(image), **prompt), strict=True))
    for memory in ("torch", "cuda-python"):
        with gpu_doubles(folder, tracker_export[0], memory=memory):
            with Sam3Processor(folder, interactive=True) as gpu:
                assert gpu.backend.name == "tensorrt"
                got = dict(zip(names, gpu.predict_inst(gpu.set_image(image), **prompt), strict=True))
                calls = dict(gpu.backend.calls)
        assert (
            calls["video_vision_encoder"] == 1 and calls["interactive_mask_head"] == 1 and calls["vision_encoder"] == 0
        )
        assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in expected.items()}
        checks = check_outputs(expected, got, TOLERANCES["fp32"]["predict_inst"])
        assert all(c.passed for c in checks), (memory, [c for c in checks if not c.passed])


def test_bench_clicks_worker_on_tensorrt_engines(video_engines, tracker_export, tmp_path):
    """``bench --clicks``'s TensorRT worker on the video export's engines (through the doubles, cuda-python
    memory): the video vision graph timed as the vision stage, the click stages measured, the click head's
    CUDA-event time reported with the other engines'."""
    from sam3_trt.assets.images import demo_image
    from sam3_trt.checks.bench import CLICK_STAGES, WorkerConfig, run_worker
    from sam3_trt.testing import gpu_doubles

    folder, _ = video_engines
    image = tmp_path / "bench.png"
    demo_image(420, 300).save(image)
    cfg = WorkerConfig("tensorrt", str(folder), str(image), ["a red square"], repeats=1, warmup=0, threads=2,
                       clicks=True)  # fmt: skip
    with gpu_doubles(folder, tracker_export[0], memory="cuda-python"):
        result = run_worker(cfg)
    stages = result["stages"]
    assert (
        set(CLICK_STAGES) <= set(stages) and stages["vision_encoder"]["median_ms"] <= stages["set_image"]["median_ms"]
    )
    assert 0 < stages["click_head"]["median_ms"] <= stages["click_refine"]["median_ms"]
    assert set(result["device"]["engine_gpu_time"]) == {
        "video_vision_encoder", "text_encoder", "decoder", "interactive_mask_head"
    }  # fmt: skip


def test_fp16_pass_and_engine_build_carry_the_video_graphs(tracker_export, tmp_path):
    """``make engines`` on a --video export: the FP16 pass converts and checks the tracker graphs too (its
    folder verifies: every graph its manifest lists is there), and TensorRT for RTX builds all of them."""
    from sam3_trt.engines.mixed import convert_export
    from sam3_trt.engines.parse import rtx_available
    from sam3_trt.engines.precision import DEFAULT_POLICY
    from sam3_trt.manifest import manifest_graphs, read_manifest, verify_files
    from sam3_trt.specs import VIDEO_SPECS

    src, source = tracker_export
    with pytest.raises(Sam3TrtError, match=r"lacks \['vision_encoder'\]: the FP16 estimate"):
        convert_export(src, tmp_path / "refused", DEFAULT_POLICY)  # the estimate needs the image pipeline
    assert not (tmp_path / "refused").exists()
    fp16 = tmp_path / "fp16"
    manifest = convert_export(src, fp16, DEFAULT_POLICY, run_estimate=False)
    verify_files(fp16, read_manifest(fp16))
    assert list(manifest["video"]["graphs"]) == list(VIDEO_SPECS)
    assert manifest["video"]["weights"] == source["video"]["weights"]
    for graph in manifest_graphs(manifest):
        assert manifest["precision"]["graphs"][graph]["checks"]["ort_outputs_finite"], graph
        assert manifest["precision"]["graphs"][graph]["fp16_nodes"] > 0, graph
    assert manifest["checks"]["video_fp16_estimate"]["status"] == "not measured"
    if not rtx_available():
        pytest.skip("tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')")
    from sam3_trt.engines.builder import build_engines
    from sam3_trt.engines.targets import resolve_target

    engines = build_engines(fp16, tmp_path / "engines", resolve_target("5090"))
    assert list(engines["graphs"]) == ["text_encoder", "decoder", *VIDEO_SPECS]
    assert engines["precision"]["mode"] == "fp16"
    verify_files(tmp_path / "engines" / "5090", engines)


def test_track_cli_writes_overlays_and_tracks_that_decode(tracker_export, eager_session, frames, clip_folder, tmp_path):
    """Text and a box on frame 2 (the box in pixels), tracked forward on ONNX Runtime: frames 2..5 as upstream
    tracked them with the same prompt (free-running, within the FP32 bar); overlays and RLE masks decode."""
    from click.testing import CliRunner

    from sam3_trt.cli import main
    from sam3_trt.rle import rle_to_mask
    from sam3_trt.video.frames import ClipFrames

    clip = clip_folder  # the frames the eager session read
    out, tracks = tmp_path / "overlays.mp4", tmp_path / "tracks.json"
    width, height = frames[0].size
    x, y, w, h = (v * s for v, s in zip(SQUARE_ON_FRAME_2, (width, height, width, height), strict=True))
    args = ["track", str(clip), "--prompt", PROMPT, "--artifacts", str(tracker_export[0]), "--output", str(out)]
    args += ["--box", f"{x:g},{y:g},{x + w:g},{y + h:g}", "--prompt-frame", "2", "--memory-window", "all"]
    result = CliRunner().invoke(main, [*args, "--json", str(tracks), "--max-objects", str(MAX_OBJECTS)])
    assert result.exit_code == 0, result.output
    doc = json.loads(tracks.read_text())
    assert doc["frames_total"] == FRAMES and doc["prompt"] == PROMPT and doc["weights_kind"] == "random"
    assert doc["box_xyxy"] == [44, 36, 116, 108] and doc["prompt_frame"] == 2 and doc["backend"] == "onnxruntime"
    assert doc["memory_window"] is None  # --memory-window all
    assert [f["tracked"] for f in doc["frames"]] == [False, False, True, True, True, True]
    written = ClipFrames(out)  # read back as track reads its input
    video = [written.original(i) for i in range(len(written))]
    assert len(video) == FRAMES and all(v.size == (width, height) for v in video) and written.fps == 30.0
    decoded = {}
    for entry in doc["frames"]:
        masks = [rle_to_mask(o["mask_rle"]) for o in entry["objects"]]
        decoded[entry["frame"]] = {
            "out_obj_ids": [o["id"] for o in entry["objects"]],
            "out_probs": [o["score"] for o in entry["objects"]],
            "out_boxes_xywh": [o["box_xywh"] for o in entry["objects"]],
            "out_binary_masks": np.stack(masks) if masks else np.zeros((0, height, width), bool),
        }
    (session, _), _ = eager_session
    forward = {frame: v for (kind, n, frame), v in ((k, v) for k, v in session.items() if k[0] == "both") if n < 4}
    assert sorted(forward) == [2, 3, 4, 5]
    _assert_same_outputs(forward, {f: decoded[f] for f in forward})
    assert doc["object_ids"] and sorted({o["id"] for f in doc["frames"] for o in f["objects"]}) == doc["object_ids"]
    # one colour per object ID on every frame: the ID's colour appears where its mask outline is drawn
    from sam3_trt.runtime.draw import object_colour

    first = next(f for f in doc["frames"] if f["objects"])
    pixels = np.asarray(video[first["frame"]]).astype(int)  # MPEG-4 is lossy: near the colour, not equal
    assert (np.abs(pixels - np.array(object_colour(first["objects"][0]["id"]))).max(axis=-1) < 40).any()
    assert not list(tmp_path.glob("*.partial*"))


def test_folder_predictor_holds_no_weights(tracker_export):
    """The host model ``track`` and ``bench-video`` build (random weights, never read on the graphs) gives its
    parameters' storage back: one NaN element each, shapes kept. The track CLI test above runs on it and
    matches upstream eager, so no host path reads a weight (a NaN would show)."""
    import torch

    from sam3_trt.video.predictor import folder_predictor

    with folder_predictor(tracker_export[0], "tiny") as predictor:
        params = list(predictor.model.parameters())
        assert len(params) > 100 and all(p.untyped_storage().nbytes() == p.element_size() for p in params)
        assert all(bool(torch.isnan(p).all()) for p in params) and params[0].dim() >= 1
        assert predictor.model.device == torch.device("cpu")  # upstream reads its device off the parameters


def test_track_writer_writes_frames_or_video_and_reads_videos_back(frames, tmp_path):
    """The track writer, without a model: PNG frames or an MP4 (frames in order, each once; the video under a
    temporary name until complete), and ``track``'s reader on that MP4 (frames, size, rate); an unreadable
    video is one line."""
    from PIL import Image

    from sam3_trt.video.frames import ClipFrames
    from sam3_trt.video.track import TrackWriter

    square = np.zeros(frames[0].size[::-1], bool)
    square[36:108, 44:116] = True
    objects = [{"id": 3, "score": 0.9, "box_xywh": [0.1375, 0.15, 0.225, 0.3], "mask": square}]
    for output in (tmp_path / "png", tmp_path / "clip.mp4"):
        tracks = output.with_suffix(".json")
        writer = TrackWriter(output, frames[0].size, FRAMES, tracks, {"weights_kind": "random"}, 5.0)
        for index, frame in enumerate(frames):
            writer.write(index, frame, objects if index else None)
            assert not (output.is_file() or tracks.exists())  # nothing complete-looking yet
        doc = writer.close()
        assert doc["object_ids"] == [3] and [f["tracked"] for f in doc["frames"]] == [False] + [True] * 5
        assert json.loads(tracks.read_text()) == json.loads(json.dumps(doc))
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [f"{i:05d}.png" for i in range(FRAMES)]
    assert Image.open(tmp_path / "png" / "00001.png").size == frames[0].size
    written = ClipFrames(tmp_path / "clip.mp4")
    video = [written.original(i) for i in range(len(written))]
    assert len(video) == FRAMES and video[0].size == frames[0].size and written.fps == 5.0
    # the first frame is untracked: the frame itself, within MPEG-4's loss
    assert np.abs(np.asarray(video[0], int) - np.asarray(frames[0], int)).mean() < 8
    writer = TrackWriter(tmp_path / "cut.mp4", frames[0].size, FRAMES, None, {})
    writer.write(0, frames[0], None)
    with pytest.raises(Sam3TrtError, match="frame 2 came when frame 1 was expected"):
        writer.write(2, frames[2], None)
    with pytest.raises(Sam3TrtError, match="1 of 6 frames written; nothing kept"):
        writer.close()
    assert not list(tmp_path.glob("cut*"))
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(Sam3TrtError, match=r"broken\.mp4': no frame could be decoded"):
        ClipFrames(tmp_path / "broken.mp4")


def test_bench_video_reports_every_stage_per_frame_and_object(tracker_export, tmp_path):
    """``sam3-trt bench-video`` on a 2-frame drawn clip (ONNX Runtime): each frame ran one vision pass and one
    decoder run, the text was encoded at the prompt only (cached), the tracker graphs ran with their objects
    counted; the frame time exceeds the graphs' (the bench's arithmetic on planted times: test_video_bench.py).
    JSON and PNG written; bad options are one line before any work."""
    from click.testing import CliRunner
    from PIL import Image

    from sam3_trt.cli import main
    from sam3_trt.video.bench_video import VIDEO_STAGES

    report, figure = tmp_path / "video.json", tmp_path / "video.png"
    args = ["bench-video", "--artifacts", str(tracker_export[0]), "--frames", "2", "--max-objects", str(MAX_OBJECTS)]
    result = CliRunner().invoke(main, [*args, "--json", str(report), "--figure", str(figure)])
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    stages = doc["stages"]
    assert list(stages) == list(VIDEO_STAGES) and doc["backend"] == "onnxruntime" and doc["frames"] == 2
    assert stages["video_vision_encoder"]["calls"] == stages["decoder"]["calls"] == 2
    assert stages["text_encoder"]["calls"] == 0  # encoded by the prompt, cached for every frame
    assert stages["tracker_mask_head"]["calls"] >= 1 and doc["objects_per_frame"] >= 1
    assert stages["tracker_mask_head"]["ms_per_object"] > 0 and stages["decoder"]["ms_per_object"] is None
    graphs = sum(s["ms_per_frame"] for s in stages.values())
    assert doc["frame_ms"] > graphs > 0 and doc["host_ms_per_frame"] > 0  # measured; the arithmetic: test_video_bench
    png = Image.open(figure)
    assert png.format == "PNG"
    from sam3_trt.checks.figures import SERIES_COLOURS

    # bars of both series above the legend (bar_chart: rows of 34 px from y = 56, 2 + 6 groups; the legend,
    # which shows both colours whatever was measured, starts below them)
    pixels = np.asarray(png.convert("RGB")).astype(int)[: 56 + 34 * (2 + len(VIDEO_STAGES))]
    for colour in SERIES_COLOURS[:2]:  # per-frame and per-object bars
        assert (np.abs(pixels - colour).sum(axis=-1) == 0).any(), colour
    assert "tracker_mask_head" in result.output
    for bad, message in [(["--frames", "1"], "--frames 1: give 2 or more"), (["--prompt", " "], "--prompt is empty")]:
        result = CliRunner().invoke(main, ["bench-video", "--artifacts", str(tracker_export[0]), *bad])
        assert result.exit_code == 2 and message in result.output, result.output


def test_track_cli_refuses_bad_input_before_any_work(tracker_export, tmp_path):
    from click.testing import CliRunner

    from sam3_trt.cli import main

    clip = tmp_path / "clip"
    clip.mkdir()
    from sam3_trt.assets.images import demo_clip

    for i, frame in enumerate(demo_clip(2)):
        frame.save(clip / f"{i}.png")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
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
        ([str(clip), "--artifacts", art, "--box", "1,2,3"], r"--box '1,2,3': expected x0,y0,x1,y1"),
        ([str(clip), "--artifacts", art, "--box", "10,10,400,50"], r"--box '10,10,400,50' lies outside the 320x240"),
        ([str(clip), "--artifacts", art, "--backend", "tensorrt"], "is an ONNX export; build engines first"),
        ([str(clip), "--artifacts", art, "--memory-window", "0"], r"--memory-window=0: .*1 or more.*or all"),
        ([str(clip), "--artifacts", art, "--memory-window", "soon"], r"--memory-window='soon'"),
        ([str(clip), "--artifacts", art, "--fps", "0"], r"--fps 0\.0: give frames per second > 0"),
        (
            [str(clip), "--artifacts", art, "--output", str(tmp_path / "out.avi")],
            r"out\.avi: give a video file \(\.mp4\)",
        ),
        ([str(broken), "--artifacts", art], "no frame could be decoded"),
    ]
    cases = [([*args, "--prompt", PROMPT], message) for args, message in cases]
    cases.append(([str(clip), "--artifacts", art], "give --prompt"))
    for args, message in cases:
        out = tmp_path / "out"
        result = CliRunner().invoke(main, ["track", "--output", str(out), *args])  # a later --output wins
        assert result.exit_code == 2, (args, result.output)
        assert re.search(message, result.output), result.output
        assert not out.exists() and not (tmp_path / "out.avi").exists()  # nothing written before the check


def test_detection_prompts_follow_upstreams_one_frame_ahead_buffer():
    """Upstream's detector, run with a recording stand-in for its detection, applies each call's prompt to the
    frame one ahead; :func:`detection_prompt` must name the same prompt for every frame, both directions."""
    import types

    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU

    from sam3_trt.video.predictor import detection_prompt

    buffer: dict = {}

    def build(**kw):
        for f in range(kw["frame_idx_begin"], kw["frame_idx_end"]):
            kw["multigpu_buffer"][f] = {"prompt": (kw["geometric_prompt"], None)}

    detector = types.SimpleNamespace(world_size=1, rank=0, _build_multigpu_buffer_next_chunk=build)
    ours: dict = {}
    frames = 6
    # the prompt upstream passes per call: a box on frame 2 ("box"), none elsewhere ("-")
    calls = [(2, False), *[(f, False) for f in range(2, 6)], *[(f, True) for f in (2, 1, 0)], (3, False), (4, False)]
    boxed = []
    for frame, reverse in calls:
        prompt = "box" if frame == 2 else "-"
        out, _ = Sam3ImageOnVideoMultiGPU.forward_video_grounding_multigpu(
            detector, None, None, prompt, frame, frames, buffer, track_in_reverse=reverse
        )
        assert detection_prompt(ours, frame, frames, reverse, prompt) == out["prompt"], (frame, reverse)
        if out["prompt"] == "box":
            boxed.append((frame, reverse))
    # the box reached the frame after its own, forwards (3) and backwards (1); a later pass over 3 had not it
    assert boxed == [(2, False), (2, False), (3, False), (2, True), (1, True)]


#: Graphs whose runs do not depend on the tracker's state (the memory window cannot change them).
DETECTION_GRAPHS = ("video_vision_encoder", "decoder")


def _windowed_run(pipeline, folder, frames, window, detections):
    """Text on frame 0 tracked forward with ``memory_window=window``: outputs, memory stats after each frame,
    the memory frames and pointers each memory-attention run attended to, and the still-open predictor.

    ``detections`` (a list) records the detection graphs' runs, with a checksum of their inputs; a second
    run replays them in the same order when the checksums match (they run again otherwise), which halves
    this test's time without touching what the window changes."""
    from sam3_trt.video import Sam3VideoPredictor

    predictor = Sam3VideoPredictor(pipeline, folder, memory_window=window)
    attended, run, calls = [], predictor.backend.run, iter(list(detections))

    def checksum(feeds):
        return [(k, np.shape(v), float(np.asarray(v, np.float64).sum())) for k, v in sorted(feeds.items())]

    def recording_run(graph, feeds):
        if graph == "tracker_memory_attention":
            attended.append((feeds["memory"].shape[1], feeds["obj_ptrs"].shape[1]))
        if graph not in DETECTION_GRAPHS:
            return run(graph, feeds)
        recorded = next(calls, None)
        if recorded is not None and recorded[:2] == (graph, checksum(feeds)):
            return recorded[2]
        out = run(graph, feeds)
        detections.append((graph, checksum(feeds), out))
        return out

    predictor.backend.run = recording_run
    session = predictor.start_session(frames, session_id="w")["session_id"]
    predictor.add_prompt(session, 0, text=PROMPT)
    out, stats = {}, {}
    for result in predictor.propagate_in_video(session, "forward", 0, None):
        out[result["frame_index"]] = result["outputs"]
        stats[result["frame_index"]] = predictor.memory_stats(session)
    return out, stats, attended, predictor


def test_memory_window_bounds_the_session_and_refuses_reads_of_dropped_frames(pipeline, tracker_export, frames):
    """``memory_window=1``, text on frame 0, tracked forward: each frame's state is dropped once it lies more
    than one frame behind the frame tracked (frames 0..1, the start's neighbourhood, stay), so frames 2..3 go
    while tracking (upstream yields 15 frames late: the window follows the tracking). Frames 0..4 are the
    unwindowed run's bit for bit and attended to the same memories; frame 5 attended to one memory and one
    pointer fewer (frame 2's) and stays within the FP32 bar here (random weights: no claim on real-weight
    tracks). Fetching the dropped frames again, or clicking on one, is refused in one line, session unchanged."""
    from sam3_trt.video.window import DEFAULT_MEMORY_WINDOW, MemoryWindow

    folder, _ = tracker_export
    detections = []
    full, full_stats, full_attended, predictor = _windowed_run(pipeline, folder, frames, None, detections)
    predictor.close()
    recorded = len(detections)
    windowed, stats, attended, predictor = _windowed_run(pipeline, folder, frames, 1, detections)
    assert recorded == 2 * (FRAMES + 1) and len(detections) == recorded  # every detection replayed
    with predictor:
        assert all(s["frames_held"] == list(range(FRAMES)) for s in full_stats.values())
        # upstream yields 15 frames after tracking (hot-start delay): the window followed the tracking
        assert all(s["frames_held"] == [0, 1, 4, 5] and s["frames_dropped"] == [2, 3] for s in stats.values())
        assert stats[5]["bytes_held"] < full_stats[5]["bytes_held"]
        print("held bytes, window 1 vs none:", stats[5]["bytes_held"], full_stats[5]["bytes_held"])
        # frames 1..4 attended to what the unwindowed run did; frame 5 lacks frame 2 (one memory, one pointer)
        print("memories and pointers attended per step:", attended, "unwindowed:", full_attended)
        assert len(attended) == len(full_attended) == FRAMES - 1 and attended[:-1] == full_attended[:-1]
        assert attended[-1] == (full_attended[-1][0] - 1, full_attended[-1][1] - 1)
        for f in range(FRAMES - 1):  # the same computation: the same bits
            for key in ("out_obj_ids", "out_probs", "out_boxes_xywh", "out_binary_masks"):
                assert np.array_equal(full[f][key], windowed[f][key]), (f, key)
        _assert_same_outputs(full, windowed)  # frame 5 too, within the FP32 tracking bar (random weights)
        state = predictor._ALL_INFERENCE_STATES["w"]["state"]
        before = (predictor.memory_stats("w"), list(state["action_history"]))
        stream = {"type": "propagate_in_video", "session_id": "w", "propagation_direction": "both"}
        with pytest.raises(Sam3TrtError, match=r"reads frames 2\.\.3, whose outputs left the memory window"):
            predictor.handle_stream_request(stream)
        click = {"type": "add_prompt", "session_id": "w", "frame_index": 3, "points": [[0.5, 0.5]]}
        with pytest.raises(Sam3TrtError, match=r"frame_index=3 reads frames 3,.*memory_window=None"):
            predictor.handle_request({**click, "point_labels": [1], "obj_id": 9})
        assert (predictor.memory_stats("w"), list(state["action_history"])) == before
        predictor.reset_session("w")  # prompts start over: nothing is dropped any more
        assert predictor.memory_stats("w")["frames_dropped"] == []
    for bad in (0, -3, 1.5, True, "64"):
        with pytest.raises(Sam3TrtError, match=r"memory_window=.*1 or more"):
            MemoryWindow(bad)
    assert DEFAULT_MEMORY_WINDOW >= pipeline.tracker.max_obj_ptrs_in_encoder  # the tracker's reach fits


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
        from sam3_trt.video.track import TrackWriter

        writer = TrackWriter(tmp_path / "clip.mp4", frames[0].size, FRAMES, None, {})
        for index, frame in enumerate(frames):
            writer.write(index, frame, None)
        writer.close()
        mp4 = predictor.start_session(tmp_path / "clip.mp4")["session_id"]  # decoded frame by frame
        streamed = predictor.session_frames(mp4)
        assert predictor._ALL_INFERENCE_STATES[mp4]["state"]["num_frames"] == len(streamed) == FRAMES
        assert streamed.kind == "video" and streamed.decoded == 0  # nothing decoded before the model asks
        assert predictor._ALL_INFERENCE_STATES[mp4]["state"]["input_batch"].img_batch is streamed
        predictor.close_session(mp4)
        with pytest.raises(Sam3TrtError, match="not open"):
            predictor.session_frames(mp4)
    with Sam3VideoPredictor(pipeline, folder, frame_cache=None) as predictor:  # upstream's loaders, whole clip
        mp4 = predictor.start_session(str(tmp_path / "clip.mp4"))["session_id"]
        assert predictor.session_frames(mp4) is None
        images = predictor._ALL_INFERENCE_STATES[mp4]["state"]["input_batch"].img_batch
        assert tuple(images.shape) == (FRAMES, 3, 1008, 1008) and float(images.max()) > 100  # upstream's scale
    for bad in (0, 2.5, True):
        with pytest.raises(Sam3TrtError, match=r"frame_cache=.*frame count >= 1, or None"):
            Sam3VideoPredictor(pipeline, folder, frame_cache=bad)
    with Sam3VideoPredictor(pipeline, folder) as predictor:
        session = predictor.start_session(frames, session_id="s")["session_id"]
        with pytest.raises(Sam3TrtError, match="already open"):
            predictor.start_session(frames, session_id="s")
        state = predictor._ALL_INFERENCE_STATES["s"]["state"]
        before = (list(state["previous_stages_out"]), state["input_batch"].find_text_batch[0])
        box = {"type": "add_prompt", "session_id": session, "frame_index": 0}
        box.update(bounding_boxes=[[0, 0, 0.5, 0.5]], bounding_box_labels=[1])
        requests = [
            ({"type": "add_prompt", "session_id": "nope", "frame_index": 0, "text": PROMPT}, "not open"),
            ({"type": "add_prompt", "session_id": session, "frame_index": FRAMES, "text": PROMPT}, r"outside.*0\.\.5"),
            ({"type": "add_prompt", "session_id": session, "frame_index": -1, "text": PROMPT}, "outside the clip"),
            ({"type": "add_prompt", "session_id": session, "frame_index": 0, "text": " "}, "non-empty"),
            ({"type": "add_prompt", "session_id": session, "frame_index": 0, "points": [[0.5, 0.5]]}, "need obj_id"),
            (
                {"type": "add_prompt", "session_id": session, "frame_index": 0, "bounding_boxes": [[0, 0, 0.5, 0.5]]},
                "bounding_box_labels go together",
            ),
            (
                {**box, "bounding_boxes": [[0, 0, 0.5, 0.5]] * 2, "bounding_box_labels": [1, 1]},
                r"one box \[\[x, y, w, h\]\].*got 2",
            ),
            ({**box, "bounding_boxes": [[0.8, 0, 0.5, 0.5]]}, r"bounding_boxes\[0\]=\[0.8, 0, 0.5, 0.5\].*centre"),
            ({**box, "bounding_box_labels": [2]}, r"bounding_box_labels=\[2\]"),
            ({**box, "points": [[0.5, 0.5]], "obj_id": 1}, "own add_prompt"),
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
