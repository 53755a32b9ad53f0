"""The drop-in at the builder: ``sam3_trt.build_sam3_image_model`` where clients call upstream's.

Two clients, run on the ``tracker_export`` fixture (tiny, random weights: mechanisms and numerical equality
with upstream, not real-weight quality) against upstream's eager model on the same weights:

* the script every SAM3 app starts from (upstream's README): build the model, ``load_state_dict``, ``.to``,
  ``.eval``, ``Sam3Processor(model, confidence_threshold=...)``, a text prompt, then clicks on the model;
* segment-geospatial's ``SamGeo3`` (the package index's 1.4.2, its code unchanged), loaded the way its own
  tests load it (``tests/test_samgeo3.py``: stubs for its geospatial helpers, the builder and processor names
  redirected), over the folder named by ``SAM3_TRT_ARTIFACTS``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam3")

from click_checks import TOLS, assert_same_clicks, run_eager  # noqa: E402

import sam3_trt  # noqa: E402
from sam3_trt import Sam3Processor, build_sam3_image_model  # noqa: E402
from sam3_trt.assets.images import demo_image  # noqa: E402
from sam3_trt.errors import Sam3TrtError  # noqa: E402
from sam3_trt.runtime.model_builder import ARTIFACTS_ENV  # noqa: E402
from sam3_trt.tolerances import DETECTION_TOLERANCES  # noqa: E402

DETECT_TOLS = DETECTION_TOLERANCES["fp32"]
W, H = 420, 300
PROMPT = "a red square"
#: Keeps some of the 200 queries and drops others on these weights (the README script's 0.05 keeps them all).
THRESHOLD = 0.75


# -- arguments checked before any folder is read (no export needed) -------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"artifacts": "x", "image_size": 1024}, "unknown argument image_size=1024"),
        ({}, f"set {ARTIFACTS_ENV}=DIR"),
        ({"artifacts": "x", "eval_mode": False}, "eval_mode=False"),
        ({"artifacts": "x", "enable_segmentation": False}, "enable_segmentation=False"),
        ({"artifacts": "/nonexistent/sam3"}, "/nonexistent/sam3"),
    ],
)
def test_builder_arguments_get_one_line(monkeypatch, kwargs, words):
    monkeypatch.delenv(ARTIFACTS_ENV, raising=False)
    with pytest.raises(Sam3TrtError, match=re.escape(words)) as info:
        build_sam3_image_model(**kwargs)
    assert "\n" not in str(info.value)


# -- the README script ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image(eager_image_state):
    assert eager_image_state[0].size == (W, H)
    return eager_image_state[0]


@pytest.fixture(scope="module")
def eager_text(eager_interactive, eager_image_state):
    """Upstream's text-prompt results at :data:`THRESHOLD` on the clicked image (its state left as it was)."""
    processor = eager_interactive[1]
    state = eager_image_state[1]
    copy = {**state, "backbone_out": dict(state["backbone_out"])}  # set_text_prompt adds text features there
    with torch.inference_mode():
        processor.confidence_threshold = THRESHOLD
        copy = processor.set_text_prompt(PROMPT, copy)
    processor.confidence_threshold = 0.0
    return {k: copy[k].float().numpy() for k in ("masks", "boxes", "scores")}


@pytest.fixture(scope="module")
def model(tracker_export):
    with build_sam3_image_model(
        device="cpu", load_from_HF=False, enable_inst_interactivity=True, artifacts=tracker_export[0]
    ) as built:
        yield built


def _official_layout(eager_model):
    """The official checkpoint's layout: ``{"model": {"detector.*", "tracker.*"}}`` from the eager weights."""
    own = eager_model.state_dict()
    prefix = "inst_interactive_predictor.model."
    inner = {f"detector.{k}": v for k, v in own.items() if not k.startswith("inst_interactive_predictor.")}
    inner.update({f"tracker.{k[len(prefix) :]}": v for k, v in own.items() if k.startswith(prefix)})
    return {"model": inner}


