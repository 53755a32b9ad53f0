"""Clicks on images: ``Sam3Processor.predict_inst`` on the graphs against upstream's eager ``model.predict_inst``.

The reference is upstream's own interactive image predictor (``SAM3InteractiveImagePredictor`` over the tiny
tracker, random weights, seed 0, attached to the tiny image model with the tracker's neck, as
``build_sam3_image_model(enable_inst_interactivity=True)`` attaches it), called through upstream's
``Sam3Processor.set_image`` and ``Sam3Image.predict_inst``. The candidate is ``sam3_trt.Sam3Processor`` over the
same weights' export (``--video``: the vision graph with the tracker neck and the ``interactive_mask_head``
graph) on ONNX Runtime. Random weights prove the arithmetic is upstream's, not real-weight mask quality.
"""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam3")

from click_checks import TOLS, assert_same_clicks, run_eager  # noqa: E402

from sam3_trt import Sam3Processor  # noqa: E402
from sam3_trt.assets.images import demo_image  # noqa: E402
from sam3_trt.compare import check_outputs  # noqa: E402
from sam3_trt.errors import Sam3TrtError  # noqa: E402

W, H = 420, 300  # the conftest's clicked image: non-square, smaller than the 1008 input, larger than the masks

#: (label, predict_inst prompt keywords), pixel coordinates of the W x H image.
CASES = (
    ("one positive click", {"point_coords": [[150.0, 120.0]], "point_labels": [1]}),
    ("positive and negative clicks", {"point_coords": [[150.0, 120.0], [300.0, 200.0]], "point_labels": [1, 0]}),
    ("box", {"box": [60.0, 40.0, 260.0, 230.0]}),
    ("box with clicks", {"box": [60.0, 40.0, 260.0, 230.0], "point_coords": [[150.0, 120.0]], "point_labels": [0]}),
    ("corners and edges", {"point_coords": [[0.0, 0.0], [W, H], [W, 0.0], [0.0, H / 2]], "point_labels": [1, 1, 0, 1]}),
    ("two objects", {"point_coords": [[[150.0, 120.0]], [[330.0, 80.0]]], "point_labels": [[1], [1]]}),
    ("two boxes", {"box": [[60.0, 40.0, 260.0, 230.0], [250.0, 20.0, 410.0, 290.0]]}),
)


@pytest.fixture(scope="module")
def eager(eager_interactive):
    """Upstream's image model with its interactive predictor and upstream's processor (tests/runtime/conftest)."""
    return eager_interactive


@pytest.fixture(scope="module")
def clicks(tracker_export):
    with Sam3Processor(tracker_export[0], backend="onnxruntime", interactive=True) as processor:
        yield processor


@pytest.fixture(scope="module")
def image(eager_image_state):
    assert eager_image_state[0].size == (W, H)
    return eager_image_state[0]


@pytest.fixture(scope="module")
def states(eager_image_state, clicks, image):
    return eager_image_state[1], clicks.set_image(image)


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
def test_predict_inst_matches_upstream_on_every_prompt(eager, clicks, states, multimask):
    model, _ = eager
    theirs, ours = states
    informative = 0
    for label, prompt in CASES:
        expected = run_eager(model, theirs, multimask_output=multimask, return_logits=True, **prompt)
        got = clicks.predict_inst(ours, multimask_output=multimask, return_logits=True, **prompt)
        assert_same_clicks(label, expected, got)
        # 0/1 masks: equal wherever upstream's logit is farther from 0 than the logit tolerance
        binary = clicks.predict_inst(ours, multimask_output=multimask, **prompt)[0]
        reference = expected[0] > 0
        decided = np.abs(expected[0]) > TOLS["masks"]["max_abs"]
        assert set(np.unique(binary)) <= {0.0, 1.0}
        assert np.array_equal(binary[decided] > 0, reference[decided]), label
        informative += bool(((reference.mean(axis=(-1, -2)) > 0) & (reference.mean(axis=(-1, -2)) < 1)).any())
    # random weights: some prompts give all-foreground masks; most must give masks with both values
    assert informative >= len(CASES) // 2, informative


