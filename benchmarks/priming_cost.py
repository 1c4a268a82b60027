"""What priming costs in coding time: a primed model against the same weights unprimed.

    python benchmarks/priming_cost.py runs/plain/model.safetensors runs/primed/model.safetensors
    python benchmarks/priming_cost.py A.safetensors B.safetensors --iterations 1,8 --repeats 5

A primed decoder runs ``prime`` extra steps on the first iteration's bits, and the encoder,
which runs the decoder in its loop, runs them too. For each iteration count: ``compress`` and
``decompress`` of one image in-process (raw coder, so no entropy tables are needed and the
entropy coder's time is left out), each the median of ``--repeats`` runs after one warm-up, and
the primed model's times against the unprimed one's. Quality is a training question (see the
training log), not measured here. Prints a table and writes JSON next to this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rnncodec import codec
from rnncodec.images import load_image
from rnncodec.zoo import load_model

HERE = Path(__file__).parent


def _median_times(image: np.ndarray, model: str, iterations: int, repeats: int
                  ) -> tuple[float, float]:
    """Median compress and decompress seconds (after a warm-up of each)."""
    data = codec.compress(image, iterations=iterations, model=model, coder="raw")
    codec.decompress(data, model=model)
    enc, dec = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        data = codec.compress(image, iterations=iterations, model=model, coder="raw")
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        codec.decompress(data, model=model)
        dec.append(time.perf_counter() - t)
    return statistics.median(enc), statistics.median(dec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("unprimed", help="weights without priming")
    ap.add_argument("primed", help="weights with priming (ModelConfig.prime > 0)")
    ap.add_argument("--image", default="../shared/data/kodak/kodim23.png")
    ap.add_argument("--iterations", default="1,2,4,8,16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=str(HERE / "priming_cost.json"))
    args = ap.parse_args()
    prime = load_model(args.primed).net.config.prime
    if not prime or load_model(args.unprimed).net.config.prime:
        raise SystemExit("give unprimed weights first, then primed ones")
    image = load_image(args.image)[0]
    rows = []
    print(f"{Path(args.image).name}, {torch.get_num_threads()} threads, prime {prime}")
    print("iterations | compress s (unprimed, primed, ratio) | decompress s (unprimed, primed, "
          "ratio)")
    for n in (int(x) for x in args.iterations.split(",")):
        (e0, d0), (e1, d1) = (_median_times(image, m, n, args.repeats)
                              for m in (args.unprimed, args.primed))
        rows.append({"iterations": n, "compress_s": [e0, e1], "decompress_s": [d0, d1],
                     "compress_ratio": e1 / e0, "decompress_ratio": d1 / d0})
        print(f"{n:>10} | {e0:6.2f} {e1:6.2f} {e1 / e0:5.2f}x | {d0:6.2f} {d1:6.2f} "
              f"{d1 / d0:5.2f}x", flush=True)
    Path(args.json).write_text(json.dumps({
        "command": "python benchmarks/priming_cost.py " + " ".join(sys.argv[1:]),
        "image": Path(args.image).name, "threads": torch.get_num_threads(), "prime": prime,
        "repeats": args.repeats, "statistic": "median", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
