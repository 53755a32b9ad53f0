"""The labelling pipeline's mechanism on the processor double: COCO files pycocotools reads, bad images in
errors.jsonl, resuming after ``kill -9``, ``--shard i/n``, and refusals. The same pipeline on the tiny export's
graphs, against direct processor calls, is in ``test_label_graphs.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sam3_trt.datasets.evaluate import evaluate, report_figure, report_markdown
from sam3_trt.datasets.label import LabelSettings, label
from sam3_trt.datasets.shards import shard_path
from sam3_trt.errors import Sam3TrtError
from sam3_trt.testing.drawn_images import BAD_IMAGES
from sam3_trt.testing.label_double import LabelProcessorDouble

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ("cat", "red box", "dog")
SETTINGS = LabelSettings(threshold=0.15, max_detections=4, batch=2, shard_size=3)
IDENTITY = {"double": "LabelProcessorDouble"}
#: A perfect cgF1 from upstream's evaluator: it adds 1e-4 to each F1 denominator, so identical runs score 0.99995.
PERFECT_CGF1 = 0.9999


def run(image_set, out, processor=None, **kw):
    kw.setdefault("settings", SETTINGS)
    return label(
        image_set, out, processor=processor or LabelProcessorDouble(), identity=IDENTITY, prompts=PROMPTS, **kw
    )


def outputs(out: Path) -> tuple[str, str, str]:
    return tuple((out / name).read_text() for name in ("results.json", "dataset.json", "errors.jsonl"))


@pytest.fixture(scope="module")
def whole_run(image_set, tmp_path_factory):
    """One uninterrupted run of the drawn set (the reference every other run must equal)."""
    out = tmp_path_factory.mktemp("label") / "whole"
    double = LabelProcessorDouble()
    summary = run(image_set, out, double)
    return out, summary, double


def test_outputs_load_in_pycocotools_and_hold_every_image_once(whole_run, image_set):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    out, summary, double = whole_run
    assert summary["complete"] and summary["images"] == 23 and summary["labelled"] == 20 and summary["errors"] == 3
    assert double.images_encoded == 20 and double.confidence_threshold == SETTINGS.threshold
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["image"] for e in errors) == sorted(BAD_IMAGES)
    assert all(e["reason"] for e in errors)

    coco = COCO(str(out / "dataset.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(PROMPTS)
    assert len(coco.getImgIds()) == 20
    dets = coco.loadRes(str(out / "results.json"))
    assert len(dets.getAnnIds()) == summary["detections"] == len(coco.getAnnIds()) > 20
    per_image = {}
    for ann in coco.loadAnns(coco.getAnnIds()):  # loadRes would replace the area by the box area
        per_image.setdefault(ann["image_id"], []).append(ann)
        image = coco.loadImgs(ann["image_id"])[0]
        mask = mask_utils.decode(ann["segmentation"])
        assert mask.shape == (image["height"], image["width"]) and mask.sum() == ann["area"] > 0
        x, y, w, _ = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert abs(xs.min() - x) <= 2 and abs(ys.min() - y) <= 2 and abs(xs.max() + 1 - (x + w)) <= 2
    assert max(len(v) for v in per_image.values()) <= SETTINGS.max_detections


def test_records_equal_the_double_called_directly_image_by_image(whole_run, image_set):
    """The pipeline's threads, batches and RLE change nothing: each image's detections are detect()'s."""
    from PIL import Image

    from sam3_trt.rle import rle_to_mask
    from sam3_trt.runtime.segment import detect

    out, _, _ = whole_run
    dataset = json.loads((out / "dataset.json").read_text())
    results = json.loads((out / "results.json").read_text())
    direct = LabelProcessorDouble(confidence_threshold=SETTINGS.threshold)
    for image in dataset["images"][::4]:
        state = direct.set_image_batch([Image.open(image_set / image["file_name"])])[0]
        expected = detect(direct, state, PROMPTS, (), SETTINGS.max_detections).detections
        got = [r for r in results if r["image_id"] == image["id"]]
        assert [(PROMPTS[r["category_id"] - 1], r["score"]) for r in got] == [
            (d["prompt"], round(d["score"], 6)) for d in expected
        ]
        for r, d in zip(got, expected, strict=True):
            np.testing.assert_array_equal(rle_to_mask(r["segmentation"]), d["mask"])


