"""A streaming, sharded, resumable image pipeline on grain.

Images are read one record at a time from a random-access source (a TFDS
dataset prepared as array_record, read through ``tfds.data_source`` without
TensorFlow; or the offline digits), so memory does not grow with the size of
the dataset and images may differ in size. Each record is decoded, cropped to
a square (centred; at a random position for training if asked), resized with
an area filter to ``image_size`` and put in the model's pixel format.

Training (:class:`ImageStream`):

* the stream is ``shuffle(seed)`` (a new permutation every epoch) →
  ``repeat`` → per-example preparation with a generator seeded by the
  example's position in the stream → batches of the *process-local* size;
* global batch ``k`` is stream positions ``[k·B, (k+1)·B)``; process ``p`` of
  ``P`` reads only positions ``[k·B + p·B/P, k·B + (p+1)·B/P)``. The global
  batches are therefore the same for any number of processes, and each
  process reads only its own slice (a static per-process split of the files,
  like grain's ``ShardByJaxProcess``, would change the batches with the
  process count);
* ``workers > 0`` prepares batches in that many worker processes
  (grain's ``mp_prefetch``), each keeping a few batches ready, while the
  training process runs the step; the batches are the same as with 0 workers;
* :meth:`ImageStream.state_dict` holds grain's iterator state, which the
  harness saves in every Orbax checkpoint beside the model state; a resumed
  run sees exactly the batches an uninterrupted one would.

Evaluation (:meth:`ImageSplit.eval_batches`) streams a whole split in a fixed
order and format, the last batch padded with the split's last example and a
mask of zeros, each process reading only its slice of every batch.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from dgmjax.data import pixels
from dgmjax.data.tfds_source import DatasetUnavailableError, _prepare_hint
from dgmjax.errors import ConfigError

#: Seeds of the fixed binarization of ``binary_static`` per split (the same
#: as ``load_image_dataset`` uses in memory).
STATIC_BINARIZATION_SEEDS = {"train": 1, "test": 2}
#: Seeds of the fixed binarization every evaluation of ``binary_dynamic``
#: sees per split (the harness's ``EVAL_BINARIZATION_SEEDS``).
EVAL_BINARIZATION_SEEDS = {"train": 101, "test": 102}
MIN_IMAGE_SIZE = 8


def is_streamed(dataset: str, image_size: int) -> bool:
  """Whether the harness streams ``dataset`` (everything except the digits at native size)."""
  return not (dataset == "digits" and not image_size)


# ----------------------------------------------------------------------------
# Per-image work (NumPy + Pillow, runs in the worker processes)
# ----------------------------------------------------------------------------
def fit_image(
    image: np.ndarray,
    size: int,
    *,
    rng: np.random.Generator | None = None,
    random_crop: bool = False,
    random_flip: bool = False,
) -> np.ndarray:
  """uint8 ``(H, W[, C])`` -> uint8 ``(size, size, C)``.

  The largest centred square is cut out (at a uniformly random position with
  ``random_crop``), then resized: when shrinking with an area (box) filter,
  so every output pixel is the rounded mean of the input area it covers and
  nothing aliases; when enlarging bilinearly. ``size=0`` keeps the image as
  it is. ``random_flip`` mirrors it left-right with probability 1/2. The
  random choices need ``rng``.

  A 4x6 image: the centred 4x4 square, each 2x2 block averaged:

  >>> x = np.array([[0, 0, 2, 4, 6, 0]] * 4, np.uint8) * np.array([[1], [1], [3], [3]], np.uint8)
  >>> fit_image(x, 2)[..., 0]
  array([[ 1,  5],
         [ 3, 15]], dtype=uint8)
  """
  x = np.asarray(image)
  if x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3 or x.dtype != np.uint8:
    raise ValueError(f"images must be uint8 (H, W) or (H, W, C), got {x.dtype} {x.shape}.")
  if (random_crop or random_flip) and rng is None:
    raise ValueError("random_crop and random_flip need an rng.")
  h, w, c = x.shape
  if size:
    side = min(h, w)
    if random_crop:
      top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    else:
      top, left = (h - side) // 2, (w - side) // 2
    x = x[top:top + side, left:left + side]
    if side != size:
      x = _resize(x, size)
  if random_flip and rng.random() < 0.5:
    x = x[:, ::-1]
  return np.ascontiguousarray(x)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
  from PIL import Image

  # Pillow's filters in 32-bit float ("F" images, one per channel): its
  # uint8 path rounds in fixed point and drifts by up to one level.
  method = Image.Resampling.BOX if x.shape[0] > size else Image.Resampling.BILINEAR
  out = [np.asarray(Image.fromarray(x[..., c].astype(np.float32)).resize(
      (size, size), method)) for c in range(x.shape[-1])]
  return np.clip(np.rint(np.stack(out, axis=-1)), 0, 255).astype(np.uint8)


def format_image(image: np.ndarray, pixel_format: str, rng: np.random.Generator) -> np.ndarray:
  """uint8 -> float32 in ``pixel_format``; both binary formats draw from ``rng``."""
  if pixel_format in ("binary_static", "binary_dynamic"):
    return pixels.binarize(pixels.to_unit(image), rng)
  return pixels.format_images(image, pixel_format)


# ----------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------
class ArraySource:
  """Random access over in-memory uint8 images (the offline digits)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self._images, self._labels = images, labels

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, i: int) -> dict:
    return {"image": self._images[i], "label": self._labels[i]}


