"""The `timm` view: any image model of timm (DINOv2, SigLIP, ConvNeXt, ...) on the sampled frames, one
row per sample time (the model's pooled features, `num_classes=0`), with timm's own eval preprocessing
(`resolve_model_data_config`: resize to size / crop_pct, centre crop, its mean and std).

Everything about the view is in this file: settings, encoder and registration."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ....fields import check, setting
from ..base import SampledFramesView, ViewContext, register_view


@dataclass(frozen=True)
class TimmConfig:
    """A timm image model and its weights."""

    model: str = setting("vit_small_patch14_dinov2.lvd142m", help="timm model name (timm.list_models()).")
    pretrained: str = setting(
        "default",
        help="'default' (timm's pretrained weights, from the Hugging Face cache; --download fetches them), "
        "a local weights file (.safetensors or a PyTorch state dict), or 'none' for random weights.",
    )
    image_size: int | None = setting(
        None, help="Input size (px) for models that take one (ViTs); default: the model's."
    )
    seed: int = setting(0, help="Seed of the random weights with --timm-pretrained none (recorded).")

    def __post_init__(self) -> None:
        check(self, "model", bool(self.model), "must not be empty")
        check(self, "pretrained", bool(self.pretrained), "must not be empty; use 'none' for random weights")
        check(self, "image_size", self.image_size is None or self.image_size >= 16, "must be >= 16")


def check_timm_weights_cached(model: str) -> None:
    """Raise MissingWeightsError (one line, at once) unless timm's pretrained weights for `model` are
    on local disk where timm will look: the Hugging Face cache (hub weights) or the torch hub cache."""
    import timm
    import torch

    from ....errors import ConfigError, MissingWeightsError
    from ...weights import hf_cache_dir, hf_cached

    try:
        cfg = timm.models.get_pretrained_cfg(model)
    except RuntimeError:
        cfg = None
    if cfg is None:  # an architecture without pretrained weights, or no model of that name at all
        if model.split(".")[0] not in timm.list_models():
            raise ConfigError(f"--timm-model {model!r}: unknown to timm; see timm.list_models()")
        raise MissingWeightsError(f"timm has no pretrained weights for {model}; use --timm-pretrained none or FILE")
    if cfg.hf_hub_id:
        name = cfg.hf_hub_filename or "pytorch_model.bin"  # timm tries the .safetensors twin first, as here
        names = (name.rsplit(".", 1)[0] + ".safetensors", name) if name.endswith((".bin", ".pth")) else (name,)
        if hf_cached(cfg.hf_hub_id, names) is None:
            raise MissingWeightsError(
                f"timm weights for {model} are not in the local Hugging Face cache ({hf_cache_dir()}); fetch them "
                f"with `hf download {cfg.hf_hub_id.partition('@')[0]}` where there is internet, add --download, "
                "or pass a weights file as --timm-pretrained"
            )
    elif cfg.url and not (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)).is_file():
        raise MissingWeightsError(
            f"timm weights for {model} are not in the torch hub cache ({torch.hub.get_dir()}/checkpoints); download "
            f"{cfg.url} there where there is internet, add --download, or pass a weights file as --timm-pretrained"
        )


class TimmEncoder:
    """timm model → pooled features of uint8 frames; `prepare` (resize + crop) runs in decode workers."""

    def __init__(self, *, config: TimmConfig, device: Any, dtype: str, allow_download: bool = False) -> None:
        import timm
        import torch

        from ....device import autocast_dtype
        from ....errors import ConfigError, MissingWeightsError
        from ...preprocess import ImagePreprocess, PixelScratch
        from ...weights import hf_offline, load_state_dict_file, sha256_file, state_dict_sha256

        self.view, self.config, self.device, self.store_dtype = "timm", config, device, dtype
        kwargs = {"num_classes": 0}
        if config.image_size is not None:
            kwargs["img_size"] = config.image_size
        kind, path = "random", ""
        try:
            if config.pretrained == "none":
                torch.manual_seed(config.seed)
                model = timm.create_model(config.model, pretrained=False, **kwargs)
            elif config.pretrained == "default":
                kind = "tag"
                if not allow_download:  # a local lookup first: the load below must not need the network
                    check_timm_weights_cached(config.model)
                try:
                    with hf_offline(not allow_download):
                        model = timm.create_model(config.model, pretrained=True, **kwargs)
                except Exception as exc:
                    raise MissingWeightsError(
                        f"timm weights for {config.model} could not be loaded ({type(exc).__name__}: "
                        f"{(str(exc).strip().splitlines() or [''])[0][:200]}); run once with --download where the "
                        "hub is reachable, or pass a weights file as --timm-pretrained"
                    ) from None
            else:
                kind, path = "file", os.path.abspath(config.pretrained)
                if not os.path.isfile(path):
                    raise MissingWeightsError(
                        f"--timm-pretrained {config.pretrained}: no such file; give a weights file"
                    )
                model = timm.create_model(config.model, pretrained=False, **kwargs)
                state = load_state_dict_file(path)
                state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc.", "classifier."))}
                try:
                    missing, _ = model.load_state_dict(state, strict=False)
                except RuntimeError as error:  # same names, other shapes: another model's weights
                    first = (str(error).strip().splitlines() or [""])[-1].strip()[:200]
                    raise ConfigError(
                        f"--timm-pretrained {path}: not weights of {config.model} ({first}); give --timm-model "
                        "the model they were made for"
                    ) from None
                if missing:
                    raise ConfigError(
                        f"--timm-pretrained {path}: weights lack {len(missing)} tensors of {config.model}"
                    )
        except RuntimeError as exc:
            if "Unknown model" in str(exc) or "Invalid model" in str(exc):
                raise ConfigError(f"--timm-model {config.model!r}: unknown to timm; see timm.list_models()") from None
            raise
        self.model = model.eval().to(device)
        self.weights_kind, self.weights_path = kind, path
        self.weights_sha256 = sha256_file(path) if path else state_dict_sha256(model)
        data = dict(timm.data.resolve_model_data_config(model))
        if config.image_size is not None:  # the pretrained config names the size the weights were made at
            data["input_size"] = (3, config.image_size, config.image_size)
        side = int(data["input_size"][-1])
        self.preprocess = ImagePreprocess(
            size=(int(data["input_size"][-2]), side),
            mean=tuple(float(x) for x in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in data["std"]),  # type: ignore[arg-type]
            interpolation=data.get("interpolation", "bicubic"),
            crop_pct=float(data.get("crop_pct", 1.0)) if data.get("crop_mode", "center") == "center" else 1.0,
        )
        # the resize before the crop: the decode pass may pre-shrink frames down to it, never below
        self.max_short_side = int(min(self.preprocess.size) / self.preprocess.crop_pct)
        self._scratch = PixelScratch()
        self.feature_dim = int(model.num_features)
        self.amp_dtype = autocast_dtype(device)

    @property
    def random_weights(self) -> bool:
        return self.weights_kind == "random"

    def prepare(self, rgb):
        return self.preprocess.resize_crop(rgb)

    @property
    def process_prepare(self):
        """`prepare` without the model, for decode processes (picklable)."""
        return self.preprocess.resize_crop

    def encode(self, batch):
        import torch

        from ....device import to_device

        with torch.inference_mode():
            pixels = self.preprocess.normalize(to_device(batch, self.device), scratch=self._scratch)
            autocast = (
                torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
                if self.amp_dtype is not None
                else contextlib.nullcontext()
            )
            with autocast:
                features = self.model(pixels)
            return features.float().cpu().numpy()

    def identity(self) -> dict:
        import timm

        return {
            "backbone": "timm",
            "timm_version": timm.__version__,
            "model": self.config.model,
            "pretrained": self.config.pretrained,
            "image_size": self.config.image_size,
            "weights_kind": self.weights_kind,
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "random_init_seed": self.config.seed if self.random_weights else None,
            "preprocess": self.preprocess.as_dict(),
            "dtype": self.store_dtype,
            "normalized": False,
            "feature_dim": self.feature_dim,
        }


@register_view("timm")
class TimmView(SampledFramesView):
    settings = TimmConfig

    @classmethod
    def tiny_settings(cls) -> Any:
        return TimmConfig(model="vit_tiny_patch16_224", pretrained="none", image_size=32)

    def load_model(self, settings: TimmConfig, ctx: ViewContext) -> Any:
        return TimmEncoder(config=settings, device=ctx.device, dtype=ctx.dtype, allow_download=ctx.allow_download)

    def weights_files(self, settings: TimmConfig) -> tuple[str | None, ...]:
        return (settings.pretrained,)

    def local_weights(self, *, every_tag: bool = False) -> list | None:
        from .local import timm_weights

        return timm_weights(TimmConfig().model)
