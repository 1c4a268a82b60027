"""Copy the validation photos and a seeded random subset of the other training photos, up to a
byte budget, into one folder.

A machine lent for training receives only the working tree (at most 64 MiB), so a run there
trains on a pack like this one (photos copied as they are, never re-encoded)::

    python scripts/make_training_pack.py ../shared/data/train .pack --mib 47

The photos that training on the whole folder holds out for validation (``--val``, as
``val_images``) come first, so a run on the pack holds out the same ones and never trains on
photos that a run on the folder validates on.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from rnncodec.images import list_images
from rnncodec.train import pack_name, split_photos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--mib", type=float, default=48.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val", type=int, default=48, help="validation photos (val_images)")
    args = ap.parse_args()
    val, rest = split_photos(list_images(args.data), args.data, args.val)
    random.Random(args.seed).shuffle(rest)
    paths = val + rest
    args.out.mkdir(parents=True, exist_ok=True)
    budget, used, n = args.mib * 2**20, 0, 0
    for p in paths:
        size = p.stat().st_size
        if used + size > budget:
            continue
        shutil.copyfile(p, args.out / pack_name(p, args.data))
        used, n = used + size, n + 1
    print(f"{n} of {len(paths)} photos, {used / 2**20:.1f} MiB, in {args.out}")


if __name__ == "__main__":
    main()
