"""The CLIP text tower over NumPy (`extract/views/clip/text_tower.py`, `bpe.py`) and how `search --text`
uses it (`vidcache/text_embed.py`), judged against open_clip itself: its SimpleTokenizer token for token
on families of generated strings, its `encode_text` on a family of random-initialised towers (GELU and
QuickGELU, CLIP and CustomTextCLIP, a biased projection, canonicalising tokenizer, short context), the
variants it must refuse, and a fresh `search --text` process that embeds a new prompt without torch."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
from open_clip import tokenizer as oc_tokenizer

from tests.conftest import HANG_GUARD_S, REPO
from vidcache import text_embed
from vidcache.cache.arrays import write_view_arrays
from vidcache.cache.layout import TEXT_TOWER_DIR, text_memo_path
from vidcache.cache.reader import Cache
from vidcache.extract.views.clip import ClipConfig
from vidcache.extract.views.clip.bpe import ClipBpeTokenizer
from vidcache.extract.views.clip.model import ClipEncoder, export_text_tower
from vidcache.extract.views.clip.text_tower import NumpyTextTower
from vidcache.manifest import VideoEntry
from vidcache.search import search_text, text_query_vectors

TEXT = {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 3, "layers": 2}
VISION = {"image_size": 32, "layers": 1, "width": 32, "head_width": 32, "patch_size": 16}
SUPPORTED = {
    "vt-gelu": {},
    "vt-quick": {"quick_gelu": True},
    "vt-custom": {"custom_text": True},
    "vt-projbias": {"custom_text": True, "text_cfg": {"proj_bias": True}},
    "vt-canon": {"text_cfg": {"context_length": 24, "tokenizer_kwargs": {"clean": "canonicalize"}}},
}
REFUSED = {
    "vt-layerscale": {"custom_text": True, "text_cfg": {"ls_init_value": 0.1}},
    "vt-lastpool": {"custom_text": True, "text_cfg": {"pool_type": "last"}},
    "vt-bidirectional": {"custom_text": True, "text_cfg": {"no_causal_mask": True}},
}
PROMPTS = [
    "a dog catching a frisbee",
    "",
    "  Naïve   café — 東京の夜 😀 &amp;amp; <b>bold</b> ",
    "don't we'll I'M they've it's 42 3.14 x_y",
    "a very long prompt " * 20,
]


@pytest.fixture(scope="module", autouse=True)
def variant_configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip_configs")
    for name, extra in {**SUPPORTED, **REFUSED}.items():
        config = {"embed_dim": 40, "vision_cfg": VISION, "text_cfg": {**TEXT, **extra.get("text_cfg", {})}}
        config.update({k: v for k, v in extra.items() if k != "text_cfg"})
        folder.joinpath(f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(str(folder))


def _encoder(model: str, seed: int = 0) -> ClipEncoder:
    return ClipEncoder(config=ClipConfig(model=model, pretrained="none", seed=seed), device=torch.device("cpu"))


def _strings(seed: int, count: int) -> list[str]:
    """Prompts of many kinds: words, contractions, digits, punctuation runs, accents, CJK, emoji, HTML
    entities, odd whitespace, mojibake, and lengths past the context."""
    rng = random.Random(seed)
    pieces = [
        "dog", "Running", "FAST", "don't", "we'll", "I'M", "'s", "x_y", "1984", "3.14", "!!!", "...", "—", "«»",
        "café", "naïve", "Ærø", "東京", "의", "ñ", "😀", "👍🏽", "&amp;", "&lt;b&gt;", "&amp;amp;", "Ã©", "\t", "\n",
        "  ", "\u00a0", "\u200b", "a-b", "(x)", "#tag", "@user", "e.g.", "ﬁ", "½", "٣", "Ω", "ß",
    ]  # fmt: skip
    out = []
    for _ in range(count):
        words = [rng.choice(pieces) for _ in range(rng.randint(0, 40 if rng.random() < 0.2 else 8))]
        out.append("".join(w + rng.choice([" ", "", " ", "  "]) for w in words))
    return out


@pytest.fixture(scope="module")
def merges_text():
    import gzip

    with gzip.open(oc_tokenizer.default_bpe(), "rb") as file:
        return file.read().decode("utf-8")


@pytest.mark.parametrize("clean", ["lower", "whitespace", "canonicalize"])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_tokenizer_gives_open_clips_tokens(merges_text, clean, seed):
    texts = _strings(seed, 150) + PROMPTS
    mine = ClipBpeTokenizer(merges_text, context_length=30, clean=clean)(texts)
    reference = oc_tokenizer.SimpleTokenizer(context_length=30, clean=clean)(texts).numpy()
    assert mine.dtype == np.int64 and np.array_equal(mine, reference)


@pytest.mark.parametrize("model", sorted(SUPPORTED))
def test_the_numpy_tower_computes_open_clips_encode_text(model):
    encoder = _encoder(model, seed=3)
    texts = PROMPTS + _strings(7, 12)
    reference = encoder.encode_text(texts)
    tower, vectors, why_not = export_text_tower(encoder, texts, reference)
    assert tower is not None, why_not
    # float32 arithmetic in another order: within a few float32 roundings of torch's, per prompt
    error = np.linalg.norm(vectors - reference, axis=-1) / np.linalg.norm(reference, axis=-1)
    assert error.max() < 2e-6
    alone = np.concatenate([tower.encode([text]) for text in texts])  # a prompt's batch does not move it
    assert np.allclose(alone, vectors, rtol=0, atol=1e-5 * np.abs(reference).max())


@pytest.mark.parametrize("model", sorted(REFUSED))
def test_variants_the_numpy_tower_does_not_compute_are_refused(model):
    encoder = _encoder(model)
    tower, vectors, why_not = export_text_tower(encoder, PROMPTS, encoder.encode_text(PROMPTS))
    assert tower is None and vectors is None and "standard causal transformer" in why_not


def test_a_saved_tower_loads_memory_mapped_and_gives_the_same_bits(tmp_path):
    encoder = _encoder("vt-quick", seed=5)
    tower, vectors, _ = export_text_tower(encoder, PROMPTS, encoder.encode_text(PROMPTS))
    tower.save(tmp_path / "tower.safetensors")
    loaded = NumpyTextTower.load(tmp_path / "tower.safetensors")
    assert (
        isinstance(loaded.tensors["token_embedding"].base, np.memmap | memoryview)
        or not loaded.tensors["token_embedding"].flags.owndata
    )
    assert loaded.encode(PROMPTS).tobytes() == vectors.tobytes()
    assert [p.name for p in tmp_path.iterdir()] == ["tower.safetensors"]  # no temporary left behind


@pytest.fixture()
def cache_dir(tmp_path):
    encoder = _encoder("vidcache-tiny", seed=11)
    rng = np.random.default_rng(0)
    entries = [VideoEntry(f"v{i}.mp4", f"/data/v{i}.mp4", (), "train") for i in range(20)]
    rows = [(e.video_id, rng.standard_normal((3, 64)).astype(np.float32), np.arange(3.0)) for e in entries]
    write_view_arrays(
        tmp_path / "cache", view="clip", rows=rows, entries=entries, identity=encoder.identity(), dtype="float32"
    )
    return tmp_path / "cache"


def _torch_hits(cache_dir, text: str, k: int) -> list[str]:
    """The reference ranking: torch's text tower on the raw prompt, NumPy cosines over mean-pooled rows."""
    encoder = _encoder("vidcache-tiny", seed=11)
    query = encoder.encode_text([text])[0]
    query /= np.linalg.norm(query)
    cache = Cache(cache_dir)
    scores = {}
    for video_id in cache.video_ids("clip"):
        mean = cache.read(video_id, "clip")[0].astype(np.float64).mean(axis=0)
        scores[video_id] = float(mean @ query / np.linalg.norm(mean))
    return [v for v, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]]


