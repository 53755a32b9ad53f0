"""``sam3-trt label --ray``: the same run on a Ray cluster, through Ray Data, into the same shards.

Ray Data reads the run's image list (one row per image, in canonical order) and ``map_batches`` runs it
through a pool of actors, each holding one processor (``num_gpus=1`` each where the cluster has GPUs; each
actor opens the artifacts as the processor does, so a parent of engine folders gives every node the engines
for its GPU). Actors are restartable and their batches retried (``max_restarts``, ``max_task_retries``): an
actor killed mid-run is started again by Ray and its batch redone. Records stream back to the driver, which
writes each shard whole as soon as its last image arrives, with the single-machine run's writer, so outputs
equal a single-machine run's and a killed driver resumes from the shards already written.

Ray is the ``[ray]`` extra; nothing here is imported unless ``--ray`` is given.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Sam3TrtError
from .inputs import ImageItem, ImageTask
from .label import LabelSettings, decode, label_group, resolve
from .shards import write_shard

#: Restarts of a dead actor and retries of its batch before the run fails (a crash loop is not retried forever).
MAX_RESTARTS = 8


def task_to_json(task: ImageTask) -> str:
    """A task as one JSON string (a Ray Data row's column)."""
    return json.dumps(dataclasses.asdict(task))


def task_from_json(text: str) -> ImageTask:
    """Inverse of :func:`task_to_json`."""
    d = json.loads(text)
    return ImageTask(
        ImageItem(**d["item"]), tuple(d["prompts"]), tuple(d["category_ids"]), tuple(tuple(b) for b in d["boxes"])
    )


class LabelActor:
    """One processor per actor; each call labels one batch of rows (decode, vision batch, detect, RLE).

    Args:
        make_processor: Builds the processor in the actor's process (serialised to every node).
        settings: The run's settings.
    """

    def __init__(self, make_processor: Callable[[], Any], settings: LabelSettings) -> None:
        self.processor = make_processor()
        self.processor.set_confidence_threshold(settings.threshold)
        self.settings = settings

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tasks = [task_from_json(str(t)) for t in batch["task"]]
        records = label_group(self.processor, [(t, decode(t)) for t in tasks], self.settings)
        return {"shard": batch["shard"], "record": np.array([json.dumps(resolve(r)) for r in records], dtype=object)}


def connect(address: str, num_cpus: int | None = None) -> Any:
    """Join the cluster at ``address`` (``"auto"``: the one ``ray start`` made here), or start a local one
    (``"local"``). Returns the ``ray`` module.

    Raises:
        Sam3TrtError: Ray is not installed, or the address cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise Sam3TrtError("--ray needs Ray: pip install 'sam3-trt[ray]'") from None
    if ray.is_initialized():
        return ray
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise Sam3TrtError(
            f"--ray {address}: cannot join the Ray cluster ({exc}); start it with `ray start --head` and pass its "
            "address (or `auto` on a node of it), or `local` for a cluster on this machine"
        ) from None
    return ray


def run_on_ray(
    ray: Any,
    chunks: dict[int, list[ImageTask]],
    out: Path,
    make_processor: Callable[[], Any],
    settings: LabelSettings,
    actors: int,
    bar: bool = False,
) -> None:
    """Label ``chunks`` (shard index -> its tasks) on the cluster; each shard written when its last image is back.

    Args:
        ray: The ``ray`` module, connected (:func:`connect`).
        chunks: The shards to do.
        out: The run folder.
        make_processor: Builds one processor per actor.
        settings: The run's settings.
        actors: Actors in the pool (one processor, and one GPU where there are GPUs, each).
        bar: Show a progress bar on stderr.
    """
    from tqdm import tqdm

    rows = [{"shard": k, "task": task_to_json(t)} for k, chunk in chunks.items() for t in chunk]
    gpus = ray.cluster_resources().get("GPU", 0)
    results = ray.data.from_items(rows).map_batches(
        LabelActor,
        fn_constructor_kwargs={"make_processor": make_processor, "settings": settings},
        batch_size=settings.batch,
        batch_format="numpy",
        concurrency=actors,
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1,
        max_restarts=MAX_RESTARTS,
        max_task_retries=MAX_RESTARTS,
    )
    got: dict[int, dict[int, dict[str, Any]]] = {k: {} for k in chunks}
    with tqdm(total=len(rows), unit="img", disable=not bar, dynamic_ncols=True) as progress:
        for row in results.iter_rows():
            record = json.loads(row["record"])
            k = int(row["shard"])
            got[k][record["image_id"]] = record  # keyed: a retried batch cannot give an image twice
            progress.update(1)
            if len(got[k]) == len(chunks[k]):
                write_shard(out, k, [got[k][t.item.image_id] for t in chunks[k]])
