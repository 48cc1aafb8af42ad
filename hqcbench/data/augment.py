"""Batch-wise data augmentation: one vectorised call per batch, each image with its own random draw.

The published implementation augmented image by image through PIL, which dominated its epoch time.
Here a whole batch goes through one ``affine_grid`` + ``grid_sample``: the random parameters are
per image, the arithmetic is one tensor operation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """rotate_deg / translate (fraction of size) as torchvision's RandomAffine; pad_crop (pixels, as
    RandomCrop(padding=pad)) and hflip as RandomHorizontalFlip(0.5). ``fill`` is the pixel value of
    uncovered area, per channel."""

    rotate_deg: float = 0.0
    translate: float = 0.0
    pad_crop: int = 0
    hflip: bool = False
    fill: tuple[float, ...] = (0.0,)
    nearest: bool = False  # torchvision's RandomAffine default (InterpolationMode.NEAREST)
    whole_pixel_shift: bool = False  # RandomAffine rounds its translations to whole pixels

    @property
    def active(self) -> bool:
        return bool(self.rotate_deg or self.translate or self.pad_crop or self.hflip)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """images: float (B, C, H, W) in [0, 1] -> augmented copy, same shape."""
        if not self.active:
            return images
        bsz, _, height, width = images.shape
        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(bsz, generator=generator) * (high - low) + low

        angle = uniform(-self.rotate_deg, self.rotate_deg) * (math.pi / 180.0)
        # translations in normalised coordinates ([-1, 1] spans the image: 1 pixel = 2 / size)
        tx = uniform(-self.translate, self.translate) * 2.0
        ty = uniform(-self.translate, self.translate) * 2.0
        if self.whole_pixel_shift:
            tx = torch.round(tx * width / 2.0) * (2.0 / width)
            ty = torch.round(ty * height / 2.0) * (2.0 / height)
        if self.pad_crop:  # integer-pixel shifts = crop of the zero-padded image
            tx = tx + torch.randint(-self.pad_crop, self.pad_crop + 1, (bsz,), generator=generator) * (2.0 / width)
            ty = ty + torch.randint(-self.pad_crop, self.pad_crop + 1, (bsz,), generator=generator) * (2.0 / height)
        flip = torch.ones(bsz)
        if self.hflip:
            flip = torch.where(torch.rand(bsz, generator=generator) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
        theta = theta.to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        pure_crop = self.pad_crop and not self.rotate_deg and not self.translate
        mode = "nearest" if (self.nearest or pure_crop) else "bilinear"
        # grid_sample fills with 0; shift so that 0 means `fill`, then shift back
        fill = torch.tensor(self.fill, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        out = F.grid_sample(images - fill, grid, mode=mode, padding_mode="zeros", align_corners=False)
        return out + fill
