"""The one training harness every trainer in ``train/`` shares.

A trainer module defines its config (``get_config``) and a ``make_task``
function returning a :class:`Task`: how to initialise the state, the pure
``train_step``, and optionally an evaluation step, pictures and a final report.
Everything else lives here: data, the device mesh and sharded step,
checkpoints and resumption, the NaN guard, signals, progress, TensorBoard,
``metrics.jsonl`` and ``summary.json``.

The data-parallel step is ``jax.jit`` over a 1-D ``data`` mesh of all devices:
the batch is sharded along its leading axis, the state replicated, and XLA
inserts the gradient all-reduce. Metrics computed as batch means inside the
step are therefore global means.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dgmjax import cpu_devices
from dgmjax import data as dgdata
from dgmjax import images as imglib
from dgmjax.errors import CheckpointError, ConfigError, NonFiniteError, UserError  # noqa: F401
from train import checkpoints as ckptlib
from train import cli
from train import workdir as workdir_lib

PyTree = Any


# ----------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------
def base_config() -> ml_collections.ConfigDict:
  """Keys every trainer has. Trainers add their own model keys."""
  c = ml_collections.ConfigDict()
  c.dataset = "digits"  # "digits" (offline), "tfds:<name>" or a prepared TFDS dataset folder
  c.data_dir = ""  # TFDS data dir ("" = TFDS default)
  c.pixel_format = "unit"
  c.data_limit = 0  # >0: keep only this many images per split (smoke runs)
  # Streamed datasets (all but the digits at native size; dgmjax/data/pipeline.py):
  c.image_size = 0  # >0: square crop + area resize to this side; 0: native size
  c.train_split = "train"
  c.test_split = "test"  # e.g. "validation" for ImageNet
  c.data_workers = 0  # processes preparing batches ahead; 0: in the training process
  c.random_crop = False  # training crops the square at a random position, not the centre
  c.random_flip = False  # training mirrors images left-right with probability 1/2
  c.seed = 0
  c.batch_size = 128
  c.eval_batch_size = 256
  c.num_steps = 1000
  c.learning_rate = 1e-3
  c.log_every = 50
  c.eval_every = 0  # 0: evaluate only at the end
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.image_every = 0  # 0: pictures only at the end
  c.num_images = 64
  c.quiet = False
  c.eval_only = False
  # CPU runs: -1 (JAX's default, one CPU device), 0 (one XLA device per core,
  # the batch sharded over them) or N. XLA runs most small convolutions on one
  # thread, so 0 gave the VQ-VAE 2.5x here, but runs with 2 CPU devices can hang
  # in XLA's CPU all-reduce (the MLP trainers always did, a VQ-VAE run once),
  # so -1 is the default (dgmjax/cpu_devices.py, docs/performance.md).
  c.cpu_devices = -1
  # The mesh: 0 = every device JAX sees; N = the first N of them (one process
  # only), e.g. one GPU of eight, or one CPU device where several exist.
  c.num_devices = 0
  c.distributed = False
  c.coordinator_address = ""  # e.g. 127.0.0.1:1234; "" = auto-detect
  c.num_processes = 0
  c.process_id = -1
  return c


def config_check(config: ml_collections.ConfigDict) -> Callable[[bool, str, str], None]:
  """``need(cond, key, what)``: raise one ConfigError naming ``config.key`` unless cond."""

  def need(cond: bool, key: str, what: str) -> None:
    if not cond:
      raise ConfigError(f"config.{key} must be {what}, got {config[key]!r}.")

  return need


def is_int(value: Any, lo: int) -> bool:
  """A Python int (not a bool) >= lo."""
  return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def is_finite(value: Any) -> bool:
  """A real number (int or float, not a bool) that is neither NaN nor ±inf."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def check_config(
    config: ml_collections.ConfigDict,
    *,
    choices: Mapping[str, tuple] | None = None,
    ints: Mapping[str, int] | None = None,
    int_tuples: tuple[str, ...] = (),
    ranges: Mapping[str, str] | None = None,
) -> None:
  """Validate many keys at once, each failure one :class:`ConfigError` naming its key.

  Args:
    config: the config.
    choices: ``{key: allowed values}``.
    ints: ``{key: lo}``: an int (not a bool) >= lo.
    int_tuples: keys that must be non-empty tuples of ints >= 1 (layer widths).
    ranges: ``{key: interval}`` with intervals written like ``"(0, 1]"`` or
      ``"[0, inf)"``: a finite number (NaN and ±inf are refused) inside it.
  """
  need = config_check(config)
  for key, options in (choices or {}).items():
    need(config[key] in options, key, f"one of {tuple(options)}")
  for key, lo in (ints or {}).items():
    need(is_int(config[key], lo), key, f"an int >= {lo}")
  for key in int_tuples:
    v = config[key]
    need(isinstance(v, (tuple, list)) and len(v) >= 1 and all(is_int(h, 1) for h in v), key,
         "a non-empty tuple of ints >= 1")
  for key, interval in (ranges or {}).items():
    lo, hi = (float(t) for t in interval[1:-1].split(","))
    v = config[key]
    ok = is_finite(v) and (v > lo if interval[0] == "(" else v >= lo) and (
        v < hi if interval[-1] == ")" else v <= hi)
    need(ok, key, f"a finite number in {interval}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Reject bad values with a message that names the key."""
  need = config_check(config)

  for key in ("batch_size", "eval_batch_size", "num_steps", "log_every",
              "checkpoint_every", "keep_checkpoints", "num_images"):
    need(isinstance(config[key], int) and config[key] >= 1, key, "an int >= 1")
  for key in ("eval_every", "image_every", "data_limit"):
    need(isinstance(config[key], int) and config[key] >= 0, key, "an int >= 0")
  check_config(config, ints={"seed": 0, "data_workers": 0}, ranges={"learning_rate": "(0, inf)"})
  size = config.image_size
  need(is_int(size, 0) and (size == 0 or size >= dgdata.pipeline.MIN_IMAGE_SIZE), "image_size",
       f"0 (native size) or an int >= {dgdata.pipeline.MIN_IMAGE_SIZE}")
  for key in ("random_crop", "random_flip"):
    need(isinstance(config[key], bool), key, "True or False")
  for key in ("train_split", "test_split"):
    need(isinstance(config[key], str) and bool(config[key]), key, "a split name")
  dgdata.pixels.check_pixel_format(config.pixel_format)
  ndev = jax.device_count()
  n = config.get("num_devices", 0)
  need(is_int(n, 0) and n <= ndev, "num_devices",
       f"0 (every device) or an int from 1 to the device count {ndev}")
  need(n in (0, ndev) or jax.process_count() == 1, "num_devices",
       f"0 with {jax.process_count()} processes (each uses all of its devices)")
  ndev = n or ndev
  for key in ("batch_size", "eval_batch_size"):
    need(config[key] % ndev == 0, key, f"divisible by the device count {ndev}")


# ----------------------------------------------------------------------------
# Task: what a trainer provides
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What a model needs to know about its data."""

  image_shape: tuple[int, ...]
  num_train: int
  num_test: int
  dataset: dgdata.ImageDataset | None = None


@dataclasses.dataclass(frozen=True)
class Eval:
  """One named evaluation: a per-example function run over whole splits.

  Attributes:
    step: ``(state, batch) -> {name: per-example values (B, ...)}``, jitted
      by the harness over the data mesh. ``batch["index"]`` holds each
      example's position in its split: fold it into a key
      (:func:`dgmjax.eval.example_keys`) and the results do not depend on the
      batch size or the number of devices.
    splits: the splits it runs on, ``"test"`` and/or ``"train"``; each
      split is seen in its fixed evaluation format (:func:`formatted`).
    gather: False: the mean over the split's examples (padding masked out)
      of every value, a scalar or a vector (e.g. a code histogram); these
      reach ``summary.json`` as ``test/<name>`` / ``train_set/<name>``.
      True: every example's values, concatenated in split order, for a
      report that needs the whole split at once (e.g. ELBO surgery).
    during_training: also run on the test split every ``eval_every`` steps
      and logged as ``test/<name>`` (mean evaluations only).
  """

  step: Callable[[PyTree, Mapping[str, jax.Array]], dict]
  splits: tuple[str, ...] = ("test",)
  gather: bool = False
  during_training: bool = False


@dataclasses.dataclass(frozen=True)
class Task:
  """The parts of a trainer that differ between models.

  Attributes:
    init: ``(key, example_batch) -> state``; the state is any PyTree.
    train_step: pure ``(state, batch) -> (state, metrics)``; metrics are
      scalars (global means under ``jit`` with a sharded batch). Randomness
      comes from the state.
    evals: named :class:`Eval` s, run once over their splits at the end.
    images: ``(state, batch) -> {name: (N, H, W, C) in [0, 1]}`` or
      ``{name: ready uint8 picture}`` on a fixed batch of test examples;
      written every ``image_every`` steps and at the end.
    report: ``(state, ctx) -> dict``: post-processing of ``ctx.results``
      into extra ``summary.json`` figures; pictures and files go through
      ``ctx.image`` / ``ctx.write_text`` so they reach TensorBoard too.
  """

  init: Callable[[jax.Array, Mapping[str, np.ndarray]], PyTree]
  train_step: Callable[[PyTree, Mapping[str, jax.Array]], tuple[PyTree, dict]]
  evals: Mapping[str, Eval] = dataclasses.field(default_factory=dict)
  images: Callable[[PyTree, Mapping[str, jax.Array]], dict] | None = None
  report: Callable[[PyTree, "Context"], dict] | None = None


#: summary.json prefix of each split's mean evaluations ("train/" is taken by
#: the training metrics).
SPLIT_PREFIX = {"test": "test", "train": "train_set"}


@dataclasses.dataclass
class Context:
  """What a task's ``report`` is handed.

  ``results[eval_name][split]`` holds each :class:`Eval` 's output: a dict
  of means, or of whole per-example NumPy arrays for ``gather=True``.
  """

  config: ml_collections.ConfigDict
  workdir: str
  info: DataInfo
  is_main: bool
  step: int
  results: dict[str, dict[str, dict[str, Any]]]
  writer: "Writer"

  def image(self, name: str, picture: np.ndarray) -> None:
    """Write a uint8 picture as ``images/<name>.png`` and to TensorBoard."""
    self.writer.images(self.step, {name: picture}, final=True)

  @property
  def writable(self) -> bool:
    """Whether this process writes files (process 0, and not a read-only workdir)."""
    return self.is_main and self.writer.writes_files

  def write_text(self, name: str, text: str) -> None:
    """Write ``<workdir>/<name>``."""
    if self.writable:
      with open(os.path.join(self.workdir, name), "w") as f:
        f.write(text)

  def write_arrays(self, name: str, **arrays: np.ndarray) -> None:
    """Write ``<workdir>/<name>`` (``.npz``) for users who want the raw numbers of a picture."""
    if self.writable:
      np.savez(os.path.join(self.workdir, name), **arrays)

  def animate(self, name: str) -> None:
    """``images/<name>.gif`` from every picture ``images`` wrote under ``name``."""
    frames = self.frames(name)
    if self.writable and frames:
      from dgmjax import plots

      plots.save_gif(frames, os.path.join(self.workdir, "images", f"{name}.gif"))

  def history(self, *keys: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Logged ``(steps, values)`` of each key over the whole run (resumes included)."""
    return read_history(os.path.join(self.workdir, "metrics.jsonl"), keys)

  def frames(self, name: str) -> list[np.ndarray]:
    """The pictures ``images`` wrote under ``name`` during training, in step order."""
    return self.writer.frames(name)


def read_history(path: str, keys) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """``{key: (steps, values)}`` from a ``metrics.jsonl``; keys never logged are left out."""
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for ln in f:
        try:
          rows.append(json.loads(ln))
        except json.JSONDecodeError:  # a line cut by SIGKILL
          pass
  out = {}
  for key in keys:
    pts = [(r["step"], r[key]) for r in rows if key in r]
    if pts:
      steps, vals = zip(*pts, strict=True)
      out[key] = (np.asarray(steps, np.float64), np.asarray(vals, np.float64))
  return out


def check_example(example: Mapping[str, np.ndarray], info: DataInfo) -> None:
  """A batch of images must be (B, *info.image_shape): one error before anything compiles."""
  x = example.get("image")
  if x is None or not info.image_shape:
    return
  want = (None, *info.image_shape)
  if x.ndim != len(want) or tuple(x.shape[1:]) != tuple(info.image_shape):
    raise ConfigError(f"images must have shape (B, {', '.join(map(str, info.image_shape))}), "
                      f"got {x.shape}.")


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------
def image_transform(pixel_format: str) -> Callable[[dict, np.random.Generator], dict]:
  def transform(batch: dict, rng: np.random.Generator) -> dict:
    out = dict(batch)
    out["image"] = dgdata.pixels.format_images(batch["image"], pixel_format, rng)
    return out

  return transform


def load_data(config) -> tuple[dict, dict, DataInfo]:
  ds = dgdata.load_image_dataset(
      config.dataset,
      data_dir=config.data_dir or None,
      pixel_format=config.pixel_format,
      train_split=config.get("train_split", "train"),
      test_split=config.get("test_split", "test"),
      limit=config.data_limit or None,
  )
  train = {"image": ds.train_images, "label": ds.train_labels}
  test = {"image": ds.test_images, "label": ds.test_labels}
  info = DataInfo(ds.image_shape, len(ds.train_images), len(ds.test_images), ds)
  return train, test, info


def open_streamed(config) -> dict[str, dgdata.pipeline.ImageSplit]:
  """``{"train", "test"}`` splits of ``config.dataset``, opened for streaming (nothing loaded)."""
  return {role: dgdata.pipeline.open_image_split(
              config.dataset, config[f"{role}_split"], role=role, image_size=config.image_size,
              pixel_format=config.pixel_format, data_dir=config.data_dir or None,
              limit=config.data_limit or None, split_key=f"{role}_split",
              eval_seed=EVAL_BINARIZATION_SEEDS[role])
          for role in ("train", "test")}


_STREAM_KEYS = {"image_size": 0, "data_workers": 0, "random_crop": False, "random_flip": False}


def _check_in_memory(config, *, custom: bool) -> None:
  """The streaming keys mean nothing for data held in memory: say so instead of ignoring them."""
  for key, default in _STREAM_KEYS.items():
    if key in config and config[key] != default:
      why = ("this trainer brings its own data" if custom else
             "the digits at their native size are held in memory; --config.image_size=28 "
             "streams them")
      raise ConfigError(f"config.{key}={config[key]!r} applies to streamed datasets only ({why}).")


def _without_index(batch: dict) -> dict:
  return {k: v for k, v in batch.items() if k != "index"}


# One fixed binarization per split for every evaluation, whatever config.seed,
# so runs with different seeds (and different trainers) score the same images.
EVAL_BINARIZATION_SEEDS = {"train": 101, "test": 102}


def formatted(arrays: Mapping[str, np.ndarray], pixel_format: str,
              split: str = "test") -> dict:
  """A whole split in the model's pixel format, identical in every run.

  ``binary_dynamic`` gets the fixed Bernoulli draw of
  :data:`EVAL_BINARIZATION_SEEDS` ``[split]``; the other formats are
  deterministic.
  """
  out = dict(arrays)
  if pixel_format == "binary_dynamic":
    out["image"] = dgdata.pixels.static_binarization(
        arrays["image"], seed=EVAL_BINARIZATION_SEEDS[split])
  else:
    out["image"] = dgdata.pixels.format_images(arrays["image"], pixel_format)
  return out


# ----------------------------------------------------------------------------
# Mesh and compiled functions
# ----------------------------------------------------------------------------
def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
  """The 1-D ``data`` mesh over every device, or over the first ``num_devices``."""
  devices = jax.devices()[:num_devices] if num_devices else jax.devices()
  return jax.make_mesh(
      (len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
  )


def compile_train_step(task: Task, mesh) -> Callable:
  repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  return jax.jit(
      task.train_step,
      in_shardings=(repl, data),
      out_shardings=(repl, repl),
      donate_argnums=(0,),
  )


def make_evaluator(step: Callable, mesh, batch_size: int, *, gather: bool = False,
                   workers: int = 0) -> Callable:
  """``(state, arrays) -> {name: value}`` for a whole split, in fixed-size batches.

  ``gather=False``: the mean over all examples of each per-example value
  (scalars or vectors), padding masked out. ``gather=True``: each value for
  every example, concatenated in order, as NumPy. A streamed split is read
  batch by batch, prepared by ``workers`` background threads.
  """
  repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

  def masked_sums(state, batch, mask):
    out = {}
    for k, v in step(state, batch).items():
      v = jnp.asarray(v, jnp.float32)
      out[k] = jnp.sum(v * mask.reshape(mask.shape + (1,) * (v.ndim - 1)), axis=0)
    return out

  # Outputs replicated: with several processes every host sees the whole split.
  compiled = jax.jit(step if gather else masked_sums,
                     in_shardings=(repl, data) if gather else (repl, data, data),
                     out_shardings=repl)

  def local_batches(arrays, bs):
    """``(this process's slice of each padded global batch, its mask, real rows in the batch)``."""
    n = len(next(iter(arrays.values())))
    # Each example's position in its split, so a step can fold it into its
    # key: results then do not depend on the batch size or device count.
    arrays = {"index": np.arange(n, dtype=np.int32), **arrays}
    pi, per = jax.process_index(), bs // jax.process_count()
    for batch, mask in dgdata.padded_batches(arrays, bs):
      local = {k: v[pi * per : (pi + 1) * per] for k, v in batch.items()}
      yield local, mask[pi * per : (pi + 1) * per], int(mask.sum())

  def evaluate(state, arrays):
    """``arrays``: a whole split in memory, or a streamed ``dgmjax.data.pipeline.ImageSplit``."""
    streamed = isinstance(arrays, dgdata.pipeline.ImageSplit)
    n = arrays.num_examples if streamed else len(next(iter(arrays.values())))
    totals, parts, count = {}, [], 0.0
    ndev = mesh.size
    # A split smaller than one batch is padded only up to the device count.
    bs = min(batch_size, -(-n // ndev) * ndev)
    batches = (arrays.eval_batches(bs, workers=workers) if streamed
               else local_batches(arrays, bs))
    for local, local_mask, real in batches:
      g = dgdata.put_batch({**local, "_mask": local_mask}, data, bs)
      inputs = {k: v for k, v in g.items() if k != "_mask"}
      if gather:
        parts.append({k: np.asarray(v)[:real] for k, v in jax.device_get(compiled(state, inputs)).items()})
        continue
      for k, v in compiled(state, inputs, g["_mask"]).items():
        totals[k] = totals.get(k, 0.0) + v
      count += real
    if gather:
      return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {k: (float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64)) / count
            for k, v in jax.device_get(totals).items()}

  return evaluate


def _summary_values(means: Mapping[str, Any]) -> dict:
  """JSON-ready means: floats stay floats, vectors become lists."""
  return {k: (v if np.ndim(v) == 0 else [float(x) for x in np.ravel(v)]) for k, v in means.items()}


# ----------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------
Checkpointer = ckptlib.Checkpointer  # moved to train/checkpoints.py
restore_state = ckptlib.restore_state


def _abstract_state(task: Task, key, example, sharding) -> PyTree:
  return ckptlib.abstract_state(task.init, key, example, sharding)


# ----------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------
class Writer:
  """metrics.jsonl + TensorBoard + progress, on process 0 only."""

  def __init__(self, workdir: str, start_step: int, total: int, quiet: bool, enabled: bool,
               files: bool = True):
    self.enabled = enabled
    self.workdir = workdir
    self._bar = None
    self._tb = None
    self._plain = False
    if not enabled:
      return
    self.jsonl = os.path.join(workdir, "metrics.jsonl")
    if files:  # False: a read-only workdir (eval_only): messages only
      _truncate_jsonl(self.jsonl, start_step)
      from tensorboardX import SummaryWriter

      # purge_step drops events a killed run wrote after its last checkpoint.
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step or None)
    if not quiet and sys.stderr.isatty():
      from tqdm import tqdm

      self._bar = tqdm(total=total, initial=start_step, dynamic_ncols=True, unit="step")
    else:
      self._plain = not quiet

  @property
  def writes_files(self) -> bool:
    return self.enabled and self._tb is not None

  def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled or self._tb is None:
      return
    workdir_lib.append_line(self.jsonl, json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}))
    for k, v in metrics.items():
      self._tb.add_scalar(k, float(v), step)
    loss = next((metrics[k] for k in ("train/loss", "train/d_loss") if k in metrics), None)
    sps = metrics.get("perf/steps_per_sec")
    if self._bar is not None:
      post = {}
      if loss is not None:
        post["loss"] = f"{loss:.4g}"
      if sps is not None:
        post["steps/s"] = f"{sps:.1f}"
      self._bar.set_postfix(post, refresh=False)
    elif self._plain:
      parts = [f"step {step}"]
      parts += [f"{k}={v:.4g}" for k, v in metrics.items() if not k.startswith("perf/")]
      if sps is not None:
        parts.append(f"steps/s={sps:.1f}")
      print(" ".join(parts), flush=True)

  def advance(self, n: int) -> None:
    if self._bar is not None:
      self._bar.update(n)

  def images(self, step: int, grids: Mapping[str, np.ndarray], *, final: bool = False) -> None:
    """PNGs under ``images/`` and TensorBoard images.

    Training pictures are kept per step (``<name>_<step>.png``, plus
    ``<name>_latest.png``); a ``final`` picture of the report is
    ``<name>.png``.
    """
    if not self.enabled or self._tb is None:
      return
    for name, grid in grids.items():
      if final:
        imglib.save_png(grid, os.path.join(self.workdir, "images", f"{name}.png"))
      else:
        imglib.save_png(grid, os.path.join(self.workdir, "images", f"{name}_{step:07d}.png"))
        imglib.save_png(grid, os.path.join(self.workdir, "images", f"{name}_latest.png"))
      self._tb.add_image(name, grid, step, dataformats="HWC")

  def frames(self, name: str) -> list[np.ndarray]:
    """Every per-step picture written under ``name`` (this run and the runs it resumed)."""
    import glob

    from PIL import Image

    paths = sorted(glob.glob(os.path.join(self.workdir, "images", f"{name}_[0-9]*.png")))
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]

  def message(self, text: str) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(text)
    else:
      print(text, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()


_truncate_jsonl = workdir_lib.truncate_jsonl  # atomic: temporary file + rename


def _to_grids(images: Mapping[str, Any]) -> dict:
  out = {}
  for name, arr in jax.device_get(dict(images)).items():
    arr = np.asarray(arr)
    out[name] = arr if arr.dtype == np.uint8 else imglib.make_grid(arr)
  return out


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------
class _Signals:
  """Turn SIGTERM/SIGINT into a flag checked between steps."""

  def __init__(self):
    self.received: int | None = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    if self.received is not None:  # second Ctrl-C: give up waiting
      raise KeyboardInterrupt
    self.received = signum

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


class Interrupted(Exception):
  def __init__(self, signum: int, step: int):
    super().__init__(f"signal {signum} at step {step}")
    self.signum, self.step = signum, step


def _initialize_distributed(config) -> None:
  if not config.distributed:
    return
  # Only affects the CPU backend (multi-process CPU runs need gloo); asking
  # which backend we are on would initialise it, which must not happen yet.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if config.coordinator_address:
    kwargs["coordinator_address"] = config.coordinator_address
  if config.num_processes:
    kwargs["num_processes"] = config.num_processes
  if config.process_id >= 0:
    kwargs["process_id"] = config.process_id
  jax.distributed.initialize(**kwargs)


def _previous_perf(path: str) -> dict:
  try:
    with open(path) as f:
      return {k: v for k, v in json.load(f).items() if k.startswith("perf/")}
  except (OSError, ValueError):
    return {}


_check_finite = ckptlib.check_finite_metrics  # names the last checkpoint that exists


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    make_task: Callable[[ml_collections.ConfigDict, DataInfo], Task],
    *,
    load: Callable[[ml_collections.ConfigDict], tuple[dict, dict, DataInfo]] = load_data,
    transform: Callable | None = None,
    prepare: Callable[[ml_collections.ConfigDict, str], None] | None = None,
) -> dict:
  """Train (or resume, or only evaluate) and return the summary dict.

  Args:
    config: the trainer's config (base keys + model keys).
    workdir: checkpoints, logs and pictures go here; an existing one resumes.
    make_task: builds the :class:`Task` from the config and data info.
    load: returns ``(train arrays, test arrays, DataInfo)``; the default loads
      ``config.dataset`` as images.
    transform: per-batch host transform; default formats ``image`` pixels.
    prepare: ``prepare(config, workdir)`` fills keys whose default depends on
      other keys (or on the run in ``workdir``) before anything is checked.
  """
  if prepare is not None:
    prepare(config, workdir)
  # Before anything starts JAX's backends (distributed init included).
  cpu_devices.configure(config.cpu_devices, (config.batch_size, config.eval_batch_size))
  _initialize_distributed(config)
  validate_config(config)
  is_main = jax.process_index() == 0
  writable = workdir_lib.prepare(workdir, read_only_ok=config.eval_only)
  # Streamed: read record by record through dgmjax.data.pipeline (grain);
  # otherwise whole splits in memory (the offline digits, custom ``load``).
  streamed = load is load_data and dgdata.pipeline.is_streamed(config.dataset, config.image_size)
  if streamed:
    if transform is not None:
      raise ValueError("transform= applies to data held in memory, not to a streamed dataset.")
    splits = open_streamed(config)
    info = DataInfo(splits["train"].image_shape, splits["train"].num_examples,
                    splits["test"].num_examples)
    num_train = info.num_train
  else:
    _check_in_memory(config, custom=load is not load_data)
    train_arrays, test_arrays, info = load(config)
    num_train = len(next(iter(train_arrays.values())))
  cli.validate_run(config, num_train)
  if transform is None and not streamed:
    transform = image_transform(config.pixel_format) if "image" in train_arrays else None
  task = make_task(config, info)
  mesh = make_mesh(config.num_devices)
  data_sharding = NamedSharding(mesh, P("data"))

  if streamed:
    loader = dgdata.pipeline.ImageStream(
        splits["train"], batch_size=config.batch_size, seed=config.seed,
        sharding=data_sharding, workers=config.data_workers,
        random_crop=config.random_crop, random_flip=config.random_flip)
  else:
    loader = dgdata.BatchLoader(
        train_arrays, batch_size=config.batch_size, seed=config.seed,
        sharding=data_sharding, transform=transform,
    )
    raw_splits = {"train": train_arrays, "test": test_arrays}
  split_cache: dict[str, dict] = {}

  def split_data(split: str):
    """A whole split as every evaluation sees it, formatted once (streamed: read each time)."""
    if streamed:
      return splits[split]
    if split not in split_cache:
      arrays = raw_splits[split]
      split_cache[split] = (formatted(arrays, config.pixel_format, split)
                            if transform is not None else dict(arrays))
    return split_cache[split]

  test_f = split_data("test")
  if streamed:
    n_test = test_f.num_examples
    example = _without_index(test_f.examples(range(min(config.batch_size, n_test))))
  else:
    n_test = len(next(iter(test_f.values())))
    example = {k: v[:min(config.batch_size, n_test)] for k, v in test_f.items()}
  check_example(example, info)  # before anything compiles
  for name, ev in task.evals.items():
    unknown = set(ev.splits) - set(SPLIT_PREFIX)
    if unknown:
      raise ValueError(f"Eval {name!r} asks for unknown splits {sorted(unknown)}.")
  evaluators = {name: make_evaluator(ev.step, mesh, config.eval_batch_size, gather=ev.gather,
                                    workers=config.data_workers if streamed else 0)
                for name, ev in task.evals.items()}
  periodic = [name for name, ev in task.evals.items() if ev.during_training and not ev.gather]

  def evaluate(state) -> dict:
    """The periodic evaluations' scalar means on the test split, as ``test/<name>``."""
    out = {}
    for name in periodic:
      out.update({f"test/{k}": v for k, v in evaluators[name](state, test_f).items()
                  if np.ndim(v) == 0})
    return out

  # Evenly spaced over the split, so pictures show every class of a sorted set.
  pick = np.linspace(0, n_test - 1, min(config.num_images, n_test)).astype(int)
  image_batch = (_without_index(test_f.examples(pick)) if streamed
                 else {k: v[pick] for k, v in test_f.items()})

  repl = NamedSharding(mesh, P())
  init = jax.jit(task.init, out_shardings=repl)
  key = jax.random.key(config.seed)
  note = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints,
                      lock=workdir_lib.WorkdirLock(workdir) if is_main and writable else None,
                      read_only=not writable, note=note)
  writer = None
  try:
    restored = ckpt.restore_latest(_abstract_state(task, key, example, repl), warn=note)
    if restored is None:
      if config.eval_only:
        raise CheckpointError(f"eval_only=True but there is no checkpoint in {workdir}.")
      state, start = init(key, example), 0
    else:
      state, data_state, start, saved_config = restored
      if not config.eval_only:
        ckptlib.check_resume(saved_config, config, workdir)
      try:
        loader.load_state_dict(data_state)
      except ValueError as e:  # a different seed: this workdir belongs to another run
        raise CheckpointError(f"cannot resume {workdir}: {e}") from None
    if is_main and writable:  # only now that the resume is known to be valid
      workdir_lib.write_text_if_changed(os.path.join(workdir, "config.json"), config.to_json(indent=2))
    writer = Writer(workdir, start, config.num_steps, config.quiet, is_main, files=writable)
    if start and is_main:
      writer.message(f"resuming from step {start} in {workdir}")

    perf = {}
    if not config.eval_only and start < config.num_steps:
      perf = _loop(config, task, mesh, state_holder := [state], loader, ckpt, writer,
                   start, evaluate if periodic else None, image_batch)
      state = state_holder[0]
      if is_main:  # kept even if the run dies during the final evaluation
        workdir_lib.save_perf(workdir, perf)
    ckpt.wait()

    summary = {"step": int(max(start, config.num_steps if not config.eval_only else start))}
    results: dict[str, dict[str, dict]] = {}
    for name, ev in task.evals.items():
      for split in ev.splits:
        out = evaluators[name](state, split_data(split))
        results.setdefault(name, {})[split] = out
        if ev.gather:
          continue
        for k, v in out.items():
          summary_key = f"{SPLIT_PREFIX[split]}/{k}"
          if summary_key in summary:
            raise ValueError(f"two evaluations both report {summary_key!r}; rename one of them.")
          if np.ndim(v) == 0:
            summary[summary_key] = v
    if task.images is not None:
      writer.images(summary["step"], _to_grids(task.images(state, image_batch)))
    if task.report is not None:
      ctx = Context(config, workdir, info, is_main, summary["step"], results, writer)
      summary.update(task.report(state, ctx))
    if not perf:  # a rerun of a finished run keeps the original run's speed figures
      perf = workdir_lib.previous_perf(workdir)
    summary.update(perf)
    summary["devices"] = mesh.size
    summary["backend"] = jax.default_backend()
    if is_main and writable:
      workdir_lib.write_json(os.path.join(workdir, "summary.json"), summary)
    elif is_main:
      writer.message(f"note: {workdir} is read-only; summary.json was not written (summary below).")
    if is_main:
      writer.message("summary: " + json.dumps({k: round(v, 5) if isinstance(v, float) else v
                                              for k, v in summary.items()}))
    return summary
  finally:
    if streamed:
      loader.close()  # its worker processes
    if writer is not None:
      writer.close()
    ckpt.wait()
    ckpt.close()


