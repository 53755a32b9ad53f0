"""``sam3-trt label`` and ``sam3-trt eval`` on the tiny export's graphs (ONNX Runtime) and upstream's eager model:
the pipeline's detections equal direct ``Sam3Processor`` calls, eager against graphs scores AP 1, a changed
weight shows in the report where it acts; bad input is one line and exit 2 before any work.

Random weights: these prove the mechanism and the numbers' equality, not real-weight accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sam3_trt.cli import main
from sam3_trt.testing.drawn_images import BAD_IMAGES

pytest.importorskip("torch")

PROMPTS = ("cat", "red box", "dog")
#: Random weights score every query within 0.3-0.42 whatever the text: a threshold inside that band keeps some
#: queries per prompt (so a changed weight makes detections come and go); no cap binds at 300.
THRESHOLD, MAX_DETECTIONS = 0.38, 300
#: A perfect cgF1 from upstream's evaluator (it adds 1e-4 to each F1 denominator).
PERFECT_CGF1 = 0.9999
#: Good images of the drawn set the graph tests label (grayscale, RGBA, JPEG) beside two bad files.
CHOSEN = ("a/img09_gray.png", "a/img06_rgba.png", "b/c/img07.jpg", *BAD_IMAGES[:2])


def cli(*args: object):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def chosen(image_set, tmp_path_factory) -> Path:
    listing = tmp_path_factory.mktemp("list") / "chosen.txt"
    listing.write_text("\n".join(str(image_set / name) for name in CHOSEN) + "\n")
    return listing


def label_args(listing, export, out, *extra):
    prompts = [a for p in PROMPTS for a in ("--prompt", p)]
    return ("label", listing, *prompts, "--artifacts", export, "--out", out, "--threshold", THRESHOLD,
            "--max-detections", MAX_DETECTIONS, "--batch", 1, "--shard-size", 2, *extra)  # fmt: skip


@pytest.fixture(scope="module")
def graph_run(tiny_export, chosen, tmp_path_factory):
    export, _ = tiny_export
    out = tmp_path_factory.mktemp("graph-run") / "ort"
    result = cli(*label_args(chosen, export, out))
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout.strip().splitlines()[-1])


def test_label_on_the_graphs_equals_direct_processor_calls(graph_run, tiny_export, chosen):
    """Each image's detections are what Sam3Processor gives called directly (set_image, set_text_prompts with
    full masks): the best MAX_DETECTIONS over the three prompts by score, same scores, same full-size masks."""
    from pycocotools import mask as mask_utils

    from sam3_trt import Sam3Processor
    from sam3_trt.runtime.image import open_image

    out, summary = graph_run
    assert summary["complete"] and summary["labelled"] == 3 and summary["errors"] == 2
    dataset = json.loads((out / "dataset.json").read_text())
    results = json.loads((out / "results.json").read_text())
    errors = [json.loads(line)["image"] for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(Path(e).name for e in errors) == sorted(Path(b).name for b in BAD_IMAGES[:2])
    processor = Sam3Processor(tiny_export[0], confidence_threshold=THRESHOLD)
    for image in dataset["images"]:
        state = processor.set_image(open_image(image["file_name"]))
        candidates = []
        for index, res in enumerate(processor.set_text_prompts(list(PROMPTS), state)):
            for row in range(len(res["scores"])):
                candidates.append((float(res["scores"][row]), index, np.asarray(res["masks"][row, 0])))
        candidates.sort(key=lambda c: -c[0])
        expected = candidates[:MAX_DETECTIONS]
        got = [r for r in results if r["image_id"] == image["id"]]
        assert [r["category_id"] - 1 for r in got] == [index for _, index, _ in expected]
        np.testing.assert_allclose([r["score"] for r in got], [s for s, _, _ in expected], rtol=0, atol=1e-6)
        for r, (_, _, mask) in zip(got, expected, strict=True):
            np.testing.assert_array_equal(mask_utils.decode(r["segmentation"]).astype(bool), mask)


def test_eager_reference_run_scores_ap_1_and_a_changed_weight_shows_where(graph_run, tiny_export, chosen, tmp_path):
    """``--backend torch`` (upstream's eager model on the export's weights) against the graphs: AP 1 and cgF1 1
    at FP32. Then the eager model with one weight changed: AP and pmF1 drop, and the report names the images."""
    import torch

    from sam3_trt import Sam3Processor
    from sam3_trt.datasets.evaluate import evaluate
    from sam3_trt.datasets.label import LabelSettings, label
    from sam3_trt.export.model import load_model

    out, _ = graph_run
    export, _ = tiny_export
    eager = tmp_path / "eager"
    result = cli(*label_args(chosen, export, eager, "--backend", "torch"))
    assert result.exit_code == 0, result.output
    report = evaluate(eager, reference=out)
    assert report["overall"]["segm_AP"] == report["overall"]["bbox_AP"] == 1.0
    assert report["overall"]["pmF1"] >= PERFECT_CGF1 and report["images"] == 3
    # every (image, prompt) pair has instances at this threshold: no negatives, so MCC (and cgF1) is undefined
    assert report["overall"]["cgF1"] is None and any("undefined" in n for n in report["notes"])

    # One weight changed: the presence head's output bias (every score scaled down a little), through the
    # same pipeline in-process; the threshold is what makes detections go, and the report names the images.
    model, _ = load_model("tiny", random_weights=True, seed=0)
    with torch.no_grad():
        model.transformer.decoder.presence_token_head.layers[-1].bias -= 0.3
    settings = LabelSettings(threshold=THRESHOLD, max_detections=MAX_DETECTIONS, batch=1, shard_size=2)
    processor = Sam3Processor(model, backend="torch")
    label(
        chosen,
        tmp_path / "changed",
        processor=processor,
        identity={"w": "presence-0.3"},
        prompts=PROMPTS,
        settings=settings,
    )
    changed = evaluate(tmp_path / "changed", reference=out)
    assert all(p["detections"] < p["truth_instances"] for p in changed["per_prompt"]), changed["per_prompt"]
    assert all(p["segm_AP"] < 0.95 for p in changed["per_prompt"]), changed["per_prompt"]
    assert changed["overall"]["segm_AP"] < 0.95 and changed["overall"]["pmF1"] < PERFECT_CGF1
    assert changed["worst_images"][0]["missed"] > 0 and changed["worst_images"][0]["extra"] == 0


def test_per_image_boxes_reach_the_graphs_as_upstreams_box_prompts(tiny_export, image_set, tmp_path):
    """A --per-image line's pixel box runs as the processor's box prompt (normalised cx, cy, w, h worked out
    here by hand) with the line's prompt; the same image without the box scores otherwise (the box is used)."""
    from PIL import Image

    from sam3_trt import Sam3Processor
    from sam3_trt.datasets.label import LabelSettings, label

    export, _ = tiny_export
    name, box = "b/c/img07.jpg", [10.0, 20.0, 60.0, 90.0]
    listing = tmp_path / "one.txt"
    listing.write_text(f"{image_set / name}\n")
    (tmp_path / "per.jsonl").write_text(
        json.dumps({"image": str(image_set / name), "prompts": ["cat"], "boxes": [box]})
    )
    settings = LabelSettings(threshold=0.0, max_detections=5, batch=1, shard_size=1)
    label(listing, tmp_path / "boxed", export, per_image=tmp_path / "per.jsonl", settings=settings)
    label(listing, tmp_path / "plain", export, prompts=["cat"], settings=settings)
    scores = {
        run: [r["score"] for r in json.loads((tmp_path / run / "results.json").read_text())]
        for run in ("boxed", "plain")
    }
    image = Image.open(image_set / name)
    width, height = image.size
    processor = Sam3Processor(export, confidence_threshold=0.0)
    state = processor.set_image(image)
    x0, y0, x1, y1 = box
    processor.add_geometric_prompt(
        [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height], True, state
    )
    direct = processor.set_text_prompt("cat", state)
    expected = sorted((float(v) for v in direct["scores"]), reverse=True)[:5]
    np.testing.assert_allclose(scores["boxed"], expected, rtol=0, atol=1e-6)
    assert np.abs(np.subtract(scores["boxed"], scores["plain"])).max() > 1e-3


