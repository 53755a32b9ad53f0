"""``manifest.json``: what made an artifact folder. Every reader checks it before use."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import Sam3TrtError
from .specs import ALL_SPECS, CLICK_GRAPHS, GraphSpec

MANIFEST_FILE = "manifest.json"
FORMAT = 1


def write_manifest(folder: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``data`` (plus the format number) as ``folder/manifest.json`` atomically."""
    path = Path(folder) / MANIFEST_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **data}, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(folder: str | os.PathLike[str], kind: str | None = None) -> dict[str, Any]:
    """Read and validate ``folder/manifest.json``.

    Args:
        folder: Artifact folder.
        kind: Expected ``"kind"`` (``"onnx-export"``, ``"engines"``), or ``None`` for any.

    Raises:
        Sam3TrtError: missing folder or manifest, invalid JSON, unknown format or wrong kind.
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise Sam3TrtError(f"artifact folder {folder} does not exist; run `sam3-trt export --out {folder}` first")
    if not path.is_file():
        raise Sam3TrtError(
            f"{folder} has no {MANIFEST_FILE}: it is not a sam3-trt artifact folder (or an export did not finish)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise Sam3TrtError(f"{path} is not valid JSON ({exc}); re-run the export") from None
    if data.get("format") != FORMAT:
        raise Sam3TrtError(f"{path} has format {data.get('format')!r}, this sam3-trt reads format {FORMAT}; re-export")
    if kind is not None and data.get("kind") != kind:
        raise Sam3TrtError(f"{folder} holds {data.get('kind')!r} artifacts, expected {kind!r}")
    for name, entry in manifest_graphs(data).items():
        why = spec_difference(entry.get("spec"), ALL_SPECS.get(name))
        if why is not None:
            raise Sam3TrtError(
                f"{folder}: graph {name} was made by another sam3-trt version ({why}); {remake_hint(data, folder)}"
            )
    return data


def spec_difference(recorded: dict[str, Any] | None, spec: GraphSpec | None) -> str | None:
    """How a graph's I/O recorded in a manifest differs from this version's spec, or ``None`` when it does not.

    Names, dtypes and shapes of inputs and outputs are compared (what binding and feeds depend on); a manifest
    entry without a spec (older format) or a graph this version does not know is not judged here.
    """
    if recorded is None or spec is None:
        return None
    have = GraphSpec.from_dict(recorded)
    for part, old, new in (("inputs", have.inputs, spec.inputs), ("outputs", have.outputs, spec.outputs)):
        old_names, new_names = [t.name for t in old], [t.name for t in new]
        if old_names != new_names:
            return f"its {part} are {old_names}, this version's are {new_names}"
        for a, b in zip(old, new, strict=True):
            if (a.dtype, tuple(a.shape)) != (b.dtype, tuple(b.shape)):
                return f"{a.name} is {a.dtype}{list(a.shape)}, this version's is {b.dtype}{list(b.shape)}"
    return None


def manifest_graphs(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every graph a manifest holds, name -> entry: the image graphs, then the video graphs (an export made
    with ``--video`` lists them under ``video``; an engine folder lists all under ``graphs``)."""
    return {**manifest.get("graphs", {}), **manifest.get("video", {}).get("graphs", {})}


def check_click_graphs(manifest: dict[str, Any], where: str, otherwise: str = "") -> None:
    """Refuse ``--clicks`` in one line, before anything loads, when the artifacts lack :data:`CLICK_GRAPHS`.

    Args:
        manifest: The artifacts' manifest.
        where: How to name the artifacts (their folder).
        otherwise: What the user can do instead, appended to the fix (``", or serve without --clicks"``).
    """
    missing = [g for g in CLICK_GRAPHS if g not in manifest_graphs(manifest)]
    if missing:
        raise Sam3TrtError(
            f"--clicks: {where} has no {' or '.join(missing)} graph; clicks need an export made with "
            f"`sam3-trt export --video` (or engines built from it){otherwise}"
        )


def manifest_specs(manifest: dict[str, Any]) -> dict[str, GraphSpec]:
    """The specs of the graphs a manifest holds, in pipeline order (image graphs, then video graphs): what
    the FP16 pass converts, the builder builds and the TensorRT runtime loads."""
    held = manifest_graphs(manifest)
    return {name: spec for name, spec in ALL_SPECS.items() if name in held}


