"""`vidcache report`: one self-contained HTML page built from a real extract (with failures and
thumbnails), mined lists and two training runs, opened in headless Chromium (Debian's `chromium`)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.conftest import HANG_GUARD_S, run_cli, tiny_clip_args
from vidcache import Cache
from vidcache.cache.arrays import write_view_arrays
from vidcache.cli import cli
from vidcache.errors import ConfigError
from vidcache.heads.config import TrainConfig
from vidcache.heads.metrics import confused_pairs
from vidcache.heads.train import train
from vidcache.htmlreport import write_report
from vidcache.index.mining import hard_negative_labels, nearest_videos, write_mined
from vidcache.manifest import VideoEntry
from vidcache.synth import moving_square_frame, write_video

pytestmark = pytest.mark.slow  # real CLI subprocesses / a real browser: left out by make test-fast

SPECS = [("red", "left"), ("green", "right"), ("blue", "left"), ("red", "right"), ("green", "left")]
CLASSES = ["jump", "run", "swim"]


def _train_cache(path: Path) -> Path:
    """A 90-video, 3-class synthetic view (class centre + noise) for two quick heads."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    entries, rows = [], []
    for i in range(90):
        split = "train" if i < 60 else "val"
        video_id = f"{split}/{i:03d}"
        entries.append(VideoEntry(video_id, f"/src/{video_id}.mp4", (CLASSES[i % 3],), split))
        rows.append((video_id, centres[i % 3] + 1.5 * rng.normal(size=(4, 16)), np.arange(4.0)))
    write_view_arrays(path, view="rgb", rows=rows, entries=entries, identity={"model": "rgb"}, dtype="float32")
    return path


