"""Training: random downscaled crops of photos (patches.py), the paper's L1 residual loss, Adam.

Short enough to read in one sitting. Checkpoints hold model and optimizer state and the step,
written atomically, so a run can resume; ``export.py`` turns them into the fp16 safetensors that
ship.

At scale (all off by default): ``hard_patches`` mines hard-to-compress patches as the paper
does, ``amp`` runs the forward in bf16, ``compile`` uses ``torch.compile``, ``tensorboard``
logs beside log.csv (``pip install rnncodec[train]``), ``bank`` cuts patches on the GPU once
instead of on the CPU per step; ``binarize=sign`` trains on the bits that coding uses instead
of the paper's random ones, a ``patch`` of 64 or 128 px instead of the paper's 32 shows the
networks the context they have in whole images, and ``ms_ssim`` adds 1 − MS-SSIM, the metric
the codec is judged by, to the paper's L1 loss; ``stops`` codes a fraction of the images with
adaptive block stops, so that the decoder learns to read the zeros of stopped blocks; ``rate``
adds the codes' length under a context model trained beside the networks (the entropy coder's
network, ``entropy.neural``), so that the encoder learns bits that the entropy coder can
predict.
``init`` starts from trained weights, those of a narrower model too: they grow into the run's
width (``frameworks.grow``), computing the same; from another run's checkpoint, Adam's moments
come along.
Several GPUs train data-parallel (DDP) under torchrun; each rank draws ``batch`` patches, so the
effective batch is ``batch`` × ranks::

    torchrun --nproc-per-node 8 --no-python rnncodec train --set batch=32 --set amp=true
"""

from __future__ import annotations

import csv
import io
import math
import os
import pickle
import random
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .adaptive import SEARCH_STOP_DB, block_psnr, still_active
from .entropy.neural import ContextNet, code_bits
from .errors import InputMissingError, ModelError
from .frameworks import (
    ModelConfig,
    RNNCompressor,
    Stops,
    grow,
    ms_ssim_db_loss,
    ms_ssim_loss,
    psnr_db_loss,
    psnr_hvs_db_loss,
    residual_loss,
)
from .images import list_images
from .metrics import ms_ssim_tensor
from .patches import (  # noqa: F401 (part of this module's API)
    bank_batch,
    center_crops,
    draw_batch,
    holdout_rank,
    load_pool,
    pack_name,
    patch_bank,
    png_size,
    random_patch,
    split_photos,
)
from .zoo import load_model, save_weights

if TYPE_CHECKING:  # an optional dependency (the ``train`` extra)
    from torch.utils.tensorboard import SummaryWriter


MS_SSIM_MIN_PATCH = 48  # a 3-tap window after four halvings: (3 − 1) · 2⁴ < 48
RATE_LR = 1e-3  # the rate term's context net: new with each run, it must learn fast
RATE_RAMP = 300  # steps over which the rate weight rises from 0 while that net first learns
LOSS_NAMES = "l1, ms_ssim, psnr_db, ms_ssim_db, psnr_hvs_db"  # TrainConfig's loss weights


