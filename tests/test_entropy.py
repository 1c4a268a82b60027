"""Entropy coders: exact round trips, real savings on structured codes, and desync detection."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from rnncodec.entropy import AUTO, CODER_NAMES, coder_name, make_coder, resolve
from rnncodec.entropy.best import BestCoder
from rnncodec.entropy.context import ContextCoder, diagonals, fit_prior
from rnncodec.entropy.neural import (
    STEPS,
    ContextNet,
    IntContextNet,
    NeuralCoder,
    quantize,
    step_mask,
)
from rnncodec.entropy.rangecoding import ONE
from rnncodec.errors import FormatError, ModelError

SHAPE = (32, 6, 9)


def structured_codes(iterations: int, shape=SHAPE, seed: int = 0) -> list[np.ndarray]:
    """Codes with the kinds of redundancy the coders model: per-channel bias, spatial runs and
    agreement with the previous iteration."""
    rng = np.random.default_rng(seed)
    bias = rng.uniform(0.1, 0.9, size=(shape[0], 1, 1))
    out = []
    for t in range(iterations):
        fresh = (rng.random(shape) < bias).astype(np.uint8)
        smooth = np.repeat(fresh[:, :, ::3], 3, axis=2)[:, :, :shape[2]]
        keep = rng.random(shape) < 0.5
        out.append(np.where(keep, out[-1], smooth) if t else smooth)
    return [c.astype(np.uint8) for c in out]


@pytest.fixture(scope="module")
def neural_tables() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return quantize(ContextNet())


def coders(tables: dict[str, torch.Tensor]):
    prior = fit_prior([(c, []) for c in structured_codes(1, seed=9)])
    return [make_coder("raw", {}), ContextCoder(None), ContextCoder(prior.astype(np.int64)),
            NeuralCoder(tables)]


def test_every_coder_round_trips_every_iteration(neural_tables) -> None:
    codes = structured_codes(4)
    for coder in coders(neural_tables):
        for t, c in enumerate(codes):
            payload = coder.encode(c, codes[:t])
            assert np.array_equal(coder.decode(payload, c.shape, codes[:t]), c), coder.name


@pytest.mark.parametrize("shape", [(32, 1, 1), (32, 1, 7), (32, 5, 1), (32, 3, 3)])
def test_odd_grids_round_trip(shape, neural_tables) -> None:
    codes = structured_codes(2, shape)
    for coder in coders(neural_tables):
        payload = coder.encode(codes[1], codes[:1])
        assert np.array_equal(coder.decode(payload, shape, codes[:1]), codes[1])


def test_context_coder_saves_bits_on_structured_codes() -> None:
    codes = structured_codes(6, (32, 16, 24))
    raw = sum(c.size / 8 for c in codes)
    ctx = sum(len(ContextCoder(None).encode(c, codes[:t])) for t, c in enumerate(codes))
    assert ctx < 0.9 * raw


def test_a_fitted_prior_helps_the_context_coder() -> None:
    train = structured_codes(3, (32, 16, 24), seed=1)
    prior = fit_prior([(c, train[:t]) for t, c in enumerate(train)]).astype(np.int64)
    assert prior.min() >= 1 and prior.max() < ONE
    test = structured_codes(3, (32, 16, 24), seed=1)
    plain = sum(len(ContextCoder(None).encode(c, test[:t])) for t, c in enumerate(test))
    fitted = sum(len(ContextCoder(prior).encode(c, test[:t])) for t, c in enumerate(test))
    assert fitted < plain


def test_diagonals_visit_every_position_once_after_its_neighbours() -> None:
    seen = np.full((5, 7), -1)
    for k, (ys, xs) in enumerate(diagonals(5, 7)):
        assert (seen[ys, xs] == -1).all()
        seen[ys, xs] = k
    assert (seen >= 0).all()
    assert (seen[:, 1:] > seen[:, :-1]).all() and (seen[1:] > seen[:-1]).all()


def test_neural_steps_partition_the_codes_and_never_read_ahead() -> None:
    h, w = 5, 6
    count = torch.zeros(32, h, w)
    done = torch.zeros(32, h, w, dtype=torch.bool)
    for step in range(STEPS):
        known, coded = step_mask(step, h, w)
        assert not (known & ~done).any()  # only bits sent in earlier steps are known
        count += coded
        done |= coded
    assert (count == 1).all()


def test_integer_network_follows_the_float_network() -> None:
    torch.manual_seed(1)
    net = ContextNet()
    x = torch.randint(-1, 2, (98, 7, 9)).float()
    x[64:96] = 0
    x[96] = 3
    with torch.no_grad():
        p_float = torch.sigmoid(net(x[None]))[0]
    ints = IntContextNet(quantize(net))
    p_int = ints.probabilities(ints.history(x), x[64:96]).double() / ONE
    assert (p_int - p_float).abs().max() < 0.05


def test_probabilities_do_not_depend_on_thread_count(neural_tables, tmp_path) -> None:
    """The decoder must reproduce the encoder's probabilities exactly on any thread count."""
    script = (
        "import hashlib, sys, torch\n"
        "torch.set_num_threads(int(sys.argv[1]))\n"
        "from rnncodec.entropy.neural import IntContextNet\n"
        "t = torch.load(sys.argv[2], weights_only=True)\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randint(-16, 17, (98, 40, 56), generator=g).float()\n"
        "n = IntContextNet(t)\n"
        "p = n.probabilities(n.history(x), x[64:96].clamp(-1, 1))\n"
        "print(hashlib.sha256(p.numpy().tobytes()).hexdigest())\n")
    path = tmp_path / "tables.pt"
    torch.save(neural_tables, path)
    outs = {subprocess.run([sys.executable, "-c", script, str(n), str(path)], check=True,
                           capture_output=True, text=True).stdout for n in (1, 2)}
    assert len(outs) == 1


