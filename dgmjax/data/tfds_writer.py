"""Write your own images as a TFDS dataset (array_record), without TensorFlow.

TFDS's own ``download_and_prepare`` needs TensorFlow to encode images. This
writer encodes them with Pillow, serializes each example with TFDS's
``FeaturesDict`` (given the already encoded bytes, that needs no TensorFlow),
writes one array_record file per split and the dataset's metadata. The
result reads like any prepared TFDS dataset: ``tfds.data_source(name,
data_dir=...)``, ``--config.dataset=tfds:<name> --config.data_dir=...`` or
``--config.dataset=<the version folder>``.
"""

from __future__ import annotations

import io
import os
from typing import Iterable, Mapping

import numpy as np


def _encode(image, encoding: str) -> tuple[bytes, int]:
  from PIL import Image

  if isinstance(image, (bytes, bytearray)):
    with Image.open(io.BytesIO(image)) as im:
      return bytes(image), len(im.getbands())
  x = np.asarray(image)
  if x.dtype != np.uint8 or x.ndim not in (2, 3):
    raise ValueError(f"images must be uint8 (H, W) or (H, W, C) arrays or encoded bytes, "
                     f"got {x.dtype} {x.shape}.")
  if x.ndim == 3 and x.shape[-1] == 1:
    x = x[..., 0]
  buf = io.BytesIO()
  Image.fromarray(x).save(buf, format="PNG" if encoding == "png" else "JPEG", quality=95)
  return buf.getvalue(), 1 if x.ndim == 2 else x.shape[-1]


def write_image_dataset(
    data_dir: str,
    name: str,
    splits: Mapping[str, Iterable[tuple[np.ndarray | bytes, int]]],
    *,
    num_classes: int,
    image_shape: tuple[int, int, int] | None = None,
    version: str = "1.0.0",
    encoding: str = "png",
) -> str:
  """Write ``splits`` (``{split: iterable of (image, label)}``) as TFDS dataset ``name``.

  Images may differ in size; they are uint8 ``(H, W)`` / ``(H, W, C)``
  arrays (encoded as ``encoding``, ``"png"`` or ``"jpeg"``) or already
  encoded PNG/JPEG bytes, all with the same number of channels. Examples
  are consumed one at a time, so a split may be larger than memory.
  ``image_shape`` declares one fixed ``(H, W, C)`` for every image (then
  readers may use the native size); None declares ``(None, None, C)``.

  Returns:
    The dataset's version folder, ``<data_dir>/<name>/<version>``.
  """
  import tensorflow_datasets as tfds
  from array_record.python import array_record_module

  if encoding not in ("png", "jpeg"):
    raise ValueError(f"encoding must be 'png' or 'jpeg', got {encoding!r}.")
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}.")
  root = os.path.join(os.path.expanduser(data_dir), name, version)
  os.makedirs(root, exist_ok=True)
  features = None
  channels = None
  infos = []
  for split, examples in splits.items():
    path = os.path.join(root, f"{name}-{split}.array_record-00000-of-00001")
    # group_size:1: every record is its own chunk, the layout random access needs.
    writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
    count = size = 0
    try:
      for image, label in examples:
        data, c = _encode(image, encoding)
        if image_shape is not None and not isinstance(image, (bytes, bytearray)):
          shape = np.shape(image) if np.ndim(image) == 3 else (*np.shape(image), 1)
          if tuple(shape) != tuple(image_shape):
            raise ValueError(f"example {count} of split {split!r} has shape {shape}, not the "
                             f"declared image_shape {tuple(image_shape)}.")
        if channels is None:
          channels = c
          shape = tuple(image_shape) if image_shape is not None else (None, None, c)
          features = tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=shape, encoding_format=encoding),
              "label": tfds.features.ClassLabel(num_classes=num_classes),
          })
        elif c != channels:
          raise ValueError(f"all images must have {channels} channels; example {count} of "
                           f"split {split!r} has {c}.")
        if not 0 <= int(label) < num_classes:
          raise ValueError(f"label {label} of example {count} of split {split!r} is not in "
                           f"[0, {num_classes}).")
        record = features.serialize_example({"image": data, "label": int(label)})
        writer.write(record)
        count += 1
        size += len(record)
    finally:
      writer.close()
    if not count:
      raise ValueError(f"split {split!r} has no examples.")
    infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[count], num_bytes=size))
  tfds.folder_dataset.write_metadata(
      data_dir=root, features=features, split_infos=infos,
      filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", check_data=False)
  return root