def test_search_exports_once_and_ranks_as_torch(cache_dir):
    hits = search_text(cache_dir, "a red kite over the sea", view="clip", k=5, query_form="raw", device="cpu")
    towers = sorted(p.name for p in (cache_dir / TEXT_TOWER_DIR).iterdir())
    assert len(towers) == 1 and towers[0].endswith(".safetensors")
    assert [h.video_id for h in hits] == _torch_hits(cache_dir, "a red kite over the sea", 5)
    again = search_text(cache_dir, "a red kite over the sea", view="clip", k=5, query_form="raw", device="cpu")
    assert again == hits
    # a prompt never seen: the export answers, and its vector is torch's to float32 rounding
    vectors = text_query_vectors(Cache(cache_dir), "two cats", view="clip", query_form="raw", device="cpu")
    reference = _encoder("vidcache-tiny", seed=11).encode_text(["two cats"])
    assert np.allclose(vectors[0], reference[0] / np.linalg.norm(reference[0]), atol=1e-6)


def test_a_tower_numpy_cannot_compute_is_marked_and_stays_on_torch(cache_dir, monkeypatch):
    import vidcache.extract.views.clip.model as clip_model

    monkeypatch.setattr(clip_model, "export_text_tower", lambda *args: (None, None, "refused for the test"))
    first = search_text(cache_dir, "green hills", view="clip", k=3, device="cpu")
    marker = next((cache_dir / TEXT_TOWER_DIR).iterdir())
    assert marker.name.endswith(".torch") and json.loads(marker.read_text()) == {
        "torch_because": "refused for the test"
    }
    monkeypatch.undo()  # decided once: later queries stay on torch (and its memo) without trying again
    calls = []
    real = text_embed._text_encoder
    monkeypatch.setattr(text_embed, "_text_encoder", lambda *args: calls.append(1) or real(*args))
    assert search_text(cache_dir, "green hills", view="clip", k=3, device="cpu") == first  # the memo
    search_text(cache_dir, "blue lakes", view="clip", k=3, device="cpu")
    assert len(calls) == 1 and [p.name for p in (cache_dir / TEXT_TOWER_DIR).iterdir()] == [marker.name]


