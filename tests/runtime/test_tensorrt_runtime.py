"""The TensorRT runtime, executed on every CI run without a GPU, through the doubles in ``sam3_trt.testing``.

What these tests show: our use of the TensorRT for RTX, cuda-python and torch.cuda APIs (names,
arguments, statuses, streams, events, memory) and the data plumbing through the whole processor, with
results equal to ONNX Runtime's on the same graphs, for both device-memory layers and with torch absent.
What they cannot show: kernels, FP16/TF32 numerics, speed, real memory limits (a GPU run does that).
No real TensorRT runtime or engine object is created in this process.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from sam3_trt.device import GpuInfo
from sam3_trt.engines.parse import rtx_available
from sam3_trt.errors import Sam3TrtError
from sam3_trt.manifest import STAMP_FILE

pytestmark = pytest.mark.skipif(
    not rtx_available(), reason="tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')"
)
torch = pytest.importorskip("torch")

from sam3_trt import Sam3Processor  # noqa: E402
from sam3_trt.testing import FakeGpu, gpu_doubles  # noqa: E402

RTX_5090 = GpuInfo(True, ("NVIDIA GeForce RTX 5090",), ((12, 0),))
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import trt_scenario  # noqa: E402


@pytest.fixture(scope="module")
def engines(rtx_engines, tiny_export):
    root, _ = rtx_engines
    export, _ = tiny_export
    return root / "5090", export


@pytest.fixture(scope="module")
def reference(tiny_export):
    export, _ = tiny_export
    return trt_scenario.onnxruntime_reference(export)


def _tensorrt(engines, **kwargs):
    folder, _ = engines
    return Sam3Processor(folder, backend="tensorrt", **kwargs)


def _copy_engines(engines, tmp_path):
    folder, export = engines
    copy = tmp_path / "engines"
    shutil.copytree(folder, copy)
    return copy, export


# -- the processor, every case, against ONNX Runtime -------------------------------------------------
def test_processor_through_tensorrt_matches_onnxruntime(engines, reference):
    """Torch device memory here; the cuda-python layer runs the same scenario in a process without torch
    (next test), where the fake GPU also shows every allocation given back."""
    folder, export = engines
    with gpu_doubles(folder, export, memory="torch") as doubles:
        with _tensorrt(engines) as proc:
            assert proc.backend.memory.name == "torch"  # what device_memory="auto" picked
            assert proc.device == "cpu"  # torch memory: the double's device; CUDA on a GPU
            results = trt_scenario.run_scenario(proc)
            assert set(proc.backend.last_gpu_ms) == {"vision_encoder", "text_encoder", "decoder"}
            assert all(ms > 0 for ms in proc.backend.last_gpu_ms.values())
    print("TensorRT double vs ONNX Runtime, worst:", trt_scenario.worst(reference, results))
    assert trt_scenario.compare(reference, results) == []
    # the comparison can fail: one logit moved by 10x its bar is reported
    moved = {case: dict(r) for case, r in results.items()}
    moved["text"]["masks_logits"] = moved["text"]["masks_logits"].copy()
    moved["text"]["masks_logits"].flat[0] += 10 * trt_scenario.SAME_GRAPHS_TOLERANCES["masks_logits_max_abs"]
    assert [p.split(":")[0] for p in trt_scenario.compare(reference, moved)] == ["text"]
    # shapes went up and down, in CI's shape buckets (1, 4): P 1, 4 (3 prompts, padded) and 16 (past the
    # buckets: exact), N 1 and 4 (2 and 3 boxes, padded), B 1..2; padded results equal ONNX Runtime's exact ones
    decoder_shapes = doubles.trt.specialised["decoder"]
    assert {s[3][0] for s in decoder_shapes} == {1, 4, 16} and {s[5][1] for s in decoder_shapes} == {1, 4}
    assert {s[0][0] for s in doubles.trt.specialised["vision_encoder"]} == {1, 2}
    assert doubles.torch_cuda.empty_cache_calls == 1  # close() returned torch's cached blocks


def test_cuda_python_layer_with_torch_blocked(engines, reference, tmp_path):
    """Torch-free install: the cuda-python layer and numpy results, in a process where torch cannot load,
    against the ONNX Runtime reference this process ran."""
    folder, export = engines
    reference_file = tmp_path / "reference.npz"
    trt_scenario.save_results(reference, reference_file)
    script = textwrap.dedent(
        f"""
        import importlib.abc, runpy, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "sam3"):
                    raise ImportError(f"blocked for this test: {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        sys.argv = ["trt_scenario.py", {str(folder)!r}, {str(export)!r}, {str(reference_file)!r}]
        runpy.run_path({str(TESTS / "trt_scenario.py")!r}, run_name="__main__")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print("torch-free TensorRT double vs ONNX Runtime, worst:", report["worst"])
    assert report["problems"] == [] and report["memory"] == "cuda-python" and report["torch_imported"] is False
    assert report["cases"] >= 25 and report["live_bytes"] == 0


# -- what review found, each shown by the doubles ------------------------------------------------------
def test_results_of_one_run_survive_the_next(engines):
    """Outputs are fresh per run: a result held while another prompt runs keeps its values."""
    with gpu_doubles(*engines, memory="torch"):
        with _tensorrt(engines, confidence_threshold=0.0) as proc:
            state = proc.set_image(trt_scenario.images()[0])
            first = proc.backend.run("text_encoder", {"input_ids": proc.tokenizer(["a red square"])})
            kept = first["text_features"].clone()
            proc.backend.run("text_encoder", {"input_ids": proc.tokenizer(["something else entirely"])})
            assert torch.equal(first["text_features"], kept)
            assert state["backbone_out"]["backbone_fpn"][0].shape == (1, 256, 288, 288)


def test_engine_waits_for_the_callers_stream_and_hands_results_over(engines, monkeypatch):
    from sam3_trt.runtime.device_memory.torch import TorchMemory

    with gpu_doubles(*engines, memory="torch") as doubles:
        with _tensorrt(engines) as proc:
            out = proc.backend.run("text_encoder", {"input_ids": proc.tokenizer(["blue disc"])})
            log = list(doubles.gpu.log)
        ours = proc.backend.memory
        assert out["text_features"].abs().sum() > 0
    (execute,) = [i for i, (label, _) in enumerate(log) if label == "execute text_encoder"]
    stream = log[execute][1]
    assert stream != 0  # the backend's own stream, not the default stream
    before = [label for label, s in log[:execute] if s == stream]
    assert before[0].startswith("wait event")  # first thing on our stream: wait for the caller's stream
    after = [label for label, s in log[execute + 1 :] if s == 0]
    assert any(label.startswith("wait event") for label in after)  # the caller's stream waits for the engine
    del ours

    # without the hand-over event, the caller reads outputs the engine has not written yet
    expected = out["text_features"].clone()
    monkeypatch.setattr(TorchMemory, "hand_over", lambda self, inputs: None)
    with gpu_doubles(*engines, memory="torch"):
        with _tensorrt(engines) as proc:
            tokens = proc.backend.memory.to_device(proc.tokenizer(["blue disc"]), "int64")  # kept alive here
            out = proc.backend.run("text_encoder", {"input_ids": tokens})
            assert not torch.equal(out["text_features"], expected)  # read before the engine ran
            proc.backend.memory.synchronize()
            assert torch.equal(out["text_features"], expected)  # the same memory, once the stream is waited for


def test_every_call_goes_through_the_real_api_signatures(engines):
    """A call the real tensorrt_rtx API does not have fails in the double (so the doubles can catch misuse)."""
    from sam3_trt.testing.apicheck import NotModelled

    with gpu_doubles(*engines, memory="cuda-python"):
        with _tensorrt(engines) as proc:
            ctx = proc.backend.contexts["decoder"]
            with pytest.raises(TypeError, match="matches no overload"):
                ctx.set_input_shape("boxes")  # the real method needs a shape
            with pytest.raises(TypeError, match="matches no overload"):
                ctx.execute_async_v3("stream")  # the handle is an int
            with pytest.raises(AttributeError):
                ctx.enqueue_v4  # noqa: B018 - not a real attribute
            with pytest.raises(NotModelled, match="execute_v2"):
                ctx.execute_v2([0])


def test_device_index_selects_the_device(engines):
    gpu = FakeGpu(
        names=("NVIDIA RTX A6000 (double)", "NVIDIA GeForce RTX 5090 (double)"), compute_capabilities=((8, 6), (12, 0))
    )
    with gpu_doubles(*engines, memory="cuda-python", gpu=gpu) as doubles:
        with pytest.raises(Sam3TrtError, match=r"GPU 0 \(NVIDIA RTX A6000 \(double\)\) is sm86"):
            _tensorrt(engines)
        doubles.cudart.calls.clear()
        with _tensorrt(engines, device_index=1) as proc:
            proc.set_text_prompt("a red square", proc.set_image(trt_scenario.images()[0]))
        set_devices = [c for c in doubles.cudart.calls if c == "cudaSetDevice"]
        assert set_devices and gpu.contexts == {1}  # nothing was created on device 0
        with pytest.raises(Sam3TrtError, match=r"device_index=2, but this machine has 2 GPU"):
            _tensorrt(engines, device_index=2)


def test_rtx_runtime_cache_saved_reloaded_and_rejected(engines, tmp_path):
    folder, export = _copy_engines(engines, tmp_path)
    cache = folder / "runtime_cache.bin"
    image = trt_scenario.images()[0]
    with gpu_doubles(folder, export, memory="cuda-python"):
        with Sam3Processor(folder, backend="tensorrt") as proc:
            proc.set_text_prompt("a red square", proc.set_image(image))
    saved = json.loads(cache.read_bytes())
    assert {g for g, _ in saved["entries"]} == {"vision_encoder", "text_encoder", "decoder"}
    stamp = cache.stat().st_mtime_ns
    # same shapes again: the cache is loaded (no warning) and, unchanged, not rewritten
    with gpu_doubles(folder, export, memory="cuda-python"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Sam3Processor(folder, backend="tensorrt") as proc:
            proc.set_text_prompt("a red square", proc.set_image(image))
    assert not [w for w in caught if "runtime cache" in str(w.message)]
    assert cache.stat().st_mtime_ns == stamp
    # a new shape changes it: saved through a temporary file, no leftovers
    with gpu_doubles(folder, export, memory="cuda-python"):
        with Sam3Processor(folder, backend="tensorrt") as proc:
            proc.set_text_prompts(["a", "b"], proc.set_image(image))
    assert (
        len(json.loads(cache.read_bytes())["entries"]) == len(saved["entries"]) + 2
    )  # text and decoder at P=4 (bucket)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [STAMP_FILE]  # no temp files
    # a cache from another GPU is rejected with a warning, then replaced
    cache.write_bytes(json.dumps({**saved, "gpu": "another GPU"}).encode())
    with gpu_doubles(folder, export, memory="cuda-python"):
        with pytest.warns(UserWarning, match="rejected the runtime cache"):
            proc = Sam3Processor(folder, backend="tensorrt")
        proc.set_text_prompt("a red square", proc.set_image(image))
        proc.close()
    assert json.loads(cache.read_bytes())["gpu"] != "another GPU"


def test_runtime_cache_is_saved_by_a_processor_never_closed(engines, tmp_path):
    """Scripts and servers drop processors without close(): the compiled kernels must still reach the file."""
    import gc

    folder, export = _copy_engines(engines, tmp_path)
    cache = folder / "runtime_cache.bin"
    cache.unlink(missing_ok=True)
    with gpu_doubles(folder, export, memory="cuda-python") as doubles:
        proc = Sam3Processor(folder, backend="tensorrt")
        proc.set_text_prompt("a red square", proc.set_image(trt_scenario.images()[0]))
        streams = [s for handle, s in doubles.gpu.streams.items() if handle and not s.destroyed]
        del proc
        gc.collect()
        assert cache.is_file()
        assert {g for g, _ in json.loads(cache.read_bytes())["entries"]} == {
            "vision_encoder",
            "text_encoder",
            "decoder",
        }
        assert streams and all(s.destroyed for s in streams)  # the device memory layer closed after the save


# -- TensorRT for RTX's runtime settings: recorded at build, applied to every context, shapes bucketed -----
EAGER = {"dynamic_shapes_kernel_specialization_strategy": "EAGER", "cuda_graph_strategy": "DISABLED"}


def test_rtx_runtime_settings_reach_every_context_and_warm_up_compiles_every_bucket(engines, monkeypatch):
    from sam3_trt.engines.builder import BuildOptions
    from sam3_trt.engines.rtx_runtime import DEFAULT_BUCKETS, RtxRuntimeSettings, bucket
    from sam3_trt.runtime.backends import TensorRTBackend

    folder, export = engines
    manifest = json.loads((folder / "manifest.json").read_text())
    # what `sam3-trt build` records (CI's engines: buckets 1 and 4, keeping the decoder's CPU runs cheap)
    assert BuildOptions().rtx_runtime == RtxRuntimeSettings() and RtxRuntimeSettings().shape_buckets == DEFAULT_BUCKETS
    assert manifest["rtx_runtime"] == RtxRuntimeSettings(shape_buckets=(1, 4)).to_manifest()
    assert [bucket(n, DEFAULT_BUCKETS, 16) for n in (1, 2, 3, 5, 9, 16, 17)] == [1, 2, 4, 8, 16, 16, 17]
    image = trt_scenario.images()[0]

    def calls(proc):  # counts between the buckets: 3 prompts (T and P), then N = 1, 2, 3 boxes
        state = proc.set_image(image)
        proc.set_text_prompts([f"prompt {i}" for i in range(3)], state)
        for _ in range(3):  # with the "visual" text
            proc.add_geometric_prompt([0.5, 0.5, 0.2, 0.2], True, state)
        proc.backend.synchronize()  # the doubles' engines run when their stream is waited for

    with gpu_doubles(folder, export, memory="cuda-python") as doubles:
        with Sam3Processor(folder, backend="tensorrt") as proc:
            # every context got the folder's settings, not TensorRT for RTX's defaults (lazy specialisation)
            assert doubles.trt.runtime_settings == dict.fromkeys(proc.backend.graphs, EAGER)
            proc.set_text_prompt("a kept prompt", proc.set_image(image))
            ran = proc.warm_up()
            assert ran == {"vision_encoder": [(1,)], "text_encoder": [(1,), (4,)], "decoder": [(1, 1), (4, 1), (1, 4)]}
            assert list(proc._text_cache) == ["a kept prompt"]  # warm-up prompts forgotten, the user's kept
            compiled = {g: set(s) for g, s in doubles.trt.specialised.items()}  # warm_up waited for its runs
            assert sorted(len(s) for s in compiled.values()) == [1, 2, 3]  # B=1; T=1,4; (P,N)=(1,1),(4,1),(1,4)
            calls(proc)
            assert {g: set(s) for g, s in doubles.trt.specialised.items()} == compiled  # no shape compiled later
    # exact counts (no buckets, other strategies): the same calls meet shapes warm-up never ran
    with gpu_doubles(folder, export, memory="cuda-python") as doubles:
        settings = RtxRuntimeSettings("lazy", "whole_graph_capture", ())
        backend = TensorRTBackend(folder, manifest, rtx_runtime=settings)
        with Sam3Processor(folder, backend=backend) as proc:
            lazy = {
                "dynamic_shapes_kernel_specialization_strategy": "LAZY",
                "cuda_graph_strategy": "WHOLE_GRAPH_CAPTURE",
            }
            assert doubles.trt.runtime_settings == dict.fromkeys(backend.graphs, lazy)
            assert proc.warm_up()["decoder"] == [(1, 1)]
            compiled = {g: set(s) for g, s in doubles.trt.specialised.items()}
            calls(proc)
            new = {g: len(s - compiled.get(g, set())) for g, s in doubles.trt.specialised.items()}
            assert new == {"vision_encoder": 0, "text_encoder": 1, "decoder": 3}  # T=3; (P,N)=(3,1),(1,2),(1,3)
        backend.close()
    # the double refuses what the real property setter refuses
    monkeypatch.setattr(
        RtxRuntimeSettings, "apply", lambda self, trt, config: setattr(config, "cuda_graph_strategy", 1)
    )
    with gpu_doubles(folder, export, memory="cuda-python"):
        with pytest.raises(TypeError, match="cuda_graph_strategy must be a CudaGraphStrategy, got 1"):
            TensorRTBackend(folder, manifest)


def test_contexts_share_one_scratch_block(engines, monkeypatch):
    """TensorRT's default reserves each context's scratch for its profile maximum (3 blocks for the image graphs,
    7 with the tracker's); the backend runs one graph at a time on one stream, so one block serves all."""
    from sam3_trt.runtime.backends import tensorrt as trt_backend
    from sam3_trt.specs import ALL_SPECS
    from sam3_trt.testing.trt_double import scratch_bytes

    folder, export = engines
    image = trt_scenario.images()[0]
    with gpu_doubles(folder, export, memory="cuda-python") as doubles:
        with _tensorrt(engines) as proc:
            sizes = [scratch_bytes(ALL_SPECS[g]) for g in proc.backend.graphs]
            assert len(set(sizes)) == 3 and proc.backend.scratch_bytes == max(sizes)
            held = doubles.gpu.live_bytes()
            assert held == max(sizes)  # nothing else is device memory before the first run
            proc.set_text_prompt("a red square", proc.set_image(image))  # every graph runs in that block
            # what TensorRT's default would hold: a block per context (the double charges STATIC contexts)
            for engine in proc.backend.engines.values():
                engine.create_execution_context()
            assert doubles.gpu.live_bytes() - held >= sum(sizes)

    # a block smaller than an engine needs is refused, and the run fails in one line naming the graph
    def too_small(loaded, memory):
        loaded.scratch = memory.empty((2**24,), "uint8")
        for graph, context in loaded.contexts.items():
            context.set_device_memory(memory.pointer(loaded.scratch), scratch_bytes(ALL_SPECS[graph]) - 1)
        return 2**24

    monkeypatch.setattr(trt_backend, "share_scratch", too_small)
    with gpu_doubles(folder, export, memory="cuda-python") as doubles:
        with _tensorrt(engines) as proc:
            with pytest.raises(Sam3TrtError, match=r"execution of vision_encoder failed .*no device memory set"):
                proc.set_image(image)
            assert "the engine needs" in " ".join(m for _, m in doubles.trt.log_records)


def test_bad_rtx_runtime_settings_are_one_line():
    from sam3_trt.engines.rtx_runtime import RtxRuntimeSettings, parse_buckets

    for kwargs, words in (
        ({"kernel_specialization": "fast"}, "kernel specialization 'fast' is not one of eager, lazy, none"),
        ({"cuda_graphs": "on"}, "cuda graphs 'on' is not one of disabled, whole_graph_capture"),
        ({"shape_buckets": (1, 4, 2)}, "shape buckets [1, 4, 2] must be increasing positive integers"),
        ({"shape_buckets": (0, 1)}, "shape buckets [0, 1] must be increasing"),
    ):
        with pytest.raises(Sam3TrtError) as caught:
            RtxRuntimeSettings(**kwargs)
        assert words in str(caught.value)
    with pytest.raises(Sam3TrtError, match=r"rtx_runtime has unknown keys \['buckets'\]"):
        RtxRuntimeSettings.from_manifest({"rtx_runtime": {"buckets": [1]}})
    assert RtxRuntimeSettings.from_manifest({}) == RtxRuntimeSettings()  # folders built before it was recorded
    assert parse_buckets("none", "--shape-buckets") == () and parse_buckets("1,3", "x") == (1, 3)
    with pytest.raises(Sam3TrtError, match=r"--shape-buckets 'a,b': give increasing counts"):
        parse_buckets("a,b", "--shape-buckets")


def test_runtime_cache_whose_bytes_always_differ_is_written_once_per_close(engines, tmp_path, monkeypatch):
    """The unchanged-cache rule compares bytes; a runtime whose serialisation differs on every call (salted
    double) must still cost at most one write per close, and each written file must load back."""
    from sam3_trt.runtime.backends import tensorrt as trt_backend

    folder, export = _copy_engines(engines, tmp_path)
    cache = folder / "runtime_cache.bin"
    cache.unlink(missing_ok=True)  # earlier tests leave one, made on other fake GPUs: start without
    image = trt_scenario.images()[0]
    writes: list[str] = []
    replace = trt_backend.os.replace
    # os is shared: record the cache's writes only (the manifest check writes its stamp file the same way)
    monkeypatch.setattr(
        trt_backend.os,
        "replace",
        lambda src, dst: (writes.append(str(dst)) if Path(dst) == cache else None, replace(src, dst)),
    )
    salts = []
    for _ in range(3):
        with gpu_doubles(folder, export, memory="cuda-python") as doubles, warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            doubles.trt.salted_cache_bytes = True
            with Sam3Processor(folder, backend="tensorrt") as proc:
                proc.set_text_prompt("a red square", proc.set_image(image))
        assert not [x for x in w if "runtime cache" in str(x.message)]  # the salted file loaded back
        salts.append(json.loads(cache.read_bytes())["salt"])
    assert writes == [str(cache)] * 3  # one write per close, not one per graph or per save attempt
    assert len(set(salts)) == 3
    # with the real rule's assumption (same content, same bytes) a close with nothing new writes nothing
    with gpu_doubles(folder, export, memory="cuda-python"):
        with Sam3Processor(folder, backend="tensorrt") as proc:
            proc.set_text_prompt("a red square", proc.set_image(image))
    assert len(writes) == 4  # the unsalted bytes differ from the salted file once ...
    with gpu_doubles(folder, export, memory="cuda-python"):
        with Sam3Processor(folder, backend="tensorrt") as proc:
            proc.set_text_prompt("a red square", proc.set_image(image))
    assert len(writes) == 4  # ... and then stay the same


def test_version_compatible_engines_allow_host_code(engines, tmp_path, monkeypatch):
    from sam3_trt.engines.parse import make_logger
    from sam3_trt.runtime import artifacts

    folder, export = _copy_engines(engines, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "version_compatible": True}))
    with gpu_doubles(folder, export, memory="cuda-python") as doubles:
        with Sam3Processor(folder, backend="tensorrt") as proc:
            assert proc.backend.runtime.engine_host_code_allowed is True
        # what the runtime did before: a runtime that does not allow host code cannot load such a plan
        logger = make_logger(doubles.trt, "ERROR")
        doubles.gpu.set_device(0)
        plain = doubles.trt.Runtime(logger)
        assert plain.deserialize_cuda_engine((folder / "decoder.engine").read_bytes()) is None
        assert "host code is not allowed" in logger.last_error()
    # the version rule: version-compatible engines run on the same or a newer TensorRT, never an older one
    vc = {**manifest, "version_compatible": True}
    assert artifacts.engine_mismatch(vc, RTX_5090, "1.8.0.0") is None
    assert artifacts.engine_mismatch(vc, RTX_5090, "1.7.1.116") is None
    assert "the older rtx 1.7.0.1 is installed" in artifacts.engine_mismatch(vc, RTX_5090, "1.7.0.1")
    assert "engines need the exact version" in artifacts.engine_mismatch(manifest, RTX_5090, "1.8.0.0")
    monkeypatch.setattr(artifacts, "installed_trt_version", lambda flavour: "1.7.0.1")
    with gpu_doubles(folder, export, memory="cuda-python"):
        with pytest.raises(Sam3TrtError, match=r"the older rtx 1\.7\.0\.1 is installed"):
            Sam3Processor(folder, backend="tensorrt")


