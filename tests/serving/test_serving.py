"""Serving without a server: RLE, the request checks, the inference callable against a direct processor call,
the Triton model repository and its Python-backend model (through a double of Triton's BLS API)."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from sam3_trt.errors import Sam3TrtError
from sam3_trt.rle import compress_counts, decompress_counts, mask_to_compressed_rle, mask_to_rle, rle_to_mask
from sam3_trt.serving.client import build_inputs, decode_outputs
from sam3_trt.serving.contract import INPUTS, OUTPUTS
from sam3_trt.serving.handler import MAX_DETECTIONS, Sam3Handler, ServeLimits, parse_request


def _png(width: int = 320, height: int = 240) -> bytes:
    from sam3_trt.assets.images import demo_image

    buf = io.BytesIO()
    demo_image(width, height).save(buf, format="PNG")
    return buf.getvalue()


def test_compressed_rle_matches_pycocotools_and_round_trips():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for trial in range(200):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if trial % 7 == 0:
            mask[:] = trial % 2  # all-empty and all-full masks
        ours = mask_to_compressed_rle(mask)
        assert ours["counts"] == mask_api.encode(np.asfortranarray(mask))["counts"].decode(), trial
        np.testing.assert_array_equal(rle_to_mask(ours), mask.astype(bool))
        np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask)), mask.astype(bool))
        assert decompress_counts(compress_counts(mask_to_rle(mask)["counts"])) == mask_to_rle(mask)["counts"]
    for bad, why in (("0~", "outside COCO"), ("P", "truncated")):
        with pytest.raises(Sam3TrtError, match=why):
            decompress_counts(bad)
    with pytest.raises(Sam3TrtError, match="add up"):
        rle_to_mask({"size": [2, 2], "counts": [1, 1]})


def _request(**overrides):
    inputs = build_inputs(_png(), ["red square"])
    for name, value in overrides.items():
        if value is None:
            inputs.pop(name, None)
        else:
            inputs[name] = value
    return inputs


BAD_REQUESTS = {
    "corrupt image": (dict(image=np.array([[b"\x89PNG\r\n garbage"]], dtype=np.object_)), "input image"),
    "empty image": (dict(image=np.array([[b""]], dtype=np.object_)), "input image is empty"),
    "image not bytes": (dict(image=np.array([[3.0]], dtype=np.float32)), "input image"),
    "too many pixels": ("limits", "--max-image-pixels"),
    "no prompt no box": (dict(prompts=None), "no prompts and no boxes"),
    "10000 prompts": (dict(prompts=np.array([[b"cat"] * 10_000], dtype=np.object_)), "--max-prompts 64"),
    "empty prompt": (dict(prompts=np.array([[b"  "]], dtype=np.object_)), "prompts[0] is empty"),
    "non-UTF-8 prompt": (dict(prompts=np.array([[b"\xff\xfe"]], dtype=np.object_)), "prompts[0] is not valid UTF-8"),
    "NaN box": (dict(boxes=np.array([[[10, np.nan, 50, 60]]], np.float32)), "y0 is not a finite number"),
    "box outside": (dict(boxes=np.array([[[10, 10, 500, 60]]], np.float32)), "lies outside the 320x240 image"),
    "inverted box": (dict(boxes=np.array([[[50, 10, 10, 60]]], np.float32)), "x1 > x0"),
    "float64 boxes": (dict(boxes=np.array([[[10, 10, 50, 60]]], np.float64)), "send float32 [N, 4]"),
    "labels mismatch": (
        dict(boxes=np.array([[[1, 1, 9, 9], [2, 2, 8, 8]]], np.float32), box_labels=np.array([[True]])),
        "one per box",
    ),
    "labels alone": (dict(box_labels=np.array([[True]])), "without boxes"),
    "NaN threshold": (dict(threshold=np.array([[np.nan]], np.float32)), "threshold"),
    "threshold 2": (dict(threshold=np.array([[2.0]], np.float32)), "outside [0, 1]"),
    "bad mask format": (dict(mask_format=np.array([[b"png"]], dtype=np.object_)), "rle, bitmask"),
    "batch of 2": (dict(image=np.array([[b"a"], [b"b"]], dtype=np.object_)), "batch size 2"),
    "unknown input": (dict(pointz=np.zeros((1, 2), np.float32)), "unknown input"),
    "max_detections 0": (dict(max_detections=np.array([[0]], np.int32)), "send 1 to this server's --max-detections"),
    "max_detections over the cap": (dict(max_detections=np.array([[101]], np.int32)), "--max-detections 100"),
    "max_detections float": (dict(max_detections=np.array([[5.0]], np.float32)), "send int32 [1]"),
    "bitmask over the cap": (
        dict(mask_format=np.array([[b"bitmask"]], dtype=np.object_), max_detections=np.array([[14]], np.int32)),
        "over this server's --max-bitmask-mb 1: ask for 'rle'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_is_one_line_naming_the_input(case):
    overrides, expected = BAD_REQUESTS[case]
    limits = ServeLimits()
    if overrides == "limits":
        overrides, limits = {}, ServeLimits(max_image_pixels=320 * 240 - 1)
    if case == "bitmask over the cap":  # 14 masks of 320x240 bytes: 1.03 MB
        limits = ServeLimits(max_bitmask_mb=1)
    with pytest.raises(Sam3TrtError) as info:
        parse_request(_request(**overrides), limits)
    message = str(info.value)
    assert expected in message and "\n" not in message, message


def test_bitmask_cap_counts_the_masks_a_click_returns():
    """Clicks return 1 mask, or 3 with multimask: the bitmask cap counts those (a text request counts its
    max_detections), with the same one line."""
    png = _png(1200, 1000)  # 1.14 MB a mask
    limits = ServeLimits(max_bitmask_mb=2)
    single = build_inputs(png, points=[[5.0, 6.0]], mask_format="bitmask")
    assert parse_request(single, limits, clicks=True).mask_format == "bitmask"
    with pytest.raises(Sam3TrtError) as info:
        parse_request(
            build_inputs(png, points=[[5.0, 6.0]], mask_format="bitmask", multimask=True), limits, clicks=True
        )
    line = str(info.value)
    assert "3 masks of 1200x1000 could take 3 MB, over this server's --max-bitmask-mb 2: ask for 'rle'" in line
    assert "\n" not in line
    with pytest.raises(Sam3TrtError, match=r"2 masks of 1200x1000 could take 2 MB.*or a smaller max_detections"):
        parse_request(build_inputs(png, ["cat"], mask_format="bitmask", max_detections=2), limits)


def test_triton_counters_are_read_per_model_and_summarised_between_two_reads():
    from sam3_trt.serving.metrics import parse_counters, summarize

    def text(success, execs, count, queue_us, infer_us):
        return "\n".join([
            "# HELP nv_inference_request_success Number of successful inference requests, all batch sizes",
            "# TYPE nv_inference_request_success counter",
            f'nv_inference_request_success{{model="sam3",version="1"}} {success}',
            'nv_inference_request_success{model="other",version="1"} 999',
            f'nv_inference_exec_count{{model="sam3",version="1"}} {execs}',
            f'nv_inference_count{{model="sam3",version="1"}} {count}',
            f'nv_inference_queue_duration_us{{model="sam3",version="1"}} {queue_us}',
            f'nv_inference_compute_infer_duration_us{{model="sam3",version="1"}} {infer_us}',
            f'nv_inference_request_duration_us{{model="sam3",version="1"}} {queue_us + infer_us + 100}',
            'nv_gpu_utilization{gpu_uuid="GPU-0"} 0.5',
        ])  # fmt: skip

    before = parse_counters(text(10, 8, 10, 5000, 80000), "sam3")
    assert before["nv_inference_request_success"] == 10 and before["nv_inference_request_failure"] == 0
    after = parse_counters(text(26, 12, 26, 21000, 240000), "sam3")
    got = summarize(before, after)
    # 16 requests in 4 executions: batches of 4; 16 ms queued and 160 ms computed over 16 requests
    assert got == {"requests": 16, "failures": 0, "executions": 4, "mean_batch": 4.0, "request_ms": 11.0,
                   "queue_ms": 1.0, "compute_ms": 10.0}  # fmt: skip
    assert summarize(after, after)["mean_batch"] is None and summarize(after, after)["queue_ms"] is None


def test_limits_and_contract_are_checked():
    with pytest.raises(Sam3TrtError, match="--max-prompts 0"):
        ServeLimits(max_prompts=0).check()
    # the contract against an independent producer: what the client sends is what the server declares
    sent = build_inputs(
        _png(), ["cat"], [[1, 1, 9, 9]], [False], threshold=0.3, mask_format="bitmask", max_detections=5
    )
    clicks = build_inputs(_png(), points=[[5.0, 6.0]], point_labels=[0], multimask=True)  # the click inputs
    assert set(sent) | set(clicks) == {t.name for t in INPUTS}
    for t in INPUTS:
        value = sent.get(t.name, clicks.get(t.name))
        assert value.dtype == np.dtype(t.dtype) and value.ndim == len(t.shape) + 1, t.name
    read = parse_request(sent, ServeLimits())  # and the server reads all of it
    assert (read.mask_format, read.max_detections, read.threshold) == ("bitmask", 5, pytest.approx(0.3))
    read = parse_request(clicks, ServeLimits(), clicks=True)
    assert (read.points.tolist(), read.point_labels.tolist(), read.multimask) == ([[5.0, 6.0]], [0], True)


@pytest.fixture(scope="module")
def processor(tiny_export):
    from sam3_trt import Sam3Processor

    out, _ = tiny_export
    with Sam3Processor(out, backend="onnxruntime", threads=2) as proc:
        yield proc


def _direct(processor, png: bytes, prompts, pixel_boxes=(), threshold=0.3):
    """What a direct Sam3Processor call on the same input gives."""
    from PIL import Image

    from sam3_trt.runtime.segment import detect, pixel_box_to_prompt

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    h, w = image.shape[:2]
    boxes = [(pixel_box_to_prompt(b, w, h, "box"), True) for b in pixel_boxes]
    processor.set_confidence_threshold(threshold)
    return detect(processor, processor.set_image(image), prompts, boxes, max_detections=MAX_DETECTIONS).detections


#: Served vs direct results. "same process": the handler over the processor it is compared with (only float32
#: transport and RLE in between). "other runtime": the repository's graphs in a plain ONNX Runtime session, as
#: Triton's onnxruntime backend runs them, vs the processor's session with its fused CPU attention.
SERVED_TOLERANCES = {
    "same process": {"score_abs": 1e-6, "box_abs_px": 1e-3, "mask_pixels_differing": 0.0},
    "other runtime": {"score_abs": 1e-4, "box_abs_px": 0.05, "mask_pixels_differing": 1e-3},
    # serve's venv has no torch: the image is resized by the numpy path (torchvision's bytes, so the graphs see
    # the same input) and masks upsampled by numpy's matrices where the direct call here uses torch's
    "torch-free server": {"score_abs": 1e-6, "box_abs_px": 1e-3, "mask_pixels_differing": 1e-4},
}


def _same(served, direct, tolerance="same process"):
    tol = SERVED_TOLERANCES[tolerance]
    assert len(served) == len(direct) > 0
    for a, b in zip(served, direct, strict=True):
        assert (a["prompt"], a["prompt_index"]) == (b["prompt"], b["prompt_index"])
        assert a["score"] == pytest.approx(b["score"], abs=tol["score_abs"])
        np.testing.assert_allclose(a["box"], b["box"], atol=tol["box_abs_px"])
        differing = np.mean(a["mask"] != np.asarray(b["mask"], bool))
        assert differing <= tol["mask_pixels_differing"], differing


def test_handler_batch_equals_direct_calls_and_isolates_a_bad_request(processor):
    handler = Sam3Handler(processor)
    png = _png()
    prompts = ["red square", "blue disc"]
    good = build_inputs(png, prompts, [[20, 20, 200, 150]], threshold=0.3)
    boxes_only = build_inputs(png, (), [[20, 20, 200, 150]], threshold=0.2, mask_format="bitmask")
    bad = build_inputs(b"not an image", ["cat"])
    vision_before, text_before = processor.backend.calls["vision_encoder"], processor.backend.calls["text_encoder"]
    processor.clear_text_cache()
    responses = handler([good, bad, boxes_only])
    # one vision batch for the two valid images; the text encoder once for the two prompts (+ "visual")
    assert processor.backend.calls["vision_encoder"] - vision_before == 1
    assert processor.backend.calls["text_encoder"] - text_before == 2
    for response in responses:
        assert set(response) == {t.name for t in OUTPUTS}
        for spec in OUTPUTS:
            value = response[spec.name]
            assert value.dtype == np.dtype(spec.dtype) and value.ndim == len(spec.shape) + 1 and value.shape[0] == 1
            assert value.size > 0, spec.name  # PyTriton cannot carry zero-size tensors
    assert b"not a readable image" in responses[1]["error"][0, 0] and responses[1]["num_detections"][0, 0] == 0
    assert decode_outputs(responses[1] | {"error": np.array([[b""]], np.object_)}) == []
    with pytest.raises(Sam3TrtError, match="server refused the request: input image"):
        decode_outputs(responses[1])
    _same(decode_outputs(responses[0], prompts), _direct(processor, png, prompts, [[20, 20, 200, 150]], 0.3))
    _same(decode_outputs(responses[2], (), "bitmask"), _direct(processor, png, (), [[20, 20, 200, 150]], 0.2))
    # a repeated prompt in a later request comes from the text cache
    handler([build_inputs(png, ["blue disc"], threshold=0.3)])
    assert processor.backend.calls["text_encoder"] - text_before == 2


class _RecordingProcessor:
    """Records the shapes a handler runs (no model): what ``warm_up`` must reach."""

    def __init__(self):
        self.image_batches, self.prompt_batches, self.cleared = [], [], 0

    def set_image_batch(self, images):
        self.image_batches.append(len(images))
        return [{} for _ in images]

    def set_text_prompts(self, prompts, state, full_masks=True, max_detections=None):
        self.prompt_batches.append(len(prompts))
        empty = {"low_res_masks": np.zeros((0, 2, 2)), "boxes": np.zeros((0, 4)), "scores": np.zeros(0)}
        return [{"prompt": p, "best_score": 0.0, "detections_total": 0, **empty} for p in prompts]

    def clear_text_cache(self):
        self.cleared += 1


@pytest.mark.parametrize(("max_prompts", "largest"), [(64, 16), (3, 3)])  # 16: the decoder profile's P max
def test_warm_up_runs_the_largest_batch_and_forgets_its_prompts(max_prompts, largest):
    proc = _RecordingProcessor()
    Sam3Handler(proc, ServeLimits(max_prompts=max_prompts)).warm_up(4)
    assert proc.image_batches == [4]
    assert proc.prompt_batches == [largest]
    assert proc.cleared == 1


def test_triton_repo_refusals(tiny_export, tmp_path):
    from sam3_trt.serving.triton_repo import RepoOptions, write_repo

    out, _ = tiny_export
    repo = tmp_path / "repo"
    summary = write_repo(RepoOptions(out, repo, cpu=True))
    assert summary["platform"] == "onnxruntime_onnx"
    assert sorted(p.name for p in repo.iterdir()) == ["decoder", "sam3", "text_encoder", "vision_encoder"]
    with pytest.raises(Sam3TrtError, match="exists; pass --force"):
        write_repo(RepoOptions(out, repo, cpu=True))
    (tmp_path / "other").mkdir()
    with pytest.raises(Sam3TrtError, match="not a sam3 model repository"):
        write_repo(RepoOptions(out, tmp_path / "other", force=True))
    with pytest.raises(Sam3TrtError, match=r"no manifest\.json"):
        write_repo(RepoOptions(tmp_path, tmp_path / "r2"))


def test_triton_repo_refuses_rtx_engines(rtx_engines, tmp_path):
    from sam3_trt.serving.triton_repo import RepoOptions, write_repo

    root, _ = rtx_engines
    with pytest.raises(Sam3TrtError, match="Triton's TensorRT backend runs standard TensorRT plans"):
        write_repo(RepoOptions(root / "5090", tmp_path / "repo"))


def test_serve_instances_spread_over_gpus_on_tensorrt_through_the_doubles(rtx_engines, tiny_export, processor):
    """`serve --instances 3 --backend tensorrt` on two (fake) GPUs: instance i on GPU i % 2, each answers."""
    from sam3_trt.serving.server import ServeOptions, _processors
    from sam3_trt.testing import FakeGpu, gpu_doubles

    root, _ = rtx_engines
    export, _ = tiny_export
    gpu = FakeGpu(names=("RTX 5090 A (double)", "RTX 5090 B (double)"), compute_capabilities=((12, 0), (12, 0)))
    png, prompts = _png(), ["red square"]
    with gpu_doubles(root / "5090", export, memory="cuda-python", gpu=gpu):
        procs = _processors(ServeOptions(root / "5090", backend="tensorrt", instances=3))
        try:
            assert [p.backend.name for p in procs] == ["tensorrt"] * 3
            assert [p.backend.device_index for p in procs] == [0, 1, 0]
            served = Sam3Handler(procs[1])([build_inputs(png, prompts, threshold=0.3)])[0]
        finally:
            for p in procs:
                p.close()
    assert gpu.contexts == {0, 1}
    # the TensorRT double runs the engines' ONNX graphs in a plain session, like Triton's ONNX backend would
    _same(decode_outputs(served, prompts), _direct(processor, png, prompts, (), 0.3), "other runtime")


class _PbUtils(types.ModuleType):
    """Double of Triton's ``triton_python_backend_utils``: BLS requests run the repository's graph models
    (their ONNX files, through ONNX Runtime), as Triton's onnxruntime backend would."""

    def __init__(self, repo):
        super().__init__("triton_python_backend_utils")
        import onnxruntime as ort

        self.sessions = {}
        # arena off: a run gives its memory back (the arena would keep the decoder's batch, gigabytes, for the
        # rest of the test session)
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = False
        for model in sorted(repo.glob("*/1/*.onnx")):  # every graph model the repository holds
            self.sessions[model.parent.parent.name] = ort.InferenceSession(
                str(model), options, providers=["CPUExecutionProvider"]
            )
        self.bls_calls = []
        pb = self

        class Tensor:
            def __init__(self, name, array):
                self._name, self._array = name, np.asarray(array)

            def name(self):
                return self._name

            def as_numpy(self):
                return self._array

        class InferenceResponse:
            def __init__(self, output_tensors=(), error=None):
                self.output_tensors, self._error = list(output_tensors), error

            def has_error(self):
                return self._error is not None

        class InferenceRequest:
            def __init__(self, model_name, requested_output_names, inputs):
                self.model_name, self.outputs, self.inputs = model_name, requested_output_names, inputs

            def exec(self):
                pb.bls_calls.append(self.model_name)
                feeds = {t.name(): t.as_numpy() for t in self.inputs}
                values = pb.sessions[self.model_name].run(self.outputs, feeds)
                return InferenceResponse([Tensor(n, v) for n, v in zip(self.outputs, values, strict=True)])

        self.Tensor, self.InferenceRequest, self.InferenceResponse = Tensor, InferenceRequest, InferenceResponse

    @staticmethod
    def get_output_tensor_by_name(response, name):
        return next((t for t in response.output_tensors if t.name() == name), None)

    def get_input_tensor_by_name(self, request, name):
        return self.Tensor(name, request[name]) if name in request else None

    @staticmethod
    def triton_string_to_numpy(dtype):
        return {"TYPE_STRING": np.object_, "TYPE_FP32": np.float32, "TYPE_INT32": np.int32, "TYPE_UINT8": np.uint8}[
            dtype
        ]


