"""CLIP's byte-pair tokenizer without torch: open_clip's `SimpleTokenizer` (from OpenAI's CLIP, MIT
licence) re-stated over NumPy, so a text query in a fresh process need not import torch (1.5-3 s) to
turn a prompt into tokens. Its output equals open_clip's token for token (tests/test_text_tower.py
checks families of generated strings against open_clip itself), and a text tower is only exported
after the two agreed on the prompts of that call (text_tower.py)."""

from __future__ import annotations

import functools
import html
import itertools
import string
from typing import Literal

import numpy as np

__all__ = ["CleanKind", "ClipBpeTokenizer"]

CleanKind = Literal["lower", "whitespace", "canonicalize"]
# the vocabulary size open_clip's SimpleTokenizer reads from its merges file (first line is a header)
_MERGES = 49152 - 256 - 2
_SPECIAL = ("<start_of_text>", "<end_of_text>")
_UNRANKED = 1 << 30


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """UTF-8 bytes → printable characters, as CLIP's BPE codes them (no whitespace or control characters)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def _basic_clean(text: str) -> str:
    import ftfy  # imported on first use: 0.15 s, needed only when a new prompt is tokenised

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _clean(text: str, kind: CleanKind) -> str:
    text = _basic_clean(text)
    if kind == "canonicalize":  # big_vision's: underscores to spaces, punctuation dropped, lower case
        text = text.replace("_", " ").translate(str.maketrans("", "", string.punctuation)).lower()
        return " ".join(text.split()).strip()
    text = " ".join(text.split()).strip()
    return text.lower() if kind == "lower" else text


class ClipBpeTokenizer:
    """`tokenizer(texts)` → int64 [len(texts), context_length]: start token, BPE tokens, end token, zero
    padding; a text too long is cut and its last kept token replaced by the end token (as open_clip)."""

    def __init__(self, merges_text: str, *, context_length: int = 77, clean: CleanKind = "lower"):
        import regex  # \p{L} classes; the `regex` package open_clip's tokenizer uses

        if clean not in ("lower", "whitespace", "canonicalize"):
            raise ValueError(f"clean={clean!r}: choose from lower, whitespace, canonicalize")
        # merges as open_clip's file lists them ("first second" per line after a header); ranks keyed by that
        # line, not by a tuple (building 49k tuples is most of a fresh process's tokenizer set-up)
        merges = merges_text.split("\n")[1 : _MERGES + 1]
        self.byte_encoder = _bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab += [symbol + "</w>" for symbol in vocab]
        vocab += [merge.replace(" ", "") for merge in merges]
        vocab += list(_SPECIAL)
        self.encoder = {token: index for index, token in enumerate(vocab)}
        self.bpe_ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.sot_token_id, self.eot_token_id = self.encoder[_SPECIAL[0]], self.encoder[_SPECIAL[1]]
        self.vocab_size = len(self.encoder)
        self.context_length = context_length
        self.clean = clean
        self._memo = {token: token for token in _SPECIAL}
        self._pattern = regex.compile(
            "|".join(_SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
        )

    def _bpe(self, token: str) -> str:
        if token in self._memo:
            return self._memo[token]
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = {f"{a} {b}" for a, b in itertools.pairwise(word)}
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, _UNRANKED))
            if best not in self.bpe_ranks:
                break
            first, second = best.split(" ")
            merged: list[str] = []
            i = 0
            while i < len(word):
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        self._memo[token] = " ".join(word)
        return self._memo[token]

    def encode(self, text: str) -> list[int]:
        """The BPE token ids of `text` after cleaning (no start or end token)."""
        ids: list[int] = []
        for token in self._pattern.findall(_clean(text, self.clean)):
            coded = "".join(self.byte_encoder[byte] for byte in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(coded).split(" "))
        return ids

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = ids
        return out
