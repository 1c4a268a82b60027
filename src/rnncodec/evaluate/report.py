"""Summaries, rate–distortion plots and the markdown report, all read from a results JSON file.

RD points, for plots and BD-rate: per codec and setting, bpp and each metric averaged over the
images (MS-SSIM averaged before it is put in dB), the usual way to aggregate a sweep. Non-finite
values (the PSNR of a lossless point) are left out of every summary.

AUC (the summary of Toderici et al. 2017): per image, the area ∫ metric d(bpp) under straight
lines between that image's points, taken exactly (trapezoid rule) over the bpp range that every
codec covers on that image — from the highest of the codecs' lowest rates to the lowest of their
highest rates, capped at 2 bpp (16 iterations of the paper's models) — then averaged over the
images. All codecs share each image's range, so their AUCs compare; AUCs from runs with other
codecs or images do not. MS-SSIM is integrated raw (0–1), as in the paper; the PSNRs in dB.

BD-rate: the ``bjontegaard`` package's ``bd_rate`` (PCHIP interpolation of log rate over the
quality range both point sets cover) of each codec against JPEG 4:2:0, MS-SSIM in dB; points
that do not improve on a lower-rate point are dropped first, as the method needs a monotone
curve. Negative means fewer bits than JPEG 4:2:0 for the same quality.

BD-rate over a fixed interval: the same log-rate difference (PCHIP), averaged over a quality
interval fixed per metric (``Metric.interval``: MS-SSIM 0.93–0.99, PSNR 26–33 dB, PSNR-HVS
26–37 dB, the qualities JPEG 4:2:0 reaches at useful rates) instead of over the overlap of the
two curves, which hides a curve that stops rising. Where a curve does not reach across the whole
interval, the part both reach is used and named.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import ms_ssim_db
from .results import Point, Results, read_json

ANCHOR = "jpeg-420"
AUC_MAX_BPP = 2.0
PLOT_MAX_BPP = 2.5
SPEED_AT_BPP = 1.0
MIB = 1 << 20

Curve = tuple[np.ndarray, np.ndarray]  # bpp (ascending), metric
Ranges = dict[str, tuple[float, float]]  # image → bpp range


@dataclass(frozen=True)
class Metric:
    key: str  # the Point field
    label: str
    decibels: bool = False  # plotted and BD-rated as −10·log10(1 − value)
    interval: tuple[float, float] = (0.0, 0.0)  # the fixed BD-rate interval, in raw values

    def scale(self, values: np.ndarray) -> np.ndarray:
        return np.array([ms_ssim_db(v) for v in values]) if self.decibels else values


METRICS = (Metric("ms_ssim", "MS-SSIM", decibels=True, interval=(0.93, 0.99)),
           Metric("ms_ssim_luma", "MS-SSIM luma", decibels=True, interval=(0.93, 0.99)),
           Metric("psnr", "PSNR", interval=(26.0, 33.0)),
           Metric("psnr_hvs", "PSNR-HVS luma", interval=(26.0, 37.0)))


def image_curves(points: Sequence[Point], codec: str, key: str) -> dict[str, Curve]:
    """Per image, its (bpp, metric) points with finite values, sorted by bpp."""
    by_image: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in points:
        v = getattr(p, key)
        if p.codec == codec and v is not None and math.isfinite(v) and math.isfinite(p.bpp):
            by_image[p.image].append((p.bpp, v))
    arrays = {image: np.array(sorted(v)) for image, v in by_image.items()}
    return {image: (a[:, 0], a[:, 1]) for image, a in arrays.items()}


def area(curve: Curve, lo: float, hi: float) -> float:
    """Exact area under a piecewise-linear curve between lo and hi (inside its range)."""
    x, y = curve
    xs = np.unique(np.concatenate(([lo, hi], x[(x > lo) & (x < hi)])))
    return float(np.trapezoid(np.interp(xs, x, y), xs))


def auc_ranges(points: Sequence[Point], codecs: Sequence[str]) -> Ranges:
    """Per image, the bpp range every codec covers, capped at AUC_MAX_BPP; images where that
    range is empty, or that some codec lacks, are left out."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for codec in codecs:
        for image, (x, _) in image_curves(points, codec, "bpp").items():
            spans[image].append((float(x[0]), float(x[-1])))
    ranges = {image: (max(lo for lo, _ in s), min(min(hi for _, hi in s), AUC_MAX_BPP))
              for image, s in spans.items() if len(s) == len(codecs)}
    return {image: (lo, hi) for image, (lo, hi) in sorted(ranges.items()) if lo < hi}


