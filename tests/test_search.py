"""`vidcache search`: text → video through the cache's CLIP text tower, video → video through the index,
on a known-answer cache whose clip rows are the text embeddings of their labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vidcache.cache.arrays import write_view_arrays
from vidcache.cache.text import DEFAULT_TEMPLATES, prompt_embeddings
from vidcache.cli import cli
from vidcache.errors import ConfigError
from vidcache.extract.runner import embed_labels
from vidcache.extract.views.clip import ClipConfig
from vidcache.extract.views.clip.model import ClipEncoder
from vidcache.manifest import VideoEntry
from vidcache.search import SPAN_NOISE_COSINE, search_text, search_video

LABELS = ["red apple", "blue ocean", "green forest", "yellow sun", "black cat", "jump", "run", "swim"]


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint):
    return ClipEncoder(
        config=ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint)), device=torch.device("cpu")
    )


def _known_answer_cache(cache_dir, encoder, form: str):
    """One video per label (two for 'blue ocean'); each video's rows = its label's text embedding in
    `form` (text.h5's template ensemble, the raw text, or one template) plus small noise; a second,
    non-CLIP view 'motion'."""
    templates = {"ensemble": list(DEFAULT_TEMPLATES), "raw": ["{}"], "template": [DEFAULT_TEMPLATES[0]]}[form]
    _, text = prompt_embeddings(encoder.encode_text, LABELS, templates)
    rng = np.random.default_rng(0)
    videos = [(f"v{i}/{label.replace(' ', '_')}.mp4", label, text[i]) for i, label in enumerate(LABELS)]
    videos.append(("v9/blue_ocean_2.mp4", "blue ocean", text[1]))
    entries = [VideoEntry(v, f"/data/{v}", (label,), "train") for v, label, _ in videos]
    rows = [
        (v, (vec + 0.01 * rng.standard_normal((4, len(vec)))).astype(np.float32), np.arange(4.0))
        for v, _, vec in videos
    ]
    write_view_arrays(cache_dir, view="clip", rows=rows, entries=entries, identity=encoder.identity(), dtype="float32")
    write_view_arrays(cache_dir, view="imported", rows=rows, entries=entries, identity={"model": "elsewhere"})
    motion = [(v, rng.standard_normal((3, 8)).astype(np.float32), np.arange(3.0)) for v, _, _ in videos]
    write_view_arrays(cache_dir, view="motion", rows=motion, entries=entries, identity={"model": "x"}, dtype="float32")
    embed_labels(cache_dir, encoder, LABELS, list(DEFAULT_TEMPLATES))
    return cache_dir


@pytest.fixture(scope="module")
def known_answer_cache(encoder, tmp_path_factory):
    return _known_answer_cache(tmp_path_factory.mktemp("search") / "cache", encoder, "ensemble")


@pytest.mark.parametrize("form", ["ensemble", "raw", "template"])
def test_text_query_equal_to_a_label_ranks_that_labels_videos_first(encoder, tmp_path, form):
    """Whichever usual form of the label text made the rows, the default query form finds it first."""
    cache_dir = _known_answer_cache(tmp_path / "cache", encoder, form)
    for label in LABELS if form == "ensemble" else LABELS[::2]:
        hits = search_text(cache_dir, label, view="clip", k=3, device="cpu")
        assert hits[0].labels == [label] and hits[0].score > 0.99, (label, hits)
        assert [h.rank for h in hits] == [1, 2, 3] and len({h.video_id for h in hits}) == 3
    blue = search_text(cache_dir, "blue ocean", view="clip", k=2, device="cpu")
    assert {h.video_id for h in blue} == {"v1/blue_ocean.mp4", "v9/blue_ocean_2.mp4"}
    if form != "template":  # the single-form queries find the rows made in their own form
        hits = search_text(cache_dir, "black cat", view="clip", k=1, device="cpu", query_form=form)
        assert hits[0].video_id == "v4/black_cat.mp4" and hits[0].score > 0.99


def test_a_view_made_elsewhere_is_searched_through_the_model_that_made_text_h5(known_answer_cache):
    hits = search_text(known_answer_cache, "green forest", view="imported", k=2, device="cpu")
    assert hits[0].video_id == "v2/green_forest.mp4" and hits[0].score > 0.99


def test_video_query_finds_the_other_video_of_its_label_never_itself(known_answer_cache):
    hits = search_video(known_answer_cache, "v1/blue_ocean.mp4", view="clip", k=4)
    assert hits[0].video_id == "v9/blue_ocean_2.mp4"
    assert "v1/blue_ocean.mp4" not in {h.video_id for h in hits} and len(hits) == 4
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_errors_name_the_parameter_and_what_is_allowed(known_answer_cache, tmp_path):
    with pytest.raises(ConfigError, match=r"--view 'motion' has dimension 8, its text tower 64"):
        search_text(known_answer_cache, "red apple", view="motion", k=3, device="cpu")
    bare = tmp_path / "bare"
    write_view_arrays(bare, view="motion", rows=[("a", np.ones((1, 4)), np.zeros(1))], entries=[], identity={})
    with pytest.raises(ConfigError, match=r"--view 'motion' cannot be searched by text.*choose from: none"):
        search_text(bare, "red apple", view="motion", k=3, device="cpu")
    with pytest.raises(ConfigError, match=r"--query-form='mean': choose one of: best, ensemble, raw"):
        search_text(known_answer_cache, "red apple", view="clip", k=3, device="cpu", query_form="mean")
    with pytest.raises(ConfigError, match=r"--k must be >= 1"):
        search_video(known_answer_cache, "v1/blue_ocean.mp4", view="clip", k=0)
    with pytest.raises(ConfigError, match=r"--video 'nope' has no extracted 'clip' rows"):
        search_video(known_answer_cache, "nope", view="clip", k=2)
    with pytest.raises(ConfigError, match=r"--view 'audio' is not in cache.*choose from: clip, imported, motion"):
        search_video(known_answer_cache, "v1/blue_ocean.mp4", view="audio", k=2)


def test_cli_search_text_json_and_usage_error(known_answer_cache):
    args = ["search", "--cache", str(known_answer_cache), "--view", "clip", "--k", "2", "--device", "cpu"]
    result = CliRunner().invoke(cli, [*args, "--text", "black cat", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["hits"][0]["video_id"] == "v4/black_cat.mp4" and out["hits"][0]["rank"] == 1
    table = CliRunner().invoke(cli, [*args, "--video", "v1/blue_ocean.mp4"])
    assert table.exit_code == 0 and table.stdout.splitlines()[0].split()[2] == "v9/blue_ocean_2.mp4", table.output
    both = CliRunner().invoke(cli, [*args, "--text", "x", "--video", "y"])
    assert isinstance(both.exception, ConfigError) and "exactly one of --text" in str(both.exception)


@pytest.fixture(scope="module")
def moments_cache(encoder, tmp_path_factory):
    """Known answer for "where": red_middle.mp4 is 'blue ocean' except rows 4-6 (2.0-3.5 s), which are
    'red apple'; red_all.mp4 is 'red apple' throughout; rows are half-second windows [start, end]."""
    _, text = prompt_embeddings(encoder.encode_text, LABELS, list(DEFAULT_TEMPLATES))
    red, blue, green = text[0], text[1], text[2]
    rng = np.random.default_rng(1)
    layouts = {
        "m/red_middle.mp4": [blue] * 4 + [red] * 3 + [blue] * 3,
        "m/red_all.mp4": [red] * 4,
        "m/green.mp4": [green] * 6,
        "m/blue.mp4": [blue] * 5,
    }
    rows, entries = [], []
    for video_id, vectors in layouts.items():
        starts = 0.5 * np.arange(len(vectors))
        features = (np.stack(vectors) + 0.01 * rng.standard_normal((len(vectors), len(red)))).astype(np.float32)
        rows.append((video_id, features, np.stack([starts, starts + 0.5], axis=1)))
        entries.append(VideoEntry(video_id, f"/data/{video_id}", ("x",), "train"))
    cache_dir = tmp_path_factory.mktemp("moments") / "cache"
    write_view_arrays(cache_dir, view="clip", rows=rows, entries=entries, identity=encoder.identity(), dtype="float32")
    embed_labels(cache_dir, encoder, LABELS, list(DEFAULT_TEMPLATES))
    return cache_dir


def _numpy_row_scores(cache_dir, text):
    """Reference: every row of every video, L2-normalised in NumPy, its best cosine over the query forms."""
    from vidcache.cache.reader import Cache
    from vidcache.search import text_query_vectors

    with Cache(cache_dir) as cache:
        queries = text_query_vectors(cache, text, view="clip", device="cpu").astype(np.float64)
        out = {}
        for video_id in cache.video_ids("clip"):
            rows, _ = cache.read(video_id, "clip", dtype=np.float64)
            unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
            out[video_id] = ((unit @ queries.T).max(axis=1), cache.spans(video_id, "clip"))
    return out


def test_text_search_says_where_the_matching_rows_are(moments_cache):
    hits = search_text(moments_cache, "red apple", view="clip", k=4, device="cpu")
    assert [h.video_id for h in hits[:2]] == ["m/red_all.mp4", "m/red_middle.mp4"]
    assert (hits[0].start_s, hits[0].end_s) == (0.0, 2.0)  # matches throughout: the whole video
    assert (hits[1].start_s, hits[1].end_s) == (2.0, 3.5)  # rows 4-6 only
    reference = _numpy_row_scores(moments_cache, "red apple")
    for hit in hits:  # reference span: the connected run of rows >= halfway (or near the best), around the best row
        scores, spans = reference[hit.video_id]
        above = scores >= min((scores.min() + scores.max()) / 2, scores.max() - SPAN_NOISE_COSINE)
        run_id = np.cumsum(np.r_[True, above[1:] != above[:-1]])
        members = np.flatnonzero(run_id == run_id[np.argmax(scores)])
        assert (hit.start_s, hit.end_s) == (spans[members[0], 0], spans[members[-1], 1]), hit


def test_by_rows_ranks_moments_as_a_numpy_brute_force_does(moments_cache):
    reference = _numpy_row_scores(moments_cache, "red apple")
    flat = [(s, v, r, spans[r]) for v, (scores, spans) in reference.items() for r, s in enumerate(scores)]
    flat.sort(key=lambda item: (-item[0], item[1], item[2]))
    hits = search_text(moments_cache, "red apple", view="clip", k=9, device="cpu", by="rows")
    assert [(h.video_id, h.row) for h in hits] == [(v, r) for _, v, r, _ in flat[:9]]
    np.testing.assert_allclose([h.score for h in hits], [s for s, *_ in flat[:9]], rtol=0, atol=1e-6)
    assert [(h.start_s, h.end_s) for h in hits] == [tuple(span) for *_, span in flat[:9]]
    red_rows = {("m/red_all.mp4", r) for r in range(4)} | {("m/red_middle.mp4", r) for r in (4, 5, 6)}
    assert {(h.video_id, h.row) for h in hits[:7]} == red_rows  # the known answer: every red moment first
    assert [h.rank for h in hits] == list(range(1, 10))


def test_cli_by_rows_json_and_its_usage_error(moments_cache):
    args = ["search", "--cache", str(moments_cache), "--view", "clip", "--k", "3", "--device", "cpu"]
    result = CliRunner().invoke(cli, [*args, "--text", "red apple", "--by", "rows", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["by"] == "rows" and {h["video_id"] for h in out["hits"]} <= {"m/red_all.mp4", "m/red_middle.mp4"}
    assert all(h["end_s"] - h["start_s"] == 0.5 and h["row"] is not None for h in out["hits"])
    table = CliRunner().invoke(cli, [*args, "--text", "red apple"])
    assert table.exit_code == 0 and "2.00-3.50s" in table.stdout.splitlines()[1], table.output
    wrong = CliRunner().invoke(cli, [*args, "--video", "m/blue.mp4", "--by", "rows"])
    assert isinstance(wrong.exception, ConfigError) and "--by rows" in str(wrong.exception)


def test_several_queries_in_one_call_equal_each_alone(known_answer_cache, tmp_path):
    """`search_texts` / `search_videos` and the CLI's repeated --text and --text-file give, per query,
    what the query alone gives (one JSON object per line, in the order given)."""
    from vidcache.search import search_texts, search_videos

    texts = ["black cat", "blue ocean", "red apple", "black cat"]
    together = search_texts(known_answer_cache, texts, view="clip", k=3, device="cpu")
    assert together == [search_text(known_answer_cache, t, view="clip", k=3, device="cpu") for t in texts]
    videos = ["v1/blue_ocean.mp4", "v4/black_cat.mp4"]
    assert search_videos(known_answer_cache, videos, view="clip", k=3) == [
        search_video(known_answer_cache, v, view="clip", k=3) for v in videos
    ]
    crossed = search_videos(known_answer_cache, videos, view="clip", to_view="motion", k=3)
    assert crossed == [search_video(known_answer_cache, v, view="clip", to_view="motion", k=3) for v in videos]
    assert any(h.view_score is not None for hits in crossed for h in hits)
    queries = tmp_path / "queries.txt"
    queries.write_text("blue ocean\n\n  red apple  \n")
    args = ["search", "--cache", str(known_answer_cache), "--view", "clip", "--k", "3", "--device", "cpu", "--json"]
    result = CliRunner().invoke(cli, [*args, "--text", "black cat", "--text-file", str(queries)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["black cat", "blue ocean", "red apple"]
    for line in lines:
        alone = search_text(known_answer_cache, line["text"], view="clip", k=3, device="cpu")
        assert [h["video_id"] for h in line["hits"]] == [h.video_id for h in alone]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    refused = CliRunner().invoke(cli, [*args, "--text-file", str(empty)])
    assert isinstance(refused.exception, ConfigError)
    assert f"--text-file {empty} has no queries" in str(refused.exception)
    missing = CliRunner().invoke(cli, [*args, "--video", "v1/blue_ocean.mp4", "--video", "nope"])
    assert isinstance(missing.exception, ConfigError) and "--video 'nope' has no extracted" in str(missing.exception)
