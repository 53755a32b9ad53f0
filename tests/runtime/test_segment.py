"""`sam3-trt segment`: overlay PNG and detections JSON, checked by decoding them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sam3_trt.errors import Sam3TrtError
from sam3_trt.runtime.draw import render_overlay
from sam3_trt.runtime.segment import mask_to_rle, parse_box, rle_to_mask


def test_rle_round_trip_and_coco_compatibility():
    rng = np.random.default_rng(0)
    for mask in (rng.random((13, 17)) > 0.5, np.ones((4, 5), bool), np.zeros((4, 5), bool)):
        rle = mask_to_rle(mask)
        np.testing.assert_array_equal(rle_to_mask(rle), mask)
        mask_utils = pytest.importorskip("pycocotools.mask")
        h, w = rle["size"]
        decoded = mask_utils.decode(mask_utils.frPyObjects(rle, h, w))
        np.testing.assert_array_equal(decoded.astype(bool), mask)


def test_parse_box_checks_against_the_image():
    box, positive = parse_box("10,20,110,220", 200, 400)
    assert positive and np.allclose(box, [0.3, 0.3, 0.5, 0.5])
    assert parse_box("0,0,200,400,neg", 200, 400)[1] is False
    for bad, message in (
        ("10,20,5,30", "x1 > x0"),
        ("0,0,201,10", "outside the 200x400 image"),
        ("1,2,3", "expected"),
        ("0,0,5,5,maybe", "'neg' or 'pos'"),
    ):
        with pytest.raises(Sam3TrtError, match=message):
            parse_box(bad, 200, 400)


def test_overlay_tints_inside_masks_and_leaves_everything_else_untouched():
    img = np.full((80, 120, 3), 100, np.uint8)
    masks = [np.zeros((80, 120), bool), np.zeros((80, 120), bool)]
    masks[0][10:30, 10:40] = True
    masks[1][50:70, 70:110] = True
    dets = [
        {"prompt": "cat", "score": 0.9, "box": [10, 10, 40, 30], "mask": masks[0]},
        {"prompt": "dog", "score": 0.8, "box": [70, 50, 110, 70], "mask": masks[1]},
    ]
    out = np.asarray(render_overlay(img, dets)).astype(int)
    assert out.shape == img.shape
    changed = (out != 100).any(-1)
    for mask in masks:
        assert changed[mask].all()  # fill over the whole mask (outline and label on its edge)
    near = np.zeros((80, 120), bool)  # each mask with its outline, and its score label (above the box or inside)
    for d in dets:
        x0, y0, x1, y1 = d["box"]
        near[max(0, y0 - 4) : y1 + 4, max(0, x0 - 4) : x1 + 4] = True
        near[max(0, y0 - 20) : y0 + 16, max(0, x0 - 8) : x0 + 60] = True
    assert changed.sum() > masks[0].sum() + masks[1].sum()  # outlines and labels drawn too
    assert (~near).sum() > 4000 and not changed[~near].any(), np.argwhere(changed & ~near)[:5]
    shown = np.asarray(render_overlay(img, dets, max_detections=1)).astype(int)
    assert not (shown != 100).any(-1)[masks[1]].any()  # the lower score is not drawn past max_detections


def test_segment_command_writes_png_and_json(tiny_export, tmp_path):
    from PIL import Image

    from sam3_trt.assets.images import demo_image

    out, _ = tiny_export
    image_path = tmp_path / "scene.png"
    demo_image(320, 240).save(image_path)
    png, js = tmp_path / "overlay.png", tmp_path / "detections.json"
    cmd = [
        sys.executable,
        "-m",
        "sam3_trt.cli",
        "segment",
        str(image_path),
        "--prompt",
        "red square",
        "--prompt",
        "blue disc",
        "--box",
        "150,80,300,220,neg",
        "--artifacts",
        str(out),
        "--threshold",
        "0.0",
        "--max-detections",
        "3",
        "--output",
        str(png),
        "--json",
        str(js),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANDOM weights" in proc.stderr
    data = json.loads(js.read_text())
    assert data["size"] == [320, 240] and data["backend"] == "onnxruntime"
    dets = data["detections"]
    # threshold 0 keeps all queries of both prompts; the overlay and the JSON hold the 3 best
    assert data["detections_total"] == 400 and len(dets) == 3
    assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
    assert {d["prompt"] for d in dets} <= {"red square", "blue disc"}
    masks = [rle_to_mask(d["mask_rle"]) for d in dets]
    assert all(m.shape == (240, 320) for m in masks)
    overlay = np.asarray(Image.open(png).convert("RGB")).astype(int)
    original = np.asarray(Image.open(image_path).convert("RGB")).astype(int)
    assert overlay.shape == original.shape
    changed = (overlay != original).any(-1)
    covered = np.any(masks, axis=0)
    assert covered.any() and changed[covered].mean() > 0.9  # the drawn masks are tinted
    # Random weights' best masks cover the whole image, so what lies outside a mask is checked on drawn masks
    # (test_overlay_tints_inside_masks_and_leaves_everything_else_untouched); here: the PNG shows exactly the
    # JSON's detections, the prompt box and the stamp, pixel for pixel.
    from sam3_trt.runtime.draw import render_overlay as draw

    drawn = [
        {"prompt": d["prompt"], "score": d["score"], "box": d["box_xyxy"], "mask": m}
        for d, m in zip(dets, masks, strict=True)
    ]
    expected = np.asarray(draw(original.astype(np.uint8), drawn, [([150, 80, 300, 220], False)], 3, True))
    np.testing.assert_array_equal(overlay, expected.astype(int))
    bad = subprocess.run(
        [*cmd[:7], "--box", "0,0,999,10", "--artifacts", str(out), "--output", str(png)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "outside the 320x240 image" in bad.stderr and "Traceback" not in bad.stderr
