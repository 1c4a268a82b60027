"""A corpus of crafted hostile .rnnc files, each refused with its documented error.

For every case: the API raises the documented ``RnncError`` subclass with one clear line;
``rnncodec decompress`` exits with that error's status, prints exactly one ``rnncodec: error:``
line and no traceback, and leaves no output file and no ``.part`` temp file; ``rnncodec info``
refuses the file too when the fault is in the container (and describes it otherwise). The CLI
runs in-process for every case and as a real subprocess for a few (all of them with -m slow).
The extreme shapes refused untiled also decode, in tiles, within bounded time and memory.
"""

from __future__ import annotations

import resource
import struct
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import (
    Seeds,
    assert_one_error_line,
    check_message,
    chunk_offsets,
    cli_command,
    cli_env,
    declaring,
    flip_bit,
    gradient,
    header_end,
    header_size,
    hostile_seeds,
    invoke,
    listing,
    patch_header,
    png_bytes,
    raw_header,
    recrc_header,
    run_cli,
    with_chunks,
    with_header,
)
from PIL import Image

from rnncodec import codec
from rnncodec.entropy import CODER_NAMES
from rnncodec.errors import FormatError, InputMissingError, ModelError, OutputError, RnncError
from rnncodec.format import MAX_ITERATIONS, MAX_SIDE, parse

__all__ = ["hostile_seeds"]  # a fixture, imported for pytest

# A first context-coded chunk for a 2×3-block grid (no prior, no history) that constriction's
# range decoder itself rejects as invalid compressed data (its AssertionError must not leak).
RANGE_DECODER_REJECTS = bytes.fromhex("556418e597cb88267010ce0a6545727b")


def _chunks(data: bytes) -> list[bytes]:
    return parse(data).chunks


def _set_length(data: bytes, index: int, n: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(">I", b, chunk_offsets(data)[index], n)
    return bytes(b)


def _swap_chunks(s: Seeds) -> bytes:
    """Chunks 1 and 2 swapped, each keeping its own (now misplaced) CRC."""
    data = s.raw
    o = chunk_offsets(data) + [len(data)]
    return data[:o[0]] + data[o[1]:o[2]] + data[o[0]:o[1]] + data[o[2]:]


def _other_image_chunk(s: Seeds) -> bytes:
    """The second chunk of another image of the same size, spliced in with a valid CRC."""
    other = codec.compress(gradient(20, 36, seed=77), iterations=3, model=s.model,
                           coder="context")
    chunks = _chunks(s.context)
    chunks[1] = _chunks(other)[1]
    return with_chunks(s.context, chunks)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Seeds], bytes | None]  # None: see ``special``
    error: type[RnncError]
    match: str  # must appear in the message
    model: str | None = "tiny"  # "tiny", "other" or None (the model named in the file)
    info_fails: bool = True  # a container-level fault: `info` refuses the file as well
    special: str = ""  # "directory" or "missing"
    subprocess: bool = False  # also run as a real subprocess in the default (fast) selection
    cut: int | None = None  # ends inside a chunk, after this many complete ones: the command
    # line decodes those with a warning (refused with --strict) and `info` reports them


