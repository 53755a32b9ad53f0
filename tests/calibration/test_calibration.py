"""Calibration: sets, streamed statistics, the data-driven FP16 keep-list, INT8/FP8 Q/DQ graphs."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sam3_trt.calibration.dataset import default_set, load_set, read_prompts
from sam3_trt.calibration.stats import FP16_MAX, TensorStats, next_chunk
from sam3_trt.errors import Sam3TrtError
from sam3_trt.specs import SPECS

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- sets
def test_sets_sample_deterministically_and_hash_their_content(tmp_path):
    full = default_set(tmp_path / "d", count=5)
    assert len(full.images) == 5 and full.prompts and "generated" in full.source
    prompts = tmp_path / "d" / "prompts.txt"
    a = load_set(tmp_path / "d" / "images", prompts, limit=3, seed=1)
    b = load_set(tmp_path / "d" / "images", prompts, limit=3, seed=1)
    c = load_set(tmp_path / "d" / "images", prompts, limit=3, seed=2)
    assert a == b and len(a.images) == 3 and list(a.images) == sorted(a.images)
    assert a.images != c.images and a.sha256 != c.sha256
    prompts.write_text(prompts.read_text() + "one more\n")
    assert load_set(tmp_path / "d" / "images", prompts, limit=3, seed=1).sha256 != a.sha256
    with open(a.images[0], "ab") as fh:  # one changed byte in one image changes the hash
        fh.write(b"\0")
    assert load_set(tmp_path / "d" / "images", prompts, limit=3, seed=1).sha256 not in (a.sha256,)
    # --limit applies to the generated default set too (it was once ignored there)
    limited = default_set(tmp_path / "e", count=5, limit=2, seed=1)
    assert len(limited.images) == 2 and "generated" in limited.source


def test_bad_sets_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "p.txt").write_text("# only a comment\n\n")
    with pytest.raises(Sam3TrtError, match="holds no images"):
        load_set(tmp_path / "empty", tmp_path / "p.txt")
    with pytest.raises(Sam3TrtError, match="is not a folder"):
        load_set(tmp_path / "missing", tmp_path / "p.txt")
    with pytest.raises(Sam3TrtError, match="no prompts"):
        read_prompts(tmp_path / "p.txt")
    (tmp_path / "many.txt").write_text("\n".join(f"p{i}" for i in range(17)))
    with pytest.raises(Sam3TrtError, match="at most 16"):
        read_prompts(tmp_path / "many.txt")
    default_set(tmp_path / "d", count=2)
    with pytest.raises(Sam3TrtError, match="--limit 0"):
        load_set(tmp_path / "d" / "images", tmp_path / "d" / "prompts.txt", limit=0)


# ---------------------------------------------------------------- statistics
def test_tensor_stats_are_exact_where_it_matters():
    s = TensorStats("t", "n")
    x = np.array([0.0, 1e-6, -3.0, 7e4, 1.0 + 2**-12], np.float32)
    s.update(x)
    s.update(np.array([np.inf, -2.0], np.float32))
    assert (s.count, s.nonfinite, s.over_fp16, s.subnormal_fp16) == (6, 1, 1, 1)
    assert (s.min, s.max, s.absmax) == (-3.0, 7e4, 7e4)
    finite = np.array([0.0, 1e-6, -3.0, 7e4, 1.0 + 2**-12, -2.0], np.float64)
    rounded = finite.astype(np.float32).astype(np.float16).astype(np.float64)
    err = np.where(np.abs(finite) > FP16_MAX, np.abs(finite), finite - rounded)
    assert s.fp16_rel_err == pytest.approx(math.sqrt((err**2).sum() / (finite**2).sum()))
    assert s.percentile_abs(100) == 2.0**17  # 7e4 lies in [2^16, 2^17)
    assert s.percentile_abs(10) == 0.0  # the exact zero
    assert TensorStats.from_dict(s.to_dict()) == s


def test_chunks_respect_the_budget_and_learn_unknown_sizes():
    watch = [("a", "n", 60), ("b", "n", 50), ("c", "n", None), ("d", "n", 10)]
    assert [t for t, _, _ in next_chunk(watch, 100, unknown_bytes=30)] == ["a"]
    assert [t for t, _, _ in next_chunk(watch[1:], 100, unknown_bytes=30)] == ["b", "c", "d"]
    assert [t for t, _, _ in next_chunk(watch[1:], 100, unknown_bytes=80)] == ["b"]
    assert [t for t, _, _ in next_chunk([("big", "n", 500)], 100, unknown_bytes=1)] == ["big"]  # never empty


def test_stats_stream_in_chunks_and_match_one_pass(tiny_export, tmp_path):
    """Tiny budget (many passes) and a large one (one pass) give the same statistics.

    ONNX Runtime fuses differently when other tensors are exposed, so values agree to float rounding.
    """
    from sam3_trt.calibration.dataset import graph_feeds
    from sam3_trt.calibration.stats import collect_stats

    src, _ = tiny_export
    cal = default_set(tmp_path / "set", count=2)
    feeds = graph_feeds(cal, src / "bpe_simple_vocab_16e6.txt.gz")
    spec = SPECS["text_encoder"]
    messages: list[str] = []
    small = collect_stats(src / spec.onnx_file, feeds, spec.input_names, 1 << 10, messages.append)
    large = collect_stats(src / spec.onnx_file, feeds, spec.input_names, 1 << 34)
    assert len(messages) > 5  # many passes
    assert small.keys() == large.keys() and len(small) > 20
    for name in small:
        a, b = small[name], large[name]
        assert (a.count, a.over_fp16, a.nonfinite, sum(a.hist)) == (b.count, b.over_fp16, b.nonfinite, sum(b.hist))
        assert a.absmax == pytest.approx(b.absmax, rel=1e-5), name
        assert a.fp16_rel_err == pytest.approx(b.fp16_rel_err, rel=1e-3, abs=1e-9), name


# ---------------------------------------------------------------- planted overflow -> kept FP32 by the data
@pytest.fixture(scope="module")
def planted_text_export(tiny_model, tmp_path_factory):
    """Tiny model whose first text block's c_proj output reaches ~3e5 in one channel (FP16 max: 65504).

    c_proj (a matmul the default policy runs in FP16) gets row 5 = 8000 (under the converter's 10000
    constant clip); its GELU inputs sum to 25-43 per token, so channel 5 is ~2e5-3.4e5. ln_final
    normalises the residual stream, so FP32 outputs stay finite.
    """
    import torch

    from sam3_trt.export.exporter import ExportOptions, export

    model, origin = tiny_model
    planted = copy.deepcopy(model)
    block = planted.backbone.language_backbone.encoder.transformer.resblocks[0]
    with torch.no_grad():
        block.mlp.c_proj.weight[5].fill_(8000.0)
    out = tmp_path_factory.mktemp("planted-text") / "tiny"
    export(planted, origin, out, ExportOptions(parity=False, rtx_parse=False))
    return out


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calset")
    default_set(folder, count=2)
    (folder / "two.txt").write_text("a red square\nblue disc\n")
    return load_set(folder / "images", folder / "two.txt")


def _same_set_elsewhere(cal, tmp_path):
    """The same images and prompts loaded from another folder: what a recorded set hash must identify."""
    import shutil

    from sam3_trt.calibration.dataset import load_set

    copy = tmp_path / "same-set-elsewhere"
    shutil.copytree(cal.images[0].parent, copy / "images")
    (copy / "prompts.txt").write_text("\n".join(cal.prompts) + "\n")
    return load_set(copy / "images", copy / "prompts.txt")


def test_set_hash_identifies_content_not_location(small_set, tmp_path):
    elsewhere = _same_set_elsewhere(small_set, tmp_path)
    assert elsewhere.sha256 == small_set.sha256 and elsewhere.images != small_set.images
    first = elsewhere.images[0]
    first.write_bytes(first.read_bytes() + b"\0")  # one byte more in one image
    from sam3_trt.calibration.dataset import load_set

    assert load_set(first.parent, tmp_path / "same-set-elsewhere" / "prompts.txt").sha256 != small_set.sha256


def test_planted_overflow_is_detected_and_kept_fp32(planted_text_export, small_set, tmp_path):
    from sam3_trt.calibration.run import calibrate

    report = calibrate(planted_text_export, small_set, "fp16-policy", tmp_path / "cal")
    changed = report["changed_nodes"]
    assert changed, "the planted overflow was not detected"
    assert {c["graph"] for c in changed} == {"text_encoder"}
    assert any(c["op_type"] == "MatMul" and "resblocks.0.mlp.c_proj" in c["scope"] for c in changed), changed
    assert all("abs max" in c["reason"] for c in changed)
    unsafe = report["unsafe_tensors"]["text_encoder"]
    assert unsafe and not report["unsafe_tensors"]["vision_encoder"]
    est = report["estimate_on_first_image"]
    assert not est["default"]["passed"] and est["default"]["outputs"]["text_encoder.text_features"]["nonfinite"] > 0
    assert report["calibration_set"]["sha256"] == _same_set_elsewhere(small_set, tmp_path).sha256
    # the policy file is a policy the engine stage reads; the FP16 export was made with it
    from sam3_trt.engines.precision import load_policy
    from sam3_trt.manifest import read_manifest

    policy = load_policy(tmp_path / "cal" / "policy.json")
    assert policy.name == "default+calibrated" and len(policy.keep_fp32) == 1 + len(changed)
    fp16 = read_manifest(tmp_path / "cal" / "fp16")
    assert fp16["precision"]["policy"]["name"] == "default+calibrated"
    # cached statistics: a second run reads them instead of recomputing
    from sam3_trt.calibration.run import graph_stats

    messages: list[str] = []
    manifest = read_manifest(planted_text_export)
    again = graph_stats(planted_text_export, manifest, small_set, tmp_path / "cal" / "stats", 4 << 30, messages.append)
    assert sum("cached" in m for m in messages) == 3
    assert set(unsafe) <= set(again["text_encoder"])
    assert all(again["text_encoder"][t].absmax >= FP16_MAX / 2 for t, why in unsafe.items() if "abs max" in why)


# ---------------------------------------------------------------- INT8 / FP8 Q/DQ vision encoder
@pytest.fixture(scope="module")
def int8_export(tiny_export, small_set, tmp_path_factory):
    from sam3_trt.calibration.run import calibrate

    src, _ = tiny_export
    out = tmp_path_factory.mktemp("int8") / "tiny-int8"
    return out, calibrate(src, small_set, "int8", out, exclude=[r"patch_embed"])


def test_int8_vision_graph_runs_and_reports_accuracy(int8_export, small_set, tmp_path):
    import onnx

    from sam3_trt.manifest import read_manifest, verify_files

    out, report = int8_export
    manifest = read_manifest(out, kind="onnx-export")
    verify_files(out, manifest)
    assert manifest["precision"]["mode"] == "int8"
    assert manifest["precision"]["calibration_set"]["sha256"] == _same_set_elsewhere(small_set, tmp_path).sha256
    model = onnx.load(str(out / "vision_encoder.onnx"), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    quant = report["quantization"]
    assert quant["quantize_linear_nodes"] > 0 and quant["excluded_nodes"]  # patch_embed left FP32
    # attention's q@k^T and p@v stay float: two per Softmax, none reading a DequantizeLinear output
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert quant["attention_matmuls_kept_float"] == 2 * len(softmaxes) > 0
    for sm in softmaxes:
        scores = next(n for n in model.graph.node if sm.input[0] in n.output)
        assert scores.op_type == "MatMul" and all(producers.get(i) != "DequantizeLinear" for i in scores.input)
    # activation scales come from the streamed ranges handed to the quantizer as its calibration cache
    ranges = json.loads((out / quant["ranges_file"]).read_text())["data"]
    inits = {i.name: i for i in model.graph.initializer}
    checked = 0
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in ranges:
            r = ranges[node.input[0]]
            bound = max(abs(float(np.asarray(r["lowest"]))), abs(float(np.asarray(r["highest"]))))
            scale = float(onnx.numpy_helper.to_array(inits[node.input[1]]))
            assert scale == pytest.approx(bound / 127.0, rel=1e-5), node.input[0]
            checked += 1
    assert checked >= 10
    acc = report["accuracy"]
    for name, row in acc["vision_outputs"].items():
        assert 0 < row["rel_l2_max"] < 0.1 and row["cosine_min"] > 0.99, name  # measured, not zero
    # every image and prompt compared (the agreement figures themselves: test_top_query_agreement_...); on
    # random weights the masks cover most of the image, so their IoU is no accuracy bar and none is set here
    e2e = acc["end_to_end"]
    assert acc["images"] == len(small_set.images)
    assert e2e["queries_compared"] == len(small_set.images) * len(small_set.prompts) * 10
    assert 0 <= e2e["mask_iou_min"] <= e2e["mask_iou_mean"] <= 1 and 0 <= e2e["score_max_abs"] < 1


def test_top_query_agreement_compares_the_reference_best_queries():
    """The end-to-end figures of the INT8 report on planted decoder outputs: a pixel lost, a mask flipped, a
    score moved, a query outside the top ones destroyed (not counted), another prompt untouched."""
    from sam3_trt.calibration.quantize import top_query_agreement

    rng = np.random.default_rng(0)
    ref = {"pred_logits": rng.normal(size=(2, 6)), "pred_masks": rng.normal(size=(2, 6, 8, 8))}
    assert top_query_agreement(ref, ref, 1, 3) == ([1.0, 1.0, 1.0], 0.0)
    other = {k: v.copy() for k, v in ref.items()}
    best, second, third, *_, last = np.argsort(-ref["pred_logits"][1])
    positive = ref["pred_masks"][1, best] > 0
    y, x = np.argwhere(positive)[0]
    other["pred_masks"][1, best, y, x] = -1.0
    other["pred_masks"][1, second] *= -1
    other["pred_masks"][1, last] = 5.0
    other["pred_logits"][1, third] += 2.0
    ious, err = top_query_agreement(ref, other, 1, 3)
    n = int(positive.sum())
    assert ious == pytest.approx([(n - 1) / n, 0.0, 1.0])
    sig = 1 / (1 + np.exp(-np.array([ref["pred_logits"][1, third], other["pred_logits"][1, third]])))
    assert err == pytest.approx(abs(sig[1] - sig[0]))
    assert top_query_agreement(ref, other, 0, 6) == ([1.0] * 6, 0.0)


def test_rtx_builds_int8_and_fp8_graphs_and_names_fp8_limits(int8_export, tiny_export, small_set, tmp_path):
    from sam3_trt.engines.parse import rtx_available

    if not rtx_available():
        pytest.skip("tensorrt_rtx is not installed (pip install 'sam3-trt[rtx]')")
    from sam3_trt.calibration.run import calibrate
    from sam3_trt.engines.builder import build_engines
    from sam3_trt.engines.targets import resolve_target

    out, _ = int8_export
    manifest = build_engines(out, tmp_path / "e8", resolve_target("5090"))
    assert manifest["precision"]["mode"] == "int8" and manifest["precision"]["graphs_quantized"] == ["vision_encoder"]
    src, _ = tiny_export
    fp8 = calibrate(src, small_set, "fp8", tmp_path / "fp8")
    assert "not measured" in fp8["accuracy"]["status"]
    assert build_engines(tmp_path / "fp8", tmp_path / "e", resolve_target("4090"))["precision"]["mode"] == "fp8"
    with pytest.raises(Sam3TrtError, match="failed to build vision_encoder for sm86"):
        build_engines(tmp_path / "fp8", tmp_path / "e", resolve_target("3090"))  # FP8 needs SM89+


def test_calibrate_cli_bad_input_is_one_line(tiny_export, tmp_path):
    import subprocess
    import sys

    src, _ = tiny_export

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "sam3_trt.cli", "calibrate", "--artifacts", str(src), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    proc = run("--mode", "int8", "--out", str(tmp_path / "o"), "--images", str(tmp_path))
    assert proc.returncode == 2 and "needs --prompts FILE" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("--mode", "int8", "--out", str(tmp_path / "o"), "--images", str(tmp_path), "--prompts", "x.txt")
    assert proc.returncode == 2 and "holds no images" in proc.stderr
    proc = run("--mode", "int8", "--out", str(tmp_path / "o"), "--exclude", "(")
    assert proc.returncode == 2 and "not a valid regular expression" in proc.stderr
    proc = run("--mode", "fp16-policy", "--out", str(tmp_path / "o"), "--quantize-attention")
    assert proc.returncode == 2 and "--quantize-attention applies to --mode int8/fp8 only" in proc.stderr


def test_bench_runs_the_int8_vision_graph_beside_fp32(int8_export, tiny_export, planted_text_export):
    """`bench --int8-artifacts`: ONNX Runtime on the Q/DQ vision graph, measured beside FP32 and eager."""
    import importlib.util

    from sam3_trt.checks.bench import run_bench

    int8, _ = int8_export
    src, _ = tiny_export
    report = run_bench(src, ["torch", "onnxruntime"], (320, 240), repeats=1, warmup=0, threads=2, int8_artifacts=int8)
    assert set(report["backends"]) == {"torch", "onnxruntime", "onnxruntime-int8"}
    assert report["backends"]["onnxruntime-int8"]["stages"]["vision_encoder"]["median_ms"] > 0
    assert set(report["speedup_vs_eager"]) == {"onnxruntime", "onnxruntime-int8"}
    int8_ratios = report["speedup_vs_eager"]["onnxruntime-int8"]
    # the INT8 verdicts judge the INT8 run's own ratios, not the FP32 run's
    assert all(
        c["measured"] == int8_ratios[s] for s, c in report["target_check"]["cpu_int8"].items() if s != "peak_rss"
    )
    # the published table gets one speed-up column per backend and the INT8 target line
    spec = importlib.util.spec_from_file_location("cpu_bench", REPO / "benchmarks" / "cpu_bench.py")
    cpu_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu_bench)
    table = cpu_bench.markdown(report)
    assert "| onnxruntime-int8 speed-up |" in table.splitlines()[0]
    assert all(row.count("|") == 7 for row in table.split("\n\n")[0].splitlines())  # load and RSS rows too
    assert "Same targets, INT8 vision graph" in table
    # an INT8 folder from another export, or a folder that is not INT8, is refused by name
    with pytest.raises(Sam3TrtError, match="calibrated from another export"):
        run_bench(planted_text_export, ["onnxruntime"], int8_artifacts=int8)
    with pytest.raises(Sam3TrtError, match="precision is 'fp32', not int8"):
        run_bench(src, ["onnxruntime"], int8_artifacts=src)
