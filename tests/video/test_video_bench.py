"""``bench-video``'s arithmetic on planted times: a stub predictor whose graphs and clock report what the test
planted, so every figure in the report (and every bar in the PNG) is checked against a value the bench did not
compute itself. The bench on real graphs is exercised in test_video_predictor.py."""

from __future__ import annotations

import types

import numpy as np
import pytest

FRAMES = 4
OBJECTS = 2
#: Planted milliseconds per frame of each graph (mask head: per object), and of the whole frame.
PLANTED = {
    "video_vision_encoder": 30.0,
    "decoder": 20.0,
    "tracker_memory_attention": 12.0,
    "tracker_mask_head": 9.0 * OBJECTS,
    "tracker_memory_encoder": 5.0,
}
FRAME_MS = 100.0
HOST_MS = FRAME_MS - sum(PLANTED.values())  # 15 ms: what the planted graphs leave of each frame
PROMPT_MS = 40.0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _StubPredictor:
    """Upstream's request API as the bench calls it; each frame advances the clock and the graph counters."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.stats = {"text_encoder": {"calls": 1, "seconds": 0.003, "objects": 0}}
        self.graph_model = types.SimpleNamespace(backend=self)
        self.backend = types.SimpleNamespace(name="stub")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start_session(self, clip):
        assert len(clip) == FRAMES
        return {"session_id": "s"}

    def add_prompt(self, session, frame, text):
        self.clock.now += PROMPT_MS / 1e3

    def propagate_in_video(self, session, direction, start, count):
        for index in range(FRAMES):
            for graph, ms in PLANTED.items():
                stat = self.stats.setdefault(graph, {"calls": 0, "seconds": 0.0, "objects": 0})
                stat["calls"] += 1
                stat["seconds"] += ms / 1e3
                stat["objects"] += OBJECTS if graph.startswith("tracker_") else 0
            self.clock.now += FRAME_MS / 1e3
            yield {"frame_index": index, "outputs": {"out_obj_ids": np.arange(OBJECTS)}}


@pytest.fixture
def planted_report(tmp_path, monkeypatch):
    from sam3_trt.video import bench_video, predictor

    clock = _Clock()
    found = types.SimpleNamespace(kind="onnx-export", folder=tmp_path, manifest={"weights": {"variant": "tiny"}})
    monkeypatch.setattr(predictor, "video_folder", lambda artifacts: found)
    monkeypatch.setattr(predictor, "folder_predictor", lambda *args, **kw: _StubPredictor(clock))
    monkeypatch.setattr(bench_video, "clock", clock)
    return bench_video.run_video_bench(tmp_path, "onnxruntime", FRAMES, "square", None)


def test_bench_video_reports_the_planted_times(planted_report):
    report = planted_report
    assert report["frame_ms"] == pytest.approx(FRAME_MS)
    assert report["host_ms_per_frame"] == pytest.approx(HOST_MS)
    assert report["prompt_ms"] == pytest.approx(PROMPT_MS)
    assert report["objects_per_frame"] == OBJECTS
    stages = report["stages"]
    assert stages["text_encoder"] == {"calls": 0, "ms_per_call": None, "ms_per_frame": 0.0, "ms_per_object": None}
    for graph, ms in PLANTED.items():
        assert stages[graph]["calls"] == FRAMES
        assert stages[graph]["ms_per_frame"] == pytest.approx(ms) == stages[graph]["ms_per_call"]
    assert stages["tracker_mask_head"]["ms_per_object"] == pytest.approx(PLANTED["tracker_mask_head"] / OBJECTS)
    assert stages["decoder"]["ms_per_object"] is None  # detection graphs run once per frame, not per object


def test_bench_video_figure_draws_the_planted_times(planted_report, tmp_path):
    """Bars decoded from the PNG: one per stage with a time, none for the cached text encoder, lengths in the
    order of the planted values (log scale)."""
    from PIL import Image

    from sam3_trt.checks.figures import SERIES_COLOURS
    from sam3_trt.video.bench_video import video_bench_figure

    path = tmp_path / "bench.png"
    video_bench_figure(planted_report, path)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    # bar_chart's layout: two series (per frame, per object), rows of 12 * 2 + 10 px from y = 56, bars from x = 130
    row_h, top, left = 34, 56, 130
    groups = ["frame", "host", *planted_report["stages"]]
    planted = [FRAME_MS, HOST_MS, *(s["ms_per_frame"] for s in planted_report["stages"].values())]
    lengths = []
    for g in range(len(groups)):
        row = pixels[top + g * row_h + 4 + 5, left:]
        lengths.append(int((np.abs(row.astype(int) - SERIES_COLOURS[0]).sum(axis=1) == 0).sum()))
    assert lengths[groups.index("text_encoder")] == 0  # cached: no bar
    drawn = [(v, n) for v, n in zip(planted, lengths, strict=True) if v > 0]
    assert all(n > 0 for _, n in drawn)
    assert [n for _, n in sorted(drawn)] == sorted(n for _, n in drawn)  # longer bar for every larger time
    assert len({n for _, n in drawn}) == len(drawn)  # planted values are distinct, so are their bars
