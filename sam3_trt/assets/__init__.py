"""Bundled data files.

``bpe_simple_vocab_16e6.txt.gz`` is the CLIP BPE vocabulary sam3's tokenizer reads; the sam3 wheel does
not ship it. Our copy is byte-identical to the one in the ``open_clip_torch==3.3.0`` wheel on PyPI
(MIT licence, see ``LICENSE.bpe_simple_vocab``); ``tests/test_assets.py`` checks its sha256.
"""

from __future__ import annotations

from pathlib import Path

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


def bpe_path() -> Path:
    """Path of the bundled BPE vocabulary."""
    return Path(__file__).with_name(BPE_FILE)