def test_refine_loop_and_coordinates_in_0_1(eager, clicks, states):
    """The annotation tool's loop: the best mask's low-res logits go back with the next click."""
    model, _ = eager
    theirs, ours = states
    first = {"point_coords": np.array([[150.0, 120.0]]), "point_labels": np.array([1])}
    e_masks, e_iou, e_low = run_eager(model, theirs, multimask_output=True, return_logits=True, **first)
    masks, iou, low = clicks.predict_inst(ours, multimask_output=True, return_logits=True, **first)
    assert_same_clicks("first click", (e_masks, e_iou, e_low), (masks, iou, low))
    best = int(np.argmax(e_iou))
    assert best == int(np.argmax(iou))
    second = {
        "point_coords": np.array([[150.0, 120.0], [300.0, 200.0]]),
        "point_labels": np.array([1, 0]),
        "multimask_output": False,
        "return_logits": True,
    }
    expected = run_eager(model, theirs, mask_input=e_low[best][None], **second)
    got = clicks.predict_inst(ours, mask_input=low[best][None], **second)
    assert_same_clicks("refined", expected, got)
    without = clicks.predict_inst(ours, **second)
    assert np.abs(without[2] - got[2]).max() > 0.1  # the mask input changes the answer
    # normalize_coords=False: coordinates already in [0, 1]
    unit = {"point_coords": np.array([[150.0 / W, 120.0 / H]]), "point_labels": np.array([1]), "return_logits": True}
    expected = run_eager(model, theirs, normalize_coords=False, **unit)
    assert_same_clicks("normalised", expected, clicks.predict_inst(ours, normalize_coords=False, **unit))


def test_predict_inst_batch_matches_upstream_on_two_images(eager_batch, clicks, tracker_export):
    """Both state forms: one state per image (a folder's processor) and upstream's single batch state (a
    processor on ``build_sam3_image_model``'s model, clicked through the model as upstream's clients do)."""
    from sam3_trt import build_sam3_image_model

    images, prompts, theirs, expected = eager_batch
    ours = clicks.set_image_batch(images)
    got = clicks.predict_inst_batch(ours, **prompts, multimask_output=True, return_logits=True)
    assert [m.shape for m in got[0]] == [(3, H, W), (3, 360, 360)]
    for i in range(2):
        assert_same_clicks(f"image {i}", [e[i] for e in expected], [g[i] for g in got])
    with build_sam3_image_model(artifacts=tracker_export[0], enable_inst_interactivity=True) as model:
        batch = Sam3Processor(model).set_image_batch(images)
        assert isinstance(batch, dict) and batch["original_heights"] == theirs["original_heights"]
        for key in ("backbone_fpn",):
            assert [tuple(f.shape) for f in batch["backbone_out"][key]] == [
                tuple(f.shape) for f in theirs["backbone_out"][key]
            ]
        got = model.predict_inst_batch(batch, **prompts, multimask_output=True, return_logits=True)
        for i in range(2):
            assert_same_clicks(f"batch state, image {i}", [e[i] for e in expected], [g[i] for g in got])
        with pytest.raises(Sam3TrtError, match="batch state"):
            Sam3Processor(model).set_text_prompt("a red square", batch)


def test_the_comparison_can_fail(eager, clicks, states):
    """A click one pixel off gives other logits, beyond the tolerance: the comparison above is not vacuous."""
    model, _ = eager
    theirs, ours = states
    expected = run_eager(model, theirs, point_coords=[[150.0, 120.0]], point_labels=[1], return_logits=True)
    got = clicks.predict_inst(ours, point_coords=[[151.0, 120.0]], point_labels=[1], return_logits=True)
    names = ("masks", "iou_predictions", "low_res_masks")
    checks = check_outputs(dict(zip(names, expected, strict=True)), dict(zip(names, got, strict=True)), TOLS)
    assert not all(c.passed for c in checks)


BAD = (
    ({"point_coords": [[np.nan, 10.0]], "point_labels": [1]}, "NaN"),
    ({"point_coords": [[W + 5.0, 10.0]], "point_labels": [1]}, "outside the image"),
    ({"point_coords": [[-1.0, 10.0]], "point_labels": [1]}, "outside the image"),
    ({"point_coords": [[10.0, 10.0]], "point_labels": [2]}, "use 1 (positive) or 0"),
    ({"point_coords": [[10.0, 10.0], [20.0, 20.0]], "point_labels": [1]}, "one label per point"),
    ({"point_coords": [[10.0, 10.0]]}, "without point_labels"),
    ({"box": [200.0, 40.0, 100.0, 230.0]}, "x1 > x0"),
    ({"box": [1.0, 2.0, 3.0]}, "box must be [4]"),
    ({"mask_input": np.zeros((1, 288, 288), np.float32)}, "mask_input alone"),
    ({"point_coords": [[10.0, 10.0]], "point_labels": [1], "mask_input": np.zeros((1, 256, 256))}, "low_res_masks"),
    ({"point_coords": [[1.0, 1.0]] * 17, "point_labels": [1] * 17}, "at most 64 sets of 16"),
)