def _fresh_search(cache_dir, text: str, k: int = 6) -> tuple[list[str], list[str]]:
    """(hits, which of torch / open_clip / torchvision got imported) of a whole `search --text` process."""
    args = ["search", "--cache", str(cache_dir), "--text", text, "--k", str(k), "--json", "--query-form", "raw"]
    script = (
        "import json, sys\n"
        "from vidcache import text_embed\n"
        "text_embed._may_have_gpu = lambda: False\n"  # this test's machine may have a GPU driver
        "from vidcache.cli import main\n"
        f"sys.argv = ['vidcache', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=HANG_GUARD_S, env=env
    )
    assert out.returncode == 0, out.stderr
    hits_line, loaded_line = out.stdout.strip().splitlines()[-2:]
    return [h["video_id"] for h in json.loads(hits_line)["hits"]], json.loads(loaded_line)


@pytest.mark.slow
def test_a_fresh_process_embeds_a_new_prompt_without_torch(cache_dir):
    """Whole `search --text` processes: the first exports the tower (torch), a later one with a prompt never
    seen imports none of torch, open_clip or torchvision and ranks as the torch tower does."""
    _, first_loaded = _fresh_search(cache_dir, "an old train station")
    hits, loaded = _fresh_search(cache_dir, "a boat on a lake at dawn")
    assert "torch" in first_loaded and loaded == []
    assert hits == _torch_hits(cache_dir, "a boat on a lake at dawn", 6)


