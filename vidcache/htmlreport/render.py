"""One self-contained HTML file: inline CSS, plotly.js inlined once, thumbnails as data: URIs.

A Content-Security-Policy meta tag forbids every network fetch (only inline scripts and styles and
data: images load), so the page behaves the same offline, and opening it never contacts anything.

Size bound: plotly.js (~4.8 MB, fixed) + ~40 KB per view + at most `max_failures` failure rows
(thumbnails on the first `sample` of them) + thumbnails of `sample` gallery videos and of `sample`
mined videos with `videos_per_video` negatives each, ≤ 12 KiB each (×4/3 in base64) + with a shots
view at most 12 shot pictures of ≤ 4 KiB per gallery video (`shot_strip`: ≤ 1.6 MB more) + per run at most
`max_classes` classes in charts and tables. With the defaults (200, 24, 4, 60): at most about
4.8 MB + 2.7 MB of thumbnails (typically 0.7) + 0.3 MB per run, whatever the corpus size; the page
says what it left out.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..cache.reader import Cache
from ..cache.thumbnails import read_thumbnail
from ..version import __version__
from . import charts
from .collect import CacheFacts, MiningFacts, RunFacts, cache_facts, mining_facts, run_facts
from .shot_strip import ShotStrip

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; font-src data:"
SECTIONS = ("cache", "mining", "runs", "compare")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#264653;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;font-size:13px;opacity:.85}nav{padding:8px 24px;background:#e9eef0}
nav a{margin-right:18px;color:#264653;font-weight:600;text-decoration:none}
main{padding:0 24px 40px}
section{margin-top:22px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px 18px 16px}
h2{color:#264653}h3{margin-bottom:6px}table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f0f3f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}code,pre{font-size:12px}
pre{background:#f6f8f9;padding:8px;overflow:auto;max-height:260px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:10px}
.thumb{width:120px;height:auto;border-radius:3px;display:block}
.thumb.missing{width:120px;height:68px;background:#ddd;color:#666;font-size:11px;display:flex;
align-items:center;justify-content:center}
.small{font-size:12px;color:#555}
.mined{display:flex;gap:14px;align-items:flex-start;border-top:1px solid #eee;padding:10px 0}
.negs{display:flex;gap:8px;flex-wrap:wrap}.neg{font-size:11px;width:124px;overflow-wrap:anywhere}
.strip{display:flex;gap:4px;overflow-x:auto;padding:4px 0 10px}.shot{margin:0;font-size:11px;color:#555}
.shot-thumb{height:54px;width:auto;display:block;border-radius:2px}
.note{background:#fff8e1;border-left:4px solid #e9c46a;padding:6px 10px;font-size:13px}
"""


@dataclass
class ReportSummary:
    out: str
    bytes: int
    videos: int
    failures_shown: int
    failures_total: int
    mined_sample: int
    runs: int
    seconds: float


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: list[str], rows: list[list[object]], *, raw: set[int] = frozenset(), cls: str = "") -> str:
    """`raw`: column numbers whose cells are HTML already (everything else is escaped)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for number, cell in enumerate(row):
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            text = cell if number in raw else _e(_fmt(cell))
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if value == value else "–"
    return "–" if value is None else str(value)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


class _Thumbs:
    """Thumbnails as <img> data: URIs, read once per video."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir
        self._uris: dict[str, str | None] = {}
        self.shown = 0

    def img(self, video_id: str) -> str:
        if video_id not in self._uris:
            data = read_thumbnail(self.cache_dir, video_id)
            self._uris[video_id] = "data:image/jpeg;base64," + base64.b64encode(data).decode() if data else None
        uri = self._uris[video_id]
        if uri is None:
            return '<div class="thumb missing">no thumbnail</div>'
        self.shown += 1
        return f'<img class="thumb" src="{uri}" alt="{_e(video_id)}" title="{_e(video_id)}">'