def test_kill_9_mid_run_then_the_same_command_finishes_only_what_is_missing(whole_run, image_set, tmp_path):
    """A run killed with SIGKILL after two shards leaves no output that looks complete; re-running writes the
    other shards only, and the outputs equal the uninterrupted run's byte for byte."""
    out = tmp_path / "killed"
    script = (
        "import sys\n"
        "from sam3_trt.datasets.label import LabelSettings, label\n"
        "from sam3_trt.testing.label_double import LabelProcessorDouble\n"
        f"label(sys.argv[1], sys.argv[2], processor=LabelProcessorDouble(delay_s=0.25), identity={IDENTITY!r},\n"
        f"      prompts={PROMPTS!r}, settings=LabelSettings(**{SETTINGS.__dict__!r}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(image_set), str(out)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not shard_path(out, 1).exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no second shard within 120 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = sorted(p.name for p in (out / "shards").glob("*.jsonl"))
    assert 2 <= len(done) < 8, done
    assert not (out / "results.json").exists() and not json.loads((out / "run.json").read_text())["complete"]

    double = LabelProcessorDouble()
    summary = run(image_set, out, double)
    assert summary["complete"] and summary["resumed_images"] == 3 * len(done)
    assert double.images_encoded == summary["done_now"] - sum(  # only the missing shards were encoded
        1 for bad in BAD_IMAGES if bad not in _names_in_shards(out, done)
    )
    assert outputs(out) == outputs(whole_run[0])
    again = LabelProcessorDouble()
    assert run(image_set, out, again)["done_now"] == 0 and again.images_encoded == 0  # a finished run stays


def _names_in_shards(out: Path, names: list[str]) -> set[str]:
    return {json.loads(line)["file_name"] for n in names for line in (out / "shards" / n).read_text().splitlines()}


def test_shards_split_across_processes_equal_one_run(whole_run, image_set, tmp_path):
    out = tmp_path / "split"
    first = run(image_set, out, shard=(0, 2))
    assert not first["complete"] and not (out / "results.json").exists()
    second = run(image_set, out, shard=(1, 2))
    assert second["complete"] and first["done_now"] + second["done_now"] == 23
    assert outputs(out) == outputs(whole_run[0])


def test_a_one_process_run_reads_each_written_shard_once(whole_run, image_set, tmp_path, monkeypatch):
    """Shards are read back from disk once, when the outputs are assembled (a cluster's worth of shards is
    read at the end of a run: reading them twice doubles that)."""
    from sam3_trt.datasets import label as label_module
    from sam3_trt.datasets import shards

    parsed: dict[int, int] = {}
    real = shards.read_shard

    def counting(out_dir, index, image_ids):
        records = real(out_dir, index, image_ids)
        if records is not None:
            parsed[index] = parsed.get(index, 0) + 1
        return records

    monkeypatch.setattr(shards, "read_shard", counting)
    monkeypatch.setattr(label_module, "read_shard", counting)
    out = tmp_path / "once"
    assert run(image_set, out)["complete"]
    count = json.loads((out / shards.RUN_FILE).read_text())["shards"]
    assert count > 1 and parsed == dict.fromkeys(range(count), 1), parsed
    assert outputs(out) == outputs(whole_run[0])


def test_another_run_into_the_same_folder_is_refused_naming_what_differs(whole_run, image_set, tmp_path):
    out = whole_run[0]
    for kw, message in (
        (
            {"settings": LabelSettings(threshold=0.4, max_detections=4, batch=2, shard_size=3)},
            "settings.threshold 0.15 there, 0.4 now",
        ),
        ({"limit": 5}, "images 23 there, 5 now"),
    ):
        with pytest.raises(Sam3TrtError, match=message):
            run(image_set, out, **kw)
    with pytest.raises(Sam3TrtError, match="categories"):
        label(image_set, out, processor=LabelProcessorDouble(), identity=IDENTITY, prompts=["bus"], settings=SETTINGS)
    with pytest.raises(Sam3TrtError, match="artifacts"):
        label(
            image_set, out, processor=LabelProcessorDouble(), identity={"other": 1}, prompts=PROMPTS, settings=SETTINGS
        )
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "mine.txt").write_text("x")
    with pytest.raises(Sam3TrtError, match=r"no run\.json; choose an empty or new folder"):
        run(image_set, stray)


