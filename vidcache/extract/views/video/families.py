"""The transformers video families the `video` view runs, and what vidcache takes from each: the model
class, where its frames-per-clip lives in the config, the pooled output used as the row, the default
sampling (with the reference for each choice; docs/views.md has the table), and a tiny config.

Light at import time (no transformers): the CLI imports the view to build its flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Pooling = Literal["mean", "cls", "projection"]
TINY_PREFIX = "vidcache-tiny-"


@dataclass(frozen=True)
class Card:
    """The reference checkpoint's clip geometry (its config.json and preprocessor config on the Hub) and
    the span in seconds one clip covers in the paper's sampling: what the family's defaults are checked
    against (tests/test_video_defaults.py; docs/views.md lists where vidcache's defaults differ)."""

    checkpoint: str
    num_frames: int  # frames per clip
    tubelet_frames: int  # frames one patch token spans (1: per-frame patches)
    image_size: int  # the model's square input
    patch_size: int
    resize_short_side: int  # the processor's resize before its centre crop
    clip_span_s: float  # frames × temporal stride / 30 fps (Kinetics) in the paper, or its stated rate


@dataclass(frozen=True)
class Family:
    model_type: str  # the config's `model_type`
    model_class: str  # the transformers class vidcache loads (the encoder, no task head)
    frames_attr: str  # the config attribute holding the frames per clip ("a.b": nested)
    input_key: str  # the processor's / model's pixel argument
    pooling: Pooling
    embedding: str  # what a row is, recorded in the identity
    default_fps: float
    references: str  # where the default sampling and the pooled output come from
    text_tower: bool = False
    model_kwargs: dict = field(default_factory=dict)  # given to from_pretrained
    processor_class: str = ""  # the processor of a vidcache-tiny model
    tiny_config: dict = field(default_factory=dict)  # a vidcache-tiny model's config (random weights)
    card: Card | None = None  # the reference checkpoint's clip geometry


_TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}

FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family(
            "videomae",
            "VideoMAEModel",
            "num_frames",
            "pixel_values",
            "mean",
            "mean of the last hidden state over all patch tokens (VideoMAE's use_mean_pooling, before fc_norm)",
            7.5,
            "VideoMAE (Tong et al. 2022) §4: Kinetics clips of 16 frames, temporal stride 4 at 30 fps; "
            "mean pooling as VideoMAEForVideoClassification",
            card=Card("MCG-NJU/videomae-base", 16, 2, 224, 16, 224, 16 * 4 / 30),
            processor_class="VideoMAEVideoProcessor",
            tiny_config={**_TINY, "image_size": 32, "patch_size": 8, "num_frames": 4, "tubelet_size": 2},
        ),
        Family(
            "vjepa2",
            "VJEPA2Model",
            "frames_per_clip",
            "pixel_values_videos",
            "mean",
            "mean of the encoder's last hidden state over all patch tokens (predictor skipped)",
            4.0,
            "V-JEPA 2 (Assran et al. 2025) pretraining configs sample at 4 fps; the encoder tokens are what "
            "VJEPA2Model.get_vision_features returns, mean-pooled (no parameters, unlike the attentive probe)",
            card=Card("facebook/vjepa2-vitl-fpc64-256", 64, 2, 256, 16, 292, 64 / 4),
            processor_class="VJEPA2VideoProcessor",
            tiny_config={
                "crop_size": 32,
                "patch_size": 8,
                "frames_per_clip": 4,
                "tubelet_size": 2,
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "mlp_ratio": 2.0,
                "pred_hidden_size": 32,
                "pred_num_hidden_layers": 1,
                "pred_num_attention_heads": 2,
                "pred_num_mask_tokens": 2,
            },
        ),
        Family(
            "xclip",
            "XCLIPModel",
            "vision_config.num_frames",
            "pixel_values",
            "projection",
            "XCLIPModel.get_video_features: per-frame CLS projected, then the multi-frame integration "
            "transformer's pooled output (the video embedding X-CLIP compares with text)",
            0.8,
            "X-CLIP (Ni et al. 2022) §4.1: 8 frames sparsely sampled over a 10 s Kinetics clip; "
            "get_video_features / get_text_features as in transformers' X-CLIP docs",
            text_tower=True,
            card=Card("microsoft/xclip-base-patch32", 8, 1, 224, 32, 224, 10.0),
            processor_class="XCLIPProcessor",
            tiny_config={
                "text_config": {**_TINY, "vocab_size": 514, "max_position_embeddings": 32},
                "vision_config": {
                    **_TINY,
                    "image_size": 32,
                    "patch_size": 8,
                    "num_frames": 4,
                    "mit_hidden_size": 32,
                    "mit_intermediate_size": 64,
                    "mit_num_attention_heads": 2,
                },
                "projection_dim": 32,  # = mit_hidden_size: the MIT runs on projected frame embeddings
                "prompt_num_attention_heads": 2,
            },
        ),
        Family(
            "timesformer",
            "TimesformerModel",
            "num_frames",
            "pixel_values",
            "cls",
            "the CLS token of the last hidden state (after the final layer norm), the classifier's input",
            30 / 32,
            "TimeSformer (Bertasius et al. 2021) §4: 8 frames sampled at a rate of 1/32 (30 fps video); "
            "TimesformerForVideoClassification classifies the CLS token",
            card=Card("facebook/timesformer-base-finetuned-k400", 8, 1, 224, 16, 224, 8 * 32 / 30),
            processor_class="TimesformerVideoProcessor",
            tiny_config={**_TINY, "image_size": 32, "patch_size": 8, "num_frames": 4},
        ),
        Family(
            "vivit",
            "VivitModel",
            "num_frames",
            "pixel_values",
            "cls",
            "the CLS token of the last hidden state (after the final layer norm), the classifier's input",
            15.0,
            "ViViT (Arnab et al. 2021) §4.1: 32 frames with a temporal stride of 2 (30 fps video); "
            "VivitForVideoClassification classifies the CLS token",
            model_kwargs={"add_pooling_layer": False},
            card=Card("google/vivit-b-16x2-kinetics400", 32, 2, 224, 16, 256, 32 * 2 / 30),
            processor_class="VivitVideoProcessor",
            tiny_config={**_TINY, "image_size": 32, "num_frames": 4, "tubelet_size": [2, 8, 8]},
        ),
    )
}


def family_of(model_type: str, *, option: str = "--video-model", model: str = "") -> Family:
    """The family of a config's `model_type`, or a ConfigError naming the supported ones."""
    from ....errors import ConfigError

    if model_type not in FAMILIES:
        raise ConfigError(
            f"{option} {model}: model_type {model_type!r} is not a video family vidcache runs; "
            f"choose a model of: {', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]


def tiny_family(model: str) -> Family | None:
    """The family of a `vidcache-tiny-FAMILY` name, None for any other model name."""
    if not model.startswith(TINY_PREFIX):
        return None
    return family_of(model[len(TINY_PREFIX) :], model=model)


def model_type_of(model: str) -> str | None:
    """The `model_type` of a model name without loading anything (its config.json: in the folder, or in
    the offline Hugging Face cache); None when it cannot be read here."""
    import json
    import os

    if model.startswith(TINY_PREFIX):
        return model[len(TINY_PREFIX) :]
    path = os.path.join(model, "config.json")
    if not os.path.isdir(model):
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, "config.json")
        except Exception:  # not a valid repo id
            return None
        if not isinstance(found, str):
            return None
        path = found
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh).get("model_type")
    except (OSError, ValueError):
        return None