def _shot_strip(strip: ShotStrip) -> str:
    """One video's shots, in order: a picture and its start–end times each."""
    figures = []
    for k, (start, end, data) in enumerate(zip(strip.start_s, strip.end_s, strip.jpegs, strict=True)):
        picture = (
            f'<img class="shot-thumb" src="data:image/jpeg;base64,{base64.b64encode(data).decode()}" alt="shot {k}">'
            if data
            else '<div class="thumb missing">no picture</div>'
        )
        caption = f"<figcaption>{k}: {start:.2f}–{end:.2f} s</figcaption>"
        figures.append(f'<figure class="shot" data-shot="{k}">{picture}{caption}</figure>')
    more = f" (the first {len(figures)} shown)" if strip.shots > len(figures) else ""
    note = f'<p class="small">{_e(strip.note)}</p>' if strip.note else ""
    return (
        f'<div class="shots" data-video="{_e(strip.video_id)}"><b>{_e(strip.video_id)}</b> '
        f'<span class="small">{strip.shots} shot(s){more}</span>{note}<div class="strip">{"".join(figures)}</div></div>'
    )


# sections --------------------------------------------------------------------------------------------------
def _cache_section(facts: CacheFacts, thumbs: _Thumbs, *, thumbs_rows: int) -> str:
    parts = [
        f'<section id="section-cache" data-section="cache"><h2>Cache</h2><p><code>{_e(facts.path)}</code>: '
        f"{facts.entries} manifest entries, {len(facts.views)} view(s), {facts.shards} shard(s)</p>"
    ]
    rows = []
    for view in facts.status:
        counts = facts.status[view]
        rows.append(
            [
                view,
                counts.get("done", 0),
                counts.get("absent", 0),
                counts.get("failed", 0),
                max(0, facts.entries - sum(counts.values())),
                facts.rows.get(view, 0),
                _mib(facts.data_bytes.get(view, 0)),
                _mib(facts.bytes.get(view, 0)),
            ]
        )
    parts.append("<h3>Videos by status, rows and bytes per view</h3>")
    headers = ["view", "done", "absent", "failed", "not extracted", "rows", "data bytes", "allocated in shards"]
    parts.append(_table(headers, rows))
    if facts.status:
        parts.append(charts.status_bars(facts.status, name="status"))
    if facts.gallery:
        parts.append(f"<h3>A sample of {len(facts.gallery)} of the {facts.gallery_of} videos (seeded)</h3>")
        cards = []
        for video in facts.gallery:
            what = [", ".join(video["labels"]) or "no label"]
            if video["duration_s"] is not None:
                what.append(f"{video['duration_s']:.1f} s, {video['size']}, {_fmt(video['fps'])} fps")
            what.append(" ".join(f"{view}: {status}" for view, status in sorted(video["statuses"].items())))
            cards.append(
                f'<div class="neg">{thumbs.img(video["video_id"])}<b>{_e(video["video_id"])}</b><br>'
                + "<br>".join(f'<span class="small">{_e(line)}</span>' for line in what)
                + "</div>"
            )
        parts.append(f'<div class="negs gallery">{"".join(cards)}</div>')
        strips = [_shot_strip(video["shots"]) for video in facts.gallery if video.get("shots") is not None]
        if strips:
            parts.append(f"<h3>Shots of the sampled videos (the middle frame of each shot)</h3>{''.join(strips)}")
    parts.append(f"<h3>Failures ({facts.failures_total})</h3>")
    if facts.failures:
        failure_rows = [
            [thumbs.img(f["video_id"]) if n < thumbs_rows else "", f["video_id"], f["view"], f["reason"], f["path"]]
            for n, f in enumerate(facts.failures)
        ]
        parts.append(_table(["thumbnail", "video_id", "view", "reason", "path"], failure_rows, raw={0}, cls="failures"))
        if facts.failures_total > len(facts.failures):
            left = facts.failures_total - len(facts.failures)
            parts.append(
                f'<p class="note">{left} more failure(s) not shown (--max-failures); '
                f"`vidcache status --cache {_e(facts.path)} --json` lists them all.</p>"
            )
    else:
        parts.append("<p>No failed video.</p>")
    parts.append("<h3>Videos</h3>")
    shown = [h for h in facts.histograms if h.n]
    if shown:
        parts.append(
            '<div class="grid">'
            + "".join(charts.histogram(h, name=h.title.replace(" ", "-")) for h in shown)
            + "</div>"
        )
    else:
        parts.append("<p>No video facts recorded (imported features carry none).</p>")
    if facts.resolutions:
        parts.append(_table(["resolution", "videos"], [list(r) for r in facts.resolutions]))
    parts.append("<h3>Settings of each view</h3>")
    for view, identity in facts.views.items():
        parts.append(f"<h4>{_e(view)}</h4><pre>{_e(json.dumps(identity, indent=2, sort_keys=True))}</pre>")
    if facts.runs:
        parts.append("<h3>Extract / import runs</h3>")
        parts.append(
            _table(
                ["run", "started", "finished", "videos", "failed", "command"],
                [
                    [r["run_id"], r["started_at"], r["finished_at"], r["videos"], r["failed"], r["command"]]
                    for r in facts.runs
                ],
            )
        )
    return "".join(parts) + "</section>"


