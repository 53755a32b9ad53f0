"""Runtime stage: a drop-in ``Sam3Processor`` over ONNX Runtime and TensorRT engines.

Modules: :mod:`.processor` (the processor), :mod:`.backends` (ONNX Runtime, TensorRT, torch),
:mod:`.image` and :mod:`.postprocess` (plain pre/post-processing functions), :mod:`.tokenizer`
(torch-free sam3 tokenizer), :mod:`.artifacts` (export/engine folder resolution and checks).
"""
