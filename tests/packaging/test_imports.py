"""Every submodule imports, and every CLI command's --help runs, without TensorRT, pycuda or cuda-python."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ("tensorrt", "tensorrt_rtx", "pycuda", "cuda")

SCRIPT = textwrap.dedent(
    f"""
    import importlib, importlib.abc, pkgutil, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError(f"blocked for this test: {{name}}")
            return None

    sys.meta_path.insert(0, Block())
    import sam3_trt
    from click.testing import CliRunner
    from sam3_trt.cli import main

    names = [m.name for m in pkgutil.walk_packages(sam3_trt.__path__, "sam3_trt.")]
    for name in names:
        importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
    assert not loaded, loaded
    runner = CliRunner()
    commands = sorted(main.commands)
    for args in [["--help"]] + [[c, "--help"] for c in commands]:
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        assert "Usage:" in result.output
    print(len(names), "modules;", ",".join(commands))
    """
)


def test_submodules_and_cli_help_without_tensorrt():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    count, commands = proc.stdout.strip().split(" modules;")
    assert int(count) >= 12
    assert {"doctor", "export"} <= set(commands.strip().split(","))


def test_import_sam3_trt_loads_no_heavy_dependency():
    code = "import sys, sam3_trt, sam3_trt.specs, sam3_trt.cli; print(sorted(m for m in ('torch','onnxruntime','tensorrt','tensorrt_rtx','sam3') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