def _duplicates_part(facts: MiningFacts) -> str:
    """Near-duplicate groups (`mine duplicates`): counts and the largest groups, as a table."""
    parts = []
    for table in facts.duplicates:
        parts.append(
            f'<div data-section="duplicates"><h3>Near-duplicates of view {_e(table["view"])}</h3>'
            f"<p>{table['groups']} group(s) at cosine ≥ {_e(table['threshold'])}; {table['drop']} video(s) to drop "
            f"(<code>vidcache remove --duplicates</code> keeps each group's representative).</p>"
            "<table><tr><th>group</th><th>videos</th><th>members (cosine to the representative)</th></tr>"
        )
        for group in table["largest"]:
            members = ", ".join(f"<b>{_e(v)}</b>" if rep else f"{_e(v)} ({s:.3f})" for v, s, rep in group["members"])
            parts.append(f"<tr><td>{group['group_id']}</td><td>{group['size']}</td><td>{members}</td></tr>")
        parts.append("</table></div>")
    return "".join(parts)


def _mining_section(facts: MiningFacts, thumbs: _Thumbs, cache_dir: str) -> str:
    parts = ['<section id="section-mining" data-section="mining"><h2>Mining</h2>', _duplicates_part(facts)]
    if not facts.sources:
        parts.append(
            f'<p class="note">No mined lists in this cache: run <code>vidcache mine hard-negatives --cache '
            f"{_e(cache_dir)} --k 5</code> and <code>vidcache mine hard-negative-videos --cache "
            f"{_e(cache_dir)} --k 5</code>.</p></section>"
        )
        return "".join(parts)
    for name, meta in facts.sources.items():
        parameters = meta.get("parameters", {})
        parts.append(
            f'<p class="small"><b>{_e(name)}</b>: k={_e(meta.get("k", "?"))}, view {_e(meta.get("view", "?"))}'
            f", {_e(meta.get('index_type', ''))}, {_e(json.dumps(parameters, sort_keys=True))}</p>"
        )
    parts.append(f"<p>A sample of {len(facts.videos)} of the {facts.population} mined videos (seeded).</p>")
    for video in facts.videos:
        labels = "".join(
            f"<tr><td>{_e(label)}</td><td class='num'>{score:.3f}</td></tr>" for label, score in video.negative_labels
        )
        label_table = (
            (
                f"<table><thead><tr><th>hard-negative label</th><th>score</th></tr></thead>"
                f"<tbody>{labels}</tbody></table>"
            )
            if labels
            else ""
        )
        negatives = "".join(
            f'<div class="neg">{thumbs.img(n)}<b>{score:.3f}</b> {_e(n)}<br><span class="small">'
            f"{_e(', '.join(own) or 'no label')}</span></div>"
            for n, score, own in video.negative_videos
        )
        parts.append(
            f'<div class="mined" data-video="{_e(video.video_id)}"><div class="neg">{thumbs.img(video.video_id)}'
            f"<b>{_e(video.video_id)}</b><br>"
            f"<span class='small'>{_e(', '.join(video.labels) or 'no label')}</span></div>"
            f"<div>{label_table}</div><div><div class='small'>nearest hard-negative videos</div>"
            f"<div class='negs'>{negatives or '<span class=small>none mined</span>'}</div></div></div>"
        )
    return "".join(parts) + "</section>"


