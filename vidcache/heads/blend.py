"""A solved linear branch for the `prototype` and `mlp` heads (seed 000/001: "classifier: s_c =
cos(e_v, p_c) (scaled) or a linear layer"): after the epochs, a linear layer on the pooled frames is
*solved* (the `linear` head's probe, `heads/solved.py`), and the head's logits become

    logits = (1 − β)·head_logits + β·(w_c·x̄_v + a_c)      (prototype: head_logits = s·cos(e_v, p_c) + b_c)

with β chosen on val from {0, 0.1, …, 1} (ties go to the smaller β: the head itself). β = 1 is the
linear probe itself, so at its defaults the head never scores below the probe on val; when the
prototypes (or the MLP's non-linearity) help, the blend keeps them. The probe used to choose β is
solved on train only (val must be held out for the choice); with `--probe-refit train+val` it is
then solved again at the same C on train+val, as the `linear` head does. `--no-probe-blend` keeps the head alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..fields import setting
from .base import Head
from .data import SplitSource
from .solved import SolvedProbeOptions, selection_score, solve_probe

BLEND_GRID = tuple(i / 10 for i in range(11))


@dataclass(frozen=True)
class BlendOptions(SolvedProbeOptions):
    """Options of a head that blends a solved linear branch into its logits (`mlp`, `prototype`)."""

    probe_blend: bool = setting(
        True, help="Blend with a solved linear probe, its weight chosen on val (0: the head alone)."
    )


def add_probe_branch(head: Head) -> None:
    """`head.probe` (a linear layer on the pooled frames, solved after the epochs, not trained) and
    `head.probe_mix` (β, 0 while the head trains)."""
    head.probe = nn.Linear(head.input_dim, head.num_classes).requires_grad_(False)
    nn.init.zeros_(head.probe.weight)
    nn.init.zeros_(head.probe.bias)
    head.register_buffer("probe_mix", torch.tensor(0.0))


def mix_logits(head: Head, logits: torch.Tensor, pooled: torch.Tensor, extras: dict) -> torch.Tensor:
    """(1 − β)·logits + β·probe(pooled); both branches go into `extras` for choosing β."""
    probe_logits = head.probe(pooled.to(head.probe.weight.dtype))  # type: ignore[operator,union-attr]
    extras.update(head_logits=logits, probe_logits=probe_logits)
    return (1 - head.probe_mix) * logits + head.probe_mix * probe_logits  # type: ignore[operator]


@torch.no_grad()
def _branch_logits(model: Head, source: SplitSource, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    prototype, probe = [], []
    order = []
    for batch in source.batches(1024, shuffle=False):
        out = model.forward_batch(batch.to(device))
        prototype.append(out.extras["head_logits"].float().cpu())
        probe.append(out.extras["probe_logits"].float().cpu())
        order.append(batch.rows)
    rows = torch.cat(order).argsort()
    return torch.cat(prototype)[rows].numpy(), torch.cat(probe)[rows].numpy()


def _scores(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    tensor = torch.from_numpy(logits)
    return (torch.sigmoid(tensor) if multi_label else torch.softmax(tensor, dim=1)).numpy()


def blend_probe(
    model: Head,
    train_source: SplitSource,
    val_source: SplitSource,
    *,
    device: torch.device,
    multi_label: bool,
    metric: str,
    select_on_val: bool,
    memo: dict | None = None,
) -> dict:
    """Solve `model.probe`, choose β (`model.probe_mix`) on val; returns what goes into the report.

    The probe depends on the data and the probe's own options only, not on the head's training, so a
    sweep passes one `memo` for all its configs and the probe is solved once per distinct setting
    (16 lr × weight-decay configs of `mlp` share one solve instead of repeating it 16 times)."""

    def solve(refit: str, c: float | None = None) -> dict:
        key = (
            type(model).__name__,
            getattr(model.options, "frame_pooling", "mean"),
            model.options.probe_c,
            metric,
            select_on_val,
            multi_label,
            refit,
            c,
        )
        layer: nn.Linear = model.probe  # type: ignore[assignment]
        if memo is not None and key in memo:
            weight, bias, report = memo[key]
            with torch.no_grad():
                layer.weight.copy_(weight)
                layer.bias.copy_(bias)
            return report
        solved = solve_probe(
            model,
            train_source,
            val_source,
            device=device,
            multi_label=multi_label,
            metric=metric,
            select_on_val=select_on_val,
            layer=layer,
            pool=model.probe_pool,  # type: ignore[arg-type]
            refit=refit,
            c=c,
        )
        if memo is not None:
            memo[key] = (layer.weight.detach().clone(), layer.bias.detach().clone(), solved.report)
        return solved.report

    solved_report = solve("train")
    model.probe_mix.fill_(0.0)  # type: ignore[operator]
    prototype, probe = _branch_logits(model, val_source, device)
    score = selection_score(metric, multi_label=multi_label)
    targets = val_source.targets.numpy()
    values = [score(targets, _scores((1 - b) * prototype + b * probe, multi_label)) for b in BLEND_GRID]
    beta = BLEND_GRID[int(np.argmax(values))] if select_on_val else 0.5
    c = solved_report["c"]
    if beta > 0 and model.options.probe_refit == "train+val":
        solve("train+val", c)
    model.probe_mix.fill_(beta)  # type: ignore[operator]
    return {
        "probe_mix": beta,
        "probe_c": c,
        "blend_val": {f"{b:.1f}": round(v, 6) for b, v in zip(BLEND_GRID, values, strict=True)},
    }
