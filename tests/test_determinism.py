"""Determinism: the same input gives the same bytes, codes and pixels, whatever the thread count.

An embedded bitstream is only useful if every decoder rebuilds exactly the encoder's
reconstruction: the encoder feeds its own decoded image back into the next iteration, and the
entropy coders' probabilities must match bit for bit or the range decoder desyncs. Here one
process encodes and decodes with one thread, a second process with two (OMP_NUM_THREADS and
torch.set_num_threads), and the hashes of files, codes and decoded pixels must agree.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_helpers import Seeds, cli_env, gradient, hostile_seeds, write_tiny

from rnncodec import codec, engine
from rnncodec.entropy import CODER_NAMES, make_coder
from rnncodec.format import parse
from rnncodec.networks import BITS
from rnncodec.tiling import plan
from rnncodec.zoo import load_model

__all__ = ["hostile_seeds"]  # a fixture, imported for pytest

ITERATIONS = 4


def fingerprints(models: dict[str, str], coders: dict[str, list[str]], image: np.ndarray,
                 files: dict[str, str], pixels_out: str) -> dict:
    """sha256 of: each model × coder's file and the encoder's codes; for each given file, its
    entropy-decoded codes and decoded pixels (the pixels also saved to ``pixels_out``).
    Runs the same in both processes."""
    def h(*arrays: bytes) -> str:
        return hashlib.sha256(b"".join(arrays)).hexdigest()[:32]

    out: dict[str, str] = {"threads": str(torch.get_num_threads())}
    for label, model in models.items():
        steps = engine.iterate_codes(load_model(model), image)
        codes = [next(steps)[0] for _ in range(ITERATIONS)]
        out[f"{label}/encoder-codes"] = h(*(c.tobytes() for c in codes))
        for coder in coders[label]:
            data = codec.compress(image, iterations=ITERATIONS, model=model, coder=coder)
            out[f"{label}/{coder}/file"] = h(data)
    decoded = {}
    for key, path in files.items():
        data = Path(path).read_bytes()
        c = parse(data)
        label, coder = key.split("/")
        bit_coder = make_coder(coder, load_model(models[label]).tables)
        shape = (BITS, -(-c.header.height // 16), -(-c.header.width // 16))
        history: list[np.ndarray] = []
        for payload in c.chunks:
            history.append(bit_coder.decode(payload, shape, history))
        out[f"{key}/decoded-codes"] = h(*(x.tobytes() for x in history))
        decoded[key] = np.stack([np.asarray(im) for im in
                                 codec.decode_iterations(data, model=models[label])])
        out[f"{key}/pixels"] = h(decoded[key].tobytes())
    np.savez(pixels_out, **{k.replace("/", "-"): v for k, v in decoded.items()})
    return out


SCRIPT = """
import json, sys
import numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
sys.path.insert(0, sys.argv[2])
from test_determinism import fingerprints
a = json.loads(sys.argv[3])
print(json.dumps(fingerprints(a["models"], a["coders"], np.load(a["image"]), a["files"],
                              a["pixels"])))
"""


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A width-0.25 network (random weights): wide enough that convolutions are split across
    threads, so that thread-dependent rounding would show."""
    return write_tiny(tmp_path_factory.mktemp("wide") / "wide.safetensors", "wide", seed=3,
                      width=0.25)


def test_compressing_twice_gives_identical_bytes(hostile_seeds: Seeds) -> None:
    for gray in (False, True):
        image = gradient(40, 56, seed=11, channels=0 if gray else 3)
        for coder in CODER_NAMES:
            a = codec.compress(image, iterations=ITERATIONS, model=hostile_seeds.model,
                               coder=coder)
            b = codec.compress(image.copy(), iterations=ITERATIONS, model=hostile_seeds.model,
                               coder=coder)
            assert a == b, coder
            x = np.asarray(codec.decompress(a, model=hostile_seeds.model))
            y = np.asarray(codec.decompress(a, model=hostile_seeds.model))
            assert np.array_equal(x, y)