def _classes_shown(run: RunFacts, max_classes: int) -> tuple[list[str], str]:
    ap = run.per_class_ap or {}
    classes = list(ap)
    if len(classes) <= max_classes:
        return classes, ""
    ranked = sorted(classes, key=lambda c: (ap[c] if ap[c] is not None else -1.0, c))
    half = max_classes // 2
    chosen = ranked[:half] + ranked[-half:]
    return chosen, f"{len(classes)} classes: the {half} lowest and {half} highest AP shown (--max-classes)."


def _run_section(run: RunFacts, number: int, *, max_classes: int) -> str:
    s = run.summary
    head = (
        f'<div class="run" data-run="{_e(run.name)}"><h3>{_e(run.name)}: {_e(s.get("head"))} on '
        f"{_e(s.get('view'))} ({_e(s.get('task'))})</h3><p class='small'><code>{_e(run.path)}</code></p>"
    )
    parts = [head]
    facts = [
        ["classes", s.get("classes")],
        ["train / val videos", f"{s.get('train_videos')} / {s.get('val_videos')}"],
        ["epochs run (best)", f"{s.get('epochs_run')} ({s.get('best_epoch')})"],
        [f"best {s.get('best_metric')}", s.get("best_value")],
        *([f"val {k}", v] for k, v in sorted((s.get("val_metrics") or {}).items())),
        *([f"val {k}", v] for k, v in sorted((s.get("val_metrics_tuned") or {}).items())),
    ]
    parts.append(_table(["what", "value"], facts))
    if run.history:
        parts.append(charts.curves(run.history, title="loss and val metrics", name=f"curves-{number}"))
    if run.per_class_ap:
        classes, note = _classes_shown(run, max_classes)
        parts.append(
            charts.class_bars(
                {run.name: {c: run.per_class_ap[c] for c in classes}}, title="per-class AP (val)", name=f"ap-{number}"
            )
        )
        if note:
            parts.append(f'<p class="note">{_e(note)}</p>')
    elif (Path(run.path) / "per_class_ap.png").exists():  # a classifier trained before per_class_ap.json
        parts.append('<p class="note">No per_class_ap.json in this run (trained by an older vidcache).</p>')
    if run.confusions is not None:
        parts.append("<h4>Most confused class pairs (val)</h4>")
        if run.confusions:
            parts.append(
                _table(
                    ["true class", "predicted as", "videos", "share of the class"],
                    [[c["true"], c["predicted"], c["count"], c["share"]] for c in run.confusions],
                    cls="confusions",
                )
            )
        else:
            parts.append("<p>No confusion on val.</p>")
    classifier = run.per_class_ap is not None or (Path(run.path) / "per_class_ap.png").exists()
    if run.thresholds and classifier:  # a representation head's thresholds.json is a placeholder
        names = sorted(run.thresholds)
        ap = run.per_class_ap or {}
        rows = [[c, run.thresholds[c], ap.get(c)] for c in names[:max_classes]]
        parts.append("<h4>Thresholds (max F1 on val)</h4>")
        parts.append(_table(["class", "threshold", "AP (val)"], rows, cls="thresholds"))
        if len(names) > max_classes:
            parts.append(f'<p class="note">{len(names) - max_classes} more classes in thresholds.json.</p>')
    return "".join(parts) + "</div>"


