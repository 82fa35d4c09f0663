"""Issue 23 item 4: per-class thresholds are tuned on val only where val has the evidence for it;
elsewhere the default 0.5 is kept, the run records which classes fell back and `predict` says so.
Checked against scikit-learn's precision_recall_curve (the F1-best threshold) and the issue's scenario."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import precision_recall_curve

from tests.test_heads import DIM, fast, write_cache
from vidcache.cli import cli
from vidcache.heads.metrics import MIN_TUNING_NEGATIVES, MIN_TUNING_POSITIVES, tune_thresholds_with_evidence
from vidcache.heads.predict import predict_run
from vidcache.heads.train import train


def sklearn_f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The highest threshold among those of maximal F1 on scikit-learn's precision-recall curve."""
    precision, recall, thresholds = precision_recall_curve(y, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0)[:-1]
    return float(thresholds[np.flatnonzero(f1 == f1.max())[-1]])


def test_tuned_where_val_has_the_evidence_default_elsewhere():
    rng = np.random.default_rng(3)
    n = 40
    y = np.zeros((n, 4), dtype=int)
    y[:, 0] = rng.random(n) < 0.4  # plenty of both
    y[:, 1] = rng.random(n) < 0.2
    y[0, 2] = 1  # one positive: the 0.00045 / 0.92 thresholds came from such classes
    y[:, 3] = 1
    y[: MIN_TUNING_NEGATIVES - 1, 3] = 0  # too few negatives
    scores = np.clip(0.5 * y + rng.random((n, 4)) * 0.7, 0, 1)
    thresholds, fell_back = tune_thresholds_with_evidence(y, scores)
    assert fell_back.tolist() == [False, False, True, True]
    for c in (0, 1):
        assert y[:, c].sum() >= MIN_TUNING_POSITIVES
        assert thresholds[c] == pytest.approx(sklearn_f1_threshold(y[:, c], scores[:, c]), abs=0)
    assert thresholds[2:].tolist() == [0.5, 0.5]


def _corpus(n_val_per_class: int, seed: int = 0) -> dict:
    """Three classes, a signal along e_c for class c; multi-label (some videos hold two labels)."""
    rng = np.random.default_rng(seed)
    videos = {}
    for split, per_class in (("train", 12), ("val", n_val_per_class), ("test", 4)):
        for c, name in enumerate("abc"):
            for i in range(per_class):
                x = rng.normal(size=(4, DIM)) * 0.5
                x[:, c] += 1.5
                labels = (name,)
                if i % 3 == 0:  # a second label makes the task multi-label
                    other = (c + 1) % 3
                    x[:, other] += 1.5
                    labels = (name, "abc"[other])
                videos[f"{split}/{name}{i}"] = (x, labels, split)
    return videos


def test_small_val_falls_back_and_predict_says_so(tmp_path):
    cache = write_cache(tmp_path / "cache", _corpus(n_val_per_class=1))
    summary = train(cache, fast("linear", epochs=5), tmp_path / "run")
    assert summary.threshold_fallback == ["a", "b", "c"]
    assert json.loads((tmp_path / "run" / "thresholds.json").read_text()) == {"a": 0.5, "b": 0.5, "c": 0.5}
    assert any("3 of 3 classes" in w and "default 0.5" in w for w in summary.warnings), summary.warnings
    result = CliRunner().invoke(
        cli, ["predict", "--run", str(tmp_path / "run"), "--cache", str(cache), "--out", str(tmp_path / "p.parquet")]
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("vidcache: warning:")]
    assert len(warnings) == 1 and "'a', 'b', 'c'" in warnings[0] and "default 0.5" in warnings[0], result.stderr
    as_json = CliRunner().invoke(
        cli, ["predict", "--run", str(tmp_path / "run"), "--cache", str(cache), "--out", str(tmp_path / "q.parquet"),
              "--json"],
    )  # fmt: skip
    info = json.loads(as_json.stdout)
    assert info["threshold_fallback"] == ["a", "b", "c"] and len(info["warnings"]) == 1
    frame = pd.read_parquet(tmp_path / "p.parquet")
    assert len(frame) == 3 * 17 * 3 and (frame["predicted"] == (frame["score"] >= 0.5)).all()


def test_big_enough_val_tunes_every_class_as_sklearn_does(tmp_path):
    cache = write_cache(tmp_path / "cache", _corpus(n_val_per_class=8))
    summary = train(cache, fast("linear", epochs=5), tmp_path / "run")
    assert summary.threshold_fallback == [] and not any("threshold" in w for w in summary.warnings)
    thresholds = json.loads((tmp_path / "run" / "thresholds.json").read_text())
    frame = predict_run(tmp_path / "run", cache, split="val")
    scores = frame.pivot(index="video_id", columns="label", values="score")
    for label in "abc":
        truth = np.array([label in v.split("/")[1] or _second(v, label) for v in scores.index], dtype=int)
        assert thresholds[label] == pytest.approx(sklearn_f1_threshold(truth, scores[label].to_numpy()), abs=1e-6)
    result = CliRunner().invoke(
        cli, ["predict", "--run", str(tmp_path / "run"), "--cache", str(cache), "--out", str(tmp_path / "p.parquet")]
    )
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output


def _second(video_id: str, label: str) -> bool:
    """Whether `video_id` (val/<name><i>) of _corpus also carries `label` as its second label."""
    name, i = video_id.split("/")[1][0], int(video_id.split("/")[1][1:])
    return i % 3 == 0 and "abc"[("abc".index(name) + 1) % 3] == label
