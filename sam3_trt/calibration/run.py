"""``sam3-trt calibrate``: statistics, an FP16 policy from data, or a quantized vision graph.

``fp16-policy`` writes into ``--out``: ``stats/`` (cached per graph and set), ``policy.json`` (the
default policy plus measured keep rules; ``sam3-trt fp16 --policy`` reads it), ``fp16/`` (the FP16
export made with it, ready for ``sam3-trt build``) and ``report.json`` (unsafe tensors, the nodes that
changed and why, and the CPU FP16 estimate of the default and the calibrated policy on the set's first
image, so the accuracy gain is measured).

``int8`` / ``fp8`` write an export folder with a Q/DQ vision encoder (text encoder and decoder FP32),
whose manifest records the set's sha256, the quantizer settings and the measured accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..assets import BPE_FILE
from ..errors import Sam3TrtError
from ..manifest import graph_sources, read_manifest, verify_files, write_manifest
from ..specs import SPECS
from .dataset import CalibrationSet, graph_feeds
from .fp16_policy import Fp16Thresholds, calibrated_policy
from .stats import TensorStats, collect_stats, load_cached, save_stats

MODES = ("fp16-policy", "int8", "fp8")


def graph_stats(
    artifacts: Path,
    export_manifest: dict[str, Any],
    cal: CalibrationSet,
    cache_dir: Path,
    chunk_bytes: int,
    progress: Callable[[str], None],
) -> dict[str, dict[str, TensorStats]]:
    """Statistics of all three graphs over the set (decoder fed by the FP32 encoders), cached."""
    from ..ort import ort_session, run_graph

    cache_dir.mkdir(parents=True, exist_ok=True)
    feeds = graph_feeds(cal, artifacts / BPE_FILE)
    out: dict[str, dict[str, TensorStats]] = {}
    for graph, spec in SPECS.items():
        key = {"graph_sha256": export_manifest["graphs"][graph]["sha256"], "set_sha256": cal.sha256}
        path = cache_dir / f"{graph}.json"
        cached = load_cached(path, key)
        if cached is not None:
            progress(f"stats: {graph}: cached ({path})")
            out[graph] = cached
        else:
            # the decoder runs one prompt per sample: same values, tensors P times smaller
            samples = _per_prompt(feeds) if graph == "decoder" else feeds
            out[graph] = collect_stats(artifacts / spec.onnx_file, samples, spec.input_names, chunk_bytes, progress)
            save_stats(path, key, out[graph])
        if graph != "decoder":  # the decoder reads the encoders' FP32 outputs
            session = ort_session(artifacts / spec.onnx_file)
            feeds = [f | run_graph(session, graph, f) for f in feeds]
    return out


def _per_prompt(feeds: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("text_features", "text_mask", "boxes", "box_labels", "box_mask")
    return [f | {k: f[k][p : p + 1] for k in keys} for f in feeds for p in range(f["text_features"].shape[0])]


def calibrate(
    artifacts: str | Path,
    cal: CalibrationSet,
    mode: str,
    out_dir: str | Path,
    thresholds: Fp16Thresholds | None = None,
    exclude: Sequence[str] = (),
    chunk_bytes: int = 4 << 30,
    progress: Callable[[str], None] | None = None,
    quantize_attention: bool = False,
) -> dict[str, Any]:
    """Run one calibration mode (see the module docstring); returns its report.

    Args:
        artifacts: FP32 export folder.
        cal: Calibration set.
        mode: ``fp16-policy``, ``int8`` or ``fp8``.
        out_dir: Output folder (reused: statistics cached there survive).
        thresholds: FP16 unsafety thresholds (``fp16-policy``).
        exclude: Scope regexes left unquantized (``int8``/``fp8``).
        chunk_bytes: Estimated bytes of exposed tensors per statistics pass.
        progress: Called with one line per step.
        quantize_attention: ``int8``/``fp8``: also quantize attention's activation x activation MatMuls.
    """
    say = progress or (lambda _m: None)
    if mode not in MODES:
        raise Sam3TrtError(f"--mode {mode}: use one of {', '.join(MODES)}")
    if mode == "fp16-policy" and (exclude or quantize_attention):
        flag = "--exclude" if exclude else "--quantize-attention"
        raise Sam3TrtError(f"{flag} applies to --mode int8/fp8 only; drop it for fp16-policy")
    artifacts, out = Path(artifacts), Path(out_dir)
    manifest = read_manifest(artifacts, kind="onnx-export")
    if manifest.get("precision", {}).get("mode", "fp32") != "fp32":
        raise Sam3TrtError(f"--artifacts {artifacts} is a {manifest['precision']['mode']} export; pass the FP32 one")
    verify_files(artifacts, manifest)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Sam3TrtError(f"cannot create --out {out} ({exc.strerror or exc}); choose a writable folder") from None
    if mode == "fp16-policy":
        report = _fp16_policy(artifacts, manifest, cal, out, thresholds or Fp16Thresholds(), chunk_bytes, say)
    else:
        report = _quantize(artifacts, manifest, cal, out, mode, exclude, chunk_bytes, quantize_attention, say)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _fp16_policy(
    artifacts: Path,
    manifest: dict[str, Any],
    cal: CalibrationSet,
    out: Path,
    thresholds: Fp16Thresholds,
    chunk_bytes: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    import onnx

    from ..engines.fp16_estimate import estimate
    from ..engines.mixed import convert_export
    from ..engines.precision import DEFAULT_POLICY, float_tensors, plan
    from ..runtime.image import open_image
    from .fp16_policy import unsafe_tensors

    stats = graph_stats(artifacts, manifest, cal, out / "stats", chunk_bytes, say)
    models = {g: onnx.load(str(artifacts / s.onnx_file), load_external_data=False) for g, s in SPECS.items()}
    floats = {g: float_tensors(m) for g, m in models.items()}
    base = {g: plan(m, DEFAULT_POLICY, floats[g], graph=g) for g, m in models.items()}
    policy, changes = calibrated_policy(DEFAULT_POLICY, models, base, stats, thresholds)
    (out / "policy.json").write_text(json.dumps(policy.to_dict(), indent=2) + "\n")
    say(f"calibrate: {len(changes)} node(s) the default policy makes FP16 are kept FP32 by the data")
    image = open_image(cal.images[0])
    before = estimate(artifacts, base, DEFAULT_POLICY.name, image=image, progress=say)
    fp16 = convert_export(artifacts, out / "fp16", policy, progress=say, force=True, image=image)
    after = fp16["checks"]["fp16_estimate"]

    def outputs(cases: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            f"{c['graph']}.{o['name']}": {"rel_l2": o["rel_l2"], "nonfinite": c["nonfinite"].get(o["name"], 0)}
            for c in cases
            for o in c["outputs"]
        }

    return {
        "kind": "calibration",
        "mode": "fp16-policy",
        "sam3_trt_version": __version__,
        "calibration_set": cal.to_dict(),
        "weights": manifest["weights"],
        "thresholds": dataclasses.asdict(thresholds),
        "unsafe_tensors": {g: unsafe_tensors(s, thresholds) for g, s in stats.items()},
        "changed_nodes": changes,
        "policy_file": "policy.json",
        "fp16_export": str(out / "fp16"),
        "estimate_on_first_image": {
            "default": {"passed": before.passed, "outputs": outputs(before.to_dict()["cases"])},
            "calibrated": {"passed": after["passed"], "outputs": outputs(after["cases"])},
        },
    }


def _quantize(
    artifacts: Path,
    manifest: dict[str, Any],
    cal: CalibrationSet,
    out: Path,
    mode: str,
    exclude: Sequence[str],
    chunk_bytes: int,
    quantize_attention: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from ..export.exporter import file_entry
    from .quantize import accuracy_report, quantize_vision

    feeds = graph_feeds(cal, artifacts / BPE_FILE)
    vision = SPECS["vision_encoder"].onnx_file
    for stale in (out / vision, out / (vision + ".data")):
        stale.unlink(missing_ok=True)
    info = quantize_vision(
        artifacts / vision,
        out / vision,
        [f["pixel_values"] for f in feeds],
        mode,
        exclude,
        say,
        chunk_bytes,
        quantize_attention,
    )
    for graph in ("text_encoder", "decoder"):
        for name in (SPECS[graph].onnx_file, SPECS[graph].onnx_file + ".data"):
            shutil.copyfile(artifacts / name, out / name)
    shutil.copyfile(artifacts / BPE_FILE, out / BPE_FILE)
    if mode == "int8":
        say("calibrate: accuracy of the INT8 vision graph against FP32 on the calibration set")
        accuracy = accuracy_report(artifacts, out, feeds)
    else:
        accuracy = {
            "status": "not measured: ONNX Runtime CPU has no FP8 kernels; run `sam3-trt parity` on an SM89+ GPU"
        }
    graphs = {g: {**file_entry(out / s.onnx_file), "spec": s.to_dict()} for g, s in SPECS.items()}
    precision = {
        "mode": mode,
        "graphs_quantized": ["vision_encoder"],
        "quantization": info,
        "calibration_set": cal.to_dict(),
        "accuracy": accuracy,
        "source": {"folder": str(artifacts), "graphs": graph_sources(manifest)},
    }
    # the quantized folder holds the image graphs only: a --video export's tracker graphs stay in the source
    keep = {k: v for k, v in manifest.items() if k not in ("format", "graphs", "checks", "precision", "video")}
    write_manifest(
        out, {**keep, "sam3_trt_version": __version__, "graphs": graphs, "precision": precision, "checks": {}}
    )
    return {"kind": "calibration", "mode": mode, "export_folder": str(out), **precision}


def calibrate_folder(
    artifacts: str | Path,
    mode: str,
    out_dir: str | Path,
    images: Path | None = None,
    prompts_file: Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    thresholds: Fp16Thresholds | None = None,
    exclude: Sequence[str] = (),
    chunk_bytes: int = 4 << 30,
    quantize_attention: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``sam3-trt calibrate``: the calibration set (a folder of images and a prompts file, or the generated default
    set in ``OUT/default_set``) checked and loaded, then :func:`calibrate`.

    Args:
        artifacts: FP32 export folder.
        mode: ``fp16-policy``, ``int8`` or ``fp8``.
        out_dir: Output folder.
        images: Folder of calibration images (``None``: the generated default set).
        prompts_file: One prompt per line (with ``images`` only).
        limit: Use at most this many images (sampled with ``seed``).
        seed: Seed of the sample (and of the default set).
        thresholds: FP16 unsafety thresholds (``fp16-policy``); ``range_fraction`` must lie in (0, 1].
        exclude: Scope regexes left unquantized (``int8``/``fp8``).
        chunk_bytes: Estimated bytes of exposed tensors per statistics pass.
        quantize_attention: ``int8``/``fp8``: also quantize attention's activation x activation MatMuls.
        progress: Called with one line per step.
    """
    from .dataset import default_set, load_set

    say = progress or (lambda _m: None)
    thresholds = thresholds or Fp16Thresholds()
    if images is None:
        if prompts_file is not None:
            raise Sam3TrtError("--prompts needs --images (or leave both out for the generated default set)")
        cal = default_set(Path(out_dir) / "default_set", limit=limit, seed=seed)
    else:
        if prompts_file is None:
            raise Sam3TrtError(f"--images {images} needs --prompts FILE (one text prompt per line)")
        cal = load_set(images, prompts_file, limit=limit, seed=seed)
    if not 0 < thresholds.range_fraction <= 1:
        raise Sam3TrtError(f"--range-fraction {thresholds.range_fraction}: use a value in (0, 1]")
    say(f"calibration set: {len(cal.images)} images, {len(cal.prompts)} prompts, sha256 {cal.sha256[:16]}")
    return calibrate(
        artifacts,
        cal,
        mode,
        out_dir,
        thresholds=thresholds,
        exclude=exclude,
        chunk_bytes=chunk_bytes,
        progress=say,
        quantize_attention=quantize_attention,
    )


def calibration_summary(report: dict[str, Any], mode: str, out_dir: str | Path) -> dict[str, Any]:
    """The line ``sam3-trt calibrate`` prints: the policy and its estimates, or the Q/DQ export and its accuracy."""
    if mode == "fp16-policy":
        est = report["estimate_on_first_image"]
        return {
            "changed_nodes": len(report["changed_nodes"]),
            "default_estimate_passed": est["default"]["passed"],
            "calibrated_estimate_passed": est["calibrated"]["passed"],
            "policy": str(Path(out_dir) / "policy.json"),
            "fp16_export": report["fp16_export"],
        }
    return {"export_folder": report["export_folder"], "accuracy": report["accuracy"]}
