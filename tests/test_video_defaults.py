"""The `video` view's defaults against each registered family's reference checkpoint (`Family.card`),
one test per registry entry: the card's clip geometry is transformers' own default config and
processor for that family (the independent reference: they mirror the Hub checkpoints), and a model
saved with that geometry (tiny widths, random weights, no download) is read by the view with the
card's frames per clip, resize and input size, the family's default fps, a clip span equal to the
paper's, and non-overlapping windows. Where vidcache's defaults differ from the papers' evaluation,
docs/views.md says so and why."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from vidcache.extract.views.video import VideoConfig
from vidcache.extract.views.video.families import FAMILIES, Family
from vidcache.extract.views.video.model import HfVideoEncoder, tiny_tokenizer

GEOMETRY = {"image_size", "patch_size", "num_frames", "tubelet_size", "crop_size", "frames_per_clip"}


def default_processor(family: Family):
    """The family's processor with transformers' defaults (X-CLIP: CLIP's image processor + a tokenizer)."""
    if family.text_tower:
        return T.XCLIPProcessor(image_processor=T.CLIPImageProcessor(), tokenizer=tiny_tokenizer())
    return getattr(T, family.processor_class)()


def geometry_of(config, family: Family) -> dict:
    """(frames per clip, frames per tubelet, input size, patch size) as a config states them."""
    vision = getattr(config, "vision_config", config)
    frames = config
    for part in family.frames_attr.split("."):
        frames = getattr(frames, part)
    tubelet = getattr(vision, "tubelet_size", 1)
    tubelet = list(tubelet) if isinstance(tubelet, (list, tuple)) else [tubelet]
    image = getattr(vision, "image_size", None) or vision.crop_size
    patch = getattr(vision, "patch_size", None) or tubelet[-1]
    return {"num_frames": frames, "tubelet_frames": tubelet[0], "image_size": image, "patch_size": patch}


def card_geometry_model(family: Family, folder) -> None:
    """Save a model of the card's geometry (transformers' defaults) with the tiny widths, and its processor."""
    widths = {k: v for k, v in family.tiny_config.items() if k not in GEOMETRY}
    if "vision_config" in widths:
        widths["vision_config"] = {k: v for k, v in widths["vision_config"].items() if k not in GEOMETRY}
    config = T.AutoConfig.for_model(family.model_type, **widths)
    torch.manual_seed(0)
    getattr(T, family.model_class)(config, **family.model_kwargs).save_pretrained(folder)
    default_processor(family).save_pretrained(folder)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_card_is_transformers_own_default_for_the_family(name):
    family = FAMILIES[name]
    card = family.card
    assert card is not None, f"{name}: record its reference checkpoint's Card in families.py"
    geometry = geometry_of(T.AutoConfig.for_model(name), family)
    assert geometry == {k: getattr(card, k) for k in geometry}, (name, geometry, card)
    processor = default_processor(family)
    frames = getattr(processor, "image_processor", processor)
    assert frames.size["shortest_edge"] == card.resize_short_side
    assert (frames.crop_size["height"], frames.crop_size["width"]) == (card.image_size, card.image_size)
    assert card.num_frames % card.tubelet_frames == 0 and card.image_size % card.patch_size == 0


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_views_defaults_on_a_model_of_the_cards_geometry(name, tmp_path):
    family = FAMILIES[name]
    card = family.card
    card_geometry_model(family, tmp_path / name)
    encoder = HfVideoEncoder(config=VideoConfig(model=str(tmp_path / name)), device=torch.device("cpu"))
    assert encoder.frames_per_clip == card.num_frames
    assert encoder.fps == family.default_fps
    # the default fps makes a clip span the seconds the paper's clip spans (frames x stride at 30 fps)
    assert encoder.frames_per_clip / encoder.fps == pytest.approx(card.clip_span_s, rel=1e-9)
    assert encoder.stride == encoder.frames_per_clip  # non-overlapping windows
    assert encoder.max_short_side == card.resize_short_side  # the decode pass shrinks no further
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert tuple(encoder.prepare(frame).shape) == (3, card.image_size, card.image_size)
    identity = encoder.identity()
    assert (identity["frames_per_clip"], identity["fps"], identity["stride"]) == (
        card.num_frames,
        family.default_fps,
        card.num_frames,
    )