def _same_detections(label, expected, got):
    """Kept detections of both sides: same count (no reference score near the threshold), then per query."""
    scores = expected["scores"]
    assert not (np.abs(scores - THRESHOLD) <= DETECT_TOLS["threshold_band"]).any(), label
    assert len(got["scores"]) == len(scores), (label, len(got["scores"]), len(scores))
    assert 0 < len(scores) < 200, (label, len(scores))  # the threshold decides something
    assert np.abs(got["scores"] - scores).max() <= DETECT_TOLS["score_max_abs"], label
    assert np.abs(got["boxes"] - expected["boxes"]).max() <= DETECT_TOLS["box_px_max"], label
    ref, cand = expected["masks"].reshape(len(scores), -1) > 0, got["masks"].reshape(len(scores), -1) > 0
    iou = (ref & cand).sum(1) / np.maximum((ref | cand).sum(1), 1)
    assert iou.min() >= DETECT_TOLS["mask_iou_min"], (label, iou)


def test_readme_script_runs_on_the_graphs(model, eager_interactive, eager_image_state, eager_text, image):
    eager_model = eager_interactive[0]
    # the script: weights, device, eval, a processor per request
    assert model.load_state_dict(_official_layout(eager_model)["model"]) == ([], [])
    assert model.load_state_dict(eager_model.state_dict()) == ([], [])  # upstream's own keys too
    assert model.to("cpu") is model and model.eval() is model
    assert model.inst_interactive_predictor is not None
    processor = Sam3Processor(model, confidence_threshold=THRESHOLD)
    assert processor.backend is model.backend and processor.interactive
    state = processor.set_image(image)
    state = processor.set_text_prompt(PROMPT, state)
    got = {k: state[k].float().numpy() for k in ("masks", "boxes", "scores")}
    _same_detections("text prompt", eager_text, got)
    # clicks on the model, with upstream's state
    theirs = eager_image_state[1]
    click = {"point_coords": np.array([[150.0, 120.0]]), "point_labels": np.array([1]), "return_logits": True}
    assert_same_clicks("click", run_eager(eager_model, theirs, **click), model.predict_inst(state, **click))
    # a processor per request: closing one leaves the model's engines to the next
    processor.close()
    again = Sam3Processor(model, confidence_threshold=THRESHOLD)
    assert again.set_text_prompt(PROMPT, again.set_image(image))["scores"].shape == state["scores"].shape


def test_load_state_dict_refuses_other_weights_in_one_line(model, eager_interactive):
    eager_model, _ = eager_interactive
    layout = _official_layout(eager_model)["model"]
    changed = dict(layout)
    key = "detector.transformer.decoder.presence_token_head.layers.2.bias"
    changed[key] = layout[key] + 1e-3
    with pytest.raises(Sam3TrtError, match=re.escape(key.removeprefix("detector."))) as info:
        model.load_state_dict(changed)
    assert "\n" not in str(info.value)
    tracker_key = next(k for k in layout if k.startswith("tracker."))
    changed = {**layout, tracker_key: layout[tracker_key] * 2 + 1}
    with pytest.raises(Sam3TrtError, match="tracker tensor"):
        model.load_state_dict(changed)
    partial = {k: v for k, v in layout.items() if k != key}
    with pytest.raises(Sam3TrtError, match="1 missing"):
        model.load_state_dict(partial)
    assert model.load_state_dict(partial, strict=False).missing_keys == [key.removeprefix("detector.")]
    with pytest.raises(Sam3TrtError, match="1 unexpected"):
        model.load_state_dict({**layout, "detector.extra.weight": torch.zeros(2)})


def test_builder_checks_upstream_arguments_against_the_folder(tracker_export, tmp_path):
    folder = tracker_export[0]
    ckpt = tmp_path / "sam3.pt"
    ckpt.write_bytes(b"not the export's weights")
    with pytest.raises(Sam3TrtError, match=r"checkpoint_path .*: .* came from random weights \(seed 0\)"):
        build_sam3_image_model(checkpoint_path=ckpt, artifacts=folder)
    bpe = tmp_path / "bpe.txt.gz"
    bpe.write_bytes(b"another vocabulary")
    with pytest.raises(Sam3TrtError, match=r"bpe_path .* is not the vocabulary"):
        build_sam3_image_model(bpe_path=bpe, artifacts=folder)
    with build_sam3_image_model(artifacts=folder) as plain:  # no clicks asked: none offered
        assert plain.inst_interactive_predictor is None
        with pytest.raises(Sam3TrtError, match="enable_inst_interactivity=True"):
            plain.predict_inst({}, point_coords=[[1.0, 1.0]], point_labels=[1])


