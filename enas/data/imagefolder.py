"""Your own images: ``DIR/train/<class>/*`` and ``DIR/val/<class>/*`` (torchvision's ImageFolder layout).

The classes are the sorted folder names under ``train/`` (label = position in that
list); ``val/`` holds images of some or all of them. The training images come in a
fixed shuffled order, as CIFAR's do (``scan``). Images are found by extension
(``EXTENSIONS``, any case) anywhere below a class folder; other files and hidden ones
(``.DS_Store``, macOS ``._x.jpg``) are ignored. Each image is decoded with Pillow,
converted to RGB and resized to S x S (``data.image_size``; the aspect ratio is not
kept, every image fills the square) once: the uint8 tensors are cached in
``DIR/.enas-cache/imagefolder-<S>-<key>.pt``, where key hashes every image's relative
path, size, modification time, inode and change time together with S and the decoding
recipe, so a changed, added or removed image gives a new cache (and the old one of that
size is deleted). The change time is set by this machine when a file arrives (an archive
or a copy can carry a modification time, not a change time): a cache that came with the
images, built from other files or crafted, is never used over them. A cache that cannot be written (a read-only folder) is no cache, said once;
one that cannot be read is rebuilt.

An image Pillow cannot read stops the load with a ``DataError`` naming it (all are
decoded first, so one run finds every bad file), unless ``data.skip_bad_images``: then
they are left out and counted. The cache records them, so switching that option on
needs no second decode. So does an image of more than ``MAX_PIXELS`` pixels (its
header is read first: a 13,000 x 13,000 PNG would decode to 500 MB per thread), or one
that is not a regular file (a FIFO would block the decode forever).

A split, class folder or image may be a symbolic link only to something inside the data
folder: a link leading outside it is refused with a ``DataError`` naming it, and so is a
cache folder that is a link (the cache is then not written).
"""
from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from enas.storage.checkpoint import read as read_checkpoint
from enas.errors import DataError
from enas.storage.files import make_dir, open_regular, write_atomic
from enas.storage.runroot import folder

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLITS = ("train", "val")
CACHE_DIR = ".enas-cache"
# In the cache key: a cache made by another decoding recipe is never reused.
RECIPE = "pillow draft+RGB+bilinear v1"
LAYOUT = "the expected layout is DIR/train/<class>/<image> and DIR/val/<class>/<image>"
# NAS datasets are small images (CIFAR 32 x 32, ImageNet about 400 x 350) shrunk to
# data.image_size; 50 megapixels admits any camera photo, and decodes to 150 MB.
MAX_PIXELS = 50_000_000


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _inside(path: Path, data_dir: Path) -> Path:
    """``path``, if it is no link or a link to something inside ``data_dir``."""
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(data_dir.resolve()):
            raise DataError(f"{path} is a link to {target}, outside the data folder {data_dir}; enas reads only the "
                            f"data folder's own files: put a copy there, or remove the link")
    return path


def _class_dirs(split_dir: Path, data_dir: Path) -> list[Path]:
    try:
        _inside(split_dir, data_dir)
        return sorted(_inside(p, data_dir) for p in split_dir.iterdir() if _visible(p.name) and p.is_dir())
    except OSError:  # missing: load() says so, data_files() lists nothing
        return []


