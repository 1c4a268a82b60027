"""The adaptive threshold searches, driven by a stand-in encoder with known curves."""

from __future__ import annotations

import pytest

from rnncodec.adaptive import SEARCH_STOP_DB
from rnncodec.ratecontrol import Encoded, Target, fit_quality, fit_rate


class FakeEncoder:
    """Files whose size grows with the block threshold (fewer blocks stop) and whose PSNR is
    the threshold less ``shortfall`` dB; records every call."""

    def __init__(self, shortfall: float = 0.0) -> None:
        self.shortfall = shortfall
        self.calls: list[tuple[float, bool]] = []

    def __call__(self, goal: Target, stop_db: float, loud: bool) -> Encoded:
        self.calls.append((stop_db, loud))
        return Encoded(bytes(round(stop_db * 10)), goal.max_iterations,
                       psnr=stop_db - self.shortfall if goal.psnr is not None else None)


def test_fit_rate_takes_the_highest_threshold_that_fits() -> None:
    enc = FakeEncoder()
    budget_bytes = 400  # thresholds up to 40 dB fit
    e = fit_rate(enc, Target(bpp=budget_bytes * 8 / 1000), 1000)
    assert len(e.data) <= budget_bytes
    tried = [t for t, _ in enc.calls]
    assert tried[0] == SEARCH_STOP_DB[1] and len(tried) <= 5
    assert e.data == bytes(round(max(t for t in tried if t * 10 <= budget_bytes) * 10))
    assert not any(loud for _, loud in enc.calls)


def test_fit_rate_stops_at_once_when_the_best_file_fits() -> None:
    enc = FakeEncoder()
    e = fit_rate(enc, Target(bpp=1e6), 1000)
    assert [t for t, _ in enc.calls] == [SEARCH_STOP_DB[1]] and len(e.data) == 500


def test_fit_quality_returns_the_first_encode_when_it_reaches_the_target() -> None:
    enc = FakeEncoder()
    e = fit_quality(enc, Target(psnr=30.0))
    assert enc.calls == [(30.0, True)] and e.psnr == 30.0


def test_fit_quality_bisects_for_the_smallest_file_that_reaches_it() -> None:
    enc = FakeEncoder(shortfall=2.0)  # a threshold T gives T − 2 dB: 32 dB is needed for 30
    e = fit_quality(enc, Target(psnr=30.0))
    assert e.psnr is not None and e.psnr >= 30.0
    assert enc.calls[0] == (30.0, True) and enc.calls[1] == (SEARCH_STOP_DB[1], False)
    assert all(not loud for _, loud in enc.calls[1:]) and len(enc.calls) == 5
    reached = [t for t, _ in enc.calls if t - 2 >= 30]
    assert len(e.data) == round(min(reached) * 10)


def test_fit_quality_returns_the_highest_threshold_when_nothing_reaches_it() -> None:
    enc = FakeEncoder(shortfall=100.0)
    e = fit_quality(enc, Target(psnr=30.0))
    assert [t for t, _ in enc.calls] == [30.0, SEARCH_STOP_DB[1]]
    assert len(e.data) == SEARCH_STOP_DB[1] * 10


@pytest.mark.parametrize("kw, met", [({"psnr": 30.0}, True), ({"psnr": 31.0}, False),
                                     ({"ms_ssim": 0.9}, False), ({"bpp": 1.0}, False)])
def test_met_by_reads_the_targets_metric(kw: dict, met: bool) -> None:
    assert Target(**kw).met_by(Encoded(b"", 1, psnr=30.0)) is met
