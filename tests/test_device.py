"""GPU discovery (``sam3_trt.device``), without a GPU."""

from __future__ import annotations


def test_gpu_info_does_not_import_torch_when_cuda_python_answers():
    """cuda-python's answer is final when it finds a GPU: torch (seconds to import) is not loaded for it."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys
        from sam3_trt.testing import FakeGpu
        from sam3_trt.testing.cuda_double import CudaRuntimeDouble
        from unittest import mock
        with mock.patch("sam3_trt.device.cudart", lambda: CudaRuntimeDouble(FakeGpu())):
            from sam3_trt.device import gpu_info
            info = gpu_info()
        print(info.available, info.source, "torch" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "cuda-python", "False"], out.stderr[-2000:]
