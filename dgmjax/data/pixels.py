"""Pixel formats that the models of the lecture need.

* ``unit``: float32 in [0, 1] (Gaussian / logit-Laplace decoders, MSE).
* ``symmetric``: float32 in [-1, 1] (tanh generators, GANs).
* ``binary_static``: one fixed Bernoulli draw per image (the classic
  "statically binarized MNIST"), identical in every epoch and run.
* ``binary_dynamic``: a fresh Bernoulli draw every time an image is served
  (Salakhutdinov & Murray's dynamic binarization), seeded by the position in
  the data stream so that a resumed run sees the same draws.
"""

from __future__ import annotations

import numpy as np

from dgmjax.errors import ConfigError

PIXEL_FORMATS = ("unit", "symmetric", "binary_static", "binary_dynamic")
_STATIC_SEED = 1234


def check_pixel_format(pixel_format: str) -> None:
  if pixel_format not in PIXEL_FORMATS:
    raise ConfigError(
        f"pixel_format must be one of {PIXEL_FORMATS}, got {pixel_format!r}."
    )


def to_unit(images: np.ndarray) -> np.ndarray:
  """uint8 0..255 -> float32 [0, 1]."""
  return np.asarray(images, np.float32) / 255.0


def to_symmetric(images: np.ndarray) -> np.ndarray:
  """uint8 0..255 -> float32 [-1, 1]."""
  return np.asarray(images, np.float32) / 127.5 - 1.0


def binarize(unit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Bernoulli(p = pixel intensity) draw, float32 in {0, 1}."""
  return (rng.random(unit.shape, dtype=np.float32) < unit).astype(np.float32)


def static_binarization(images: np.ndarray, *, seed: int = _STATIC_SEED) -> np.ndarray:
  """One fixed binarization of a whole uint8 image array."""
  return binarize(to_unit(images), np.random.default_rng(seed))


def format_images(
    images: np.ndarray, pixel_format: str, rng: np.random.Generator | None = None
) -> np.ndarray:
  """Convert uint8 images (already statically binarized if asked) to floats."""
  check_pixel_format(pixel_format)
  if pixel_format == "symmetric":
    return to_symmetric(images)
  if pixel_format == "binary_dynamic":
    if rng is None:
      raise ValueError("binary_dynamic needs an rng.")
    return binarize(to_unit(images), rng)
  if pixel_format == "binary_static":
    # Static binarization is applied once to the stored uint8 array (0/255).
    return to_unit(images)
  return to_unit(images)