def _compare_section(runs: list[RunFacts], *, max_classes: int) -> str:
    parts = ['<section id="section-compare" data-section="compare"><h2>Runs side by side</h2>']
    if len(runs) < 2:
        parts.append("<p>Give several <code>--run</code> directories to compare them.</p></section>")
        return "".join(parts)
    keys = sorted({k for r in runs for k in (r.summary.get("val_metrics") or {})})
    rows = []
    for label, get in [
        ("head", lambda r: r.summary.get("head")),
        ("view", lambda r: r.summary.get("view")),
        ("task", lambda r: r.summary.get("task")),
        ("epochs", lambda r: r.summary.get("epochs_run")),
        ("best metric", lambda r: r.summary.get("best_metric")),
        ("best value", lambda r: r.summary.get("best_value")),
        ("seconds", lambda r: r.summary.get("seconds")),
        *((f"val {k}", lambda r, k=k: (r.summary.get("val_metrics") or {}).get(k)) for k in keys),
    ]:
        rows.append([label, *(get(r) for r in runs)])
    parts.append(_table(["", *(r.name for r in runs)], rows, cls="compare"))
    metric = runs[0].summary.get("best_metric")
    series = {
        r.name: [(h["epoch"], h.get(f"val_{metric}")) for h in r.history if isinstance(h.get(f"val_{metric}"), float)]
        for r in runs
    }
    if metric and any(series.values()):
        parts.append(charts.metric_by_run(series, metric=f"val_{metric}", name="compare-metric"))
    with_ap = [r for r in runs if r.per_class_ap]
    if len(with_ap) >= 2:
        classes, note = _classes_shown(with_ap[0], max_classes)
        values = {r.name: {c: (r.per_class_ap or {}).get(c) for c in classes} for r in with_ap}
        parts.append(charts.class_bars(values, title="per-class AP (val), all runs", name="compare-ap"))
        if note:
            parts.append(f'<p class="note">{_e(note)}</p>')
    return "".join(parts) + "</section>"


# the page --------------------------------------------------------------------------------------------------
def write_report(
    cache_dir: str | Path,
    *,
    out: str | Path,
    runs: Sequence[str | Path] = (),
    sample: int = 24,
    labels_per_video: int = 5,
    videos_per_video: int = 4,
    max_failures: int = 200,
    max_classes: int = 60,
    seed: int = 0,
) -> ReportSummary:
    """Render the cache (and its mined lists, and the given training runs) into one HTML file."""
    from ..errors import ConfigError

    for name, value, low in (
        ("--sample", sample, 0),
        ("--max-failures", max_failures, 0),
        ("--max-classes", max_classes, 2),
        ("--labels-per-video", labels_per_video, 0),
        ("--videos-per-video", videos_per_video, 0),
    ):
        if value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
    started = time.perf_counter()
    run_list = [run_facts(r) for r in runs]
    with Cache(cache_dir) as cache:
        thumbs = _Thumbs(cache.path)
        c_facts = cache_facts(cache, max_failures=max_failures, gallery=sample, seed=seed)
        m_facts = mining_facts(
            cache, sample=sample, labels_per_video=labels_per_video, videos_per_video=videos_per_video, seed=seed
        )
        body = [_cache_section(c_facts, thumbs, thumbs_rows=sample), _mining_section(m_facts, thumbs, str(cache.path))]
    runs_html = ['<section id="section-runs" data-section="runs"><h2>Training runs</h2>']
    if not run_list:
        runs_html.append(
            "<p>No run given: add <code>--run RUN_DIR</code> (a <code>vidcache train --out</code>"
            " directory), once per run.</p>"
        )
    runs_html += [_run_section(r, i, max_classes=max_classes) for i, r in enumerate(run_list)]
    body.append("".join(runs_html) + "</section>")
    body.append(_compare_section(run_list, max_classes=max_classes))
    nav = "".join(f'<a href="#section-{s}">{s}</a>' for s in SECTIONS)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>vidcache report: {_e(Path(cache_dir).name)}</title><style>{_CSS}</style>"
        f"<script>{charts.plotly_js()}</script></head><body>"
        f"<header><h1>vidcache report</h1><p>cache <code>{_e(cache_dir)}</code> · {len(run_list)} run(s) · "
        f"vidcache {_e(__version__)} · {_e(stamp)}</p></header><nav>{nav}</nav><main>{''.join(body)}</main>"
        "</body></html>\n"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return ReportSummary(
        out=str(out),
        bytes=out.stat().st_size,
        videos=c_facts.entries,
        failures_shown=len(c_facts.failures),
        failures_total=c_facts.failures_total,
        mined_sample=len(m_facts.videos),
        runs=len(run_list),
        seconds=time.perf_counter() - started,
    )