def test_bad_prompts_get_one_line_and_change_nothing(clicks, states):
    _, ours = states
    before = {k: v for k, v in ours.items()}
    calls = clicks.backend.calls["interactive_mask_head"]
    for prompt, words in BAD:
        with pytest.raises(Sam3TrtError, match=re.escape(words)) as info:
            clicks.predict_inst(ours, **prompt)
        assert "\n" not in str(info.value)
    assert clicks.backend.calls["interactive_mask_head"] == calls  # refused before any graph ran
    assert ours.keys() == before.keys() and all(ours[k] is before[k] for k in before)


def test_processor_without_clicks_says_how_to_get_them(clicks, tiny_export, image):
    with Sam3Processor(tiny_export[0], backend="onnxruntime") as plain:
        state = plain.set_image(image)
        with pytest.raises(Sam3TrtError, match="interactive=True"):
            plain.predict_inst(state, point_coords=[[10.0, 10.0]], point_labels=[1])
    with pytest.raises(Sam3TrtError, match="export --video"):
        Sam3Processor(tiny_export[0], backend="onnxruntime", interactive=True)
    # a state of a processor without the tracker levels is refused by one with them
    with pytest.raises(Sam3TrtError, match="call set_image again"):
        clicks.predict_inst(state, point_coords=[[10.0, 10.0]], point_labels=[1])


# -- automatic masks -------------------------------------------------------------------------------------

#: Settings that keep dozens of masks on random weights: their low-res logits stay within about +-0.25, so
#: SAM2's stability offset of 1.0 scores every mask 0, and every mask's box spans the image (so any NMS
#: threshold below 1 leaves one mask). A 0.05 offset spreads stability scores over [0, 1]; the IoU and
#: stability thresholds each drop about half of the 192 grid masks.
KEEPING = {"pred_iou_thresh": 0.55, "stability_score_thresh": 0.3, "stability_score_offset": 0.05}


def _sam2_generator(eager, tracker, **settings):
    """SAM2's own generator, its predictor replaced by upstream SAM3's interactive predictor fed as
    ``Sam3Image.predict_inst`` feeds it (features from upstream's ``Sam3Processor.set_image``)."""
    from PIL import Image
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor

    _, processor = eager
    area = settings.get("min_mask_region_area", 0)

    class FedByTheImageProcessor(SAM3InteractiveImagePredictor):
        def set_image(self, image):
            self.reset_predictor()
            state = processor.set_image(Image.fromarray(image))
            _, feats, _, _ = self.model._prepare_backbone_features(state["backbone_out"]["sam2_backbone_out"])
            feats[-1] = feats[-1] + self.model.no_mem_embed
            levels = [
                f.permute(1, 2, 0).view(1, -1, *size)
                for f, size in zip(feats[::-1], self._bb_feat_sizes[::-1], strict=True)
            ][::-1]
            self._features = {"image_embed": levels[-1], "high_res_feats": levels[:-1]}
            self._orig_hw = [(state["original_height"], state["original_width"])]
            self._is_image_set = True

    generator = SAM2AutomaticMaskGenerator(tracker, output_mode="coco_rle", **settings)
    # as SAM2's generator makes its own predictor: holes and specks cleaned up to min_mask_region_area
    generator.predictor = FedByTheImageProcessor(tracker, max_hole_area=area, max_sprinkle_area=area).eval()
    return generator


def _matched(theirs, ours):
    """Each SAM2 record paired with the unused record of ours whose mask overlaps it most: (theirs, ours, IoU)."""
    from pycocotools import mask as mask_utils

    def decode(records):
        return [
            mask_utils.decode({"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"]})
            for r in records
        ]

    a, b = decode(theirs), decode(ours)
    free = list(range(len(b)))
    pairs = []
    for i, m in enumerate(a):
        ious = [np.logical_and(m, b[j]).sum() / max(np.logical_or(m, b[j]).sum(), 1) for j in free]
        j = free.pop(int(np.argmax(ious)))
        pairs.append((theirs[i], ours[j], float(max(ious))))
    return pairs


