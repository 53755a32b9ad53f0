"""Calibration stage: precision decisions from data.

:mod:`.dataset` (image folder + prompts file, deterministic sampling, sha256), :mod:`.stats` (per-tensor
statistics of the FP32 graphs, streamed in chunks and cached), :mod:`.fp16_policy` (tensors unsafe in FP16
become keep-FP32 rules of a :class:`~sam3_trt.engines.precision.PrecisionPolicy`), :mod:`.quantize` (INT8 /
FP8 Q/DQ vision encoder and its measured accuracy), :mod:`.run` (``sam3-trt calibrate``).
"""