@dataclass
class TrainConfig:
    data: str = "../shared/data/train"
    out: str = "runs/default"
    cell: str = "residual-gru"
    framework: str = "residual-scaling"
    width: float = 0.25
    iterations: int = 16
    patch: int = 32
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 0  # steps of linear learning-rate warm-up (large batches need some)
    steps: int = 3000
    minutes: float = 0.0  # stop after this training time (0: no limit); the schedule follows it
    checkpoint_minutes: float = 10.0  # also write the checkpoint this often, between validations
    val_every: int = 250
    val_images: int = 48
    val_crop: int = 192  # centre crops for validation (≥ 161 px: five-scale MS-SSIM)
    seed: int = 0
    resume: bool = True
    hard_patches: float = 0.0  # keep this fraction of the least compressible patches (0: off)
    amp: bool = False  # bf16 autocast around the forward
    compile: bool = False  # torch.compile the training forward
    device: str = "auto"  # cuda if available, else cpu
    tensorboard: bool = False  # also log to <out>/tensorboard
    init: str = ""  # start from these weights (a name, .safetensors, or a run's checkpoint.pt
    # whose Adam moments come along; narrower weights grow)
    bank: int = 0  # cut this many patches on the device once, then draw from them (0: per step)
    binarize: str = "stochastic"  # the paper's random bits, or "sign" as at inference
    l1: float = 1.0  # weight of the paper's L1 residual loss
    ms_ssim: float = 0.0  # weight of 1 − MS-SSIM beside the L1 loss (0: the paper's L1 alone)
    psnr_db: float = 0.0  # weight of −PSNR in dB, each iteration alike (``psnr_db_loss``)
    ms_ssim_db: float = 0.0  # weight of −MS-SSIM in dB, each iteration alike
    psnr_hvs_db: float = 0.0  # weight of −PSNR-HVS in dB (luma), each iteration alike
    channels_last: bool = False  # NHWC activations: oneDNN's faster layout on CPUs
    stops: float = 0.0  # fraction of images coded with adaptive block stops (``block_stops``)
    prime: int = 0  # the model's priming steps (``ModelConfig.prime``)
    coarse: float = 1.0  # channels at 1/8 and 1/16 scale (``ModelConfig.coarse``)
    late_from: int = 0  # the model's late networks (``ModelConfig.late_from``)
    freeze_early: bool = False  # train the late networks alone: the early iterations stay as
    # they are, and their steps need no backward pass
    rate: float = 0.0  # weight of the trained iterations' code length in bits per bit under a
    # context net trained alongside (``rate_term``; 0: off)

    def __post_init__(self) -> None:
        if self.patch < 16 or self.patch % 16:
            raise ValueError("patch must be a multiple of 16 (the networks code 16×16 blocks)")
        if min(self.batch, self.iterations, self.val_every) < 1:
            raise ValueError("batch, iterations and val_every must be at least 1")
        if not 0 <= self.stops <= 1:
            raise ValueError("stops must be in [0, 1] (the fraction of images with block stops)")
        if not 0 <= self.hard_patches <= 1:
            raise ValueError("hard_patches must be in [0, 1] (the fraction of patches kept)")
        if self.bank and self.hard_patches:
            raise ValueError("hard_patches needs patches drawn per step (bank=0)")
        if self.binarize not in ("stochastic", "sign"):
            raise ValueError("binarize must be 'stochastic' or 'sign'")
        weights = (self.l1, self.ms_ssim, self.psnr_db, self.ms_ssim_db, self.psnr_hvs_db)
        if min(weights) < 0:
            raise ValueError(f"loss weights ({LOSS_NAMES}) must be ≥ 0")
        if not any(weights):
            raise ValueError(f"at least one loss weight ({LOSS_NAMES}) must be positive")
        if (self.ms_ssim or self.ms_ssim_db) and self.patch < MS_SSIM_MIN_PATCH:
            raise ValueError(f"ms_ssim and ms_ssim_db need patches of at least "
                             f"{MS_SSIM_MIN_PATCH} px (MS-SSIM downsamples four times)")
        if self.freeze_early and not self.late_from:
            raise ValueError("freeze_early needs late networks (late_from)")
        if self.rate < 0:
            raise ValueError("rate must be ≥ 0")
        if self.rate and self.stops:
            raise ValueError("rate cannot be combined with stops: stopped blocks send no bits, "
                             "and the rate term counts every block")
        self.model_config()  # a bad cell, framework or width fails here, before data loads

    def model_config(self) -> ModelConfig:
        return ModelConfig(self.cell, self.framework, self.width, self.prime, self.coarse,
                           self.late_from)


@torch.no_grad()
def validate(model: RNNCompressor, images: Tensor, iterations: int
             ) -> tuple[list[float], list[float]]:
    """PSNR (dB) and MS-SSIM after each iteration on held-out crops, each the mean over images,
    with inference (sign) binarization."""
    model.eval()
    recons = [r.float().clamp(-0.5, 0.5) for r in model(images, iterations)]
    model.train()
    return scores(images, recons)