def graph_sources(manifest: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """What a derived folder (FP16, INT8) records of the export it was made from: per graph, the sha256
    of the ``.onnx`` file and of its external data. The data's hash matters: exports are byte-reproducible,
    so a random-weight and a checkpoint export of one architecture share the ``.onnx`` file.
    """
    return {
        name: {"sha256": g["sha256"], "data_sha256": g.get("data_sha256")}
        for name, g in manifest_graphs(manifest).items()
    }


#: Beside the files of a verified folder: what was hashed, at which size and modification time.
STAMP_FILE = ".sam3-trt-verified.json"


def manifest_files(manifest: dict[str, Any]) -> list[tuple[str, str | None, int | None, str]]:
    """Every file a manifest vouches for: ``(relative path, sha256 or None, size or None, graph)``."""
    files = []
    for name, entry in manifest_graphs(manifest).items():
        if "file" in entry:
            size = entry.get("file_bytes", entry.get("bytes") if manifest.get("kind") == "engines" else None)
            files.append((entry["file"], entry.get("sha256"), size, name))
        if "data_file" in entry:
            files.append((entry["data_file"], entry.get("data_sha256"), entry.get("data_bytes"), name))
    tokenizer = manifest.get("tokenizer", {})
    if tokenizer.get("file"):
        files.append((tokenizer["file"], tokenizer.get("sha256"), None, "tokenizer"))
    return files


def remake_hint(manifest: dict[str, Any], folder: Path) -> str:
    """The command that makes ``folder`` again, for error messages."""
    if manifest.get("kind") == "engines":
        return f"rebuild it: sam3-trt build --gpu auto --onnx-dir EXPORT --out {folder.parent} --force"
    mode = manifest.get("precision", {}).get("mode", "fp32")
    if mode == "fp16":
        return f"make it again: sam3-trt fp16 --onnx-dir EXPORT --out {folder} --force"
    if mode in ("int8", "fp8"):
        return f"make it again: sam3-trt calibrate --artifacts EXPORT --mode {mode} --out {folder}"
    video = " --video" if "video" in manifest else ""
    return f"export it again: sam3-trt export{video} --out {folder} --force (with the same weights)"


def verify_files(folder: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Check every file the manifest lists: present, its recorded size, and its sha256.

    Sizes are checked on every call. A file is hashed once and remembered in :data:`STAMP_FILE` beside it
    (size, modification time, sha256); later calls hash again only what changed since, so a 3 GB export
    is verified in milliseconds after its first load. A folder that cannot be written is hashed each time.

    Raises:
        Sam3TrtError: naming the file that is missing, truncated or changed, and how to make it again.
    """
    from .export.model import sha256_file

    folder = Path(folder)
    stamp_path = folder / STAMP_FILE
    try:
        stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    except (OSError, ValueError):
        stamp = {}
    changed = False
    for rel, sha, size, graph in manifest_files(manifest):
        path = folder / rel
        if not path.is_file():
            raise Sam3TrtError(f"{graph}: {path} is missing; {remake_hint(manifest, folder)}")
        st = path.stat()
        if size is not None and st.st_size != size:
            raise Sam3TrtError(
                f"{graph}: {path} has {st.st_size} bytes, its manifest says {size} (truncated or replaced); "
                f"{remake_hint(manifest, folder)}"
            )
        if sha is None:
            continue  # an older manifest without the file's hash: its size is all there is to check
        seen = stamp.get(rel, {})
        if seen.get("sha256") == sha and seen.get("size") == st.st_size and seen.get("mtime_ns") == st.st_mtime_ns:
            continue
        if sha256_file(path) != sha:
            raise Sam3TrtError(
                f"{graph}: {path} does not match its manifest sha256 (truncated or modified); "
                f"{remake_hint(manifest, folder)}"
            )
        stamp[rel] = {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        changed = True
    if changed:
        try:
            tmp = stamp_path.with_name(f"{STAMP_FILE}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(stamp, indent=1) + "\n")
            os.replace(tmp, stamp_path)
        except OSError:
            pass  # read-only folder: verified all the same, just hashed again next time


def make_staging(out_dir: str | os.PathLike[str]) -> Path:
    """Hidden staging folder beside ``out_dir``: artifacts are written there and published only when complete.

    Raises:
        Sam3TrtError: ``out_dir``'s parent cannot be created or written.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as exc:
        raise Sam3TrtError(
            f"cannot write to output folder {out_dir} ({exc.strerror or exc}); choose a writable --out"
        ) from None
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the published folder gets normal permissions
    return staging


def publish(staging: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> None:
    """Replace ``out_dir`` (if any) by the finished ``staging`` folder, its files readable as any other file."""
    umask = os.umask(0)
    os.umask(umask)
    for path in Path(staging).rglob("*"):
        if path.is_file():  # some writers (torch's external data) create 0600 files
            path.chmod(0o666 & ~umask)
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
