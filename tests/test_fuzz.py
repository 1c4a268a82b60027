"""Fuzzing the .rnnc parser, the entropy decoders and the decoder network (hypothesis).

The property, for every input: ``decompress`` returns an image of the size and mode the header
declares, or raises a subclass of ``RnncError`` with a one-line message; ``info`` and
``truncate`` obey the same rule; nothing takes unbounded time (``TIME_LIMIT_S`` per example) and
declared sizes are refused before anything is allocated for them.

The inputs are mutations of valid files (one per registered entropy coder, and a gray one):
bit flips, byte insertions / deletions, truncations, random chunk lengths, payload edits under
recomputed chunk CRCs, random header fields under a recomputed header CRC (so the fuzzer gets
past the checksums into the coders and the network), random containers and random bytes; and
mutated image files for the encoder's input side.

Bounded for CI (the file runs in well under a minute on two cores). To fuzz harder locally:
``RNNCODEC_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py`` (examples per test) and/or
``RNNCODEC_FUZZ_SECONDS=600`` (adds a plain random-mutation loop of that many seconds);
``--hypothesis-seed=N`` replays a run, ``--hypothesis-show-statistics`` shows the outcomes.
"""

from __future__ import annotations

import io
import os
import struct
import time
from collections import Counter

import numpy as np
import pytest
import torch
from hostile_helpers import (
    FUZZ_MAX_PIXELS,
    Seeds,
    check_message,
    chunk_offsets,
    decode_or_refuse,
    flip_bit,
    gradient,
    header_size,
    hostile_seeds,
    kind_of,
    max_rss_mb,
    raw_header,
    with_chunks,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import event as _event
from hypothesis import strategies as st
from PIL import Image

from rnncodec import codec
from rnncodec.entropy import CODER_NAMES
from rnncodec.errors import FormatError, RnncError
from rnncodec.format import MAX_SIDE, pack_chunk, parse
from rnncodec.tiling import MAX_REGION_PIXELS

__all__ = ["hostile_seeds"]  # a fixture, imported for pytest

EXAMPLES = int(os.environ.get("RNNCODEC_FUZZ_EXAMPLES", "0"))
SECONDS = float(os.environ.get("RNNCODEC_FUZZ_SECONDS", "0"))
SEED_NAMES = [*CODER_NAMES, "context-gray", "context-tiled"]
U32 = 2**32 - 1


STATS: Counter[str] = Counter()  # outcomes of the current test (printed with -s)


def event(outcome: str) -> None:
    STATS[outcome] += 1
    _event(outcome)


@pytest.fixture(autouse=True)
def _stats(request: pytest.FixtureRequest) -> None:
    STATS.clear()
    yield
    if STATS:
        print(f"\n{request.node.name}: {dict(sorted(STATS.items()))}")


def check(blob: bytes, model: str | None) -> str:
    """The fuzzing property (see ``decode_or_refuse``); returns the outcome's class name."""
    detail = decode_or_refuse(blob, model, details=True)
    event(detail)
    return detail.split(":")[0]


def fuzz(examples: int) -> settings:
    return settings(max_examples=EXAMPLES or examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def test_every_registered_coder_is_fuzzed(hostile_seeds: Seeds) -> None:
    assert set(CODER_NAMES) <= set(hostile_seeds.files)
    for name, data in hostile_seeds.files.items():
        c = parse(data)
        assert c.header.coder == CODER_NAMES[name.split("-")[0]]
        assert decode_or_refuse(data, hostile_seeds.model) == "ok"


# --- mutations of whole files ---------------------------------------------------------------


def test_bit_flips(hostile_seeds: Seeds) -> None:
    @fuzz(300)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        blob = hostile_seeds.files[data.draw(st.sampled_from(SEED_NAMES))]
        bits = data.draw(st.lists(st.integers(0, len(blob) * 8 - 1), min_size=1, max_size=8,
                                  unique=True))
        for b in bits:
            blob = flip_bit(blob, b)
        outcome = check(blob, hostile_seeds.model)
        if len(bits) == 1:  # CRC-32 catches every single-bit error, in the container
            assert outcome == "FormatError"
            with pytest.raises(FormatError):
                parse(blob)

    run()


edit = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 8)),
    st.tuples(st.just("replace"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
)


def apply_edits(blob: bytes, edits: list[tuple]) -> bytes:
    b = bytearray(blob)
    for kind, pos, arg in edits:
        pos %= len(b) + 1
        if kind == "insert":
            b[pos:pos] = arg
        elif kind == "delete":
            del b[pos:pos + arg]
        else:
            b[pos:pos + len(arg)] = arg
    return bytes(b)


def test_byte_insertions_deletions_and_overwrites(hostile_seeds: Seeds) -> None:
    @fuzz(300)
    @given(st.sampled_from(SEED_NAMES), st.lists(edit, min_size=1, max_size=4))
    def run(name: str, edits: list[tuple]) -> None:
        check(apply_edits(hostile_seeds.files[name], edits), hostile_seeds.model)

    run()


def test_truncations_and_trailing_bytes(hostile_seeds: Seeds) -> None:
    @fuzz(200)
    @given(st.sampled_from(SEED_NAMES), st.data(),
           st.one_of(st.just(b""), st.binary(max_size=12)))
    def run(name: str, data: st.DataObject, tail: bytes) -> None:
        blob = hostile_seeds.files[name]
        near = [b + d for b in chunk_offsets(blob) + [len(blob)] for d in (-1, 0, 1)]
        cut = data.draw(st.one_of(st.sampled_from([c for c in near if c <= len(blob)]),
                                  st.integers(0, len(blob))))
        outcome = check(blob[:cut] + tail, hostile_seeds.model)
        if not tail:  # only chunk boundaries (after the first chunk) are valid ends
            boundaries = chunk_offsets(blob)[1:] + [len(blob)]
            assert (outcome == "ok") == (cut in boundaries), (cut, boundaries, outcome)

    run()


def test_random_chunk_lengths(hostile_seeds: Seeds) -> None:
    """A chunk's length field set to anything, its CRC recomputed over the new span if it fits."""
    lengths = st.one_of(st.integers(0, U32), st.integers(0, 300),
                        st.sampled_from([0, 1, 3, 4, 5, 2**31 - 1, 2**31, U32 - 7, U32]))

    @fuzz(300)
    @given(st.sampled_from(SEED_NAMES), st.data(), lengths, st.booleans())
    def run(name: str, data: st.DataObject, n: int, recrc: bool) -> None:
        blob = bytearray(hostile_seeds.files[name])
        offsets = chunk_offsets(bytes(blob))
        index = data.draw(st.integers(0, len(offsets) - 1))
        pos = offsets[index]
        struct.pack_into(">I", blob, pos, n)
        if recrc and pos + 8 + n <= len(blob):
            crc = pack_chunk(index, bytes(blob[pos + 4:pos + 4 + n]))[-4:]
            blob[pos + 4 + n:pos + 8 + n] = crc
        check(bytes(blob), hostile_seeds.model)

    run()


# --- past the checksums: edited payloads and headers with valid CRCs ------------------------


payload_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 63), st.integers(0, 10**5)),
    st.tuples(st.just("replace"), st.integers(0, 63), st.binary(max_size=96)),
    st.tuples(st.just("resize"), st.integers(0, 63), st.integers(-9, 9)),
    st.tuples(st.just("drop"), st.integers(0, 63), st.none()),
    st.tuples(st.just("duplicate"), st.integers(0, 63), st.none()),
    st.tuples(st.just("swap"), st.integers(0, 63), st.integers(0, 63)),
    st.tuples(st.just("foreign"), st.integers(0, 63), st.sampled_from(SEED_NAMES)),
)


