"""The registered models and how each is built: names and numbers only, no torch.

``zoo`` loads and builds the networks; this module is what the command line needs to list the
models and show its defaults, so ``rnncodec models`` and ``--help`` start without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .defaults import MAX_ITERATIONS

CELL_NAMES = ("lstm", "assoc-lstm", "gru", "residual-gru")  # cells.CELLS, in that order
FRAMEWORKS = ("one-shot", "additive", "residual-scaling")
WEIGHTS_DIR = Path(__file__).parent / "weights"
MAX_PRIME = 8
TUNES = ("ms-ssim", "psnr")  # the metric a model's loss favours (libaom's --tune)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model; stored beside its weights."""

    cell: str = "residual-gru"
    framework: str = "residual-scaling"
    width: float = 1.0
    # decoder steps on the first iteration's bits before its reconstruction ("priming",
    # Johnston et al. 2018): the hidden state gathers wider context, at that many extra steps
    prime: int = 0
    # channel multiplier (on top of ``width``) of the layers at 1/8 and 1/16 scale: the
    # encoder's last two RNNs and the decoder's first two, where channels cost little
    coarse: float = 1.0
    # from this iteration (1-based) on, a second encoder, binarizer and decoder of the same
    # shape code the residual (0: one set for all): weights for late residuals, no extra FLOPs
    late_from: int = 0

    def __post_init__(self) -> None:
        if self.cell not in CELL_NAMES:
            raise ValueError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELL_NAMES)}")
        if self.framework not in FRAMEWORKS:
            raise ValueError(f"unknown framework {self.framework!r}; choose one of {FRAMEWORKS}")
        if not 0 < self.width <= 4:
            raise ValueError("width must be in (0, 4]")
        if not 0 <= self.prime <= MAX_PRIME:
            raise ValueError(f"prime must be between 0 and {MAX_PRIME} decoder steps")
        if not 1 <= self.coarse <= 4:
            raise ValueError("coarse must be in [1, 4]")
        if self.late_from and not 2 <= self.late_from <= MAX_ITERATIONS:
            raise ValueError(f"late_from must be 0 or between 2 and {MAX_ITERATIONS}")

    def to_dict(self) -> dict[str, str | float]:
        """The stored form; ``prime``, ``coarse`` and ``late_from`` only when set, so that
        other models' metadata is as before."""
        d = asdict(self)
        if not self.prime:
            del d["prime"]
        if self.coarse == 1:
            del d["coarse"]
        if not self.late_from:
            del d["late_from"]
        return d


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: ModelConfig
    description: str
    tune: str = "ms-ssim"

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"


_W25 = ModelConfig("residual-gru", "residual-scaling", 0.25, late_from=9)  # both tunes' network

MODELS: dict[str, ModelSpec] = {
    s.name: s for s in [
        ModelSpec("rgru-rs-w25", _W25,
                  "Residual GRU, residual scaling, width 0.25, own networks from iteration 9 "
                  "(see its model card)"),
        ModelSpec("rgru-rs-w25-psnr", _W25,
                  "rgru-rs-w25 fine-tuned for PSNR, own networks from iteration 9 (see its "
                  "model card)", tune="psnr"),
    ]
}
DEFAULT_MODEL = "rgru-rs-w25"


def model_for(tune: str) -> str:
    """The registered model that ``--tune`` picks: the first one tuned so (the default first)."""
    if tune not in TUNES:
        raise ValueError(f"unknown tune {tune!r}; choose one of {', '.join(TUNES)}")
    return next(s.name for s in MODELS.values() if s.tune == tune)
