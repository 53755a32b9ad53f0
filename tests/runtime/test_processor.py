"""sam3_trt.Sam3Processor over the tiny ONNX export against upstream eager Sam3Processor."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam3")

from sam3_trt import Sam3Processor  # noqa: E402
from sam3_trt.assets.images import demo_image  # noqa: E402
from sam3_trt.checks.detection_parity import (  # noqa: E402
    DEFAULT_CASES,
    compare_detections,
    keeping_threshold,
    run_case,
    run_detection_parity,
    upstream_processor,
)
from sam3_trt.errors import Sam3TrtError  # noqa: E402


@pytest.fixture(scope="module")
def processor(tiny_export):
    out, _ = tiny_export
    with Sam3Processor(out, backend="onnxruntime") as proc:
        yield proc


@pytest.fixture(scope="module")
def image():
    return demo_image(640, 480)


def test_detection_parity_against_upstream(tiny_model, processor, image):
    model, origin = tiny_model
    report = run_detection_parity(model, processor, [image], origin.describe(), "onnxruntime")
    assert report.passed, [c.describe() for c in report.cases if not c.passed]
    labels = {c.case for c in report.cases}
    assert labels == {f"image0:{label}" for label, _, _ in DEFAULT_CASES}
    thresholds = [c for c in report.cases if c.threshold > 0]
    assert thresholds and all(c.reference_kept >= 10 for c in thresholds)  # compares real detections
    assert all(c.reference_kept == 200 for c in report.cases if c.threshold == 0.0)


def test_parity_check_can_fail(tiny_model, processor, image):
    model, _ = tiny_model
    with upstream_processor(model) as reference:
        results = run_case(reference, processor, image, "a red square", [])
    results["candidate"]["boxes"] = results["candidate"]["boxes"] + 1.0  # one pixel off
    case = compare_detections("perturbed", results, 0.0, processor)
    assert not case.passed and any("boxes differ" in f for f in case.failures)
    results["candidate"]["scores"][3] = 0.99  # a query kept by one side only
    case = compare_detections("perturbed", results, keeping_threshold(results["reference"]["scores"]), processor)
    assert any("kept sets differ" in f for f in case.failures)


def _user_script(processor_factory, image):
    """Code written against upstream's Sam3Processor: only the construction differs."""
    processor = processor_factory()
    inference_state = processor.set_image(image)
    output = processor.set_text_prompt(state=inference_state, prompt="a red square")
    masks, boxes, scores = output["masks"], output["boxes"], output["scores"]
    summary = [masks.shape, boxes.shape, scores.numel(), masks.squeeze(1).cpu().numpy().dtype]
    if scores.numel():
        summary.append(round(scores[0].item(), 3))
    processor.add_geometric_prompt([0.3, 0.35, 0.25, 0.3], True, inference_state)
    processor.reset_all_prompts(inference_state)
    summary.append(sorted(k for k in ("masks", "boxes", "scores") if k in inference_state))
    return summary


def test_unchanged_user_script_runs(tiny_model, tiny_export, image):
    model, _ = tiny_model
    out, _ = tiny_export
    from sam3_trt.export.patches import cpu_compat

    with cpu_compat():
        from sam3.model.sam3_image_processor import Sam3Processor as Upstream

        theirs = _user_script(lambda: Upstream(model, device="cpu", confidence_threshold=0.2), image)
    ours = _user_script(lambda: Sam3Processor(out, confidence_threshold=0.2), image)
    assert ours == theirs


def test_caching_counts_graph_calls(processor, image):
    calls = processor.backend.calls
    before = dict(calls)
    state = processor.set_image(image)
    processor.set_text_prompt("blue disc", state)
    processor.set_text_prompt("green triangle", state)  # second prompt: no vision encoder
    processor.set_text_prompt("blue disc", state)  # repeated prompt: no text encoder
    assert calls["vision_encoder"] - before["vision_encoder"] == 1
    assert calls["text_encoder"] - before["text_encoder"] <= 2
    assert calls["decoder"] - before["decoder"] == 3
    text_before = calls["text_encoder"]
    processor.set_text_prompt("blue disc", state)
    assert calls["text_encoder"] == text_before


def test_batched_prompts_equal_one_by_one(processor, image):
    processor.set_confidence_threshold(0.0)
    state = processor.set_image(image)
    prompts = ["a red square", "blue disc", "green triangle"]
    batched = processor.set_text_prompts(prompts, state)
    for prompt, result in zip(prompts, batched, strict=True):
        single = processor.set_text_prompt(prompt, state)
        assert result["prompt"] == prompt
        for key in ("masks_logits", "boxes", "scores"):
            assert (result[key] - single[key]).abs().max().item() <= 1e-4, (prompt, key)


