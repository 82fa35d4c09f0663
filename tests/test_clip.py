"""vidcache's tensor preprocessing and CLIP encoder against open_clip's own PIL preprocess + encode."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from vidcache.errors import ConfigError, MissingWeightsError
from vidcache.extract.preprocess import ImagePreprocess, PixelScratch
from vidcache.extract.views.clip import ClipConfig
from vidcache.extract.views.clip.model import ClipEncoder
from vidcache.extract.views.s3d.model import S3dEncoder
from vidcache.extract.weights import sha256_file

PIXEL_TOLERANCE = 4 / 255 / 0.26  # at most 4 grey levels, in normalised units (std ~0.26)


def frames(seed: int = 0):
    rng = np.random.default_rng(seed)
    smooth = [
        np.kron(rng.integers(0, 255, (h // 8, w // 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
        for h, w in ((120, 160), (240, 136), (64, 64), (96, 400))
    ]
    return [*smooth, rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)]


@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_tensor_preprocess_matches_open_clip_pil(resize_mode):
    cfg = open_clip.transform.PreprocessCfg(size=224, resize_mode=resize_mode)
    reference = open_clip.transform.image_transform_v2(cfg, is_train=False)
    ours = ImagePreprocess.from_open_clip(cfg.__dict__)
    for rgb in frames():
        expected = reference(Image.fromarray(rgb))
        got = ours.normalize(ours.resize_crop(rgb)[None])[0]
        assert got.shape == expected.shape
        difference = (got - expected).abs()
        assert difference.mean() < 0.25 * PIXEL_TOLERANCE
        assert torch.quantile(difference.flatten(), 0.999) < PIXEL_TOLERANCE


def test_embeddings_match_open_clip_encode(tiny_checkpoint):
    encoder = ClipEncoder(
        config=ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint)), device=torch.device("cpu")
    )
    model, _, preprocess = open_clip.create_model_and_transforms("vidcache-tiny", pretrained=str(tiny_checkpoint))
    model.eval()
    images = frames(1)
    ours = np.concatenate([encoder.encode(encoder.prepare(rgb)[None]) for rgb in images])
    with torch.no_grad():
        expected = model.encode_image(torch.stack([preprocess(Image.fromarray(rgb)) for rgb in images])).numpy()
    cosine = (ours * expected).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.999
    assert encoder.identity()["weights_sha256"] == sha256_file(tiny_checkpoint)
    tokens = open_clip.get_tokenizer("vidcache-tiny")(["a video of red."])
    with torch.no_grad():
        np.testing.assert_allclose(
            encoder.encode_text(["a video of red."]), model.encode_text(tokens).numpy(), rtol=1e-5, atol=1e-5
        )


def test_random_init_is_explicit_and_reproducible():
    a = ClipEncoder(config=ClipConfig(model="vidcache-tiny", pretrained="none"), device=torch.device("cpu"))
    b = ClipEncoder(config=ClipConfig(model="vidcache-tiny", pretrained="none"), device=torch.device("cpu"))
    assert a.random_weights and a.identity()["weights_kind"] == "random"
    assert a.identity()["weights_sha256"] == b.identity()["weights_sha256"]


def test_missing_weights_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"ViT-B-32/openai are not cached locally.*--clip-pretrained"):
        ClipEncoder(config=ClipConfig(model="ViT-B-32", pretrained="openai"), device=torch.device("cpu"))
    with pytest.raises(MissingWeightsError, match="does not exist"):
        ClipEncoder(config=ClipConfig(model="ViT-B-32", pretrained=str(tmp_path / "w.pt")), device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="neither a file nor a tag"):
        ClipEncoder(config=ClipConfig(model="ViT-B-32", pretrained="nosuchtag"), device=torch.device("cpu"))


def _test_config(name: str, tiny_checkpoint):
    """Tiny options per registered backbone; a new backbone must add itself here."""
    from vidcache.extract.views.s3d import S3dConfig

    configs = {
        "clip": (ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint)), None),
        "s3d": (S3dConfig(weights="none", clip_len=16), 16),  # frames per window
    }
    assert name in configs, f"backbone {name!r} has no test config in tests/test_clip.py"
    return configs[name]


ENCODERS = {"clip": ClipEncoder, "s3d": S3dEncoder}  # the views whose model is a FrameEncoder


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_registered_backbone_encodes_prepared_frames(name, tiny_checkpoint):
    config, window = _test_config(name, tiny_checkpoint)
    encoder = ENCODERS[name](config=config, device=torch.device("cpu"))
    if window is None:
        batch = torch.stack([encoder.prepare(rgb) for rgb in frames(2)])
    else:  # clip models take [N, T, 3, H, W] windows of prepared frames
        images = [encoder.prepare(rgb) for rgb in frames(1)]
        batch = torch.stack([torch.stack([images[i % len(images)] for i in range(window)])] * 2)
        batch[1] = batch[1].flip(0)
    out = encoder.encode(batch)
    assert out.shape == (len(batch), encoder.feature_dim) and np.isfinite(out).all()
    one_by_one = np.concatenate([encoder.encode(b[None]) for b in batch])
    np.testing.assert_allclose(out, one_by_one, rtol=1e-4, atol=1e-4)  # batching does not change results


def test_s3d_weights_are_looked_up_offline_and_checked(tmp_path, monkeypatch):
    from vidcache.extract.views.s3d import S3dConfig

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"s3d-d76dad2f\.pth are not in the torch hub cache.*--s3d-weights"):
        S3dEncoder(config=S3dConfig(), device=torch.device("cpu"))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "s3d-d76dad2f.pth").write_bytes(b"not the weights")
    with pytest.raises(MissingWeightsError, match="corrupt"):
        S3dEncoder(config=S3dConfig(), device=torch.device("cpu"))
    with pytest.raises(MissingWeightsError, match="does not exist"):
        S3dEncoder(config=S3dConfig(weights=str(tmp_path / "nope.pt")), device=torch.device("cpu"))


def test_a_rows_values_depend_on_its_batch_by_at_most_one_float16_ulp(tiny_checkpoint):
    """Why two runs (local and --engine ray, or two local ones) can store rows one float16 ULP apart:
    the same frames encoded in the same batches give the same bits, in other batches a float32 output
    can move in its last bits (the CPU matmul's blocking follows the batch size), which after the
    float16 rounding is at most one ULP. docs/cluster.md states this; test_engine_ray checks it."""
    encoder = ClipEncoder(
        config=ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint)), device=torch.device("cpu")
    )
    inputs = torch.stack([encoder.prepare(rgb) for rgb in frames(1) * 3])  # 3 copies of the clip's frames
    together = encoder.encode(inputs)
    np.testing.assert_array_equal(encoder.encode(inputs), together)  # same batches: same bits
    one_by_one = np.concatenate([encoder.encode(inputs[i : i + 1]) for i in range(len(inputs))])
    np.testing.assert_allclose(one_by_one, together, rtol=1e-5, atol=1e-6)  # float32: last bits only
    a, b = together.astype(np.float16), one_by_one.astype(np.float16)
    ulp = np.maximum(np.spacing(np.abs(a)), np.spacing(np.abs(b))).astype(np.float64)
    assert (np.abs(a.astype(np.float64) - b.astype(np.float64)) <= ulp).all()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_normalize_is_bit_identical_to_numpy_and_leaves_its_input_alone(dtype):
    # normalize works in place (issue 29: batch-sized temporaries were half a small model's time);
    # the rows must stay bit for bit what the out-of-place float32 formula gives
    ours = ImagePreprocess.from_open_clip(open_clip.transform.PreprocessCfg(size=224).__dict__)
    batch = torch.from_numpy(np.stack([frame[:64, :64].transpose(2, 0, 1) for frame in frames()])).to(dtype)
    before = batch.clone()
    mean = np.asarray(ours.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(ours.std, np.float32).reshape(1, 3, 1, 1)
    expected = (batch.numpy().astype(np.float32) / np.float32(255.0) - mean) / std
    got = ours.normalize(batch)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected)
    assert torch.equal(batch, before)
    assert ours.normalize(batch, dtype=torch.float16).dtype == torch.float16


def test_normalize_into_a_reused_scratch_batch_gives_the_same_bits():
    # the model stage reuses one float32 batch between batches (fresh 38 MB batches cost page faults);
    # every batch, of any shape, must still be what the out-of-place NumPy formula gives
    ours = ImagePreprocess.from_open_clip(open_clip.transform.PreprocessCfg(size=224).__dict__)
    mean = np.asarray(ours.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(ours.std, np.float32).reshape(1, 3, 1, 1)
    scratch, rng, kept = PixelScratch(), np.random.default_rng(3), []
    for batch_size in (4, 4, 1, 4):
        batch = torch.from_numpy(rng.integers(0, 256, (batch_size, 3, 32, 32), dtype=np.uint8))
        got = ours.normalize(batch, scratch=scratch)
        expected = (batch.numpy().astype(np.float32) / np.float32(255.0) - mean) / std
        np.testing.assert_array_equal(got.numpy(), expected)
        kept.append(got.data_ptr())
    assert kept[0] == kept[1] and kept[1] != kept[2]  # the same shape reuses the batch
    assert scratch.like(torch.zeros(2, 3, 8, 8, dtype=torch.uint8, device="meta")) is None  # off the CPU: none