@pytest.fixture(scope="module")
def report_inputs(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    lines = ["path,labels,split"]
    for i, (colour, direction) in enumerate(SPECS):
        write_video(
            root / "videos" / f"{colour}-{direction}-{i}.mp4", 12, fps=6, width=96, height=64,
            frame_fn=lambda _, t, c=colour, d=direction: moving_square_frame(t, colour=c, direction=d, width=96,
                                                                              height=64),
        )  # fmt: skip
        lines.append(f"videos/{colour}-{direction}-{i}.mp4,{colour};{direction},train")
    (root / "videos" / "broken.mp4").write_bytes(b"\x00not a video")
    lines += ["videos/broken.mp4,red;left,train", "videos/missing.mp4,blue;right,train"]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    cache_dir = root / "cache"
    result = run_cli(
        "extract", root / "manifest.csv", "--cache", cache_dir, *tiny_clip_args(tiny_checkpoint), "--fps", "2", "--json"
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # two failures, five videos extracted
    with Cache(cache_dir) as cache:
        frame, summary = hard_negative_labels(cache, k=3)
        write_mined(cache_dir, "hard_negatives", frame, summary, command="test")
        frame, summary = nearest_videos(cache, k=2, view="clip", exclude_shared_labels=True)
        write_mined(cache_dir, "hard_negative_videos", frame, summary, command="test")
    train_cache = _train_cache(root / "train_cache")
    runs = []
    for head, task in (("linear", "single-label"), ("mlp", "multi-label")):  # both confusion rules
        config = TrainConfig(head=head, view="rgb", epochs=4, batch_size=16, lr=1e-2, device="cpu", task=task)
        train(train_cache, config, root / f"run-{head}")
        runs.append(root / f"run-{head}")
    return cache_dir, runs


@pytest.fixture(scope="module")
def report_html(report_inputs, tmp_path_factory):
    cache_dir, runs = report_inputs
    out = tmp_path_factory.mktemp("html") / "report.html"
    summary = write_report(cache_dir, out=out, runs=runs)
    return out, summary


def test_mined_videos_and_their_negatives_show_their_own_manifest_labels(report_inputs):
    """The mining section's labels (looked up by key for the videos shown) are each video's manifest labels,
    for the sampled videos and for every negative video listed under them."""
    from vidcache.htmlreport.collect import mining_facts

    cache_dir, _ = report_inputs
    with Cache(cache_dir) as cache:
        labels = {e["video_id"]: list(e["labels"]) for e in cache._catalog.entries()}
        facts = mining_facts(cache, sample=24, labels_per_video=3, videos_per_video=2, seed=0)
    negatives = [n for video in facts.videos for n in video.negative_videos]
    assert facts.videos and negatives
    for video in facts.videos:
        assert video.labels == labels[video.video_id]
    for video_id, _, shown in negatives:
        assert shown == labels[video_id]


def test_report_is_one_self_contained_bounded_file(report_html, report_inputs):
    out, summary = report_html
    page = out.read_text(encoding="utf-8")
    assert summary.bytes == out.stat().st_size < 6 * 2**20  # plotly.js (~4.8 MB) + this small corpus
    assert summary.failures_total == summary.failures_shown == 2 and summary.runs == 2
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)  # plotly.js's own text names URLs it never loads
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", markup)  # the page links nothing outside
    assert "<script src" not in page and '<link rel="stylesheet"' not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for section in ("cache", "mining", "runs", "compare"):
        assert f'data-section="{section}"' in page
    assert "broken.mp4" in page and "missing.mp4" in page  # the failure table names them with reasons
    assert page.count("data:image/jpeg;base64,") >= 5  # thumbnails of the extracted videos
    assert 'class="negs gallery"' in page and "A sample of 7 of the 7 videos" in page
    assert page.count('class="mined"') == 5 and "hard-negative label" in page
    # both runs wrote their confusions; the table shows them, or says val had none (well-separated classes)
    assert all(json.loads((run / "confusions.json").read_text()) is not None for run in report_inputs[1])
    assert page.count("Most confused class pairs (val)") == 2
    assert 'class="confusions"' in page or "No confusion on val." in page
    assert 'class="thresholds"' in page
    run = report_inputs[1][0]
    assert (run / "per_class_ap.json").exists() and (run / "confusions.json").exists()


# a gallery card with the labels of a real corpus (the corpus here has short ones), in the page's own CSS
LONG_LABELS_CARD = """() => document.querySelector('.gallery').insertAdjacentHTML('beforeend',
    '<div class="neg"><b>bikes.mp4</b><br><span class="small">cellular automaton, animal, playing guitar, '
    + 'riding a bicycle, skateboarding</span><br><span class="small">12.5 s, 1920×1080, 59.94 fps</span></div>')"""

# the gallery's words of up to 12 characters (labels, "fps", "done": each fits a card's line) that the
# browser broke across two lines: each word's Range rectangles, by line
SPLIT_WORDS = """() => [...document.querySelectorAll('.gallery .small')].flatMap(span => {
    const node = span.firstChild, out = [], re = /\\S+/g;
    let m;
    while (node && (m = re.exec(node.textContent))) {
        if (m[0].length > 12) continue;
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        if (new Set([...range.getClientRects()].map(r => Math.round(r.top))).size > 1) out.push(m[0]);
    }
    return out;
})"""


def test_report_in_headless_chromium(report_html, tmp_path):
    """Every section rendered, each chart drawn, each thumbnail decoded, no request left the page,
    no console error; the screenshot is kept next to the test's files (and in $VIDCACHE_TEST_ARTIFACTS)."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("VIDCACHE_SKIP_BROWSER"):
            pytest.skip("VIDCACHE_SKIP_BROWSER is set and no chromium is installed")
        pytest.fail("the report test needs Debian's chromium (`apt-get install chromium`; `make test` installs it)")
    out, _ = report_html
    requests, problems = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(HANG_GUARD_S * 1000)  # playwright's 30 s default is a clock, not a hang guard
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(out.as_uri(), wait_until="load")
            page.wait_for_function(
                "document.querySelectorAll('.plotly-graph-div').length > 0 && [...document.querySelectorAll("
                "'.plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))",
                timeout=HANG_GUARD_S * 1000,  # ms; plotly draws slowly on a loaded machine
            )
            state = page.evaluate(
                """() => ({
                sections: [...document.querySelectorAll('section[data-section]')].map(s => [s.dataset.section,
                    s.getBoundingClientRect().height, s.innerText.length]),
                charts: document.querySelectorAll('.plotly-graph-div').length,
                drawn: [...document.querySelectorAll('.plotly-graph-div')].filter(d =>
                    d.querySelector('svg.main-svg') && d.getBoundingClientRect().height > 100).length,
                thumbs: [...document.querySelectorAll('img.thumb')].map(i => [i.complete, i.naturalWidth]),
                runs: document.querySelectorAll('[data-run]').length,
            })"""
            )
            page.evaluate(LONG_LABELS_CARD)
            split_now = page.evaluate(SPLIT_WORDS)
            page.add_style_tag(content=".neg{word-break:break-all}")  # the old rule, to show the check sees it
            split_before = page.evaluate(SPLIT_WORDS)
            page.add_style_tag(content=".neg{word-break:normal}")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    external = [u for u in requests if not (u == out.as_uri() or u.startswith("data:"))]
    assert external == [], external
    assert [s[0] for s in state["sections"]] == ["cache", "mining", "runs", "compare"]
    assert all(height > 50 and text > 20 for _, height, text in state["sections"]), state["sections"]
    assert state["charts"] >= 8 and state["drawn"] == state["charts"], state
    assert len(state["thumbs"]) >= 5 and all(done and width > 0 for done, width in state["thumbs"])
    assert state["runs"] == 2
    assert split_now == [] and split_before, (split_now, split_before)  # gallery text wraps between words
    image = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"))
    assert image.shape[0] > 900 and image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 100
    artifacts = os.environ.get("VIDCACHE_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "report.png")


def test_confused_pairs_single_and_multi_label():
    vocabulary = ["a", "b", "c"]
    y = np.eye(3)[[0, 0, 0, 1, 2]]
    scores = np.array([[0.9, 0.1, 0], [0.2, 0.8, 0], [0.1, 0.7, 0.2], [0, 0.3, 0.7], [0, 0, 1]])
    pairs = confused_pairs(y, scores, multi_label=False, vocabulary=vocabulary)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("a", "b", 2), ("b", "c", 1)]
    assert pairs[0]["share"] == pytest.approx(2 / 3)
    multi = confused_pairs(y, scores, multi_label=True, thresholds=np.full(3, 0.5), vocabulary=vocabulary)
    assert [(p["true"], p["predicted"], p["count"]) for p in multi] == [("a", "b", 2), ("b", "c", 1)]


def test_report_options_are_checked(report_inputs, tmp_path):
    cache_dir, _ = report_inputs
    with pytest.raises(ConfigError, match=r"--max-classes must be >= 2, got 1"):
        write_report(cache_dir, out=tmp_path / "r.html", max_classes=1)
    with pytest.raises(ConfigError, match=r"--run .*no readable summary.json"):
        write_report(cache_dir, out=tmp_path / "r.html", runs=[tmp_path])
    result = CliRunner().invoke(cli, ["report", "--cache", str(cache_dir), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "0 run(s)" in result.output and (tmp_path / "r.html").exists()


def test_report_size_is_bounded_whatever_the_corpus(tmp_path):
    """3000 videos, 300 failures, a thumbnail each, every video mined: the page keeps 200 failure
    rows and 24 mined videos and stays within plotly.js + ~2 MB; a view without video facts is fine."""
    from vidcache.cache.text import write_text_embeddings
    from vidcache.cache.thumbnails import encode_thumbnail, write_thumbnail

    rng = np.random.default_rng(0)
    cache_dir, labels = tmp_path / "cache", [f"class{i}" for i in range(50)]
    entries, rows, failures = [], [], {}
    for i in range(3000):
        video_id = f"g{i % 30}/v{i:05d}.mp4"
        entries.append(VideoEntry(video_id, f"/data/{video_id}", (labels[i % 50],), "train"))
        if i % 10 == 0:
            failures[video_id] = "not a readable video (Invalid data found when processing input)"
            continue
        info = {"width": 640, "height": 360, "avg_fps": 25.0, "duration_s": float(rng.gamma(2, 5))}
        rows.append((video_id, rng.normal(size=(2, 16)).astype(np.float32), np.arange(2.0), info))
    write_view_arrays(cache_dir, view="clip", rows=rows, entries=entries, identity={"model": "x"}, failures=failures)
    audio = [(v, rng.normal(size=(1, 8)).astype(np.float32), np.arange(1.0)) for v, *_ in rows[:100]]
    write_view_arrays(cache_dir, view="audio", rows=audio, entries=entries, identity={"model": "y"})
    noisy = encode_thumbnail(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8))  # the worst case: ~10 KB
    for video_id, *_ in rows:
        write_thumbnail(cache_dir, video_id, noisy)
    text = rng.normal(size=(50, 16)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    write_text_embeddings(
        cache_dir, labels=labels, templates=["{}"], per_template=text[:, None], embeddings=text, attrs={}
    )
    with Cache(cache_dir) as cache:
        frame, summary = hard_negative_labels(cache, k=5)
        write_mined(cache_dir, "hard_negatives", frame, summary, command="test")
        frame, summary = nearest_videos(cache, k=4, view="clip", exclude_shared_labels=True)
        write_mined(cache_dir, "hard_negative_videos", frame, summary, command="test")
    summary = write_report(cache_dir, out=tmp_path / "report.html")
    assert (summary.failures_total, summary.failures_shown, summary.mined_sample) == (300, 200, 24)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "100 more failure(s) not shown" in page and "A sample of 24 of the 2700 mined videos" in page
    from vidcache.htmlreport.charts import plotly_js

    assert summary.bytes - len(plotly_js()) < 2.7 * 2**20, summary.bytes


def test_segments_are_reported_with_their_own_duration(tmp_path):
    """A segment's record carries its file's facts (duration_s of the whole file); the report shows
    the segment's span, cut at the file's end, and the whole duration only for a plain entry."""
    from vidcache.cache.catalog import Catalog
    from vidcache.cache.store import CacheWriter, SourceStat
    from vidcache.htmlreport.collect import cache_facts

    facts = json.dumps({"duration_s": 10.0, "width": 80, "height": 60, "avg_fps": 12.0})
    spans = {"whole": (None, None), "first": (0.0, 4.0), "middle": (4.0, 7.5), "tail": (7.5, None), "past": (8.0, 30.0)}
    catalog = Catalog.open(tmp_path, create=True)
    catalog.claim_view("clip", {"model": "x"})
    catalog.upsert_entries([VideoEntry(v, "/src/bikes.mp4", ("bike",), "train", a, b) for v, (a, b) in spans.items()])
    writer = CacheWriter(tmp_path, catalog, run_id="r", writer_tag="k0of1", root_attrs={}, view_attrs={"clip": {}},
                         dtypes={"clip": "float16"})  # fmt: skip
    for video_id in spans:
        rows = (np.zeros((2, 4), np.float32), np.array([0.0, 1.0]))
        writer.add(video_id, {"clip": rows}, source=SourceStat(1, 2), info_json=facts)
    writer.commit()
    catalog.close()
    with Cache(tmp_path) as cache:
        shown = cache_facts(cache, max_failures=5, gallery=10)
    durations = {video["video_id"]: video["duration_s"] for video in shown.gallery}
    assert durations == {"whole": 10.0, "first": 4.0, "middle": 3.5, "tail": 2.5, "past": 2.0}