def _cases() -> list[Case]:
    C = Case
    ctx = "context"
    cases = [
        C("empty file", lambda s: b"", FormatError, "bad magic"),
        C("bad magic", lambda s: b"RNNX" + s.raw[4:], FormatError, "bad magic"),
        C("a PNG image", lambda s: png_bytes(4, 4), FormatError, "bad magic"),
        C("three bytes of magic", lambda s: s.raw[:3], FormatError, "bad magic"),
        C("wrong version", lambda s: patch_header(s.raw, version=5), FormatError,
          "unsupported .rnnc version 5"),
        C("version 1 header relabelled 2", lambda s: s.raw[:4] + b"\x02" + s.raw[5:],
          FormatError, "header checksum mismatch"),
        C("tile side 0 in a version 2 header", lambda s: _tile_side(s, 0), FormatError,
          "bad tile side 0 in header"),
        C("tile side not a multiple of 16", lambda s: _tile_side(s, 100), FormatError,
          "bad tile side 100 in header"),
        C("tile side under 64", lambda s: _tile_side(s, 48), FormatError,
          "bad tile side 48 in header"),
        C("largest u16 tile side", lambda s: _tile_side(s, 0xFFFF), FormatError,
          "bad tile side 65535 in header"),
        C("wrong version, stale header CRC", lambda s: s.raw[:4] + b"\xff" + s.raw[5:],
          FormatError, "unsupported .rnnc version 255"),
        C("unknown flags", lambda s: patch_header(s.raw, flags=0x81), FormatError,
          "unknown header flags 0x81"),
        C("unknown coder id", lambda s: patch_header(s.raw, coder=7), FormatError,
          "entropy coder #7"),
        C("huge declared size", lambda s: patch_header(s.raw, width=1_000_000,
                                                       height=1_000_000),
          FormatError, "implausible image size 1000000×1000000", subprocess=True),
        C("side over 2**20", lambda s: patch_header(s.raw, width=MAX_SIDE + 1), FormatError,
          "implausible image size"),
        C("area over 2**28", lambda s: patch_header(s.raw, width=MAX_SIDE, height=257),
          FormatError, "implausible image size"),
        C("largest u32 sizes", lambda s: patch_header(s.raw, width=2**32 - 1,
                                                      height=2**32 - 1),
          FormatError, "implausible image size"),
        C("zero width", lambda s: patch_header(s.raw, width=0), FormatError,
          "implausible image size 0×20"),
        C("zero height", lambda s: patch_header(s.raw, height=0), FormatError,
          "implausible image size 36×0"),
        C("over the decoder's pixel limit", lambda s: patch_header(s.raw, width=8001,
                                                                   height=8000),
          FormatError, "over the limit", info_fails=False),
        # valid streams whose networks would need memory growing with the image
        C("untiled 1048576×1 (16.7 MP in whole blocks)", lambda s: declaring(s.raw, 1 << 20, 1),
          FormatError, "untiled image of 1048576×1 pixels (1048576×16 in 16-pixel blocks)",
          info_fails=False, subprocess=True),
        C("untiled 1×1048576", lambda s: declaring(s.raw, 1, 1 << 20), FormatError,
          "untiled image of 1×1048576 pixels (16×1048576 in 16-pixel blocks)", info_fails=False,
          subprocess=True),
        C("untiled, one block row over the region bound", lambda s: declaring(s.raw, 2048, 1040),
          FormatError, "untiled image of 2048×1040 pixels, more than the 2097152",
          info_fails=False),
        C("tiles too large for the image", lambda s: declaring(s.raw, 2048, 2048, tile=0xFFF0),
          FormatError, "a 2048×2048 image in 65520-pixel tiles", info_fails=False),
        C("over the pixel limit only in whole blocks",
          lambda s: declaring(s.raw, 1 << 20, 61, tile=512), FormatError,
          "(1048576×64 in 16-pixel blocks), over the limit", info_fails=False),
        C("truncated in the fixed header", lambda s: s.raw[:10], FormatError,
          "truncated inside the header"),
        C("truncated in the model name", lambda s: s.raw[:18], FormatError,
          "truncated inside the header"),
        C("truncated in the header CRC", lambda s: s.raw[:header_size(s.raw) - 1],
          FormatError, "truncated inside the header"),
        C("model name length past the end", lambda s: _long_name_length(s.raw[:40]),
          FormatError, "truncated inside the header"),
        C("header only", lambda s: s.raw[:header_size(s.raw)], FormatError,
          "holds no iterations", info_fails=False),
        C("chunk length past the end", lambda s: _set_length(s.raw, 0, 2**32 - 1),
          FormatError, "truncated inside iteration 1", cut=0),
        C("chunk length one too long", lambda s: _set_length(s.raw, 0, len(_chunks(s.raw)[0])
                                                             + 1),
          FormatError, "iteration 1"),
        C("chunk length zero", lambda s: _set_length(s.raw, 1, 0), FormatError,
          "iteration 2"),
        C("cut inside the second chunk", lambda s: s.raw[:chunk_offsets(s.raw)[1] + 5],
          FormatError, "truncated inside iteration 2", cut=1),
        C("trailing bytes", lambda s: s.raw + b"\0\0\0", FormatError,
          "truncated inside iteration 4", cut=3),
        C("flipped bit in width", lambda s: flip_bit(s.raw, 6 * 8 + 7), FormatError,
          "header checksum mismatch"),
        C("flipped bit in weights hash", lambda s: flip_bit(s.raw, (header_end(s.raw) - 3) * 8),
          FormatError, "header checksum mismatch"),
        C("flipped bit in header CRC", lambda s: flip_bit(s.raw, header_end(s.raw) * 8 + 31),
          FormatError, "header checksum mismatch"),
        C("flipped bit in a payload", lambda s: flip_bit(s.raw, (chunk_offsets(s.raw)[1] + 6)
                                                         * 8),
          FormatError, "checksum mismatch in iteration 2"),
        C("flipped bit in a chunk CRC", lambda s: flip_bit(s.raw, (chunk_offsets(s.raw)[1] - 1)
                                                           * 8),
          FormatError, "checksum mismatch in iteration 1"),
        C("chunks swapped", _swap_chunks, FormatError, "checksum mismatch in iteration 1"),
        C("65 iterations", lambda s: with_chunks(s.raw, _chunks(s.raw)[:1]
                                                 * (MAX_ITERATIONS + 1)),
          FormatError, "more than 64 iterations"),
        # valid CRCs around bad payloads: the coders' own checks
        C("raw payload one byte short", lambda s: with_chunks(s.raw, [_chunks(s.raw)[0][:-1]]),
          FormatError, "raw chunk holds 23 bytes, expected 24", info_fails=False),
        C("raw payload one byte long", lambda s: with_chunks(s.raw, [_chunks(s.raw)[0] + b"!"]),
          FormatError, "raw chunk holds 25 bytes, expected 24", info_fails=False),
        C("raw payload empty", lambda s: with_chunks(s.raw, [b""]), FormatError,
          "raw chunk holds 0 bytes", info_fails=False),
        C("context payload of garbage", lambda s: with_chunks(s.context, [bytes(range(40))]),
          FormatError, "entropy decoder desync", info_fails=False, subprocess=True),
        C("context payload the range decoder rejects",
          lambda s: with_chunks(s.context, [RANGE_DECODER_REJECTS]), FormatError,
          "entropy decoder desync", info_fails=False),
        C("context payload of impossible length", lambda s: with_chunks(s.context, [b"12345"]),
          FormatError, "impossible length", info_fails=False),
        C("context payload empty", lambda s: with_chunks(s.context, [b""]), FormatError,
          "impossible length", info_fails=False),
        C("context payload with a broken codes CRC",
          lambda s: with_chunks(s.context, [flip_bit(_chunks(s.context)[0], 0)]),
          FormatError, "entropy decoder desync", info_fails=False),
        C("context chunk from another image", _other_image_chunk, FormatError,
          "entropy decoder desync", info_fails=False),
        C("raw chunks under a context header",
          lambda s: patch_header(s.raw, coder=CODER_NAMES[ctx]), FormatError,
          "entropy decoder desync", info_fails=False),
        # the model
        C("wrong weights hash", lambda s: with_header(s.context, digest=bytes(16)), ModelError,
          "file was made by model 'tiny'", info_fails=False),
        C("decoded with another model", lambda s: s.context, ModelError,
          "file was made by model 'tiny'", model="other", info_fails=False),
        C("unknown model name", lambda s: with_header(s.context, model="no-such-model"),
          ModelError, "'no-such-model', which is not installed", model=None,
          info_fails=False),
        C("model name is a path on this machine",
          lambda s: with_header(s.context, model=s.model), ModelError,
          "which is not installed", model=None, info_fails=False),
        C("model name is not UTF-8", lambda s: raw_header(name=b"\xff\xfe") + s.raw[
            header_size(s.raw):], FormatError, "not UTF-8"),
        # the input path
        C("directory", lambda s: None, InputMissingError, "is a directory",
          special="directory", subprocess=True),
        C("missing file", lambda s: None, InputMissingError, "no such file", special="missing"),
    ]
    if "neural" in CODER_NAMES:
        cases += [
            C("neural payload of garbage",
              lambda s: with_chunks(s.files["neural"], [bytes(range(40))]), FormatError,
              "entropy decoder desync", info_fails=False),
            C("neural payload of impossible length",
              lambda s: with_chunks(s.files["neural"], [b"123"]), FormatError,
              "impossible length", info_fails=False),
        ]
    return cases


