"""The .rnnc container (header, chunks, truncation, corruption) and the raw bit coder."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncodec import codec
from rnncodec.entropy import CODER_NAMES, PRIOR_KEY, coder_name, make_coder
from rnncodec.entropy.context import N_CONTEXTS, ContextCoder, fit_prior
from rnncodec.entropy.raw import RawCoder
from rnncodec.errors import FormatError
from rnncodec.format import (
    MAGIC,
    MAX_ITERATIONS,
    MAX_PIXELS,
    MAX_SIDE,
    VERSION,
    Header,
    assemble,
    pack_chunk,
    parse,
)

DIGEST = bytes(range(16))


def _header(**kw) -> Header:
    fields = {"width": 40, "height": 24, "gray": False, "coder": 0, "model": "tiny",
              "digest": DIGEST} | kw
    return Header(**fields)


def _with_header_crc(data: bytes, header_end: int) -> bytes:
    """Recompute the header CRC after editing header bytes (to reach the later checks)."""
    body = data[:header_end]
    return body + struct.pack(">I", zlib.crc32(body)) + data[header_end + 4:]


# --- round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("model", ["tiny", "rgru-rs-w25", "modèle-ünïcode", ""])
def test_header_round_trip(gray: bool, model: str) -> None:
    h = _header(gray=gray, model=model, width=MAX_SIDE, height=3)
    c = parse(h.pack())
    assert c.header == h
    assert c.chunks == []
    assert c.header_size == len(h.pack()) == 14 + 2 + len(model.encode()) + 16 + 4


def test_layout_matches_the_spec() -> None:
    h = _header(gray=True, width=0x0102, height=0x0304, coder=0)
    raw = h.pack()
    assert raw[:4] == MAGIC == b"RNNC"
    assert raw[4] == 1 and VERSION == 3  # untiled images keep version 1 (see test_tiling.py)
    assert raw[5] == 1  # gray flag
    assert raw[6:10] == (0x0102).to_bytes(4, "big")
    assert raw[10:14] == (0x0304).to_bytes(4, "big")
    assert raw[14] == 0 and raw[15] == 4
    assert raw[16:20] == b"tiny" and raw[20:36] == DIGEST
    assert raw[36:40] == zlib.crc32(raw[:36]).to_bytes(4, "big")
    chunk = pack_chunk(2, b"abc")
    assert chunk[:4] == (3).to_bytes(4, "big") and chunk[4:7] == b"abc"
    assert chunk[7:] == zlib.crc32(b"\x00\x00\x00\x02abc").to_bytes(4, "big")


def test_chunks_round_trip_and_sizes() -> None:
    h = _header()
    chunks = [b"\x01" * 5, b"", b"\xff" * 17]
    data = assemble(h, chunks)
    c = parse(data)
    assert c.header == h and c.chunks == chunks
    assert c.size_after(0) == c.header_size
    assert c.size_after(3) == len(data)
    assert c.size_after(1) == c.header_size + 5 + 8


def test_reordered_chunks_are_detected() -> None:
    h = _header()
    a, b = pack_chunk(0, b"first"), pack_chunk(1, b"other")
    parse(h.pack() + a + b)
    with pytest.raises(FormatError, match="iteration 1"):
        parse(h.pack() + b + a)


def test_too_many_chunks() -> None:
    h = _header()
    parse(assemble(h, [b"x"] * MAX_ITERATIONS))
    with pytest.raises(FormatError, match=f"more than {MAX_ITERATIONS}"):
        parse(assemble(h, [b"x"] * (MAX_ITERATIONS + 1)))


# --- truncation -----------------------------------------------------------------------------


def test_every_chunk_boundary_is_a_valid_file(rnnc: bytes) -> None:
    full = parse(rnnc)
    assert len(full.chunks) == 6
    for k in range(7):
        cut = rnnc[: full.size_after(k)]
        c = parse(cut)
        assert c.header == full.header
        assert c.chunks == full.chunks[:k]
        assert codec.truncate(rnnc, iterations=max(k, 1)) == rnnc[: full.size_after(max(k, 1))]


def test_cut_file_decodes_like_decompress_with_fewer_iterations(rnnc: bytes,
                                                                 tiny_model: str) -> None:
    full = parse(rnnc)
    decoded = []
    for k in range(1, 7):
        cut = rnnc[: full.size_after(k)]
        a = np.asarray(codec.decompress(cut, model=tiny_model))
        b = np.asarray(codec.decompress(rnnc, iterations=k, model=tiny_model))
        assert np.array_equal(a, b), f"cut after {k} iterations"
        decoded.append(a)
    progressive = [np.asarray(im) for im in codec.decode_iterations(rnnc, model=tiny_model)]
    assert all(np.array_equal(x, y) for x, y in zip(progressive, decoded, strict=True))
    assert not np.array_equal(decoded[0], decoded[-1])  # the iterations do change the image


def test_cut_inside_a_chunk_or_the_header_is_an_error(rnnc: bytes) -> None:
    full = parse(rnnc)
    boundaries = {full.size_after(k) for k in range(7)}
    assert max(boundaries) == len(rnnc)
    for n in range(len(rnnc)):
        if n in boundaries:
            continue
        with pytest.raises(FormatError):
            parse(rnnc[:n])
    with pytest.raises(FormatError, match="truncated inside iteration 3"):
        parse(rnnc[: full.size_after(2) + 6])


def test_a_cut_stream_gives_its_complete_chunks_when_allowed(rnnc: bytes) -> None:
    """allow_cut: data that ends anywhere inside a chunk (its length, payload or CRC) parses to
    the chunks before it, and says which iteration was cut; at boundaries nothing is cut."""
    full = parse(rnnc)
    for n in range(full.header_size, len(rnnc) + 1):
        c = parse(rnnc[:n], allow_cut=True)
        k = len(c.chunks)
        assert c.header == full.header and c.chunks == full.chunks[:k]
        assert full.size_after(k) <= n < full.size_after(k + 1) or n == len(rnnc)
        if n == full.size_after(k):
            assert c.cut is None
            assert parse(rnnc[:n]) == c
        else:
            assert c.cut == f"file truncated inside iteration {k + 1}"


def test_allowing_a_cut_still_refuses_what_is_damaged(rnnc: bytes) -> None:
    """A cut is only data missing at the end: damage to what is there, or a cut header, is
    still an error."""
    full = parse(rnnc)
    cut = rnnc[:full.size_after(3) + 5]
    damaged = bytearray(cut)
    damaged[full.size_after(1) + 6] ^= 1  # inside the complete second chunk
    with pytest.raises(FormatError, match="checksum mismatch in iteration 2"):
        parse(bytes(damaged), allow_cut=True)
    with pytest.raises(FormatError, match="truncated inside the header"):
        parse(rnnc[:full.header_size - 1], allow_cut=True)
    with pytest.raises(FormatError, match="magic"):
        parse(b"RNN", allow_cut=True)
    extra = rnnc + b"\x00\x00\x00\x01x" + struct.pack(">I", 0)  # a whole chunk, wrong CRC
    with pytest.raises(FormatError, match="checksum mismatch in iteration 7"):
        parse(extra, allow_cut=True)


def test_a_cut_filter_chunk_leaves_the_iterations(rnnc: bytes) -> None:
    """Cut inside the filter chunk: the iterations are all complete, without the filter."""
    full = parse(rnnc)
    filtered = assemble(full.header, full.chunks, b"\x01\x00" + bytes(12))
    start = len(filtered) - 22  # its length, 14 bytes of payload and its CRC follow
    for n in range(start + 1, len(filtered)):
        c = parse(filtered[:n], allow_cut=True)
        assert c.chunks == full.chunks and c.filter is None
        assert c.cut == ("file truncated inside the filter chunk" if n >= start + 4
                         else "file truncated inside iteration 7")  # the length: can't tell
        with pytest.raises(FormatError, match="truncated"):
            parse(filtered[:n])
    assert parse(filtered, allow_cut=True).filter == b"\x01\x00" + bytes(12)


def test_cut_file_is_refused_by_decompress(rnnc: bytes, tiny_model: str) -> None:
    with pytest.raises(FormatError, match="truncated"):
        codec.decompress(rnnc[:-1], model=tiny_model)


def test_header_only_file_holds_no_iterations(rnnc: bytes, tiny_model: str) -> None:
    header_only = rnnc[: parse(rnnc).header_size]
    assert parse(header_only).chunks == []
    with pytest.raises(FormatError, match="no iterations"):
        codec.decompress(header_only, model=tiny_model)


# --- corruption -----------------------------------------------------------------------------


def test_every_flipped_byte_is_detected(rnnc: bytes) -> None:
    for pos in range(len(rnnc)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(rnnc)
            bad[pos] ^= mask
            with pytest.raises(FormatError):
                parse(bytes(bad))


def test_flipped_payload_bit_is_refused_by_decompress(rnnc: bytes, tiny_model: str) -> None:
    bad = bytearray(rnnc)
    bad[-6] ^= 0x10  # inside the last payload
    with pytest.raises(FormatError, match="checksum mismatch in iteration 6"):
        codec.decompress(bytes(bad), model=tiny_model)


@pytest.mark.parametrize("data", [b"", b"RN", b"RNNX" + bytes(40), b"\x89PNG\r\n\x1a\n" + bytes(40),
                                  b"GIF89a"])
def test_wrong_magic(data: bytes) -> None:
    with pytest.raises(FormatError, match="magic"):
        parse(data)


def test_wrong_version() -> None:
    raw = bytearray(_header().pack())
    raw[4] = 5
    with pytest.raises(FormatError, match="version 5"):
        parse(bytes(raw))
    end = len(raw) - 4
    with pytest.raises(FormatError, match="version 5"):  # even with a valid header CRC
        parse(_with_header_crc(bytes(raw), end))


def test_unknown_flags() -> None:
    raw = bytearray(_header().pack())
    raw[5] = 0x02
    with pytest.raises(FormatError, match="flags"):
        parse(_with_header_crc(bytes(raw), len(raw) - 4))


def test_model_name_must_be_utf8() -> None:
    raw = bytearray(_header(model="abcd").pack())
    raw[16] = 0xFF
    with pytest.raises(FormatError, match="UTF-8"):
        parse(_with_header_crc(bytes(raw), len(raw) - 4))


@pytest.mark.parametrize("width, height", [(0, 10), (10, 0), (MAX_SIDE + 1, 1), (1, 2 ** 32 - 1),
                                           (2 ** 15, 2 ** 14), (MAX_SIDE, MAX_SIDE)])
def test_implausible_sizes_are_refused_by_the_parser(width: int, height: int) -> None:
    data = assemble(_header(width=width, height=height), [b"\x00"])
    with pytest.raises(FormatError, match="implausible image size"):
        parse(data)


def test_huge_declared_size_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch,
                                                         tiny_model: str) -> None:
    """Sizes the parser allows but the decoder's pixel limit does not, untiled sizes over what
    the networks run on at once, and sizes within the limits whose chunk is far too short: all
    fail without a large allocation."""
    real_zeros = torch.zeros

    def guarded_zeros(*size, **kw):
        shape = size[0] if len(size) == 1 and isinstance(size[0], tuple | list) else size
        assert int(np.prod(shape)) < 10_000_000, f"allocated {shape}"
        return real_zeros(*size, **kw)

    monkeypatch.setattr(torch, "zeros", guarded_zeros)
    digest = codec.load_model(tiny_model).digest
    side = 2 ** 14  # 2^28 pixels: the largest a header may declare at all
    assert side * side == MAX_PIXELS
    huge = assemble(_header(width=side, height=side, model="tiny", digest=digest), [b"\x00"])
    assert parse(huge).header.width == side
    with pytest.raises(FormatError, match="over the limit"):
        codec.decompress(huge, model=tiny_model)
    with pytest.raises(FormatError, match="over the limit"):
        codec.decompress(assemble(_header(width=64, height=64, model="tiny", digest=digest),
                                  [bytes(64)]), model=tiny_model, max_pixels=1000)
    untiled = assemble(_header(width=8000, height=8000, model="tiny", digest=digest), [b"\x00"])
    with pytest.raises(FormatError, match="untiled image of 8000×8000 pixels, more than"):
        codec.decompress(untiled, model=tiny_model)
    within = assemble(_header(width=8000, height=8000, model="tiny", digest=digest, tile=512),
                      [b"\x00"])
    with pytest.raises(FormatError, match="raw chunk holds 1 bytes"):
        codec.decompress(within, model=tiny_model)


# --- entropy coders -------------------------------------------------------------------------


def test_coder_registry() -> None:
    assert CODER_NAMES["raw"] == 0 and CODER_NAMES["context"] == 1
    assert len(set(CODER_NAMES.values())) == len(CODER_NAMES)  # ids are unique
    assert coder_name(0) == "raw" and coder_name(1) == "context"
    assert isinstance(make_coder("raw", {}), RawCoder)
    assert isinstance(make_coder("context", {}), ContextCoder)
    for name in ("raw", "context"):
        coder = make_coder(name, {})
        assert coder.coder_id == CODER_NAMES[name] and coder.name == name
        assert coder_name(coder.coder_id) == name
    with pytest.raises(ValueError, match="unknown entropy coder"):
        make_coder("zip", {})
    with pytest.raises(FormatError, match="#7"):
        coder_name(7)


def _code_sequence(shape: tuple, n: int, seed: int = 0) -> list[np.ndarray]:
    """Codes that look like a codec's: correlated across iterations and neighbours."""
    rng = np.random.default_rng(seed)
    base = rng.random(shape) < 0.5
    return [(base ^ (rng.random(shape) < 0.1 + 0.05 * t)).astype(np.uint8) for t in range(n)]


