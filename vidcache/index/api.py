"""Loading mined lists for the heads: as pandas DataFrames or as padded index tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .mining import MINED_DIR


def load_mined(cache_dir: str | Path, name: str) -> pd.DataFrame:
    """`hard_negatives`, `hard_negative_videos` or `neighbours_<view>` from CACHE/mined/."""
    path = Path(cache_dir) / MINED_DIR / f"{name}.parquet"
    if not path.exists():
        available = sorted(p.stem for p in path.parent.glob("*.parquet")) if path.parent.exists() else []
        raise FileNotFoundError(
            f"{path} does not exist (mined lists here: {', '.join(available) or 'none'}); run `vidcache mine ...`"
        )
    return pd.read_parquet(path)


def mined_matrix(frame: pd.DataFrame, *, queries: list[str], column: str, vocabulary: list[str], k: int) -> np.ndarray:
    """[len(queries), k] int64: row i holds the positions in `vocabulary` of query i's mined items
    (`column` = "label", "negative_id" or "neighbour_id") in rank order, padded with -1.
    `torch.from_numpy` turns it into the tensor a head indexes with."""
    position = {item: i for i, item in enumerate(vocabulary)}
    row_of = {video_id: i for i, video_id in enumerate(queries)}
    out = np.full((len(queries), k), -1, np.int64)
    ordered = frame.sort_values(["video_id", "rank"], kind="stable")
    fill = np.zeros(len(queries), np.int64)
    for video_id, item in zip(ordered["video_id"], ordered[column], strict=True):
        row = row_of.get(video_id)
        if row is None or fill[row] >= k or item not in position:
            continue
        out[row, fill[row]] = position[item]
        fill[row] += 1
    return out


def mined_tensor(frame: pd.DataFrame, *, queries: list[str], column: str, vocabulary: list[str], k: int):
    """`mined_matrix` as a torch LongTensor, for heads that gather embeddings by index."""
    import torch

    return torch.from_numpy(mined_matrix(frame, queries=queries, column=column, vocabulary=vocabulary, k=k))