@pytest.mark.parametrize(
    "settings",
    [
        {"points_per_side": 8, "box_nms_thresh": 1.0, **KEEPING},
        {"points_per_side": 5, "box_nms_thresh": 0.7, "multimask_output": False, **KEEPING},
        # five crops, each encoded on both sides (34 s): make test-full; grid, NMS and small regions stay in CI
        pytest.param(
            {"points_per_side": 4, "crop_n_layers": 1, "box_nms_thresh": 1.0, "crop_nms_thresh": 1.0, **KEEPING},
            marks=pytest.mark.slow,
        ),
        {
            "points_per_side": 3,
            "points_per_batch": 4,
            "min_mask_region_area": 40,
            "box_nms_thresh": 1.0,
            "multimask_output": False,
            **KEEPING,
        },
    ],
    ids=["grid", "nms-single-mask", "crops", "small-regions-batches"],
)
def test_automatic_masks_match_sam2s_generator_over_upstream(eager, clicks, tiny_tracker, settings):
    pytest.importorskip("sam2")
    from sam3_trt.export.patches import cpu_compat
    from sam3_trt.runtime.automatic import Sam3AutomaticMaskGenerator, crop_boxes
    from sam3_trt.tolerances import AUTOMATIC_MASK_TOLERANCES

    tol = AUTOMATIC_MASK_TOLERANCES["fp32"]
    image = np.asarray(demo_image(W, H))
    tracker = copy.deepcopy(tiny_tracker)
    with torch.inference_mode(), cpu_compat():
        theirs = _sam2_generator(eager, tracker, **settings).generate(image)
    generator = Sam3AutomaticMaskGenerator(clicks, output_mode="coco_rle", **settings)
    ours = generator.generate(image)
    # random weights: every mask's box spans the image, so NMS below 1 keeps one; the others keep several
    assert len(ours) == len(theirs) >= (1 if settings["box_nms_thresh"] < 1 else 8), (len(ours), len(theirs))
    assert set(ours[0]) == set(theirs[0]) == {
        "segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"
    }  # fmt: skip
    for t, o, iou in _matched(theirs, ours):
        assert iou >= tol["mask_iou_min"], (t["point_coords"], o["point_coords"], iou)
        assert abs(t["predicted_iou"] - o["predicted_iou"]) <= tol["predicted_iou_max_abs"]
        assert abs(t["stability_score"] - o["stability_score"]) <= tol["stability_score_max_abs"]
        assert np.allclose(t["point_coords"], o["point_coords"], atol=1e-3)
        assert t["crop_box"] == o["crop_box"]
        if iou == 1.0:  # the same pixels: the same box and area
            assert t["bbox"] == o["bbox"] and t["area"] == o["area"]
    # one click-head run per batch of grid points, per crop
    boxes, layers = crop_boxes(H, W, generator.crop_n_layers, generator.crop_overlap_ratio)
    batch = generator.points_per_batch
    assert generator.last_runs == sum(-(-len(generator.point_grids[layer]) // batch) for layer in layers)
    assert len({tuple(r["crop_box"]) for r in ours}) <= len(boxes)


def test_automatic_mask_helpers_equal_sam2s(eager):
    """The grid, crops, stability, boxes, crop-edge rule and NMS against SAM2's own functions (imported)."""
    pytest.importorskip("sam2")
    from sam2.utils import amg
    from torchvision.ops import nms

    from sam3_trt.runtime import automatic

    for n in (1, 4, 7, 32):
        assert np.array_equal(automatic.point_grid(n), amg.build_point_grid(n))
    for hw, layers in (((300, 420), 1), ((1080, 1920), 2), ((500, 333), 3)):
        assert automatic.crop_boxes(*hw, layers, 512 / 1500) == amg.generate_crop_boxes(hw, layers, 512 / 1500)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 40, 50)).astype(np.float32)
    logits[2] = -5.0  # an empty mask: its box is 0s
    expected = amg.calculate_stability_score(torch.from_numpy(logits), 0.0, 0.5).numpy()
    assert np.allclose(automatic.stability_scores(logits, 0.0, 0.5), expected, equal_nan=True)
    masks = logits > 0.8
    assert np.array_equal(automatic.mask_boxes(masks), amg.batched_mask_to_box(torch.from_numpy(masks)).numpy())
    boxes = rng.uniform(0, 200, size=(60, 4)).astype(np.float32)
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(5, 120, size=(60, 2))
    scores = rng.random(60).astype(np.float32)
    for threshold in (0.3, 0.7):
        kept = nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
        assert np.array_equal(automatic.box_nms(boxes, scores, threshold), kept)
    crop, image_hw = [100, 0, 300, 200], (300, 420)
    for box in (
        [5.0, 5.0, 60.0, 60.0],
        [150.0, 10.0, 199.0, 80.0],
        [0.0, 0.0, 199.0, 199.0],
        [30.0, 30.0, 150.0, 170.0],
    ):
        cut = amg.is_box_near_crop_edge(torch.tensor([box]), crop, [0, 0, image_hw[1], image_hw[0]])
        assert automatic._cut_by_crop(np.array(box, np.float32), crop, image_hw) == bool(cut[0]), box


