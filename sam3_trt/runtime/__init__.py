"""Runtime stage: a drop-in ``Sam3Processor`` over ONNX Runtime and TensorRT engines.

Follow an image from ``set_image`` to masks: :mod:`.processor` (the processor) → :mod:`.image`
(pre-processing) → :mod:`.backends` (one module per backend: ONNX Runtime, TensorRT, torch eager) →
:mod:`.postprocess` (plain functions). Beside them: :mod:`.device_memory` (torch or cuda-python device
memory for TensorRT), :mod:`.tokenizer` (torch-free sam3 tokenizer), :mod:`.artifacts` (export/engine
folder resolution and checks), :mod:`.ort_attention` (CPU attention fusion, in memory).
"""