def test_eval_command_writes_json_markdown_and_figure(graph_run, tmp_path):
    from PIL import Image

    out, _ = graph_run
    files = {"--json": tmp_path / "r.json", "--markdown": tmp_path / "r.md", "--figure": tmp_path / "r.png"}
    result = cli("eval", out, "--reference", out, *[a for kv in files.items() for a in kv])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["segm_AP"] == 1.0
    assert json.loads(files["--json"].read_text())["per_prompt"][0]["prompt"] == PROMPTS[0]
    assert "| **all** |" in files["--markdown"].read_text()
    assert Image.open(files["--figure"]).format == "PNG"


@pytest.mark.parametrize(
    "change, words",
    [
        ({"images": "{tmp}/nothing-here"}, ["no such folder, file or matching glob"]),
        ({"--threshold": "1.5"}, ["--threshold 1.5", "[0, 1]"]),
        ({"--max-detections": "0"}, ["--max-detections 0"]),
        ({"--shard": "2/2"}, ["--shard '2/2'", "0 <= i < n"]),
        ({"--limit": "0"}, ["--limit 0"]),
        ({"--actors": "0"}, ["--actors 0"]),
        ({"--artifacts": "{tmp}/no-export"}, ["no-export"]),
        ({"--prompt": None}, ["has no prompt"]),
        ({"--per-image": "{tmp}/per.jsonl"}, ["per.jsonl:1", "not among the run's images"]),
    ],
)
def test_bad_label_input_is_one_line_and_exit_2_before_any_work(tiny_export, chosen, tmp_path, change, words):
    (tmp_path / "per.jsonl").write_text('{"image": "unknown.png", "prompts": ["a"]}\n')
    opts = {"--artifacts": str(tiny_export[0]), "--out": str(tmp_path / "out"), "--prompt": "cat"}
    images = str(chosen)
    for key, value in change.items():
        value = value.replace("{tmp}", str(tmp_path)) if value else value
        if key == "images":
            images = value
        elif value is None:
            opts.pop(key)
        else:
            opts[key] = value
    result = cli("label", images, *[a for kv in opts.items() for a in kv])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and result.stdout == "", result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "out" / "run.json").exists()  # refused before the run folder was started


def test_a_changed_command_into_a_finished_run_is_refused(graph_run, tiny_export, chosen):
    out, _ = graph_run
    result = cli(*label_args(chosen, tiny_export[0], out, "--threshold", "0.4"))
    assert result.exit_code == 2
    assert f"settings.threshold {THRESHOLD} there, 0.4 now" in result.stderr
