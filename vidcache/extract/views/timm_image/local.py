"""`vidcache models` for the timm view: timm repos in the Hugging Face hub cache."""

from __future__ import annotations

from ...local_weights import WeightsEntry, _size, hub_repos
from ...weights import hf_cached


def timm_weights(default: str) -> list[WeightsEntry]:
    """timm models whose weights are in the HF cache (repos `timm/...`), and the view's default model `default`."""
    out, seen = [], set()
    for repo_id, names in sorted(hub_repos().items()):
        if repo_id.startswith("timm/") and {"model.safetensors", "pytorch_model.bin"} & names:
            model = repo_id.split("/", 1)[1]
            file = hf_cached(repo_id, ("model.safetensors", "pytorch_model.bin")) or ""
            out.append(WeightsEntry("timm", model, "default", bool(file), file, f"hf-hub {repo_id}", _size(file),
                                    f"--views timm --timm-model {model}"))  # fmt: skip
            seen.add(model)
    if default not in seen:
        out.append(WeightsEntry("timm", default, "default", False, "", f"hf-hub timm/{default}", 0,
                                f"--views timm --timm-model {default}"))  # fmt: skip
    return out