def _tile_side(s: Seeds, tile: int) -> bytes:
    """The tiled seed with another tile side in its header (valid CRC)."""
    data = s.files["context-tiled"]
    end = header_end(data)
    return recrc_header(data[:end - 2] + struct.pack(">H", tile) + data[end:])


def _long_name_length(data: bytes) -> bytes:
    """A header whose model-name length (255) runs past the end of the file."""
    return data[:15] + b"\xff" + data[16:]


CASES = _cases()
EXIT = {FormatError: 65, ModelError: 65, InputMissingError: 66}


@pytest.fixture()
def case_file(request: pytest.FixtureRequest, hostile_seeds: Seeds, tmp_path: Path) -> Path:
    case: Case = request.param
    path = tmp_path / "case.rnnc"
    if case.special == "directory":
        path.mkdir()
    elif case.special != "missing":
        data = case.build(hostile_seeds)
        assert data is not None
        path.write_bytes(data)
    return path


def _strict(case: Case) -> list[str]:
    """--strict for a cut file, which the command line otherwise decodes as far as it goes
    (``test_cut_files_decode_as_far_as_they_go``)."""
    return [] if case.cut is None else ["--strict"]


def _model_args(case: Case, seeds: Seeds) -> list[str]:
    return {"tiny": ["--model", seeds.model], "other": ["--model", seeds.other_model],
            None: []}[case.model]