def auc(points: Sequence[Point], codec: str, metric: Metric, ranges: Ranges) -> float:
    """Mean over images of the area under the metric in each image's range; NaN when the codec
    has no values for some image."""
    curves = image_curves(points, codec, metric.key)
    if not ranges or any(image not in curves for image in ranges):
        return math.nan
    return float(np.mean([area(curves[image], lo, hi) for image, (lo, hi) in ranges.items()]))


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def setting_means(points: Sequence[Point], codec: str) -> list[Point]:
    """Per setting, every numeric field averaged over images (image fields left empty)."""
    by_setting: dict[int, list[Point]] = defaultdict(list)
    for p in points:
        if p.codec == codec:
            by_setting[p.setting].append(p)
    numeric = [f.name for f in fields(Point)
               if f.name not in ("codec", "setting", "image", "image_sha256")]
    rows = []
    for s, ps in sorted(by_setting.items()):
        mean: dict[str, Any] = {k: _mean([getattr(p, k) for p in ps]) for k in numeric}
        rows.append(Point(codec=codec, setting=s, image="", image_sha256="", **mean))
    return rows


def rd_points(points: Sequence[Point], codec: str, metric: Metric) -> Curve:
    """The codec's per-setting means with finite values, sorted by bpp, on the display scale."""
    means = sorted((m.bpp, getattr(m, metric.key)) for m in setting_means(points, codec))
    finite = np.array([(b, v) for b, v in means if v is not None and math.isfinite(v)])
    if not len(finite):
        return np.empty(0), np.empty(0)
    return finite[:, 0], metric.scale(finite[:, 1])


def increasing(curve: Curve) -> Curve:
    """The points whose metric beats every lower-rate point (BD needs a monotone curve)."""
    x, y = curve
    if not len(y):
        return curve
    keep = np.concatenate(([True], y[1:] > np.maximum.accumulate(y)[:-1]))
    return x[keep], y[keep]


def bd_rate(points: Sequence[Point], codec: str, metric: Metric, anchor: str = ANCHOR) -> float:
    """Bjøntegaard-delta rate (%) of ``codec`` against ``anchor``; NaN without overlap."""
    from bjontegaard import bd_rate as _bd_rate

    (ra, qa), (rt, qt) = (increasing(rd_points(points, c, metric)) for c in (anchor, codec))
    if len(ra) < 2 or len(rt) < 2:
        return math.nan
    with warnings.catch_warnings():  # it warns on small overlap, and gives NaN on none
        warnings.simplefilter("ignore")
        return float(_bd_rate(ra, qa, rt, qt, method="pchip", require_matching_points=False))


def bd_rate_in(points: Sequence[Point], codec: str, metric: Metric, anchor: str = ANCHOR
               ) -> tuple[float, float, float]:
    """BD-rate (%) of ``codec`` against ``anchor`` over ``metric.interval``, as far as both
    curves reach into it: (rate, lo, hi) with the interval used on the display scale (dB for
    MS-SSIM); NaN when the curves share none of it."""
    from scipy.interpolate import PchipInterpolator

    lo, hi = metric_interval(metric)
    curves = [increasing(rd_points(points, c, metric)) for c in (anchor, codec)]
    if any(len(q) < 2 for _, q in curves):
        return math.nan, lo, hi
    lo, hi = max([lo] + [q[0] for _, q in curves]), min([hi] + [q[-1] for _, q in curves])
    if lo >= hi:
        return math.nan, lo, hi
    fa, ft = (PchipInterpolator(q, np.log10(r)) for r, q in curves)
    mean = (ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)
    return float(100 * (10 ** mean - 1)), float(lo), float(hi)


def equal_quality_rates(points: Sequence[Point], codec: str, metric: Metric = METRICS[0],
                        anchor: str = ANCHOR) -> dict[int, float]:
    """Per setting of ``codec``: its bpp against the bpp the anchor needs for the same mean
    quality, in % (negative: smaller files), the anchor's per-setting means joined by straight
    lines in bpp and the raw metric; NaN outside the anchor's quality range.

    The pointwise reading of a target such as "files 25% smaller than JPEG at equal MS-SSIM",
    where BD-rate averages over a whole range.
    """
    rates, quality = increasing(rd_points(points, anchor, replace(metric, decibels=False)))
    out = {}
    for m in setting_means(points, codec):
        q = getattr(m, metric.key)
        if len(quality) > 1 and q is not None and quality[0] <= q <= quality[-1]:
            out[m.setting] = 100 * (m.bpp / float(np.interp(q, quality, rates)) - 1)
        else:
            out[m.setting] = math.nan
    return out