@pytest.mark.slow
def test_extract_exports_the_tower_so_a_caches_first_text_query_needs_no_torch(corpus, tiny_checkpoint, tmp_path):
    """The round trip a user makes: `extract`, then `search --text` in a fresh process. The run exports the
    clip view's text tower under the name the search looks for (the view's recorded identity), its vectors
    are torch's to float32 rounding, and the cache's very first text query imports no torch; a second run
    leaves the export as it is."""
    from tests.conftest import run_cli_in_process, tiny_clip_args
    from vidcache.extract.views.clip.model import clip_for_identity
    from vidcache.extract.views.clip.text_tower import tower_file

    cache_dir = tmp_path / "cache"
    args = ["extract", str(corpus / "manifest.csv"), "--cache", cache_dir, *tiny_clip_args(tiny_checkpoint)]
    code, _, err = run_cli_in_process(*args, "--fps", "2")
    assert code == 0, err
    identity = Cache(cache_dir).view_info("clip")
    path = tower_file(cache_dir, json.dumps(identity, sort_keys=True, default=str))
    assert [p.name for p in (cache_dir / TEXT_TOWER_DIR).iterdir()] == [path.name]
    reference = clip_for_identity(identity, device=torch.device("cpu")).encode_text(PROMPTS)
    vectors = NumpyTextTower.load(path).encode(PROMPTS)
    assert (np.linalg.norm(vectors - reference, axis=-1) / np.linalg.norm(reference, axis=-1)).max() < 2e-6
    stamp = path.stat().st_mtime_ns
    code, _, err = run_cli_in_process(*args, "--fps", "2")
    assert code == 0, err
    assert path.stat().st_mtime_ns == stamp
    hits, loaded = _fresh_search(cache_dir, "a red square moving left", k=8)
    assert loaded == []
    query = clip_for_identity(identity, device=torch.device("cpu")).encode_text(["a red square moving left"])[0]
    cache = Cache(cache_dir)
    means = {v: cache.read(v, "clip")[0].astype(np.float64).mean(axis=0) for v in cache.video_ids("clip")}
    assert hits == sorted(means, key=lambda v: (-float(means[v] @ query / np.linalg.norm(means[v])), v))


def test_an_autocast_run_exports_from_a_float32_twin_on_the_cpu(tmp_path):
    """A run whose encoder is not CPU float32 (a GPU, autocast) builds the tower once more on the CPU for the
    export; the file is the one a CPU run writes, byte for byte. A tower kept in bf16 is never exported."""
    from vidcache.extract.views.clip.model import keep_numpy_text_tower

    encoder = _encoder("vidcache-tiny", seed=4)
    identity = encoder.identity()
    line = keep_numpy_text_tower(encoder, cache_dir=tmp_path / "cpu", identity=identity, prompts=PROMPTS)
    assert "kept view clip's text tower" in line
    encoder.amp_dtype = torch.bfloat16  # as on a GPU: the encoder's own tower is not float32
    line = keep_numpy_text_tower(encoder, cache_dir=tmp_path / "amp", identity=identity, prompts=PROMPTS)
    assert "kept" in line
    (made_on_cpu,), (made_from_twin,) = ((tmp_path / d / TEXT_TOWER_DIR).iterdir() for d in ("cpu", "amp"))
    assert made_on_cpu.name == made_from_twin.name and made_on_cpu.read_bytes() == made_from_twin.read_bytes()
    assert keep_numpy_text_tower(encoder, cache_dir=tmp_path / "cpu", identity=identity, prompts=PROMPTS) == ""
    bf16 = {**identity, "precision": "bf16-weights"}
    assert keep_numpy_text_tower(encoder, cache_dir=tmp_path / "bf16", identity=bf16, prompts=PROMPTS) == ""
    assert not (tmp_path / "bf16").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_export_is_made_again_and_the_search_is_unchanged(cache_dir, damage):
    first = search_text(cache_dir, "a quiet harbour", view="clip", k=4, query_form="raw", device="cpu")
    path = next((cache_dir / TEXT_TOWER_DIR).glob("*.safetensors"))
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x07" * 999, "empty": b""}[damage])
    text_embed._numpy_tower.cache_clear()
    again = search_text(cache_dir, "a busy harbour", view="clip", k=4, query_form="raw", device="cpu")
    assert [h.video_id for h in again] == _torch_hits(cache_dir, "a busy harbour", 4)
    assert path.read_bytes() == data  # exported again, the same bytes
    text_embed._numpy_tower.cache_clear()
    text_memo_path(cache_dir).unlink()
    assert search_text(cache_dir, "a quiet harbour", view="clip", k=4, query_form="raw", device="cpu") == first