@pytest.mark.parametrize("shape", [(32, 1, 1), (32, 2, 3), (32, 5, 4), (32, 1, 9)])
@pytest.mark.parametrize("with_prior", [False, True])
def test_context_coder_round_trip(shape: tuple, with_prior: bool) -> None:
    codes = _code_sequence(shape, 4, seed=shape[1] * 10 + shape[2])
    prior = fit_prior([(c, codes[:i]) for i, c in enumerate(codes)]) if with_prior else None
    if prior is not None:
        assert prior.dtype == np.uint16 and prior.min() >= 1 and prior.max() <= 4095
    enc = ContextCoder(None if prior is None else prior.astype(np.int64))
    dec = ContextCoder(None if prior is None else prior.astype(np.int64))
    for t, c in enumerate(codes):
        payload = enc.encode(c, codes[:t])
        assert payload == enc.encode(c, codes[:t])  # deterministic
        out = dec.decode(payload, shape, codes[:t])
        assert out.dtype == np.uint8 and np.array_equal(out, c)


def test_context_coder_compresses_predictable_codes() -> None:
    shape = (32, 8, 8)
    ones = np.ones(shape, np.uint8)
    payload = ContextCoder().encode(ones, [ones, ones])
    assert len(payload) < 0.7 * len(RawCoder().encode(ones, []))
    assert np.array_equal(ContextCoder().decode(payload, shape, [ones, ones]), ones)


