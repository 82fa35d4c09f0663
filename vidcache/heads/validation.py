"""Is the val split big enough to choose anything on (an epoch, a learning rate, a regularisation
strength)? A choice made on one or two positives per class is noise: training says so, in the log and
in the run's summary, instead of silently keeping whatever scored first."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

MIN_POSITIVES = 2  # per class, in val


@dataclass
class ValCheck:
    usable: bool  # enough classes have MIN_POSITIVES positives for a choice on val to mean something
    warnings: list[str] = field(default_factory=list)


def check_val_split(
    targets: torch.Tensor, *, multi_label: bool, kind: str = "classify", vocabulary: list[str] | None = None
) -> ValCheck:
    """`targets` [N, C] multi-hot of the val videos. Usable when at least half the classes (and at
    least one) have MIN_POSITIVES positives; a warning names the classes below that."""
    videos, classes = targets.shape
    if kind == "embed":  # retrieval R@1: every val video is a query
        if videos < 2 * MIN_POSITIVES:
            return ValCheck(False, [f"val has {videos} video(s): too few to choose anything; the last epoch is kept"])
        return ValCheck(True)
    counts = targets.sum(dim=0)
    few = [i for i in range(classes) if counts[i] < MIN_POSITIVES]
    enough = classes - len(few)
    usable = enough >= max(1, (classes + 1) // 2)
    warnings = []
    if few:
        named = vocabulary[few[0]] if vocabulary else f"class {few[0]}"
        warnings.append(
            f"val has fewer than {MIN_POSITIVES} positives for {len(few)} of {classes} classes (e.g. {named!r}): "
            "choices made on val are noisy for them; add val videos"
        )
    if not usable:
        warnings.append(
            f"val is too small to choose anything ({enough} of {classes} classes have {MIN_POSITIVES}+ positives): "
            "defaults are kept (the last epoch; C = 1 for the solved linear probe)"
        )
    return ValCheck(usable, warnings)
