"""Tests generated from the view registry: every registered view's settings are flags that land in the
saved config; every view extracts through the CLI with its tiny settings, its rows unchanged by the
other views requested; and a view a contributor adds in one new file runs through the CLI like the
built-in ones, its rows checked against the colours the test videos were made of."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import sys
import textwrap
import typing

import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S
from vidcache import Cache
from vidcache.commands.extract import build_config, extract_options
from vidcache.config import RunConfig, SamplingConfig, StreamConfig, to_json
from vidcache.extract.config import ExtractConfig
from vidcache.extract.views import VIEWS, sections
from vidcache.synth import write_video

NOT_FLAGS = {"sampling", "views_settings", "streams", "run", "shard_index", "shard_count"}  # containers, --shard
COMPANIONS = {"ray_address": {"engine": "ray"}, "gpus_per_model": {"engine": "ray"}}  # flags that need another


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _other_value(option) -> object:
    """A valid value other than the default for a generated option (by its field's type)."""
    hints = typing.get_type_hints(option.owner)
    annotation = hints[option.field]
    default = option.option.default
    if typing.get_origin(annotation) is typing.Literal:
        return next(c for c in typing.get_args(annotation) if c != default)
    if option.field == "views":
        return "clip,audio"
    if typing.get_origin(annotation) is tuple:
        return "0.5,2.0,9.0"
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = args[0]
    if kind is bool:
        return not default
    if kind is int:
        return 32 if default is None else default + 17
    if kind is float:
        if default is not None and 0 < default < 1:  # a probability or a fraction: stay inside (0, 1)
            return default / 2
        return 2.5 if default is None else default + 1.5
    return f"{default or 'x'}-changed"


def test_every_config_field_has_one_flag_and_every_flag_lands_in_the_saved_config():
    options = extract_options()
    flags = [o.flag for o in options]
    assert len(flags) == len(set(flags)), "a flag is generated twice"
    owners = [ExtractConfig, SamplingConfig, StreamConfig, RunConfig, *sections().values()]
    fields = {(cls, f.name) for cls in owners for f in dataclasses.fields(cls) if f.name not in NOT_FLAGS}
    assert {(o.owner, o.field) for o in options} == fields
    base = _flatten(json.loads(to_json(build_config())))
    for option in options:
        value = _other_value(option)
        companions = COMPANIONS.get(option.field, {})
        config = build_config(**{option.dest: value, **companions})
        saved = _flatten(json.loads(to_json(config)))
        changed = {key for key, v in saved.items() if base.get(key) != v}
        own = [key for key in changed if key.rsplit(".", 1)[-1] == option.field]
        assert len(own) == 1, (option.flag, changed)
        expected = option.parse(value) if option.parse else value
        assert saved[own[0]] == (list(expected) if isinstance(expected, tuple) else expected), option.flag
        allowed = {"sampling.fps"} | {f"run.{name}" for name in companions}  # --num-frames replaces fps
        assert changed - set(own) <= allowed, (option.flag, changed)


def test_library_errors_name_the_parameter_and_the_cli_the_flag():
    from vidcache.errors import ConfigError
    from vidcache.extract.views.s3d import S3dConfig

    with pytest.raises(ConfigError, match=r"S3dConfig\.clip_len=3: must be >= 14"):
        S3dConfig(clip_len=3)
    with pytest.raises(ConfigError, match=r"^--s3d-clip-len 3: must be >= 14"):
        build_config(s3d_clip_len=3)
    with pytest.raises(ConfigError, match=r"unknown view 'nope'; choose from: .*clip.*timm"):
        ExtractConfig.create(views=("clip", "nope"))


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    rows = ["path,labels,split"]
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        path = root / f"v{i}.mp4"
        write_video(
            path,
            24,
            fps=8,
            width=64,
            height=48,
            tone_hz=330.0 + 110 * i,
            frame_fn=lambda _, t, c=colour: np.broadcast_to(np.array(c, np.uint8), (48, 64, 3)).copy(),
        )
        rows.append(f"{path.name},c{i},train")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    return root


def _tiny_args(name: str) -> list[str]:
    """The flags that give view `name` its tiny settings (what differs from the defaults)."""
    view = VIEWS.get(name)
    tiny, default = view.tiny_settings(), view.settings()
    by_field = {o.field: o for o in extract_options() if o.owner is view.settings}
    args = []
    for f in dataclasses.fields(tiny):
        value = getattr(tiny, f.name)
        if value != getattr(default, f.name):
            args += [by_field[f.name].flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return args


def _rows(cache_dir, view: str) -> dict[str, np.ndarray]:
    cache = Cache(cache_dir)
    return {video: cache.read(video, view, raw=True)[0] for video in cache.video_ids(view)}


def _cli(*args) -> dict:
    """`vidcache ARGS --json` through the click CLI in this process (no interpreter start-up per call)."""
    from click.testing import CliRunner

    from vidcache.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", VIEWS.names())
def test_view_extracts_through_the_cli_and_its_rows_ignore_other_views(name, small_corpus, tmp_path):
    other = "audio" if name != "audio" else "clip"
    args = [*_tiny_args(name), *_tiny_args(other), "--fps", "2", "--device", "cpu", "--json"]
    alone, together = tmp_path / "alone", tmp_path / "together"
    manifest = small_corpus / "m.csv"
    summary = _cli("extract", manifest, "--cache", alone, "--views", name, *args)
    assert summary["failed"] == 0 and summary["extracted"] == 2, summary
    _cli("extract", manifest, "--cache", together, "--views", f"{name},{other}", *args)
    with sqlite3.connect(alone / "catalog.sqlite") as db:
        identities = dict(db.execute("SELECT view, identity_json FROM views"))
    written = [name, *VIEWS.get(name).writes_with]
    assert sorted(identities) == sorted(written)
    for view in written:
        identity = json.loads(identities[view])
        assert identity["fidelity"] and identity["feature_dim"] > 0
        rows, rows_together = _rows(alone, view), _rows(together, view)
        assert sorted(rows) == ["v0.mp4", "v1.mp4"]
        for video, features in rows.items():
            assert features.ndim == 2 and features.shape[1] == identity["feature_dim"] and len(features) >= 1
            assert np.isfinite(features.astype(np.float64)).all()
            np.testing.assert_array_equal(features, rows_together[video])  # bit-identical
    assert _cli("extract", manifest, "--cache", alone, "--views", name, *args)["skipped"] == 2
    assert _cli("status", "--cache", alone, "--json")["views"][name]["done"] == 2


TOY_VIEW = '''
"""A contributor's view in one file: the mean colour of each sampled frame over a grid of cells."""
from dataclasses import dataclass

import numpy as np
import torch

from vidcache.extract.views import View, register_view
from vidcache.fields import check, setting


@dataclass(frozen=True)
class MeanColourConfig:
    grid: int = setting(2, help="Cells per side.")

    def __post_init__(self):
        check(self, "grid", self.grid >= 1, "must be >= 1")


class MeanColour:
    view = "meancolour"
    store_dtype = "float32"

    def __init__(self, grid):
        self.grid = grid

    def prepare(self, rgb):
        h, w = rgb.shape[0] // self.grid * self.grid, rgb.shape[1] // self.grid * self.grid
        cells = rgb[:h, :w].reshape(self.grid, h // self.grid, self.grid, w // self.grid, 3).mean(axis=(1, 3))
        return torch.from_numpy(cells.reshape(-1).astype(np.float32) / 255)

    process_prepare = None  # not picklable-free: threads only

    def encode(self, batch):
        return batch.numpy()

    def identity(self):
        return {"model": "mean colour", "grid": self.grid, "feature_dim": 3 * self.grid**2, "dtype": "float32"}


@register_view("meancolour")
class MeanColourView(View):
    settings = MeanColourConfig
    counts_frames = True

    def load_model(self, settings, ctx):
        return MeanColour(settings.grid)

    def consumer(self, settings, ctx, *, model, decode_model, views):
        from vidcache.extract.consumers import ClipFrames

        return ClipFrames(model, ctx.sampling, batch_size=ctx.batch_size)

    def identity(self, settings, ctx, *, model, decode_model):
        return model.identity()
'''


@pytest.mark.slow
def test_a_view_added_in_one_file_runs_through_the_cli(small_corpus, tmp_path):
    (tmp_path / "toy_view.py").write_text(textwrap.dedent(TOY_VIEW))
    launcher = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import toy_view; from vidcache.cli import main; main()"
    )
    cache = tmp_path / "cache"
    import subprocess

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            launcher,
            "extract",
            str(small_corpus / "m.csv"),
            "--cache",
            str(cache),
            "--views",
            "meancolour",
            "--meancolour-grid",
            "3",
            "--fps",
            "2",
            "--device",
            "cpu",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr
    rows = _rows(cache, "meancolour")
    for video, colour in (("v0.mp4", (200, 30, 30)), ("v1.mp4", (30, 30, 200))):
        cells = rows[video].reshape(len(rows[video]), 9, 3)
        assert len(cells) == 6  # 3 s at 2 fps
        np.testing.assert_allclose(cells, np.broadcast_to(np.array(colour) / 255, cells.shape), atol=0.03)
    help_text = subprocess.run([sys.executable, "-c", launcher, "extract", "--help"], capture_output=True, text=True)
    assert "--meancolour-grid" in help_text.stdout