def _model(case: Case, seeds: Seeds) -> str | None:
    return {"tiny": seeds.model, "other": seeds.other_model, None: None}[case.model]


def _param(case: Case, fast: bool = True) -> object:
    marks = () if fast else (pytest.mark.slow,)
    return pytest.param(case, case, id=case.name, marks=marks)


def test_every_case_is_distinct(hostile_seeds: Seeds) -> None:
    built = [c.build(hostile_seeds) for c in CASES if not c.special]
    assert len(set(built)) == len(built)
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case,case_file", [_param(c) for c in CASES],
                         indirect=["case_file"])
def test_api_raises_the_documented_error(case: Case, case_file: Path,
                                         hostile_seeds: Seeds) -> None:
    model = _model(case, hostile_seeds)
    sources: list[object] = [case_file]
    if case_file.is_file():
        sources.append(case_file.read_bytes())
    for source in sources:
        with pytest.raises(case.error) as e:
            codec.decompress(source, model=model)
        assert type(e.value) is case.error  # the documented class itself
        assert case.match in check_message(e.value)
        with pytest.raises(case.error):
            list(codec.decode_iterations(source, model=model))
    if case.info_fails:
        with pytest.raises(case.error) as e:
            codec.info(case_file).as_dict()
        check_message(e.value)
        if case.name != "unknown coder id":  # truncate cuts chunks without decoding them
            with pytest.raises(case.error):
                codec.truncate(case_file, iterations=1)
    else:
        codec.info(case_file).as_dict()


