"""The `video` view against each family's own transformers pipeline: a tiny random model built from the
config class and saved with save_pretrained (its processor too), extracted through vidcache once per
family, and every row compared with the family's processor + model applied to PyAV's frames at the
row's timestamps. Then the rows used like any view's: a linear probe (scikit-learn), neighbours
(NumPy brute force) and `search --text` through X-CLIP's text tower (transformers)."""

from __future__ import annotations

import dataclasses
import json
import math

import av
import numpy as np
import pytest
import torch
import transformers as T

from vidcache import Cache
from vidcache.config import RunConfig
from vidcache.extract.api import extract
from vidcache.extract.config import ExtractConfig
from vidcache.extract.views.clip import ClipConfig
from vidcache.extract.views.video import VideoConfig
from vidcache.extract.views.video.model import HfVideoEncoder, tiny_tokenizer
from vidcache.manifest import read_manifest

SMALL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
SIZES = {"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32}}


def _videomae():
    config = T.VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=4, tubelet_size=2, use_mean_pooling=True, num_labels=3, **SMALL
    )
    return T.VideoMAEForVideoClassification(config), T.VideoMAEVideoProcessor(**SIZES)


def _vjepa2():
    config = T.VJEPA2Config(
        crop_size=32, patch_size=8, frames_per_clip=4, tubelet_size=2, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, mlp_ratio=2.0, pred_hidden_size=32, pred_num_hidden_layers=1,
        pred_num_attention_heads=2, pred_num_mask_tokens=2,
    )  # fmt: skip
    return T.VJEPA2Model(config), T.VJEPA2VideoProcessor(crop_size=32)


def _xclip():
    config = T.XCLIPConfig(
        text_config={**SMALL, "vocab_size": 514, "max_position_embeddings": 32},
        vision_config={**SMALL, "image_size": 32, "patch_size": 8, "num_frames": 4, "mit_hidden_size": 32,
                       "mit_intermediate_size": 64, "mit_num_attention_heads": 2},
        projection_dim=32, prompt_num_attention_heads=2,
    )  # fmt: skip
    processor = T.XCLIPProcessor(image_processor=T.CLIPImageProcessor(**SIZES), tokenizer=tiny_tokenizer())
    return T.XCLIPModel(config), processor


def _timesformer():
    config = T.TimesformerConfig(image_size=32, patch_size=8, num_frames=4, num_labels=3, **SMALL)
    return T.TimesformerForVideoClassification(config), T.TimesformerVideoProcessor(**SIZES)


def _vivit():
    config = T.VivitConfig(image_size=32, num_frames=4, tubelet_size=[2, 8, 8], num_labels=3, **SMALL)
    return T.VivitForVideoClassification(config), T.VivitVideoProcessor(**SIZES)


# family → (builder, its own pooled output from the reference model, --video-fps, --video-stride)
FAMILIES = {
    "videomae": (_videomae, lambda m, px: m.videomae(px).last_hidden_state.mean(1), 4.0, None),
    "vjepa2": (_vjepa2, lambda m, px: m.get_vision_features(px).mean(1), 4.0, None),
    "xclip": (_xclip, lambda m, px: m.get_video_features(pixel_values=px).pooler_output, None, None),  # 0.8 fps
    "timesformer": (_timesformer, lambda m, px: m.timesformer(px).last_hidden_state[:, 0], 4.0, None),
    "vivit": (_vivit, lambda m, px: m.vivit(px).last_hidden_state[:, 0], 4.0, 2),
}


@pytest.fixture(scope="module")
def extracted(corpus, tiny_checkpoint, tmp_path_factory):
    """Per family: its saved folder and a cache of the corpus extracted through vidcache (X-CLIP's
    with the clip view too); the clips the model was given, as recorded at `encode`."""
    root = tmp_path_factory.mktemp("video")
    given: list[torch.Tensor] = []
    original = HfVideoEncoder.encode

    def recording(self, batch):
        given.append(self.normalize(batch))  # the pixels the model gets
        return original(self, batch)

    entries = read_manifest(corpus / "manifest.csv")  # a/ is train, b/ test: two of b/ become val (heads)
    entries = [
        dataclasses.replace(e, split="val") if e.video_id.startswith("b/") and i % 2 else e
        for i, e in enumerate(entries)
    ]
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HfVideoEncoder, "encode", recording)
        for name, (build, _, fps, stride) in FAMILIES.items():
            torch.manual_seed(5)
            model, processor = build()
            folder = root / name
            model.save_pretrained(folder)
            processor.save_pretrained(folder)
            views = ("clip", "video") if name == "xclip" else ("video",)
            config = ExtractConfig.create(
                views=views,
                dtype="float32",
                video=VideoConfig(model=str(folder), fps=fps, stride=stride),
                clip=ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint)),
                run=RunConfig(device="cpu", workers=1),
            )
            given.clear()
            few = entries if name == "xclip" else entries[:3]  # X-CLIP: all eight, for the heads and search
            summary = extract(few, root / f"cache-{name}", config)
            assert summary.failed == 0 and summary.extracted == (8 if name == "xclip" else 3), summary
            out[name] = (folder, root / f"cache-{name}", torch.cat(given))
    return out