def _images(folder: Path, data_dir: Path) -> list[Path]:
    """The image files below ``folder``, sorted; hidden files and folders skipped."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if _visible(d)]
        out += [_inside(Path(root, f), data_dir) for f in files
                if _visible(f) and Path(f).suffix.lower() in EXTENSIONS]
    return sorted(out)


def image_files(data_dir) -> list[Path]:
    """Every image the dataset reads (under ``DIR/{train,val}/<class>/``), sorted."""
    data_dir = Path(data_dir)
    return sorted(f for split in SPLITS for d in _class_dirs(data_dir / split, data_dir) for f in _images(d, data_dir))


def scan(data_dir: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """(classes, {"train": [(path, label)] in a fixed shuffled order, "val": [...] sorted}),
    checking the layout."""
    for split in SPLITS:
        if not (data_dir / split).is_dir():
            raise DataError(f"{data_dir / split} is not a folder (data.dataset: imagefolder); {LAYOUT}")
    classes = [d.name for d in _class_dirs(data_dir / "train", data_dir)]
    if not classes:
        raise DataError(f"{data_dir / 'train'} has no class folders; {LAYOUT}")
    label = {c: i for i, c in enumerate(classes)}
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        files[split] = []
        for d in _class_dirs(data_dir / split, data_dir):
            if d.name not in label:
                raise DataError(f"{d}: class {d.name!r} has no folder in {data_dir / 'train'} (the classes are "
                                f"the folders there); add its training images or remove {d}")
            found = _images(d, data_dir)
            if split == "train" and not found:
                raise DataError(f"{d} holds no image ({' '.join(sorted(EXTENSIONS))}); every class needs at least "
                                f"one training image: add some or remove the folder")
            files[split] += [(f, label[d.name]) for f in found]
    if not files["val"]:
        raise DataError(f"{data_dir / 'val'} holds no image in a class folder; {LAYOUT}")
    # The search split scores the controller on the *last* valid_size training images;
    # CIFAR's files hold them in random order, a folder by class. So they are shuffled,
    # the same way every time (a resumed search sees the same split).
    order = np.random.default_rng(0).permutation(len(files["train"]))
    files["train"] = [files["train"][i] for i in order]
    return classes, files


def cache_key(data_dir: Path, files: dict, image_size: int) -> str:
    h = hashlib.sha256(f"{RECIPE} {image_size}\n".encode())
    for split in SPLITS:
        for f, y in files[split]:
            try:
                st = f.stat()
            except OSError as e:
                raise DataError(f"cannot read {f}: {e.strerror or e}") from None
            h.update(f"{split} {y} {f.relative_to(data_dir).as_posix()} {st.st_size} {st.st_mtime_ns} {st.st_ino} "
                     f"{st.st_ctime_ns}\n".encode())
    return h.hexdigest()[:20]


def decode(path: Path, size: int) -> np.ndarray:
    """One image file -> uint8 [size, size, 3], RGB (a GIF's first frame)."""
    with open_regular(path) as f, Image.open(f) as im:
        if im.width * im.height > MAX_PIXELS:
            raise ValueError(f"{im.width:,} x {im.height:,} pixels, more than the {MAX_PIXELS:,} enas decodes; "
                             f"shrink it (it is resized to data.image_size anyway)")
        # JPEG only: decode at the smallest DCT scale still >= size (a photo decodes
        # several times faster; the resize below does the rest)
        im.draft("RGB", (size, size))
        # Pillow's resize filters are antialiased when shrinking
        return np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def _decode_all(data_dir: Path, files: dict, size: int) -> dict:
    items = [(split, i, f) for split in SPLITS for i, (f, _) in enumerate(files[split])]
    pixels = {s: np.empty((len(files[s]), size, size, 3), np.uint8) for s in SPLITS}
    ok = {s: np.ones(len(files[s]), dtype=bool) for s in SPLITS}
    bad, why = [], []

    def one(item):
        try:
            return decode(item[2], size), None
        except Exception as e:  # Pillow's decoders raise many types on malformed files
            return None, f"{type(e).__name__}: {e}"

    print(f"decoding the {len(items):,} images of {data_dir} to {size} x {size} (once: they are cached)", file=sys.stderr)
    # Pillow decodes and resizes without the GIL, so threads use every core
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for (split, i, f), (img, err) in tqdm(zip(items, pool.map(one, items)), total=len(items),
                                              unit="img", desc="images", dynamic_ncols=True):
            if err is None:
                pixels[split][i] = img
            else:
                ok[split][i] = False
                bad.append(f.relative_to(data_dir).as_posix())
                why.append(err)
    out = {"bad": bad, "why": why}
    for split, name in (("train", "train"), ("val", "test")):
        keep = ok[split]
        out[f"{name}_x"] = torch.from_numpy(pixels[split][keep]).permute(0, 3, 1, 2).contiguous()
        out[f"{name}_y"] = torch.tensor([y for (_, y), k in zip(files[split], keep) if k], dtype=torch.int64)
    return out


def _read_cache(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        d = read_checkpoint(path)
        ok = (d["key"] == key and all(d[f"{s}_x"].dtype == torch.uint8 and d[f"{s}_y"].dtype == torch.int64
                                      and d[f"{s}_x"].shape[0] == d[f"{s}_y"].shape[0] for s in ("train", "test"))
              and isinstance(d["bad"], list) and len(d["bad"]) == len(d["why"]) and isinstance(d["classes"], list))
    except Exception:  # truncated, corrupt, or not this format: decode again
        ok = False
    if not ok:
        print(f"note: {path} is not a readable image cache; decoding the images again", file=sys.stderr)
        return None
    return d


def _write_cache(path: Path, d: dict) -> None:
    try:  # a fresh temporary per write: ranks may write at once (enas/storage/files.py)
        make_dir(path.parent)
        write_atomic(path, lambda f: torch.save(d, f))
    except OSError as e:
        print(f"note: cannot write an image cache in {path.parent} ({getattr(e, 'strerror', None) or e}); "
              f"the images are decoded again on every run", file=sys.stderr)
        return
    _remove_older(path)


def _remove_older(path: Path) -> None:
    """Delete the caches of older versions of this folder at this size
    (``imagefolder-<S>-*.pt`` but ``path``), listed and deleted relative to one
    descriptor of the cache folder, opened without following a link: the cache folder
    swapped for a link meanwhile deletes nothing outside."""
    prefix = path.name.rsplit("-", 1)[0] + "-"
    try:
        with folder(path.parent) as (dfd, name):
            cache = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
    except OSError:  # gone, or a link now: nothing to clean
        return
    try:
        for entry in os.listdir(cache):
            if entry.startswith(prefix) and entry.endswith(".pt") and entry != path.name:
                try:
                    os.unlink(entry, dir_fd=cache)
                except OSError:
                    pass
    finally:
        os.close(cache)


def load_imagefolder(data_dir, image_size: int = 32, skip_bad: bool = False) -> dict:
    """-> {"train_x": uint8 [N, 3, S, S], "train_y": int64 [N], "test_x", "test_y" (val/),
    "num_classes", "classes"}."""
    data_dir = Path(data_dir)
    classes, files = scan(data_dir)
    key = cache_key(data_dir, files, image_size)
    cache = data_dir / CACHE_DIR / f"imagefolder-{image_size}-{key}.pt"
    d = _read_cache(cache, key)
    if d is None:
        d = dict(_decode_all(data_dir, files, image_size), classes=classes, key=key)
        _write_cache(cache, d)
    if d["bad"]:
        first = f"{data_dir / d['bad'][0]} ({d['why'][0]})"
        if not skip_bad:
            more = f", then {', '.join(d['bad'][1:5])}" if len(d["bad"]) > 1 else ""
            more += f" and {len(d['bad']) - 5:,} more" if len(d["bad"]) > 5 else ""
            raise DataError(f"cannot read {len(d['bad'])} image(s): {first}{more}; delete them, or set "
                            f"data.skip_bad_images: true to leave them out")
        print(f"note: skipped {len(d['bad'])} unreadable image(s) (data.skip_bad_images), e.g. {first}", file=sys.stderr)
    for name, split in (("train", "train"), ("test", "val")):
        if d[f"{name}_x"].shape[0] == 0:
            raise DataError(f"{data_dir / split} has no readable image; {LAYOUT}")
    return {k: d[k] for k in ("train_x", "train_y", "test_x", "test_y", "classes")} | {"num_classes": len(classes)}