def _check_cli(case: Case, folder: Path, decompress: tuple[int, str, str],
               info: tuple[int, str, str], before: set[str]) -> None:
    code, out, err = decompress
    assert code == EXIT[case.error] == case.error.exit_code, err
    message = assert_one_error_line(err, out)
    assert case.match in message
    assert out == ""
    assert listing(folder) == before, "an output or temp file was left behind"
    code, out, err = info
    if case.cut is not None:  # info reports the complete iterations and the cut
        lines = dict((line.split(None, 1) + [""])[:2] for line in out.splitlines())
        assert code == 0 and err == "", err
        assert lines["iterations"] == str(case.cut) and case.match in lines["cut"]
    elif case.info_fails:
        assert code == EXIT[case.error], err
        assert case.match in assert_one_error_line(err, out)
        assert out == ""
    else:
        assert code == 0 and err == "" and "Traceback" not in out, err
        assert out.startswith("width")


@pytest.mark.parametrize("case,case_file", [_param(c) for c in CASES],
                         indirect=["case_file"])
def test_cli_in_process(case: Case, case_file: Path, hostile_seeds: Seeds) -> None:
    folder = case_file.parent
    before = listing(folder)
    d = invoke(["decompress", str(case_file), *_model_args(case, hostile_seeds), *_strict(case)])
    assert d.exception is None or isinstance(d.exception, SystemExit), d.exception
    i = invoke(["info", str(case_file)])
    assert i.exception is None or isinstance(i.exception, SystemExit), i.exception
    _check_cli(case, folder, (d.exit_code, d.stdout, d.stderr),
               (i.exit_code, i.stdout, i.stderr), before)


@pytest.mark.parametrize("case,case_file", [_param(c, c.subprocess) for c in CASES],
                         indirect=["case_file"])
def test_cli_subprocess(case: Case, case_file: Path, hostile_seeds: Seeds) -> None:
    """The installed ``rnncodec`` script, for real: exit status, stderr, files left."""
    folder = case_file.parent
    before = listing(folder)
    with ThreadPoolExecutor(2) as pool:  # the two commands at once: each mostly imports torch
        d = pool.submit(run_cli, ["decompress", case_file.name,
                                  *_model_args(case, hostile_seeds), *_strict(case)], folder)
        i = pool.submit(run_cli, ["info", case_file.name], folder)
        d, i = d.result(), i.result()
    _check_cli(case, folder, (d.returncode, d.stdout, d.stderr),
               (i.returncode, i.stdout, i.stderr), before)


@pytest.mark.parametrize("case,case_file", [_param(c) for c in CASES if c.cut is not None],
                         indirect=["case_file"])
def test_cut_files_decode_as_far_as_they_go(case: Case, case_file: Path,
                                            hostile_seeds: Seeds) -> None:
    """Without --strict: the complete iterations decode with a warning naming them, as the API
    does with allow_cut; none complete is still the cut's one error line."""
    out = case_file.with_suffix(".png")
    r = invoke(["decompress", str(case_file), *_model_args(case, hostile_seeds)])
    if case.cut == 0:
        assert r.exit_code == 65 and case.match in assert_one_error_line(r.stderr, r.stdout)
        assert not out.exists()
        return
    assert r.exit_code == 0, r.stderr
    warning = r.stderr.splitlines()[0]
    assert case.match in warning and f"the {case.cut} complete iteration" in warning
    expected = codec.decompress(case_file, model=hostile_seeds.model, allow_cut=True)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(expected))
    assert codec.info(case_file, allow_cut=True).iterations == case.cut


