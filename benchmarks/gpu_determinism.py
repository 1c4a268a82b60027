"""Do CPU and GPU agree? Codes from encoding, and pixels from decoding the same file.

    python benchmarks/gpu_determinism.py [IMAGE ...] [--iterations 8] [--json out.json]

The codec runs on the CPU; this measures what would change if its networks ran on a GPU:
(1) a file made on the CPU, decoded on the GPU: uint8 values that differ from the CPU decode;
(2) encoding on the GPU: code bits that differ from the CPU's (a flipped bit changes every
later iteration, since the encoder follows its own reconstruction). Each with TF32 off and on.
Without a GPU it says so and exits. Without images it uses the bundled procedural sample.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from rnncodec import codec, engine
from rnncodec.entropy import coder_name, make_coder
from rnncodec.format import parse
from rnncodec.images import load_image, to_array, to_tensor
from rnncodec.web.sample import sample_image
from rnncodec.zoo import DEFAULT_MODEL, load_model


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


@torch.inference_mode()
def decode_pixels(data: bytes, net: torch.nn.Module, dev: torch.device) -> list[np.ndarray]:
    """The image after each iteration, as the codec's decoder computes it, on ``dev``."""
    c = parse(data)
    h = c.header
    loaded = load_model(h.model)
    coder, history, out = make_coder(coder_name(h.coder), loaded.tables), [], []
    shape = engine.code_shape(h.width, h.height)
    state = net.initial_state(torch.zeros(1, 3, shape[1] * 16, shape[2] * 16, device=dev))
    for payload in c.chunks:
        codes = coder.decode(payload, shape, history)
        history.append(codes)
        bits = engine.signed(codes).to(dev)
        state = net.decode_step(bits, state)
        out.append(to_array(state.recon.cpu(), h.height, h.width))
    return out


@torch.inference_mode()
def encode_codes(rgb: np.ndarray, net: torch.nn.Module, dev: torch.device,
                 iterations: int) -> list[np.ndarray]:
    x = to_tensor(rgb).to(dev)
    state, out = net.initial_state(x), []
    for _ in range(iterations):
        bits, state = net.encode_step(x, state, stochastic=False)
        state = net.decode_step(bits, state)
        out.append((bits[0] > 0).cpu().numpy())
    return out


def compare(rgb: np.ndarray, iterations: int, gpu: torch.device, tf32: bool) -> dict:
    set_tf32(tf32)
    loaded = load_model(DEFAULT_MODEL)
    cpu_net, gpu_net = loaded.net, copy.deepcopy(loaded.net).to(gpu)
    data = codec.compress(rgb, iterations=iterations, tile=0)  # decoded whole below
    on_cpu = decode_pixels(data, cpu_net, torch.device("cpu"))
    on_gpu = decode_pixels(data, gpu_net, gpu)
    diff = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(on_cpu, on_gpu, strict=True)]
    codes_cpu = encode_codes(rgb, cpu_net, torch.device("cpu"), iterations)
    codes_gpu = encode_codes(rgb, gpu_net, gpu, iterations)
    flips = [int((a != b).sum()) for a, b in zip(codes_cpu, codes_gpu, strict=True)]
    return {"tf32": tf32, "values": int(on_cpu[0].size),
            "decode_values_differing": [int((d > 0).sum()) for d in diff],
            "decode_max_abs_diff": [int(d.max()) for d in diff],
            "codes_per_iteration": int(codes_cpu[0].size), "encode_bits_differing": flips}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*", type=Path)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no GPU here: nothing to compare")
        return
    gpu = torch.device("cuda")
    sources = [(str(p), load_image(p)[0]) for p in args.images] or [
        ("procedural sample", np.asarray(sample_image(768, 512)))]
    rows = []
    print(f"{torch.cuda.get_device_name(gpu)}, torch {torch.__version__}, model {DEFAULT_MODEL}")
    for name, rgb in sources:
        for tf32 in (False, True):
            r = {"image": name, **compare(rgb, args.iterations, gpu, tf32)}
            rows.append(r)
            print(f"{name} tf32={tf32}: decode values differing per iteration "
                  f"{r['decode_values_differing']} of {r['values']} (max |diff| "
                  f"{max(r['decode_max_abs_diff'])}); encode bits differing "
                  f"{r['encode_bits_differing']} of {r['codes_per_iteration']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(gpu),
                                         "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
