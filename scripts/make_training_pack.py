"""Copy a seeded random subset of training photos, up to a byte budget, into one folder.

A machine lent for training receives only the working tree (at most 64 MiB), so a run there
trains on a pack like this one (photos copied as they are, never re-encoded)::

    python scripts/make_training_pack.py ../shared/data/train .pack --mib 48
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from rnncodec.images import list_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--mib", type=float, default=48.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    paths = list_images(args.data)
    random.Random(args.seed).shuffle(paths)
    args.out.mkdir(parents=True, exist_ok=True)
    budget, used, n = args.mib * 2**20, 0, 0
    for p in paths:
        size = p.stat().st_size
        if used + size > budget:
            continue
        rel = p.relative_to(args.data)
        shutil.copyfile(p, args.out / "_".join(rel.parts))
        used, n = used + size, n + 1
    print(f"{n} of {len(paths)} photos, {used / 2**20:.1f} MiB, in {args.out}")


if __name__ == "__main__":
    main()
