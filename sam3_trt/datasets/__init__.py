"""Datasets stage: label whole image sets with concept prompts, resumably, and evaluate one run against another.

Follow a run: :mod:`.inputs` (the image list in canonical order, prompts, per-image prompts and boxes) →
:mod:`.label` (decode ahead, the model on one thread, RLE behind) → :mod:`.shards` (shards written whole,
``run.json``, the COCO files) → :mod:`.evaluate` (COCO AP and SAM3's cgF1 against ground truth or another run).
"""