def scores(images: Tensor, recons: list[Tensor]) -> tuple[list[float], list[float]]:
    """PSNR (dB) of the whole set and mean MS-SSIM of each reconstruction (in [-0.5, 0.5])."""
    psnr = [float(-10 * torch.log10(((r - images) ** 2).mean())) for r in recons]
    ssim = [float(ms_ssim_tensor(r + 0.5, images + 0.5, 1.0).mean()) for r in recons]
    return psnr, ssim


def to_cpu(state: object) -> object:
    """Tensors (in nested dicts and lists) on the CPU, so a GPU run's checkpoint loads anywhere."""
    if isinstance(state, Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {k: to_cpu(v) for k, v in state.items()}
    return [to_cpu(v) for v in state] if isinstance(state, list) else state


def save_checkpoint(path: Path, model: RNNCompressor, opt: torch.optim.Optimizer, step: int,
                    cfg: TrainConfig, rng: random.Random, minutes: float = 0.0,
                    rate: RateModel | None = None) -> None:
    """Write the run's state atomically; ``minutes`` is the training time so far, so that a
    resumed run's time limit and learning-rate schedule go on where they stopped."""
    tmp = path.with_suffix(".tmp")
    extra = {} if rate is None else {"context": to_cpu(rate.net.state_dict()),
                                     "context_opt": to_cpu(rate.opt.state_dict())}
    torch.save({"model": to_cpu(model.state_dict()), "opt": to_cpu(opt.state_dict()),
                "step": step, "config": asdict(cfg), "rng": torch.get_rng_state(),
                "py_rng": rng.getstate(), "minutes": minutes, **extra}, tmp)
    os.replace(tmp, path)


# How torch.load and loading a state fail on other files: unpickling, zip and struct errors
# among others, with no common base class below Exception.
CHECKPOINT_ERRORS = (pickle.UnpicklingError, struct.error, EOFError, OSError, RuntimeError,
                     ValueError, KeyError, TypeError)


def load_checkpoint(path: Path) -> tuple[dict, RNNCompressor]:
    """A checkpoint from ``save_checkpoint`` and its model with the weights loaded.

    Anything else (another file, a truncated or foreign checkpoint) is a ModelError saying so.
    """
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(state, dict):
            raise TypeError(f"it holds a {type(state).__name__}, not a dict of settings and "
                            "weights")
        cfg = state["config"]
        # the model's fields the run had; older runs lack later ones, which keep their defaults
        names = [f.name for f in fields(ModelConfig)]
        model = RNNCompressor(ModelConfig(**{k: cfg[k] for k in names if k in cfg}))
        model.load_state_dict(state["model"])
        return state, model
    except CHECKPOINT_ERRORS as e:
        raise ModelError(f"{path} is not a usable rnncodec training checkpoint: "
                         f"{_checkpoint_problem(e)}") from None


def _checkpoint_problem(e: Exception) -> str:
    if isinstance(e, pickle.UnpicklingError):  # torch's own text here suggests unsafe loading
        return "not a file of tensors that torch.load reads safely"
    if isinstance(e, KeyError):
        return f"it has no {e} entry"
    return (str(e).splitlines() or [type(e).__name__])[0]


@dataclass
class RateModel:
    """The rate term's context net, its own optimizer (Adam at ``RATE_LR``, no schedule) and
    the term's values since they were last reported."""

    net: ContextNet
    opt: torch.optim.Optimizer
    seen: list[float] = field(default_factory=list)

    @classmethod
    def new(cls, device: torch.device, saved: dict | None = None) -> RateModel:
        net = ContextNet().to(device)
        opt = torch.optim.Adam(net.parameters(), lr=RATE_LR)
        if saved is not None and "context" in saved:  # a resumed run's
            net.load_state_dict(saved["context"])
            opt.load_state_dict(saved["context_opt"])
        return cls(net, opt)

    def weight(self, cfg: TrainConfig, step: int) -> float:
        """``cfg.rate``, reached linearly over the first ``RATE_RAMP`` steps."""
        return cfg.rate * min(1.0, step / RATE_RAMP)

    def step(self, bits: float) -> None:
        """Adam on the context net, unless its gradient is not finite; ``bits``: the term's
        value in this step."""
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        if all(torch.isfinite(g).all() for g in grads):
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.seen.append(bits)

    def report(self) -> float | None:
        """The mean of the values seen since the last report (None: none)."""
        mean = sum(self.seen) / len(self.seen) if self.seen else None
        self.seen = []
        return mean


def trainable(model: RNNCompressor, freeze_early: bool) -> list[tuple[str, nn.Parameter]]:
    """The parameters a run trains, in Adam's numbering: all of them, or with ``freeze_early``
    the late networks' alone."""
    return [(n, p) for n, p in model.named_parameters()
            if not freeze_early or n.startswith("late.")]


def carry_moments(opt: torch.optim.Optimizer, saved: dict, src: RNNCompressor,
                  model: RNNCompressor, src_froze: bool = False, froze: bool = False) -> None:
    """Give ``opt`` (Adam over ``trainable(model, froze)``) the moments ``saved`` (its state
    over ``src``) holds for each parameter of the same name and shape, new late networks those
    of the networks they were copied from; others (grown or new ones) start afresh.

    With fresh moments Adam's first steps are as large as the learning rate in every
    direction, so a run from trained weights loses more ground before it gains."""
    old = trainable(src, src_froze)
    by_name = {old[i][0]: (v, old[i][1].shape) for i, v in saved["state"].items()}
    state = {}
    for i, (n, p) in enumerate(trainable(model, froze)):
        found = by_name.get(n) or (None if src.late is not None
                                   else by_name.get(n.removeprefix("late.")))
        if found is not None and found[1] == p.shape:
            state[i] = found[0]
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when torchrun starts several ranks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world == 1:
        return 0, 1, dev
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), world, dev


