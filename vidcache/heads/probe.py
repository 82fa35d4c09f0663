"""A solved linear probe: L2-regularised logistic regression on pooled, standardised features, solved
to convergence with full-batch L-BFGS in torch (on the GPU when the data is there), its strength
chosen on val from a log-spaced sweep of C (the linear-probe protocol of the CLIP paper).

The objective is scikit-learn's, divided by C·n so the gradient tolerance does not depend on n:

    multi-label (one-vs-rest sigmoid):  (1/n) Σ_i Σ_c BCE(x_i·w_c + b_c, y_ic) + (1/(2Cn)) ||W||²
    single-label (softmax):             (1/n) Σ_i CE(x_i W + b, y_i)          + (1/(2Cn)) ||W||²

with the intercepts unpenalised, so `C` means what it means in `LogisticRegression(C=...)`.
The sweep runs from the strongest regularisation to the weakest, each solve warm-started from the
previous one (the regularisation path), and stops early once val has been worse than its best for
`patience` grid points in a row."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

DEFAULT_C_GRID: tuple[float, ...] = tuple(float(10 ** (e / 2)) for e in range(-12, 9))  # 1e-6 … 1e4, ½ decades


@dataclass
class Standardiser:
    """Per-feature mean and scale measured on train (a constant feature keeps scale 1)."""

    mean: torch.Tensor  # [D]
    scale: torch.Tensor  # [D]

    @classmethod
    def fit(cls, x: torch.Tensor, *, block_rows: int = 65_536) -> Standardiser:
        """Two passes over blocks of rows, sums in float64: no temporary the size of `x` (600k x 512
        float32 train videos at 1M are 1.2 GB; `x.std` made another)."""
        total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        for block in x.split(block_rows):
            total += block.sum(dim=0, dtype=torch.float64)
        mean = total / max(len(x), 1)
        squares = torch.zeros_like(total)
        for block in x.split(block_rows):
            squares += (block.to(torch.float64) - mean).pow_(2).sum(dim=0)
        scale = (squares / max(len(x), 1)).sqrt_()
        scale = torch.where(scale > 1e-8 * scale.max().clamp(min=1e-30), scale, torch.ones_like(scale))
        return cls(mean.to(x.dtype), scale.to(x.dtype))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    def apply_(self, x: torch.Tensor) -> torch.Tensor:
        """`self(x)` written into `x` (no second copy of a million pooled vectors); returns `x`."""
        return x.sub_(self.mean).div_(self.scale)

    def fold(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (weight [D, C], bias [C]) that give on raw features what (weight, bias) give on standardised ones."""
        folded = weight / self.scale.to(weight.dtype).unsqueeze(1)
        return folded, bias - self.mean.to(weight.dtype) @ folded


@dataclass
class Solution:
    weight: torch.Tensor  # [D, C] float64
    bias: torch.Tensor  # [C] float64
    loss: float  # the objective at the solution
    iterations: int
    converged: bool


def _targets(y: torch.Tensor, multi_label: bool) -> torch.Tensor:
    return y if multi_label else y.argmax(dim=1)


