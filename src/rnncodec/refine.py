"""Bit search: better bits for the same decoder, paid for in encoding time.

Any 32 bits per block make a valid iteration, so the encoder may send other bits than the signs
of its binarizer's soft values when the decoder makes more of them. ``refine`` starts from
those signs and takes gradient steps on the soft values through the decoder (the sign passes
the gradient straight through), scoring each candidate by the training objective over this
iteration and the next ``LOOKAHEAD`` ones of the closed loop, plus what the bits would cost.
Without the look-ahead, bits tuned for one iteration leave the networks in a state that later
iterations must repair, and the early gain turns into a loss a few iterations on. The
best-scoring candidate is kept, so the score is never worse than that of the encoder's own
bits. Decoding is unchanged: files stay readable by every decoder of the model.

The gain is at low rates, where each bit carries most; the settings below were tuned on
held-out training photos (docs/training-log.md, "Encoder bit search").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .frameworks import CodingState, RNNCompressor, ms_ssim_loss, residual_loss

STEPS = 10  # gradient steps per searched iteration: fewer, even larger ones, find less
LOOKAHEAD = 2  # later iterations each candidate is scored on (see above)
STEP = 0.05  # Adam's step on the soft values, which live in [-1, 1]
MS_SSIM_WEIGHT = 3.0  # the shipped model's training objective: L1 + 3 × (1 − MS-SSIM)
# Weight of the candidate's bits per pixel in its score: searched bits repeat less, so the
# entropy coder saves less on them, and without this term the search buys quality with bytes.
RATE_WEIGHT = 3.0
# The search's autograd holds the networks' activations for every candidate step, far more
# memory per pixel than a plain encode, so with a search ``tile=None`` tiles smaller images
# (defaults.SEARCH_TILE_PIXELS) and searches one tile at a time.


def signs(soft: Tensor) -> Tensor:
    """Bits in {-1, +1}, 0 mapped to +1 as the binarizer does."""
    return torch.where(soft >= 0, 1.0, -1.0)


def objective(image: Tensor, recons: list[Tensor]) -> Tensor:
    """The score of a candidate: what the model was trained to lower, so the search and the
    networks pull the same way."""
    return residual_loss(image, recons) + MS_SSIM_WEIGHT * ms_ssim_loss(image, recons)


def lookahead(net: RNNCompressor, image: Tensor, state: CodingState,
              bits: Tensor) -> list[Tensor]:
    """The reconstructions a candidate is scored on: after ``bits``, and after each of the next
    ``LOOKAHEAD`` iterations of the closed loop."""
    s = net.decode_step(bits, state)
    recons = [s.recon]
    for _ in range(LOOKAHEAD):
        later, s = net.encode_step(image, s, stochastic=False)
        s = net.decode_step(later, s)
        recons.append(s.recon)
    return recons


def _thaw(state: CodingState) -> CodingState:
    """A copy usable by autograd: tensors made under inference mode cannot be saved for it."""
    def copy(states: list) -> list:
        return [None if s is None else tuple(t.clone() for t in s) for s in states]

    return CodingState(state.recon.clone(), copy(state.enc), copy(state.dec), state.iteration)


def refine(net: RNNCompressor, image: Tensor, state: CodingState, soft: Tensor,
           frozen: Tensor | None = None, steps: int = STEPS,
           rate: Callable[[Tensor], float] | None = None) -> Tensor:
    """This iteration's bits (1×32×h×w in {-1, +1}) after ``steps`` gradient steps.

    ``state`` is the coding state after the encoder's step and ``soft`` its soft values;
    blocks where ``frozen`` (1×1×h×w, bool) is set keep the signs of ``soft`` (a tile's
    context blocks, where the caller has put the bits of earlier tiles). ``rate`` gives the bits
    per pixel that candidate bits would cost; ``RATE_WEIGHT`` times it joins their score.
    """
    state = _thaw(state)
    start = signs(soft)
    u = soft.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=STEP)
    best, best_loss = start, math.inf
    with torch.enable_grad():
        for k in range(steps + 1):
            loss = objective(image, lookahead(net, image, state, signs(u) + (u - u.detach())))
            candidate = signs(u.detach())
            score = loss.item() + (RATE_WEIGHT * rate(candidate) if rate else 0.0)
            if score < best_loss:
                best_loss, best = score, candidate
            if k == steps:
                break
            (grad,) = torch.autograd.grad(loss, [u])
            u.grad = grad
            opt.step()
            with torch.no_grad():
                u.clamp_(-1, 1)
                if frozen is not None:
                    u.copy_(torch.where(frozen, start, u))
    return best
