"""The house rules: top level = shared core, stages talk through public names, thin commands, a lazy public API."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "sam3_trt"
CHECK = REPO / "tools" / "check_private_imports.py"

#: The shared core: the only modules allowed at the package's top level (docs/architecture.md).
CORE = {"__init__", "specs", "tolerances", "compare", "manifest", "errors", "device", "ort", "rle", "paths", "weights"}
STAGES = {"assets", "export", "engines", "calibration", "runtime", "video", "serving", "checks", "offline", "cli", "datasets",
          "testing"}  # fmt: skip


def test_top_level_holds_only_the_shared_core_and_stage_folders():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert modules == CORE
    assert folders == STAGES


#: Module names several folders use for the same role (the cli/ modules are named after the stage they front).
SAME_ROLE = {
    "base": {"runtime/backends/base.py", "runtime/device_memory/base.py"},  # a subpackage's interface
    "torch": {"runtime/backends/torch.py", "runtime/device_memory/torch.py"},  # its torch implementation
    "model": {"export/model.py", "video/model.py"},  # builds the stage's upstream model
    "run": {"calibration/run.py", "checks/gpu_check/run.py"},  # runs the stage's modes
}


def test_no_two_modules_share_a_name_with_different_roles():
    names: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py") and path.parent.name != "cli":
            names.setdefault(path.stem, set()).add(str(path.relative_to(PACKAGE)))
    shared = {n: p for n, p in names.items() if len(p) > 1}
    assert shared == {n: SAME_ROLE[n] for n in shared if n in SAME_ROLE} and set(shared) <= set(SAME_ROLE), shared


def test_cli_modules_are_thin():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "cli").glob("*.py")}
    assert max(sizes.values()) <= 300, sizes


def test_the_tree_has_no_cross_stage_private_import():
    proc = subprocess.run([sys.executable, str(CHECK), str(PACKAGE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_planted_cross_stage_private_import_fails_the_check(tmp_path):
    copy = tmp_path / "sam3_trt"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    tracker = copy / "video" / "tracker.py"
    tracker.write_text(tracker.read_text() + "\nfrom ..export.tracker import _grid_pos  # planted\n")
    proc = subprocess.run([sys.executable, str(CHECK), str(copy)], capture_output=True, text=True)
    assert proc.returncode == 1
    (line,) = [x for x in proc.stderr.splitlines() if "planted" in x or "_grid_pos" in x]
    assert "video/tracker.py" in line and "sam3_trt.export.tracker._grid_pos" in line and "'export'" in line
    # within a stage, and for public names, the same import shape passes
    tracker.write_text(
        tracker.read_text().replace("from ..export.tracker import _grid_pos", "from .frames import _cv2")
    )
    assert subprocess.run([sys.executable, str(CHECK), str(copy)], capture_output=True).returncode == 0


def test_public_api_is_lazy():
    code = (
        "import sys, sam3_trt; assert 'torch' not in sys.modules; "
        "from sam3_trt import Sam3AutomaticMaskGenerator, Sam3Processor, Sam3VideoPredictor, build_sam3_image_model; "
        "assert 'torch' not in sys.modules; "
        "print(sorted(sam3_trt.__all__), Sam3AutomaticMaskGenerator.__module__, Sam3Processor.__module__, "
        "Sam3VideoPredictor.__module__, build_sam3_image_model.__module__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [
        "['Sam3AutomaticMaskGenerator',", "'Sam3Processor',", "'Sam3VideoPredictor',", "'__version__',",
        "'build_sam3_image_model']", "sam3_trt.runtime.automatic", "sam3_trt.runtime.processor",
        "sam3_trt.video.predictor", "sam3_trt.runtime.model_builder",
    ]  # fmt: skip
    doc = __import__("sam3_trt").__doc__
    assert all(f"sam3_trt.{stage}" in doc for stage in STAGES - {"assets"})