def decode_all(path):
    with av.open(str(path)) as container:
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    return np.array([t for t, _ in frames]), [f for _, f in frames]


def shown_at(stamps, frames, times_s):
    """PyAV's frame on screen at each time (the last with pts <= t)."""
    return [frames[max(0, int(np.searchsorted(stamps, t + 1e-9, side="right")) - 1)] for t in times_s]


def cosine(a, b):
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_rows_equal_the_familys_processor_and_model_on_pyavs_frames(name, extracted, corpus):
    folder, cache_dir, given = extracted[name]
    _, pooled, fps, stride = FAMILIES[name]
    reference_class = getattr(T, T.AutoConfig.from_pretrained(folder).architectures[0])
    reference = reference_class.from_pretrained(folder).eval()
    processor = T.AutoProcessor.from_pretrained(folder)
    with Cache(cache_dir) as cache:
        identity = cache.view_info("video")
        fps = fps or 0.8  # X-CLIP's default: 8 frames over a 10 s Kinetics clip
        assert identity["family"] == name and identity["fps"] == pytest.approx(fps)
        assert identity["frames_per_clip"] == 4 and len(identity["weights_sha256"]) == 64
        stride = stride or 4
        for video_id in cache.video_ids("video"):
            rows, _ = cache.read(video_id, "video", dtype=np.float32)
            spans = cache.spans(video_id, "video")
            stamps, frames = decode_all(corpus / video_id)
            grid = math.ceil(len(frames) / 12 * fps - 1e-9)  # the corpus is 12 fps, frames at k / fps
            starts = list(range(0, grid - 4 + 1, stride)) if grid >= 4 else [0]
            assert len(rows) == len(starts), (video_id, len(rows), starts)
            for row, start in enumerate(starts):
                count = min(4, grid - start)
                np.testing.assert_allclose(spans[row], [start / fps, (start + count) / fps], atol=1e-6)
                clip = shown_at(stamps, frames, [(start + i) / fps for i in range(count)])
                clip += [clip[-1]] * (4 - count)  # shorter than a clip: the last frame repeated
                if name == "xclip":  # X-CLIP's processor takes the frames as images
                    pixels = processor(videos=clip, return_tensors="pt")["pixel_values"][None]
                else:
                    pixels = next(iter(processor(videos=[np.stack(clip)], return_tensors="pt").values()))
                # the pixels vidcache gave the model are the processor's on PyAV's frames, exactly
                assert (given - pixels).abs().flatten(1).amax(1).min() < 1e-5
                with torch.inference_mode():
                    expected = pooled(reference, pixels)[0].numpy()
                    if hasattr(reference, "classifier"):  # the row is what the family's classifier reads
                        norm = getattr(reference, "fc_norm", None) or torch.nn.Identity()
                        logits = reference(pixels).logits[0]
                        torch.testing.assert_close(reference.classifier(norm(torch.from_numpy(rows[row]))), logits)
                assert cosine(rows[row], expected) >= 0.9999, (video_id, row)


def pooled_rows(cache: Cache, view: str) -> tuple[list[str], np.ndarray]:
    """Independent: each video's rows (Cache.read) averaged in float64 and L2-normalised."""
    ids = sorted(cache.video_ids(view))
    pooled = np.stack([cache.read(v, view, dtype=np.float32)[0].astype(np.float64).mean(axis=0) for v in ids])
    return ids, pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_search_text_over_xclip_rows_uses_xclips_text_tower(extracted):
    from vidcache.search import search_text

    folder, cache_dir, _ = extracted["xclip"]
    hits = search_text(cache_dir, "red left", view="video", k=5, query_form="raw", device="cpu")
    model, processor = T.XCLIPModel.from_pretrained(folder).eval(), T.AutoProcessor.from_pretrained(folder)
    with torch.inference_mode():
        text = model.get_text_features(**processor.tokenizer(["red left"], return_tensors="pt")).pooler_output[0]
    text = text.numpy() / np.linalg.norm(text.numpy())
    with Cache(cache_dir) as cache:
        ids, vectors = pooled_rows(cache, "video")
        assert cache.view_info("video")["text_tower"] is True
    scores = vectors @ text
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:5]
    assert [h.video_id for h in hits] == [ids[i] for i in order]
    np.testing.assert_allclose([h.score for h in hits], scores[order], atol=1e-5)


def test_neighbours_of_video_and_clip_rows_equal_numpy_brute_force(extracted):
    from vidcache.index import nearest_videos

    _, cache_dir, _ = extracted["xclip"]
    with Cache(cache_dir) as cache:
        for view in ("video", "clip"):  # the same videos' neighbours in either view, for cross-view positives
            frame, _ = nearest_videos(cache, k=3, view=view)
            ids, vectors = pooled_rows(cache, view)
            scores = vectors @ vectors.T
            np.fill_diagonal(scores, -np.inf)
            for i, video in enumerate(ids):
                mine = frame[frame.video_id == video].sort_values("rank")
                expected = sorted(range(len(ids)), key=lambda j: (-scores[i, j], ids[j]))[:3]
                assert list(mine.neighbour_id) == [ids[j] for j in expected], (view, video)
                np.testing.assert_allclose(mine.score, scores[i, expected], atol=1e-5)


