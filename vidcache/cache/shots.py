"""Per-shot pooling of a frame-level view: each shot of the `shots` view takes the rows of another
view whose timestamps fall in its span, pooled. No decode: the shots and the rows are both cached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Pooling = Literal["mean", "max"]
POOLINGS: tuple[str, ...] = ("mean", "max")


@dataclass
class Shots:
    """The shots of one video: spans, the `shots` view's columns, and (with a view) pooled rows."""

    video_id: str
    start_s: np.ndarray  # [K] float64
    end_s: np.ndarray  # [K] float64
    columns: dict[str, np.ndarray]  # first_frame, last_frame, mean_prob, max_prob: [K] each
    embeddings: np.ndarray | None = None  # [K, D] float32, pooled rows of `view`
    rows_per_shot: np.ndarray | None = None  # [K] rows of `view` pooled into each shot
    view: str | None = None

    def __len__(self) -> int:
        return len(self.start_s)


def pool_rows(
    start_s: np.ndarray, end_s: np.ndarray, rows: np.ndarray, times_s: np.ndarray, *, pooling: Pooling
) -> tuple[np.ndarray, np.ndarray]:
    """([K, D] pooled rows, [K] counts): each shot pools the rows with start_s <= t < end_s; a shot
    no row falls in (shorter than the view's sampling interval) takes the row nearest its middle."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}: must be one of {', '.join(POOLINGS)}")
    rows = np.asarray(rows, np.float32).reshape(len(rows), -1)
    out = np.zeros((len(start_s), rows.shape[1]), np.float32)
    counts = np.zeros(len(start_s), np.int64)
    lo = np.searchsorted(times_s, start_s - 1e-9, side="left")
    hi = np.searchsorted(times_s, end_s - 1e-9, side="left")
    for k, (a, b) in enumerate(zip(lo, hi, strict=True)):
        if b > a:
            span = rows[a:b]
            out[k] = span.mean(axis=0) if pooling == "mean" else span.max(axis=0)
            counts[k] = b - a
        elif len(rows):
            middle = (start_s[k] + end_s[k]) / 2
            out[k] = rows[int(np.argmin(np.abs(times_s - middle)))]
    return out, counts