def _loop(config, task, mesh, holder, loader, ckpt, writer, start, evaluate, image_batch):
  step_fn = compile_train_step(task, mesh)
  state = holder[0]
  buffer: list[tuple[int, dict]] = []
  last_saved = start
  window_t, window_n = None, 0
  compile_s, timed_steps, timed_s = None, 0, 0.0

  def flush(step: int) -> None:
    nonlocal buffer, window_t, window_n, timed_steps, timed_s
    host = _check_finite(buffer, ckpt)
    buffer = []
    now = time.perf_counter()
    if not host:
      return
    means = {k: float(np.mean([m[k] for _, m in host])) for k in host[-1][1]}
    if window_t is not None and window_n:
      sps = window_n / (now - window_t)
      means["perf/steps_per_sec"] = sps
      timed_steps += window_n
      timed_s += now - window_t
    window_t, window_n = now, 0
    writer.scalars(step, means)

  def save(step: int) -> None:
    nonlocal last_saved
    flush(step)  # never checkpoint a state whose metrics we have not seen
    ckpt.save(step, holder[0], loader.state_dict(), config)
    last_saved = step

  with _Signals() as signals:
    for step in range(start, config.num_steps):
      batch = next(loader)
      if compile_s is None:
        t0 = time.perf_counter()
        state, metrics = step_fn(state, batch)
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0
        writer.message(f"first step (compile + run): {compile_s:.2f}s")
        window_t, window_n = time.perf_counter(), 0  # the compiling step is not timed
      else:
        state, metrics = step_fn(state, batch)
        window_n += 1
      holder[0] = state
      ckpt.poll()  # a failed background save stops the run here, in one line
      done = step + 1
      buffer.append((done, metrics))
      writer.advance(1)
      if done % config.log_every == 0:
        flush(done)
      if config.eval_every and done % config.eval_every == 0 and evaluate is not None:
        flush(done)
        writer.scalars(done, evaluate(state))
        window_t = time.perf_counter()  # steps/s counts training only
      if config.image_every and done % config.image_every == 0 and task.images is not None:
        flush(done)
        writer.images(done, _to_grids(task.images(state, image_batch)))
        window_t = time.perf_counter()
      if done % config.checkpoint_every == 0 or done == config.num_steps:
        save(done)
      if signals.received is not None:
        if last_saved != done:
          save(done)
        ckpt.wait()
        raise Interrupted(signals.received, done)
  flush(config.num_steps)
  perf = {"perf/first_step_s": compile_s}
  if timed_steps:
    perf["perf/steps_per_sec"] = timed_steps / timed_s
    perf["perf/examples_per_sec"] = timed_steps * config.batch_size / timed_s
  return perf


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------
_reject_unknown_keys = cli.reject_unknown_keys  # moved to train/cli.py
run_cli = cli.run_cli