def test_prompt_state_semantics(processor, image):
    processor.set_confidence_threshold(0.0)
    state = processor.set_image(image)
    processor.add_geometric_prompt([0.3, 0.35, 0.25, 0.3], True, state)
    assert state.get("text_prompt") is None  # "visual" stands in without being stored
    processor.add_geometric_prompt([0.7, 0.5, 0.2, 0.2], False, state)
    assert len(state["geometric_prompt"]) == 2  # boxes accumulate
    processor.set_text_prompt("blue disc", state)
    assert len(state["geometric_prompt"]) == 2  # the text keeps earlier boxes
    processor.reset_all_prompts(state)
    assert not {"text_prompt", "geometric_prompt", "masks", "boxes", "scores", "masks_logits"} & set(state)
    assert "backbone_out" in state  # the image stays encoded


def test_set_confidence_threshold_rethresholds_without_running(processor, image):
    processor.set_confidence_threshold(0.0)
    state = processor.set_text_prompt("a red square", processor.set_image(image))
    scores = state["scores"].clone()
    decoder_calls = processor.backend.calls["decoder"]
    t = keeping_threshold(scores.numpy())
    processor.set_confidence_threshold(t, state)
    assert processor.confidence_threshold == t
    assert torch.equal(state["scores"], scores[scores > t])
    assert state["masks"].shape[0] == state["boxes"].shape[0] == int((scores > t).sum())
    assert processor.backend.calls["decoder"] == decoder_calls


def test_set_image_batch_states_all_take_prompts(processor):
    images = [demo_image(640, 480, variant=i) for i in range(2)] + [np.asarray(demo_image(320, 200, variant=2))]
    states = processor.set_image_batch(images)
    assert len(states) == 3
    processor.set_confidence_threshold(0.0)
    for img, state in zip(images, states, strict=True):
        single = processor.set_text_prompt("blue disc", processor.set_image(img))
        batched = processor.set_text_prompt("blue disc", state)
        assert (batched["original_height"], batched["original_width"]) == np.asarray(img).shape[:2]
        assert (batched["masks_logits"] - single["masks_logits"]).abs().max().item() <= 1e-4


def test_odd_but_valid_input(processor):
    processor.set_confidence_threshold(0.0)
    from PIL import Image

    for img in (
        Image.fromarray(np.full((30, 40), 128, np.uint8), "L"),
        Image.fromarray(np.full((30, 40, 4), 90, np.uint8), "RGBA"),
        np.full((30, 40, 3), 40000, np.uint16),
        np.zeros((1, 1, 3), np.uint8),
    ):
        state = processor.set_text_prompt("ünïcødé 車 🚗", processor.set_image(img))
        h, w = np.asarray(img).shape[:2]
        assert state["masks"].shape == (200, 1, h, w)


def test_bad_input_is_rejected_and_changes_no_state(processor, image, tiny_export):
    with pytest.raises(Sam3TrtError, match="call set_image"):
        processor.set_text_prompt("cat", {})
    state = processor.set_text_prompt("a red square", processor.set_image(image))
    snapshot = {k: (v.clone() if hasattr(v, "clone") else v) for k, v in state.items() if k in ("scores", "boxes")}
    keys = set(state)
    bad_calls = [
        (lambda: processor.set_text_prompt("", state), "text prompt is empty"),
        (lambda: processor.set_text_prompt(None, state), "must be a string"),
        (lambda: processor.add_geometric_prompt([0.5, float("nan"), 0.2, 0.2], True, state), "NaN"),
        (lambda: processor.add_geometric_prompt([0.5, 0.5, -0.2, 0.2], True, state), "inverted or zero-area"),
        (lambda: processor.add_geometric_prompt([0.5, 0.5, 0.0, 0.2], True, state), "inverted or zero-area"),
        (lambda: processor.add_geometric_prompt([0.95, 0.5, 0.2, 0.2], True, state), "inside the image"),
        (lambda: processor.add_geometric_prompt([0.5, 0.5, 0.2], True, state), "4 numbers"),
        (lambda: processor.add_geometric_prompt([0.5, 0.5, 0.2, 0.2], "yes", state), "True .positive. or False"),
        (lambda: processor.set_image(np.zeros((0, 3, 3), np.uint8), state), "image is empty"),
        (lambda: processor.set_confidence_threshold(float("nan"), state), r"nan is outside \[0, 1\]"),
        (lambda: processor.set_confidence_threshold(2, state), r"2 is outside \[0, 1\]: scores are probabilities"),
        (lambda: processor.set_confidence_threshold(-1, state), r"-1 is outside \[0, 1\]"),
    ]
    for call, message in bad_calls:
        with pytest.raises(Sam3TrtError, match=message):
            call()
        assert set(state) == keys
        for k, v in snapshot.items():
            assert torch.equal(state[k], v), (message, k)
    with pytest.raises(ValueError):  # upstream-compatible exception type
        processor.set_text_prompt("", state)
    with pytest.raises(Sam3TrtError, match=r"1.5 is outside \[0, 1\]"):
        Sam3Processor(tiny_export[0], confidence_threshold=1.5)
    with pytest.raises(Sam3TrtError, match="resolution=1024"):
        Sam3Processor(tiny_export[0], resolution=1024)
    with pytest.raises(Sam3TrtError, match="build engines first"):
        Sam3Processor(tiny_export[0], backend="tensorrt")


