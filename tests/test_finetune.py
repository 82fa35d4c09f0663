"""`vidcache finetune` against answers known in advance (tiny random-init CLIP, generated videos, CPU).

The task ("pair"): every video shows a 16x16 tile, half red and half blue, over static noise at a
random place, moving 2 px per frame; the class is which colour is on the left. Both classes hold the
same colours in the same amounts, and since the tile sits at a random offset to the ViT's 32-px
patches (after the 2x upscale to 224 px), the patches' contents folded onto one patch are the same
in distribution for both classes: the random tower's pooled features wash the order out, and a
linear probe on them stays near chance. Fine-tuning can learn the order (~0.95 on held-out videos).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import HANG_GUARD_S
from vidcache.cache.reader import Cache
from vidcache.config import RunConfig, SamplingConfig
from vidcache.extract.api import extract as extract_videos
from vidcache.extract.config import ExtractConfig
from vidcache.extract.views.clip import ClipConfig
from vidcache.finetune.config import FinetuneConfig
from vidcache.finetune.frames import CacheFrames, VideoFrames
from vidcache.finetune.loop import finetune
from vidcache.synth import write_video

SIDE_PX = 112  # video size; the CLIP preprocessing upscales it to 224
TILE_PX = 16
RED, BLUE = (230, 30, 30), (30, 30, 230)
# what the held-out comparison must show: fine-tuned top-1 at least the frozen probe's + this margin
MARGIN_TOP1 = 0.2
PAIR_COUNTS = {"train": 64, "val": 16, "test": 48}


def pair_frame_fn(label: str, seed: int):
    rng = np.random.default_rng(seed)
    noise = rng.integers(60, 196, (SIDE_PX, SIDE_PX, 3)).astype(np.uint8)
    x0, y0 = (int(v) for v in rng.integers(0, SIDE_PX - TILE_PX - 8, 2))
    left, right = (RED, BLUE) if label == "red-left" else (BLUE, RED)

    def frame(index: int, _t_s: float) -> np.ndarray:
        image = noise.copy()
        x = x0 + 2 * index
        image[y0 : y0 + TILE_PX, x : x + TILE_PX // 2] = left
        image[y0 : y0 + TILE_PX, x + TILE_PX // 2 : x + TILE_PX] = right
        return image

    return frame


def extract(manifest: Path, cache: Path, *, views: str, pretrained: str, dtype: str = "float16") -> None:
    config = ExtractConfig.create(
        views=views,
        clip=ClipConfig(model="vidcache-tiny", pretrained=pretrained),
        sampling=SamplingConfig(num_frames=2),
        dtype=dtype,
        run=RunConfig(device="cpu", workers=2),
    )
    summary = extract_videos(manifest, cache, config)
    assert summary.failed == 0, summary.failures


@pytest.fixture(scope="module")
def pair_cache(tmp_path_factory) -> tuple[Path, Path]:
    """(manifest, cache with views clip + frames) of the pair task, extracted with random tiny CLIP."""
    root = tmp_path_factory.mktemp("pair")
    rows = ["path,labels,split"]
    seed = 0
    for split, count in PAIR_COUNTS.items():
        for number in range(count):
            label = ("red-left", "blue-left")[number % 2]
            name = f"{split}/{label}-{number}.mp4"
            write_video(root / name, 2, fps=4, width=SIDE_PX, height=SIDE_PX, frame_fn=pair_frame_fn(label, seed))
            rows.append(f"{name},{label},{split}")
            seed += 1
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    extract(manifest, root / "cache", views="clip,frames", pretrained="none", dtype="float32")
    return manifest, root / "cache"


def tiny_config(**changes) -> FinetuneConfig:
    """The recipe with a random-init tower's learning rates (a pretrained one wants the defaults);
    no flip: a mirrored pair video shows the other class."""
    base = dict(head="linear", lr=1e-3, backbone_lr_ratio=0.1, epochs=5, warmup_epochs=1.0, batch_size=4,
                max_frames=2, patience=5, device="cpu", crop_scale_min=0.8, flip=False)  # fmt: skip
    return FinetuneConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def pair_run(pair_cache, tmp_path_factory):
    _, cache = pair_cache
    run_dir = tmp_path_factory.mktemp("runs") / "all"
    summary = finetune(cache, tiny_config(), run_dir)
    return run_dir, summary


def _pooled_test(cache_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Mean-pooled clip rows [N, D] of the test videos, their labels (1 = red-left) and ids."""
    with Cache(cache_dir) as cache:
        ids = sorted(v for v in cache.video_ids("clip") if v.startswith("test/"))
        rows = [cache.read(v, "clip", dtype=np.float32)[0] for v in ids]
    labels = np.array([1 if "red-left" in v else 0 for v in ids])
    return np.stack([r.mean(axis=0) for r in rows]), labels, ids