# -- segment-geospatial's SamGeo3, unchanged ------------------------------------------------------------
def _load_samgeo3(monkeypatch, tmp_path):
    """samgeo3.py with stubs for its heavy helpers, as segment-geospatial's tests load it; upstream's builder and
    processor names point at sam3-trt's (the only change a user makes: the imports)."""
    installed = Path(sys.prefix) / "test-clients" / "samgeo"
    if not (installed / "samgeo3.py").is_file():
        pytest.fail(f"{installed}/samgeo3.py missing: run `make install` (requirements/test-clients.txt)")
    src = tmp_path / "samgeo"  # a copy: SamGeo3 writes its tokenizer asset beside its own file
    src.mkdir()
    for name in ("samgeo3.py", "model_registry.py"):
        shutil.copyfile(installed / name, src / name)
    from sam3_trt.assets import bpe_path

    package = types.ModuleType("samgeo")
    package.__path__ = [str(src)]
    common = types.ModuleType("samgeo.common")
    common.get_device = lambda: "cpu"
    common.download_file = lambda url, output, quiet=True: shutil.copyfile(bpe_path(), output)  # no network
    common.show_image = lambda *args, **kwargs: None
    common.prepare_image_for_sam = lambda image, bands=None: np.ascontiguousarray(np.asarray(image)[..., :3])
    package.common = common
    modules = {"cv2": types.ModuleType("cv2"), "samgeo": package, "samgeo.common": common}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    for name in ("model_registry", "samgeo3"):
        spec = importlib.util.spec_from_file_location(f"samgeo.{name}", src / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, f"samgeo.{name}", module)
        spec.loader.exec_module(module)
    monkeypatch.setattr(module, "build_sam3_image_model", sam3_trt.build_sam3_image_model)
    monkeypatch.setattr(module, "MetaSam3Processor", sam3_trt.Sam3Processor)
    monkeypatch.setattr(module, "SAM3_META_AVAILABLE", True)
    return module


def test_segment_geospatial_samgeo3_runs_unchanged(
    monkeypatch, tmp_path, tracker_export, eager_interactive, eager_image_state, eager_text, eager_batch
):
    eager_model = eager_interactive[0]
    samgeo3 = _load_samgeo3(monkeypatch, tmp_path)
    monkeypatch.delenv("SAM3_CHECKPOINT_PATH", raising=False)
    monkeypatch.setenv(ARTIFACTS_ENV, str(tracker_export[0]))
    sam = samgeo3.SamGeo3(backend="meta", device="cpu", enable_inst_interactivity=True, confidence_threshold=THRESHOLD)
    image = np.asarray(demo_image(W, H))
    # text
    sam.set_image(image)
    sam.generate_masks(PROMPT, quiet=True)
    text = {"masks": np.stack(sam.masks), "boxes": np.stack(sam.boxes), "scores": np.asarray(sam.scores)}
    _same_detections("SamGeo3.generate_masks", eager_text, text)
    # clicks
    theirs = eager_image_state[1]
    click = {"point_coords": [[150.0, 120.0], [300.0, 200.0]], "point_labels": [1, 0]}
    expected = run_eager(eager_model, theirs, multimask_output=True, return_logits=True, **click)
    assert_same_clicks("SamGeo3.predict_inst", expected, sam.predict_inst(return_logits=True, **click))
    sam.generate_masks_by_points(click["point_coords"], point_labels=click["point_labels"])
    best = int(np.argmax(expected[1]))  # SamGeo3 keeps the best-scored of the three masks
    decided = np.abs(expected[0][best]) > TOLS["masks"]["max_abs"]
    assert np.array_equal((sam.masks[0] > 0)[decided], (expected[0][best] > 0)[decided])
    # a batch: upstream's batch state, clicks per image, then text per image sliced from it
    images, prompts, _, expected = eager_batch
    sam.set_image_batch([np.asarray(im) for im in images])
    got = sam.predict_inst_batch(**prompts, return_logits=True)
    for i in range(2):
        assert_same_clicks(f"SamGeo3.predict_inst_batch image {i}", [e[i] for e in expected], [g[i] for g in got])
    sam.generate_masks_batch(PROMPT)  # slices our batch state per image, as it slices upstream's
    np.testing.assert_allclose(np.asarray(sam.batch_results[0]["scores"], np.float32), text["scores"], atol=1e-6)