# -- errors a GPU user meets: one line each ------------------------------------------------------------
def test_engine_that_does_not_deserialize_is_one_line(engines, tmp_path):
    folder, export = _copy_engines(engines, tmp_path)
    with gpu_doubles(folder, export, memory="cuda-python"):
        (folder / "decoder.engine").write_bytes(b"\x00" * 1024)  # truncated after the double learned the plans
        with pytest.raises(Sam3TrtError, match=r"decoder: .*decoder.engine has 1024 bytes, its manifest says"):
            Sam3Processor(folder, backend="tensorrt")  # the manifest check catches it first
        with pytest.raises(Sam3TrtError) as err:
            Sam3Processor(folder, backend="tensorrt", verify=False)  # TensorRT itself refuses it too
    line = str(err.value)
    assert "\n" not in line
    for part in ("decoder.engine", "Serialization", "rtx 1.7.1.116 for sm120", "tensorrt_rtx", "RTX 5090", "sm120"):
        assert part in line, (part, line)


def test_engines_whose_graphs_disagree_with_the_specs_are_refused(engines, tmp_path):
    """The double's engines report their source graph's I/O, as TensorRT's do: an engine built from a graph
    whose output types or sizes differ from the specs fails the load check or the run's shape check."""
    import hashlib

    import onnx

    folder, export = _copy_engines(engines, tmp_path)
    graphs = tmp_path / "export"
    shutil.copytree(export, graphs)
    manifest = json.loads((folder / "manifest.json").read_text())
    for graph, change in (
        ("text_encoder", lambda m: setattr(m.graph.output[1].type.tensor_type, "elem_type", onnx.TensorProto.INT32)),
        ("decoder", lambda m: setattr(m.graph.output[0].type.tensor_type.shape.dim[1], "dim_value", 100)),
    ):
        path = graphs / f"{graph}.onnx"
        model = onnx.load(str(path), load_external_data=False)
        change(model)
        onnx.save(model, str(path))  # its weights stay in the data file beside it
        manifest["graphs"][graph]["onnx_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with gpu_doubles(folder, graphs, memory="cuda-python"):
        with pytest.raises(Sam3TrtError, match=r"text_encoder.engine: tensor 'text_mask' is INT32, the specs say bool"):
            Sam3Processor(folder, backend="tensorrt")
        manifest["graphs"]["text_encoder"] = json.loads((engines[0] / "manifest.json").read_text())["graphs"][
            "text_encoder"
        ]
        shutil.copy(export / "text_encoder.onnx", graphs / "text_encoder.onnx")
        (folder / "manifest.json").write_text(json.dumps(manifest))
    with gpu_doubles(folder, graphs, memory="cuda-python"):
        with Sam3Processor(folder, backend="tensorrt") as proc:
            state = proc.set_image(trt_scenario.images()[0])
            with pytest.raises(
                Sam3TrtError, match=r"pred_logits, the engine computes shape \(1, 100\), the specs \(1, 200\)"
            ):
                proc.set_text_prompt("a red square", state)


def test_profile_refusal_names_the_tensor_and_the_profile(engines):
    with gpu_doubles(*engines, memory="cuda-python"):
        with _tensorrt(engines) as proc:
            ctx = proc.backend.contexts["decoder"]
            with pytest.raises(
                Sam3TrtError,
                match=r"For input: boxes, TensorRT refused shape \(17, 1, 4\): .*\(1, 1, 4\) to \(16, 16, 4\)",
            ):
                proc.backend._set_shape("decoder", ctx, "boxes", (17, 1, 4))


def test_execution_failure_and_missing_tensor_are_one_line(engines):
    from dataclasses import replace

    from sam3_trt.runtime.backends.tensorrt import check_engine_io
    from sam3_trt.specs import SPECS, TensorSpec

    with gpu_doubles(*engines, memory="cuda-python"):
        with _tensorrt(engines) as proc:
            ctx = proc.backend.contexts["text_encoder"]
            ctx.execute_async_v3.side_effect = lambda handle: False
            with pytest.raises(
                Sam3TrtError, match="TensorRT execution of text_encoder failed on NVIDIA GeForce RTX 5090"
            ):
                proc.backend.run("text_encoder", {"input_ids": proc.tokenizer(["x"])})
            spec = SPECS["text_encoder"]
            renamed = replace(spec, outputs=(TensorSpec("text_embeddings", "float32", ("P", 32, 256)), spec.outputs[1]))
            with pytest.raises(Sam3TrtError, match=r"has no tensor 'text_embeddings' \(it has \['input_ids'"):
                check_engine_io(proc.backend.trt, proc.backend.engines["text_encoder"], renamed, Path("x.engine"))


def test_cuda_errors_name_the_call(engines):
    with gpu_doubles(*engines, memory="cuda-python") as doubles:
        with _tensorrt(engines) as proc:
            doubles.cudart.fail("cudaMallocFromPoolAsync", "cudaErrorMemoryAllocation")
            with pytest.raises(
                Sam3TrtError, match=r"CUDA call cudaMallocFromPoolAsync\(\d+\) failed: cudaErrorMemoryAllocation"
            ):
                proc.set_image(trt_scenario.images()[0])


def test_no_gpu_and_no_device_memory_are_one_line(engines, monkeypatch):
    from sam3_trt.runtime import device_memory
    from sam3_trt.runtime.device_memory import torch as torch_memory

    with gpu_doubles(*engines, memory="cuda-python", gpu=FakeGpu(names=(), compute_capabilities=())):
        with pytest.raises(Sam3TrtError, match="cannot run here: no usable GPU"):
            _tensorrt(engines)
    monkeypatch.setattr(torch_memory, "torch_cuda_available", lambda: False)

    def no_cuda_python():
        raise ImportError("No module named 'cuda'")

    monkeypatch.setattr("sam3_trt.device.cudart", no_cuda_python)
    with pytest.raises(Sam3TrtError, match=r"needs device memory: pip install 'sam3-trt\[rtx\]'"):
        device_memory.open_device_memory("auto")
    with pytest.raises(Sam3TrtError, match=r"needs cuda-python: pip install 'sam3-trt\[rtx\]'"):
        device_memory.open_device_memory("cuda-python")
    with pytest.raises(Sam3TrtError, match="'pycuda' is not supported; use 'cuda-python'"):
        device_memory.open_device_memory("pycuda")


def test_closed_processor_refuses_calls(engines):
    with gpu_doubles(*engines, memory="torch"):
        proc = _tensorrt(engines)
        state = proc.set_image(trt_scenario.images()[0])
        proc.close()
        proc.close()  # twice is fine
        with pytest.raises(Sam3TrtError, match="the tensorrt backend is closed; create a new processor"):
            proc.set_text_prompt("a red square", state)


def test_auto_backend_follows_the_folder(engines, tiny_export):
    folder, export = engines
    with Sam3Processor(export) as proc:
        assert proc.backend.name == "onnxruntime"
    with pytest.raises(Sam3TrtError, match="cannot run here: no usable GPU"):
        Sam3Processor(folder)  # an engine folder never falls back to the CPU silently
    with gpu_doubles(folder, export, memory="cuda-python"):
        with Sam3Processor(folder.parent) as proc:  # a parent of engine folders: the matching one
            assert proc.backend.name == "tensorrt" and proc.backend.folder == folder


def test_bench_tensorrt_worker_reports_device_and_engine_times(engines, tmp_path):
    from sam3_trt.checks.bench import WorkerConfig, run_worker

    folder, export = engines
    image = tmp_path / "bench.png"
    trt_scenario.images()[0].save(image)
    cfg = WorkerConfig("tensorrt", str(folder), str(image), ["a red square"], repeats=1, warmup=0, threads=2)
    gpu = FakeGpu(total_mb=12_345)  # not the double's default: the worker must report the device's own figure
    with gpu_doubles(folder, export, memory="cuda-python", gpu=gpu):
        result = run_worker(cfg)
    device = result["device"]
    assert device["name"].startswith("NVIDIA GeForce RTX 5090") and device["device_memory"] == "cuda-python"
    assert set(device["engine_gpu_time"]) == {"vision_encoder", "text_encoder", "decoder"}
    assert device["memory"]["total_mb"] == 12345.0
    assert device["scratch_mb"] == 13.0  # the decoder's (the largest) in the double's made-up sizes
    # the stage columns are the engines' CUDA-event times, not the enqueue's wall time around each run (the
    # double's engines run when their stream is waited for, as a GPU's do: the enqueue alone takes ~0 ms)
    for graph in ("vision_encoder", "text_encoder"):  # each ran once per repeat: the same run
        engine = device["engine_gpu_time"][graph]["median_ms"]
        assert result["stages"][graph]["median_ms"] == pytest.approx(engine) and engine > 1.0, graph
    # the decoder ran for the cold and the warm prompt; its column is the cold one's, the engine time the last's
    assert result["stages"]["decoder"]["median_ms"] > 0.3 * device["engine_gpu_time"]["decoder"]["median_ms"] > 0.3
    # TensorRT for RTX: every bucketed shape compiled before the timed runs, what it cost reported
    assert result["warm_up"]["shapes"] == {"vision_encoder": 1, "text_encoder": 2, "decoder": 3}  # buckets 1, 4
    assert result["rtx_runtime"]["kernel_specialization"] == "eager"


# -- per-call costs (cuda-python layer): what each call copies, synchronises and allocates ------------------


def test_call_costs_stay_within_budget(engines):
    """After warm-up, a prompt that keeps nothing copies back its scores only (804 bytes, one synchronisation;
    before: all 200 masks, 66.4 MB, 6 synchronisations, a reserve grown from the driver), a repeated prompt runs no text encoder, and no prompt
    allocates from the driver (the backend's own pool keeps freed memory)."""
    from sam3_trt.testing.costs import MASK_ROW_BYTES, budget_problems, measure_call_costs

    folder, export = engines
    image = trt_scenario.images()[0]
    # a 4-prompt batch: the same one-copy-per-batch mechanism as 16, at a quarter of the decoder's CPU time
    batch = ("red square", "blue disc", "green triangle", "yellow blob")
    nothing = {c.call: c for c in measure_call_costs(folder, export, image, threshold=1.0, batch=batch)}
    assert budget_problems(list(nothing.values()), batch_size=4) == []
    extra = nothing["extra prompt"]
    assert extra.kept == 0 and extra.device_to_host_bytes <= 2**20 and extra.synchronisations == 1
    assert extra.engine_runs == {"text_encoder": 1, "decoder": 1}
    assert nothing["repeated prompt"].engine_runs == {"decoder": 1}
    assert nothing["4-prompt batch"].synchronisations == 1  # one copy of all 4 prompts' scores
    everything = {c.call: c for c in measure_call_costs(folder, export, image, threshold=0.0, batch=())}
    assert budget_problems(list(everything.values())) == []
    kept = everything["extra prompt"]
    assert kept.kept == 200 and 200 * MASK_ROW_BYTES <= kept.device_to_host_bytes <= 200 * MASK_ROW_BYTES + 2**20
    # the check itself fails on the costs of the code before this budget (measured with the same doubles)
    before = dataclasses.replace(extra, device_to_host_bytes=66_392_004, synchronisations=6, driver_allocations=1)
    assert budget_problems([before]) == [
        "extra prompt: device-to-host bytes 66392004 > budget 1048576",
        "extra prompt: driver allocations 1 > budget 0",
        "extra prompt: synchronisations 6 > budget 1",
    ]
    # uploads: the image (12 MB of pixels) and prompts' token ids come through pinned memory; before, pageable
    upload = nothing["set_image"]
    assert upload.host_to_device_bytes >= 3 * 1008 * 1008 * 4 and upload.host_to_device_pageable_bytes == 0
    pageable = dataclasses.replace(upload, host_to_device_pageable_bytes=upload.host_to_device_bytes)
    assert budget_problems([pageable]) == [
        f"set_image: pageable host-to-device bytes {upload.host_to_device_bytes} > budget 0"
    ]


def test_uploads_queue_behind_running_engines_and_the_ring_waits_before_reuse(engines, reference):
    """From pinned memory the next image's upload is queued behind the running vision run (from pageable memory
    it waited for it); a staging region is written again only after the copy that read it ran, so three
    images in flight still give each its own features."""
    folder, export = engines
    images = [*trt_scenario.images(), trt_scenario.images()[0].transpose(0)]
    with gpu_doubles(folder, export, memory="cuda-python") as doubles:
        with _tensorrt(engines, confidence_threshold=0.0) as proc:
            proc.set_image(images[0])
            proc.backend.memory.synchronize()
            stream = doubles.gpu.stream(proc.backend.memory.stream_handle)
            stalls = doubles.cudart.pageable_stalls
            states = [proc.set_image(im) for im in images]  # the ring (2 x 12 MB) comes round for the third
            pending = [label for label, _ in stream.pending]
            assert pending.count("execute vision_encoder") >= 2  # nothing waited for the earlier images' runs
            assert doubles.cudart.pageable_stalls == stalls
            got = [trt_scenario._result(proc.set_text_prompt("a red square", st)) for st in states[:2]]
    assert trt_scenario.compare({"a": reference["text"]}, {"a": got[0]}) == []
    # the second image: its features are its own, not the third's (the ring waited before reusing the region)
    with Sam3Processor(export, backend="onnxruntime", confidence_threshold=0.0) as ort:
        want = trt_scenario._result(ort.set_text_prompt("a red square", ort.set_image(images[1])))
    assert trt_scenario.compare({"b": want}, {"b": got[1]}) == []


def test_kept_rows_and_max_detections_match_onnxruntime(engines):
    """Copying back only the kept rows (runs of non-adjacent queries) gives ONNX Runtime's results, and
    ``max_detections`` keeps the best scores, in query order, before anything is upsampled."""
    import numpy as np

    folder, export = engines
    image = trt_scenario.images()[0]
    with Sam3Processor(export, backend="onnxruntime", confidence_threshold=0.0) as ort:
        all_scores = ort.set_text_prompt("a red square", ort.set_image(image))["scores"].numpy()
    threshold = float(np.sort(all_scores)[-21])  # about 20 queries kept, scattered over the 200
    kept_queries = np.flatnonzero(all_scores > threshold)
    assert 10 <= kept_queries.size <= 30 and (np.diff(kept_queries) > 1).any()
    for limit in (None, 3):
        with Sam3Processor(export, backend="onnxruntime", confidence_threshold=threshold, max_detections=limit) as ort:
            want = trt_scenario._result(ort.set_text_prompt("a red square", ort.set_image(image)))
        with gpu_doubles(folder, export, memory="cuda-python"):
            with _tensorrt(engines, device_memory="cuda-python", confidence_threshold=threshold) as proc:
                proc.max_detections = limit
                got = trt_scenario._result(proc.set_text_prompt("a red square", proc.set_image(image)))
        assert trt_scenario.compare({"case": want}, {"case": got}) == [], limit
        expected = kept_queries.size if limit is None else limit
        assert len(got["scores"]) == expected
        if limit is not None:  # the three best of the kept, in query order
            best = np.sort(kept_queries[np.argsort(-all_scores[kept_queries], kind="stable")[:limit]])
            np.testing.assert_allclose(got["scores"], all_scores[best], rtol=0, atol=1e-6)


def test_row_views_are_bound_at_aligned_addresses(engines):
    """TensorRT takes 256-byte aligned tensor addresses only (the double refuses others, as TensorRT does). A
    prompt cached from row 1 of a two-prompt text batch has its ``text_mask`` 32 bytes into the batch's
    allocation: it is copied to aligned memory before the decoder binds it."""
    import numpy as np

    image = trt_scenario.images()[0]
    with gpu_doubles(*engines, memory="cuda-python"):
        with _tensorrt(engines, device_memory="cuda-python") as proc:
            state = proc.set_image(image)
            proc.set_confidence_threshold(0.0)
            batch = proc.set_text_prompts(["a red square", "blue disc"], state)
            cached_mask = proc._text_cache["blue disc"][1]
            assert cached_mask.ptr % 256 == 32
            alone = proc.set_text_prompt("blue disc", state)  # bound (aligned copy) and run, not refused
            np.testing.assert_allclose(alone["scores"], batch[1]["scores"], rtol=0, atol=1e-6)
            row = proc.backend.memory.empty((2, 32), "bool")[1]
            assert not proc.backend.contexts["decoder"].set_tensor_address("text_mask", row.ptr)
            with pytest.raises(Sam3TrtError, match="refused the device address of tensor 'text_mask'"):
                proc.backend._bind(proc.backend.contexts["decoder"], "text_mask", row.ptr)
