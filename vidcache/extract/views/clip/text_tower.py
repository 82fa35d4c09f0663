"""A CLIP text tower over NumPy, exported once from open_clip's model into one safetensors file, so that a
text query in a fresh process embeds its prompt without importing torch or open_clip and without
building the model (together 5-10 s on a 2-core machine, against about 0.1 s here).

Only the standard tower is exported: open_clip's `CLIP.encode_text` (token and position embeddings,
pre-norm residual blocks of `nn.MultiheadAttention` under the causal mask, a GELU or QuickGELU MLP,
`ln_final`, the end token's features, a linear projection) with `SimpleTokenizer`. Anything else (layer
scale, custom blocks, HF text towers, other tokenizers, bf16 weights) is not exported and stays on
torch. The arithmetic is float32, as torch's on a CPU; an export is written only after its output on the
prompts of that call agreed with torch's (`encode_checked`), and its file names the tower's whole recipe.

Because attention is causal and the end token's features are read, positions after a prompt's end
token cannot change them: a batch is computed up to its longest prompt, not to the context length."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .bpe import CleanKind, ClipBpeTokenizer

__all__ = [
    "EXPORT_FORMAT",
    "TORCH_MARKER_SUFFIX",
    "CleanKind",
    "NumpyTextTower",
    "TowerSpec",
    "store_export",
    "tower_file",
]

EXPORT_FORMAT = 1  # bumped when the file's layout or the arithmetic below changes
TORCH_MARKER_SUFFIX = ".torch"  # beside the would-be export: this view's tower stays on torch, and why
Activation = Literal["gelu", "quick_gelu"]
_LAYER_TENSORS = (
    "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
    "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
    "mlp.c_proj.bias",
)  # fmt: skip


@dataclass(frozen=True)
class TowerSpec:
    """The tower's shape and recipe, saved as the file's metadata (JSON): what `NumpyTextTower` computes."""

    heads: int
    layers: int
    activation: Activation
    ln_eps: float
    context_length: int
    clean: CleanKind
    eot_token_id: int
    projection_bias: bool
    format: int = EXPORT_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TowerSpec:
        spec = cls(**json.loads(text))
        if spec.format != EXPORT_FORMAT:
            raise ValueError(f"text tower format {spec.format!r}, this vidcache reads {EXPORT_FORMAT}")
        return spec


def tower_file(cache_dir: str | Path, identity_json: str) -> Path:
    """Where the export of the view whose recorded identity is `identity_json` (`json.dumps(identity,
    sort_keys=True, default=str)`) lives in a cache: named by that identity and the export format, so
    `extract` (which writes it at the end of a run) and `search --text` (which reads it, or writes it on a
    view's first query) agree, and a changed model or format is a different file."""
    import hashlib

    from ....cache.layout import text_tower_path

    recipe = json.dumps({"format": EXPORT_FORMAT, "identity": identity_json}, sort_keys=True)
    return text_tower_path(cache_dir, hashlib.sha256(recipe.encode()).hexdigest()[:32])


def store_export(path: Path, tower: NumpyTextTower | None, why_not: str) -> None:
    """Write `tower` to `path`, or (None) the marker beside it that keeps the view on torch and says why;
    an OSError (nowhere writable) is the caller's."""
    if tower is not None:
        tower.save(path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{path}{TORCH_MARKER_SUFFIX}").write_text(json.dumps({"torch_because": why_not}) + "\n")


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)  # biased, as torch's layer_norm
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


# erfc(z) = t·exp(−z² + P(t)), t = 1 / (1 + z/2), z ≥ 0: Numerical Recipes' `erfcc` (Press et al., 2nd ed.,
# 6.2), relative error < 1.2e-7 for every z, so GELU's negative tail keeps its relative accuracy too
_ERFC_COEFFICIENTS = (
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
)  # fmt: skip
_GELU_BLOCK = 1 << 15  # values per pass: the float64 temporaries stay in the CPU's cache


def _gelu(x: np.ndarray, activation: Activation) -> np.ndarray:
    """GELU of float32 `x`: QuickGELU x·σ(1.702x), or exact x·Φ(x) = x/2 · erfc(−x/√2) in float64 (NumPy has
    no erf, and SciPy's costs 0.5 s to import; within 1.2e-7 of the true value, torch's float32 erf is
    within about the same)."""
    if activation == "quick_gelu":
        return x / (np.float32(1.0) + np.exp(np.float32(-1.702) * x))
    out = np.empty_like(x)
    values, results = x.reshape(-1), out.reshape(-1)
    for start in range(0, values.size, _GELU_BLOCK):
        wide = values[start : start + _GELU_BLOCK].astype(np.float64)
        z = np.abs(wide) * (1.0 / math.sqrt(2.0))
        t = 1.0 / (1.0 + 0.5 * z)
        erfc = np.full_like(t, _ERFC_COEFFICIENTS[-1])
        for coefficient in _ERFC_COEFFICIENTS[-2:0:-1]:
            erfc *= t
            erfc += coefficient
        erfc *= t
        erfc += _ERFC_COEFFICIENTS[0]
        erfc -= z * z
        np.exp(erfc, out=erfc)
        erfc *= t  # erfc(|x|/√2); for x ≥ 0, erfc(−x/√2) = 2 − erfc(x/√2)
        np.subtract(2.0, erfc, out=erfc, where=wide >= 0)
        erfc *= wide
        erfc *= 0.5
        results[start : start + _GELU_BLOCK] = erfc
    return out


def _softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


class NumpyTextTower:
    """`tower.encode(texts)` → float32 [len(texts), output_dim]: open_clip's `encode_text` (unnormalised)."""

    def __init__(self, spec: TowerSpec, tensors: dict[str, np.ndarray], tokenizer: ClipBpeTokenizer):
        self.spec = spec
        self.tensors = tensors
        self.tokenizer = tokenizer
        self.output_dim = int(tensors["text_projection"].shape[0 if spec.projection_bias else -1])

    @classmethod
    def load(cls, path: str | Path) -> NumpyTextTower:
        """The tower in `path`, memory-mapped: a prompt reads only its tokens' rows of the embedding table."""
        try:
            metadata, tensors = _map_safetensors(path)
            return cls.from_arrays(TowerSpec.from_json(metadata["vidcache_text_tower"]), tensors)
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:  # json's errors are ValueErrors
            raise ValueError(f"{path} is not a readable vidcache text tower ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_arrays(cls, spec: TowerSpec, tensors: dict[str, np.ndarray]) -> NumpyTextTower:
        merges = tensors["tokenizer.merges"].tobytes().decode("utf-8")
        tokenizer = ClipBpeTokenizer(merges, context_length=spec.context_length, clean=spec.clean)
        return cls(spec, tensors, tokenizer)

    def save(self, path: str | Path) -> None:
        """Write the tower to `path` atomically (a reader never sees half a file; the umask decides its mode)."""
        import os
        import secrets

        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            save_file(self.tensors, str(tmp), metadata={"vidcache_text_tower": self.spec.to_json()})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def encode(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        out = [self.encode_tokens(self.tokenizer(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.output_dim), np.float32)

    def encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """[B, context_length] int64 tokens → [B, output_dim] float32 (the end token is the largest id)."""
        t, spec = self.tensors, self.spec
        ends = tokens.argmax(axis=-1)
        length = int(ends.max()) + 1  # causal: later positions never reach an end token's features
        x = t["token_embedding"][tokens[:, :length]] + t["positional_embedding"][:length]
        causal = np.triu(np.full((length, length), -np.inf, np.float32), 1)
        for layer in range(spec.layers):
            x = self._block(x, layer, causal)
        x = x[np.arange(len(tokens)), ends]
        x = _layer_norm(x, t["ln_final.weight"], t["ln_final.bias"], spec.ln_eps)
        if spec.projection_bias:
            return (x @ t["text_projection"].T + t["text_projection_bias"]).astype(np.float32)
        return (x @ t["text_projection"]).astype(np.float32)

    def _block(self, x: np.ndarray, layer: int, causal: np.ndarray) -> np.ndarray:
        w = {name: self.tensors[f"layers.{layer}.{name}"] for name in _LAYER_TENSORS}
        eps, heads = self.spec.ln_eps, self.spec.heads
        batch, length, width = x.shape
        qkv = _layer_norm(x, w["ln_1.weight"], w["ln_1.bias"], eps) @ w["attn.in_proj_weight"].T
        qkv += w["attn.in_proj_bias"]
        split = (part.reshape(batch, length, heads, width // heads) for part in np.split(qkv, 3, -1))
        q, k, v = (part.transpose(0, 2, 1, 3) for part in split)
        scores = (q * np.float32(1.0 / math.sqrt(width // heads))) @ k.transpose(0, 1, 3, 2) + causal
        attended = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)
        x = x + attended @ w["attn.out_proj.weight"].T + w["attn.out_proj.bias"]
        hidden = _layer_norm(x, w["ln_2.weight"], w["ln_2.bias"], eps) @ w["mlp.c_fc.weight"].T + w["mlp.c_fc.bias"]
        hidden = _gelu(hidden, self.spec.activation)
        return x + hidden @ w["mlp.c_proj.weight"].T + w["mlp.c_proj.bias"]

    def encode_checked(self, texts: list[str], reference: np.ndarray) -> np.ndarray | None:
        """This tower's embeddings of `texts`, or None unless they match torch's `reference` to float32
        rounding (relative error per prompt ≤ 1e-4; an unsupported variant misses by far more)."""
        mine = self.encode(texts)
        if mine.shape != reference.shape:
            return None
        scale = np.maximum(np.linalg.norm(reference, axis=-1), 1e-12)
        return mine if bool(np.all(np.linalg.norm(mine - reference, axis=-1) / scale <= 1e-4)) else None


_SAFETENSORS_DTYPES = {"F32": np.float32, "U8": np.uint8}  # the tensors an export writes


def _map_safetensors(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, name → read-only array over a memory map) of a safetensors file. safetensors' own NumPy
    reader copies every tensor (0.3 s for ViT-B-32's 250 MB); its layout is an 8-byte header length, a
    JSON header of dtype, shape and byte offsets, then the data."""
    import os
    import struct

    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) != 8:
            raise ValueError("shorter than a safetensors header")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > os.fstat(file.fileno()).st_size - 8:
            raise ValueError(f"a header of {header_len} bytes is longer than the file")
        header = json.loads(file.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)  # a short file: TypeError below
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        tensors[name] = np.ndarray(tuple(entry["shape"]), dtype=dtype, buffer=data, offset=begin)
        if tensors[name].nbytes != end - begin:
            raise ValueError(f"{path}: tensor {name} has {end - begin} bytes for shape {entry['shape']}")
    return metadata, tensors


def tensors_of(state: dict[str, Any], *, layers: int, projection_bias: bool) -> dict[str, np.ndarray]:
    """The NumPy tensors of a tower from open_clip's state-dict names (values already NumPy float32)."""
    out = {
        "token_embedding": state["token_embedding.weight"],
        "positional_embedding": state["positional_embedding"],
        "ln_final.weight": state["ln_final.weight"],
        "ln_final.bias": state["ln_final.bias"],
    }
    for layer in range(layers):
        for name in _LAYER_TENSORS:
            out[f"layers.{layer}.{name}"] = state[f"transformer.resblocks.{layer}.{name}"]
    if projection_bias:
        out["text_projection"] = state["text_projection.weight"]
        out["text_projection_bias"] = state["text_projection.bias"]
    else:
        out["text_projection"] = state["text_projection"]
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in out.items()}
