"""What a person sees: a progress bar on a terminal, plain log lines otherwise, summary tables."""

from __future__ import annotations

import logging
import os
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
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


def rate_text(summary) -> str:
    """The speed of an extract run in the unit it produces: sampled frames (clip rows) when it makes
    any, else rows of its views (a flow- or frames-only run), else videos."""
    seconds = summary.seconds
    per_s = lambda n: n / seconds if seconds > 0 else 0.0  # noqa: E731
    if summary.frames:
        return f"{summary.frames} frames, {per_s(summary.frames):.1f} frames/s"
    rows = sum(summary.rows.values())
    if rows:
        return f"{rows} rows, {per_s(rows):.1f} rows/s"
    done = summary.extracted + summary.skipped + summary.failed
    return f"{per_s(done):.2f} videos/s"


def eta_text(done: int, total: int, elapsed_s: float) -> str:
    """`ETA 3 min 05 s` at the pace so far (videos done of total); `ETA -` before the first video."""
    if done <= 0 or elapsed_s <= 0 or total <= done:
        return "ETA -" if done < total else "ETA 0 s"
    return f"ETA {duration_text(elapsed_s / done * (total - done))}"


class ExtractProgress:
    """A rich progress bar (videos, rate, ETA) when stderr is a terminal, else a log line every 10 s."""

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
                TextColumn("videos  {task.fields[rate]}  {task.fields[failed]} failed"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("extract", total=None, rate="", failed=0)
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
                self._task, total=summary.total, completed=done, rate=rate_text(summary), failed=summary.failed
            )
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval_s or done == summary.total:
            self._last_log = now
            log.info(
                "%d/%d videos (%d extracted, %d skipped, %d failed), %s, %s",
                done,
                summary.total,
                summary.extracted,
                summary.skipped,
                summary.failed,
                rate_text(summary),
                eta_text(done, summary.total, summary.seconds),
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


def duration_text(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `2 h 07 min`: an elapsed time or an ETA a person reads at a glance."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


_SHOWN_METRICS = ("val_map_macro", "val_top1", "val_recall_at_1")  # the first the row has is shown


class TrainProgress:
    """`train`'s progress: one bar (epoch of epochs, val metric, best epoch, ETA) on a terminal, else a
    line every `interval_s` (and at the first and last epoch) instead of one line per epoch; every
    epoch's numbers are in RUN/train.log and RUN/history.csv."""

    def __init__(self, description: str, *, enabled: bool = True, interval_s: float = 10.0):
        self.description = description
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.interval_s = interval_s
        self._bar: Progress | None = None
        self._task = None
        self._first: tuple[int, float] | None = None  # (epoch, time) of the first epoch seen
        self._last_log: float | None = None  # the first epoch always prints

    def __enter__(self) -> TrainProgress:
        if self.enabled and self.console.is_terminal:
            self._bar = Progress(
                TextColumn(self.description),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("epochs  {task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=None, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def line(self, epoch: int, row: dict) -> str:
        """The text of one progress line: epoch of epochs, the val metric, the best epoch, the ETA."""
        now = time.monotonic()
        if self._first is None:
            self._first = (epoch, now)
        total = int(row.get("epochs") or epoch)
        shown = next((k for k in _SHOWN_METRICS if k in row), None)
        parts = [f"{self.description}: epoch {epoch}/{total}"]
        if "train_loss" in row:
            parts.append(f"train loss {row['train_loss']:.4f}")
        if shown is not None:
            parts.append(
                f"{shown.replace('_', ' ', 1)} {row[shown]:.4f} (best at epoch {row.get('best_epoch', epoch)})"
            )
        first_epoch, first_time = self._first
        if epoch > first_epoch:
            per_epoch = (now - first_time) / (epoch - first_epoch)
            parts.append(f"{per_epoch:.2f} s/epoch, ETA {duration_text(per_epoch * (total - epoch))}")
        return ", ".join(parts)

    def __call__(self, epoch: int, row: dict) -> None:
        if not self.enabled:
            return
        if "sweep" in row:  # a --sweep reports each config it finished
            self.console.print(f"{self.description}: sweep config {epoch} {row['sweep']}: val {row['value']:.4f}")
            return
        text = self.line(epoch, row)
        if self._bar is not None:
            status = text.split(", ", 1)[1] if ", " in text else ""
            self._bar.update(self._task, total=int(row.get("epochs") or epoch), completed=epoch, status=status)
            return
        now = time.monotonic()
        last = epoch >= int(row.get("epochs") or epoch)
        if self._last_log is None or now - self._last_log >= self.interval_s or last:
            self._last_log = now
            self.console.print(text, soft_wrap=True, highlight=False)


def print_mining_summary(summary: dict, *, console: Console | None = None) -> None:
    console = console or output_console()
    table = Table(title=f"vidcache {summary['name']}")  # paths go in a row: a title wraps mid-path
    table.add_column("what")
    table.add_column("value", justify="right", overflow="fold")
    recall = summary.get("recall_at_k")
    rows = [
        ("output", summary["output"]),
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


FAILURES_WIDTH = 120  # the failed-videos table folds long reasons at this width instead of growing


def grouped_failures(failed_items: list[dict]) -> list[tuple[str, str, str]]:
    """(video_id, views, reason) per video and distinct reason: the views that failed for the same
    reason share one row (a broken file fails every view alike: one reason, not one per view)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for item in failed_items:
        grouped.setdefault((item["video_id"], item["reason"]), []).append(item["view"])
    return [(video, ", ".join(views), reason) for (video, reason), views in sorted(grouped.items())]


def print_extract_summary(summary, *, console: Console | None = None) -> None:
    console = console or output_console()
    table = Table(title="vidcache extract", show_header=True)  # the cache path is a row: titles wrap mid-path
    table.add_column("what")
    table.add_column("value", justify="right", overflow="fold")
    per_s = lambda n: f"{n / summary.seconds if summary.seconds > 0 else 0.0:.1f}"  # noqa: E731
    if summary.frames:  # the unit the run produced: frames, else rows (flow- or frames-only), else videos
        rate = [("frames (clip rows)", summary.frames), ("frames/s", per_s(summary.frames))]
    elif summary.rows:
        rate = [("rows/s (all views)", per_s(sum(summary.rows.values())))]
    else:
        rate = [("videos/s", per_s(summary.extracted + summary.skipped + summary.failed))]
    rows = [
        ("cache", summary.cache),
        ("videos in this run", summary.total),
        ("extracted now", summary.extracted),
        ("already cached (skipped)", summary.skipped),
        ("failed", summary.failed),
        *rate,
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
        print_failures(summary.failed_items or _items_of(summary.failures), console=console)


def _items_of(failures: dict[str, str]) -> list[dict]:
    return [{"video_id": video, "view": "", "reason": reason} for video, reason in failures.items()]


def print_failures(failed_items: list[dict], *, console: Console | None = None) -> None:
    """The failed videos, one row per video and distinct reason, at most FAILURES_WIDTH wide."""
    console = console or output_console()
    failed = Table(title="failed videos", show_header=True, width=min(console.width, FAILURES_WIDTH))
    failed.add_column("video_id", overflow="fold", ratio=2)
    failed.add_column("views", overflow="fold", ratio=1)
    failed.add_column("reason", overflow="fold", ratio=5)
    for video_id, views, reason in grouped_failures(failed_items):
        failed.add_row(video_id, views or "-", reason)
    console.print(failed)


def print_status(status: dict, *, console: Console | None = None) -> None:
    console = console or output_console()
    console.print(f"vidcache status of {status['cache']}", soft_wrap=True, highlight=False)
    table = Table(title="views")  # the path is the line above: a title wraps mid-path
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
    per_video = status["views"].get("shots", {}).get("per_video", {})
    if per_video:  # shots per video: median and range (the JSON has every video)
        counts = sorted(per_video.values())
        console.print(
            f"shots per video: median {counts[len(counts) // 2]}, min {counts[0]}, max {counts[-1]} "
            f"over {len(counts)} video(s)"
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
