"""``sam3-trt triton-repo``: a model repository for a standalone ``tritonserver``.

Layout (Triton's): one folder per model with ``config.pbtxt`` and a version folder ``1/``:

* ``vision_encoder``, ``text_encoder``, ``decoder``: the three graphs, as ``tensorrt_plan`` models from an
  engine folder (standard TensorRT engines: Triton's TensorRT backend links standard TensorRT, so TensorRT
  for RTX engines cannot load there) or as ``onnxruntime_onnx`` models from an export folder. Every config
  is written from the graph specs recorded in the folder's manifest: names, dtypes, dims, and dynamic
  batching where every tensor's first axis is the same dynamic axis (vision ``B``, text ``P``);
* ``sam3``: a Python-backend model with the request/response contract of ``serve``
  (:mod:`.contract`); its ``model.py`` runs :class:`~sam3_trt.Sam3Processor` over a backend that calls
  the three graph models by BLS (:mod:`.bls`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import Sam3TrtError
from ..specs import ALL_SPECS, CLICK_GRAPHS, SPECS, GraphSpec
from .contract import INPUTS, MODEL_NAME, OUTPUTS

#: numpy dtype name -> Triton config ``data_type``.
CONFIG_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "object": "TYPE_STRING",
}

#: The ``sam3`` model's config parameter saying whether it answers clicks (``"true"`` / ``"false"``).
CLICKS_PARAMETER = "clicks"

MODEL_PY = '''"""Triton Python-backend entry point of the sam3 model (written by sam3-trt triton-repo)."""

from sam3_trt.serving.bls import TritonPythonModel  # noqa: F401
'''


@dataclasses.dataclass(frozen=True)
class RepoOptions:
    """What ``triton-repo`` writes.

    Args:
        artifacts: Engine folder (``tensorrt_plan`` models) or export folder (``onnxruntime_onnx``).
        out: Repository folder to create.
        instances: Instances of each model.
        gpus: GPU ids the graph instances go on (``instance_group`` ``KIND_GPU``); empty: every GPU. Ignored
            with ``cpu``.
        cpu: Graph models on the CPU (``KIND_CPU``; ONNX only): for trying the repository without a GPU.
        max_batch: The ``sam3`` model's dynamic-batch size.
        max_queue_delay_us: Dynamic batcher delay.
        force: Replace ``out`` when it exists.
        clicks: Also answer clicks (``points``, as ``serve --clicks``): the folder's video vision graph and
            click head become models of the repository, and the ``sam3`` model runs them over BLS.
    """

    artifacts: Path
    out: Path
    instances: int = 1
    gpus: tuple[int, ...] = ()
    cpu: bool = False
    max_batch: int = SPECS["vision_encoder"].dim("B").max
    max_queue_delay_us: int = 2000
    force: bool = False
    clicks: bool = False


def parse_gpu_ids(text: str, name: str = "--gpus") -> tuple[int, ...]:
    """``0,1`` as ``(0, 1)`` (empty: every GPU), or one line naming ``name`` and the fix."""
    try:
        ids = tuple(int(g) for g in text.split(",") if g.strip())
    except ValueError:
        raise Sam3TrtError(f"{name} {text!r}: give GPU ids separated by commas, e.g. 0,1") from None
    if any(g < 0 for g in ids):
        raise Sam3TrtError(f"{name} {text!r}: GPU ids are 0 or more")
    return ids


def _graph_config(spec: GraphSpec, platform: str, filename: str, kind: str, opts: RepoOptions) -> str:
    first_axes = {t.shape[0] for t in spec.inputs + spec.outputs}
    batch_axis = next(iter(first_axes)) if len(first_axes) == 1 and isinstance(next(iter(first_axes)), str) else None
    max_batch = spec.dim(batch_axis).max if batch_axis else 0

    def tensors(kind_name: str, items: Any) -> str:
        rows = []
        for t in items:
            shape = t.shape[1:] if batch_axis else t.shape
            dims = ", ".join("-1" if isinstance(d, str) else str(d) for d in shape)
            rows.append(f'  {{ name: "{t.name}" data_type: {CONFIG_DTYPES[t.dtype]} dims: [ {dims} ] }}')
        return f"{kind_name} [\n" + ",\n".join(rows) + "\n]"

    lines = [
        f'name: "{spec.name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch}",
        f'default_model_filename: "{filename}"',
        tensors("input", spec.inputs),
        tensors("output", spec.outputs),
        _instance_group(kind, opts),
    ]
    if batch_axis:
        # the processor sends whole batches (all images of a request batch, all prompts): the batcher only
        # has to merge what concurrent requests send, without waiting for more
        lines.append(f"dynamic_batching {{ preferred_batch_size: [ {max_batch} ] max_queue_delay_microseconds: 0 }}")
    return "\n".join(lines) + "\n"


def _instance_group(kind: str, opts: RepoOptions) -> str:
    gpus = f" gpus: [ {', '.join(str(g) for g in opts.gpus)} ]" if kind == "KIND_GPU" and opts.gpus else ""
    return f"instance_group [ {{ count: {opts.instances} kind: {kind}{gpus} }} ]"


def sam3_config(opts: RepoOptions) -> str:
    """``config.pbtxt`` of the Python-backend ``sam3`` model, from :mod:`.contract`."""

    def tensors(kind_name: str, items: Any, inputs: bool) -> str:
        rows = []
        for t in items:
            dtype = CONFIG_DTYPES["object" if t.triton_dtype == "BYTES" else _np(t.dtype)]
            dims = ", ".join(str(d) for d in t.shape)
            optional = " optional: true" if inputs and t.optional else ""
            rows.append(f'  {{ name: "{t.name}" data_type: {dtype} dims: [ {dims} ]{optional} }}')
        return f"{kind_name} [\n" + ",\n".join(rows) + "\n]"

    return (
        "\n".join(
            [
                f'name: "{MODEL_NAME}"',
                'backend: "python"',
                f"max_batch_size: {opts.max_batch}",
                tensors("input", INPUTS, True),
                tensors("output", OUTPUTS, False),
                # pre/post-processing runs on the CPU; the graphs it calls have their own GPU instances
                f"instance_group [ {{ count: {opts.instances} kind: KIND_CPU }} ]",
                f"dynamic_batching {{ max_queue_delay_microseconds: {opts.max_queue_delay_us} }}",
                # read by the model's initialize (bls.py): whether it answers clicks
                f'parameters {{ key: "{CLICKS_PARAMETER}" value: {{ string_value: "{str(opts.clicks).lower()}" }} }}',
            ]
        )
        + "\n"
    )


def _np(dtype: Any) -> str:
    import numpy as np

    return np.dtype(dtype).name


def write_repo(opts: RepoOptions) -> dict[str, Any]:
    """Write the repository; returns a summary (models, platform, validation).

    Raises:
        Sam3TrtError: not an export or engine folder, RTX engines, ``out`` exists without ``force``.
    """
    from ..assets import BPE_FILE
    from ..manifest import check_click_graphs, manifest_graphs, read_manifest, verify_files

    artifacts, out = Path(opts.artifacts), Path(opts.out)
    if opts.instances < 1:
        raise Sam3TrtError(f"--instances {opts.instances}: must be at least 1")
    if opts.max_batch < 1:
        raise Sam3TrtError(f"--max-batch {opts.max_batch}: must be at least 1")
    if not (artifacts / "manifest.json").is_file():
        raise Sam3TrtError(f"--artifacts {artifacts}: no manifest.json; pass an export folder or one engine folder")
    manifest = read_manifest(artifacts)
    kind = manifest.get("kind")
    if kind == "engines":
        if manifest.get("flavour") != "tensorrt":
            raise Sam3TrtError(
                f"--artifacts {artifacts} holds {manifest.get('flavour')} engines; Triton's TensorRT backend runs "
                "standard TensorRT plans: build with `sam3-trt build --flavour tensorrt` using the TensorRT "
                "version of your Triton container, or pass the export folder (onnxruntime_onnx models)"
            )
        if opts.cpu:
            raise Sam3TrtError(
                "--cpu: TensorRT plans run on GPUs; pass an export folder to try the repository on a CPU"
            )
        platform = "tensorrt_plan"
    elif kind == "onnx-export":
        platform = "onnxruntime_onnx"
    else:
        raise Sam3TrtError(f"--artifacts {artifacts} holds {kind!r}; pass an export folder or an engine folder")
    if out.exists():
        if not opts.force:
            raise Sam3TrtError(f"--out {out} exists; pass --force to replace it")
        if not (out / MODEL_NAME / "config.pbtxt").is_file():
            raise Sam3TrtError(f"--out {out} exists and is not a sam3 model repository; refusing to replace it")
    graphs = manifest_graphs(manifest)
    if opts.clicks:
        check_click_graphs(manifest, str(artifacts), ", or write the repository without --clicks")
    verify_files(artifacts, manifest)

    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    device_kind = "KIND_CPU" if opts.cpu else "KIND_GPU"
    try:
        # the served pipeline is the image one (plus the click graphs with clicks): the tracker's graphs stay out
        served = [*SPECS, *(CLICK_GRAPHS if opts.clicks else ())]
        for name, entry in graphs.items():
            if name not in served:
                continue
            spec = GraphSpec.from_dict(entry["spec"]) if "spec" in entry else ALL_SPECS[name]
            version = staging / name / "1"
            version.mkdir(parents=True)
            files = [entry["file"]] + ([entry["data_file"]] if entry.get("data_file") else [])
            for rel in files:
                _link_or_copy(artifacts / rel, version / rel)
            (staging / name / "config.pbtxt").write_text(
                _graph_config(spec, platform, entry["file"], device_kind, opts)
            )
        version = staging / MODEL_NAME / "1"
        version.mkdir(parents=True)
        (version / "model.py").write_text(MODEL_PY)
        shutil.copyfile(artifacts / BPE_FILE, version / BPE_FILE)
        (staging / MODEL_NAME / "config.pbtxt").write_text(sam3_config(opts))
        validation = validate_repo(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "repository": str(out),
        "platform": platform,
        "models": sorted([*(g for g in graphs if g in served), MODEL_NAME]),
        "clicks": opts.clicks,
        "validation": validation,
    }


def _link_or_copy(src: Path, dst: Path) -> None:
    # a hard link costs no disk and survives being mounted into a container (a symlink would not)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def validate_repo(repo: Path) -> dict[str, Any]:
    """Parse every ``config.pbtxt`` with Triton's own schema and check it against the specs.

    Uses ``tritonclient``'s ``model_config_pb2`` (the server's ``ModelConfig`` message). Without
    tritonclient it reports ``{"status": "skipped", "reason": ...}`` rather than claiming a check.

    Raises:
        Sam3TrtError: a config Triton would reject, or one that disagrees with the specs or the contract.
    """
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return {"status": "skipped", "reason": "tritonclient is not installed (pip install 'sam3-trt[serve]')"}
    checked = {}
    for config_path in sorted(Path(repo).glob("*/config.pbtxt")):
        config = model_config_pb2.ModelConfig()
        try:
            text_format.Parse(config_path.read_text(), config)
        except text_format.ParseError as exc:
            raise Sam3TrtError(f"{config_path}: Triton's ModelConfig schema rejects it: {exc}") from None
        name = config_path.parent.name
        if config.name != name:
            raise Sam3TrtError(f"{config_path}: name {config.name!r} differs from its folder {name!r}")
        if name == MODEL_NAME:
            _check_against(config, INPUTS, OUTPUTS, model_config_pb2, contract=True)
        else:
            _check_against(config, ALL_SPECS[name].inputs, ALL_SPECS[name].outputs, model_config_pb2, contract=False)
        checked[name] = {"platform": config.platform or config.backend, "max_batch_size": config.max_batch_size}
    return {"status": "passed", "schema": "tritonclient model_config_pb2.ModelConfig", "models": checked}


def _check_against(config: Any, inputs: Any, outputs: Any, pb2: Any, contract: bool) -> None:
    batched = config.max_batch_size > 0
    for declared, expected in ((config.input, inputs), (config.output, outputs)):
        got = {t.name: t for t in declared}
        if set(got) != {t.name for t in expected}:
            raise Sam3TrtError(f"model {config.name}: tensors {sorted(got)} differ from {[t.name for t in expected]}")
        for t in expected:
            entry = got[t.name]
            if contract:
                dtype = "object" if t.triton_dtype == "BYTES" else _np(t.dtype)
                shape = [int(d) for d in t.shape]
            else:
                dtype = t.dtype
                shape = [-1 if isinstance(d, str) else int(d) for d in t.shape]
                shape = shape[1:] if batched else shape
            want = CONFIG_DTYPES[dtype]
            if pb2.DataType.Name(entry.data_type) != want or list(entry.dims) != shape:
                raise Sam3TrtError(
                    f"model {config.name} tensor {t.name}: config has {pb2.DataType.Name(entry.data_type)} "
                    f"{list(entry.dims)}, the spec says {want} {shape}"
                )
