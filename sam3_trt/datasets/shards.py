"""A run folder: its manifest, its shards (each written whole or not at all) and the COCO files made from them.

Layout of ``--out``::

    run.json            what the run is (work digest, settings, artifacts); "complete" once the outputs exist
    shards/00000.jsonl  one line per image of shard 0: its detections, or why it was refused
    results.json        COCO results (compressed RLE, bbox, score, category_id), when every shard exists
    dataset.json        COCO dataset (images, categories = prompts, annotations), idem
    errors.jsonl        one line per unreadable or refused image, idem

A shard is a fixed slice of the canonical image list, written to a temporary file and renamed: after a crash
or ``kill -9`` a shard is either complete or absent, so a re-run does only the absent ones and the outputs
equal an uninterrupted run's. The final files are written only when every shard exists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import Sam3TrtError
from ..paths import write_atomic

RUN_FORMAT = "sam3-trt-label/1"
RUN_FILE = "run.json"
SHARD_DIR = "shards"
#: Fields of ``run.json`` a re-run into the same folder must match.
IDENTITY_KEYS = ("format", "work_sha256", "images", "categories", "settings", "artifacts")


def shard_path(out_dir: Path, index: int) -> Path:
    """Where shard ``index`` lives."""
    return out_dir / SHARD_DIR / f"{index:05d}.jsonl"


def open_run(out_dir: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Start or resume the run in ``out_dir``: write ``run.json``, or check the one there describes this run.

    Args:
        out_dir: The run folder (created when missing).
        identity: The run's :data:`IDENTITY_KEYS` fields plus ``shards`` and ``shard_size``.

    Returns:
        The manifest in force.

    Raises:
        Sam3TrtError: the folder holds another run (other images, prompts, settings or artifacts), or files
            that are not a run's.
    """
    from ..paths import check_output_folder

    check_output_folder(out_dir, "--out")
    run_file = out_dir / RUN_FILE
    if run_file.is_file():
        try:
            recorded = json.loads(run_file.read_text())
        except json.JSONDecodeError:
            raise Sam3TrtError(
                f"--out {out_dir}: {RUN_FILE} is not JSON; remove the folder or use a new --out"
            ) from None
        differ = [k for k in (*IDENTITY_KEYS, "shard_size") if recorded.get(k) != identity.get(k)]
        if differ:
            detail = "; ".join(_difference(k, recorded.get(k), identity.get(k)) for k in differ)
            raise Sam3TrtError(
                f"--out {out_dir} holds another run ({detail}); use a new --out, or the same command to resume it"
            )
        for stale in (out_dir / SHARD_DIR).glob(".*.tmp"):
            # a writer killed between write and rename; a live writer (another --shard) holds its file for ms
            if time.time() - stale.stat().st_mtime > 60:
                stale.unlink(missing_ok=True)
        return recorded
    others = [p.name for p in out_dir.iterdir() if not p.name.startswith(".")]
    if others:
        raise Sam3TrtError(
            f"--out {out_dir} holds {', '.join(sorted(others)[:3])} but no {RUN_FILE}; choose an empty or new folder"
        )
    (out_dir / SHARD_DIR).mkdir()
    manifest = {**identity, "complete": False}
    write_atomic(run_file, json.dumps(manifest, indent=1) + "\n")
    return manifest


def _difference(key: str, old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return ", ".join(f"{key}.{k} {old.get(k)!r} there, {new.get(k)!r} now" for k in keys)
    if isinstance(old, (list, str)) and len(str(old)) > 60:
        return f"other {key}"
    return f"{key} {old!r} there, {new!r} now"


def read_shard(out_dir: Path, index: int, image_ids: Sequence[int]) -> list[dict[str, Any]] | None:
    """Shard ``index``'s records, or ``None`` when it is absent or does not hold exactly ``image_ids``."""
    path = shard_path(out_dir, index)
    if not path.is_file():
        return None
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
    except json.JSONDecodeError:
        return None
    if [r.get("image_id") for r in records] != list(image_ids):
        return None
    return records


def write_shard(out_dir: Path, index: int, records: Sequence[dict[str, Any]]) -> None:
    """Write shard ``index`` whole (one JSON line per image)."""
    write_atomic(shard_path(out_dir, index), "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))


def iter_records(out_dir: Path, shards: Sequence[Sequence[int]]) -> Iterator[dict[str, Any]]:
    """Every image record, shard by shard, in canonical order.

    Raises:
        Sam3TrtError: a shard is missing (the run is not complete).
    """
    for index, ids in enumerate(shards):
        records = read_shard(out_dir, index, ids)
        if records is None:
            raise Sam3TrtError(f"shard {index} of {out_dir} is missing or incomplete; re-run the label command")
        yield from records


def assemble(out_dir: Path, manifest: dict[str, Any], shards: Sequence[Sequence[int]]) -> dict[str, int]:
    """Write ``results.json``, ``dataset.json`` and ``errors.jsonl`` from every shard, then mark the run complete.

    Returns:
        Counts: ``labelled`` images, ``errors`` (refused images), ``detections``.
    """
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(manifest["categories"])]
    images, results, annotations, errors = [], [], [], []
    for rec in iter_records(out_dir, shards):
        if "error" in rec:
            errors.append({"image": rec["file_name"], "image_id": rec["image_id"], "reason": rec["error"]})
            continue
        images.append(_image(rec))
        for det in rec["detections"]:
            results.append({"image_id": rec["image_id"], **det})
            annotations.append({"id": len(annotations) + 1, "image_id": rec["image_id"], **det, "iscrowd": 0})
    dataset = {
        "info": {"description": "sam3-trt label", "run": manifest.get("settings", {})},
        "images": images,
        "categories": categories,
        "annotations": annotations,
    }
    write_atomic(out_dir / "results.json", json.dumps(results, separators=(",", ":")))
    write_atomic(out_dir / "dataset.json", json.dumps(dataset, separators=(",", ":")))
    write_atomic(out_dir / "errors.jsonl", "".join(json.dumps(e) + "\n" for e in errors))
    counts = {"labelled": len(images), "errors": len(errors), "detections": len(results)}
    manifest.update(complete=True, counts=counts)
    write_atomic(out_dir / RUN_FILE, json.dumps(manifest, indent=1) + "\n")
    return counts


def _image(rec: dict[str, Any]) -> dict[str, Any]:
    keys = ("file_name", "width", "height", "category_ids", "detections_total")
    return {"id": rec["image_id"], **{k: rec[k] for k in keys}}


def read_run(run_dir: Path, option: str = "RUN_DIR") -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """A complete run's manifest, COCO dataset and COCO results.

    Raises:
        Sam3TrtError: not a run folder, or the run is not complete.
    """
    run_file = Path(run_dir) / RUN_FILE
    if not run_file.is_file():
        raise Sam3TrtError(f"{option} {run_dir} is not a label run (no {RUN_FILE}); give the --out of sam3-trt label")
    manifest = json.loads(run_file.read_text())
    if not manifest.get("complete"):
        raise Sam3TrtError(f"{option} {run_dir} is not complete; re-run its label command to finish it")
    dataset = json.loads((Path(run_dir) / "dataset.json").read_text())
    results = json.loads((Path(run_dir) / "results.json").read_text())
    return manifest, dataset, results