def test_context_coder_refuses_bad_payloads() -> None:
    shape = (32, 3, 3)
    codes = _code_sequence(shape, 1)[0]
    payload = ContextCoder().encode(codes, [])
    for bad in (b"", b"abc", payload + b"x"):
        with pytest.raises(FormatError, match="impossible length"):
            ContextCoder().decode(bad, shape, [])
    flipped = bytearray(payload)
    flipped[0] ^= 1  # the checksum of the codes
    with pytest.raises(FormatError, match="desync"):
        ContextCoder().decode(bytes(flipped), shape, [])
    # decoding with other context (previous codes) than the encoder used is detected
    other = _code_sequence(shape, 1, seed=5)
    payload2 = ContextCoder().encode(codes, other)
    assert np.array_equal(ContextCoder().decode(payload2, shape, other), codes)
    with pytest.raises(FormatError, match="desync"):
        ContextCoder().decode(payload2, shape, [np.ones(shape, np.uint8)])


# a CRC-valid context-coded chunk for a 64×64 image that the range decoder itself rejects
INVALID_RANGE_CODE = bytes.fromhex(
    "16765374544384bd37aca3abbca9f8e36dbe1b934d40003237f4d5f13f3e7cb64446fad5a07719f4")


@pytest.mark.parametrize("name", ["raw", "context"])
def test_garbage_payloads_decode_or_raise_format_error(name: str) -> None:
    """Whatever a CRC-valid chunk holds, a coder returns codes of the right shape or raises
    FormatError: never another exception (which the CLI would show as a traceback)."""
    coder = make_coder(name, {})
    rng = np.random.default_rng(0)
    outcomes = {"ok": 0, "error": 0}
    for shape in [(32, 1, 1), (32, 2, 3), (32, 4, 4)]:
        for n in [0, 3, 4, 8, 12, 40, 60, 400]:
            for _ in range(12):
                payload = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
                try:
                    codes = coder.decode(payload, shape, [])
                except FormatError:
                    outcomes["error"] += 1
                else:
                    outcomes["ok"] += 1
                    assert codes.shape == shape and set(np.unique(codes)) <= {0, 1}
    assert outcomes["error"] > 0
    with pytest.raises(FormatError):
        make_coder("context", {}).decode(INVALID_RANGE_CODE, (32, 4, 4), [])


