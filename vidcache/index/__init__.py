"""index/: video-level FAISS indexes and the mined lists built on them (hard-negative labels and
videos, cross-view neighbours). Reads the cache only through `vidcache.Cache`."""

from .api import load_mined, mined_matrix, mined_tensor
from .build import build_index, choose_index, load_index, save_index
from .knn import brute_force, recall_at_k, search
from .mining import MiningSummary, hard_negative_labels, label_embeddings, nearest_videos, write_mined
from .vectors import VideoVectors, normalise, pool_rows, video_vectors

__all__ = [
    "MiningSummary",
    "VideoVectors",
    "brute_force",
    "build_index",
    "choose_index",
    "hard_negative_labels",
    "label_embeddings",
    "load_index",
    "load_mined",
    "mined_matrix",
    "mined_tensor",
    "nearest_videos",
    "normalise",
    "pool_rows",
    "recall_at_k",
    "save_index",
    "search",
    "video_vectors",
    "write_mined",
]
