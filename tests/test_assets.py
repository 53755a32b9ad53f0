"""Bundled BPE vocabulary: byte-identical to open_clip_torch 3.3.0's copy, and what sam3 tokenizes with."""

from __future__ import annotations

import hashlib

import pytest

from sam3_trt.assets import BPE_SHA256, bpe_path


def test_bpe_vocab_hash_and_licence():
    assert hashlib.sha256(bpe_path().read_bytes()).hexdigest() == BPE_SHA256
    assert "Permission is hereby granted" in bpe_path().with_name("LICENSE.bpe_simple_vocab").read_text()


def test_sam3_tokenizer_reads_it():
    pytest.importorskip("sam3")
    from sam3.model.tokenizer_ve import SimpleTokenizer

    ids = SimpleTokenizer(bpe_path=str(bpe_path()))(["a red square"], context_length=32)
    assert ids.shape == (1, 32)
    assert ids[0, 0].item() == 49406 and 49407 in ids[0].tolist()