def test_invalid_range_code_in_a_file_is_a_format_error(tiny_model: str) -> None:
    digest = codec.load_model(tiny_model).digest
    data = assemble(_header(width=64, height=64, coder=1, digest=digest), [INVALID_RANGE_CODE])
    with pytest.raises(FormatError):
        codec.decompress(data, model=tiny_model)


@settings(max_examples=150, deadline=None)
@given(cut=st.integers(min_value=0, max_value=400), edits=st.lists(
    st.tuples(st.integers(min_value=0, max_value=400), st.integers(min_value=1, max_value=255)),
    max_size=3))
def test_mutated_files_parse_or_raise_format_error(rnnc: bytes, cut: int,
                                                   edits: list[tuple[int, int]]) -> None:
    data = bytearray(rnnc[:cut] if cut < len(rnnc) else rnnc)
    for pos, mask in edits:
        if data:
            data[pos % len(data)] ^= mask
    try:
        c = parse(bytes(data))
    except FormatError:
        return
    # whatever parses is a prefix of the real file, cut at a chunk boundary
    assert bytes(data) == rnnc[: c.size_after(len(c.chunks))]


def test_model_tables_feed_the_context_coder(tmp_path) -> None:
    from conftest import build_tiny

    from rnncodec import zoo

    prior = np.full(N_CONTEXTS, 3000, np.int16)
    path = tmp_path / "with-table.safetensors"
    digest = zoo.save_weights(build_tiny(seed=8), path, name="tab",
                              tables={PRIOR_KEY: torch.from_numpy(prior)})
    loaded = zoo.load_model(str(path))
    assert loaded.digest == digest and PRIOR_KEY in loaded.tables
    coder = make_coder("context", loaded.tables)
    assert np.array_equal(coder.prior, prior.astype(np.int64))
    # the table is part of the weights hash
    plain = tmp_path / "plain.safetensors"
    assert zoo.save_weights(build_tiny(seed=8), plain, name="tab") != digest