# --- extreme shapes, as the encoder writes them -----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("width, height", [(1 << 20, 1), (1, 1 << 20)])
def test_extreme_shapes_in_tiles_decode_within_bounds(width: int, height: int,
                                                      hostile_seeds: Seeds,
                                                      tmp_path: Path) -> None:
    """The refused untiled shapes above in 512-pixel tiles, as the encoder codes them: 2048
    tiles one block thin, decoded by the API and the command line within 60 s and 2 GiB."""
    data = declaring(hostile_seeds.raw, width, height, tile=512)
    start = time.perf_counter()
    assert codec.decompress(data, model=hostile_seeds.model).size == (width, height)
    assert time.perf_counter() - start < 60
    (tmp_path / "thin.rnnc").write_bytes(data)
    start = time.perf_counter()
    r = subprocess.run([*cli_command(), "decompress", "thin.rnnc", "--model",
                        hostile_seeds.model, "-q"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120, env=cli_env(), check=False)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert time.perf_counter() - start < 60
    # the largest child this process has waited for, this one included
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 2 << 20  # KiB


# --- every cut and every flipped bit --------------------------------------------------------


@pytest.mark.parametrize("coder", sorted(CODER_NAMES))
def test_cut_at_every_offset_of_the_header_and_first_chunk(coder: str, hostile_seeds: Seeds,
                                                           tmp_path: Path) -> None:
    data = hostile_seeds.files[coder]
    hs, second = header_size(data), chunk_offsets(data)[1]
    for cut in range(second + 1):
        piece = data[:cut]
        if cut == second:
            assert codec.decompress(piece, model=hostile_seeds.model).size == (36, 20)
            continue
        with pytest.raises(FormatError) as e:
            codec.decompress(piece, model=hostile_seeds.model)
        message = check_message(e.value)
        if cut < 4:
            assert "bad magic" in message
        elif cut < hs:
            assert "truncated inside the header" in message
        elif cut == hs:
            assert "holds no iterations" in message
        else:
            assert "truncated inside iteration 1" in message
    # and the command line, in-process, at every offset inside the first chunk
    path = tmp_path / "cut.rnnc"
    for cut in range(hs + 1, second):
        path.write_bytes(data[:cut])
        r = invoke(["decompress", str(path), "--model", hostile_seeds.model, "-q"])
        assert r.exit_code == 65 and isinstance(r.exception, SystemExit), r.exception
        assert "truncated inside iteration 1" in assert_one_error_line(r.stderr, r.stdout)
        assert listing(tmp_path) == {"cut.rnnc"}


@pytest.mark.parametrize("name", ["raw", "context", "context-gray", "context-tiled"])
def test_every_single_bit_flip_is_caught_by_a_crc(name: str, hostile_seeds: Seeds) -> None:
    data = hostile_seeds.files[name]
    for bit in range(len(data) * 8):
        with pytest.raises(FormatError) as e:
            parse(flip_bit(data, bit))
        check_message(e.value)


@pytest.mark.parametrize("coder", [c for c in sorted(CODER_NAMES) if c not in ("raw", "best")])
def test_every_payload_bit_flip_under_a_valid_crc(coder: str, hostile_seeds: Seeds) -> None:
    """Past the chunk CRC, an entropy-coded payload with any one bit flipped is refused by the
    coder's desync check, or (a bit the range coder never reads) decodes to the same image."""
    data = hostile_seeds.files[coder]
    good = np.asarray(codec.decompress(data, model=hostile_seeds.model))
    chunks, same = _chunks(data), 0
    stride = 1 if coder == "context" else 4  # the neural coder is slower: every 4th bit
    for i, payload in enumerate(chunks):
        for bit in range(0, len(payload) * 8, stride):
            hostile = with_chunks(data, chunks[:i] + [flip_bit(payload, bit)] + chunks[i + 1:])
            try:
                image = codec.decompress(hostile, model=hostile_seeds.model)
            except FormatError as e:
                assert "desync" in check_message(e)
            else:
                assert np.array_equal(np.asarray(image), good)
                same += 1
    assert same < sum(len(p) for p in chunks) * 8 // (4 * stride), same


def test_every_flip_of_a_coder_byte_under_a_valid_crc_is_refused(hostile_seeds: Seeds) -> None:
    """The best coder's first byte names the coder of the rest; naming another is an error. (The
    rest is a single coder's payload: flips there behave as tested above for that coder.)"""
    data = hostile_seeds.files["best"]
    chunks = _chunks(data)
    for i, payload in enumerate(chunks):
        for bit in range(8):
            hostile = with_chunks(data, chunks[:i] + [flip_bit(payload, bit)] + chunks[i + 1:])
            with pytest.raises(FormatError) as e:
                codec.decompress(hostile, model=hostile_seeds.model)
            check_message(e.value)


# --- outputs the decoder cannot write -------------------------------------------------------


@pytest.mark.parametrize("suffix,match", [(".psd", "cannot write PSD images"),
                                          (".xbm", "cannot write"),
                                          (".nope", "cannot tell an image format")])
def test_unwritable_output_formats(suffix: str, match: str, hostile_seeds: Seeds,
                                   tmp_path: Path) -> None:
    """Pillow reads .psd but cannot write it; XBM holds only 1-bit images."""
    path = tmp_path / "good.rnnc"
    path.write_bytes(hostile_seeds.context)
    r = invoke(["decompress", str(path), "-o", str(tmp_path / f"out{suffix}"),
                "--model", hostile_seeds.model, "-q"])
    assert r.exit_code == OutputError.exit_code and isinstance(r.exception, SystemExit), (
        r.exception)
    message = assert_one_error_line(r.stderr, r.stdout)
    assert match in message and "None" not in message
    assert listing(tmp_path) == {"good.rnnc"}


# --- adaptive files (version 4): block maps that lie ------------------------------------------


def _adaptive_file(s: Seeds, masks: list[np.ndarray], coder: str = "context",
                   maps: dict[int, bytes] | None = None,
                   payloads: dict[int, bytes] | None = None) -> bytes:
    """A version-4 file of ``s.image``'s shape under the tiny model: iteration t codes random
    bits in the blocks of ``masks[t]``, with its true map unless ``maps`` gives another (by
    iteration index), or a whole other payload from ``payloads``."""
    from dataclasses import replace

    from rnncodec.defaults import STOPPED
    from rnncodec.entropy import blockmap, make_coder
    from rnncodec.format import assemble, pack_adaptive
    from rnncodec.zoo import load_model

    bit_coder = make_coder(coder, load_model(s.model).tables)
    rng = np.random.default_rng(0)
    header = replace(parse(s.context).header, coder=CODER_NAMES[coder], adaptive=True)
    history: list[np.ndarray] = []
    chunks, was = [], np.ones(masks[0].shape, bool)
    for t, coded in enumerate(masks):
        codes = np.where(coded, rng.integers(0, 2, (32, *coded.shape)), STOPPED).astype(np.uint8)
        block_map = (maps or {}).get(t, blockmap.encode(coded, was))
        chunks.append((payloads or {}).get(t, pack_adaptive(block_map, bit_coder.encode(
            codes, history, coded))))
        history.append(codes)
        was = coded
    return assemble(header, chunks)


def _stops() -> list[np.ndarray]:
    """Three iterations of the 2×3-block seed image: all blocks, then five, then four."""
    second = np.ones((2, 3), bool)
    second[0, 0] = False
    third = second.copy()
    third[1, 2] = False
    return [np.ones((2, 3), bool), second, third]


def _restarting(s: Seeds) -> bytes:
    """Iteration 3's map written as if block (0, 0), stopped at iteration 2, were coded again."""
    from rnncodec.entropy import blockmap

    masks = _stops()
    again = masks[2] | np.eye(2, 3, dtype=bool)
    return _adaptive_file(s, masks, maps={2: blockmap.encode(again, np.ones((2, 3), bool))})


def _short_map(s: Seeds) -> bytes:
    from rnncodec.entropy import blockmap

    masks = _stops()
    return _adaptive_file(s, masks, maps={1: blockmap.encode(masks[1], masks[0])[:-4]})


ADAPTIVE_CASES = [
    ("a map that codes no block",
     lambda s: _adaptive_file(s, [*_stops()[:1], np.zeros((2, 3), bool)]),
     "iteration 2's block map codes no block"),
    ("a map that overruns its chunk",
     lambda s: _adaptive_file(s, _stops(), payloads={1: b"\0\0\1\0" + bytes(8)}),
     "iteration 2's block map (256 bytes) overruns its chunk (12 bytes)"),
    ("a chunk too short for its map length",
     lambda s: _adaptive_file(s, _stops(), payloads={0: b"\0\0"}),
     "iteration 1 is too short to hold its block map"),
    ("a map with data left over",
     lambda s: _adaptive_file(s, _stops(), maps={1: _map(_stops()[1], _stops()[0]) + bytes(4)}),
     "iteration 2's block map is malformed"),
    ("a map that restarts a stopped block", _restarting, "iteration 3's block map is malformed"),
    ("a map cut short", _short_map, "entropy decoder desync"),  # to none: all go on
    ("a map naming more blocks than the raw codes hold",
     lambda s: _adaptive_file(s, _stops(), coder="raw", maps={1: b""}),
     "raw chunk holds 20 bytes, expected 24"),
]


def _map(coded: np.ndarray, was: np.ndarray) -> bytes:
    from rnncodec.entropy import blockmap

    return blockmap.encode(coded, was)


@pytest.mark.parametrize("name, build, match", ADAPTIVE_CASES,
                         ids=[c[0] for c in ADAPTIVE_CASES])
def test_adaptive_files_with_lying_maps_are_refused(name: str, build, match: str,
                                                    hostile_seeds: Seeds,
                                                    tmp_path: Path) -> None:
    """A map is only ever a map of blocks coded before (none can restart), so the faults are
    maps that code nothing, disagree with their chunk or leave the codes unreadable: one
    FormatError line from the API and the command line, never a traceback."""
    data = build(hostile_seeds)
    path = tmp_path / "case.rnnc"
    path.write_bytes(data)
    with pytest.raises(FormatError) as e:
        codec.decompress(data, model=hostile_seeds.model)
    assert match in check_message(e.value), name
    with pytest.raises(FormatError):
        list(codec.decode_iterations(data, model=hostile_seeds.model))
    with pytest.raises(FormatError, match="block map") as e:  # info reads every map, though
        codec.info(data)  # not the codes; the command line reads the info first
    before = listing(tmp_path)
    r = invoke(["decompress", str(path), "--model", hostile_seeds.model])
    assert r.exit_code == 65 and assert_one_error_line(r.stderr, r.stdout) == str(e.value)
    assert listing(tmp_path) == before
    r = invoke(["info", str(path)])
    assert r.exit_code == 65 and assert_one_error_line(r.stderr, r.stdout) == str(e.value)


def test_adaptive_maps_where_every_block_goes_on_are_empty(hostile_seeds: Seeds) -> None:
    """Maps that stop no block are empty and decode; one spelled out in full, whose every
    decision is "coded again", is not what an encoder writes and is refused."""
    from rnncodec.entropy.rangecoding import range_code

    masks = [np.ones((2, 3), bool)] * 3
    data = _adaptive_file(hostile_seeds, masks)
    assert codec.info(data).active_per_iteration == [1.0, 1.0, 1.0]
    codec.decompress(data, model=hostile_seeds.model)
    full = range_code(np.ones(6, np.int64), np.full(6, 4000))
    spelled = _adaptive_file(hostile_seeds, masks, maps={1: full})
    with pytest.raises(FormatError, match="iteration 2's block map is malformed"):
        codec.decompress(spelled, model=hostile_seeds.model)
