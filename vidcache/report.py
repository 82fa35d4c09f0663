"""What a person sees: a progress bar on a terminal, plain log lines otherwise, summary tables."""

from __future__ import annotations

import logging
import os
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

log = logging.getLogger("vidcache")


UNBOUNDED_WIDTH = 10_000  # tables take the width their cells need; nothing is cut or wrapped


def output_console() -> Console:
    """The console tables print to: the terminal's width on a terminal; elsewhere (cron logs, pipes,
    files) no limit, so a long path or reason is never cut to 80 columns (COLUMNS still wins)."""
    console = Console()
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(width=UNBOUNDED_WIDTH)


class ExtractProgress:
    """A rich progress bar (videos, frames/s) when stderr is a terminal, else a log line every 10 s."""

    def __init__(self, *, enabled: bool = True, interval_s: float = 10.0):
        self.console = Console(stderr=True)
        self.interactive = enabled and self.console.is_terminal
        self.enabled = enabled
        self.interval_s = interval_s
        self._last_log = 0.0
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> ExtractProgress:
        if self.interactive:
            self._bar = Progress(
                TextColumn("extract"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f} frames/s  {task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("extract", total=None, rate=0.0, failed=0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def __call__(self, summary) -> None:
        if not self.enabled:
            return
        done = summary.extracted + summary.skipped + summary.failed
        if self._bar is not None:
            self._bar.update(
                self._task, total=summary.total, completed=done, rate=summary.frames_per_s, failed=summary.failed
            )
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval_s or done == summary.total:
            self._last_log = now
            log.info(
                "%d/%d videos (%d extracted, %d skipped, %d failed), %d frames, %.1f frames/s",
                done,
                summary.total,
                summary.extracted,
                summary.skipped,
                summary.failed,
                summary.frames,
                summary.frames_per_s,
            )


class TaskProgress:
    """A counted progress bar for one task (index, mine, train) on a terminal, else log lines."""

    def __init__(self, description: str, total: int, *, enabled: bool = True, interval_s: float = 10.0):
        self.description, self.total, self.done = description, total, 0
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.interval_s = interval_s
        self._bar: Progress | None = None
        self._last_log = 0.0

    def __enter__(self) -> TaskProgress:
        if self.enabled and self.console.is_terminal:
            self._bar = Progress(
                TextColumn(self.description),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def __call__(self, advance: int) -> None:
        self.done += advance
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        elif self.enabled and (time.monotonic() - self._last_log >= self.interval_s or self.done >= self.total):
            self._last_log = time.monotonic()
            log.info("%s: %d/%d", self.description, self.done, self.total)


def print_mining_summary(summary: dict, *, console: Console | None = None) -> None:
    console = console or output_console()
    table = Table(title=f"vidcache {summary['name']} → {summary['output']}")
    table.add_column("what")
    table.add_column("value", justify="right")
    recall = summary.get("recall_at_k")
    rows = [
        ("videos", summary["videos"]),
        ("rows written", summary["rows"]),
        ("k", summary["k"]),
        ("view", summary["view"]),
        ("search", summary["index_type"]),
        ("exact", summary["exact"]),
        ("recall@k (sampled)", "-" if recall is None else f"{recall:.3f} on {summary['recall_sample']} queries"),
        ("videos with < k results", summary["short_lists"]),
        ("seconds", f"{summary['seconds']:.2f}"),
    ]
    parameters = summary.get("parameters") or {}
    if "groups" in parameters:  # mine duplicates: its own counts instead of per-video list lengths
        rows[6:8] = [
            ("threshold (cosine)", parameters["threshold"]),
            ("duplicate groups", parameters["groups"]),
            ("videos to drop (one kept per group)", parameters["duplicates"]),
            ("videos whose every candidate was a duplicate", parameters["saturated"]),
        ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)


def print_extract_summary(summary, *, console: Console | None = None) -> None:
    console = console or output_console()
    table = Table(title=f"vidcache extract → {summary.cache}", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("videos in this run", summary.total),
        ("extracted now", summary.extracted),
        ("already cached (skipped)", summary.skipped),
        ("failed", summary.failed),
        ("frames (clip rows)", summary.frames),
        ("frames/s", f"{summary.frames_per_s:.1f}"),
        *((f"rows: {view}", count) for view, count in sorted(summary.rows.items())),
        *((f"absent: {view} (no stream)", count) for view, count in sorted(summary.absent.items())),
        ("decode s (all workers)", f"{summary.decode_seconds:.2f}"),
        ("model s", f"{summary.model_seconds:.2f}"),
        ("write s", f"{summary.write_seconds:.2f}"),
        ("wall s", f"{summary.seconds:.2f}"),
        ("device", summary.device),
        *((("decode workers", f"{summary.workers} {summary.decode_in}"),) if summary.decode_in else ()),
        ("peak RSS MiB (models loaded)", f"{summary.peak_rss_mib:.0f} ({summary.models_rss_mib:.0f})"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    if summary.failures:
        failed = Table(title="failed videos", show_header=True)
        failed.add_column("video_id", overflow="fold")
        failed.add_column("reason", overflow="fold")
        for video_id, reason in sorted(summary.failures.items()):
            failed.add_row(video_id, reason)
        console.print(failed)


def print_status(status: dict, *, console: Console | None = None) -> None:
    console = console or output_console()
    table = Table(title=f"vidcache status: {status['cache']}")
    for column in ("view", "model", "weights", "dtype", "sampling", "stream", "done", "absent", "failed", "rows"):
        table.add_column(column)
    for view, info in status["views"].items():
        streams = info.get("streams", {})  # FFmpeg stream index → videos read from it
        table.add_row(
            view,
            info["model"],
            info["pretrained"],
            info["dtype"],
            info["sampling"],
            ", ".join(f"#{index}" + (f" ×{n}" if len(streams) > 1 else "") for index, n in streams.items()) or "-",
            str(info["done"]),
            str(info.get("absent", 0)),
            str(info["failed"]),
            str(info["rows"]),
        )
    console.print(table)
    console.print(
        f"{status['shards']} shard(s), {status['bytes'] / 2**20:.1f} MiB, {status['entries']} manifest entries"
    )
    for video_id, reason in sorted(status["failures"].items()):
        console.print(f"  failed {video_id}: {reason}")


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    # third-party libraries (open_clip logs every model build at INFO) only speak up for warnings
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("vidcache").setLevel(logging.DEBUG if verbose else logging.INFO)
    # huggingface_hub prints through its own handler: passed on to ours as well, every line came twice
    logging.getLogger("huggingface_hub").propagate = False
