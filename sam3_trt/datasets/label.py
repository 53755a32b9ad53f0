"""``sam3-trt label``: concept prompts over a whole image set, into COCO files, resumable shard by shard.

The model runs on one thread; around it, worker threads decode images ahead of it (a bounded look-ahead) and
encode masks to RLE behind it (a bounded number of full-size masks in flight). Detections go through
:func:`sam3_trt.runtime.detect`, so each image keeps at most ``max_detections`` and holds one full-size mask at
a time whatever its size and threshold. Shards (see :mod:`.shards`) make the run resumable and exactly once.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from .inputs import ImageTask, collect_images, plan_tasks, read_per_image, read_prompts, tasks_digest
from .shards import RUN_FORMAT, assemble, open_run, read_shard, shard_path, write_shard


@dataclasses.dataclass(frozen=True)
class LabelSettings:
    """What decides a run's outputs (recorded in ``run.json``; a re-run must use the same).

    Args:
        threshold: Keep detections scoring above it (0 to 1).
        max_detections: Best detections kept per image, over all its prompts (bounds memory and output).
        batch: Images per vision-encoder run (capped by the graphs' largest batch).
        shard_size: Images per shard (the unit of resuming).
    """

    threshold: float = 0.5
    max_detections: int = 100
    batch: int = 2
    shard_size: int = 64

    def check(self) -> None:
        """Refuse bad values in one line each.

        Raises:
            Sam3TrtError: a value out of range.
        """
        from ..runtime.processor import check_threshold

        check_threshold(self.threshold, "--threshold")
        for name, value in (("--max-detections", self.max_detections), ("--batch", self.batch),
                            ("--shard-size", self.shard_size)):  # fmt: skip
            if not isinstance(value, int) or value < 1:
                raise Sam3TrtError(f"{name} {value!r}: use a whole number of 1 or more")


def parse_shard(text: str | None) -> tuple[int, int]:
    """``--shard i/n`` -> ``(i, n)``: this process does the shards whose index is ``i`` modulo ``n``.

    Raises:
        Sam3TrtError: not ``i/n`` with ``0 <= i < n``.
    """
    if text is None:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise Sam3TrtError(f"--shard {text!r}: use i/n with 0 <= i < n (e.g. --shard 0/4 on the first of 4 machines)")
    return i, n


def label(
    source: str | Path,
    out_dir: str | Path,
    artifacts: str | Path | None = None,
    prompts: Sequence[str] = (),
    prompts_file: str | Path | None = None,
    per_image: str | Path | None = None,
    image_root: str | Path | None = None,
    settings: LabelSettings = LabelSettings(),
    backend: str = "auto",
    processor: Any = None,
    identity: dict[str, Any] | None = None,
    limit: int | None = None,
    shard: tuple[int, int] = (0, 1),
    workers: int = 2,
    progress: Callable[[str], None] | None = None,
    bar: bool = False,
    ray: str | None = None,
    actors: int = 1,
    make_processor: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Label every image of ``source`` with the prompts into ``out_dir`` (see :mod:`.shards` for the files).

    Args:
        source: Folder, glob, text list or COCO JSON (see :func:`~.inputs.collect_images`).
        out_dir: Run folder: created, or resumed when it holds this same run.
        artifacts: Export or engine folder (or, with ``backend="torch"``, an export whose weights the eager
            model is rebuilt from).
        prompts: Prompts for every image (all in one decoder batch per image).
        prompts_file: More prompts, one per line.
        per_image: JSONL of per-image prompts and pixel boxes (see :func:`~.inputs.read_per_image`).
        image_root: Folder a COCO source's file names are relative to.
        settings: Threshold, detections per image, batch, shard size.
        backend: ``auto``, ``onnxruntime``, ``tensorrt`` or ``torch`` (upstream's eager model).
        processor: A ready :class:`~sam3_trt.Sam3Processor` instead of ``artifacts`` (its threshold is set to
            ``settings.threshold``); then ``identity`` names what it runs, for ``run.json``.
        identity: What ``processor`` runs (weights, backend), recorded and compared on a re-run.
        limit: Only the first this many images (canonical order).
        shard: ``(i, n)``: do shard indices ``i`` modulo ``n`` (several machines on one shared ``out_dir``).
        workers: Decode and RLE-encode threads each.
        progress: Called with progress lines.
        bar: Show a progress bar (images/s and ETA) on stderr.
        ray: Run on a Ray cluster: its address, ``"auto"`` (the one ``ray start`` made on this node) or
            ``"local"`` (start one here); see :mod:`.on_ray`.
        actors: Ray actors, one processor each.
        make_processor: With ``ray`` and no ``artifacts``: builds each actor's processor (``identity`` names it).

    Returns:
        Summary: images, done now, resumed, errors, detections (when complete), complete, out.
    """
    say = progress or (lambda _msg: None)
    settings.check()
    if limit is not None and limit < 1:
        raise Sam3TrtError(f"--limit {limit}: use 1 or more")
    if actors < 1:
        raise Sam3TrtError(f"--actors {actors}: use 1 or more")
    given = processor if ray is None else make_processor
    if (given is None) == (artifacts is None):
        what = "a processor" if ray is None else "make_processor"
        raise Sam3TrtError(f"give exactly one of --artifacts FOLDER or {what}")
    items = collect_images(source, image_root)[:limit]
    global_prompts = read_prompts(prompts, prompts_file)
    tasks, categories = plan_tasks(items, global_prompts, read_per_image(per_image, items) if per_image else None)
    owned = None
    if artifacts is not None:
        identity, make = _artifacts_identity(Path(artifacts), backend)
    elif identity is None:
        raise Sam3TrtError("a processor passed in needs identity={...} naming its weights and backend")
    else:
        make = make_processor
    cluster = None
    if ray is not None:
        from .on_ray import connect

        cluster = connect(ray, num_cpus=max(2, actors) if ray == "local" else None)
    out = Path(out_dir)
    chunks = [tasks[i : i + settings.shard_size] for i in range(0, len(tasks), settings.shard_size)]
    ids = [[t.item.image_id for t in c] for c in chunks]
    manifest = open_run(
        out,
        {
            "format": RUN_FORMAT,
            "work_sha256": tasks_digest(tasks, categories),
            "images": len(tasks),
            "categories": categories,
            "settings": dataclasses.asdict(settings),
            "artifacts": identity,
            "shards": len(chunks),
            "shard_size": settings.shard_size,
        },
    )
    mine = [k for k in range(len(chunks)) if k % shard[1] == shard[0]]
    todo = [k for k in mine if read_shard(out, k, ids[k]) is None]
    resumed = len(mine) - len(todo)
    if resumed:
        say(f"resuming: {resumed} of {len(mine)} shards are done, {len(todo)} to go")
    if todo and cluster is not None:
        from .on_ray import run_on_ray

        run_on_ray(cluster, {k: chunks[k] for k in todo}, out, make, settings, actors, bar)
    elif todo:
        if processor is None:
            processor = owned = make()
        processor.set_confidence_threshold(settings.threshold)
        try:
            _run_shards(processor, out, {k: chunks[k] for k in todo}, settings, workers, bar)
        finally:
            if owned is not None:
                owned.close()
    # this run's shards were checked above (resumed) or just written whole (atomic writes): only other
    # --shard runs' shards need reading here, so a one-process run parses each shard once, in assemble
    ours, written = set(mine), set(todo)
    missing = [
        k
        for k in range(len(chunks))
        if (k not in ours and read_shard(out, k, ids[k]) is None) or (k in written and not shard_path(out, k).is_file())
    ]
    summary: dict[str, Any] = {
        "images": len(tasks),
        "done_now": sum(len(chunks[k]) for k in todo),
        "resumed_images": sum(len(chunks[k]) for k in mine if k not in written),
        "complete": not missing,
        "out": str(out),
    }
    if missing:
        say(f"{len(missing)} of {len(chunks)} shards are for other --shard runs; outputs are written when all exist")
        return summary
    counts = assemble(out, manifest, ids)
    return {**summary, **counts}


def _artifacts_identity(folder: Path, backend: str) -> tuple[dict[str, Any], Callable[[], Any]]:
    """What ``run.json`` records of the artifacts (checked before any image is read) and how to open them."""
    from ..runtime.artifacts import resolve_artifacts
    from ..runtime.processor import Sam3Processor

    found = resolve_artifacts(folder)
    manifest_sha = hashlib.sha256((found.folder / "manifest.json").read_bytes()).hexdigest()
    identity = {
        "manifest_sha256": manifest_sha,
        "kind": found.kind,
        "backend": backend,
        "precision": found.manifest.get("precision", {}).get("mode", "fp32"),
        "weights": found.manifest.get("weights", {}),
    }
    if backend == "torch":
        from ..export.model import model_from_manifest

        def make() -> Any:
            model, _ = model_from_manifest(found.manifest)
            return Sam3Processor(model, backend="torch")

        return identity, make
    # the folder as given: on a cluster each node resolves a parent of engine folders for its own GPU
    return identity, lambda: Sam3Processor(folder, backend=backend)


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A full-size bool mask -> COCO compressed RLE and its area."""
    from ..rle import mask_to_compressed_rle

    return {"segmentation": mask_to_compressed_rle(mask), "area": int(np.count_nonzero(mask))}


def decode(task: ImageTask) -> np.ndarray | str:
    """The image as ``uint8 HxWx3``, or why it cannot be used (any failure: one bad file never stops a run)."""
    from ..runtime.image import open_image, to_uint8_hwc

    try:
        return to_uint8_hwc(open_image(task.item.path))
    except Sam3TrtError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - e.g. PIL's DecompressionBombError: recorded, the run goes on
        return f"cannot read image {task.item.path} ({type(exc).__name__}: {exc})"


def _run_shards(
    processor: Any, out: Path, chunks: dict[int, list[ImageTask]], settings: LabelSettings, workers: int, bar: bool
) -> None:
    """Decode ahead, run the model in batches, encode behind; each shard written as soon as its last image is."""
    from tqdm import tqdm

    from ..specs import SPECS

    batch = min(settings.batch, SPECS["vision_encoder"].dim("B").max)
    flat = [(k, t) for k, chunk in chunks.items() for t in chunk]
    in_flight = threading.BoundedSemaphore(max(2, 2 * workers))  # full-size masks waiting for RLE
    pending: dict[int, list[dict[str, Any]]] = {k: [] for k in chunks}
    with (
        cf.ThreadPoolExecutor(workers, thread_name_prefix="decode") as decoders,
        cf.ThreadPoolExecutor(workers, thread_name_prefix="rle") as encoders,
        tqdm(total=len(flat), unit="img", disable=not bar, dynamic_ncols=True) as progress,
    ):

        def encode(mask: np.ndarray) -> cf.Future:
            in_flight.acquire()
            future = encoders.submit(encode_mask, mask)
            future.add_done_callback(lambda _f: in_flight.release())
            return future

        ahead: collections.deque[tuple[int, ImageTask, cf.Future]] = collections.deque()
        position = 0
        while position < len(flat) or ahead:
            while position < len(flat) and len(ahead) < 2 * batch + workers:  # bounded look-ahead
                k, task = flat[position]
                ahead.append((k, task, decoders.submit(decode, task)))
                position += 1
            group = [ahead.popleft() for _ in range(min(batch, len(ahead)))]
            records = label_group(processor, [(task, f.result()) for _, task, f in group], settings, encode)
            for (k, _, _), record in zip(group, records, strict=True):
                pending[k].append(record)
                progress.update(1)
                if len(pending[k]) == len(chunks[k]):
                    write_shard(out, k, [resolve(r) for r in pending.pop(k)])


def label_group(
    processor: Any,
    decoded: Sequence[tuple[ImageTask, np.ndarray | str]],
    settings: LabelSettings,
    encode: Callable[[np.ndarray], Any] | None = None,
) -> list[dict[str, Any]]:
    """One vision batch: the records of decoded images (an image that could not be decoded gets its reason).

    Args:
        processor: The processor (its threshold already set).
        decoded: ``(task, uint8 HxWx3 image or the reason it is unusable)``, at most the vision batch.
        settings: The run's settings.
        encode: Applied to each full-size bool mask (default :func:`encode_mask`; may return a future).

    Returns:
        One record per task, in order (masks as ``encode`` returned them: see :func:`resolve`).
    """
    encode = encode or encode_mask
    good = [(task, rgb) for task, rgb in decoded if not isinstance(rgb, str)]
    states = processor.set_image_batch([rgb for _, rgb in good]) if good else []
    by_task = {id(task): state for (task, _), state in zip(good, states, strict=True)}
    return [
        _error(task, rgb)
        if isinstance(rgb, str)
        else _detect(processor, task, by_task[id(task)], rgb.shape, settings, encode)
        for task, rgb in decoded
    ]


def _error(task: ImageTask, reason: str) -> dict[str, Any]:
    return {"image_id": task.item.image_id, "file_name": task.item.file_name, "error": reason}


def _detect(
    processor: Any, task: ImageTask, state: dict, shape: tuple[int, ...], settings: LabelSettings, encode: Callable
) -> dict[str, Any]:
    """One image's record: its prompts (one decoder batch) and boxes, the best ``max_detections`` kept."""
    from ..runtime.segment import detect, pixel_box_to_prompt

    height, width = int(shape[0]), int(shape[1])
    try:
        boxes = [(pixel_box_to_prompt(b[:4], width, height, f"box {list(b[:4])}"), b[4]) for b in task.boxes]
        found = detect(processor, state, task.prompts, boxes, settings.max_detections, encode)
    except Sam3TrtError as exc:
        return _error(task, str(exc))
    detections = [
        {
            "category_id": task.category_ids[d["prompt_index"]],
            "score": round(float(d["score"]), 6),
            "bbox": _xywh(d["box"]),
            "mask": d["mask"],
        }
        for d in found.detections
    ]
    return {
        "image_id": task.item.image_id,
        "file_name": task.item.file_name,
        "width": width,
        "height": height,
        "category_ids": list(task.category_ids),
        "detections_total": found.total,
        "detections": detections,
    }


def _xywh(box: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)]


def resolve(record: dict[str, Any]) -> dict[str, Any]:
    """A record with its masks' encodings in place (waiting for those still being encoded)."""
    for det in record.get("detections", []):
        encoded = det.pop("mask")
        det.update(encoded.result() if isinstance(encoded, cf.Future) else encoded)
    return record
