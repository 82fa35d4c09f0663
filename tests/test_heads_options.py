"""Heads own their options: a head added from this module (one class, one decorator) trains through
the CLI like the built-in ones; every config field has exactly one flag and every flag lands in the
saved config; old run directories still load; `train --sweep` keeps the config that separately
trained configs say is best; the Python API names its parameters in errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Literal, Union, get_args, get_origin, get_type_hints

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from tests.test_heads import DIM, write_cache
from vidcache.commands.heads import parse_train, train_options
from vidcache.commands.heads import train as train_command
from vidcache.fields import ParamError, check, check_choice, setting
from vidcache.heads import HEADS, Head, HeadOutput, TrainConfig, api, register_head
from vidcache.heads.base import masked_mean

Squash = Literal["tanh", "relu"]


# the whole of a new head: its options, its model, one registry line ---------------------------------
@dataclass(frozen=True)
class ToyOptions:
    width: int = setting(3, help="toy: hidden width.")
    squash: Squash = setting("tanh", help="toy: the hidden non-linearity.")
    temperature: float = setting(1.0, help="τ of the similarities.")  # a name other heads have: one flag

    def __post_init__(self) -> None:
        check(self, "width", self.width >= 1, "must be >= 1")
        check_choice(self, "squash", self.squash, Squash)
        check(self, "temperature", self.temperature > 0, "must be > 0")


@register_head("toy")
class ToyHead(Head):
    """Mean-pooled frames → a one-hidden-layer MLP; logits divided by the temperature."""

    Options = ToyOptions
    sweep_axis = ("width", (2, 6))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        squash = nn.Tanh() if self.options.squash == "tanh" else nn.ReLU()
        self.net = nn.Sequential(nn.Linear(self.input_dim, self.options.width), squash)
        self.out = nn.Linear(self.options.width, self.num_classes)

    def forward(self, features, mask) -> HeadOutput:
        return HeadOutput(self.out(self.net(masked_mean(features, mask))) / self.options.temperature)


CLASSES = ("a", "b", "c")


def blob_corpus(seed=7, n=(90, 45, 30), frames=4, noise=1.2):
    """Single-label: class centre + noise per frame; noisy enough that configs score differently."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CLASSES), DIM)) * 0.8
    videos = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        for i in range(count):
            c = int(rng.integers(len(CLASSES)))
            videos[f"{split}/{i:03d}"] = (centres[c] + noise * rng.normal(size=(frames, DIM)), (CLASSES[c],), split)
    return videos


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("blobs") / "cache", blob_corpus())


def run_cli_here(*args) -> tuple[int, str, str]:
    """`vidcache ...` in this process (a subprocess would not see the toy head), with its exit code."""
    import contextlib
    import io

    from vidcache.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


