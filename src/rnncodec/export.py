"""Export: a training checkpoint → the fp16 safetensors that ship, with the entropy tables.

A run's weights become a model once both entropy coders are fitted to the codes those weights
make (``entropy/``): the context coder's prior table (``prior_table``) and the neural coder's
network (``collect_codes``, ``train_context_net``), all on training photos. ``rnncodec export``
runs ``export``; the codes come from the engine's residual loop (``engine.iterate_codes``),
exactly as the codec will make them.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch

from .engine import iterate_codes
from .entropy import PRIOR_KEY
from .entropy.context import fit_prior
from .entropy.neural import ContextNet, code_length, quantize, training_batch
from .errors import InputMissingError
from .images import list_images, load_image
from .train import load_checkpoint
from .zoo import LoadedModel, load_model, save_weights


def export(checkpoint: Path, out: Path, data: str, name: str, images: int = 32,
           coder_images: int = 400, coder_steps: int = 9000, crop: int = 256,
           tune: str = "ms-ssim") -> bytes:
    """Write a checkpoint (or a run's model.safetensors) as shippable fp16 safetensors with both
    entropy coders' tables.

    The context coder's prior and the neural coder's network are fitted on the codes that the
    fp16 weights produce for training photos (never evaluation images); returns the digest.
    ``tune`` records the metric the training favoured (the per-image filter fits for it).
    """
    if checkpoint.suffix == ".safetensors":  # a run's weights alone (all a lent GPU may return)
        model = load_model(str(checkpoint)).net
    else:
        model = load_checkpoint(checkpoint)[1]
    save_weights(model, out, name)  # first without tables: the codes come from the fp16 weights
    loaded = load_model(str(out))
    tables = {PRIOR_KEY: prior_table(loaded, data, images)}
    codes = collect_codes(str(out), data, coder_images, crop)
    if len(codes) == 0:
        raise InputMissingError(f"no photos of at least {crop}×{crop} pixels under {data}")
    net = train_context_net(codes, coder_steps)
    tables.update(quantize(net))
    load_model.cache_clear()
    return save_weights(loaded.net, out, name, tables=tables, tune=tune)


def prior_table(loaded: LoadedModel, data: str, images: int,
                iterations: int = 16) -> torch.Tensor:
    """The context coder's prior (int16) from the codes of ``images`` whole photos, each
    iteration with the earlier ones as its context, as the coder sees them."""
    paths = list_images(data)
    random.Random(0).shuffle(paths)
    samples = []
    for path in paths[:images]:
        steps = iterate_codes(loaded, load_image(path)[0])
        codes = [next(steps)[0] for _ in range(iterations)]
        samples += [(c, codes[:i]) for i, c in enumerate(codes)]
    return torch.from_numpy(fit_prior(samples).astype(np.int16))


def collect_codes(model_path: str, data: str, images: int, crop: int = 256,
                  iterations: int = 16, seed: int = 0) -> torch.Tensor:
    """Codes (N×T×32×h×w, ±1 int8) the frozen image model gives for centre crops of photos."""
    loaded = load_model(model_path)
    paths = list_images(data)
    random.Random(seed).shuffle(paths)
    out = []
    for path in paths:
        rgb = load_image(path)[0]
        h, w = rgb.shape[:2]
        if min(h, w) < crop:
            continue
        y, x = (h - crop) // 2, (w - crop) // 2
        steps = iterate_codes(loaded, rgb[y:y + crop, x:x + crop])
        out.append(np.stack([next(steps)[0] for _ in range(iterations)]))
        if len(out) == images:
            break
    if not out:
        return torch.zeros(0)
    return torch.from_numpy(np.stack(out).astype(np.int8) * 2 - 1)


def train_context_net(codes: torch.Tensor, steps: int = 2000, batch: int = 16, lr: float = 2e-3,
                      seed: int = 0, log_every: int = 200) -> ContextNet:
    """Fit the neural entropy coder's network on code length (bits), one step type per batch."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = ContextNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n, iters = codes.shape[:2]
    for i in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / steps)))
        idx = torch.tensor(rng.sample(range(n), min(batch, n)))
        t, step = rng.randrange(iters), rng.randrange(8)
        x, y, mask = training_batch(codes[idx].float(), t, step)
        loss = code_length(net(x), y, mask) / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (i + 1) % log_every == 0:
            print(f"context net step {i + 1}: {loss.item():.4f} bits/bit", flush=True)
    return net

