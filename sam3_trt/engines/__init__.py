"""Engine stage: mixed precision, then TensorRT and TensorRT for RTX engines.

No module here imports TensorRT at load time. :mod:`.precision` and :mod:`.mixed` turn an FP32 export
into an FP16 one under a declared policy, :mod:`.fp16_estimate` measures its error on a CPU,
:mod:`.parse` checks graphs import into a TensorRT flavour's parser (TensorRT for RTX needs no GPU),
:mod:`.targets` maps GPU names to compute capabilities and :mod:`.builder` writes the build plan and
the engines.
"""