def test_linear_probe_on_video_rows_equals_scikit_learn(extracted, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    from vidcache.heads import HEADS, TrainConfig
    from vidcache.heads.predict import predict_run
    from vidcache.heads.train import train

    _, cache_dir, _ = extracted["xclip"]
    options = HEADS.options("linear", probe_c=0.3, probe_refit="train")
    train(cache_dir, TrainConfig(head="linear", view="video", options=options, device="cpu"), tmp_path / "run")
    frame = predict_run(tmp_path / "run", cache_dir, split="test")
    with Cache(cache_dir) as cache:
        entries = cache.entries()
        split = dict(zip(entries.video_id, entries.split, strict=True))
        labels = {row.video_id: set(row.labels) for row in entries.itertuples()}
        ids = sorted(cache.video_ids("video"))
        x = {v: cache.read(v, "video", dtype=np.float32)[0].astype(np.float64).mean(axis=0) for v in ids}
    vocabulary = sorted(set().union(*labels.values()))
    train_ids, test_ids = [v for v in ids if split[v] == "train"], [v for v in ids if split[v] == "test"]
    y = np.array([[name in labels[v] for name in vocabulary] for v in train_ids], dtype=int)
    scaler = StandardScaler().fit(np.stack([x[v] for v in train_ids]))
    reference = OneVsRestClassifier(LogisticRegression(C=0.3, max_iter=10000, tol=1e-8))
    reference.fit(scaler.transform(np.stack([x[v] for v in train_ids])), y)
    expected = reference.predict_proba(scaler.transform(np.stack([x[v] for v in test_ids])))
    got = frame.pivot(index="video_id", columns="label", values="score").loc[test_ids, vocabulary].to_numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_a_model_missing_offline_is_one_line_naming_download_and_the_folder(corpus, tmp_path):
    import contextlib
    import io

    from huggingface_hub.constants import HF_HUB_CACHE

    from vidcache.cli import main

    bert = tmp_path / "bert"
    T.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(bert)
    args = ["extract", corpus / "manifest.csv", "--cache", tmp_path / "c", "--views", "video", "--json"]
    for model, message in (
        (
            "nobody/no-such-video-model",
            f"not in the offline Hugging Face cache ({HF_HUB_CACHE}); run once with --download",
        ),
        (str(tmp_path), "not a transformers model folder"),
        (str(bert), "model_type 'bert' is not a video family vidcache runs; choose a model of: videomae, vjepa2"),
    ):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
            main([str(a) for a in [*args, "--video-model", model, "--device", "cpu"]])
        assert stop.value.code == 2, out.getvalue()
        error = json.loads(out.getvalue().strip().splitlines()[-1])["error"]
        assert message in error and "\n" not in error, error
        assert not (tmp_path / "c" / "shards").exists() or not any((tmp_path / "c" / "shards").iterdir())


def test_xclip_text_tower_embeds_the_labels_into_text_h5(extracted, corpus, tmp_path):
    """Without a clip view, extract and `embed-text` embed the labels with X-CLIP's text tower: the
    usual prompt ensemble of transformers' get_text_features."""
    import contextlib
    import io

    from vidcache.cli import main

    folder, _, _ = extracted["xclip"]
    entries = read_manifest(corpus / "manifest.csv")[:2]
    config = ExtractConfig.create(
        views=("video",), dtype="float32", video=VideoConfig(model=str(folder)), run=RunConfig(device="cpu")
    )
    assert extract(entries, tmp_path / "c", config).extracted == 2
    with Cache(tmp_path / "c") as cache:
        made = cache.text_embeddings()
    assert made.labels == ["green", "left", "red", "right"] and made.attrs["backbone"] == "transformers"
    (tmp_path / "labels.txt").write_text("a dog\nred\n")
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as stop:
        main(["embed-text", "--cache", str(tmp_path / "c"), "--labels-file", str(tmp_path / "labels.txt"), "--json"])
    assert stop.value.code == 0
    with Cache(tmp_path / "c") as cache:
        text = cache.text_embeddings()
    model, processor = T.XCLIPModel.from_pretrained(folder).eval(), T.AutoProcessor.from_pretrained(folder)
    prompts = [template.format(label) for label in text.labels for template in text.templates]
    with torch.inference_mode():
        tokens = processor.tokenizer(prompts, padding=True, return_tensors="pt")
        flat = model.get_text_features(**tokens).pooler_output.numpy()
    per_template = flat.reshape(2, len(text.templates), -1)
    unit = per_template / np.linalg.norm(per_template, axis=-1, keepdims=True)
    mean = unit.mean(axis=1)
    np.testing.assert_allclose(text.per_template, per_template, atol=1e-5)
    np.testing.assert_allclose(text.embeddings, mean / np.linalg.norm(mean, axis=-1, keepdims=True), atol=1e-5)