def _image_count(results: Results) -> int:
    return len({p.image for p in results.points})


def plot(results: Results, out_dir: Path) -> list[Path]:
    """One RD figure per metric, as PNG and SVG; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = []
    for metric in METRICS:
        fig, ax = plt.subplots(figsize=(7, 4.8))
        for info in results.codecs:
            bpp, values = rd_points(results.points, info.name, metric)
            keep = bpp <= PLOT_MAX_BPP
            ax.plot(bpp[keep], values[keep], marker=".", label=info.label, linewidth=1.4)
        ax.set(xlabel="bits per pixel", ylabel=f"{metric.label} (dB)", xlim=(0, PLOT_MAX_BPP),
               title=f"{metric.label} against rate, means over {_image_count(results)} images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        stem = out_dir / f"rd-{metric.key.replace('_', '-')}"
        for ext in ("png", "svg"):
            fig.savefig(stem.with_suffix(f".{ext}"), dpi=120, bbox_inches="tight")
        plt.close(fig)
        pngs.append(stem.with_suffix(".png"))
    return pngs


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or math.isnan(v):
        return "–"
    return "∞" if math.isinf(v) else f"{v:.{digits}f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def mp_per_s(p: Point, seconds: float | None) -> str:
    """Two decimals, four under 0.1 MP/s (a searching encoder would otherwise read 0.00)."""
    if not seconds:
        return "–"
    rate = p.width * p.height / 1e6 / seconds
    return _fmt(rate, 2 if rate >= 0.1 else 4)


def mib(v: float | None) -> str:
    return "–" if v is None else _fmt(v / MIB, 1)


def _label(results: Results, name: str) -> str:
    return next((c.label for c in results.codecs if c.name == name), name)


def _summary_tables(results: Results) -> list[str]:
    pts, header = results.points, ["codec", *(m.label for m in METRICS)]
    ranges = auc_ranges(pts, [c.name for c in results.codecs])
    lows, highs = ([r[i] for r in ranges.values()] for i in (0, 1))
    span = (f"{len(ranges)} images; ranges from {_fmt(float(np.mean(lows)))} to "
            f"{_fmt(float(np.mean(highs)))} bpp on average") if ranges else \
        "no image has a bpp range that every codec covers"
    lines = ["## Area under the RD curve", "",
             ("Higher is better. Per image, the area under straight lines between its points, "
              "over the bpp range every codec covers on that image (capped at 2 bpp), then "
              f"averaged ({span}). MS-SSIM raw (0–1, as in the paper), PSNRs in dB; details in "
              "`rnncodec.evaluate.report`."), "",
             *md_table(header, [[c.label, *(_fmt(auc(pts, c.name, m, ranges)) for m in METRICS)]
                                for c in results.codecs]),
             f"## BD-rate against {_label(results, ANCHOR)} (%)", "",
             ("Negative: fewer bits for the same quality. Per-setting means over images, PCHIP "
              "(`bjontegaard` package), MS-SSIM in dB; – where the quality ranges do not "
              "overlap."), "",
             *md_table(header, [[c.label, *(_fmt(bd_rate(pts, c.name, m), 1) for m in METRICS)]
                                for c in results.codecs if c.name != ANCHOR]),
             *_fixed_bd_table(results)]
    return lines


def _fixed_bd_table(results: Results) -> list[str]:
    def span(m: Metric) -> str:
        lo, hi = m.interval
        return f"{lo:g}–{hi:g}" + (" dB" if not m.decibels else "")

    def cell(codec: str, m: Metric) -> str:
        rate, lo, hi = bd_rate_in(results.points, codec, m)
        full = metric_interval(m)
        if math.isnan(rate) or (lo, hi) == full:
            return _fmt(rate, 1)
        if m.decibels:  # named in the header's raw units
            return f"{_fmt(rate, 1)} ({_fmt(1 - 10 ** (-lo / 10), 4)}–" \
                   f"{_fmt(1 - 10 ** (-hi / 10), 4)} only)"
        return f"{_fmt(rate, 1)} ({_fmt(lo, 1)}–{_fmt(hi, 1)} dB only)"

    return [f"## BD-rate against {_label(results, ANCHOR)} over fixed quality intervals (%)", "",
            ("As above, over the same quality interval for every codec (MS-SSIM in dB), so a "
             "curve that stops rising inside it cannot hide; where a curve falls short, the "
             "part both curves reach is named."), "",
            *md_table(["codec", *(f"{m.label} {span(m)}" for m in METRICS)],
                      [[c.label, *(cell(c.name, m) for m in METRICS)]
                       for c in results.codecs if c.name != ANCHOR])]


def metric_interval(metric: Metric) -> tuple[float, float]:
    """``metric.interval`` on the display scale (dB for MS-SSIM)."""
    lo, hi = metric.scale(np.array(metric.interval))
    return float(lo), float(hi)


def _speed_table(results: Results) -> list[str]:
    rows = []
    for c in results.codecs:
        means = setting_means(results.points, c.name)
        if means:
            p = min(means, key=lambda m: abs(m.bpp - SPEED_AT_BPP))
            rows.append([c.label, f"{c.setting_name} {p.setting}", _fmt(p.bpp),
                         mp_per_s(p, p.encode_s), mp_per_s(p, p.decode_s),
                         mib(p.encode_peak_rss), mib(p.decode_peak_rss)])
    return [f"## Speed and memory near {SPEED_AT_BPP:g} bpp", "",
            ("Megapixels per second and peak RSS growth (MiB) of one encode or decode in the "
             "evaluating process, means over images, at each codec's setting closest to "
             f"{SPEED_AT_BPP:g} bpp; `rnncodec.evaluate.measure` says what is measured, and "
             "`benchmarks/speed_memory.py` times codecs in isolated processes."), "",
            *md_table(["codec", "setting", "bpp", "encode MP/s", "decode MP/s", "encode MiB",
                       "decode MiB"], rows)]


def _operating_points(results: Results) -> list[str]:
    anchor = _label(results, ANCHOR)
    lines = ["## Operating points", "",
             (f"Means over images. \"vs {anchor}\": the file size against {anchor}'s at the same "
              f"MS-SSIM, in % (negative: smaller), {anchor}'s points joined by straight lines; "
              f"– outside their range."), ""]
    for c in results.codecs:
        equal = equal_quality_rates(results.points, c.name)
        rows = [[str(p.setting), _fmt(p.bpp), _fmt(equal.get(p.setting), 1), _fmt(p.ms_ssim, 4),
                 _fmt(None if p.ms_ssim is None else ms_ssim_db(p.ms_ssim), 2),
                 _fmt(p.ms_ssim_luma, 4), _fmt(p.psnr, 2), _fmt(p.psnr_hvs, 2),
                 _fmt(p.encode_s), _fmt(p.decode_s), mib(p.encode_peak_rss),
                 mib(p.decode_peak_rss)] for p in setting_means(results.points, c.name)]
        lines += [f"### {c.label}", "", f"`{c.name}`: {c.version}", "",
                  *md_table([c.setting_name, "bpp", f"vs {anchor} (%)", "MS-SSIM", "MS-SSIM dB",
                             "MS-SSIM luma", "PSNR", "PSNR-HVS", "encode s", "decode s",
                             "encode MiB", "decode MiB"], rows)]
    return lines


def markdown(results: Results, plots: Sequence[Path], report: Path, data: Path) -> str:
    """The report: command, set-up, summary tables, plots, speed, and every operating point."""
    def rel(p: Path) -> str:
        return Path(os.path.relpath(p, report.parent)).as_posix()

    env = results.environment
    codecs = [[c.label, f"`{c.name}`", f"{c.setting_name} {', '.join(map(str, c.settings))}",
               c.version] for c in results.codecs]
    lines = ["# Rate–distortion evaluation", "",
             ("Generated by `rnncodec evaluate`; do not edit by hand. Produced, from the "
              "repository root, by:"), "", "```", results.command, "```", "",
             (f"{results.created}: {_image_count(results)} images from `{results.dataset}`; "
              f"{env.get('cpu', '?')}, {env.get('torch_threads', '?')} torch thread(s), "
              f"torch {env.get('torch', '?')}, Python {env.get('python', '?')}. "
              f"Every point: [{rel(data)}]({rel(data)}) and the CSV beside it "
              "(format: docs/results-schema.md)."), "",
             "## Codecs", "", *md_table(["codec", "name", "settings", "version"], codecs),
             *_summary_tables(results),
             "## Rate–distortion curves", "",
             *(f"![{p.stem}]({rel(p)}) ([SVG]({rel(p.with_suffix('.svg'))}))\n" for p in plots),
             *_speed_table(results),
             *_operating_points(results)]
    return "\n".join(lines).rstrip() + "\n"


def render(data: Path, report: Path) -> list[Path]:
    """Read a results JSON file, write the plots beside it and the markdown report."""
    results = read_json(data)
    plots = plot(results, data.parent)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(markdown(results, plots, report, data))
    return [report, *plots]