class _Records:
  """The first ``n`` records of a source as ``{"image": uint8 HWC, "label", "record"}``."""

  def __init__(self, source, n: int):
    self._source, self._n = source, n

  def __len__(self) -> int:
    return self._n

  def _one(self, ex: Mapping[str, Any], i: int) -> dict:
    image = np.asarray(ex["image"])
    if image.ndim == 2:
      image = image[..., None]
    label = ex.get("label", -1)
    label = int(label) if np.ndim(label) == 0 else -1
    return {"image": image, "label": label, "record": int(i)}

  def __getitem__(self, i: int) -> dict:
    i = int(i)
    return self._one(self._source[i], i)

  def __getitems__(self, indices: Sequence[int]) -> list[dict]:
    indices = [int(i) for i in indices]
    get = getattr(self._source, "__getitems__", None)
    items = get(indices) if get is not None else [self._source[i] for i in indices]
    return [self._one(ex, i) for ex, i in zip(items, indices, strict=True)]


@dataclasses.dataclass(frozen=True)
class _Prep:
  """How one record becomes a model input (picklable: it travels to the workers)."""

  size: int
  native_shape: tuple[int, ...] | None  # size == 0: every image must have this shape
  pixel_format: str
  static_seed: int
  dataset: str

  def image(self, ex: dict, rng: np.random.Generator | None = None, *, random_crop=False,
            random_flip=False) -> np.ndarray:
    x = ex["image"]
    if not self.size and tuple(x.shape) != self.native_shape:
      raise ConfigError(
          f"config.image_size must be > 0 for {self.dataset}: record {ex['record']} is "
          f"{x.shape[0]}x{x.shape[1]}, the first one {self.native_shape[0]}x"
          f"{self.native_shape[1]} (the images differ in size).")
    return fit_image(x, self.size, rng=rng, random_crop=random_crop, random_flip=random_flip)

  def static_rng(self, record: int) -> np.random.Generator:
    return np.random.default_rng([self.static_seed, record])


@dataclasses.dataclass(frozen=True)
class _TrainExample:
  """grain ``random_map``: ``rng`` is seeded by the example's stream position."""

  prep: _Prep
  random_crop: bool
  random_flip: bool

  def __call__(self, ex: dict, rng: np.random.Generator) -> dict:
    x = self.prep.image(ex, rng, random_crop=self.random_crop, random_flip=self.random_flip)
    fmt = self.prep.pixel_format
    draw = self.prep.static_rng(ex["record"]) if fmt == "binary_static" else rng
    return {"image": format_image(x, fmt, draw), "label": np.int32(ex["label"])}


