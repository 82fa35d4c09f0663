"""open_clip image (and text) towers for the `clip` view."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ....device import autocast_dtype, to_device
from ....errors import ConfigError
from ...encoder import FrameEncoder
from ...preprocess import ImagePreprocess, PixelScratch
from ...weights import ResolvedWeights, hf_offline, resolve_clip_weights, sha256_file, state_dict_sha256
from .files import check_clip_file
from .settings import ClipConfig
from .text_tower import TORCH_MARKER_SUFFIX, CleanKind, NumpyTextTower, TowerSpec, store_export, tensors_of, tower_file

DEFAULT_TEMPLATES = ("a video of {}.", "This is a video about {}")
# checked besides a run's label prompts: casing, punctuation, accents, CJK, emoji, an HTML entity (kept short:
# torch runs every prompt over the whole context, about 50 ms a prompt for ViT-B-32 on 2 cores)
_CHECK_PROMPTS = ("a video of a dog.", "TWO people DANCING!!", "café naïve façade, 東京の夜 🐕 &amp; more")
_CHECK_LABEL_PROMPTS = 8  # at most this many of the run's own prompts
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
        self._scratch = PixelScratch()

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
        pixels = self.preprocess.normalize(to_device(batch, self.device), scratch=self._scratch).to(self.input_dtype)
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


def _tokenizer_clean(tokenizer) -> CleanKind | None:
    """The cleaning of open_clip's SimpleTokenizer `tokenizer` as ClipBpeTokenizer names it; None for any
    other tokenizer (HF's, a reduction mask, extra special tokens)."""
    from open_clip import tokenizer as oc_tokenizer

    if type(tokenizer) is not oc_tokenizer.SimpleTokenizer or tokenizer.reduction_fn is not None:
        return None
    if tokenizer.vocab_size != 49408:
        return None
    kinds = {
        oc_tokenizer._clean_lower: "lower",
        oc_tokenizer._clean_whitespace: "whitespace",
        oc_tokenizer._clean_canonicalize: "canonicalize",
    }
    return kinds.get(tokenizer.clean_fn)


def _tower_spec(tower, *, clean: CleanKind, tokenizer) -> TowerSpec | None:
    """The NumPy tower's spec for open_clip's text tower `tower` (the CLIP model itself, or a
    CustomTextCLIP's `text`), or None where it is a variant NumpyTextTower does not compute."""
    from open_clip.transformer import LayerNorm, LayerNormFp32, QuickGELU, ResidualAttentionBlock

    pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", None))
    if pool != "argmax" or getattr(tower, "cls_emb", None) is not None or getattr(tower, "attn_mask", None) is None:
        return None
    if getattr(tower, "use_pad_mask", False) or tower.token_embedding.weight.dtype != torch.float32:
        return None
    norms, acts = [tower.ln_final], set()
    for block in tower.transformer.resblocks:
        if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
            return None
        if not (isinstance(block.ls_1, torch.nn.Identity) and isinstance(block.ls_2, torch.nn.Identity)):
            return None
        if not block.attn._qkv_same_embed_dim or block.attn.in_proj_bias is None or block.attn.bias_k is not None:
            return None
        gelu = block.mlp.gelu
        if type(gelu) is QuickGELU:
            acts.add("quick_gelu")
        elif type(gelu) is torch.nn.GELU and gelu.approximate == "none":
            acts.add("gelu")
        else:
            return None
        norms += [block.ln_1, block.ln_2]
    if len(acts) != 1 or any(type(n) not in (LayerNorm, LayerNormFp32, torch.nn.LayerNorm) for n in norms):
        return None
    if len({float(n.eps) for n in norms}) != 1 or any(n.weight is None or n.bias is None for n in norms):
        return None
    projection = tower.text_projection
    if projection is None or (isinstance(projection, torch.nn.Linear) and projection.bias is None):
        return None
    return TowerSpec(
        heads=int(tower.transformer.resblocks[0].attn.num_heads),
        layers=len(tower.transformer.resblocks),
        activation=acts.pop(),
        ln_eps=float(norms[0].eps),
        context_length=int(tokenizer.context_length),
        clean=clean,
        eot_token_id=int(tokenizer.eot_token_id),
        projection_bias=isinstance(projection, torch.nn.Linear),
    )


def export_text_tower(encoder: ClipEncoder, prompts: list[str], reference: np.ndarray):
    """(`encoder`'s text tower as a NumpyTextTower, its embeddings of `prompts`, '') or (None, None, why not):
    a variant that tower does not compute, or one where the two disagree on `prompts` (tokens, or
    embeddings against torch's `reference`)."""
    import open_clip

    if encoder.input_dtype != torch.float32 or encoder.amp_dtype is not None:
        return None, None, "the tower does not run in float32 (bf16 weights or autocast)"
    with hf_offline(not encoder.allow_download):
        tokenizer = open_clip.get_tokenizer(encoder.config.model)
    clean = _tokenizer_clean(tokenizer)
    if clean is None:
        return None, None, f"tokenizer {type(tokenizer).__name__} is not open_clip's plain SimpleTokenizer"
    model = encoder.model
    tower = model if hasattr(model, "token_embedding") else getattr(model, "text", None)
    spec = None if tower is None else _tower_spec(tower, clean=clean, tokenizer=tokenizer)
    if spec is None:
        return None, None, f"text tower of {encoder.config.model} is not open_clip's standard causal transformer"
    state = {name: value.detach().float().cpu().numpy() for name, value in tower.state_dict().items()}
    tensors = tensors_of(state, layers=spec.layers, projection_bias=spec.projection_bias)
    with gzip.open(open_clip.tokenizer.default_bpe(), "rb") as merges:  # kept plain: no gunzip per query
        tensors["tokenizer.merges"] = np.frombuffer(merges.read(), dtype=np.uint8).copy()
    numpy_tower = NumpyTextTower.from_arrays(spec, tensors)
    if not np.array_equal(numpy_tower.tokenizer(prompts), tokenizer(prompts).numpy()):
        return None, None, "the NumPy tokenizer's tokens differ from open_clip's"
    vectors = numpy_tower.encode_checked(prompts, reference)
    if vectors is None:
        return None, None, "the NumPy tower's embeddings differ from torch's beyond float32 rounding"
    return numpy_tower, vectors, ""


def keep_numpy_text_tower(encoder: ClipEncoder, *, cache_dir: str | Path, identity: dict, prompts: list[str]) -> str:
    """At the end of an extract run: export the view's text tower for NumPy into the cache (as the view's first
    `search --text` would), so no text query of this cache loads the model, the first one included. Checked
    against torch on CPU float32 on some of the run's label `prompts` and a fixed set; a run on a GPU or in
    autocast builds the tower once more on the CPU for this. Returns the line for the log ('' when the export
    or its torch marker is already there, or the tower is kept in bf16 and always runs on torch)."""
    if identity.get("precision") == "bf16-weights":
        return ""
    path = tower_file(cache_dir, json.dumps(identity, sort_keys=True, default=str))
    if path.exists() or Path(f"{path}{TORCH_MARKER_SUFFIX}").exists():
        return ""
    on_cpu = encoder
    if encoder.device.type != "cpu" or encoder.amp_dtype is not None or encoder.input_dtype != torch.float32:
        on_cpu = clip_for_identity(
            identity, device=torch.device("cpu"), allow_download=encoder.allow_download, cache_dir=str(cache_dir)
        )
    check = [*prompts[:_CHECK_LABEL_PROMPTS], *_CHECK_PROMPTS]
    tower, _, why_not = export_text_tower(on_cpu, check, on_cpu.encode_text(check).astype(np.float32))
    store_export(path, tower, why_not)
    if tower is None:
        return f"text queries of view {encoder.view} will run its text tower on torch: {why_not}"
    size_mb = path.stat().st_size / 1e6
    return f"kept view {encoder.view}'s text tower for text queries without torch: {path} ({size_mb:.0f} MB)"