def _repository_model(repo, monkeypatch):
    """The repository's ``sam3`` model loaded as Triton loads it: its ``model.py`` from the version folder,
    ``initialize`` given the JSON Triton makes of ``config.pbtxt`` (outputs and parameters, read from the file)."""
    import importlib.util
    import re

    pb = _PbUtils(repo)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    spec = importlib.util.spec_from_file_location("model", repo / "sam3" / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    text = (repo / "sam3" / "config.pbtxt").read_text()
    parameters = re.findall(r'parameters \{ key: "(\w+)" value: \{ string_value: "(\w+)" \} \}', text)
    config = {
        "output": [{"name": t.name, "data_type": "TYPE_" + t.triton_dtype.replace("BYTES", "STRING")} for t in OUTPUTS],
        "parameters": {k: {"string_value": v} for k, v in parameters},
    }
    model.initialize({"model_repository": str(repo / "sam3"), "model_version": "1", "model_config": json.dumps(config)})
    return model, pb


def _outputs(responses):
    return [{t.name(): t.as_numpy() for t in r.output_tensors} for r in responses]


def test_repository_python_model_runs_the_contract_over_bls(tiny_export, processor, tmp_path, monkeypatch):
    """The repository's sam3 model, loaded as Triton loads it, answers like serve's handler."""
    from sam3_trt.serving.triton_repo import RepoOptions, write_repo

    out, _ = tiny_export
    repo = tmp_path / "repo"
    assert not write_repo(RepoOptions(out, repo, cpu=True))["clicks"]
    model, pb = _repository_model(repo, monkeypatch)
    png = _png()
    prompts = ["red square", "green triangle"]
    clicks = build_inputs(png, points=CLICKS, point_labels=CLICK_LABELS)
    responses = model.execute([build_inputs(png, prompts, threshold=0.3), build_inputs(b"", ["x"]), clicks])
    assert pb.bls_calls == ["vision_encoder", "text_encoder", "decoder"]
    outputs = _outputs(responses)
    assert b"input image is empty" in outputs[1]["error"][0, 0]
    assert b"start it with `serve --clicks`" in outputs[2]["error"][0, 0]  # a repository written without --clicks
    _same(decode_outputs(outputs[0], prompts), _direct(processor, png, prompts, (), 0.3), "other runtime")
    model.finalize()
    with pytest.raises(Sam3TrtError, match=r"--clicks: .* has no video_vision_encoder or interactive_mask_head graph"):
        write_repo(RepoOptions(out, tmp_path / "with-clicks", cpu=True, clicks=True))  # an image-only export
    assert not (tmp_path / "with-clicks").exists()


def test_repository_with_clicks_answers_them_over_bls(tracker_export, clicking, tmp_path, monkeypatch):
    """``triton-repo --clicks`` on the --video export: the click graphs are models of the repository, and the
    sam3 model's click masks equal predict_inst's (text requests still answered in the same batch)."""
    import subprocess

    from sam3_trt.serving.triton_repo import RepoOptions, write_repo

    out, _ = tracker_export
    repo = tmp_path / "repo"
    summary = write_repo(RepoOptions(out, repo, cpu=True, clicks=True))
    assert summary["clicks"] and {"video_vision_encoder", "interactive_mask_head"} <= set(summary["models"])
    assert not {"vision_encoder", "tracker_mask_head", "tracker_memory_attention"} & set(summary["models"])
    # Triton's own schema reads every config, the click graphs' and the sam3 model's parameter too
    check = "import json, sys; from sam3_trt.serving.triton_repo import validate_repo; print(json.dumps(validate_repo(sys.argv[1])))"
    proc = subprocess.run([_serve_python(), "-c", check, str(repo)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    validation = json.loads(proc.stdout)
    assert validation["status"] == "passed" and set(validation["models"]) == set(summary["models"]), validation
    model, pb = _repository_model(repo, monkeypatch)
    png = _png()
    clicks = build_inputs(png, points=CLICKS, point_labels=CLICK_LABELS, multimask=True)
    text = build_inputs(png, ["red square"], threshold=0.3)
    outputs = _outputs(model.execute([clicks, text]))
    assert pb.bls_calls.count("video_vision_encoder") == 1 and pb.bls_calls.count("interactive_mask_head") == 1
    ((masks, ious),) = _direct_clicks(clicking, png, True)
    _same_clicks(decode_outputs(outputs[0]), masks, ious)
    _same(decode_outputs(outputs[1], ["red square"]), _direct(clicking, png, ["red square"], (), 0.3), "other runtime")
    model.finalize()


# -- the real server: PyTriton's tritonserver in the serving venv -------------------------------------
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _serve_python():
    import os
    from pathlib import Path

    explicit = os.environ.get("SAM3TRT_SERVE_PYTHON")
    path = Path(explicit) if explicit else REPO / ".venv-serve" / "bin" / "python"
    if not path.exists():
        if explicit:  # `make test` sets it: a broken serving venv must fail CI, not skip
            pytest.fail(f"SAM3TRT_SERVE_PYTHON={explicit} does not exist; run `make serve-install`")
        pytest.skip("no serving venv (.venv-serve): run `make serve-install` (PyTriton needs its own venv)")
    return str(path)


class _Server:
    """``sam3-trt serve`` in a subprocess of the serving venv, on free loopback ports."""

    def __init__(self, python, artifacts, log_dir, *extra, env=None):
        import os
        import subprocess

        from sam3_trt.serving.server import free_ports

        ports = free_ports(3)
        self.http = f"http://127.0.0.1:{ports[0]}"
        cmd = [python, "-m", "sam3_trt.cli", "serve", "--artifacts", str(artifacts), "--threads", "2",
               "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
               "--triton-log", str(log_dir / f"triton-{ports[0]}.log"), *extra]  # fmt: skip
        if "--warm-up" not in extra:
            # a warm-up holds ~10 GB per tiny server on CPU (ONNX Runtime's arena at 4 images + 16 prompts):
            # two servers at once would not fit CI; `benchmarks/serve_load.py` measures the warmed server
            cmd.append("--no-warm-up")
        self.stderr_path = log_dir / f"serve-{ports[0]}.err"
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=open(self.stderr_path, "w"),
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.endpoints = None

    def wait_ready(self, timeout_s=180):
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            pytest.fail(f"serve did not get ready in {timeout_s} s:\n{self.stderr_path.read_text()[-3000:]}")
        self.endpoints = json.loads(line)
        assert self.endpoints["ready"] is True
        return self.endpoints

    def stop(self, timeout_s=90):
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except Exception:
            self.proc.kill()
            raise


def test_serve_answers_http_and_grpc_like_the_processor_and_survives_bad_requests(tiny_export, processor, tmp_path):
    """Acceptance: serve the tiny export, text/box/multi-prompt requests over HTTP and gRPC equal a direct
    processor call, each bad request gets its error and the next request succeeds, two servers behind one
    client, and SIGTERM with a request in flight completes it."""
    import subprocess

    from sam3_trt.assets.images import demo_image

    python = _serve_python()
    out, _ = tiny_export
    image, big = tmp_path / "image.png", tmp_path / "big.png"
    demo_image(128, 96).save(image)
    demo_image(200, 200).save(big)
    limits = ["--max-image-pixels", str(128 * 96)]
    servers = [_Server(python, out, tmp_path, *limits) for _ in range(2)]
    try:
        endpoints = [s.wait_ready() for s in servers]
        args, result_path = tmp_path / "args.json", tmp_path / "result.json"
        args.write_text(json.dumps({"servers": endpoints, "image": str(image), "big_image": str(big)}))
        proc = subprocess.run(
            [python, str(REPO / "tests" / "serving" / "serve_scenario.py"), str(args), str(result_path)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        result = json.loads(result_path.read_text())

        png = image.read_bytes()
        prompts, box = ["red square", "blue disc"], [[10.0, 10.0, 100.0, 80.0]]
        text_box = _direct(processor, png, prompts, box, 0.3)
        served = lambda case: [d | {"mask": rle_to_mask(d["mask"])} for d in case["detections"]]  # noqa: E731
        assert result["ready"] == [True, True]
        for case in ("http_text_box", "grpc_text_box", "after_disconnect"):
            _same(served(result[case]), text_box, "torch-free server")
        _same(served(result["grpc_box_bitmask"]), _direct(processor, png, (), box, 0.2), "torch-free server")
        assert result["http_nothing_kept"]["detections"] == []
        for case in result["spread"]:
            _same(served(case), text_box, "torch-free server")
        expected = {
            "corrupt_image": "not a readable image",
            "too_many_pixels": "200x200 (40000 pixels), over this server's --max-image-pixels 12288",
            "no_prompts": "no prompts and no boxes",
            "10000_prompts": "10000 prompts, more than this server's --max-prompts 64",
            "nan_box": "y0 is not a finite number",
            "clicks_not_enabled": "start it with `serve --clicks`",
            "float64_boxes": "FP64",  # refused by Triton itself: the config declares FP32
        }
        for name, words in expected.items():
            error = result["bad"][name]["error"]
            assert error and words in error and "\n" not in error, (name, error)
            assert result["bad"][name].get("next_good", True), name
        assert 'nv_inference_request_success{model="sam3",version="1"}' in result["metrics"]
        from sam3_trt.serving.metrics import parse_counters, summarize

        counters = parse_counters(result["metrics"], "sam3")  # real Triton output through the parser
        since_start = summarize({}, counters)
        assert since_start["requests"] >= 3 and since_start["executions"] >= 1 and since_start["mean_batch"] >= 1
        assert 0 < since_start["compute_ms"] <= since_start["request_ms"]  # refusals are answers: not failures
        # the CLI client over gRPC, as a user runs it
        cli = subprocess.run(
            [python, "-m", "sam3_trt.cli", "client", endpoints[0]["grpc"], str(image), "--threshold", "0.3",
             "--prompt", prompts[0], "--prompt", prompts[1], "--box", "10,10,100,80", "--json", str(tmp_path / "c.json")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert cli.returncode == 0 and json.loads(cli.stdout)["detections"] == len(text_box), cli.stderr[-3000:]
        written = json.loads((tmp_path / "c.json").read_text())["detections"]
        # the JSON lists detections best first: compare with the same server's answer in that order
        _same([d | {"box": d["box_xyxy"], "mask": rle_to_mask(d["mask_rle"]), "prompt_index": prompts.index(d["prompt"])}
               for d in written], sorted(served(result["grpc_text_box"]), key=lambda d: -d["score"]))  # fmt: skip

        # SIGTERM while a request is in flight: Triton drains it (up to --exit-timeout) before stopping
        slow = subprocess.Popen(
            [python, "-m", "sam3_trt.cli", "client", endpoints[1]["http"], str(image), "--threshold", "0.3",
             "--prompt", prompts[0], "--prompt", prompts[1], "--box", "10,10,100,80", "--json", str(tmp_path / "slow.json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        import time

        time.sleep(1.0)
        assert slow.poll() is None, "the request finished before SIGTERM: the check would prove nothing"
        assert servers[1].stop() == 0, servers[1].stderr_path.read_text()[-3000:]
        stdout, stderr = slow.communicate(timeout=120)
        assert slow.returncode == 0, stderr[-3000:]
        assert json.loads(stdout)["detections"] == len(text_box)
    finally:
        codes = [s.stop() for s in servers]
    assert codes[0] == 0, servers[0].stderr_path.read_text()[-3000:]


def _fake_standard_trt_engines(export_dir, folder):
    """An engine folder as `sam3-trt build --flavour tensorrt` writes it (manifest, specs, plan files); the plans
    are placeholders: Triton cannot load TensorRT plans on this machine, the configs are what is tested."""
    import hashlib
    import shutil

    from sam3_trt.assets import BPE_FILE
    from sam3_trt.manifest import write_manifest
    from sam3_trt.specs import SPECS

    folder.mkdir()
    graphs = {}
    for name, spec in SPECS.items():
        data = f"placeholder plan of {name}".encode()
        (folder / spec.engine_file).write_bytes(data)
        graphs[name] = {"file": spec.engine_file, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "spec": spec.to_dict()}  # fmt: skip
    shutil.copyfile(export_dir / BPE_FILE, folder / BPE_FILE)
    write_manifest(folder, {"kind": "engines", "flavour": "tensorrt", "target": "h100", "graphs": graphs,
                            "weights": {"kind": "random", "variant": "tiny"}})  # fmt: skip
    return folder


def test_triton_repo_configs_pass_tritons_schema(tiny_export, tmp_path):
    """Both repository kinds, written and validated by the serving venv (tritonclient's ModelConfig)."""
    import subprocess

    python = _serve_python()
    out, _ = tiny_export
    engines = _fake_standard_trt_engines(out, tmp_path / "engines")
    runs = {
        "onnx": [str(out), "--cpu"],
        "plan": [str(engines), "--gpus", "0,1", "--instances", "2", "--max-batch", "8"],
    }
    for kind, extra in runs.items():
        repo = tmp_path / f"repo-{kind}"
        cmd = [python, "-m", "sam3_trt.cli", "triton-repo", "--artifacts", extra[0], "--out", str(repo), *extra[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout)
        assert summary["validation"]["status"] == "passed", summary
        models = summary["validation"]["models"]
        assert models["vision_encoder"]["max_batch_size"] == 4 and models["text_encoder"]["max_batch_size"] == 16
        assert models["decoder"]["max_batch_size"] == 0
        vision = (repo / "vision_encoder" / "config.pbtxt").read_text()
        if kind == "plan":
            assert summary["platform"] == "tensorrt_plan" and models["sam3"]["max_batch_size"] == 8
            assert "kind: KIND_GPU gpus: [ 0, 1 ]" in vision and "count: 2" in vision
            assert (repo / "decoder" / "1" / "decoder.engine").is_file()
        else:
            assert "kind: KIND_CPU" in vision and (repo / "decoder" / "1" / "decoder.onnx.data").is_file()
    # a config that disagrees with the specs is refused, naming the tensor
    config = tmp_path / "repo-onnx" / "decoder" / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [ -1, 32, 256 ]", "dims: [ -1, 32, 512 ]", 1))
    check = "from sam3_trt.serving.triton_repo import validate_repo; import sys; validate_repo(sys.argv[1])"
    proc = subprocess.run([python, "-c", check, str(tmp_path / "repo-onnx")], capture_output=True, text=True)
    assert proc.returncode != 0 and "model decoder tensor text_features" in proc.stderr, proc.stderr[-2000:]
    config.write_text("name: 'decoder'\nplatform: 'onnxruntime_onnx'\nmax_batch_size: banana\n")
    proc = subprocess.run([python, "-c", check, str(tmp_path / "repo-onnx")], capture_output=True, text=True)
    assert proc.returncode != 0 and "ModelConfig schema rejects it" in proc.stderr, proc.stderr[-2000:]


def test_serve_and_client_refuse_bad_options_in_one_line(tiny_export, tmp_path):
    import subprocess
    import sysconfig

    from sam3_trt.assets.images import demo_image

    out, _ = tiny_export
    python = _serve_python()
    image = tmp_path / "image.png"
    demo_image(64, 48).save(image)
    busy = __import__("socket").socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    busy_port = str(busy.getsockname()[1])
    serve = [sys.executable, "-m", "sam3_trt.cli", "serve"]
    client = [python, "-m", "sam3_trt.cli", "client"]
    cases = [
        ([*serve, "--artifacts", str(tmp_path / "nope")], "not a folder"),
        ([*serve, "--artifacts", str(out), "--instances", "0"], "--instances 0"),
        ([*serve, "--artifacts", str(out), "--http-port", busy_port], f"--http-port {busy_port} on 127.0.0.1"),
        ([*serve, "--artifacts", str(out), "--grpc-port", "8000"], "must differ"),
        ([*serve, "--artifacts", str(out), "--max-prompts", "0"], "--max-prompts 0"),
        ([*client, "ftp://127.0.0.1:1", str(image), "--prompt", "x"], "give http://host:port or grpc://host:port"),
        ([*client, "http://127.0.0.1", str(image), "--prompt", "x"], "has no port"),
        ([*client, f"http://127.0.0.1:{busy_port}", str(tmp_path / "missing.png"), "--prompt", "x"], "image not found"),
        ([*client, f"http://127.0.0.1:{busy_port}", str(image)], "give at least one --prompt"),
        ([*client, f"http://127.0.0.1:{busy_port}", str(image), "--box", "1,2,300,4"], "lies outside the 64x48"),
        ([*client, f"grpc://127.0.0.1:{busy_port}", str(image), "--prompt", "x", "--timeout", "5"], "grpc://127.0.0.1"),
    ]
    # this venv's Python (pyenv) has no shared libpython, or lacks PyTriton: serve says which, before loading
    shared = sysconfig.get_config_var("Py_ENABLE_SHARED")
    cases.append(([*serve, "--artifacts", str(out)], "shared libpython" if not shared else "needs PyTriton"))
    try:
        for cmd, words in cases:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], (cmd[3:], proc.stderr[-2000:])
            assert "Traceback" not in proc.stderr and proc.stdout == "", (cmd[3:], proc.stderr[-2000:])
    finally:
        busy.close()


def _peak_rss_increase(fn):
    """``fn()`` and how far the process's peak resident memory rose above its resident memory before it (Linux:
    the peak is reset through ``/proc/self/clear_refs``, so earlier tests' peaks do not count)."""

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"/proc/self/status has no {field}")

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    before = status("VmRSS")
    out = fn()
    return out, status("VmHWM") - before


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_threshold_0_request_on_a_large_image_stays_within_the_stated_bound(processor):
    """Every query above threshold 0 on a 2048x2048 image, on a server warmed up as ``serve`` warms it (measured
    before this bound: +6.5 GB, 200 full-size masks at once; now about +0.1 GB): the best ``max_detections`` are
    chosen first and each mask is upsampled and RLE-encoded alone, within ``request_memory_bound`` (425 MiB)."""
    from PIL import Image

    from sam3_trt.assets.images import demo_image
    from sam3_trt.serving.handler import request_memory_bound

    side = 2048
    buffer = io.BytesIO()
    demo_image(side, side).save(buffer, format="JPEG", quality=90)
    handler = Sam3Handler(processor)
    handler.warm_up(1)  # the runtime's working memory at the largest batch: part of "the model"
    request = build_inputs(buffer.getvalue(), ["red square"], threshold=0.0)
    (response,), grew = _peak_rss_increase(lambda: handler([request]))
    bound = request_memory_bound(side, side, prompts=1, max_detections=MAX_DETECTIONS)
    assert response["error"][0, 0] == b"" and response["num_detections"][0, 0] == MAX_DETECTIONS  # 200 above 0
    assert grew <= bound, f"the request grew the process by {grew / 2**20:.0f} MB, bound {bound / 2**20:.0f} MB"
    first = decode_outputs(response, ["red square"])[0]["mask"]
    assert first.shape == (side, side) and Image.fromarray(first).size == (side, side)


def _http(url, method="GET", headers=None):
    """Status of one HTTP call (None when nothing answers yet)."""
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    try:
        with urlopen(
            Request(url, method=method, headers=headers or {}, data=b"" if method == "POST" else None), timeout=2
        ) as r:
            return r.status, r.read()
    except HTTPError as exc:
        return exc.code, exc.read()
    except (URLError, ConnectionError, TimeoutError, OSError):
        return None, b""


def test_serve_says_ready_only_with_its_model_and_opens_restricted_apis_to_its_token(tiny_export, tmp_path):
    """Polled from process start every 0.2 s: no poll finds the server ready while its model is not (PyTriton's
    default start answered ready for about a second before the model: measured 5 such polls). The token from
    SAM3TRT_ACCESS_TOKEN opens the statistics API (what perf_analyzer needs); without it, statistics and the
    model repository (unload) stay closed."""
    import time

    out, _ = tiny_export
    token = "sam3-test-token"
    server = _Server(_serve_python(), out, tmp_path, env={"SAM3TRT_ACCESS_TOKEN": token})
    polls = []
    try:
        start = time.monotonic()
        while time.monotonic() - start < 180 and server.proc.poll() is None:
            polls.append((_http(f"{server.http}/v2/health/ready")[0], _http(f"{server.http}/v2/models/sam3/ready")[0]))
            if polls[-1][1] == 200:
                break
            time.sleep(0.2)
        assert polls and polls[-1] == (200, 200), (
            f"model never ready: {polls[-5:]}\n{server.stderr_path.read_text()[-2000:]}"
        )
        early = [p for p in polls if p[0] == 200 and p[1] != 200]
        assert early == [], f"{len(early)} polls found the server ready without its model: {early[:3]}"
        assert len(polls) >= 3  # the start-up was watched, not only its end
        stats = f"{server.http}/v2/models/sam3/stats"
        assert _http(stats)[0] in (401, 403)  # restricted without the token
        status, body = _http(stats, headers={"triton-access-token": token})
        assert status == 200 and json.loads(body)["model_stats"][0]["name"] == "sam3"
        unload = f"{server.http}/v2/repository/models/sam3/unload"
        assert _http(unload, "POST")[0] in (401, 403)
        assert _http(unload, "POST", {"triton-access-token": "wrong"})[0] in (401, 403)
        assert _http(f"{server.http}/v2/models/sam3/ready")[0] == 200  # still loaded
        assert token not in server.stderr_path.read_text()  # the token is never printed
    finally:
        server.stop()


# -- clicks (serve --clicks): upstream's predict_inst over the contract's points ----------------------------------
@pytest.fixture(scope="module")
def clicking(tracker_export):
    from sam3_trt import Sam3Processor

    with Sam3Processor(tracker_export[0], backend="onnxruntime", interactive=True) as proc:
        yield proc


CLICKS, CLICK_LABELS = [[150.0, 100.0], [60.0, 40.0]], [1, 0]


def _direct_clicks(processor, png: bytes, *multimask: bool):
    """``(masks > 0, ious)`` of predict_inst on the PNG's image, per ``multimask`` value (one encoding)."""
    from PIL import Image

    state = processor.set_image(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
    out = [
        processor.predict_inst(state, point_coords=CLICKS, point_labels=CLICK_LABELS, multimask_output=m)
        for m in multimask
    ]
    return [(masks > 0, ious) for masks, ious, _ in out]


def _same_clicks(served, masks, ious):
    assert [(d["prompt"], d["prompt_index"]) for d in served] == [("click", -2)] * len(masks)
    for d, mask, iou in zip(served, masks, ious, strict=True):
        assert np.array_equal(d["mask"], mask) and d["score"] == pytest.approx(float(iou), abs=1e-6)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert d["box"] == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


BAD_CLICKS = (
    ({"points": [[np.nan, 10.0]]}, "NaN"),
    ({"points": [[1000.0, 10.0]]}, "outside the image"),
    ({"points": [[10.0, 10.0]], "point_labels": [2]}, "use 1 (positive) or 0"),
    ({"points": [[10.0, 10.0], [20.0, 20.0]], "point_labels": [1]}, "one label per point"),
    ({"points": [[1.0, 1.0]] * 17}, "at most 64 sets of 16"),
    ({"points": [[10.0, 10.0]], "prompts": ["cat"]}, "separate requests"),
    ({"points": [[10.0, 10.0]], "threshold": 0.3}, "input threshold does not apply to clicks"),
)


def test_click_requests_equal_predict_inst_and_bad_ones_get_one_line(clicking, processor):
    handler = Sam3Handler(clicking)
    png = _png()
    good = build_inputs(png, points=CLICKS, point_labels=CLICK_LABELS, multimask=True)
    single = build_inputs(png, points=CLICKS, point_labels=CLICK_LABELS, mask_format="bitmask")
    text = build_inputs(png, ["red square"], threshold=0.3)
    bad = [build_inputs(png, **kwargs) for kwargs, _ in BAD_CLICKS]
    bad.append(text | {"point_labels": np.array([[1]], np.int32)})
    bad.append(build_inputs(png, points=CLICKS) | {"points": np.array([CLICKS], np.float64)})
    words = [w for _, w in BAD_CLICKS] + ["point_labels was sent without points", "send float32 [N, 2]"]
    vision_before = clicking.backend.calls["video_vision_encoder"]
    responses = handler([good, text, single, *bad])
    assert clicking.backend.calls["video_vision_encoder"] - vision_before == 1  # one vision batch for all
    multimask, single = _direct_clicks(clicking, png, True, False)
    _same_clicks(decode_outputs(responses[0]), *multimask)
    _same_clicks(decode_outputs(responses[2], (), "bitmask"), *single)
    _same(decode_outputs(responses[1], ["red square"]), _direct(clicking, png, ["red square"], (), 0.3))
    for response, expected in zip(responses[3:], words, strict=True):
        error = response["error"][0, 0].decode()
        assert expected in error and "\n" not in error and response["num_detections"][0, 0] == 0, (expected, error)
    refused = Sam3Handler(processor)([good])[0]["error"][0, 0].decode()  # a processor without clicks
    assert "start it with `serve --clicks`" in refused
    from sam3_trt.serving.server import ServeOptions, free_ports

    ports = free_ports(3)
    options = ServeOptions(processor.backend.folder, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2])
    with pytest.raises(Sam3TrtError, match=r"--clicks: .* has no video_vision_encoder or interactive_mask_head graph"):
        dataclasses.replace(options, clicks=True).check()  # refused before any model loads
    options.check()


def test_serve_clicks_end_to_end(tracker_export, clicking, tmp_path):
    """``serve --clicks`` on the --video export: the CLI client's click masks (decoded from its JSON) equal
    predict_inst's."""
    import subprocess

    from sam3_trt.assets.images import demo_image

    python = _serve_python()
    image = tmp_path / "image.png"
    demo_image(320, 240).save(image)
    server = _Server(python, tracker_export[0], tmp_path, "--clicks")
    try:
        grpc = server.wait_ready()["grpc"]
        cli = subprocess.run(
            [python, "-m", "sam3_trt.cli", "client", grpc, str(image), "--point", "150,100", "--point", "60,40,neg",
             "--multimask", "--json", str(tmp_path / "clicks.json")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr[-3000:]
    finally:
        code = server.stop()
    assert code == 0, server.stderr_path.read_text()[-3000:]
    written = json.loads((tmp_path / "clicks.json").read_text())["detections"]
    served = [d | {"box": d["box_xyxy"], "mask": rle_to_mask(d["mask_rle"]), "prompt_index": -2} for d in written]
    ((masks, ious),) = _direct_clicks(clicking, image.read_bytes(), True)
    order = np.argsort(-ious, kind="stable")  # the JSON lists the masks best first
    _same_clicks(served, masks[order], ious[order])
