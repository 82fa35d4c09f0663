"""Thumbnails come from extract's own decode pass (threads and processes alike) and show the video."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli, tiny_clip_args
from vidcache import Cache
from vidcache.cache.thumbnails import MAX_BYTES, MAX_SIDE, encode_thumbnail, read_thumbnail
from vidcache.synth import write_video

COLOURS = {"red": (220, 30, 40), "green": (30, 200, 60), "blue": (40, 50, 210)}


@pytest.fixture(scope="module")
def solid_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("solid")
    rows = ["path,labels,split"]
    for name, colour in COLOURS.items():
        frame = np.broadcast_to(np.array(colour, np.uint8), (120, 200, 3)).copy()
        write_video(root / f"{name}.mp4", 12, fps=6, width=200, height=120, frame_fn=lambda i, t, f=frame: f)
        rows.append(f"{name}.mp4,{name},train")
    (root / "broken.mp4").write_bytes(b"not a video at all")
    rows.append("broken.mp4,red,train")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_extract_keeps_one_small_thumbnail_per_video_matching_its_frames(solid_corpus, tiny_checkpoint, tmp_path):
    """Decode processes: the thumbnail crosses the process boundary as data (decode threads, the CPU
    default, are covered by tests/test_report.py's extract)."""
    cache_dir = tmp_path / "cache"
    result = run_cli(
        "extract",
        solid_corpus / "manifest.csv",
        "--cache",
        cache_dir,
        *tiny_clip_args(tiny_checkpoint),
        "--fps",
        "2",
        "--workers",
        "2",
        "--decode-in",
        "processes",
        "--json",
    )
    assert result.returncode == 1, result.stderr  # the broken file fails, the others are extracted
    with Cache(cache_dir) as cache:
        assert sorted(cache.video_ids("clip")) == sorted(f"{n}.mp4" for n in COLOURS)
        for name, colour in COLOURS.items():
            data = read_thumbnail(cache_dir, f"{name}.mp4")
            assert data is not None and len(data) <= MAX_BYTES
            image = Image.open(io.BytesIO(data))
            assert image.format == "JPEG" and max(image.size) <= MAX_SIDE
            assert image.size[0] > image.size[1]  # the aspect ratio is kept
            mean = np.asarray(image.convert("RGB"), np.float64).reshape(-1, 3).mean(axis=0)
            assert np.abs(mean - colour).max() < 12, (name, mean)
            assert "thumbnail" not in json.dumps(cache.video_info(f"{name}.mp4"))  # bytes stay out of the catalog
        assert read_thumbnail(cache_dir, "broken.mp4") is None


def test_encode_thumbnail_bounds_size_even_for_noise():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    data = encode_thumbnail(noise)
    assert len(data) <= MAX_BYTES
    assert max(Image.open(io.BytesIO(data)).size) == MAX_SIDE
    with pytest.raises(ValueError, match="rgb must be"):
        encode_thumbnail(noise[..., 0])