def test_finetuning_solves_what_the_frozen_probe_cannot(pair_cache, pair_run, tmp_path):
    """(a) held-out top-1: fine-tuned (its exported tower re-extracted, its head applied to those
    rows) >= frozen linear probe (vidcache train --head linear: L-BFGS, C on val) + MARGIN_TOP1."""
    from vidcache.heads import TrainConfig
    from vidcache.heads.predict import evaluate_run
    from vidcache.heads.train import train

    manifest, cache = pair_cache
    train(cache, TrainConfig(head="linear", device="cpu"), tmp_path / "probe")
    frozen = evaluate_run(tmp_path / "probe", cache, split="test", device="cpu")["top1"]

    run_dir, summary = pair_run
    tuned_cache = tmp_path / "tuned"
    extract(manifest, tuned_cache, views="clip", pretrained=str(run_dir / "backbone.safetensors"), dtype="float32")
    pooled, labels, _ = _pooled_test(tuned_cache)
    weights = load_file(str(run_dir / "best.safetensors"))
    logits = pooled @ weights["model.head.classifier.weight"].numpy().T + weights["model.head.classifier.bias"].numpy()
    vocabulary = json.loads((run_dir / "vocabulary.json").read_text())
    predicted_red_left = np.array(vocabulary)[logits.argmax(axis=1)] == "red-left"
    tuned = float((predicted_red_left == labels.astype(bool)).mean())
    print(f"held-out top-1: frozen probe {frozen:.3f}, fine-tuned {tuned:.3f} (best epoch {summary.best_epoch})")
    assert frozen < 0.75  # the premise: random features wash the order out
    assert summary.best_epoch > 0  # epoch 0 is the LP-FT probe; fine-tuning beat it on val
    assert tuned >= frozen + MARGIN_TOP1
    assert summary.test_metrics["top1"] == pytest.approx(tuned)  # the run's own held-out figure agrees


