"""The one results format: every evaluator writes it, the report and plots read it.

Described field by field in docs/results-schema.md. JSON has no infinity or NaN, so non-finite
numbers (the PSNR of a lossless point, say) are written as the strings "inf", "-inf" and "nan";
``null`` means "not measured". The CSV holds the same points, one per row, with the same words.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA = "rnncodec-results/1"
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_TEXT_FIELDS = {"codec", "image", "image_sha256"}


@dataclass(frozen=True)
class Point:
    """One image coded by one codec at one setting."""

    codec: str
    setting: int
    image: str
    image_sha256: str
    width: int
    height: int
    bytes: int
    bpp: float
    ms_ssim: float | None = None
    ms_ssim_luma: float | None = None
    psnr: float | None = None
    psnr_hvs: float | None = None
    encode_s: float | None = None
    decode_s: float | None = None
    encode_peak_rss: int | None = None
    decode_peak_rss: int | None = None


@dataclass(frozen=True)
class CodecInfo:
    name: str
    label: str
    setting_name: str
    settings: list[int]
    version: str


@dataclass(frozen=True)
class Results:
    command: str
    created: str
    dataset: str
    environment: dict[str, str]
    codecs: list[CodecInfo]
    points: list[Point]
    schema: str = field(default=SCHEMA)


def encode_number(v: Any) -> Any:
    """A JSON-safe value: non-finite floats become "inf", "-inf" or "nan"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def decode_number(v: Any) -> Any:
    return _NON_FINITE.get(v, v) if isinstance(v, str) else v


def point_to_dict(p: Point) -> dict[str, Any]:
    return {k: encode_number(v) for k, v in asdict(p).items()}


def point_from_dict(d: dict[str, Any]) -> Point:
    return Point(**{k: v if k in _TEXT_FIELDS else decode_number(v) for k, v in d.items()})


def write_json(results: Results, path: Path) -> None:
    doc = asdict(results)
    doc["points"] = [point_to_dict(p) for p in results.points]
    doc = {"schema": doc.pop("schema"), **doc}
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")


def read_json(path: Path) -> Results:
    doc = json.loads(path.read_text())
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a {SCHEMA} file (schema {doc.get('schema')!r})")
    return Results(doc["command"], doc["created"], doc["dataset"], doc["environment"],
                   [CodecInfo(**c) for c in doc["codecs"]],
                   [point_from_dict(p) for p in doc["points"]])


def write_csv(points: list[Point], path: Path) -> None:
    names = [f.name for f in fields(Point)]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for p in points:
            w.writerow("" if v is None else encode_number(v) for v in asdict(p).values())
