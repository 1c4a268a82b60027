"""Registered models (listed in registry.py): one name, one config, one fp16 safetensors file.

A compressed file names its model and carries a hash of its weights, so a file is never decoded
by a different network. Weights are loaded with safetensors only (no pickle).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import ModelError
from .frameworks import ModelConfig, RNNCompressor
from .registry import DEFAULT_MODEL, MODELS, TUNES, ModelSpec  # noqa: F401 (torch-free)

TABLE_PREFIX = "entropy."  # tensors for the entropy coders, not the network


@dataclass(frozen=True)
class LoadedModel:
    name: str
    digest: bytes  # 16 bytes identifying the weights (network and entropy tables)
    net: RNNCompressor
    tables: dict[str, torch.Tensor]  # learned entropy-coder tables, keyed "entropy.*"
    tune: str = "ms-ssim"  # the metric its loss favours (registry.TUNES)


def weights_digest(tensors: dict[str, torch.Tensor], prime: int = 0) -> bytes:
    """SHA-256 (first 16 bytes) over the stored fp16 tensors: names, shapes and raw bytes, and
    the priming steps when there are any (the same weights primed decode other pixels)."""
    h = hashlib.sha256()
    if prime:
        h.update(f"prime:{prime};".encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()[:16]


def save_weights(model: RNNCompressor, path: Path, name: str | None = None,
                 tables: dict[str, torch.Tensor] | None = None, tune: str = "ms-ssim") -> bytes:
    """Write fp16 weights, entropy tables (as given), the config and the metric the model is
    tuned for; returns the digest."""
    # clone, not contiguous(): a channels_last 1×1 kernel counts as contiguous with odd strides
    tensors = {k: v.detach().to(torch.float16).clone(memory_format=torch.contiguous_format)
               for k, v in model.state_dict().items()}
    tensors.update({k: v.contiguous() for k, v in (tables or {}).items()})
    meta = {"config": json.dumps(model.config.to_dict()), "name": name or path.stem, "tune": tune}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.chmod(0o644)  # safetensors creates the file private; weights are meant to be shared
    tmp.replace(path)
    return weights_digest(tensors, model.config.prime)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # noqa: SIM118
    except (OSError, SafetensorError, ValueError) as e:
        raise ModelError(f"cannot read model weights {path}: {e}") from None


def _build(name: str, config: ModelConfig, tensors: dict[str, torch.Tensor],
           tune: str = "ms-ssim") -> LoadedModel:
    net = RNNCompressor(config)
    tables = {k: v for k, v in tensors.items() if k.startswith(TABLE_PREFIX)}
    try:
        net.load_state_dict({k: v.float() for k, v in tensors.items() if k not in tables})
    except RuntimeError as e:
        raise ModelError(f"weights do not fit model {name!r}: {str(e).splitlines()[0]}") from None
    net.eval()
    net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # see engine.nhwc
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedModel(name, weights_digest(tensors, config.prime), net, tables, tune)


@lru_cache(maxsize=4)
def load_model(name_or_path: str = DEFAULT_MODEL) -> LoadedModel:
    """A registered model by name, or a safetensors file written by ``save_weights``."""
    if name_or_path in MODELS:
        spec = MODELS[name_or_path]
        if not spec.path.exists():
            raise ModelError(f"weights of model {spec.name!r} are missing ({spec.path})")
        tensors, _ = _read(spec.path)
        return _build(spec.name, spec.config, tensors, spec.tune)
    path = Path(name_or_path)
    if not path.is_file():
        raise ModelError(f"unknown model {name_or_path!r}: not a registered name "
                         f"({', '.join(MODELS)}) nor a weights file")
    tensors, meta = _read(path)
    try:
        config = ModelConfig(**json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{path} has no valid model config in its metadata ({e})") from None
    tune = meta.get("tune", "ms-ssim")  # files written before the field: ms-ssim
    if tune not in TUNES:
        raise ModelError(f"{path} says it is tuned for {tune!r}, not one of {', '.join(TUNES)}")
    return _build(meta.get("name", path.stem), config, tensors, tune)
