"""``sam3-trt eval``: a label run against ground truth or against another run, per prompt and overall.

Two families of numbers: COCO AP (segm and bbox, pycocotools' ``COCOeval``) and SAM3's concept metrics
(cgF1, IL_MCC, pmF1) computed by upstream's own evaluator (``sam3.eval.cgf1_eval.CGF1Evaluator``) over
(image, prompt) pairs, as the SAM3 paper defines them. With ``--reference`` the other run's detections are the
ground truth: FP32 eager against FP16 engines on your images is one ``label`` per side and one ``eval``.
Images are matched by file name and prompts by text; what only one side has is listed in the report.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from .shards import read_run

#: upstream's cgF1 evaluator's output keys -> the report's names.
CGF1_KEYS = {"cgF1": "cgF1", "IL_MCC": "IL_MCC", "positive_macro_F1": "pmF1"}


def evaluate(
    run_dir: str | Path,
    gt: str | Path | None = None,
    reference: str | Path | None = None,
    worst: int = 5,
) -> dict[str, Any]:
    """Score ``run_dir``'s detections against ground truth (a COCO file) or another run's detections.

    Args:
        run_dir: A complete ``sam3-trt label`` output folder.
        gt: COCO ground truth (images matched by ``file_name``, categories by ``name`` = prompt).
        reference: Another complete run, its detections taken as the ground truth.
        worst: How many images with the most unmatched instances (segm, IoU 0.5) the report lists.

    Returns:
        The report: overall and per-prompt AP (segm, bbox) and cgF1 / IL_MCC / pmF1, the worst images, notes.
    """
    if (gt is None) == (reference is None):
        raise Sam3TrtError("give exactly one of --gt COCO.json or --reference RUN_DIR")
    _, dataset, results = read_run(Path(run_dir))
    if reference is not None:
        _, truth, _ = read_run(Path(reference), "--reference")
        truth_name = str(reference)
    else:
        truth = _read_gt(Path(gt))
        truth_name = str(gt)
    gt_data, dets, notes = _align(dataset, results, truth, exhaustive_prompts=reference is None)
    report: dict[str, Any] = {"run": str(run_dir), "truth": truth_name, "images": len(gt_data["images"])}
    report["categories"] = [c["name"] for c in gt_data["categories"]]
    ap = {kind: _coco_ap(gt_data, dets, kind) for kind in ("segm", "bbox")}
    concept = {c["id"]: _cgf1(gt_data, dets, [c["id"]]) for c in gt_data["categories"]}
    report["overall"] = {
        "segm_AP": ap["segm"]["AP"],
        "segm_AP50": ap["segm"]["AP50"],
        "bbox_AP": ap["bbox"]["AP"],
        **_cgf1(gt_data, dets, [c["id"] for c in gt_data["categories"]]),
    }
    report["per_prompt"] = [
        {
            "prompt": c["name"],
            "truth_instances": sum(a["category_id"] == c["id"] for a in gt_data["annotations"]),
            "detections": sum(d["category_id"] == c["id"] for d in dets),
            "segm_AP": ap["segm"]["per_category"].get(c["id"]),
            "bbox_AP": ap["bbox"]["per_category"].get(c["id"]),
            **concept[c["id"]],
        }
        for c in gt_data["categories"]
    ]
    names = {im["id"]: im["file_name"] for im in gt_data["images"]}
    report["worst_images"] = [{"image": names[i], **counts} for i, counts in ap["segm"]["unmatched"][:worst]]
    if report["overall"]["cgF1"] is None:
        notes.append(
            "cgF1 and IL_MCC are undefined here: they need (image, prompt) pairs both with and without instances in "
            "the truth, and every pair had instances (or none had); pmF1 and AP still apply"
        )
    report["notes"] = notes
    return report


def _read_gt(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        for key in ("images", "annotations", "categories"):
            if not isinstance(data[key], list):
                raise TypeError(f"{key} is not a list")
    except FileNotFoundError:
        raise Sam3TrtError(f"--gt {path}: no such file; give a COCO ground-truth JSON") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise Sam3TrtError(
            f"--gt {path}: not a COCO ground truth ({exc}); it needs images, annotations, categories"
        ) from None
    return data


def _align(
    dataset: dict[str, Any], results: list[dict[str, Any]], truth: dict[str, Any], exhaustive_prompts: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """The truth in the run's ids (images by file name, categories by prompt) and the run's detections on them."""
    notes = []
    run_images = {im["file_name"]: im for im in dataset["images"]}
    truth_images = {im["file_name"]: im for im in truth["images"]}
    shared = [name for name in run_images if name in truth_images]
    if not shared:
        raise Sam3TrtError("the run and the truth share no image file name; compare runs over the same images")
    for side, names in (("run", set(run_images) - set(truth_images)), ("truth", set(truth_images) - set(run_images))):
        if names:
            notes.append(f"{len(names)} images only in the {side} (not scored), e.g. {sorted(names)[0]}")
    run_cats = {c["name"]: c["id"] for c in dataset["categories"]}
    truth_cats = {c["id"]: c["name"] for c in truth["categories"]}
    common = [name for name in run_cats if name in set(truth_cats.values())]
    if not common:
        raise Sam3TrtError("the run's prompts and the truth's category names have nothing in common")
    for side, names in (("run", set(run_cats) - set(common)), ("truth", set(truth_cats.values()) - set(common))):
        if names:
            notes.append(f"prompts only in the {side} (not scored): {', '.join(sorted(names))}")
    categories = [{"id": run_cats[n], "name": n} for n in common]
    keep = {run_cats[n] for n in common}
    to_run_id = {truth_images[n]["id"]: run_images[n]["id"] for n in shared}
    images, pairs = [], {}
    for name in shared:
        run_im, truth_im = run_images[name], truth_images[name]
        ran = set(run_im.get("category_ids", keep))
        if not exhaustive_prompts:  # a reference run: only the prompts both sides ran on this image
            ran &= {run_cats.get(truth_cats.get(c)) for c in truth_im.get("category_ids", [])}
        pairs[run_im["id"]] = sorted(ran & keep)
        images.append({k: run_im[k] for k in ("id", "file_name", "width", "height")} | {"pairs": pairs[run_im["id"]]})
    annotations = []
    for ann in truth["annotations"]:
        image_id = to_run_id.get(ann["image_id"])
        cat = run_cats.get(truth_cats.get(ann["category_id"], ""))
        if image_id is None or cat not in pairs[image_id]:
            continue
        annotations.append({**ann, "id": len(annotations) + 1, "image_id": image_id, "category_id": cat})
    dets = [d for d in results if d["image_id"] in pairs and d["category_id"] in pairs[d["image_id"]]]
    gt_data = {"images": images, "categories": categories, "annotations": annotations}
    return gt_data, dets, notes


def _quiet() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO())  # pycocotools prints its progress


def _coco_ap(gt_data: dict[str, Any], dets: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """COCO AP (IoU 0.5:0.95, and 0.5) overall and per category, and images by unmatched instances at IoU 0.5."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO()
    coco_gt.dataset = {
        **gt_data,
        "annotations": [{**a, "iscrowd": a.get("iscrowd", 0)} for a in gt_data["annotations"]],
    }
    with _quiet():
        coco_gt.createIndex()
        if not dets:
            return {
                "AP": 0.0,
                "AP50": 0.0,
                "per_category": {c["id"]: 0.0 for c in gt_data["categories"]},
                "unmatched": [],
            }
        coco_dt = coco_gt.loadRes([{k: v for k, v in d.items() if k not in ("id", "area")} for d in dets])
        ev = COCOeval(coco_gt, coco_dt, kind)
        # COCO counts at most 100 detections per image and category; a run may keep more (--max-detections)
        most = max(_most_per_image(dets), _most_per_image(gt_data["annotations"]))
        ev.params.maxDets = [1, 10, max(100, most)]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # [iou, recall, category] at area "all", 100 detections
    per_category = {}
    for k, cat in enumerate(ev.params.catIds):
        valid = precision[:, :, k][precision[:, :, k] > -1]
        per_category[cat] = _num(valid.mean()) if valid.size else None
    unmatched: dict[int, dict[str, int]] = {}
    for e in ev.evalImgs:
        if e is None or e["aRng"] != ev.params.areaRng[0]:
            continue
        counts = unmatched.setdefault(e["image_id"], {"missed": 0, "extra": 0})
        counts["missed"] += int(np.sum((e["gtMatches"][0] == 0) & ~np.asarray(e["gtIgnore"], dtype=bool)))
        counts["extra"] += int(np.sum((e["dtMatches"][0] == 0) & ~e["dtIgnore"][0]))
    ranked = sorted(
        ((i, c) for i, c in unmatched.items() if c["missed"] + c["extra"]), key=lambda x: -sum(x[1].values())
    )
    return {"AP": _num(ev.stats[0]), "AP50": _num(ev.stats[1]), "per_category": per_category, "unmatched": ranked}


