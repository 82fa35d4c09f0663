"""open_clip image (and text) towers for the `clip` view."""

from __future__ import annotations

import contextlib
import logging
from importlib import resources

import numpy as np
import torch

from ....device import autocast_dtype, to_device
from ....errors import ConfigError
from ...encoder import FrameEncoder
from ...preprocess import ImagePreprocess
from ...weights import ResolvedWeights, hf_offline, resolve_clip_weights, sha256_file, state_dict_sha256
from .files import check_clip_file
from .settings import ClipConfig

DEFAULT_TEMPLATES = ("a video of {}.", "This is a video about {}")
_registered_configs = False


def register_vidcache_configs() -> None:
    """Add vidcache's own architectures (the tiny test/demo model) to open_clip's config registry."""
    global _registered_configs
    if _registered_configs:
        return
    import open_clip

    open_clip.add_model_config(str(resources.files("vidcache") / "configs"))
    _registered_configs = True


def load_clip(config: ClipConfig, *, allow_download: bool = False):
    """Build the open_clip model for `config`; return (model, weights, weights_sha256, preprocess)."""
    import open_clip

    register_vidcache_configs()
    weights: ResolvedWeights = resolve_clip_weights(config.model, config.pretrained, allow_download=allow_download)
    if weights.kind == "file":  # another architecture's file (or a head's) fails here in one line, not in open_clip
        check_clip_file(weights.path or "", config.model)
    with hf_offline(not allow_download):
        if weights.kind == "hf-hub":
            model = open_clip.create_model(config.model, weights_only=True)
        else:
            force_pp = {
                k: weights.tag_cfg[k]
                for k in ("mean", "std", "interpolation", "resize_mode")
                if weights.tag_cfg.get(k) is not None
            }
            if weights.kind == "random":
                torch.manual_seed(config.seed)
            quiet = logging.getLogger()
            level = quiet.level
            if weights.kind == "random":  # open_clip warns about random init; vidcache records it instead
                quiet.setLevel(logging.ERROR)
            try:
                model = open_clip.create_model(
                    config.model,
                    pretrained=weights.path,
                    weights_only=True,
                    force_quick_gelu=bool(weights.tag_cfg.get("quick_gelu", False)),
                    force_preprocess_cfg=force_pp or None,
                )
            except (RuntimeError, AssertionError, KeyError, ValueError) as exc:
                if weights.kind != "file":
                    raise
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                raise ConfigError(
                    f"--clip-pretrained {weights.path} does not load into --clip-model {config.model} "
                    f"({type(exc).__name__}: {first}); give the --clip-model it was made for"
                ) from None
            finally:
                quiet.setLevel(level)
    model.eval()
    weights_sha256 = state_dict_sha256(model) if weights.path is None else sha256_file(weights.path)
    preprocess = ImagePreprocess.from_open_clip(open_clip.get_model_preprocess_cfg(model))
    return model, weights, weights_sha256, preprocess


class ClipEncoder(FrameEncoder):
    view = "clip"

    def __init__(
        self, *, config: ClipConfig, device: torch.device, dtype: str = "float16", allow_download: bool = False
    ):
        self.config = config
        self.device = device
        self.allow_download = allow_download
        self.model, self.weights, self.weights_sha256, self.preprocess = load_clip(
            config, allow_download=allow_download
        )
        self.model.to(device)
        # --clip-precision: autocast (the default: bf16/fp16 autocast on CUDA, fp32 on CPU), the whole tower
        # in bf16 (bf16-weights), or fp32 everywhere
        self.amp_dtype = autocast_dtype(device) if config.precision == "autocast" else None
        self.input_dtype = torch.bfloat16 if config.precision == "bf16-weights" else torch.float32
        if config.precision == "bf16-weights":
            self.model.to(torch.bfloat16)
        self.image_tower = torch.compile(self.model.encode_image) if config.compile else self.model.encode_image
        self.feature_dim = int(self.model.visual.output_dim)
        self.store_dtype = dtype

    @property
    def random_weights(self) -> bool:
        return self.weights.kind == "random"

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        return self.preprocess.resize_crop(rgb)

    @property
    def process_prepare(self):
        """`prepare` without the model, for decode processes (picklable)."""
        return self.preprocess.resize_crop

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> np.ndarray:
        pixels = self.preprocess.normalize(to_device(batch, self.device)).to(self.input_dtype)
        with self._autocast():
            features = self.image_tower(pixels)
        return features.float().cpu().numpy()

    @torch.inference_mode()
    def encode_text(self, texts: list[str], *, batch_size: int = 256) -> np.ndarray:
        import open_clip

        with hf_offline(not self.allow_download):  # an hf-hub model's tokenizer is in the hub cache too
            tokenizer = open_clip.get_tokenizer(self.config.model)
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = to_device(tokenizer(texts[start : start + batch_size]), self.device)
            with self._autocast():
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim), np.float32)

    def identity(self) -> dict:
        return {
            "backbone": "open_clip",
            "model": self.config.model,
            "pretrained": self.config.pretrained,
            "weights_kind": self.weights.kind,
            "weights_path": self.weights.path or "",
            "weights_sha256": self.weights_sha256,
            "random_init_seed": self.config.seed if self.random_weights else None,
            "preprocess": self.preprocess.as_dict(),
            "dtype": self.store_dtype,
            "normalized": False,
            "feature_dim": self.feature_dim,
            # recorded when not the default, so the identities of caches made before the options stay as they were
            **({"precision": self.config.precision} if self.config.precision != "autocast" else {}),
            **({"compile": True} if self.config.compile else {}),
            # only for fine-tuned exports, so the identities of every other view stay as they were
            **({"fine_tuned": self.weights.provenance} if self.weights.provenance else {}),
        }


def clip_for_identity(identity: dict, *, device, allow_download: bool = False, cache_dir: object = ""):
    """The CLIP encoder (text tower included) that made a view, from the view's recorded identity:
    the same architecture and weights file (or random-init seed); other weights are refused."""
    from ....errors import CacheError

    pretrained = identity.get("weights_path") or identity["pretrained"]
    encoder = ClipEncoder(
        config=ClipConfig(
            model=identity["model"],
            pretrained=pretrained,
            seed=identity.get("random_init_seed") or 0,
            precision=identity.get("precision", "autocast"),  # the text tower in the arithmetic of the rows
        ),
        device=device,
        allow_download=allow_download,
    )
    if identity.get("weights_sha256") and encoder.weights_sha256 != identity["weights_sha256"]:
        raise CacheError(f"weights {pretrained} differ from those that made cache {cache_dir} (sha256 mismatch)")
    return encoder