def test_a_decoder_with_other_probabilities_reports_desync(neural_tables) -> None:
    codes = structured_codes(2)
    payload = NeuralCoder(neural_tables).encode(codes[1], codes[:1])
    torch.manual_seed(5)
    other = NeuralCoder(quantize(ContextNet()))
    with pytest.raises(FormatError, match="desync"):
        other.decode(payload, SHAPE, codes[:1])
    ctx_payload = ContextCoder(None).encode(codes[1], codes[:1])
    with pytest.raises(FormatError, match="desync"):
        ContextCoder(None).decode(ctx_payload, SHAPE, [])


@pytest.mark.parametrize("payload", [b"", b"abc", b"\0" * 4, b"\xff" * 64])
def test_garbage_payloads_are_format_errors(payload, neural_tables) -> None:
    for coder in coders(neural_tables):
        with pytest.raises(FormatError):
            coder.decode(payload, SHAPE, [])


def test_coder_registry_and_auto_choice(neural_tables) -> None:
    assert {coder_name(i) for i in CODER_NAMES.values()} == set(CODER_NAMES)
    assert resolve(AUTO) == "best"
    assert resolve("raw") == "raw"
    with pytest.raises(FormatError):
        coder_name(99)
    with pytest.raises(ModelError):
        make_coder("neural", {})
    with pytest.raises(ValueError):
        make_coder("zip", {})


def test_best_coder_keeps_the_shortest_payload_of_each_iteration(neural_tables) -> None:
    best = make_coder("best", neural_tables)
    singles = [make_coder(n, neural_tables) for n in ("raw", "context", "neural")]
    codes = structured_codes(4)
    for t, c in enumerate(codes):
        payload = best.encode(c, codes[:t])
        lengths = {s.coder_id: len(s.encode(c, codes[:t])) for s in singles}
        assert len(payload) == 1 + min(lengths.values())
        assert lengths[payload[0]] == min(lengths.values())
        assert np.array_equal(best.decode(payload, c.shape, codes[:t]), c)
    noise = np.random.default_rng(3).integers(0, 2, SHAPE, dtype=np.uint8)
    assert best.encode(noise, [])[0] == 0  # nothing beats the raw bits of random codes


def test_best_coder_offers_neural_only_when_the_model_ships_it(neural_tables) -> None:
    codes = structured_codes(1)[0]
    neural = bytes([NeuralCoder.coder_id]) + NeuralCoder(neural_tables).encode(codes, [])
    assert np.array_equal(make_coder("best", neural_tables).decode(neural, SHAPE, []), codes)
    assert set(make_coder("best", {}).coders) == {0, 1}
    with pytest.raises(FormatError, match="cannot decode"):
        make_coder("best", {}).decode(neural, SHAPE, [])
    with pytest.raises(FormatError, match="coder byte is missing"):
        BestCoder([]).decode(b"", SHAPE, [])


def _stopped(codes: list[np.ndarray], seed: int = 1) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The codes of an adaptive file: blocks stop at random iterations and hold STOPPED after,
    and the coded blocks of each iteration."""
    from rnncodec.defaults import STOPPED

    rng = np.random.default_rng(seed)
    stop = rng.integers(1, len(codes) + 1, codes[0].shape[1:])
    stop[0, 0] = len(codes)  # one block codes every iteration
    masks = [stop > t for t in range(len(codes))]
    return [np.where(m[None], c, STOPPED).astype(np.uint8)
            for c, m in zip(codes, masks, strict=True)], masks


def test_every_coder_round_trips_adaptive_iterations(neural_tables) -> None:
    codes, masks = _stopped(structured_codes(4))
    best = BestCoder(coders(neural_tables)[1:])
    for coder in [*coders(neural_tables), best]:
        for t, (c, coded) in enumerate(zip(codes, masks, strict=True)):
            payload = coder.encode(c, codes[:t], coded)
            assert np.array_equal(coder.decode(payload, c.shape, codes[:t], coded), c), \
                coder.name


def test_stopped_blocks_cost_nothing(neural_tables) -> None:
    """Raw sends 32 bits per coded block; the others shrink with the blocks they code."""
    codes, masks = _stopped(structured_codes(4))
    raw = make_coder("raw", {})
    assert len(raw.encode(codes[3], codes[:3], masks[3])) == -(-32 * int(masks[3].sum()) // 8)
    for coder in coders(neural_tables)[1:]:
        assert len(coder.encode(codes[3], codes[:3], masks[3])) < len(
            coder.encode(structured_codes(4)[3], structured_codes(4)[:3]))


def test_a_raw_chunk_must_match_its_coded_blocks() -> None:
    codes, masks = _stopped(structured_codes(2))
    payload = make_coder("raw", {}).encode(codes[1], codes[:1], masks[1])
    with pytest.raises(FormatError, match="raw chunk holds"):
        make_coder("raw", {}).decode(payload, SHAPE, codes[:1], np.ones(SHAPE[1:], bool))