# 1. a new head through the CLI ---------------------------------------------------------------------
def test_a_head_registered_from_a_test_module_trains_through_the_cli(blobs, tmp_path):
    run = tmp_path / "toy"
    code, out, err = run_cli_here(
        "train", "--cache", blobs, "--head", "toy", "--view", "clip", "--width", "5", "--squash", "relu",
        "--temperature", "0.5", "--epochs", "6", "--lr", "0.03", "--weight-decay", "0", "--out", run, "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["train_config"]["options"] == {"width": 5, "squash": "relu", "temperature": 0.5}
    assert recorded["train_config"]["head"] == "toy" and summary["head"] == "toy"
    # eval/predict rebuild the toy head from the saved options; the CLI's metrics are sklearn's/NumPy's
    frame = api.predict(run, blobs, split="test")
    wide = frame.pivot(index="video_id", columns="label", values="score")
    truth = np.array([CLASSES.index(blob_corpus()[v][1][0]) for v in wide.index])
    top1 = float(np.mean(wide[list(CLASSES)].to_numpy().argmax(axis=1) == truth))
    code, out, err = run_cli_here("eval", "--run", run, "--cache", blobs, "--json")
    assert code == 0, err
    assert json.loads(out)["top1"] == pytest.approx(top1, abs=1e-9) and top1 > 0.6
    # an option of another head is refused by name, not silently ignored
    code, _, err = run_cli_here(
        "train", "--cache", blobs, "--head", "toy", "--pool-mode", "max", "--out", tmp_path / "x"
    )
    assert code == 2 and "--pool-mode is not an option of --head toy (heads: pool)" in err
    code, _, err = run_cli_here("train", "--cache", blobs, "--head", "toy", "--width", "0", "--out", tmp_path / "y")
    assert code == 2 and "--width 0: must be >= 1" in err, err


# 2. one flag per field, every flag in the saved config ---------------------------------------------
def _other_value(field: dataclasses.Field, annotation):
    """A valid value that is not the field's default (so a flag that is lost shows)."""
    default = field.default
    if get_origin(annotation) in (Union, UnionType):  # X | None
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    choices = get_args(annotation) if get_origin(annotation) is Literal else ()
    if field.metadata.get("choices") is not None:
        choices = tuple(field.metadata["choices"]())
    if choices:
        return next(c for c in choices if c != default)
    if annotation is bool:
        return not default
    if annotation is int:
        return (default or 0) + 1
    if annotation is float:
        return default / 2 if default else 0.5
    return f"{default}x"


def _cli_text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def test_every_config_field_has_exactly_one_flag():
    ctx = train_command.make_context("train", ["--cache", ".", "--out", "x"])
    params = [p for p in train_command.get_params(ctx) if p.name not in ("help",)]
    dests = [p.name for p in params]
    assert len(dests) == len(set(dests))
    flags = [opt for p in params for opt in [*p.opts, *p.secondary_opts]]
    assert len(flags) == len(set(flags))
    common, heads = train_options()
    for f in dataclasses.fields(TrainConfig):
        wanted = 1 if f.metadata.get("cli", True) else 0  # cli=False: set by the program (options, split_sample)
        assert sum(o.field == f.name for o in common) == wanted, f.name
    for name in HEADS.names():  # generated from the registry: the toy head too
        options_class = HEADS.options_class(name)
        for f in dataclasses.fields(options_class):
            mine = [o for o in heads if o.owner is options_class and o.field == f.name]
            assert len(mine) == 1 and dests.count(mine[0].dest) == 1, (name, f.name)


@pytest.mark.parametrize("head", HEADS.names())
def test_every_flag_lands_in_the_saved_config(head):
    common, heads = train_options()
    options_class = HEADS.options_class(head)
    hints = get_type_hints(TrainConfig)
    args, expected = ["--cache", ".", "--out", "x", "--head", head], {"head": head}
    skip = {"head", "options", "view", "views"}
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        value = _other_value(f, hints[f.name])
        flag = next(o.flag for o in common if o.field == f.name)
        args += (
            [flag if value is not False else f"--no-{flag[2:]}"]
            if isinstance(value, bool)
            else [flag, _cli_text(value)]
        )
        expected[f.name] = value
    args += ["--views", "v1,v2"] if HEADS.get(head).multi_view else ["--view", "v1"]
    expected["view"] = "v1"
    own_hints = get_type_hints(options_class)
    expected_options = {}
    for f in dataclasses.fields(options_class):
        value = _other_value(f, own_hints[f.name])
        flag = next(o.flag for o in heads if o.owner is options_class and o.field == f.name)
        args += [flag if value else f"--no-{flag[2:]}"] if isinstance(value, bool) else [flag, _cli_text(value)]
        expected_options[f.name] = value
    ctx = train_command.make_context("train", args)
    values = {k: v for k, v in ctx.params.items() if k not in ("cache_dir", "run_dir", "resume", "sweep", "as_json")}
    with ctx:
        config, options = parse_train(ctx, values)
    saved = dataclasses.replace(config, options=options).saved()  # what RUN/config.json records
    for key, value in expected.items():
        resolved = isinstance(value, str) and saved[key] == str(Path(value).resolve())  # file fields: resolved
        assert saved[key] == value or resolved, (head, key)
    for key, value in expected_options.items():
        got = saved["options"][key]
        assert got == value or got == str(Path(value).resolve()), (head, key)  # file options recorded resolved
    assert set(saved["options"]) == set(expected_options)


# 3. old run directories ----------------------------------------------------------------------------
OLD_OPTIONS = {  # the shared option bag every run saved before heads owned their options (version 1)
    "hidden_dim": None, "dropout": 0.1, "frame_pooling": "mean", "solver": "lbfgs", "probe_c": None,
    "probe_refit": "train", "probe_blend": True, "prototype_update": "learned", "ema_momentum": 0.99,
    "temperature": 0.1, "contrastive": "infonce", "margin": 0.5, "lambda_con": 1.0, "lambda_cls": 1.0,
    "pool_mode": "learnable", "instance_lambda": 0.5, "layers": 2, "attention_heads": 4,
    "text_discriminator": False, "projection_dim": 128, "crop_fraction": 0.5, "ltcl": True, "ltcl_weight": 1.0,
}  # fmt: skip
OLD_TOP = {
    "hard_negatives": 0, "hard_negatives_from": "top", "hard_negatives_file": "hard_negatives",
    "cross_view_k": 0, "cross_view_from": "", "label_corpus": "", "text_embeddings": "",
}  # fmt: skip


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_runs_saved_with_the_old_option_bag_still_evaluate(blobs, tmp_path, head):
    config = TrainConfig(epochs=3, lr=1e-2, weight_decay=1e-4, seed=1)
    result = api.train(blobs, tmp_path / "run", head=head, config=config)
    before = api.evaluate(result.run_dir, blobs, split="test")
    path = result.run_dir / "config.json"
    resolved = json.loads(path.read_text())
    resolved.pop("config_version")
    old = {k: v for k, v in resolved["train_config"].items() if k != "options"}
    resolved["train_config"] = {
        **old,
        **OLD_TOP,
        "options": {**OLD_OPTIONS, "hidden_dim": 512 if head == "mlp" else None},
    }
    path.write_text(json.dumps(resolved))
    assert api.evaluate(result.run_dir, blobs, split="test") == before


# 4. the sweep --------------------------------------------------------------------------------------
def test_sweep_keeps_the_best_of_separately_trained_configs(blobs, tmp_path):
    config = TrainConfig(epochs=5, patience=5, batch_size=32, seed=3)
    result = api.train(blobs, tmp_path / "sweep", head="toy", config=config, sweep=True)
    with open(tmp_path / "sweep" / "sweep.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16 == len(result.sweep)  # 4 learning rates × 2 weight decays × 2 widths
    assert {(float(r["lr"]), float(r["weight_decay"]), int(r["option_value"])) for r in rows} == {
        (lr, wd, w) for lr in (1e-3, 3e-3, 1e-2, 3e-2) for wd in (1e-4, 1e-2) for w in (2, 6)
    }
    for row in rows:  # every config's own run directory and history
        assert (tmp_path / "sweep" / "sweep" / row["name"] / "history.csv").exists()
    # independent re-computation: each config trained on its own, in its own run directory
    separate = {}
    for row in rows:
        point = dataclasses.replace(config, lr=float(row["lr"]), weight_decay=float(row["weight_decay"]))
        options = HEADS.options("toy", width=int(row["option_value"]))
        alone = api.train(blobs, tmp_path / "alone" / row["name"], head="toy", options=options, config=point)
        separate[row["name"]] = alone.summary.best_value
        assert float(row["value"]) == pytest.approx(alone.summary.best_value, abs=1e-9), row["name"]
    best = max(separate, key=lambda name: separate[name])  # first of ties, in grid order
    assert len(set(separate.values())) > 1  # the configs differ: the choice means something
    chosen = [r["name"] for r in rows if r["chosen"] == "True"]
    assert chosen == [best] == [result.summary.sweep["chosen"]]
    # the kept run is a normal run directory with the winner's options; its val top-1 by NumPy
    recorded = json.loads((tmp_path / "sweep" / "config.json").read_text())
    winner = next(r for r in rows if r["name"] == best)
    assert recorded["train_config"]["options"]["width"] == int(winner["option_value"])
    assert recorded["train_config"]["lr"] == float(winner["lr"]) and recorded["sweep"]["chosen"] == best
    frame = api.predict(tmp_path / "sweep", blobs, split="val")
    wide = frame.pivot(index="video_id", columns="label", values="score")
    truth = np.array([CLASSES.index(blob_corpus()[v][1][0]) for v in wide.index])
    top1 = float(np.mean(wide[list(CLASSES)].to_numpy().argmax(axis=1) == truth))
    assert top1 == pytest.approx(separate[best], abs=1e-9)
    onehot = np.eye(len(CLASSES))[truth]
    ap = average_precision_score(onehot, wide[list(CLASSES)].to_numpy(), average="macro")
    assert api.evaluate(tmp_path / "sweep", blobs, split="val")["map_macro"] == pytest.approx(ap, abs=1e-6)


# 5. the Python API speaks in parameters -----------------------------------------------------------
def test_api_errors_name_the_parameter_and_the_allowed_values(blobs, tmp_path):
    with pytest.raises(ParamError, match=r"train\.head='nope': choose one of: .*linear.*toy"):
        api.train(blobs, tmp_path / "a", head="nope")
    with pytest.raises(ParamError, match=r"train\.options=.*head 'mlp' takes MlpOptions"):
        api.train(blobs, tmp_path / "b", head="mlp", options=HEADS.options("pool"))
    with pytest.raises(
        ParamError, match=r"PoolOptions\.pool_mode='sum': choose one of: learnable, mean, max, attention"
    ):
        HEADS.options("pool", pool_mode="sum")
    with pytest.raises(ParamError, match=r"LinearOptions\.hidden_dim=.*not an option of head 'linear'"):
        HEADS.options("linear", hidden_dim=3)
    with pytest.raises(ParamError, match=r"evaluate\.split='dev': choose one of: train, val, test"):
        api.evaluate(tmp_path, blobs, split="dev")  # type: ignore[arg-type]
    with pytest.raises(ParamError, match=r"TrainConfig\.batch_size=0: must be >= 1"):
        TrainConfig(batch_size=0)
    assert math.isclose(HEADS.options("toy").temperature, 1.0)
    assert torch.is_tensor(ToyHead(input_dim=DIM, num_classes=2, multi_label=False).out.weight)


@pytest.mark.parametrize("head", HEADS.names())
def test_every_heads_options_round_trip_through_the_saved_config(head):
    config = TrainConfig(head=head, options=HEADS.options(head))
    again = TrainConfig.from_saved(json.loads(json.dumps(config.saved())))
    assert again == config and type(again.options) is HEADS.options_class(head)


def test_mining_api_matches_numpy_and_the_cli_names_flags(blobs):
    from vidcache import Cache
    from vidcache.index import api as mining

    mined = mining.mine_neighbours(blobs, k=3, view="clip", write=False)
    assert mined.path is None
    with Cache(blobs) as cache:
        ids = sorted(cache.video_ids("clip"))
        vectors = np.stack([cache.read(v, "clip")[0].astype(np.float64).mean(axis=0) for v in ids])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)  # never itself
    expected = {ids[i]: [ids[j] for j in np.argsort(-scores[i], kind="stable")[:3]] for i in range(len(ids))}
    got = mined.frame.sort_values(["video_id", "rank"]).groupby("video_id")["neighbour_id"].apply(list).to_dict()
    assert got == expected
    with pytest.raises(ParamError, match=r"mine_neighbours\.k=0: must be >= 1"):
        mining.mine_neighbours(blobs, k=0, view="clip")
    with pytest.raises(ParamError, match=r"mine_neighbours\.index_type='kd': choose one of: auto, flat, hnsw"):
        mining.mine_neighbours(blobs, k=2, view="clip", index_type="kd")  # type: ignore[arg-type]
    code, _, err = run_cli_here("mine", "neighbours", "--cache", blobs, "--view", "clip", "--k", "0")
    assert code == 2 and "--k 0: must be >= 1" in err and "mine_neighbours" not in err, err
