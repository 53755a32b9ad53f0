"""Engine targets and builds: TensorRT for RTX builds real engines here, ahead of time, without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sam3_trt.device import GpuInfo, gpu_info
from sam3_trt.engines.parse import rtx_available
from sam3_trt.engines.targets import RTX_COMPUTE_CAPABILITIES, TARGETS, resolve_target
from sam3_trt.errors import Sam3TrtError
from sam3_trt.specs import SPECS

needs_rtx = pytest.mark.skipif(
    not rtx_available(), reason="tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')"
)


@pytest.mark.parametrize(
    ("name", "sm", "flavour"),
    [
        ("5090", "sm120", "rtx"),
        ("RTX 4090", "sm89", "rtx"),
        ("3090", "sm86", "rtx"),
        ("H100", "sm90", "tensorrt"),
        ("a100", "sm80", "tensorrt"),
        ("t4", "sm75", "tensorrt"),
        ("orin", "sm87", "tensorrt"),
        ("sm89", "sm89", "rtx"),
    ],
)
def test_target_table(name, sm, flavour):
    target = resolve_target(name)
    assert (target.sm, target.flavour) == (sm, flavour)


def test_target_errors_and_overrides():
    with pytest.raises(Sam3TrtError, match="unknown GPU 'gtx9000'"):
        resolve_target("gtx9000")
    with pytest.raises(Sam3TrtError, match="TensorRT for RTX cannot target sm90"):
        resolve_target("h100", flavour="rtx")
    assert resolve_target("4090", flavour="tensorrt").flavour == "tensorrt"
    with pytest.raises(Sam3TrtError, match="--gpu auto needs a local NVIDIA GPU"):
        resolve_target("auto", GpuInfo(False, reason="no driver"))
    geforce = GpuInfo(True, ("NVIDIA GeForce RTX 4090",), ((8, 9),))
    assert resolve_target("auto", geforce).name == "sm89"  # auto targets are named by compute capability
    assert (resolve_target("auto", geforce).sm, resolve_target("auto", geforce).flavour) == ("sm89", "rtx")
    h100 = GpuInfo(True, ("NVIDIA H100 80GB HBM3",), ((9, 0),))
    assert resolve_target("auto", h100).flavour == "tensorrt"


def test_every_target_can_be_built_by_its_flavour():
    """The table against what TensorRT for RTX can target (FACTS: SM75-SM121, FP32 from SM80, no Hopper)."""
    by_description: dict[str, set[str]] = {}
    for name, target in TARGETS.items():
        assert resolve_target(name) == target  # every row resolves to itself
        by_description.setdefault(target.description, set()).add(target.sm)
        major = int(target.sm[2:-1])
        if target.flavour == "rtx":
            # TensorRT for RTX builds FP32 (export) graphs only from SM80: an RTX target must be one of those
            assert target.sm in RTX_COMPUTE_CAPABILITIES and major >= 8, name
    # one GPU, one compute capability, whatever name reaches it
    assert all(len(sms) == 1 for sms in by_description.values()), by_description


@needs_rtx
def test_rtx_compute_capability_table_matches_tensorrt_for_rtx():
    import tensorrt_rtx as trt

    enum = {m.lower() for m in trt.ComputeCapability.__members__}
    assert set(RTX_COMPUTE_CAPABILITIES) <= enum  # each one the builder is asked for exists
    assert "sm90" not in enum  # Hopper needs standard TensorRT: the table routes h100/h200 there
    assert {t.sm for t in TARGETS.values() if t.flavour == "rtx"} <= enum


@needs_rtx
def test_rtx_builds_every_graph_without_a_gpu(rtx_engines):
    root, manifest = rtx_engines
    folder = root / "5090"
    assert manifest["kind"] == "engines" and manifest["flavour"] == "rtx"
    assert manifest["trt_version"] == "1.7.1.116"  # the version the [rtx] extra pins
    assert manifest["compute_capabilities"] == ["sm120"]
    if not gpu_info().available:
        assert manifest["device_seen"] == "built ahead of time without a GPU"
    for name in SPECS:
        entry = manifest["graphs"][name]
        assert (folder / entry["file"]).stat().st_size > 100_000
    assert (folder / manifest["tokenizer"]["file"]).is_file()
    assert manifest["weights"]["kind"] == "random"
    assert manifest["precision"]["tf32"] is False and manifest["precision"]["parity_column"] == "fp32"


@needs_rtx
@pytest.mark.parametrize("tf32", [False, True])
def test_builder_config_holds_the_specs_profile_and_precision_flags(tf32):
    """What goes into TensorRT, read back from its own objects: the profile (get_shape), TF32, the target."""
    import tensorrt_rtx as trt

    from sam3_trt.engines.builder import BuildOptions, build_config
    from sam3_trt.engines.parse import make_logger

    builder = trt.Builder(make_logger(trt))
    for name, spec in SPECS.items():
        config, profile = build_config(trt, builder, name, resolve_target("4090"), BuildOptions(tf32=tf32))
        assert config.num_optimization_profiles == 1
        for tensor in spec.inputs:
            lo, opt, hi = (tuple(d) for d in profile.get_shape(tensor.name))
            dims = {d.name: d for d in spec.dims}
            for axis, size in enumerate(tensor.shape):  # dynamic axes span the Dim's range, the rest is fixed
                want = (size, size, size) if isinstance(size, int) else (dims[size].min, dims[size].opt, dims[size].max)
                assert (lo[axis], opt[axis], hi[axis]) == want, (name, tensor.name, axis)
        assert config.get_flag(trt.BuilderFlag.TF32) is tf32  # TensorRT's default is on: off unless asked
        assert config.get_compute_capability(0) == trt.ComputeCapability.SM89


@needs_rtx
def test_runtime_refuses_engines_it_cannot_run(rtx_engines):
    from sam3_trt import Sam3Processor
    from sam3_trt.runtime.artifacts import resolve_artifacts

    root, _ = rtx_engines
    found = resolve_artifacts(root / "5090")
    assert found.kind == "engines"
    info = gpu_info()
    if info.available and info.sm == "sm120":
        pytest.skip("this machine could run the sm120 engines")
    with pytest.raises(Sam3TrtError, match="cannot run here"):
        Sam3Processor(root / "5090")
    with pytest.raises(Sam3TrtError, match=r"no engine folder in .* runs here"):
        Sam3Processor(root)
    with pytest.raises(Sam3TrtError, match="is an engine folder; pass the export folder"):
        Sam3Processor(root / "5090", backend="onnxruntime")


def test_build_for_a_gpu_that_needs_standard_tensorrt_fails_cleanly(tiny_export, tmp_path):
    if gpu_info().available:
        pytest.skip("a GPU is present: the message under test is for machines without one")
    out, _ = tiny_export
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sam3_trt.cli",
            "build",
            "--gpu",
            "h100",
            "--onnx-dir",
            str(out),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert (
        "needs standard TensorRT" in line
        and "sam3-trt build --gpu h100 --onnx-dir EXPORT" in line
        and "h100.plan.json" in line
    )
    assert [p.name for p in tmp_path.iterdir()] == ["h100.plan.json"]  # the plan, no engine folder
    plan = json.loads((tmp_path / "h100.plan.json").read_text())
    assert plan["target"]["sm"] == "sm90" and "H100" in plan["needs"]
    assert plan["run_on_the_target"][-1].startswith("sam3-trt build --gpu h100 --onnx-dir")
    assert set(plan["graphs"]) == set(SPECS) and plan["precision"]["mode"] == "fp32"


@pytest.mark.gpu
def test_tensorrt_backend_matches_upstream_on_a_gpu(tiny_export, tiny_model, tmp_path):
    """GPU only: build engines for the local GPU and run detection parity through the TensorRT backend."""
    info = gpu_info()
    if not info.available:
        pytest.skip(
            f"needs an NVIDIA GPU ({info.reason}); the TensorRT backend has not been run on hardware by this project"
        )
    import importlib.util

    from sam3_trt import Sam3Processor
    from sam3_trt.assets.images import demo_image
    from sam3_trt.checks.detection_parity import run_detection_parity
    from sam3_trt.engines.builder import build_engines

    out, _ = tiny_export
    model, origin = tiny_model
    target = resolve_target("auto", info)
    module = "tensorrt_rtx" if target.flavour == "rtx" else "tensorrt"
    if importlib.util.find_spec(module) is None:
        pytest.skip(
            f"{module} is not installed (pip install 'sam3-trt[{'rtx' if target.flavour == 'rtx' else 'gpu'}]')"
        )
    build_engines(out, tmp_path, target)
    with Sam3Processor(tmp_path, backend="tensorrt") as proc:
        report = run_detection_parity(model, proc, [demo_image()], origin.describe(), "tensorrt")
    assert report.passed, json.dumps(report.to_dict())[:4000]
