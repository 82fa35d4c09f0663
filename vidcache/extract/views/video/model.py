"""A transformers video encoder for the `video` view: load (offline unless --download), the family's own
processor split in two exact halves, clips → pooled rows, and X-CLIP's text tower.

The processor runs as it would on a whole clip, split where it is exact to split: resize + centre crop
per frame in the decode workers (`FramePrepare`: uint8 out, as the processor's own resize gives), then
rescale + normalise per batch of clips (`do_resize=False, do_center_crop=False`). Both are the
processor's own code and settings, so a row equals the family's processor + model on the same frames."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any

import numpy as np
import torch

from ....device import autocast_dtype, to_device
from ....errors import ConfigError, MissingWeightsError
from ...weights import hf_offline, sha256_file, state_dict_sha256
from .families import FAMILIES, Family, family_of, tiny_family
from .settings import VideoConfig

WEIGHT_SUFFIXES = (".safetensors", ".bin")


class FramePrepare:
    """Resize + centre crop of one RGB frame by the processor (its first half); picklable, no model."""

    def __init__(self, processor: Any, *, video: bool, key: str) -> None:
        self.processor, self.video, self.key = processor, video, key

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        frame = np.ascontiguousarray(rgb)
        kwargs = {"do_rescale": False, "do_normalize": False, "return_tensors": "pt"}
        if self.video:
            return self.processor(videos=[frame[None]], **kwargs)[self.key][0, 0]
        return self.processor(images=[frame], **kwargs)["pixel_values"][0]


def tiny_tokenizer() -> Any:
    """A CLIP tokenizer with a byte-level vocabulary and no merges (a vidcache-tiny X-CLIP's text)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])


def _tiny(family: Family, seed: int) -> tuple[Any, Any]:
    """A random tiny model of `family` and its processor (inputs 32 px, 4 frames)."""
    import transformers

    config = transformers.AutoConfig.for_model(family.model_type, **family.tiny_config)
    torch.manual_seed(seed)
    model = getattr(transformers, family.model_class)(config, **family.model_kwargs)
    sizes = {"size": {"shortest_edge": 36}, "crop_size": {"height": 32, "width": 32}}
    if family.model_type == "vjepa2":
        processor = transformers.VJEPA2VideoProcessor(crop_size=32)
    elif family.text_tower:
        processor = transformers.XCLIPProcessor(
            image_processor=transformers.CLIPImageProcessor(**sizes), tokenizer=tiny_tokenizer()
        )
    else:
        processor = getattr(transformers, family.processor_class)(**sizes)
    return model, processor


def _weights_folder(model: str, allow_download: bool) -> str:
    """The folder holding `model`'s files: itself, or its snapshot in the Hugging Face cache."""
    if os.path.isdir(model):
        return model
    from huggingface_hub import snapshot_download

    return snapshot_download(model, local_files_only=not allow_download)


def weights_sha256(folder: str) -> tuple[list[str], str]:
    """(weight files, sha256 over their sha256s): safetensors when any, else PyTorch .bin files."""
    names = sorted(os.listdir(folder))
    files = [n for n in names if n.endswith(".safetensors")] or [n for n in names if n.endswith(".bin")]
    digest = hashlib.sha256()
    for name in files:
        digest.update(f"{name}:{sha256_file(os.path.join(folder, name))}\n".encode())
    return files, digest.hexdigest()


def _load_pretrained(model: str, allow_download: bool) -> tuple[Family, Any, Any, Any]:
    """(family, model, processor, tokenizer or None) of a folder or hub id; never the network offline."""
    import transformers

    local = not allow_download
    from huggingface_hub.constants import HF_HUB_CACHE as where

    try:
        config = transformers.AutoConfig.from_pretrained(model, local_files_only=local)
    except (OSError, ValueError) as exc:
        if os.path.isdir(model):
            raise ConfigError(
                f"--video-model {model}: not a transformers model folder ({type(exc).__name__})"
            ) from None
        raise MissingWeightsError(
            f"--video-model {model}: not in the offline Hugging Face cache ({where}); run once with "
            "--download where the hub is reachable, or pass a folder saved with save_pretrained"
        ) from None
    family = family_of(config.model_type, model=model)
    net = getattr(transformers, family.model_class).from_pretrained(
        model, local_files_only=local, **family.model_kwargs
    )
    tokenizer = None
    try:
        processor = transformers.AutoVideoProcessor.from_pretrained(model, local_files_only=local)
    except (OSError, ValueError):  # X-CLIP: an image processor takes the frames, a tokenizer the text
        processor = transformers.AutoProcessor.from_pretrained(model, local_files_only=local)
    if family.text_tower:
        tokenizer = getattr(processor, "tokenizer", None) or transformers.AutoTokenizer.from_pretrained(
            model, local_files_only=local
        )
    return family, net, processor, tokenizer


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _nested(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


class HfVideoEncoder:
    """transformers video model → one pooled row per clip of `frames_per_clip` frames."""

    view = "video"

    def __init__(self, *, config: VideoConfig, device: Any, dtype: str = "float16", allow_download: bool = False):
        import transformers

        transformers.utils.logging.disable_progress_bar()  # load progress bars on every run say nothing
        self.config, self.device, self.store_dtype = config, device, dtype
        family = tiny_family(config.model)
        with hf_offline(not allow_download):
            if family is not None:
                model, processor = _tiny(family, config.seed)
                tokenizer = getattr(processor, "tokenizer", None)
                self.weights_kind, self.weights_files = "random", []
                self.weights_sha256 = state_dict_sha256(model)
            else:
                family, model, processor, tokenizer = _load_pretrained(config.model, allow_download)
                folder = _weights_folder(config.model, allow_download)
                self.weights_kind = "folder" if os.path.isdir(config.model) else "hub"
                self.weights_files, self.weights_sha256 = weights_sha256(folder)
        self.family, self.tokenizer = family, tokenizer
        self.model = model.eval().to(device)
        self.frame_processor = getattr(processor, "video_processor", None) or getattr(
            processor, "image_processor", None
        )
        self.frame_processor = self.frame_processor or processor
        self.is_video_processor = isinstance(self.frame_processor, transformers.BaseVideoProcessor)
        self.process_prepare = FramePrepare(self.frame_processor, video=self.is_video_processor, key=family.input_key)
        self.frames_per_clip = int(_nested(model.config, family.frames_attr))
        self.fps = config.fps or family.default_fps
        self.stride = config.stride or self.frames_per_clip
        size = getattr(self.frame_processor, "size", None) or {}
        crop = getattr(self.frame_processor, "crop_size", None) or {}
        self.max_short_side = size.get("shortest_edge") or crop.get("height")  # the resize the processor does
        self.amp_dtype = autocast_dtype(device)
        projection = getattr(model.config, "projection_dim", None) if family.pooling == "projection" else None
        self.feature_dim = int(projection or model.config.hidden_size)

    @property
    def random_weights(self) -> bool:
        return self.weights_kind == "random"

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        return self.process_prepare(rgb)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def normalize(self, clips: torch.Tensor) -> torch.Tensor:
        """[N, T, C, H, W] resized and cropped frames → the model's pixel input (the processor's second half)."""
        kwargs = {"do_resize": False, "do_center_crop": False, "return_tensors": "pt"}
        if self.is_video_processor:
            return self.frame_processor(videos=list(clips), **kwargs)[self.family.input_key]
        flat = self.frame_processor(images=list(clips.flatten(0, 1)), **kwargs)["pixel_values"]
        return flat.view(*clips.shape[:2], *flat.shape[1:])

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = to_device(pixels, torch.device(self.device) if isinstance(self.device, str) else self.device)
        pooling = self.family.pooling
        with torch.inference_mode(), self._autocast():
            if pooling == "projection":
                out = self.model.get_video_features(pixel_values=pixels)
                return out if isinstance(out, torch.Tensor) else out.pooler_output
            if self.family.model_type == "vjepa2":
                hidden = self.model(pixel_values_videos=pixels, skip_predictor=True).last_hidden_state
            else:
                hidden = self.model(**{self.family.input_key: pixels}).last_hidden_state
            return hidden.mean(dim=1) if pooling == "mean" else hidden[:, 0]

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        """[N, T, C, H, W] clips of prepared frames → [N, D] float32 rows."""
        return self._embed(self.normalize(batch)).float().cpu().numpy()

    def encode_text(self, texts: list[str], *, batch_size: int = 256) -> np.ndarray:
        """X-CLIP's text tower: get_text_features (the projected EOS state) of each text."""
        if self.tokenizer is None:
            raise ConfigError(f"--video-model {self.config.model}: a {self.family.model_type} model has no text tower")
        limit = int(self.model.config.text_config.max_position_embeddings)
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True, max_length=limit, return_tensors="pt"
            )
            tokens = {k: to_device(v, self.device) for k, v in tokens.items()}
            with torch.inference_mode(), self._autocast():
                features = self.model.get_text_features(**tokens)
            features = features if isinstance(features, torch.Tensor) else features.pooler_output
            out.append(features.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim), np.float32)

    def identity(self) -> dict:
        import transformers

        config = {k: v for k, v in self.model.config.to_dict().items() if k != "transformers_version"}
        config_json = json.dumps(_plain(config), sort_keys=True)
        return {
            "backbone": "transformers",
            "transformers_version": transformers.__version__,
            "model": self.config.model,
            "family": self.family.model_type,
            "model_class": type(self.model).__name__,
            "config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
            "weights_kind": self.weights_kind,
            "weights_files": self.weights_files,
            "weights_sha256": self.weights_sha256,
            "random_init_seed": self.config.seed if self.random_weights else None,
            "preprocess": {"processor": type(self.frame_processor).__name__, **_plain(self.frame_processor.to_dict())},
            "frames_per_clip": self.frames_per_clip,
            "fps": self.fps,
            "stride": self.stride,
            "padding": "a video shorter than one clip: its last frame repeated",
            "pooling": self.family.pooling,
            "embedding": self.family.embedding,
            "text_tower": self.tokenizer is not None,
            "dtype": self.store_dtype,
            "normalized": False,
            "feature_dim": self.feature_dim,
        }


def video_for_identity(identity: dict, *, device: Any, allow_download: bool = False, cache_dir: object = ""):
    """The encoder (text tower included) that made a `video` view, from its recorded identity: the same
    model and weights (or random-init seed); other weights are refused."""
    from ....errors import CacheError

    encoder = HfVideoEncoder(
        config=VideoConfig(model=identity["model"], seed=identity.get("random_init_seed") or 0),
        device=device,
        dtype="float32",
        allow_download=allow_download,
    )
    if identity.get("weights_sha256") and encoder.weights_sha256 != identity["weights_sha256"]:
        raise CacheError(
            f"weights of {identity['model']} differ from those that made cache {cache_dir} (sha256 mismatch)"
        )
    return encoder


__all__ = ["FAMILIES", "FramePrepare", "HfVideoEncoder", "tiny_tokenizer", "video_for_identity", "weights_sha256"]
