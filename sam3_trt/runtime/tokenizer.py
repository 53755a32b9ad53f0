"""sam3's text tokenizer (CLIP byte-level BPE, lower-cased) without torch.

Produces the same ids as ``sam3.model.tokenizer_ve.SimpleTokenizer`` (``tests/runtime/test_runtime_units.py``
compares them), as an ``int64`` numpy array ``[P, context_length]``. Prompts longer than the context
are truncated like upstream (last kept id becomes end-of-text), with a warning upstream does not give.
"""

from __future__ import annotations

import functools
import gzip
import html
import os
import warnings
from collections.abc import Sequence

import numpy as np

#: Merges sam3 reads from the vocabulary file (CLIP's 49152-entry vocabulary minus bytes and specials).
_NUM_MERGES = 49152 - 256 - 2
_SPECIALS = ("<start_of_text>", "<end_of_text>")


@functools.lru_cache(maxsize=1)
def _byte_alphabet() -> dict[int, str]:
    """Reversible byte -> printable unicode map of byte-level BPE (printable bytes map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class Tokenizer:
    """Torch-free tokenizer matching sam3's.

    Args:
        bpe_path: ``bpe_simple_vocab_16e6.txt.gz`` (bundled in :mod:`sam3_trt.assets`, copied into every
            export and engine folder).
        context_length: Token context (32 for sam3).
    """

    def __init__(self, bpe_path: str | os.PathLike[str], context_length: int = 32) -> None:
        import ftfy
        import regex

        self._fix_text = ftfy.fix_text
        self._regex = regex
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1 : _NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        alphabet = list(_byte_alphabet().values())
        vocab = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges] + list(_SPECIALS)
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.sot_id = self.encoder[_SPECIALS[0]]
        self.eot_id = self.encoder[_SPECIALS[1]]
        self.context_length = context_length
        self._pattern = regex.compile(
            "|".join(_SPECIALS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self._cache: dict[str, list[str]] = {s: [s] for s in _SPECIALS}

    def _clean(self, text: str) -> str:
        text = html.unescape(html.unescape(self._fix_text(text))).strip()
        return self._regex.sub(r"\s+", " ", text).strip().lower()

    def _bpe(self, token: str) -> list[str]:
        if token in self._cache:
            return self._cache[token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, _NUM_MERGES + 1))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens."""
        alphabet = _byte_alphabet()
        ids: list[int] = []
        for piece in self._pattern.findall(self._clean(text)):
            mapped = "".join(alphabet[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(mapped))
        return ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """``int64 [len(texts), context_length]``: start, ids, end, zero padding.

        Args:
            texts: One prompt or several.
        """
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > self.context_length:
                warnings.warn(
                    f"prompt {text[:40]!r}... has {len(ids)} tokens; truncated to sam3's context of "
                    f"{self.context_length}",
                    stacklevel=2,
                )
                ids = ids[: self.context_length]
                ids[-1] = self.eot_id
            out[row, : len(ids)] = ids
        return out
