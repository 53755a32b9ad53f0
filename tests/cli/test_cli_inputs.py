"""What a new user meets: bad inputs and outputs through the CLI, each one line, exit 2, nothing partial."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

UNWRITABLE = Path("/sys")  # exists, is a folder, refuses new files even to root


def _cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "sam3_trt.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def _one_error(proc, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from sam3_trt.assets.images import demo_image

    path = tmp_path_factory.mktemp("scene") / "scene.png"
    demo_image(320, 240).save(path)
    return path


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--threshold", "2"], ["--threshold 2.0", "[0, 1]"]),
        (["--threshold", "-1"], ["--threshold -1.0", "[0, 1]"]),
        (["--box", "nan,10,100,100"], ["nan,10,100,100", "x0 is not a finite number"]),
        (["--output", "{tmp}/o.bmp"], ["--output", "o.bmp", ".png, .jpg, .jpeg, .webp"]),
        (["--output", "{tmp}"], ["--output", "is a folder"]),
        (["--output", f"{UNWRITABLE}/o.png"], ["--output", "cannot write in /sys", "writable folder"]),
        (["--json", "{tmp}/missing/d.json"], ["--json", "missing does not exist"]),
    ],
)
def test_segment_bad_inputs_and_outputs(tiny_export, scene, tmp_path, args, words):
    export, _ = tiny_export
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    base = {"--output": str(tmp_path / "overlay.png"), "--threshold": "0.5"}
    for key in ("--output", "--threshold"):
        if key not in args:
            args += [key, base[key]]
    proc = _cli("segment", scene, "--prompt", "red square", "--artifacts", export, *args)
    line = _one_error(proc)
    for word in words:
        assert word in line, (word, line)
    assert proc.stdout == ""  # no result line, and nothing written
    assert not (tmp_path / "overlay.png").exists()


def test_segment_writes_what_the_suffix_names_and_records_how(tiny_export, scene, tmp_path):
    from PIL import Image

    export, _ = tiny_export
    jpg, js = tmp_path / "o.jpg", tmp_path / "d.json"
    proc = _cli(
        "segment", scene, "--prompt", "red square", "--box", "10,10,200,150,neg", "--artifacts", export,
        "--threshold", "0.99", "--output", jpg, "--json", js,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # stdout is exactly one JSON document
    assert summary["detections"] == 0 and 0 < summary["best_score"] < 0.99
    assert "no detection scored above --threshold 0.99; the best score was" in proc.stderr
    assert Image.open(jpg).format == "JPEG"
    data = json.loads(js.read_text())
    assert data["prompts"] == ["red square"] and data["boxes"] == ["10,10,200,150,neg"]
    assert (data["threshold"], data["backend"], data["precision"], data["weights_kind"]) == (
        0.99,
        "onnxruntime",
        "fp32",
        "random",
    )
    assert "RANDOM" in data["weights"] and data["detections"] == []


def test_overlay_shows_the_image_caps_detections_and_stamps_random_weights(tiny_export, scene, tmp_path):
    from PIL import Image

    from sam3_trt.runtime.draw import STAMP_COLOUR
    from sam3_trt.runtime.segment import render_overlay

    export, _ = tiny_export
    png, js = tmp_path / "o.png", tmp_path / "d.json"
    proc = _cli(
        "segment", scene, "--prompt", "red square", "--prompt", "blue disc", "--box", "200,80,300,200",
        "--artifacts", export, "--threshold", "0", "--max-detections", "4", "--output", png, "--json", js,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(js.read_text())
    assert data["detections_total"] == 400 and data["detections_shown"] == 4 and len(data["detections"]) == 4
    scores = [d["score"] for d in data["detections"]]
    assert scores == sorted(scores, reverse=True)  # the best four
    overlay = np.asarray(Image.open(png).convert("RGB")).astype(int)
    original = np.asarray(Image.open(scene).convert("RGB")).astype(int)
    # random weights: masks cover the image, yet the image stays visible (a light tint, not paint)
    body = (slice(40, 200), slice(40, 280))
    visible = [np.corrcoef(overlay[body][..., c].ravel(), original[body][..., c].ravel())[0, 1] for c in range(3)]
    assert np.mean(visible) > 0.6, visible  # a flat paint over the whole image (the old overlay) gives ~0
    assert (np.abs(overlay - np.array(STAMP_COLOUR)).sum(-1) == 0).sum() > 500  # the random-weights stamp
    # boxes outside the image are clipped, labels stay inside; the prompt box is drawn dashed
    img = np.zeros((60, 80, 3), np.uint8)
    det = {"prompt": "x", "score": 0.5, "box": [-30.0, -40.0, 200.0, 30.0], "mask": np.zeros((60, 80), bool)}
    drawn = np.asarray(render_overlay(img, [det], [([10, 35, 70, 55], True)]))
    assert drawn[0, :, :].any() and drawn[:, 0, :].any()  # the clipped box's top and left edges are on the image
    dashed = drawn[35, 10:71].any(-1)
    assert 0.3 < dashed.mean() < 0.95  # white dashes with gaps


def test_parity_and_bench_outputs_are_checked_before_the_run(tiny_export, tmp_path):
    export, _ = tiny_export
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = _cli("parity", "--artifacts", export, "--json", blocker / "sub" / "p.json")
    line = _one_error(proc)
    assert "--json" in line and "does not exist" in line
    proc = _cli("parity", "--artifacts", export, "--figure", UNWRITABLE / "p.png")
    assert "--figure" in _one_error(proc)
    proc = _cli("bench", "--artifacts", export, "--backends", "onnxruntime", "--json", UNWRITABLE / "b.json")
    assert "--json" in _one_error(proc) and proc.stdout == ""
    proc = _cli("parity", "--artifacts", export, "--checkpoint", tmp_path / "random.bin")
    line = _one_error(proc)
    assert "came from random weights (seed 0)" in line and "drop --checkpoint" in line


def test_checkpoint_errors_are_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    empty = tmp_path / "empty.pt"
    torch.save({"model": {}}, empty)
    line = _one_error(_cli("export", "--variant", "tiny", "--checkpoint", empty, "--out", tmp_path / "o"))
    assert "holds no tensors" in line
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {"detector.x": torch.zeros(1)}, "opt": Path("x")}, pickled)
    line = _one_error(_cli("export", "--variant", "tiny", "--checkpoint", pickled, "--out", tmp_path / "o"))
    assert "pickled Python objects" in line and "torch.save" in line and not (tmp_path / "o").exists()


def test_build_prints_only_json_on_stdout(tiny_export, tmp_path):
    export, _ = tiny_export
    line = _one_error(_cli("build", "--gpu", "5090", "--onnx-dir", export, "--shape-buckets", "4,2", "--out", tmp_path))
    assert "shape buckets [4, 2]" in line and "increasing" in line and not list(tmp_path.iterdir())
    runtime = ["--cuda-graphs", "whole_graph_capture", "--shape-buckets", "1,4"]
    proc = _cli("-q", "build", "--gpu", "5090", "--onnx-dir", export, "--out", tmp_path / "e", *runtime)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # TensorRT's log went to stderr, not here
    assert summary["flavour"] == "rtx"
    # the runtime settings the folder's processes will apply, as recorded in its manifest
    recorded = {"kernel_specialization": "eager", "cuda_graphs": "whole_graph_capture", "shape_buckets": [1, 4]}
    assert summary["rtx_runtime"] == recorded
    assert json.loads((tmp_path / "e" / "5090" / "manifest.json").read_text())["rtx_runtime"] == recorded
    plan = json.loads((tmp_path / "e" / "5090.plan.json").read_text())
    assert all({"trtexec", "polygraphy"} <= set(g["same_build_with"]) for g in plan["graphs"].values())


def test_truncated_data_file_is_named(tiny_export, scene, tmp_path):
    export, _ = tiny_export
    broken = tmp_path / "broken"
    shutil.copytree(export, broken)
    data = broken / "text_encoder.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    proc = _cli("segment", scene, "--prompt", "x", "--artifacts", broken, "--output", tmp_path / "o.png")
    line = _one_error(proc)
    assert "text_encoder.onnx.data has 100 bytes" in line and "sam3-trt export" in line
    assert not (tmp_path / "o.png").exists()