@dataclasses.dataclass(frozen=True)
class _EvalExample:
  """Padded position ``q`` of a split -> its example in the fixed evaluation format."""

  records: _Records
  prep: _Prep
  eval_seed: int

  def __call__(self, q: int) -> dict:
    n = len(self.records)
    r = min(int(q), n - 1)
    ex = self.records[r]
    x = self.prep.image(ex)
    fmt = self.prep.pixel_format
    if fmt == "binary_dynamic":
      x = format_image(x, fmt, np.random.default_rng([self.eval_seed, r]))
    else:
      x = format_image(x, fmt, self.prep.static_rng(r))
    return {"index": np.int32(r), "image": x, "label": np.int32(ex["label"]),
            "_mask": np.float32(q < n)}


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}.")
  return process_index, process_count


def _worker_init(worker_index: int, worker_count: int) -> None:
  """Runs first in each worker process."""
  import signal
  import threading
  import time

  # Ctrl-C reaches the whole process group: the training process saves a
  # checkpoint and then stops the workers itself; they must not die first.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  parent = os.getppid()

  def watch() -> None:
    # A training process killed with SIGKILL cannot stop its workers: they
    # notice that their parent is gone and exit instead of lingering.
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(0)

  threading.Thread(target=watch, daemon=True, name="dgmjax-parent-watch").start()


def _allow_grain_workers() -> None:
  from absl import flags

  # grain's worker start-up reads one of its absl flags; in a program that
  # never ran absl's parser (a notebook, pytest) that read would raise.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


# ----------------------------------------------------------------------------
# A split
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImageSplit:
  """One split of an image dataset, opened for random access (nothing is loaded).

  Attributes:
    dataset: the dataset's name as given (for messages).
    split: the split read (a TFDS split name, slices allowed).
    role: ``"train"`` or ``"test"``: picks the fixed binarization seeds.
    records: the random-access records.
    image_shape: ``(H, W, C)`` of every prepared image.
    pixel_format: one of ``pixels.PIXEL_FORMATS``.
    eval_seed: seed of the fixed evaluation draw of ``binary_dynamic``.
  """

  dataset: str
  split: str
  role: str
  records: _Records
  image_shape: tuple[int, int, int]
  pixel_format: str
  prep: _Prep
  eval_seed: int

  @property
  def num_examples(self) -> int:
    return len(self.records)

  def examples(self, indices: Iterable[int]) -> dict:
    """Examples at ``indices`` in the evaluation format, stacked (read here, in order)."""
    f = _EvalExample(self.records, self.prep, self.eval_seed)
    items = [f(int(i)) for i in indices]
    return {k: np.stack([it[k] for it in items]) for k in ("index", "image", "label")}

  def eval_batches(
      self,
      batch_size: int,
      *,
      workers: int = 0,
      process_index: int | None = None,
      process_count: int | None = None,
  ) -> Iterator[tuple[dict, np.ndarray, int]]:
    """The whole split in global batches of ``batch_size``, the last one padded.

    Yields ``(local batch, local mask, real)`` per global batch: this
    process's contiguous slice of the batch (``index``, ``image``,
    ``label``), 1.0/0.0 for real/padding rows of that slice, and how many
    rows of the whole global batch are real. ``workers`` threads prepare
    the next batches in the background (threads, not processes: an
    evaluation is short and starting processes each time would cost more).
    """
    import grain

    pi, nproc = _process(process_index, process_count)
    if batch_size < 1 or batch_size % nproc:
      raise ValueError(f"batch_size={batch_size} must be >= 1 and divisible by the "
                       f"number of processes ({nproc}).")
    n = self.num_examples
    total = math.ceil(n / batch_size) * batch_size
    per = batch_size // nproc
    ds = grain.MapDataset.range(total).map(_EvalExample(self.records, self.prep, self.eval_seed))
    ds = ds.batch(per, drop_remainder=True)[pi::nproc]
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=workers,
                                              prefetch_buffer_size=2 * workers))
    for b, batch in enumerate(it):
      batch = {k: np.array(v) for k, v in batch.items()}
      mask = batch.pop("_mask")
      yield batch, mask, min(batch_size, n - b * batch_size)


