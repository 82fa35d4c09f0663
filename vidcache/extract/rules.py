"""What each extracted view's rows are a function of besides its model: the source rules recorded
in the view identity (fidelity version, stream choice, colour conversion, resize chain, downmix)."""

from __future__ import annotations

from ..cache.fidelity import FIDELITY_VERSION
from ..config import ExtractConfig


def source_rules(view: str, config: ExtractConfig) -> dict:
    """The identity keys every extracted view records about how its source was read."""
    return {"fidelity": FIDELITY_VERSION}