def apply_payload_ops(chunks: list[bytes], ops: list[tuple], seeds: Seeds) -> list[bytes]:
    chunks = list(chunks)
    for kind, i, arg in ops:
        if not chunks:
            break
        i %= len(chunks)
        p = chunks[i]
        if kind == "flip" and p:
            chunks[i] = flip_bit(p, arg % (len(p) * 8))
        elif kind == "replace":
            chunks[i] = arg
        elif kind == "resize":
            chunks[i] = p[:len(p) + arg] if arg < 0 else p + bytes(range(arg))
        elif kind == "drop":
            del chunks[i]
        elif kind == "duplicate":
            chunks.insert(i, p)
        elif kind == "swap":
            j = arg % len(chunks)
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif kind == "foreign":  # a chunk of another file (another coder, image or size)
            other = parse(seeds.files[arg]).chunks
            chunks[i] = other[i % len(other)]
    return chunks


def test_payload_edits_under_valid_crcs(hostile_seeds: Seeds) -> None:
    """Edited payloads reach the entropy decoders and the network: the coders' own checks act."""
    outcomes: Counter[str] = Counter()

    @fuzz(500)
    @given(st.sampled_from(SEED_NAMES), st.lists(payload_op, min_size=1, max_size=4))
    def run(name: str, ops: list[tuple]) -> None:
        blob = hostile_seeds.files[name]
        chunks = apply_payload_ops(parse(blob).chunks, ops, hostile_seeds)
        outcomes[check(with_chunks(blob, chunks), hostile_seeds.model)] += 1

    run()
    if not EXAMPLES or EXAMPLES >= 100:
        # the fuzzer got past the CRCs: some edits still decode (dropped or duplicated raw
        # chunks), others are caught by the coders (length checks, desync checksums)
        assert outcomes["ok"] and outcomes["FormatError"], outcomes