def _split_names(builder) -> list[str]:
  return sorted(builder.info.splits.keys())


def _builder(dataset: str, data_dir: str | None):
  """The TFDS builder of ``tfds:<name>`` or of a prepared dataset folder."""
  import tensorflow_datasets as tfds

  if dataset.startswith("tfds:") and len(dataset) > 5:
    name = dataset[5:]
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - TFDS raises several unrelated types
      raise DatasetUnavailableError(_prepare_hint(name, data_dir) + f"\n({e.__class__.__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return builder
  path = os.path.abspath(os.path.expanduser(dataset))
  if not os.path.isdir(path):
    raise ConfigError(f"config.dataset must be 'digits', 'tfds:<name>' or the folder of a "
                      f"prepared TFDS dataset; {dataset!r} is none of these (no such folder).")
  if not os.path.exists(os.path.join(path, "dataset_info.json")):
    # A dataset folder holding version folders (<name>/<version>/): the newest.
    found = sorted(glob.glob(os.path.join(path, "*", "dataset_info.json")),
                   key=lambda p: _version_key(os.path.basename(os.path.dirname(p))))
    if not found:
      raise ConfigError(f"config.dataset={dataset!r} holds no dataset_info.json (nor does any "
                        "folder inside it): give the folder of a TFDS dataset prepared as "
                        "array_record, e.g. ~/tensorflow_datasets/celeb_a/2.1.0.")
    path = os.path.dirname(found[-1])
  try:
    return tfds.builder_from_directory(path)
  except Exception as e:  # noqa: BLE001
    raise DatasetUnavailableError(f"cannot read the TFDS dataset in {path}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _version_key(text: str) -> tuple:
  return tuple(int(t) if t.isdigit() else -1 for t in text.split("."))


def _open_source(dataset: str, split: str, split_key: str, data_dir: str | None):
  """``(random-access source, fixed image shape or None)`` of one split."""
  if dataset == "digits":
    from dgmjax.data.digits import load_digits

    if split not in ("train", "test"):
      raise ConfigError(f"config.{split_key} must be 'train' or 'test' for the digits, "
                        f"got {split!r}.")
    images, labels = load_digits(split)
    return ArraySource(images, labels), images.shape[1:]
  builder = _builder(dataset, data_dir)
  base = split.split("[")[0]
  names = _split_names(builder)
  if base not in names:
    if not names:
      raise DatasetUnavailableError(_prepare_hint(dataset.removeprefix("tfds:"), data_dir))
    raise ConfigError(f"config.{split_key}={split!r} is not a split of {dataset}; its splits "
                      f"are {names}.")
  features = builder.info.features
  keys = list(features.keys()) if features is not None else []
  if features is not None and "image" not in keys:
    raise ConfigError(f"config.dataset={dataset!r} has no 'image' feature (its features: "
                      f"{sorted(keys)}); the image trainers need one.")
  shape = tuple(getattr(features["image"], "shape", ())) if features is not None else ()
  fixed = shape if len(shape) in (2, 3) and all(d is not None for d in shape) else None
  try:
    source = builder.as_data_source(split=split)
  except Exception as e:  # noqa: BLE001 - not prepared, or prepared as tfrecord only
    hint = _prepare_hint(dataset.removeprefix("tfds:"), data_dir)
    raise DatasetUnavailableError(f"{hint}\n({e.__class__.__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
  return source, fixed


def open_image_split(
    dataset: str,
    split: str,
    *,
    role: str,
    image_size: int = 0,
    pixel_format: str = "unit",
    data_dir: str | None = None,
    limit: int | None = None,
    split_key: str | None = None,
    eval_seed: int | None = None,
) -> ImageSplit:
  """Open one split of ``dataset`` for streaming (reads one record, loads nothing).

  Args:
    dataset: ``"digits"``, ``"tfds:<name>"`` (prepared as array_record in
      ``data_dir``), or the folder of a prepared TFDS dataset.
    split: the split name (``"train"``, ``"validation"``, ``"train[:90%]"``).
    role: ``"train"`` or ``"test"``; picks the fixed binarization seeds.
    image_size: > 0: square crop, then resize to ``image_size``; 0: native
      size, which must be the same for every image.
    pixel_format: one of ``pixels.PIXEL_FORMATS``.
    data_dir: the TFDS data folder for ``tfds:<name>`` (None: TFDS default).
    limit: keep only the first ``limit`` records (smoke runs).
    split_key: the config key that named the split (for messages).
    eval_seed: seed of the evaluation draw of ``binary_dynamic``.
  """
  pixels.check_pixel_format(pixel_format)
  if role not in STATIC_BINARIZATION_SEEDS:
    raise ValueError(f"role must be 'train' or 'test', got {role!r}.")
  if not isinstance(image_size, int) or isinstance(image_size, bool) or (
      image_size != 0 and image_size < MIN_IMAGE_SIZE):
    raise ConfigError(f"config.image_size must be 0 (native size) or an int >= "
                      f"{MIN_IMAGE_SIZE}, got {image_size!r}.")
  split_key = split_key or f"{role}_split"
  source, fixed = _open_source(dataset, split, split_key, data_dir)
  n = len(source) if not limit else min(limit, len(source))
  if n == 0:
    raise ConfigError(f"config.{split_key}={split!r} of {dataset} is empty.")
  records = _Records(source, n)
  first = records[0]["image"]
  if not image_size:
    if fixed is None and dataset != "digits":
      raise ConfigError(f"config.image_size must be > 0 for {dataset}: its images have no fixed "
                        f"size (first one {first.shape[0]}x{first.shape[1]}); e.g. "
                        "--config.image_size=64 (centre crop + resize).")
    shape = tuple(int(d) for d in first.shape)
  else:
    shape = (image_size, image_size, int(first.shape[-1]))
  prep = _Prep(image_size, tuple(first.shape) if not image_size else None, pixel_format,
               STATIC_BINARIZATION_SEEDS[role], dataset)
  return ImageSplit(dataset, split, role, records, shape, pixel_format, prep,
                    EVAL_BINARIZATION_SEEDS[role] if eval_seed is None else eval_seed)


# ----------------------------------------------------------------------------
# The training stream
# ----------------------------------------------------------------------------
class ImageStream:
  """Infinite iterator of global training batches of one :class:`ImageSplit`.

  Args:
    split: the training split.
    batch_size: the *global* batch size (over all processes and devices).
    seed: seeds the per-epoch shuffle and the per-example random draws.
    sharding: where to place batches (``NamedSharding(mesh, P("data"))``);
      None returns host NumPy arrays.
    workers: worker processes preparing batches ahead; 0 prepares each batch
      in this process when it is asked for. The batches do not depend on it.
    random_crop, random_flip: training augmentation (see :func:`fit_image`).
    buffer: batches each worker keeps ready.
    process_index, process_count: this process's slice of every global batch
      (default: JAX's).
  """

  def __init__(
      self,
      split: ImageSplit,
      *,
      batch_size: int,
      seed: int,
      sharding=None,
      workers: int = 0,
      random_crop: bool = False,
      random_flip: bool = False,
      buffer: int = 2,
      process_index: int | None = None,
      process_count: int | None = None,
  ):
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
      raise ConfigError(f"config.data_workers must be an int >= 0, got {workers!r}.")
    n = split.num_examples
    if batch_size < 1 or batch_size > n:
      raise ValueError(f"batch_size must be in [1, {n}] (the number of examples), got {batch_size}.")
    self._pi, self._nproc = _process(process_index, process_count)
    if batch_size % self._nproc:
      raise ValueError(f"batch_size={batch_size} must be divisible by the number of "
                       f"processes ({self._nproc}).")
    if sharding is not None:
      ndev = sharding.mesh.size if hasattr(sharding, "mesh") else None
      if ndev and batch_size % ndev:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of "
                         f"devices ({ndev}) to shard the batch evenly.")
    self.split = split
    self.batch_size = batch_size
    self.seed = int(seed)
    self.workers = workers
    self._sharding = sharding
    self._example = _TrainExample(split.prep, bool(random_crop), bool(random_flip))
    self._buffer = buffer
    self.step = 0  # batches handed out
    self._offset = 0  # the iterator starts at this batch (a resume with another worker count)
    self._grain_state = None  # to apply when the iterator is created
    self._it = None

  @property
  def batches_per_epoch(self) -> float:
    return self.split.num_examples / self.batch_size

  def _batches(self):
    import grain

    seed = self.seed % 2**32
    ds = grain.MapDataset.source(self.split.records).shuffle(seed=seed).repeat()
    # The draws of an example are a function of its stream position only, so
    # they do not depend on the number of workers or processes.
    ds = ds.random_map(self._example, seed=(seed + 1) % 2**32)
    ds = ds.batch(self.batch_size // self._nproc, drop_remainder=True)
    return ds[self._pi::self._nproc]

  def _iterator(self):
    if self._it is None:
      import grain

      ds = self._batches()
      if self._offset:
        ds = ds[self._offset:]
      ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
      if self.workers:
        _allow_grain_workers()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=self.workers, per_worker_buffer_size=self._buffer),
            worker_init_fn=_worker_init)
      self._it = iter(ds)
      if self._grain_state is not None:
        self._it.set_state(self._grain_state)
        self._grain_state = None
    return self._it

  # -- state -----------------------------------------------------------------
  def state_dict(self) -> dict:
    """JSON-ready: the batches handed out and grain's iterator state."""
    grain_state = self._it.get_state() if self._it is not None else self._grain_state
    return {"seed": self.seed, "step": int(self.step), "offset": int(self._offset),
            "workers": int(self.workers), "grain": grain_state}

  def load_state_dict(self, state: Mapping[str, Any]) -> None:
    """Continue after the last batch that ``state`` had handed out."""
    if int(state.get("seed", self.seed)) != self.seed:
      raise ValueError(
          f"the checkpoint's data stream used seed {state['seed']}, this run "
          f"uses seed {self.seed}; resume with the same seed or a new workdir.")
    if "step" not in state:
      raise ValueError("the checkpoint's data stream was not a streamed dataset; resume with "
                       "the original config.dataset and config.image_size, or a new workdir.")
    self.close()
    self.step = int(state["step"])
    if int(state.get("workers", -1)) == self.workers and state.get("grain") is not None:
      self._offset, self._grain_state = int(state["offset"]), state["grain"]
    else:
      # grain's state of worker processes holds one position per worker; with
      # another worker count, restart at the next batch (random access makes
      # that exact too).
      self._offset, self._grain_state = self.step, None

  # -- iteration -------------------------------------------------------------
  def next_numpy(self) -> dict:
    """The next *process-local* batch as NumPy arrays (advances the stream)."""
    batch = next(self._iterator())
    self.step += 1
    # Copies: the workers hand over shared-memory arrays that must not outlive them.
    return {k: np.array(v) for k, v in batch.items()}

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    batch = self.next_numpy()
    if self._sharding is None:
      return batch
    from dgmjax.data.loader import put_batch

    return put_batch(batch, self._sharding, self.batch_size)

  def close(self) -> None:
    """Stop the worker processes (also done at garbage collection)."""
    it, self._it = self._it, None
    if it is not None:
      if self._grain_state is None:
        self._grain_state = it.get_state()
      close = getattr(it, "close", None)
      if close is not None:
        close()
