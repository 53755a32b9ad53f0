"""`sam3-trt inspect` and the TensorRT tool lines in build plans, checked against the graphs themselves."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections import Counter

import pytest

onnx = pytest.importorskip("onnx")

from sam3_trt.checks.inspection import inspect_folder  # noqa: E402
from sam3_trt.specs import SPECS  # noqa: E402


def _onnx_io(path):
    model = onnx.load(str(path), load_external_data=False)
    return [
        (v.name, onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name)
        for v in (*model.graph.input, *model.graph.output)
    ]


def test_inspect_export_reads_io_and_precision_from_the_graphs(tiny_export, tiny_fp16):
    export, _ = tiny_export
    _, fp16_dir, fp16_manifest = tiny_fp16
    fp32 = inspect_folder(export)
    fp16 = inspect_folder(fp16_dir)
    assert (fp32["kind"], fp32["precision"], fp16["precision"]) == ("onnx-export", "fp32", "fp16")
    for name in SPECS:
        g = fp32["graphs"][name]
        assert [(t["name"], t["dtype"]) for t in (*g["inputs"], *g["outputs"])] == _onnx_io(export / f"{name}.onnx")
        assert "fp16" not in g["by_precision"] and g["by_precision"]["fp32"] > 0
        assert sum(g["by_precision"].values()) == g["nodes"] == sum(g["by_op"].values())
        # FP16 counts read from the converted graph agree with what the FP16 pass reported
        assert fp16["graphs"][name]["by_precision"]["fp16"] == fp16_manifest["precision"]["graphs"][name]["fp16_nodes"]
    assert fp32["graphs"]["decoder"]["inputs"][5]["shape"] == ["P=1..16", "N=1..16", 4]
    assert fp32["graphs"]["vision_encoder"]["inputs"][0]["shape"] == ["B=1..4", 3, 1008, 1008]


def test_inspect_engine_folder_without_a_gpu_and_through_the_doubles(rtx_engines, tiny_export):
    from sam3_trt.testing import gpu_doubles

    root, _ = rtx_engines
    folder = root / "5090"
    proc = subprocess.run(
        [sys.executable, "-m", "sam3_trt.cli", "inspect", str(folder), "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)  # stdout is JSON only
    assert report["kind"] == "engines" and report["provenance"]["compute_capabilities"] == ["sm120"]
    assert report["engine_layers"].startswith("not available: no usable GPU")
    assert report["graphs"]["text_encoder"]["inputs"][0]["shape"] == ["P=1..16", 32]
    # what inspect derives, against sources it does not read: the ranges it prints are the engines' recorded
    # optimisation profiles (written by the builder), the op counts those of the ONNX files read here
    manifest = json.loads((folder / "manifest.json").read_text())
    export, _ = tiny_export
    for name, entry in manifest["graphs"].items():
        for tensor in report["graphs"][name]["inputs"]:
            low, _, high = entry["profile"][tensor["name"]]
            printed = [(d, d) if isinstance(d, int) else tuple(int(x) for x in d.split("=")[1].split("..")) for d in
                       tensor["shape"]]  # fmt: skip
            assert printed == list(zip(low, high, strict=True)), (name, tensor)
        graph = onnx.load(str(export / f"{name}.onnx"), load_external_data=False).graph
        assert report["graphs"][name]["by_op"] == dict(Counter(n.op_type for n in graph.node)), name
    # through the doubles the engines load, and inspect hands on each engine inspector's JSON, parsed
    with gpu_doubles(folder, export, memory="cuda-python"):
        layers = inspect_folder(folder)["engine_layers"]
    assert set(layers) == set(SPECS) and all(isinstance(layers[n], dict) and layers[n]["Layers"] for n in SPECS)


def test_build_plan_tool_lines_use_the_specs_shapes(tiny_export, tmp_path):
    """Each plan's polygraphy line parses with Polygraphy's own parser; trtexec's carries the same shapes."""
    polygraphy_convert = pytest.importorskip("polygraphy.tools.convert")
    from sam3_trt.engines.builder import BuildOptions, build_plan
    from sam3_trt.engines.targets import resolve_target

    export, manifest = tiny_export
    plan = build_plan(export, manifest, tmp_path, resolve_target("h100"), BuildOptions(tf32=False))
    parser = argparse.ArgumentParser()
    polygraphy_convert.Convert().setup_parser(parser.add_subparsers())
    for name, spec in SPECS.items():
        lines = plan["graphs"][name]["same_build_with"]
        args = parser.parse_args(shlex.split(lines["polygraphy"])[1:])
        assert args.model_file == str(export / spec.onnx_file) and args.strongly_typed and not args.tf32
        for i, which in enumerate(("min", "opt", "max")):
            parsed = dict(s.split(":", 1) for s in getattr(args, f"trt_{which}_shapes")[0])
            want = {t: lims[i] for t, lims in spec.profile().items()}
            assert {t: tuple(json.loads(v)) for t, v in parsed.items()} == want, (name, which)
            flag = next(a for a in shlex.split(lines["trtexec"]) if a.startswith(f"--{which}Shapes="))
            got = dict(item.split(":") for item in flag.split("=", 1)[1].split(","))
            assert {t: tuple(int(d) for d in v.split("x")) for t, v in got.items()} == want, (name, which)
        assert "--stronglyTyped" in lines["trtexec"] and "--noTF32" in lines["trtexec"]