dims = st.one_of(st.integers(1, 300), st.integers(0, U32),
                 st.sampled_from([0, 1, 15, 16, 17, 4096, MAX_SIDE, MAX_SIDE + 1, 1_000_000,
                                  U32]))
names = st.one_of(st.just(b"tiny"), st.just(b"tiny-other"), st.just(b"rgru-rs-w25"),
                  st.binary(max_size=40), st.text(max_size=20).map(str.encode))


def test_random_header_fields_under_a_valid_crc(hostile_seeds: Seeds) -> None:
    """One to three header fields set to anything, the rest kept, the header CRC recomputed."""
    fields = {
        "version": st.integers(0, 255),
        "flags": st.one_of(st.sampled_from([0, 1]), st.integers(0, 255)),
        "width": dims, "height": dims,
        "coder": st.one_of(st.sampled_from(sorted(CODER_NAMES.values())), st.integers(0, 255)),
        "name": names, "digest": st.binary(min_size=16, max_size=16),
    }

    @fuzz(500)
    @given(st.sampled_from(SEED_NAMES), st.sets(st.sampled_from(sorted(fields)), min_size=1,
                                                max_size=3), st.data())
    def run(name: str, changed: set[str], data: st.DataObject) -> None:
        blob = hostile_seeds.files[name]
        real = parse(blob).header
        values = {"version": 1, "flags": int(real.gray), "width": real.width,
                  "height": real.height, "coder": real.coder, "name": real.model.encode(),
                  "digest": real.digest}
        values |= {k: data.draw(fields[k], label=k) for k in sorted(changed)}
        model = data.draw(st.sampled_from([hostile_seeds.model, None]), label="model")
        check(raw_header(**values) + blob[header_size(blob):], model)

    run()


