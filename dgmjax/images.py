"""Image grids (arrays → one picture) and PNG files, for trainers, benches and notebooks."""

from __future__ import annotations

import math
import os

import numpy as np


def make_grid(images: np.ndarray, *, ncol: int | None = None, pad: int = 1) -> np.ndarray:
  """(N, H, W, C) floats in [0, 1] -> one uint8 (rows·H, cols·W, C) picture.

  Example:
    >>> import numpy as np
    >>> from dgmjax.images import make_grid
    >>> grid = make_grid(np.zeros((5, 4, 4, 1)), pad=1)  # 3 columns, 2 rows
    >>> print(grid.shape, grid.dtype, grid[0, 0, 0], grid[1, 1, 0])
    (11, 16, 1) uint8 255 0
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4:
    raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}.")
  n, h, w, c = images.shape
  ncol = ncol or int(math.ceil(math.sqrt(n)))
  nrow = int(math.ceil(n / ncol))
  grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
  for i in range(n):
    r, q = divmod(i, ncol)
    y, x = pad + r * (h + pad), pad + q * (w + pad)
    grid[y : y + h, x : x + w] = images[i]
  return (np.clip(grid, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def side_by_side(a: np.ndarray, b: np.ndarray, *, ncol: int = 8) -> np.ndarray:
  """Interleave rows of ``a`` and ``b`` (e.g. inputs over reconstructions)."""
  n = min(len(a), len(b)) // ncol * ncol
  a, b = np.asarray(a[:n]), np.asarray(b[:n])
  rows = []
  for r in range(n // ncol):
    rows += [a[r * ncol : (r + 1) * ncol], b[r * ncol : (r + 1) * ncol]]
  return make_grid(np.concatenate(rows), ncol=ncol)


def save_png(grid: np.ndarray, path: str) -> None:
  from PIL import Image

  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  if grid.shape[-1] == 1:
    grid = grid[..., 0]
  Image.fromarray(grid).save(path)
