"""The contributor path stays one file plus one registry line: a view and a head written in one
temporary module (as docs/views.md and docs/heads.md tell a new contributor) register themselves by
being imported, and the tests generated from the registries run on them as on the built-in ones. The
view's rows are checked against the colours the test videos were made of, the head's scores against a
NumPy re-computation of its forward pass."""

from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import pytest

# imported under the names pytest gives them (tests/ is on sys.path, no package): importing
# `tests.test_heads_options` would run that module a second time and register its toy head twice
import test_heads_options as generated_head_tests
import test_view_registry as generated_view_tests
import torch
from test_view_registry import small_corpus  # noqa: F401  (a fixture: two one-colour videos)

from vidcache.extract.views import VIEWS
from vidcache.heads import HEADS

PLUGIN = '''
"""A contributor's module: one view (the mean colour of each sampled frame) and one head."""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vidcache.extract.consumers import ClipFrames
from vidcache.extract.views.base import View, register_view
from vidcache.fields import check, setting
from vidcache.heads import Head, HeadOutput, register_head
from vidcache.heads.base import masked_mean


@dataclass(frozen=True)
class ContribColourConfig:
    scale: float = setting(1.0, help="Multiplies every mean colour.")

    def __post_init__(self):
        check(self, "scale", self.scale > 0, "must be > 0")


class ContribColour:  # the encoder contract (vidcache.extract.encoder.FrameEncoder)
    view = "contribcolour"
    feature_dim = 3
    store_dtype = "float32"

    def __init__(self, scale):
        self.scale = scale

    def prepare(self, rgb):
        return torch.from_numpy(rgb.reshape(-1, 3).mean(axis=0).astype(np.float32) / 255 * self.scale)

    def encode(self, batch):
        return batch.numpy()

    def identity(self):
        return {"model": "mean colour", "scale": self.scale, "feature_dim": 3, "dtype": "float32"}


@register_view("contribcolour")
class ContribColourView(View):
    settings = ContribColourConfig
    counts_frames = True

    def load_model(self, settings, ctx):
        return ContribColour(settings.scale)

    def consumer(self, settings, ctx, *, model, decode_model, views):
        return ClipFrames(model, ctx.sampling, batch_size=ctx.batch_size)

    def identity(self, settings, ctx, *, model, decode_model):
        return model.identity()


@dataclass(frozen=True)
class ContribOptions:
    contrib_gain: float = setting(2.0, help="contrib: multiplies the pooled features.")

    def __post_init__(self):
        check(self, "contrib_gain", self.contrib_gain > 0, "must be > 0")


@register_head("contrib")
class ContribHead(Head):
    Options = ContribOptions

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.out = nn.Linear(self.input_dim, self.num_classes)

    def forward(self, features, mask):
        return HeadOutput(self.out(masked_mean(features, mask) * self.options.contrib_gain))
'''


@pytest.fixture
def contributed(tmp_path, monkeypatch):
    """The temporary module, imported (its registrations are its only effect), and taken back out of
    the process-wide registries afterwards so no other test sees it."""
    (tmp_path / "contrib_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("contrib_plugin")
    try:
        yield module
    finally:
        VIEWS._factories.pop("contribcolour", None)
        HEADS._factories.pop("contrib", None)
        sys.modules.pop("contrib_plugin", None)


@pytest.mark.slow
def test_a_view_and_a_head_from_one_module_pass_the_generated_tests(contributed, small_corpus, tmp_path):  # noqa: F811
    assert "contribcolour" in VIEWS.names() and "contrib" in HEADS.names()
    # the view: its flags land in the saved config, it extracts through the CLI, its rows ignore others
    generated_view_tests.test_every_config_field_has_one_flag_and_every_flag_lands_in_the_saved_config()
    generated_view_tests.test_view_extracts_through_the_cli_and_its_rows_ignore_other_views(
        "contribcolour", small_corpus, tmp_path
    )
    rows = generated_view_tests._rows(tmp_path / "alone", "contribcolour")
    for video, colour in (("v0.mp4", (200, 30, 30)), ("v1.mp4", (30, 30, 200))):  # what the videos were made of
        np.testing.assert_allclose(rows[video], np.broadcast_to(np.array(colour) / 255, rows[video].shape), atol=0.03)

    # the head: one flag per option, every flag in the saved config, options round-trip
    generated_head_tests.test_every_config_field_has_exactly_one_flag()
    generated_head_tests.test_every_flag_lands_in_the_saved_config("contrib")
    generated_head_tests.test_every_heads_options_round_trip_through_the_saved_config("contrib")
    head = HEADS.get("contrib")(input_dim=4, num_classes=2, multi_label=True, options=HEADS.options("contrib"))
    features = torch.randn(3, 5, 4)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    x, m = features.numpy(), mask.numpy()
    pooled = np.stack([x[i][m[i]].mean(axis=0) for i in range(3)]) * 2.0
    expected = pooled @ head.out.weight.detach().numpy().T + head.out.bias.detach().numpy()
    np.testing.assert_allclose(head(features, mask).logits.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
