"""Runtime building blocks that need no model: tokenizer, images, post-processing, artifacts selection."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from sam3_trt.assets import bpe_path
from sam3_trt.device import GpuInfo
from sam3_trt.errors import Sam3TrtError
from sam3_trt.runtime.artifacts import engine_mismatch, resolve_artifacts
from sam3_trt.runtime.image import open_image, preprocess, to_uint8_hwc
from sam3_trt.runtime.postprocess import bilinear_matrix, postprocess
from sam3_trt.runtime.tokenizer import Tokenizer

PROMPTS = [
    "a red square",
    "Blue DISC, left of the tree!",
    "café crème &amp; croissant",
    "日本の赤い車",
    "person 🚲 riding 2 bikes",
    "it's the dog's toy",
    "   lots   of   spaces  ",
]


def test_tokenizer_matches_sam3():
    pytest.importorskip("sam3")
    from sam3.model.tokenizer_ve import SimpleTokenizer

    ours = Tokenizer(bpe_path(), context_length=32)
    theirs = SimpleTokenizer(bpe_path=str(bpe_path()))
    assert ours(PROMPTS).dtype == np.int64
    np.testing.assert_array_equal(ours(PROMPTS), theirs(PROMPTS, context_length=32).numpy())


def test_long_prompt_is_truncated_with_a_warning():
    tok = Tokenizer(bpe_path(), context_length=32)
    with pytest.warns(UserWarning, match="truncated to sam3's context of 32"):
        ids = tok(" ".join(["word"] * 40))
    assert ids.shape == (1, 32) and ids[0, -1] == tok.eot_id and ids[0, 0] == tok.sot_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok("short")


def _upstream_pixels(image):
    pytest.importorskip("torchvision")
    import torch
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.ToDtype(torch.uint8, scale=True),
            v2.Resize(size=(1008, 1008)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        ]
    )  # sam3's Sam3Processor.transform
    return transform(v2.functional.to_image(image)).unsqueeze(0).numpy()


def test_preprocess_is_bit_identical_to_upstreams_with_and_without_torch():
    from sam3_trt.assets.images import demo_image

    img = demo_image(640, 480)
    ref = _upstream_pixels(img)
    np.testing.assert_array_equal(preprocess(img, use_torch=True), ref)
    np.testing.assert_array_equal(preprocess(img, use_torch=False), ref)  # the torch-free resize is torchvision's


@pytest.mark.parametrize(
    "height, width",
    [(480, 640), (37, 53), (1, 1), (1008, 1008), (1008, 500), (300, 2000), (2000, 300), (3000, 4000), (1009, 1007)],
)
def test_torch_free_resize_equals_torchvisions_uint8_antialiased_bilinear(height, width):
    """Up, down, one axis unchanged, a single pixel, near-identity: every output byte equal (Pillow's resize
    differs by up to 2 levels on 3.5 % of the pixels of a 640x480 upscale: another fixed-point precision)."""
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    from sam3_trt.runtime.image import resize_bilinear_aa

    rng = np.random.default_rng(height * 7919 + width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    chw = torch.from_numpy(image).permute(2, 0, 1).contiguous()  # upstream's to_image gives CHW
    expected = v2.functional.resize(chw, [1008, 1008], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    got = resize_bilinear_aa(image, 1008, 1008)
    np.testing.assert_array_equal(got, expected.permute(1, 2, 0).numpy())
    if (height, width) == (480, 640):  # the comparison can fail: Pillow's bilinear is not torchvision's
        pillow = np.asarray(Image.fromarray(image).resize((1008, 1008), Image.Resampling.BILINEAR))
        assert (pillow != got).mean() > 0.01


def test_image_layouts_and_dtypes():
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    assert to_uint8_hwc(rgb).shape == (37, 53, 3)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(to_uint8_hwc(torch.from_numpy(rgb).permute(2, 0, 1)), rgb)
    np.testing.assert_array_equal(to_uint8_hwc(Image.fromarray(rgb)), rgb)
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(to_uint8_hwc(gray), np.repeat(gray[:, :, None], 3, 2))
    np.testing.assert_array_equal(to_uint8_hwc(Image.fromarray(gray, "L")), np.repeat(gray[:, :, None], 3, 2))
    rgba = np.concatenate([rgb, np.full((37, 53, 1), 7, np.uint8)], 2)
    np.testing.assert_array_equal(to_uint8_hwc(rgba), rgb)
    sixteen = rgb.astype(np.uint16) * 257  # full 16-bit range, scaled back exactly
    np.testing.assert_array_equal(to_uint8_hwc(sixteen), rgb)
    pil16 = Image.fromarray(sixteen[:, :, 0].astype(np.uint16))
    np.testing.assert_array_equal(to_uint8_hwc(pil16)[:, :, 0], rgb[:, :, 0])
    floats = rgb.astype(np.float32) / 255.0
    np.testing.assert_array_equal(to_uint8_hwc(floats), rgb)
    assert preprocess(np.zeros((1, 1, 3), np.uint8)).shape == (1, 3, 1008, 1008)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 5, 3), np.uint8), "image is empty"),
        (np.full((4, 4, 3), 2.0, np.float32), r"float image values span \[2, 2\]"),
        (np.zeros((4, 4, 3), np.int8), "dtype int8 is not supported"),
        (np.zeros((4, 4, 7), np.uint8), "expected HxW or HxWxC"),
        ("not an image", "must be a PIL image, a numpy array or a torch tensor"),
    ],
)
def test_bad_images_are_rejected(image, message):
    with pytest.raises(Sam3TrtError, match=message):
        to_uint8_hwc(image)


def test_unreadable_image_files(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(Sam3TrtError, match=r"cannot read image .*broken.png"):
        open_image(bad)
    with pytest.raises(Sam3TrtError, match="image not found"):
        open_image(tmp_path / "missing.jpg")


def test_numpy_postprocess_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits = rng.normal(size=200).astype(np.float32)
    boxes = rng.uniform(0.1, 0.5, size=(200, 4)).astype(np.float32)
    presence = np.array([0.3], np.float32)
    masks = rng.normal(size=(200, 288, 288)).astype(np.float32) * 5
    for height, width, threshold in ((480, 640, 0.4), (100, 50, 0.45), (5, 7, 2.0)):
        a = postprocess(logits, boxes, presence, masks, height, width, threshold)
        b = postprocess(*(torch.from_numpy(x) for x in (logits, boxes, presence, masks)), height, width, threshold)
        assert a["masks_logits"].shape == tuple(b["masks_logits"].shape) == (len(a["scores"]), 1, height, width)
        assert a["masks"].dtype == bool and b["masks"].dtype == torch.bool
        # torch-free path: separable matmuls instead of torch's 4-tap kernel; noise masks (|logit| ~ 20) are the worst case
        np.testing.assert_allclose(a["masks_logits"], b["masks_logits"].numpy(), atol=1e-4)
        np.testing.assert_allclose(a["boxes"], b["boxes"].numpy(), atol=1e-4)
        np.testing.assert_allclose(a["scores"], b["scores"].numpy(), atol=1e-6)


def test_threshold_is_strictly_greater():
    def kept(threshold):
        # sigmoid(0) * sigmoid(0) = 0.25 exactly for every query
        zeros = np.zeros(200, np.float32)
        boxes, presence, masks = (
            np.full((200, 4), 0.5, np.float32),
            np.zeros(1, np.float32),
            np.zeros((200, 8, 8), np.float32),
        )
        return len(postprocess(zeros, boxes, presence, masks, 4, 4, threshold)["scores"])

    assert kept(0.25) == 0
    assert kept(0.2499) == 200


def test_max_detections_keeps_the_best_scores_in_query_order_before_upsampling():
    torch = pytest.importorskip("torch")
    from sam3_trt.runtime.postprocess import select_queries

    logits = np.array([0.5, 3.0, -1.0, 2.0, 3.0, 1.0, -4.0, 2.5], np.float32)  # a tie at 3.0 (queries 1 and 4)
    presence = np.array([2.0], np.float32)
    boxes = np.tile(np.array([0.5, 0.5, 0.2, 0.2], np.float32), (8, 1))
    masks = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((8, 4, 4), np.float32)  # row i holds i
    for as_torch in (False, True):
        args = [torch.from_numpy(x) for x in (logits, presence)] if as_torch else [logits, presence]
        keep, scores, total = select_queries(*args, 0.5, max_detections=3)
        assert [int(i) for i in keep] == [1, 4, 7] and total == 6  # 0.5 < score for queries 0, 1, 3, 4, 5, 7
        want = 1 / (1 + np.exp(-logits[[1, 4, 7]])) / (1 + np.exp(-2.0))  # those queries' scores, in query order
        np.testing.assert_allclose(np.asarray(scores), want, rtol=1e-6)
        keep, _, total = select_queries(*args, 0.5)
        assert [int(i) for i in keep] == [0, 1, 3, 4, 5, 7] and total == 6
    full = postprocess(logits, boxes, presence, masks, 6, 6, 0.5)
    top = postprocess(logits, boxes, presence, masks, 6, 6, 0.5, max_detections=3)
    # the upsampled masks are the kept rows' (row i is the constant i): queries 1, 4, 7
    assert np.allclose(top["masks_logits"][:, 0, 0, 0], 1 / (1 + np.exp(-np.array([1.0, 4.0, 7.0]))))
    np.testing.assert_array_equal(top["scores"], full["scores"][[1, 3, 5]])


def test_bilinear_rows_sum_to_one():
    for out_size, in_size in ((480, 288), (3, 288), (288, 288)):
        np.testing.assert_allclose(bilinear_matrix(out_size, in_size).sum(1), 1.0, rtol=1e-6)


GPU_89 = GpuInfo(True, ("NVIDIA GeForce RTX 4090",), ((8, 9),), 13000, 13000, "test")
NO_GPU = GpuInfo(False, reason="cudaGetDeviceCount: cudaErrorInsufficientDriver")


def _engine_dir(root, name, sm, version="1.7.1.116", flavour="rtx", **extra):
    folder = root / name
    folder.mkdir()
    manifest = {
        "format": 1,
        "kind": "engines",
        "flavour": flavour,
        "trt_version": version,
        "compute_capabilities": [sm],
        **extra,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_engine_mismatch_messages():
    m = {"flavour": "rtx", "trt_version": "1.7.1.116", "compute_capabilities": ["sm89"]}
    assert engine_mismatch(m, GPU_89, "1.7.1.116") is None
    assert "sm120" in engine_mismatch({**m, "compute_capabilities": ["sm120"]}, GPU_89, "1.7.1.116")
    assert "1.8.0 is installed" in engine_mismatch(m, GPU_89, "1.8.0")
    assert "not installed" in engine_mismatch(m, GPU_89, None)
    assert "no usable GPU" in engine_mismatch(m, NO_GPU, "1.7.1.116")
    ampere_plus = {
        **m,
        "flavour": "tensorrt",
        "compute_capabilities": ["sm80"],
        "hardware_compatibility": "ampere_plus",
    }
    assert engine_mismatch(ampere_plus, GPU_89, "1.7.1.116") is None


def test_engine_parent_folder_picks_the_matching_gpu(tmp_path, monkeypatch):
    from sam3_trt.runtime import artifacts

    monkeypatch.setattr(artifacts, "installed_trt_version", lambda flavour: "1.7.1.116")
    _engine_dir(tmp_path, "5090", "sm120")
    _engine_dir(tmp_path, "4090", "sm89")
    assert resolve_artifacts(tmp_path, gpu=GPU_89).folder.name == "4090"
    with pytest.raises(
        Sam3TrtError,
        match=r"no engine folder in .* runs here \(4090: .*no usable GPU.*sam3-trt build --gpu auto --onnx-dir EXPORT",
    ):
        resolve_artifacts(tmp_path, gpu=NO_GPU)


def test_missing_artifacts_are_clear_errors(tmp_path):
    with pytest.raises(Sam3TrtError, match="does not exist"):
        resolve_artifacts(tmp_path / "nope")
    with pytest.raises(Sam3TrtError, match=r"no manifest.json and no engine folders"):
        resolve_artifacts(tmp_path)
