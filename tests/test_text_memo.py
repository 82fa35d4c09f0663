"""The text-query embedding memo (`CACHE/text_memo.sqlite`): a repeated `search --text` takes its prompts'
raw embeddings from the cache instead of the model, giving bit-identical query vectors, and (on a machine
without a GPU driver) imports no torch, open_clip or torchvision; a query not wholly memoised runs the model
once and memoises all its prompts; a read-only cache still searches; the memo stays bounded and shared by
concurrent writers; the housekeeping commands leave it alone."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from tests.conftest import HANG_GUARD_S, REPO
from vidcache import text_embed
from vidcache.cache.arrays import write_view_arrays
from vidcache.cache.housekeeping import compact_cache, remove_videos
from vidcache.cache.layout import TEXT_MEMO_NAME
from vidcache.cache.reader import Cache
from vidcache.cache.textmemo import read_text_memo, write_text_memo
from vidcache.cache.verify import verify_cache
from vidcache.extract.runner import embed_labels
from vidcache.extract.views.clip import ClipConfig
from vidcache.extract.views.clip.model import ClipEncoder
from vidcache.manifest import VideoEntry
from vidcache.search import search_text, text_query_vectors

LABELS = ["red apple", "blue ocean", "green forest", "black cat"]
TEMPLATES = ["a clip of {}", "footage showing {}.", "{} in a video"]  # text.h5's, so the default templates
HEAVY = ("torch", "open_clip", "torchvision")


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint):
    return ClipEncoder(
        config=ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint)), device=torch.device("cpu")
    )


def _cache(cache_dir, encoder):
    rng = np.random.default_rng(0)
    entries = [VideoEntry(f"v{i}.mp4", f"/data/v{i}.mp4", (LABELS[i % 4],), "train") for i in range(12)]
    rows = [(e.video_id, rng.standard_normal((3, 64)).astype(np.float32), np.arange(3.0)) for e in entries]
    write_view_arrays(cache_dir, view="clip", rows=rows, entries=entries, identity=encoder.identity(), dtype="float32")
    embed_labels(cache_dir, encoder, LABELS, TEMPLATES)
    return cache_dir


@pytest.fixture()
def cache_dir(encoder, tmp_path):
    return _cache(tmp_path / "cache", encoder)


@pytest.fixture()
def model_calls(monkeypatch):
    """Counts the text-tower computations of search (torch's or the NumPy export's; run as before, only counted)."""
    calls = []
    real = text_embed._embed

    def counted(cache, identity_json, path, kind, prompts, *args):
        calls.append(list(prompts))
        return real(cache, identity_json, path, kind, prompts, *args)

    monkeypatch.setattr(text_embed, "_embed", counted)
    return calls


def _memo_rows(cache_dir) -> list[tuple[str, str]]:
    with sqlite3.connect(cache_dir / TEXT_MEMO_NAME) as db:
        return db.execute("SELECT context, prompt FROM memo ORDER BY seq").fetchall()


@pytest.mark.parametrize("form", ["best", "ensemble", "raw"])
def test_a_memo_hit_gives_the_query_vectors_of_a_fresh_model_call_bit_for_bit(cache_dir, model_calls, form):
    fresh = text_query_vectors(Cache(cache_dir), "red apple", view="clip", query_form=form, device="cpu")
    assert len(model_calls) == 1 and model_calls[0] == ["red apple", *(t.format("red apple") for t in TEMPLATES)]
    assert [p for _, p in _memo_rows(cache_dir)] == model_calls[0]  # every prompt of the call, in order
    for _ in range(2):
        hit = text_query_vectors(Cache(cache_dir), "red apple", view="clip", query_form=form, device="cpu")
        assert len(model_calls) == 1  # no model call
        assert hit.dtype == fresh.dtype and hit.shape == fresh.shape and hit.tobytes() == fresh.tobytes()
    (cache_dir / TEXT_MEMO_NAME).unlink()  # and the model, asked again, gives the same bits (the reference)
    again = text_query_vectors(Cache(cache_dir), "red apple", view="clip", query_form=form, device="cpu")
    assert len(model_calls) == 2 and again.tobytes() == fresh.tobytes()


def test_search_text_ranks_the_same_from_the_memo(cache_dir, model_calls):
    first = search_text(cache_dir, "black cat", view="clip", k=5, device="cpu")
    second = search_text(cache_dir, "black cat", view="clip", k=5, device="cpu")
    assert len(model_calls) == 1 and second == first


def test_a_query_not_wholly_memoised_runs_the_model_once_and_memoises_all_its_prompts(cache_dir, model_calls):
    text_query_vectors(Cache(cache_dir), "blue ocean", view="clip", device="cpu")
    # the same text, another template list: its batch differs (so may its numbers), so it is a miss
    templates = [TEMPLATES[0], "a photo of {}"]
    fresh = text_query_vectors(Cache(cache_dir), "blue ocean", view="clip", templates=templates, device="cpu")
    assert [len(c) for c in model_calls] == [4, 3]
    contexts = {}
    for context, prompt in _memo_rows(cache_dir):
        contexts.setdefault(context, []).append(prompt)
    assert sorted(contexts.values(), key=len) == model_calls[::-1]
    hit = text_query_vectors(Cache(cache_dir), "blue ocean", view="clip", templates=templates, device="cpu")
    assert len(model_calls) == 2 and hit.tobytes() == fresh.tobytes()
    # another view identity (e.g. re-extracted with other weights): the old rows are never hit
    other = dict(Cache(cache_dir).view_info("clip"), weights_sha256="0" * 64)
    prompts = ["blue ocean", *(t.format("blue ocean") for t in TEMPLATES)]
    ids = json.dumps(other, sort_keys=True, default=str)
    context = text_embed._memo_context(ids, other, text_embed._compute("cpu")[1], prompts, "numpy")
    assert read_text_memo(cache_dir, context, prompts) is None


def test_a_read_only_cache_searches_without_writing_a_memo(cache_dir, model_calls, monkeypatch):
    def read_only(path, *args, **kwargs):  # as the filesystem answers a read-only cache (root ignores chmod)
        uri = path if str(path).startswith("file:") else f"{path.resolve().as_uri()}?mode=ro"
        return real_connect(uri, *args, **{**kwargs, "uri": True})

    real_connect = sqlite3.connect
    monkeypatch.setattr("vidcache.cache.textmemo.sqlite3.connect", read_only)
    cache_dir.chmod(0o555)
    try:
        first = search_text(cache_dir, "green forest", view="clip", k=3, device="cpu")
        assert not (cache_dir / TEXT_MEMO_NAME).exists()
        assert search_text(cache_dir, "green forest", view="clip", k=3, device="cpu") == first
        assert len(model_calls) == 2
        monkeypatch.undo()  # memoised while writable, then read-only again: a hit
        cache_dir.chmod(0o755)
        search_text(cache_dir, "green forest", view="clip", k=3, device="cpu")
        monkeypatch.setattr("vidcache.cache.textmemo.sqlite3.connect", read_only)
        cache_dir.chmod(0o555)
        assert search_text(cache_dir, "green forest", view="clip", k=3, device="cpu") == first
    finally:
        cache_dir.chmod(0o755)


def test_the_memo_keeps_the_newest_rows_and_takes_concurrent_writers(tmp_path):
    tmp_path.joinpath("c").mkdir()
    cache_dir = tmp_path / "c"
    vectors = np.arange(8, dtype=np.float32).reshape(2, 4)
    for i in range(10):
        assert write_text_memo(cache_dir, f"ctx{i}", [f"p{i}a", f"p{i}b"], vectors + i, max_rows=6)
    assert read_text_memo(cache_dir, "ctx9", ["p9b", "p9a"]).tolist() == (vectors + 9)[::-1].tolist()
    assert read_text_memo(cache_dir, "ctx6", ["p6a", "p6b"]) is None  # evicted, the oldest first
    assert [p for _, p in _memo_rows(cache_dir)] == [f"p{i}{s}" for i in (7, 8, 9) for s in "ab"]
    assert read_text_memo(cache_dir, "ctx9", ["p9a", "p8a"]) is None  # a prompt of another context
    assert not write_text_memo(tmp_path / "missing", "ctx", ["p"], vectors[:1])  # no cache there: skipped

    def writer(k):
        for i in range(25):
            assert write_text_memo(cache_dir, f"w{k}-{i}", ["x", "y"], vectors + k)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(read_text_memo(cache_dir, f"w{k}-{i}", ["x", "y"]) is not None for k in range(4) for i in range(25))


def test_housekeeping_leaves_the_memo_alone(cache_dir):
    search_text(cache_dir, "red apple", view="clip", k=2, device="cpu")
    before = _memo_rows(cache_dir)
    assert verify_cache(cache_dir).broken == {}
    remove_videos(cache_dir, video_ids=["v0.mp4"])
    compact_cache(cache_dir)
    assert verify_cache(cache_dir).broken == {} and _memo_rows(cache_dir) == before


@pytest.mark.slow
def test_cli_search_text_from_the_memo_imports_no_torch(cache_dir):
    """The whole process of a repeated `search --text` (the memo hit): the same JSON as the first (a model
    call), without torch, open_clip or torchvision (their import is most of a query's second)."""
    args = ["search", "--cache", str(cache_dir), "--text", "red apple", "--k", "4", "--json"]
    script = (
        "import json, sys\n"
        "from vidcache import text_embed\n"
        "text_embed._may_have_gpu = lambda: False\n"  # this test's machine may have one: then torch says which
        "from vidcache.cli import main\n"
        f"sys.argv = ['vidcache', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=HANG_GUARD_S, env=env
        )
        assert out.returncode == 0, out.stderr
        hits_line, loaded_line = out.stdout.strip().splitlines()[-2:]
        runs.append((json.loads(hits_line), json.loads(loaded_line)))
    (first, first_loaded), (second, second_loaded) = runs
    assert "torch" in first_loaded and second_loaded == []  # the miss loads the model, the hit nothing of it
    assert second == first and len(first["hits"]) == 4