def test_eval_against_itself_is_perfect_and_a_perturbed_run_drops_where_it_changed(whole_run, image_set, tmp_path):
    out = whole_run[0]
    same = evaluate(out, reference=out)
    assert same["overall"]["segm_AP"] == same["overall"]["bbox_AP"] == same["overall"]["IL_MCC"] == 1.0
    assert same["overall"]["cgF1"] >= PERFECT_CGF1
    assert all(p["segm_AP"] == 1.0 and p["cgF1"] >= PERFECT_CGF1 for p in same["per_prompt"])
    assert not same["worst_images"]

    # no cap on detections per image here: under a cap, fewer dogs would let more cats in
    uncapped = LabelSettings(threshold=SETTINGS.threshold, max_detections=100, batch=2, shard_size=3)
    run(image_set, tmp_path / "reference", settings=uncapped)
    perturbed = tmp_path / "perturbed"
    run(image_set, perturbed, LabelProcessorDouble(score_shift={"dog": -0.25}), settings=uncapped)
    report = evaluate(perturbed, reference=tmp_path / "reference")
    by_prompt = {p["prompt"]: p for p in report["per_prompt"]}
    assert by_prompt["dog"]["detections"] < by_prompt["dog"]["truth_instances"]
    assert by_prompt["dog"]["segm_AP"] < 0.9 and by_prompt["dog"]["cgF1"] < 0.9
    assert by_prompt["cat"]["segm_AP"] == by_prompt["red box"]["segm_AP"] == 1.0
    assert report["overall"]["segm_AP"] < 1.0 and report["worst_images"][0]["missed"] >= 1
    table = report_markdown(report)
    assert "| dog |" in table and "missed" in table
    report_figure(report, tmp_path / "eval.png")
    from PIL import Image

    assert Image.open(tmp_path / "eval.png").size[0] == 900

    with pytest.raises(Sam3TrtError, match="exactly one of --gt"):
        evaluate(out)
    incomplete = tmp_path / "half"
    run(image_set, incomplete, shard=(0, 2))
    with pytest.raises(Sam3TrtError, match="not complete"):
        evaluate(incomplete, reference=out)


def test_eval_against_coco_ground_truth_matches_by_file_name_and_category_name(whole_run, tmp_path):
    out = whole_run[0]
    dataset = json.loads((out / "dataset.json").read_text())
    # the ground truth: another numbering, one extra category, one image the run has not seen
    shift = {im["id"]: im["id"] + 100 for im in dataset["images"]}
    gt = {
        "images": [{**im, "id": shift[im["id"]]} for im in dataset["images"]]
        + [{"id": 999, "file_name": "elsewhere.png", "width": 5, "height": 5}],
        "categories": [{"id": 50 + c["id"], "name": c["name"]} for c in dataset["categories"]]
        + [{"id": 9, "name": "zebra"}],
        "annotations": [
            {**a, "image_id": shift[a["image_id"]], "category_id": 50 + a["category_id"]}
            for a in dataset["annotations"]
        ],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    report = evaluate(out, gt=tmp_path / "gt.json")
    assert report["overall"]["segm_AP"] == 1.0 and report["images"] == 20
    assert any("zebra" in n for n in report["notes"]) and any("only in the truth" in n for n in report["notes"])
    with pytest.raises(Sam3TrtError, match="no such file"):
        evaluate(out, gt=tmp_path / "none.json")