# -- segment --point / --everything ---------------------------------------------------------------------


def _segment(args, tmp_path):
    """``sam3-trt segment`` in-process (CliRunner): exit code, output, and the JSON it wrote."""
    from click.testing import CliRunner

    from sam3_trt.cli import main

    js = tmp_path / "out.json"
    result = CliRunner().invoke(main, ["segment", *args, "--output", str(tmp_path / "out.png"), "--json", str(js)])
    return result, (json.loads(js.read_text()) if js.exists() and result.exit_code == 0 else None)


def test_segment_point_writes_the_clicked_masks(clicks, states, tracker_export, tmp_path):
    """``segment --point`` runs upstream's predict_inst call: the JSON's masks are the processor's, decoded."""
    from sam3_trt.rle import rle_to_mask

    _, ours = states
    image_path = tmp_path / "scene.png"
    demo_image(W, H).save(image_path)
    art = ["--artifacts", str(tracker_export[0])]
    args = [str(image_path), "--point", "150,120", "--point", "300,200,neg", "--box", "60,40,260,230", *art]
    for multimask in (False, True):
        result, data = _segment([*args, *(["--multimask"] if multimask else [])], tmp_path)
        assert result.exit_code == 0, result.output
        masks, ious, _ = clicks.predict_inst(
            ours, [[150.0, 120.0], [300.0, 200.0]], [1, 0], box=[60.0, 40.0, 260.0, 230.0], multimask_output=multimask
        )
        dets = data["detections"]
        assert data["points"] == ["150,120", "300,200,neg"] and len(dets) == len(masks) == (3 if multimask else 1)
        order = np.argsort(-ious, kind="stable")  # the JSON lists the best predicted IoU first
        for det, k in zip(dets, order, strict=True):
            assert abs(det["score"] - float(ious[k])) < 1e-6
            assert np.array_equal(rle_to_mask(det["mask_rle"]), masks[k] > 0)


def test_segment_everything_writes_the_generators_masks(clicks, tracker_export, tmp_path):
    from sam3_trt.rle import rle_to_mask
    from sam3_trt.runtime.automatic import Sam3AutomaticMaskGenerator

    image_path = tmp_path / "scene.png"
    demo_image(W, H).save(image_path)
    settings = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0"]
    result, data = _segment(
        [str(image_path), "--everything", *settings, "--artifacts", str(tracker_export[0])], tmp_path
    )
    assert result.exit_code == 0, result.output
    records = Sam3AutomaticMaskGenerator(
        clicks, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="binary_mask"
    ).generate(np.asarray(demo_image(W, H)))
    records.sort(key=lambda r: -r["predicted_iou"])
    assert data["detections_total"] == len(records) >= 1
    assert data["everything"] == {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    for det, record in zip(data["detections"], records, strict=False):
        assert abs(det["score"] - record["predicted_iou"]) < 1e-6
        assert np.array_equal(rle_to_mask(det["mask_rle"]), record["segmentation"])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--point", "10,10", "--prompt", "cat"], "run them as two commands"),
        (["--point", "10,10", "--box", "1,1,5,5", "--box", "2,2,6,6"], "at most one --box"),
        (["--point", "10"], "expected x,y[,neg]"),
        (["--point", "10,10,maybe"], "'neg' or 'pos'"),
        (["--point", f"{W + 1},10"], "outside the 420x300 image"),
        (["--everything", "--prompt", "cat"], "drop --prompt"),
        (["--prompt", "cat", "--points-per-side", "4"], "only apply with --everything"),
        (["--everything", "--pred-iou-thresh", "2"], "--pred-iou-thresh 2.0"),
        (["--multimask", "--prompt", "cat"], "give --point x,y too"),
        (["--point", "10,10", "--threshold", "0.3"], "drop --threshold"),
    ],
)
def test_segment_refuses_bad_click_requests_in_one_line(tiny_export, tmp_path, args, words):
    """Refused before any model loads (a plain image export: nothing runs before the refusal)."""
    image_path = tmp_path / "scene.png"
    demo_image(W, H).save(image_path)
    result, _ = _segment([str(image_path), *args, "--artifacts", str(tiny_export[0])], tmp_path)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert words in line and line.startswith("error:"), result.output