def test_device_auto_on_a_gpu_machine_embeds_with_the_export_without_torch(cache_dir, monkeypatch):
    """`--device auto` where a GPU driver is present: the exported tower answers without asking torch for
    the device (importing torch to reach a GPU costs seconds; the forward pass is milliseconds), and its
    numbers are those a CPU host memoises; `--device cuda` still goes to torch (here: no GPU, the error)."""
    from vidcache.errors import ConfigError

    search_text(cache_dir, "warm-up", view="clip", k=2, device="cpu")  # the export
    monkeypatch.setattr(text_embed, "_may_have_gpu", lambda: True)

    def no_torch(device):
        raise AssertionError(f"torch was asked for device {device!r}")

    with monkeypatch.context() as patched:
        patched.setattr(text_embed, "_compute", no_torch)
        auto = text_query_vectors(Cache(cache_dir), "lighthouse at night", view="clip", device="auto")
    on_cpu = text_query_vectors(Cache(cache_dir), "lighthouse at night", view="clip", device="cpu")
    assert on_cpu.tobytes() == auto.tobytes()  # one memo entry serves both
    hits = search_text(cache_dir, "lighthouse at night", view="clip", k=5, query_form="raw", device="auto")
    assert [h.video_id for h in hits] == _torch_hits(cache_dir, "lighthouse at night", 5)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda"):
            text_query_vectors(Cache(cache_dir), "lighthouse at night", view="clip", device="cuda")


def test_a_read_only_cache_exports_into_the_users_cache_folder(cache_dir, tmp_path, monkeypatch):
    """A corpus cache mounted read-only (root ignores chmod, so the check is made to answer no): the export
    goes to $XDG_CACHE_HOME/vidcache/text_towers under the same name, and the next query of a new prompt
    loads no model; where that is not writable either, the export stays in memory."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.setattr(text_embed, "_writable", lambda folder: False)
    first = search_text(cache_dir, "red roofs", view="clip", k=4, query_form="raw", device="cpu")
    assert not (cache_dir / TEXT_TOWER_DIR).exists()
    exported = list(text_embed.user_tower_dir().glob("*.safetensors"))
    assert len(exported) == 1 and exported[0].parent == home / "vidcache" / "text_towers"
    calls = []
    real = text_embed._text_encoder
    monkeypatch.setattr(text_embed, "_text_encoder", lambda *args: calls.append(1) or real(*args))
    second = search_text(cache_dir, "blue doors", view="clip", k=4, query_form="raw", device="cpu")
    assert calls == [] and [h.video_id for h in second] == _torch_hits(cache_dir, "blue doors", 4)
    assert [h.video_id for h in first] == _torch_hits(cache_dir, "red roofs", 4)
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))  # not writable either
    third = search_text(cache_dir, "green gates", view="clip", k=4, query_form="raw", device="cpu")
    assert calls == [1]  # the model, once, to export into memory
    fourth = search_text(cache_dir, "white walls", view="clip", k=4, query_form="raw", device="cpu")
    assert calls == [1] and [h.video_id for h in fourth] == _torch_hits(cache_dir, "white walls", 4)
    assert [h.video_id for h in third] == _torch_hits(cache_dir, "green gates", 4)


def test_a_failed_export_leaves_the_extract_run_finished(corpus, tiny_checkpoint, tmp_path, monkeypatch, caplog):
    """The export comes after the rows are committed: any error in it (here a KeyError from a damaged
    identity) is a warning, the run is recorded as finished, and a re-run is a no-op (it loads no model:
    the view's first `search --text` makes the export instead)."""
    import vidcache.extract.views.clip.model as clip_model
    from tests.conftest import run_cli_in_process, tiny_clip_args

    def broken(*args, **kwargs):
        raise KeyError("pretrained")

    monkeypatch.setattr(clip_model, "keep_numpy_text_tower", broken)
    cache_dir = tmp_path / "cache"
    args = ["extract", str(corpus / "manifest.csv"), "--cache", cache_dir, *tiny_clip_args(tiny_checkpoint), "--json"]
    code, out, err = run_cli_in_process(*args)
    assert code == 0, err
    assert "text tower not exported" in caplog.text and not (cache_dir / TEXT_TOWER_DIR).exists()
    assert json.loads(out.strip().splitlines()[-1])["extracted"] == 8
    monkeypatch.undo()
    code, out, err = run_cli_in_process(*args)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["extracted"] == 0
