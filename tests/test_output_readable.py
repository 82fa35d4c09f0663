"""Issue 23 item 9, output a person can read: failed views grouped by reason in a bounded width,
titles that never break a path, every metric naming its split, progress in the unit the run makes,
with an ETA; and item 5's one progress line (every epoch in RUN/train.log) instead of a line per epoch."""

from __future__ import annotations

import io
import json
import logging

from click.testing import CliRunner
from rich.console import Console

from tests.test_heads import write_cache
from tests.test_heads_thresholds import _corpus
from vidcache.cli import cli
from vidcache.extract.plan import ExtractSummary
from vidcache.report import (
    FAILURES_WIDTH,
    ExtractProgress,
    TrainProgress,
    duration_text,
    eta_text,
    print_extract_summary,
    rate_text,
)

VIEWS = ("clip", "audio", "motion", "flow", "frames")
REASON = "cannot decode /data/videos/truncated.mp4: " + "moov atom not found; " * 16 + "(truncated or not a video)"


def _render(summary: ExtractSummary, *, width: int, terminal: bool) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None)
    print_extract_summary(summary, console=console)
    return console.file.getvalue()


def _failed_summary(cache: str) -> ExtractSummary:
    summary = ExtractSummary(total=3, extracted=1, failed=2, seconds=2.0, frames=10, cache=cache)
    summary.failed_items = [{"video_id": "truncated.mp4", "view": v, "reason": REASON} for v in VIEWS]
    summary.failed_items += [
        {"video_id": "silent.mp4", "view": "audio", "reason": "no audio samples decoded"},
        {"video_id": "silent.mp4", "view": "clip", "reason": "decoded 0 frames"},
    ]
    summary.failures = {"truncated.mp4": "; ".join(f"{v}: {REASON}" for v in VIEWS), "silent.mp4": "…"}
    return summary


def test_failed_videos_share_one_row_per_reason_in_a_bounded_width():
    text = _render(_failed_summary("/c"), width=10_000, terminal=False)  # a pipe: no terminal width
    failed = text[text.index("failed videos") :]
    assert max(len(line) for line in failed.splitlines()) <= FAILURES_WIDTH
    assert failed.count("cannot decode") == 1  # one reason for the 5 views, not 5 (was 1,950 chars wide)
    assert "clip, audio," in failed and "motion, flow," in failed
    assert failed.count("silent.mp4") == 2  # two distinct reasons stay two rows


def test_titles_never_break_a_path():
    path = "/work/projects/some-team/" + "deeply/nested/" * 4 + "feature-cache-2026"
    text = _render(_failed_summary(path), width=60, terminal=True)
    lines = [line.strip() for line in text.splitlines()]
    assert "vidcache extract" in lines and "failed videos" in lines  # titles stand alone
    assert not any("vidcache extract" in line and "/" in line for line in lines)
    assert "".join(line.strip("│ ") for line in text.splitlines()).count("feature-cache-2026") == 1  # in a row


def test_progress_names_the_unit_the_run_makes_and_an_eta(caplog):
    flow_only = ExtractSummary(total=4, extracted=2, seconds=4.0, rows={"flow": 40, "motion": 20})
    assert rate_text(flow_only) == "60 rows, 15.0 rows/s"  # was "0 frames, 0.0 frames/s"
    assert rate_text(ExtractSummary(total=4, extracted=2, seconds=4.0, frames=8)) == "8 frames, 2.0 frames/s"
    assert rate_text(ExtractSummary(total=4, skipped=2, seconds=4.0)) == "0.50 videos/s"
    assert eta_text(2, 4, 4.0) == "ETA 4 s" and eta_text(0, 4, 1.0) == "ETA -"
    assert duration_text(185) == "3 min 05 s" and duration_text(7620) == "2 h 07 min"
    with caplog.at_level(logging.INFO, logger="vidcache"):
        ExtractProgress(interval_s=0)(flow_only)
    assert "60 rows, 15.0 rows/s, ETA 4 s" in caplog.text and "frames" not in caplog.text


def test_train_progress_is_a_line_every_interval_not_one_per_epoch():
    progress = TrainProgress("train mlp", interval_s=1e9)
    progress.console = Console(file=io.StringIO(), width=200, color_system=None)
    for epoch in range(1, 41):
        progress(epoch, {"epoch": epoch, "train_loss": 0.5, "val_map_macro": 0.25, "epochs": 40, "best_epoch": 3})
    lines = progress.console.file.getvalue().splitlines()
    assert len(lines) == 2, lines  # the first and the last epoch
    assert lines[0].startswith("train mlp: epoch 1/40, train loss 0.5000, val map_macro 0.2500 (best at epoch 3)")
    assert lines[1].startswith("train mlp: epoch 40/40") and "s/epoch, ETA 0 s" in lines[1]


def test_cli_train_and_eval_name_the_split_and_log_every_epoch(tmp_path):
    cache = write_cache(tmp_path / "cache", _corpus(n_val_per_class=8))
    run = tmp_path / "run"
    args = ["train", "--cache", str(cache), "--out", str(run), "--head", "mlp", "--epochs", "4", "--lr", "0.01"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "epoch 1 {" not in result.stderr and 1 <= result.stderr.count("train mlp: epoch") <= 4, result.stderr
    assert "best val map_macro" in result.stdout and "of 4" in result.stdout
    assert "val map_macro " in result.stdout and "val f1_macro_tuned" in result.stdout
    logged = (run / "train.log").read_text().splitlines()
    assert [line.split()[2] for line in logged] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("val_map_macro=" in line and "train_loss=" in line for line in logged)
    evaluated = CliRunner().invoke(cli, ["eval", "--run", str(run), "--cache", str(cache)])
    assert evaluated.exit_code == 0 and "test map_macro" in evaluated.stdout, evaluated.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 4