def test_random_containers(hostile_seeds: Seeds) -> None:
    """Valid header and CRCs around arbitrary payloads, for any size: deep into every coder.

    Raw payloads of exactly the right length are always valid codes, so they must decode.
    """
    real = parse(hostile_seeds.raw).header
    outcomes: Counter[str] = Counter()

    @fuzz(400)
    @given(st.integers(1, 100), st.integers(1, 100), st.booleans(),
           st.sampled_from(sorted(CODER_NAMES.items())), st.integers(1, 4), st.data())
    def run(width: int, height: int, gray: bool, coder: tuple[str, int], n: int,
            data: st.DataObject) -> None:
        blocks = 32 * -(-width // 16) * -(-height // 16)
        exact = (blocks + 7) // 8
        payloads = [data.draw(st.one_of(st.binary(max_size=200),
                                        st.binary(min_size=exact, max_size=exact)))
                    for _ in range(n)]
        blob = raw_header(flags=int(gray), width=width, height=height, coder=coder[1],
                          name=real.model.encode(), digest=real.digest)
        blob += b"".join(pack_chunk(i, p) for i, p in enumerate(payloads))
        outcome = check(blob, hostile_seeds.model)
        outcomes[f"{coder[0]}:{outcome}"] += 1
        if coder[0] == "raw" and all(len(p) == exact for p in payloads):
            assert outcome == "ok"

    run()
    if not EXAMPLES or EXAMPLES >= 100:
        assert outcomes["raw:ok"] and outcomes["context:FormatError"], outcomes


def test_random_bytes(hostile_seeds: Seeds) -> None:
    prefixes = st.sampled_from([b"", b"RNNC", b"RNNC\x01", b"RNNC\x01\x00",
                                hostile_seeds.raw[:header_size(hostile_seeds.raw)]])

    @fuzz(300)
    @given(prefixes, st.binary(max_size=600), st.sampled_from([hostile_seeds.model, None]))
    def run(prefix: bytes, tail: bytes, model: str | None) -> None:
        check(prefix + tail, model)

    run()


# --- sizes declared in a header are checked before anything is allocated --------------------


@pytest.fixture()
def no_big_allocations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Booby-trap the allocators the decoder uses: a refused header must reach none of them."""
    def trap(*args: object, **kwargs: object) -> None:
        raise AssertionError("allocated before refusing the declared size")

    for module, name in [(torch, "zeros"), (torch, "full"), (np, "zeros"), (np, "full"),
                         (np, "unpackbits"), (np, "empty")]:
        monkeypatch.setattr(module, name, trap)


@pytest.mark.parametrize("width,height", [
    (1_000_000, 1_000_000), (MAX_SIDE, MAX_SIDE), (MAX_SIDE + 1, 1), (1, U32), (U32, U32),
    (0, 20), (20, 0), (0, 0),
    (8001, 8000),  # a plausible header, but over the decoder's default 64-megapixel limit
])
@pytest.mark.parametrize("coder", ["raw", "context"])
def test_huge_declared_sizes_fail_fast(width: int, height: int, coder: str,
                                       hostile_seeds: Seeds, no_big_allocations: None) -> None:
    blob = hostile_seeds.files[coder]
    real = parse(blob).header
    header = raw_header(width=width, height=height, coder=CODER_NAMES[coder],
                        name=real.model.encode(), digest=real.digest)
    hostile = header + blob[header_size(blob):]
    rss = max_rss_mb()
    start = time.perf_counter()
    with pytest.raises(FormatError) as e:
        codec.decompress(hostile, model=hostile_seeds.model)
    assert time.perf_counter() - start < 1.0
    assert max_rss_mb() - rss < 50
    message = check_message(e.value)
    assert "implausible image size" in message or "over the limit" in message
    assert f"{width}×{height}" in message


@pytest.mark.slow
def test_worst_garbage_chunk_under_the_default_limit_is_bounded(hostile_seeds: Seeds) -> None:
    """The most work a tiny untiled file can cause before it is refused: a garbage
    context-coded chunk for the longest grid an untiled file may declare (2²¹ pixels in whole
    blocks: 16 × 131072, the most diagonals), refused by the desync check after walking the
    whole grid; the 61 × 2²⁰ grid the pixel limit once allowed is refused up front."""
    real = parse(hostile_seeds.context).header

    def blob(width: int, height: int) -> bytes:
        return raw_header(width=width, height=height, coder=CODER_NAMES["context"],
                          name=real.model.encode(), digest=real.digest) + pack_chunk(0, bytes(8))

    start = time.perf_counter()
    with pytest.raises(FormatError, match="desync"):
        codec.decompress(blob(16, MAX_REGION_PIXELS // 16), model=hostile_seeds.model)
    assert time.perf_counter() - start < 60
    with pytest.raises(FormatError, match="16-pixel blocks"):
        codec.decompress(blob(61, MAX_SIDE), model=hostile_seeds.model)


# --- the input side: mutated image files ----------------------------------------------------


def _image_files() -> dict[str, bytes]:
    rgb = gradient(24, 20, seed=9)
    base = Image.fromarray(rgb)
    exif = base.getexif()
    exif[0x0112] = 6
    out = {}
    for fmt, image, kw in [("PNG", base, {"exif": exif}), ("JPEG", base, {"exif": exif}),
                           ("GIF", base.convert("P"), {}), ("BMP", base, {}),
                           ("TIFF", base, {"compression": "tiff_lzw"}), ("WEBP", base, {}),
                           ("PPM", base.convert("L"), {}), ("PNG", base.convert("I;16"), {})]:
        buf = io.BytesIO()
        image.save(buf, format=fmt, **kw)
        out[f"{fmt}-{image.mode}"] = buf.getvalue()
    return out


IMAGE_FILES = _image_files()


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on damaged EXIF / TIFF tags
def test_mutated_image_files(hostile_seeds: Seeds) -> None:
    """compress() on damaged PNG / JPEG / GIF / BMP / TIFF / WebP / PPM bytes: an .rnnc file
    or an RnncError (ImageError), never a Pillow exception."""
    @fuzz(300)
    @given(st.sampled_from(sorted(IMAGE_FILES)), st.lists(edit, min_size=1, max_size=3),
           st.integers(0, 10**6))
    def run(name: str, edits: list[tuple], cut: int) -> None:
        blob = apply_edits(IMAGE_FILES[name], edits)
        blob = blob[:max(8, cut % (len(blob) + 1))] if cut % 4 == 0 else blob
        try:
            data = codec.compress(blob, iterations=1, model=hostile_seeds.model, coder="raw",
                                  max_pixels=FUZZ_MAX_PIXELS)
        except RnncError as e:
            check_message(e)
            event(f"{type(e).__name__}: {kind_of(e)}")
        else:
            h = parse(data).header
            assert h.width * h.height <= FUZZ_MAX_PIXELS
            event("ok")

    run()


# --- a time-boxed random loop for local runs ------------------------------------------------


def mutate(rng: np.random.Generator, blob: bytes) -> bytes:
    b = bytearray(blob)
    for _ in range(int(rng.integers(1, 5))):
        op, pos = int(rng.integers(0, 5)), int(rng.integers(0, len(b) + 1))
        if op == 0 and b:
            b[min(pos, len(b) - 1)] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            b[pos:pos] = rng.bytes(int(rng.integers(1, 9)))
        elif op == 2:
            del b[pos:pos + int(rng.integers(1, 9))]
        elif op == 3:
            b = b[:pos]
        else:
            b[pos:pos + 4] = rng.bytes(4)
    return bytes(b)


@pytest.mark.skipif(not SECONDS, reason="set RNNCODEC_FUZZ_SECONDS to fuzz for that long")
def test_fuzz_for_a_while(hostile_seeds: Seeds) -> None:
    rng = np.random.default_rng(int(os.environ.get("RNNCODEC_FUZZ_SEED", "0")))
    end, outcomes = time.monotonic() + SECONDS, Counter()
    while time.monotonic() < end:
        name = SEED_NAMES[int(rng.integers(len(SEED_NAMES)))]
        blob = hostile_seeds.files[name]
        if rng.random() < 0.5:  # under valid CRCs
            chunks = [mutate(rng, c) if rng.random() < 0.5 else c for c in parse(blob).chunks]
            blob = with_chunks(blob, chunks)
        else:
            blob = mutate(rng, blob)
        outcomes[decode_or_refuse(blob, hostile_seeds.model)] += 1
    print(dict(outcomes))