def wrap(model: RNNCompressor, world: int, compiled: bool) -> nn.Module:
    """The module the training forward runs through: DDP across ranks, then compiled."""
    net: nn.Module = model
    if world > 1:
        dev = next(model.parameters()).device
        net = DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
    return cast(nn.Module, torch.compile(net)) if compiled else net


def _layout(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def block_stops(fraction: float) -> Stops:
    """Stops as the adaptive encoder makes them (``engine.encode_tile``), for about ``fraction``
    of the images, the others coded uniformly: each image draws a block-PSNR threshold in the
    encoder's ``SEARCH_STOP_DB`` per forward, and a block stops once its PSNR reaches it. The
    decoder thus learns to read zeros where an encoder stops, and to go on improving the blocks
    around them."""
    thresholds = torch.empty(0)

    def stops(image: Tensor, recon: Tensor, active: Tensor | None) -> Tensor:
        nonlocal thresholds
        if active is None:  # the first iteration of a forward: draw this batch's thresholds
            n = image.shape[0]
            thresholds = torch.empty(n, 1, 1, 1, device=image.device).uniform_(*SEARCH_STOP_DB)
            uniform = torch.rand(n, 1, 1, 1, device=image.device) >= fraction
            thresholds[uniform] = math.inf
        with torch.no_grad():
            quality = block_psnr(image, recon.float(), *image.shape[-2:])
            return still_active(active, quality, thresholds)

    return stops


def train_step(net: nn.Module, batch: Tensor, cfg: TrainConfig,
               context: nn.Module | None = None, rate_weight: float = 0.0,
               parts: dict[str, float] | None = None) -> Tensor:
    """Forward (bf16 autocast with ``cfg.amp``) and backward of the loss; the loss.

    A weighted sum of the paper's L1 residual loss, 1 − MS-SSIM, and −PSNR, −MS-SSIM and
    −PSNR-HVS in dB, each a mean over iterations; terms of weight 0 are not computed. The loss
    is taken outside autocast, on the fp32 reconstructions, so its mean stays exact. With a
    ``context`` net, the codes' length under it is added (``rate_term``), and ``parts`` (when
    given) receives it as "bits" (per bit).
    """
    codes: list[Tensor] = []  # each iteration's bits, kept for the rate term alone
    with torch.autocast(batch.device.type, torch.bfloat16, enabled=cfg.amp):
        recons = net(batch, cfg.iterations, cfg.binarize == "stochastic",
                     block_stops(cfg.stops) if cfg.stops else None,
                     codes if context is not None else None)
    recons = [r.float() for r in recons]
    terms = [(cfg.l1, residual_loss), (cfg.ms_ssim, ms_ssim_loss), (cfg.psnr_db, psnr_db_loss),
             (cfg.ms_ssim_db, ms_ssim_db_loss), (cfg.psnr_hvs_db, psnr_hvs_db_loss)]
    loss = cast(Tensor, sum(w * fn(batch, recons) for w, fn in terms if w))  # a weight is > 0
    if context is not None:
        bits = rate_term(context, codes, rate_first(cfg), rate_weight)
        loss = loss + bits
        if parts is not None:
            parts["bits"] = bits.item()
    loss.backward()
    return loss


def rate_first(cfg: TrainConfig) -> int:
    """The first iteration (from 0) whose codes the rate term counts: those the run trains."""
    return cfg.late_from - 1 if cfg.freeze_early else 0


def rate_term(context: nn.Module, codes: list[Tensor], first: int, weight: float) -> Tensor:
    """Bits per bit of the codes of iterations ``first`` on under ``context`` (a
    ``ContextNet``): its full gradient trains the context net, which thus learns to predict
    the codes, and the codes receive it scaled by ``weight``, through the binarizer's
    straight-through estimate, so that the encoder learns codes that it predicts. The codes'
    values are unchanged: only their gradient is scaled."""
    bits = torch.stack([c.float() for c in codes], 1)
    scaled = bits.detach() + weight * (bits - bits.detach())
    return code_bits(cast(ContextNet, context), scaled, first)


def open_log(path: Path, iterations: int) -> io.TextIOWrapper:
    """log.csv for appending, with a header row when it is new: one row per validation."""
    new = not path.exists() or path.stat().st_size == 0
    log = path.open("a", newline="")
    if new:
        csv.writer(log).writerow(["step", "loss", "patches_per_s"]
                                 + [f"psnr_it{i}" for i in range(1, iterations + 1)]
                                 + [f"ms_ssim_it{i}" for i in range(1, iterations + 1)])
    return log


def tensorboard_writer(out: Path) -> SummaryWriter | None:
    """A TensorBoard writer under ``out``, or None (with a note) without the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed (pip install 'rnncodec[train]'); logging to "
              "log.csv only", flush=True)
        return None
    return SummaryWriter(str(out / "tensorboard"))


def log_validation(model: RNNCompressor, val: Tensor, cfg: TrainConfig, step: int, loss: float,
                   speed: float, skipped: int, log: io.TextIOWrapper | None,
                   tb: SummaryWriter | None,
                   bar: tqdm, bits: float | None = None) -> None:
    """Validate, then write a log.csv row, a line above the progress bar and TensorBoard
    scalars; ``bits``, the rate term's mean bits per bit on the training codes since the last
    validation, is printed and logged to TensorBoard."""
    psnr, ssim = validate(model, val, cfg.iterations)
    row = ([step, f"{loss:.5f}", f"{speed:.1f}"] + [f"{p:.2f}" for p in psnr]
           + [f"{v:.4f}" for v in ssim])
    if log is not None:  # None on the ranks that do not log
        csv.writer(log).writerow(row)
        log.flush()
    shown = sorted({1, 4, 8, cfg.iterations} & set(range(1, len(psnr) + 1)))
    with bar.external_write_mode():  # the line above the bar, flushed for log files
        print(f"step {step} loss {loss:.4f} {speed:.0f} patches/s val "
              + " ".join(f"it{i} {psnr[i - 1]:.2f} dB {ssim[i - 1]:.4f}" for i in shown)
              + (f" ({skipped} steps skipped: non-finite gradients)" if skipped else "")
              + (f"; codes {bits:.4f} bits/bit" if bits is not None else ""),
              flush=True)
    if tb is not None:
        tb.add_scalar("loss", loss, step)
        if bits is not None:
            tb.add_scalar("bits_per_bit", bits, step)
        tb.add_scalar("patches_per_s", speed, step)
        for i, (p, v) in enumerate(zip(psnr, ssim, strict=True), 1):
            tb.add_scalar(f"val_psnr/it{i:02d}", p, step)
            tb.add_scalar(f"val_ms_ssim/it{i:02d}", v, step)
        tb.flush()


@contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """SIGINT and SIGTERM ask the loop to stop at the next step boundary, where a checkpoint is
    written, instead of interrupting a step half done (and losing the steps since the last
    checkpoint). Yields whether a stop was asked; the handlers are restored on exit. Outside
    the main thread, where Python cannot catch signals, nothing is ever asked."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    asked = False

    def ask(signum: int, frame: object) -> None:
        nonlocal asked
        asked = True

    old = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: asked
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the path of the exported fp16 weights.

    Under torchrun every rank trains on its own patches, with gradients averaged by DDP; rank 0
    alone validates, logs and writes the checkpoint and weights.
    """
    rank, world, dev = setup_distributed(cfg.device)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    paths = list_images(cfg.data)
    if len(paths) < 2:
        raise InputMissingError(f"no training images under {cfg.data}")
    n_val = min(cfg.val_images, len(paths) // 10 or 1)
    val_paths, train_paths = split_photos(paths, cfg.data, n_val)
    val_pool, train_pool = load_pool(val_paths), load_pool(train_paths)
    if not val_pool or not train_pool:
        raise InputMissingError(f"need photos of at least 128×128 pixels under {cfg.data}")
    side = min([cfg.val_crop] + [min(v.shape[1:]) for v in val_pool]) // 16 * 16  # small photos
    val = center_crops(val_pool, side).to(dev)
    model = RNNCompressor(cfg.model_config())
    model.to(dev, memory_format=_layout(cfg))  # type: ignore[call-overload]  # not in the stubs
    trained = [p for _, p in trainable(model, cfg.freeze_early)]
    model.requires_grad_(False)  # what is frozen needs no gradients, and so no backward pass
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trained, lr=cfg.lr)
    out = Path(cfg.out)
    step, ckpt, done = 0, out / "checkpoint.pt", 0.0
    resumed: dict | None = None
    if cfg.resume and ckpt.exists():
        state, saved = load_checkpoint(ckpt)
        resumed = state
        if saved.config != model.config:
            raise ModelError(f"{ckpt} is a {saved.config} run, not this run's {model.config}: "
                             "use another --out, or --set resume=false to start over")
        model.load_state_dict(saved.state_dict())
        opt.load_state_dict(state["opt"])
        step, done = state["step"], float(state.get("minutes", 0.0))
        torch.set_rng_state(state["rng"])
        rng.setstate(state["py_rng"])
    elif cfg.init:  # e.g. continue the shipped model, or grow it into a wider one
        moments = None
        if cfg.init.endswith(".pt"):  # another run's checkpoint: its weights and moments
            state, src = load_checkpoint(Path(cfg.init))
            moments = state["opt"]
        else:
            src = load_model(cfg.init).net.float()
        try:
            grow(src, model)
        except ValueError as e:
            raise ModelError(f"{cfg.init} is a {src.config}, not this run's {model.config} "
                             f"({e})") from None
        if moments is not None:
            carry_moments(opt, moments, src, model, bool(state["config"].get("freeze_early")),
                          cfg.freeze_early)
        if (src.config.width, src.config.coarse) != (cfg.width, cfg.coarse) and rank == 0:
            print(f"grown from width {src.config.width} (coarse {src.config.coarse}) to "
                  f"{cfg.width} (coarse {cfg.coarse}): the same reconstructions to start with, "
                  "the new channels' outgoing weights at zero", flush=True)
    rate = RateModel.new(dev, resumed) if cfg.rate else None
    if rate is not None and world > 1:
        raise ValueError("rate trains on one device only (its context net is not data-parallel)")
    out.mkdir(parents=True, exist_ok=True)  # only once data, settings and weights proved usable
    if world > 1:  # each rank its own patches and binarizer noise, derived from the shared state
        rng.seed(rng.getrandbits(64) + rank)
        torch.manual_seed(rng.getrandbits(63))
    bank = patch_bank(train_pool, cfg.bank, cfg.patch, rng, dev) if cfg.bank else None
    net, main = wrap(model, world, cfg.compile), rank == 0
    log = open_log(out / "log.csv", cfg.iterations) if main else None
    tb = tensorboard_writer(out) if cfg.tensorboard and main else None
    start, last_val, last_step, skipped = time.time() - 60 * done, time.time(), step, 0
    last_save = time.time()
    # patches/s from the step rate; shown on a terminal only (None), so logs stay clean
    bar = tqdm(total=cfg.steps * cfg.batch * world, initial=step * cfg.batch * world,
               unit="patch", unit_scale=True, disable=None if main else True, leave=False)
    if main and step == 0 and cfg.init:  # where the run starts, for comparison
        log_validation(model, val, cfg, 0, float("nan"), 0.0, 0, log, tb, bar)
    model.train()
    interrupted = False
    with stop_requests() if world == 1 else nullcontext(lambda: False) as stop_asked:
        while step < cfg.steps:
            if stop_asked():
                interrupted = True
                break
            elapsed = (time.time() - start) / 60
            if world > 1 and cfg.minutes:  # rank 0's clock, so all ranks agree on lr and stop
                clock = torch.tensor([elapsed], device=dev)
                dist.broadcast(clock, 0)
                elapsed = clock.item()
            if cfg.minutes and elapsed > cfg.minutes:
                break
            progress = max(step / cfg.steps, elapsed / cfg.minutes if cfg.minutes else 0)
            lr = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1))))
            for group in opt.param_groups:  # warm-up, then cosine decay to 5% over the run
                group["lr"] = lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else lr
            batch = (bank_batch(bank, cfg.batch) if bank is not None
                     else draw_batch(train_pool, cfg, rng).to(dev, non_blocking=True))
            batch = batch.contiguous(memory_format=_layout(cfg))
            opt.zero_grad(set_to_none=True)
            parts: dict[str, float] = {}
            loss = train_step(net, batch, cfg, rate.net if rate else None,
                              rate.weight(cfg, step) if rate else 0.0, parts)
            if torch.isfinite(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)):
                opt.step()  # a non-finite gradient (e.g. MS-SSIM at a zero contrast) is skipped
            else:
                skipped += 1
            if rate is not None:
                rate.step(parts["bits"])
            step += 1
            bar.update(cfg.batch * world)
            if step % 10 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if main and (step % cfg.val_every == 0 or step == cfg.steps):
                speed = world * (step - last_step) * cfg.batch / max(time.time() - last_val, 1e-9)
                last_val, last_step = time.time(), step
                log_validation(model, val, cfg, step, loss.item(), speed, skipped, log, tb, bar,
                               rate.report() if rate else None)
            if main and (step % cfg.val_every == 0 or step == cfg.steps
                         or time.time() - last_save > 60 * cfg.checkpoint_minutes):
                save_checkpoint(ckpt, model, opt, step, cfg, rng, (time.time() - start) / 60, rate)
                last_save = time.time()
    bar.close()
    weights = out / "model.safetensors"
    if main:
        save_checkpoint(ckpt, model, opt, step, cfg, rng, (time.time() - start) / 60, rate)
        if log is not None:
            log.close()
        if tb is not None:
            tb.close()
        save_weights(model.cpu(), weights)
        if interrupted:
            print(f"stopped at step {step}; the checkpoint in {out} resumes the run", flush=True)
    if world > 1:  # no rank returns before rank 0's files exist: a resume must find them
        # The DDP wrapper holds the process group: free it first, so that the group is torn
        # down here, by destroy, and not later when this frame ends.
        del net
        dist.barrier()
        dist.destroy_process_group()
    if interrupted:  # saved: now end as an interrupted command does
        raise KeyboardInterrupt
    return weights
