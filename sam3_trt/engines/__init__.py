"""Engine stage: TensorRT and TensorRT for RTX.

No module here imports TensorRT at load time. :mod:`.parse` checks that exported graphs import into a
TensorRT flavour's ONNX parser (TensorRT for RTX needs no GPU for this).
"""