def test_exported_backbone_reextracts_to_the_finetuned_embeddings(pair_cache, pair_run, tmp_path):
    """(e) `extract --clip-pretrained RUN/backbone.safetensors` rows = the fine-tuned tower applied
    directly (its best checkpoint) to the frames view's crops; the identity says where it came from."""
    from vidcache.finetune.model import encoder_for_identity

    manifest, cache = pair_cache
    run_dir, summary = pair_run
    again = tmp_path / "again"
    extract(manifest, again, views="clip", pretrained=str(run_dir / "backbone.safetensors"), dtype="float32")
    with Cache(again) as fresh, Cache(cache) as original:
        identity = fresh.view_info("clip")
        tower = encoder_for_identity(original.view_info("clip")).model.visual
        best = load_file(str(run_dir / "best.safetensors"))
        tower.load_state_dict({k[len("model.visual.") :]: v for k, v in best.items() if k.startswith("model.visual.")})
        tower.eval()
        mean = torch.tensor(identity["preprocess"]["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(identity["preprocess"]["std"]).view(1, 3, 1, 1)
        for video_id in sorted(original.video_ids("frames"))[::9]:
            crops, _ = original.read(video_id, "frames")
            with torch.no_grad():
                direct = tower((torch.from_numpy(crops).float() / 255 - mean) / std).numpy()
            rows, _ = fresh.read(video_id, "clip")
            np.testing.assert_allclose(rows, direct, rtol=1e-5, atol=1e-5)
    made = identity["fine_tuned"]
    assert made["run_dir"] == str(run_dir.resolve()) and made["epoch"] == summary.best_epoch
    assert made["from"]["weights_kind"] == "random" and made["from"]["model"] == "vidcache-tiny"
    assert "fine-tuned from vidcache-tiny/none" in made["description"]
    from vidcache.errors import ConfigError
    from vidcache.heads.predict import evaluate_run

    with pytest.raises(ConfigError, match=r"is a `vidcache finetune` run: .*summary.json.*--clip-pretrained"):
        evaluate_run(run_dir, cache, split="test", device="cpu")  # its head needs the fine-tuned tower


def test_unfreeze_last_block_leaves_frozen_layers_bit_identical(pair_cache, tmp_path):
    """(b) --unfreeze last:1 of the 2-block tiny tower: every parameter outside block 1, ln_post and
    proj is bit-identical to the random init; the trained ones moved."""
    from vidcache.finetune.model import encoder_for_identity

    _, cache = pair_cache
    # no probe epoch 0: one epoch of training is the best (an unchanged tower exports nothing)
    summary = finetune(cache, tiny_config(unfreeze="last:1", epochs=1, max_frames=1, head_init="random"),
                       tmp_path / "run")  # fmt: skip
    with Cache(cache) as c:
        before = encoder_for_identity(c.view_info("clip")).model.visual.state_dict()
    last = load_file(str(tmp_path / "run" / "last.safetensors"))  # after the epoch of training
    exported = load_file(str(tmp_path / "run" / "backbone.safetensors"))  # the best epoch's tower
    trained = ("transformer.resblocks.1.", "ln_post.", "proj")
    moved = []
    for name, value in before.items():
        if name.startswith(trained):
            moved.append(not torch.equal(last[f"model.visual.{name}"], value))
        else:
            assert torch.equal(last[f"model.visual.{name}"], value), f"frozen {name} changed"
            assert torch.equal(exported[f"visual.{name}"], value), f"frozen {name} changed in the export"
    assert all(moved) and len(moved) == 15  # block 1 (12 tensors), ln_post (2), proj
    assert summary.frozen_backbone_params > summary.trainable_backbone_params > 0


def test_resume_after_interruption_equals_an_unbroken_run(pair_cache, tmp_path, monkeypatch):
    """(c) a run stopped before its 2nd epoch and resumed ends bit-identical to an unbroken one:
    weights, optimizer moments, history."""
    _, cache = pair_cache
    # an mlp head (dropout: the RNG must resume too), random head init, half the tower: fast and exact
    config = tiny_config(epochs=2, batch_size=16, max_frames=1, head_options="hidden_dim=32", head="mlp",
                         head_init="random", unfreeze="last:1")  # fmt: skip
    finetune(cache, config, tmp_path / "unbroken")
    monkeypatch.setenv("VIDCACHE_FAULT", "train-epoch:EIO:2")  # OSError before epoch 2 (epoch 1 saved)
    with pytest.raises(OSError):
        finetune(cache, config, tmp_path / "broken")
    monkeypatch.delenv("VIDCACHE_FAULT")
    assert json.loads((tmp_path / "broken" / "last.json").read_text())["state"]["epoch"] == 1
    finetune(cache, config, tmp_path / "broken", resume=True)
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(str(tmp_path / "unbroken" / name)), load_file(str(tmp_path / "broken" / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs"
    history = (tmp_path / "unbroken" / "history.csv").read_text()
    assert history == (tmp_path / "broken" / "history.csv").read_text()


@pytest.mark.slow
def test_ddp_under_torchrun_equals_one_process_with_the_global_batch(pair_cache, tmp_path):
    """2 processes (gloo, CPU) with 8 videos each = 1 process with 16: DDP averages the two halves'
    gradients of the same 16 videos (no augmentation, no dropout, so nothing else differs)."""
    import subprocess
    import sys

    _, cache = pair_cache
    options = dict(epochs=1, max_frames=1, head_init="random", unfreeze="last:1", augment=False)
    finetune(cache, tiny_config(batch_size=16, **options), tmp_path / "one")
    flags = ["--epochs", "1", "--max-frames", "1", "--head-init", "random", "--unfreeze", "last:1", "--no-augment",
             "--lr", "1e-3", "--warmup-epochs", "1", "--batch-size", "8", "--device", "cpu", "--no-flip",
             "--crop-scale-min", "0.8", "--patience", "5", "--json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vidcache.cli", "finetune",
         "--cache", str(cache), "--out", str(tmp_path / "two"), *flags],
        capture_output=True, text=True, env=env, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["world_size"] == 2  # rank 0 alone reports
    one, two = (
        load_file(str(tmp_path / "one" / "last.safetensors")),
        load_file(str(tmp_path / "two" / "last.safetensors")),
    )
    for key in (k for k in one if k.startswith("model.")):
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)


def test_accumulation_and_checkpointing_change_nothing_but_cost(pair_cache, tmp_path):
    """2 micro-batches of 8 accumulated = 1 batch of 16; gradient checkpointing recomputes the same
    activations: the trained weights agree (to float rounding) with the plain run's."""
    _, cache = pair_cache
    options = dict(epochs=1, max_frames=1, head_init="random", unfreeze="last:1", augment=False)
    finetune(cache, tiny_config(batch_size=16, **options), tmp_path / "plain")
    finetune(cache, tiny_config(batch_size=8, accumulate=2, **options), tmp_path / "accumulated")
    finetune(cache, tiny_config(batch_size=16, grad_checkpointing=True, **options), tmp_path / "checkpointed")
    plain = load_file(str(tmp_path / "plain" / "last.safetensors"))
    for other in ("accumulated", "checkpointed"):
        weights = load_file(str(tmp_path / other / "last.safetensors"))
        for key in (k for k in plain if k.startswith("model.")):
            torch.testing.assert_close(weights[key], plain[key], rtol=1e-4, atol=1e-5, msg=f"{other}: {key}")
    assert json.loads((tmp_path / "accumulated" / "summary.json").read_text())["steps"] == 4  # 64 videos / 16


def test_layer_decay_and_backbone_ratio_set_each_depth_lr():
    """Per parameter lr = head lr for the head; lr x ratio x decay^(top - depth) for the tower (the
    tiny tower: embeddings depth 0, blocks 1-2, ln_post/proj 3); no weight decay on 1-D tensors."""
    from vidcache.extract.views.clip.model import ClipEncoder
    from vidcache.finetune.optim import param_groups

    visual = ClipEncoder(config=ClipConfig(model="vidcache-tiny", pretrained="none"),
                             device=torch.device("cpu")).model.visual  # fmt: skip
    head = torch.nn.Linear(64, 3)
    config = FinetuneConfig(lr=1e-3, backbone_lr_ratio=0.1, layer_decay=0.5, weight_decay=0.05)
    lr_of, decay_of = {}, {}
    for group in param_groups(visual, head, config):
        for param in group["params"]:
            lr_of[id(param)], decay_of[id(param)] = group["lr"], group["weight_decay"]
    expected = {
        "conv1.weight": 1e-4 * 0.5**3,
        "transformer.resblocks.0.attn.in_proj_weight": 1e-4 * 0.5**2,
        "transformer.resblocks.1.mlp.c_fc.weight": 1e-4 * 0.5,
        "proj": 1e-4,
        "ln_post.weight": 1e-4,
    }
    params = dict(visual.named_parameters())
    for name, lr in expected.items():
        assert lr_of[id(params[name])] == pytest.approx(lr), name
    assert lr_of[id(head.weight)] == 1e-3 and decay_of[id(head.weight)] == 0.05
    assert decay_of[id(params["ln_post.weight"])] == 0 and decay_of[id(head.bias)] == 0
    assert decay_of[id(params["transformer.resblocks.0.attn.in_proj_weight"])] == 0.05
    assert len(lr_of) == len(params) + 2  # every trainable parameter in exactly one group


def test_frames_from_cache_equal_frames_decoded_from_videos(pair_cache):
    """(d) the frames view's rows and a fresh decode through extract's stage are the same bytes."""
    _, cache_dir = pair_cache
    with Cache(cache_dir) as cache:
        ids = sorted(cache.video_ids("frames"))[::7]
        cached = CacheFrames(cache, "frames", ids, max_frames=99, memory_budget_bytes=0)
        decoded = VideoFrames(cache, cache.view_info("clip"), ids, max_frames=99, memory_budget_bytes=0)
        for video_id in ids:
            a, times_a = cached.get(video_id)
            b, times_b = decoded.get(video_id)
            assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape == (2, 3, 224, 224)
            assert torch.equal(a, b)
            np.testing.assert_array_equal(times_a, times_b)
            clip_times = cache.read(video_id, "clip")[1]
            np.testing.assert_array_equal(times_a, clip_times)  # one crop per clip row


def test_frames_view_crops_are_the_clip_preprocessing(pair_cache):
    """The stored crop is the resize + centre crop the clip view normalises and encodes: encoding
    it reproduces the cached clip row."""
    from vidcache.finetune.model import encoder_for_identity

    _, cache_dir = pair_cache
    with Cache(cache_dir) as cache:
        encoder = encoder_for_identity(cache.view_info("clip"))
        video_id = sorted(cache.video_ids("frames"))[3]
        crops, _ = cache.read(video_id, "frames")
        rows, _ = cache.read(video_id, "clip")
    np.testing.assert_allclose(encoder.encode(torch.from_numpy(crops)), rows, rtol=1e-5, atol=1e-5)


def _tower_of_run(run_dir: Path, identity: dict) -> torch.nn.Module:
    """The base tower of a cached view with a run's best.safetensors tower loaded: the reference."""
    from vidcache.finetune.model import encoder_for_identity

    tower = encoder_for_identity(identity).model.visual
    best = load_file(str(run_dir / "best.safetensors"))
    tower.load_state_dict({k[len("model.visual.") :]: v for k, v in best.items() if k.startswith("model.visual.")})
    return tower.eval()


@pytest.mark.slow
def test_cli_extract_frames_finetune_reextract(tmp_path):
    """The judged path through the real CLI: extract --views clip,frames (size estimate printed
    first) → finetune → extract with only --clip-pretrained RUN/backbone.safetensors (the file names its
    architecture), whose rows equal the fine-tuned tower applied directly and whose identity names the
    run. First the issue's run (`--epochs 1 --unfreeze last:1`: best epoch 0, the untouched tower): it
    exports nothing and says so, and extract pointed at its missing export names the base weights."""
    from conftest import run_cli, run_cli_in_process

    rows = ["path,labels,split"]
    for number in range(12):
        label = ("red-left", "blue-left")[number % 2]
        split = ("train", "train", "val", "test")[number % 4]
        name = f"v/{label}-{number}.mp4"
        write_video(tmp_path / name, 2, fps=4, width=SIDE_PX, height=SIDE_PX, frame_fn=pair_frame_fn(label, number))
        rows.append(f"{name},{label},{split}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    tiny = ["--num-frames", "2", "--device", "cpu"]
    first = run_cli("extract", tmp_path / "m.csv", "--cache", tmp_path / "c", "--views", "clip,frames",
                    "--clip-model", "vidcache-tiny", "--clip-pretrained", "none", *tiny, check=True)  # fmt: skip
    mib = 12 * 2 * 3 * 224 * 224 / 2**20
    assert f"frames view: about 24 frames of 224x224 px for 12 video(s), {mib:.1f} MiB uncompressed" in first.stderr
    with Cache(tmp_path / "c") as cache:
        base_identity = cache.view_info("clip")
    finetune_args = ["finetune", "--cache", tmp_path / "c", "--epochs", "1", "--max-frames", "2", "--unfreeze",
                     "last:1", "--device", "cpu", "--json"]  # fmt: skip

    # 1. no improvement: best epoch 0 is the probe on the untouched tower (issue 23 item 2)
    same = run_cli(*finetune_args, "--out", tmp_path / "same", check=True)
    reported = json.loads(same.stdout)
    assert reported["best_epoch"] == 0 and reported["backbone_improved"] is False and reported["backbone"] == ""
    assert reported["base_weights"] == "--clip-model vidcache-tiny --clip-pretrained none"
    assert "WARNING: fine-tuning did not improve on the base weights" in same.stderr
    assert json.loads((tmp_path / "same" / "summary.json").read_text())["backbone_improved"] is False
    assert not (tmp_path / "same" / "backbone.safetensors").exists()
    base_tower = _tower_of_run(tmp_path / "same", base_identity)  # the best tower is the base, bit for bit
    from vidcache.finetune.model import encoder_for_identity

    for key, value in encoder_for_identity(base_identity).model.visual.state_dict().items():
        assert torch.equal(base_tower.state_dict()[key], value), key
    code, _, err = run_cli_in_process("extract", tmp_path / "m.csv", "--cache", tmp_path / "c3", *tiny,
                                      "--clip-pretrained", tmp_path / "same" / "backbone.safetensors")  # fmt: skip
    assert code == 2 and "did not improve on its base weights" in err and "--clip-pretrained none" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli_in_process("eval", "--run", tmp_path / "same", "--cache", tmp_path / "c")
    assert code == 2 and "did not improve on its base weights (no backbone exported" in err

    # 2. a run that moves the tower (no probe epoch 0) → extract with only --clip-pretrained (item 1)
    code, out, err = run_cli_in_process(*finetune_args, "--out", tmp_path / "run", "--head-init", "random",
                                        "--lr", "1e-3")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["backbone_improved"] is True
    backbone = tmp_path / "run" / "backbone.safetensors"
    run_cli("extract", tmp_path / "m.csv", "--cache", tmp_path / "c2", "--clip-pretrained", backbone, *tiny,
            "--dtype", "float32", check=True)  # fmt: skip
    tower = _tower_of_run(tmp_path / "run", base_identity)
    mean = torch.tensor(base_identity["preprocess"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(base_identity["preprocess"]["std"]).view(1, 3, 1, 1)
    with Cache(tmp_path / "c2") as cache, Cache(tmp_path / "c") as original:
        identity = cache.view_info("clip")
        assert len(cache.video_ids("clip")) == 12
        for video_id in sorted(original.video_ids("frames")):
            crops, _ = original.read(video_id, "frames")
            with torch.no_grad():
                direct = tower((torch.from_numpy(crops).float() / 255 - mean) / std).numpy()
                before = base_tower((torch.from_numpy(crops).float() / 255 - mean) / std).numpy()
            np.testing.assert_allclose(cache.read(video_id, "clip")[0], direct, rtol=1e-5, atol=1e-5)
            assert np.abs(direct - before).max() > 1e-3  # the fine-tuned tower computes other features
    assert identity["model"] == "vidcache-tiny" and identity["weights_kind"] == "file"
    assert identity["fine_tuned"]["run_dir"] == str((tmp_path / "run").resolve())


def test_config_errors_name_the_parameter():
    from vidcache.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unfreeze='last:0'.*all, none, last:N"):
        FinetuneConfig(unfreeze="last:0")
    with pytest.raises(ConfigError, match=r"frames_from='disk'.*cache, videos"):
        FinetuneConfig(frames_from="disk")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"layer_decay=0.0.*\(0, 1\]"):
        FinetuneConfig(layer_decay=0.0)
    assert dataclasses.asdict(FinetuneConfig())["beta2"] == 0.98
    assert os.environ.get("WORLD_SIZE", "1") == "1"  # single process here: no DDP