def test_truncated_graph_is_a_clear_error(tiny_export, tmp_path, image):
    import shutil

    out, _ = tiny_export
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    data = (broken / "decoder.onnx").read_bytes()
    (broken / "decoder.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(Sam3TrtError, match=rf"decoder: .*decoder.onnx has {len(data) // 3} bytes, its manifest says"):
        Sam3Processor(broken)  # checked before anything loads
    proc = Sam3Processor(broken, verify=False)
    state = proc.set_image(image)  # vision graph is intact
    with pytest.raises(Sam3TrtError, match=r"decoder.onnx .*truncated or corrupt"):
        proc.set_text_prompt("cat", state)


def test_runtime_checks_the_manifest_and_remembers_what_it_hashed(tiny_export, tmp_path, image):
    import json
    import shutil

    from sam3_trt.manifest import STAMP_FILE

    out, _ = tiny_export
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    (folder / STAMP_FILE).unlink(missing_ok=True)
    Sam3Processor(folder).close()
    stamp = json.loads((folder / STAMP_FILE).read_text())
    assert {"vision_encoder.onnx.data", "decoder.onnx", "bpe_simple_vocab_16e6.txt.gz"} <= set(stamp)
    # an edited manifest sha256 is refused by the runtime too, not only by build and fp16
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["graphs"]["text_encoder"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Sam3TrtError, match=r"text_encoder: .*text_encoder.onnx does not match its manifest sha256"):
        Sam3Processor(folder)
    # a truncated external-data file is named as such
    (folder / "manifest.json").write_text(
        json.dumps({**manifest, "graphs": json.loads((out / "manifest.json").read_text())["graphs"]})
    )
    data = folder / "decoder.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(
        Sam3TrtError, match=r"decoder: .*decoder.onnx.data has 1000 bytes, its manifest says .*sam3-trt export"
    ):
        Sam3Processor(folder)


def test_threads_share_one_processor(processor):
    processor.set_confidence_threshold(0.0)
    images = [demo_image(320, 240, variant=i) for i in range(3)]
    expected = [processor.set_text_prompt("blue disc", processor.set_image(im))["scores"] for im in images]
    got: dict[int, torch.Tensor] = {}

    def work(i):
        got[i] = processor.set_text_prompt("blue disc", processor.set_image(images[i]))["scores"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        assert torch.equal(got[i], expected[i])


def test_close_frees_the_backend(tiny_export, image):
    with Sam3Processor(tiny_export[0]) as proc:
        proc.set_image(image)
    with pytest.raises(Sam3TrtError, match="closed"):
        proc.set_image(image)


class _ReusingBackend:
    """ONNX Runtime made to behave like TensorRT: every run writes into the same output arrays."""

    @staticmethod
    def make(folder, reuses: bool):
        from sam3_trt.runtime.backends import OnnxRuntimeBackend

        class Reusing(OnnxRuntimeBackend):
            reuses_outputs = reuses

            def _run(self, graph, feeds, sizes):
                out = super()._run(graph, feeds, sizes)
                held = self.__dict__.setdefault("held", {})
                if graph in held and all(held[graph][k].shape == v.shape for k, v in out.items()):
                    for k, v in out.items():
                        np.copyto(held[graph][k], v)
                else:
                    held[graph] = out
                return held[graph]

        return Reusing(folder)


@pytest.mark.parametrize("reuses", [True, False])
def test_kept_features_survive_backends_that_reuse_output_buffers(tiny_export, reuses):
    """Image features, cached text features and raw outputs are copied exactly when the backend reuses buffers."""
    out, _ = tiny_export
    with Sam3Processor(out, backend=_ReusingBackend.make(out, reuses)) as proc:
        proc.set_confidence_threshold(0.0)
        state_a = proc.set_image(demo_image(640, 480, variant=0))
        first = proc.set_text_prompt("blue disc", state_a)["masks_logits"].clone()
        state_b = proc.set_image(demo_image(480, 640, variant=1))  # overwrites the vision buffers
        proc.set_text_prompt("green triangle", state_b)  # and the text and decoder buffers
        again = proc.set_text_prompt("blue disc", state_a)["masks_logits"]
        if reuses:  # copied: state A and the text cache still hold their own values
            assert (again - first).abs().max().item() <= 1e-6
        else:  # this fake backend lies about reuse: state A now reads image B's features
            assert again.shape != first.shape or (again - first).abs().max().item() > 1e-3