@pytest.mark.parametrize("threads", [2])
def test_one_thread_and_two_threads_agree(threads: int, hostile_seeds: Seeds, wide_model: str,
                                          tmp_path: Path) -> None:
    """Encode with 1 thread here, decode those files with 2 threads in a subprocess (and encode
    there too): identical files, encoder codes, entropy-decoded codes (the context and neural
    coders' probabilities are integers) and decoded pixels, for the tiny network and a wide one
    whose convolutions are split across threads. (The gain estimator's one-channel projection
    once summed in a thread-dependent order and moved about 1 in 46,000 values by one level.)"""
    image = gradient(48, 80, seed=12)
    np.save(tmp_path / "image.npy", image)
    models = {"tiny": hostile_seeds.model, "wide": wide_model}
    coders = {"tiny": sorted(CODER_NAMES), "wide": ["raw"]}  # the network is what differs
    files = {}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for label, model in models.items():
            for coder in coders[label]:
                path = tmp_path / f"{label}-{coder}.rnnc"
                path.write_bytes(codec.compress(image, iterations=ITERATIONS, model=model,
                                                coder=coder, adaptive=False))
                files[f"{label}/{coder}"] = str(path)
        here = fingerprints(models, coders, image, files, str(tmp_path / "here.npz"))
    finally:
        torch.set_num_threads(previous)

    args = json.dumps({"models": models, "coders": coders, "image": str(tmp_path / "image.npy"),
                       "files": files, "pixels": str(tmp_path / "there.npz")})
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(threads), str(Path(__file__).parent),
                          args], capture_output=True, text=True, timeout=300,
                         env=cli_env(threads), check=False)
    assert run.returncode == 0, run.stderr
    there = json.loads(run.stdout.splitlines()[-1])
    assert here.pop("threads") == "1" and there.pop("threads") == str(threads)
    assert here.keys() == there.keys()
    differ = sorted(k for k in here if here[k] != there[k])
    assert not differ, f"differ between 1 and {threads} threads: {differ}"


def test_network_steps_run_on_one_thread_and_restore_the_callers_setting(
        hostile_seeds: Seeds) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with engine.network_step():
            assert torch.get_num_threads() == 1 and not torch.is_grad_enabled()
            with engine.network_step():  # nested, as concurrent calls overlap
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2 and torch.is_grad_enabled()
        image = gradient(40, 56, seed=13)
        with ThreadPoolExecutor(4) as pool:  # concurrent codec calls share the setting
            files = list(pool.map(lambda _: codec.compress(
                image, iterations=2, model=hostile_seeds.model), range(4)))
        assert len(set(files)) == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_concurrent_steps_each_run_on_one_thread_and_tiles_keep_the_callers_workers() -> None:
    """Under OpenMP a thread keeps its own count once it has run parallel work: a thread entering
    a step while another is inside must still set one thread for itself, and a caller sizing its
    tile workers meanwhile must read its own count, not the step's one."""
    tiles = plan(4000, 3000, 512)
    previous = torch.get_num_threads()
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def first() -> None:
        with engine.network_step():
            inside.set()
            release.wait(30)

    def second() -> None:
        seen["before"] = torch.get_num_threads()  # initialised now, at the caller's two
        inside.wait(30)
        with engine.network_step():
            seen["inside"] = torch.get_num_threads()
        seen["after"] = torch.get_num_threads()
        seen["workers"] = engine._workers(tiles)

    torch.set_num_threads(2)
    try:
        threads = [threading.Thread(target=second), threading.Thread(target=first)]
        for t in threads:
            t.start()
        threads[0].join(30)
        fresh = threading.Thread(target=lambda: seen.setdefault("fresh", engine._workers(tiles)))
        fresh.start()
        fresh.join(30)
        release.set()
        threads[1].join(30)
        assert seen == {"before": 2, "inside": 1, "after": 2, "workers": 2, "fresh": 2}
        assert torch.get_num_threads() == 2
    finally:
        release.set()
        torch.set_num_threads(previous)


def test_tiled_files_decode_to_the_same_pixels_on_any_number_of_workers(
        hostile_seeds: Seeds) -> None:
    data = codec.compress(gradient(150, 200, seed=14), iterations=3, model=hostile_seeds.model,
                          tile=64)
    previous = torch.get_num_threads()
    try:
        decoded = []
        for threads in (1, 2, 3):  # the tiles decode in parallel, one worker per torch thread
            torch.set_num_threads(threads)
            decoded.append(np.asarray(codec.decompress(data, model=hostile_seeds.model)))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(previous)
    assert all(np.array_equal(decoded[0], d) for d in decoded[1:])
    progressive = list(codec.decode_iterations(data, model=hostile_seeds.model))
    assert np.array_equal(np.asarray(progressive[-1]), decoded[0])
