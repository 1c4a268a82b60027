"""The encoder's bit search: never worse by its own score, frozen blocks kept, files valid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_tiny, gradient_image

from rnncodec import codec
from rnncodec.refine import lookahead, objective, refine, signs
from rnncodec.tiling import DEFAULT_TILE


def _start(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, object, torch.Tensor]:
    """A tiny model, an image and the state and soft values of its first encoder step."""
    net = build_tiny(seed=seed).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(gradient_image(48, 64, seed=seed)).permute(2, 0, 1)[None] / 255 - 0.5
    with torch.inference_mode():  # as the codec runs the encoder
        soft, state = net.encode_soft(x, net.initial_state(x))
    return net, x, state, soft


def _score(net: torch.nn.Module, x: torch.Tensor, state: object, bits: torch.Tensor) -> float:
    """The search's score of ``bits``: this iteration and the look-ahead ones."""
    with torch.no_grad():
        return objective(x, lookahead(net, x, state, bits)).item()


def test_no_steps_keeps_the_encoders_bits() -> None:
    net, x, state, soft = _start()
    assert torch.equal(refine(net, x, state, soft, steps=0), signs(soft))


@pytest.mark.parametrize("seed", [0, 1])
def test_search_never_scores_worse_and_changes_some_bits(seed: int) -> None:
    net, x, state, soft = _start(seed)
    bits = refine(net, x, state, soft, steps=6)
    assert set(bits.unique().tolist()) <= {-1.0, 1.0} and bits.shape == soft.shape
    assert _score(net, x, state, bits) <= _score(net, x, state, signs(soft))
    assert not torch.equal(bits, signs(soft))  # the steps found something better


def test_a_rate_term_can_keep_the_encoders_bits() -> None:
    net, x, state, soft = _start()
    start = signs(soft)
    flips = refine(net, x, state, soft, steps=6)
    assert not torch.equal(flips, start)
    costly = refine(net, x, state, soft, steps=6,  # every changed bit costs far more than it gains
                    rate=lambda bits: 1e3 * float((bits != start).sum()))
    assert torch.equal(costly, start)


def test_frozen_blocks_keep_their_bits() -> None:
    net, x, state, soft = _start()
    frozen = torch.zeros(1, 1, *soft.shape[2:], dtype=torch.bool)
    frozen[..., 0, :] = True  # the top row of blocks, as a tile's context above
    frozen[..., :, 0] = True
    bits = refine(net, x, state, soft, frozen, steps=6)
    expected = signs(soft).expand_as(bits)
    assert torch.equal(bits[frozen.expand_as(bits)], expected[frozen.expand_as(bits)])


@pytest.mark.parametrize("tile", [0, 64])
def test_files_made_with_effort_decode_like_any_other(tile: int, tiny_model: str) -> None:
    rgb = gradient_image(80, 96, seed=3)
    plain = codec.compress(rgb, iterations=2, model=tiny_model, tile=tile)
    searched = codec.compress(rgb, iterations=2, model=tiny_model, tile=tile, effort=1)
    assert plain != searched and codec.info(searched).iterations == 2
    images = list(codec.decode_iterations(searched, model=tiny_model))
    assert np.array_equal(np.asarray(images[-1]),
                          np.asarray(codec.decompress(searched, model=tiny_model)))
    assert codec.compress(rgb, iterations=2, model=tiny_model, tile=tile, effort=0) == plain


@pytest.mark.parametrize(("h", "w"), [(1, 1), (17, 40)])
def test_effort_on_odd_sizes(h: int, w: int, tiny_model: str) -> None:
    rgb = gradient_image(h, w, seed=5)
    data = codec.compress(rgb, iterations=2, model=tiny_model, effort=2)
    assert np.asarray(codec.decompress(data, model=tiny_model)).shape == (h, w, 3)


def test_a_search_tiles_smaller_images(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = gradient_image(48, 600, seed=2)  # wider than one default tile
    monkeypatch.setattr(codec, "SEARCH_TILE_PIXELS", 64 * 64)
    assert codec.info(codec.compress(rgb, iterations=1, model=tiny_model)).header.tile == 0
    searched = codec.compress(rgb, iterations=1, model=tiny_model, effort=1)
    assert codec.info(searched).header.tile == DEFAULT_TILE


def test_negative_effort_is_refused(tiny_model: str) -> None:
    with pytest.raises(ValueError, match="effort"):
        codec.compress(gradient_image(16, 16), iterations=1, model=tiny_model, effort=-1)
