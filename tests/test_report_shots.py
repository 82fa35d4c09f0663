"""The report's shots strip (issue 26): each sampled video with shots gets a strip of its shots'
middle frames, in order, with their times. Opened in headless Chromium (Debian's `chromium`): the
reference is the generated videos themselves, whose shots are flat colours in a known order, read
back from the decoded pictures' pixels in the browser."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S
from vidcache.cache.reader import Cache
from vidcache.cache.thumbnails import read_thumbnail
from vidcache.extract.api import extract
from vidcache.extract.config import ExtractConfig
from vidcache.extract.views.shots.settings import ShotsConfig
from vidcache.htmlreport import write_report
from vidcache.htmlreport.shot_strip import shot_strip
from vidcache.synth import write_video

pytestmark = pytest.mark.slow  # a real browser

COLOURS = {"red": (230, 20, 20), "green": (20, 210, 30), "blue": (30, 40, 235), "white": (240, 240, 240)}
VIDEOS = {"abc.mp4": ["red", "green", "blue", "white"], "two.mp4": ["blue", "red"]}
FPS, SHOT_FRAMES = 10, 6

PICTURES = """() => [...document.querySelectorAll('div.shots')].map(strip => ({
    video: strip.dataset.video,
    shots: [...strip.querySelectorAll('figure.shot')].map(f => {
        const img = f.querySelector('img');
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const ctx = canvas.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const px = ctx.getImageData(img.naturalWidth >> 1, img.naturalHeight >> 1, 1, 1).data;
        return {k: Number(f.dataset.shot), caption: f.querySelector('figcaption').innerText,
                complete: img.complete, width: img.naturalWidth, rgb: [px[0], px[1], px[2]]};
    }),
}))"""


def _video(path: Path, colours: list[str]) -> None:
    def frame(index: int, _t: float) -> np.ndarray:
        colour = np.array(COLOURS[colours[index // SHOT_FRAMES]], np.uint8)
        return np.broadcast_to(colour, (48, 64, 3)).copy()

    write_video(path, SHOT_FRAMES * len(colours), fps=FPS, width=64, height=48, frame_fn=frame)


@pytest.fixture(scope="module")
def shots_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report_shots")
    for name, colours in VIDEOS.items():
        _video(root / name, colours)
    (root / "m.csv").write_text("path\n" + "\n".join(VIDEOS) + "\n")
    config = ExtractConfig.create(views=("shots",), shots=ShotsConfig(method="content"))
    assert extract(str(root / "m.csv"), str(root / "cache"), config).failed == 0
    return root


def _nearest_colour(rgb: list[int]) -> str:
    return min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLOURS[c], rgb, strict=True)))


def test_report_shows_each_videos_shots_in_order(shots_cache, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("VIDCACHE_SKIP_BROWSER"):
            pytest.skip("VIDCACHE_SKIP_BROWSER is set and no chromium is installed")
        pytest.fail("the report test needs Debian's chromium (`apt-get install chromium`; `make test` installs it)")
    out = tmp_path / "report.html"
    write_report(shots_cache / "cache", out=out)
    with Cache(shots_cache / "cache") as cache:
        paths = dict(zip(cache.entries()["video_id"], cache.entries()["path"], strict=True))
        spans = {v: cache.read_shots(v) for v in paths}
    problems: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(HANG_GUARD_S * 1000)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(out.as_uri(), wait_until="load")
            strips = page.evaluate(PICTURES)
        finally:
            browser.close()
    assert problems == []
    assert sorted(s["video"] for s in strips) == sorted(paths)
    for strip in strips:
        colours = VIDEOS[Path(paths[strip["video"]]).name]
        shots = strip["shots"]
        assert len(shots) == len(spans[strip["video"]]) == len(colours)  # one picture per shot
        assert [s["k"] for s in shots] == list(range(len(colours)))
        assert all(s["complete"] and s["width"] > 0 for s in shots)
        assert [_nearest_colour(s["rgb"]) for s in shots] == colours  # each shot's own frame, in order
        times = spans[strip["video"]]
        expected = [f"{k}: {times.start_s[k]:.2f}–{times.end_s[k]:.2f} s" for k in range(len(times))]
        assert [s["caption"] for s in shots] == expected


def test_an_unreadable_source_shows_the_stored_thumbnail_and_says_so(shots_cache):
    with Cache(shots_cache / "cache") as cache:
        video_id = cache.video_ids("shots")[0]
        strip = shot_strip(cache, video_id, str(shots_cache / "moved.mp4"))
        stored = read_thumbnail(cache.path, video_id)
    assert strip is not None and stored and strip.jpegs == [stored] * strip.shots
    assert "not found" in strip.note and "stored thumbnail" in strip.note
