"""Device memory and streams for the TensorRT runner, one module per provider.

* :mod:`.torch`: torch CUDA tensors (the drop-in case; results stay torch tensors on the GPU).
* :mod:`.cuda_python`: ``cuda.bindings.runtime`` and :class:`~.cuda_python.DeviceArray` (no torch needed).

:func:`open_device_memory` picks one (``"auto"``) or opens the one named; :mod:`.base` holds the
interface the runner uses.
"""

from .base import PROVIDERS, CudaError, DeviceMemory, Timer, open_device_memory

__all__ = ["PROVIDERS", "CudaError", "DeviceMemory", "Timer", "open_device_memory"]
