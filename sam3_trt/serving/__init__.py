"""Serving SAM3 through Triton Inference Server.

* :mod:`.contract`: the ``sam3`` model's request and response tensors, declared once as data (read by the
  PyTriton server, the Triton model repository, the client and the tests);
* :mod:`.handler`: the inference callable (decode, validate, encode images in one batch, run prompts,
  encode masks), free of any server so it is tested directly;
* :mod:`.rle`: COCO run-length encoding of masks (the compact response form);
* :mod:`.server`: ``sam3-trt serve`` on PyTriton;
* :mod:`.triton_repo`: a model repository for a standalone ``tritonserver`` (TensorRT plans + Python backend);
* :mod:`.client`: ``sam3-trt client`` over ``tritonclient`` (HTTP or gRPC).
"""
