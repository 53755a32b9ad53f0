"""Runtime stage: a drop-in ``Sam3Processor`` over ONNX Runtime and TensorRT engines (issue: runtime)."""
