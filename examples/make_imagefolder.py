"""Write CIFAR-10 (official python batches) out as a folder of PNG images, the layout
``data.dataset: imagefolder`` reads, to try a search on "your own images":

    python examples/make_imagefolder.py enas/data/samples/cifar10 data/cifar10-images

OUT/train/<class>/<n>.png from the training batches and OUT/val/<class>/<n>.png from the
test batch. OUT must not exist yet (or be empty): nothing is overwritten.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from enas.data.cifar import CIFAR10, load
from enas.errors import UserError

# The official order of the ten labels (batches.meta, label_names)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cifar_dir", help="folder holding cifar-10-batches-py/ (or the archive)")
    p.add_argument("out", help="image folder to create")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"error: {out} already exists and is not empty; name a new folder", file=sys.stderr)
        return 2
    try:
        d = load(CIFAR10, args.cifar_dir, download=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split, x, y in (("train", d["train_x"], d["train_y"]), ("val", d["test_x"], d["test_y"])):
        for name in CLASSES:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for n, (img, label) in enumerate(tqdm(list(zip(x, y.tolist())), desc=split, leave=False, disable=None)):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(out / split / CLASSES[label] / f"{n:05d}.png")
        print(f"{split}: {len(y):,} images in {out / split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