def _most_per_image(entries: list[dict[str, Any]]) -> int:
    counts: dict[tuple[int, int], int] = {}
    for e in entries:
        key = (e["image_id"], e["category_id"])
        counts[key] = counts.get(key, 0) + 1
    return max(counts.values(), default=0)


def _cgf1(gt_data: dict[str, Any], dets: list[dict[str, Any]], categories: Sequence[int]) -> dict[str, float | None]:
    """cgF1, IL_MCC and pmF1 (segm) from upstream's evaluator over the (image, prompt) pairs of ``categories``."""
    with warnings.catch_warnings():  # sam3's import warns about CUDA autocast on a CPU machine
        warnings.simplefilter("ignore")
        from sam3.eval.cgf1_eval import CGF1Evaluator

    pairs = [(im, c) for im in gt_data["images"] for c in im["pairs"] if c in categories]
    if not pairs:
        return dict.fromkeys(CGF1_KEYS.values())
    pair_id = {(im["id"], c): n + 1 for n, (im, c) in enumerate(pairs)}
    images = [
        {"id": pair_id[im["id"], c], "file_name": im["file_name"], "height": im["height"], "width": im["width"],
         "is_instance_exhaustive": True}
        for im, c in pairs
    ]  # fmt: skip
    anns = [
        {**a, "id": n + 1, "image_id": pair_id[a["image_id"], a["category_id"]], "category_id": 1, "iscrowd": 0}
        for n, a in enumerate(x for x in gt_data["annotations"] if (x["image_id"], x["category_id"]) in pair_id)
    ]
    preds = [
        {"image_id": pair_id[d["image_id"], d["category_id"]], "category_id": 1, "score": d["score"],
         "segmentation": d["segmentation"], "bbox": d["bbox"]}
        for d in dets if (d["image_id"], d["category_id"]) in pair_id
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sam3trt-cgf1-") as tmp:
        gt_file, pred_file = Path(tmp) / "gt.json", Path(tmp) / "pred.json"
        gt_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
        pred_file.write_text(json.dumps(preds))
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", RuntimeWarning
            )  # pmF1 of a prompt with no positive pair: NaN, reported None
            evaluator = CGF1Evaluator(str(gt_file), iou_type="segm")
            evaluator.coco_evals[0].threshold = 0.0  # the run's threshold already chose what it kept
            out = evaluator.evaluate(str(pred_file))
    found = {name: _num(out[f"cgF1_eval_segm_{key}"]) for key, name in CGF1_KEYS.items()}
    positive = len({a["image_id"] for a in anns})
    if positive in (0, len(pairs)):  # MCC needs pairs with and without instances; upstream's gives 0, not "undefined"
        found["IL_MCC"] = found["cgF1"] = None
    return found


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) or value < 0 else round(value, 6)


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table (overall first, then one row per prompt)."""
    cols = ("segm_AP", "bbox_AP", "cgF1", "IL_MCC", "pmF1")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        f"Run `{report['run']}` against `{report['truth']}` ({report['images']} images)",
        "",
        "| prompt | truth instances | detections | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    o = report["overall"]
    n_truth = sum(p["truth_instances"] for p in report["per_prompt"])
    n_det = sum(p["detections"] for p in report["per_prompt"])
    lines.append(f"| **all** | {n_truth} | {n_det} | " + " | ".join(fmt(o.get(c)) for c in cols) + " |")
    for p in report["per_prompt"]:
        lines.append(
            f"| {p['prompt']} | {p['truth_instances']} | {p['detections']} | "
            + " | ".join(fmt(p[c]) for c in cols)
            + " |"
        )
    if report["worst_images"]:
        lines += ["", "Images with the most unmatched instances (segm, IoU 0.5):", ""]
        lines += [f"- {w['image']}: {w['missed']} missed, {w['extra']} extra" for w in report["worst_images"]]
    lines += [f"- note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def report_figure(report: dict[str, Any], path: str | Path) -> None:
    """Per-prompt segm AP and cgF1 as bars (a PNG)."""
    from ..checks.figures import bar_chart

    rows = ["all", *(p["prompt"] for p in report["per_prompt"])]
    values = [report["overall"], *report["per_prompt"]]
    series = {metric: [v.get(metric) for v in values] for metric in ("segm_AP", "bbox_AP", "cgF1")}
    bar_chart(rows, series, path, f"{report['run']} vs {report['truth']}", unit="", linear_max=1.0,
              subtitle=f"{report['images']} images")  # fmt: skip