@pytest.mark.parametrize("shape", [(32, 1, 1), (32, 3, 5), (3, 1, 1)])
def test_raw_coder_round_trip(shape: tuple) -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2, shape, dtype=np.uint8)
    coder = RawCoder()
    payload = coder.encode(codes, [])
    assert len(payload) == (codes.size + 7) // 8
    assert np.array_equal(coder.decode(payload, shape, []), codes)
    with pytest.raises(FormatError, match="expected"):
        coder.decode(payload + b"\x00", shape, [])
    with pytest.raises(FormatError):
        coder.decode(payload[:-1], shape, [])


def test_raw_coder_bit_order() -> None:
    codes = np.zeros((32, 1, 1), np.uint8)
    codes[0] = 1  # first code → most significant bit of the first byte
    codes[9] = 1
    assert RawCoder().encode(codes, []) == bytes([0x80, 0x40, 0, 0])


def test_unknown_coder_in_a_file_is_refused(rnnc: bytes, tiny_model: str) -> None:
    c = parse(rnnc)
    h = c.header
    other = Header(h.width, h.height, h.gray, 9, h.model, h.digest)
    data = assemble(other, c.chunks)
    with pytest.raises(FormatError, match="entropy coder #9"):
        codec.decompress(data, model=tiny_model)
    with pytest.raises(FormatError, match="entropy coder #9"):
        codec.info(data).as_dict()


def test_adaptive_header_is_version_4_with_a_tile_field() -> None:
    for tile in (0, 64):
        header = _header(tile=tile, adaptive=True)
        raw = header.pack()
        assert raw[4] == 4 and parse(raw).header == header


def test_adaptive_payloads_split_into_map_and_codes() -> None:
    from rnncodec.format import pack_adaptive, split_adaptive

    assert split_adaptive(pack_adaptive(b"map!", b"codes"), 1) == (b"map!", b"codes")
    assert split_adaptive(pack_adaptive(b"", b""), 1) == (b"", b"")
    with pytest.raises(FormatError, match="iteration 3 is too short to hold its block map"):
        split_adaptive(b"\0\0\0", 3)
    with pytest.raises(FormatError, match=r"iteration 2's block map \(9 bytes\) overruns its "
                                          r"chunk \(12 bytes\)"):
        split_adaptive(b"\0\0\0\x09" + bytes(8), 2)


def test_adaptive_files_may_end_with_a_filter() -> None:
    header = _header(adaptive=True)
    data = assemble(header, [b"\0\0\0\0a", b"\0\0\0\0b"], b"filter")
    c = parse(data)
    assert c.header.adaptive and c.filter == b"filter" and len(c.chunks) == 2
