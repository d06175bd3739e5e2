"""Images for the image task: any supported dataset loaded as uint8 tensors, and the
official augmentation (pad-4 random crop, flip, cutout) done on the device for a whole
batch at once (no per-image Python in the training loop)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from enas.data import cifar
from enas.data.imagefolder import load_imagefolder
from enas.errors import DataError

PAD = 4  # pad-4 random crop (official _pre_process)
DATASETS = ("cifar10", "cifar100", "imagefolder")


def load_images(data_cfg, data_dir) -> dict:
    """-> {"train_x": uint8 [N, 3, S, S], "train_y": int64 [N], "test_x", "test_y", "num_classes"}."""
    if data_cfg.dataset in cifar.SPECS:
        return cifar.load(cifar.SPECS[data_cfg.dataset], data_dir)
    if data_cfg.dataset == "imagefolder":
        return load_imagefolder(data_dir, data_cfg.image_size, data_cfg.skip_bad_images)
    raise DataError(f"the image task reads {', '.join(DATASETS)}; data.dataset is {data_cfg.dataset!r}")


def augment(x, ox, oy, flip, cy, cx, cutout: int):
    """Batched crop + flip + cutout. x: [B, C, H, W] -> [B, C, H, W].

    ox, oy in [0, 2 * PAD]: crop offsets into the zero-padded image; flip: bool [B];
    cy, cx in [0, H), [0, W): the cutout square's top-left corner, uniform over the image
    as in the official models.py 91-100 (so the square is clipped at the bottom and right
    borders, and covers 16 x 16 px only when the corner is at most H - 16, W - 16)."""
    B, C, H, W = x.shape
    xp = F.pad(x, (PAD, PAD, PAD, PAD)).permute(0, 2, 3, 1)  # [B, H+8, W+8, C]
    ar_h = torch.arange(H, device=x.device)
    ar_w = torch.arange(W, device=x.device)
    rows = oy[:, None] + ar_h  # [B, H]
    cols = torch.where(flip[:, None], ox[:, None] + (W - 1 - ar_w), ox[:, None] + ar_w)  # [B, W]
    out = xp[torch.arange(B, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    out = out.permute(0, 3, 1, 2)  # [B, C, H, W], channels_last in memory
    if cutout > 0:
        top, left = cy[:, None], cx[:, None]
        in_r = (ar_h >= top) & (ar_h < top + cutout)  # [B, H]
        in_c = (ar_w >= left) & (ar_w < left + cutout)  # [B, W]
        keep = ~(in_r[:, :, None] & in_c[:, None, :])  # [B, H, W]
        out = out * keep[:, None].to(out.dtype)
    return out
