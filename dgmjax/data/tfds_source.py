"""Full image datasets through TensorFlow Datasets, read without TensorFlow.

``tfds.data_source`` gives random access to data prepared in the
``array_record`` format. Reading needs no TensorFlow; *preparing* does (the
``prepare`` extra), so the error for missing data says how to prepare it.
"""

from __future__ import annotations

import numpy as np

from dgmjax.errors import UserError


class DatasetUnavailableError(UserError, RuntimeError):
  """The requested dataset is not prepared where we were told to look."""


def _prepare_hint(name: str, data_dir: str | None) -> str:
  where = f", data_dir={data_dir!r}" if data_dir else ""
  return (
      f"TFDS dataset {name!r} is not prepared in the array_record format"
      f"{' under ' + data_dir if data_dir else ' in the default TFDS data dir'}."
      " Prepare it once on a machine with network:\n"
      '  pip install "dgmjax[prepare]"\n'
      "  python -c \"import tensorflow_datasets as tfds; "
      f"tfds.builder({name!r}{where}).download_and_prepare("
      "file_format='array_record')\"\n"
      "then pass --config.data_dir to that directory. Without network, use the "
      "offline default --config.dataset=digits (5000 real MNIST digits)."
  )


def load_tfds_images(
    name: str, split: str, *, data_dir: str | None = None, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
  """Load ``(images uint8 (N, H, W, C), labels int32 (N,))`` from TFDS.

  Any dataset with an ``image`` feature works; datasets without a ``label``
  feature get labels of -1.
  """
  import tensorflow_datasets as tfds  # deferred: it is slow to import

  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # noqa: BLE001 - TFDS raises several unrelated types
    raise DatasetUnavailableError(_prepare_hint(name, data_dir) + f"\n({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
  n = len(source)
  if n == 0:
    raise DatasetUnavailableError(f"TFDS split {name}:{split} is empty.")
  first = source[0]
  if "image" not in first:
    raise ValueError(
        f"TFDS dataset {name!r} has no 'image' feature (features: "
        f"{sorted(first)}); dgmjax image trainers need one."
    )
  images, labels = [], []
  for start in range(0, n, chunk):
    keys = list(range(start, min(n, start + chunk)))
    try:
      items = source.__getitems__(keys)
    except TypeError:  # mocked sources in tfds.testing lack batched reads
      items = [source[k] for k in keys]
    images.append(np.stack([np.asarray(it["image"]) for it in items]))
    labels.append(np.asarray([int(it.get("label", -1)) for it in items]))
  images = np.concatenate(images).astype(np.uint8)
  if images.ndim == 3:
    images = images[..., None]
  return images, np.concatenate(labels).astype(np.int32)