def data_loss(logits: torch.Tensor, target: torch.Tensor, *, multi_label: bool) -> torch.Tensor:
    """Mean over videos of the summed per-class BCE (multi-label) or the softmax CE (single-label)."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]
    return F.cross_entropy(logits, target)


def initial_bias(y: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """The intercepts of the model without features: log-odds (multi-label) or log-priors (single-label)."""
    prior = y.to(torch.float64).mean(dim=0).clamp(1e-4, 1 - 1e-4)
    return torch.log(prior) - (torch.log1p(-prior) if multi_label else 0)


def solve_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    multi_label: bool,
    c: float,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 1000,
    tolerance: float = 1e-5,
) -> Solution:
    """Minimise the objective above for one C with L-BFGS (strong Wolfe line search) until the largest
    gradient entry is below `tolerance` (scikit-learn's lbfgs stops at 1e-4 on the same scale)."""
    if c <= 0:
        raise ConfigError(f"--probe-c must be > 0, got {c}")
    n, dim = x.shape
    target = _targets(y, multi_label)
    l2 = 1.0 / (c * n)
    # parameters and the loss's reductions in float64 (in float32 the line search stalls once the
    # loss changes fall below its resolution); the big matmuls stay in the features' dtype
    if init is None:
        weight = torch.zeros(dim, y.shape[1], dtype=torch.float64, device=x.device)
        bias = initial_bias(y, multi_label)
    else:
        weight, bias = init
    weight = weight.detach().to(torch.float64).clone().requires_grad_(True)
    bias = bias.detach().to(torch.float64).clone().requires_grad_(True)
    target = target.to(torch.float64) if multi_label else target
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 2,
        tolerance_grad=tolerance,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=False)
        logits = (x @ weight.to(x.dtype)).to(torch.float64) + bias
        loss = data_loss(logits, target, multi_label=multi_label) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    loss = float(closure().detach())
    with torch.no_grad():
        gradient = max(float(weight.grad.abs().max()), float(bias.grad.abs().max()))
    iterations = int(optimizer.state[optimizer._params[0]].get("n_iter", 0))
    return Solution(weight.detach(), bias.detach(), loss, iterations, gradient <= tolerance * 10)


def linear_logits(solution: Solution, x: torch.Tensor) -> torch.Tensor:
    """x W + b in float64 (the matmul in the features' dtype)."""
    return (x @ solution.weight.to(x.dtype)).to(torch.float64) + solution.bias


@dataclass
class SweepPoint:
    c: float
    value: float  # the val metric
    val_loss: float
    train_loss: float
    iterations: int
    converged: bool
    seconds: float


@dataclass
class Sweep:
    points: list[SweepPoint] = field(default_factory=list)
    best: int = 0  # index into points
    solution: Solution | None = None  # at the best point

    @property
    def best_c(self) -> float:
        return self.points[self.best].c


def sweep_c(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    multi_label: bool,
    score: Callable[[np.ndarray, np.ndarray], float],
    grid: tuple[float, ...] = DEFAULT_C_GRID,
    patience: int = 3,
    tolerance: float = 1e-5,
    max_iter: int = 1000,
) -> Sweep:
    """Solve along `grid` (sorted, strongest regularisation first, warm-started) and keep the C with
    the best `score(val_targets, val_scores)`; ties go to the lower val loss. Stops after `patience`
    points in a row below the best."""
    if not grid or any(c <= 0 for c in grid):
        raise ConfigError(f"the C grid must be positive numbers, got {list(grid)}")
    sweep = Sweep()
    val_target = _targets(y_val.to(torch.float64), multi_label)
    val_truth = y_val.cpu().numpy()
    init = None
    worse = 0
    best_key = (-math.inf, -math.inf)
    for c in sorted(grid):
        started = time.perf_counter()
        solution = solve_logistic(
            x_train, y_train, multi_label=multi_label, c=c, init=init, tolerance=tolerance, max_iter=max_iter
        )
        init = (solution.weight, solution.bias)
        with torch.no_grad():
            logits = linear_logits(solution, x_val)
            val_loss = float(data_loss(logits, val_target, multi_label=multi_label))
            scores = (torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)).cpu().numpy()
        value = float(score(val_truth, scores))
        sweep.points.append(
            SweepPoint(
                c,
                value,
                val_loss,
                solution.loss,
                solution.iterations,
                solution.converged,
                time.perf_counter() - started,
            )
        )
        key = (round(value, 12) if math.isfinite(value) else -math.inf, -val_loss)
        if sweep.solution is None or key > best_key:
            best_key, sweep.best, sweep.solution, worse = key, len(sweep.points) - 1, solution, 0
        else:
            worse += 1
            if worse >= patience:
                break
    return sweep
