"""The block map of adaptive files: exact round trips, a cheap map when nothing stops, and
maps that cannot restart a block or that a hostile file garbles."""

from __future__ import annotations

import numpy as np
import pytest

from rnncodec.entropy import blockmap
from rnncodec.entropy.rangecoding import range_code
from rnncodec.errors import FormatError


def _maps(shape: tuple[int, int], iterations: int, seed: int = 0) -> list[np.ndarray]:
    """Nested maps, each within the one before: blocks stop in clumps and never restart."""
    rng = np.random.default_rng(seed)
    quality = rng.random(shape) + np.linspace(0, 1, shape[1])[None, :]
    coded, out = np.ones(shape, bool), []
    for t in range(iterations):
        coded = coded & (quality < 2 - 0.2 * t)
        out.append(coded)
    return out


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 9), (40, 64)])
def test_maps_round_trip(shape: tuple[int, int]) -> None:
    was = np.ones(shape, bool)
    for t, coded in enumerate(_maps(shape, 8), 1):
        if not coded.any():
            break
        payload = blockmap.encode(coded, was)
        assert np.array_equal(blockmap.decode(payload, was, t), coded)
        was = coded


def test_a_map_where_nothing_stops_is_empty() -> None:
    was = _maps((6, 7), 3)[1]
    assert blockmap.encode(was, was) == b""
    assert np.array_equal(blockmap.decode(b"", was, 3), was)


def test_a_map_costs_about_its_entropy() -> None:
    """Clumped stops cost well under one bit per decision."""
    maps = _maps((40, 64), 6)
    payload = blockmap.encode(maps[3], maps[2])
    assert 0 < len(payload) * 8 < 0.5 * maps[2].sum()


def test_a_stopped_block_cannot_restart() -> None:
    was = np.ones((2, 2), bool)
    was[0, 0] = False
    with pytest.raises(ValueError, match="cannot restart"):
        blockmap.encode(np.ones((2, 2), bool), was)


def test_a_map_read_against_other_blocks_is_refused() -> None:
    """Blocks stopped before take no decision, so a map names only blocks coded before: read
    with a block stopped that the writer had coded, it is refused."""
    coded = np.ones((4, 4), bool)
    coded[3, 3] = False
    payload = blockmap.encode(coded, np.ones((4, 4), bool))
    was = np.ones((4, 4), bool)
    was[0, 0] = False
    with pytest.raises(FormatError, match="malformed"):
        blockmap.decode(payload, was, 2)


def test_maps_that_code_no_block_or_are_not_as_written_are_refused() -> None:
    was = np.ones((3, 3), bool)
    nothing = blockmap.encode(np.zeros((3, 3), bool), was)
    with pytest.raises(FormatError, match="iteration 4's block map codes no block"):
        blockmap.decode(nothing, was, 4)
    some = np.ones((3, 3), bool)
    some[1, 1] = False
    payload = blockmap.encode(some, was)
    with pytest.raises(FormatError, match="iteration 2's block map is malformed"):
        blockmap.decode(payload + bytes(8), was, 2)
    with pytest.raises(FormatError, match="impossible length"):
        blockmap.decode(payload[:-1], was, 2)
    spelled = range_code(np.ones(9, np.int64), np.full(9, 4000))
    with pytest.raises(FormatError, match="malformed"):  # where nothing stops, the map is empty
        blockmap.decode(spelled, was, 2)


@pytest.mark.parametrize("seed", range(20))
def test_garbage_maps_are_a_map_or_a_format_error(seed: int) -> None:
    rng = np.random.default_rng(seed)
    was = rng.random((5, 7)) < 0.7
    garbage = rng.integers(0, 256, 4 * int(rng.integers(1, 4)), np.uint8).tobytes()
    try:
        coded = blockmap.decode(garbage, was, 1)
    except FormatError:
        return
    assert coded.any() and not np.any(coded & ~was)
