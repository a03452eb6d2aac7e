"""Checkpoints that are written, checked and restored without losing anything.

* Saves are asynchronous (Orbax); :meth:`Checkpointer.poll` notices, between
  steps, when the background write has finished and raises one
  :class:`~dgmjax.errors.CheckpointError` line when it failed (full disk,
  unwritable folder), naming the last good checkpoint, which Orbax keeps
  until a newer one is complete.
* Before every save the state itself must be finite (one jitted reduction):
  a NaN in the parameters is never written over a good checkpoint.
* After each save completes, process 0 writes a manifest
  (``dgmjax_manifest.json``: size and SHA-256 of every file) into the step's
  folder. A restore verifies it first; a damaged or unreadable latest
  checkpoint is moved to ``<workdir>/checkpoints.damaged/`` (never deleted)
  and the newest good one is used, with one warning line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.errors import CheckpointError, NonFiniteError
from train import workdir as wd

PyTree = Any
MANIFEST = "dgmjax_manifest.json"
DAMAGED_DIR = "checkpoints.damaged"
#: Config keys that fix the data stream: a resume must use the same values.
RESUME_KEYS = ("dataset", "data_limit", "pixel_format", "batch_size", "seed", "image_size",
               "train_split", "random_crop", "random_flip")


def _hash_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _files(folder: str) -> list[str]:
  out = []
  for root, _, names in os.walk(folder):
    for n in names:
      rel = os.path.relpath(os.path.join(root, n), folder)
      if rel != MANIFEST:
        out.append(rel)
  return sorted(out)


def write_manifest(step_dir: str) -> None:
  """Record size and SHA-256 of every file of a complete checkpoint."""
  files = {rel: [os.path.getsize(os.path.join(step_dir, rel)), _hash_file(os.path.join(step_dir, rel))]
           for rel in _files(step_dir)}
  wd.write_json(os.path.join(step_dir, MANIFEST), {"version": 1, "files": files})


def verify_manifest(step_dir: str) -> str | None:
  """None if the checkpoint matches its manifest (or has none), else what is wrong."""
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      files = json.load(f)["files"]
  except (OSError, ValueError, KeyError, TypeError):
    return "its checksum manifest is unreadable"
  for rel, (size, digest) in files.items():
    p = os.path.join(step_dir, rel)
    if not os.path.exists(p):
      return f"file {rel} is missing"
    try:
      if os.path.getsize(p) != size:
        return f"file {rel} has {os.path.getsize(p)} bytes instead of {size}"
      if _hash_file(p) != digest:
        return f"file {rel} does not match its checksum (damaged)"
    except OSError as e:
      return f"file {rel} cannot be read ({e.strerror})"
  return None


def has_manifest(step_dir: str) -> bool:
  return os.path.exists(os.path.join(step_dir, MANIFEST))


def complete_steps(directory: str) -> list[int]:
  """Steps with a complete (renamed into place) checkpoint folder, newest first."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted((int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(directory, n))),
                reverse=True)


def describe_last_good(directory: str, step: int | None) -> str:
  if step is None:
    return "no checkpoint has been written yet"
  return f"the last good checkpoint is step {step} ({os.path.join(directory, str(step))})"


# ----------------------------------------------------------------------------
# Finiteness
# ----------------------------------------------------------------------------
def _is_float(x) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)


@jax.jit
def _all_finite(tree) -> jax.Array:
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if _is_float(x)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def first_non_finite(tree) -> str | None:
  """The path of the first leaf holding a NaN or Inf, or None (one device reduction)."""
  if bool(_all_finite(tree)):
    return None
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if _is_float(x) and not bool(jnp.all(jnp.isfinite(x))):
      return jax.tree_util.keystr(path) or "<root>"
  return "<unknown>"


def check_finite_metrics(buffer: list[tuple[int, dict]], ckpt: "Checkpointer | None" = None):
  """Host copies of buffered metrics; NonFiniteError naming the step if one is not finite."""
  host = jax.device_get(buffer)
  for step, metrics in host:
    for name, value in metrics.items():
      if not np.all(np.isfinite(value)):
        last = ckpt.last_good_text() if ckpt is not None else "the last checkpoint is untouched"
        raise NonFiniteError(
            f"{name} became {float(np.asarray(value).ravel()[0])} at step {step}; "
            f"training stopped and nothing after it was saved: {last}. Lower "
            "config.learning_rate, or fix the model, then rerun.")
  return host


# ----------------------------------------------------------------------------
# Restore helpers
# ----------------------------------------------------------------------------
def abstract_state(init: Callable, key, example, sharding) -> PyTree:
  """Shapes and dtypes of the state, laid out for *this* run's devices.

  Giving the sharding explicitly lets a run resume on another device count
  than the one that saved it (8 TPU cores -> a laptop, 2 processes -> 1).
  """
  shapes = jax.eval_shape(init, key, example)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def _shape_multiset(tree) -> list:
  out = []
  for x in jax.tree.leaves(tree):
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None or jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
      continue
    if not jnp.issubdtype(dtype, jnp.inexact):
      continue
    out.append(tuple(int(d) for d in shape))
  return sorted(out)


def check_resume(saved: Mapping | None, config, workdir: str) -> None:
  """Refuse, in one line, a resume whose data stream would differ from the saved one."""
  if not saved:
    return
  for key in RESUME_KEYS:
    if key in saved and key in config and saved[key] != config[key]:
      raise CheckpointError(
          f"cannot resume {workdir} with {key} {config[key]!r}: it was trained with "
          f"{key} {saved[key]!r}, and the data order depends on it. Use "
          f"--config.{key}={saved[key]!r}, or a new --workdir.")


class _Damaged(Exception):
  pass


# ----------------------------------------------------------------------------
# The checkpointer
# ----------------------------------------------------------------------------
class Checkpointer:
  """Orbax CheckpointManager (state + data-stream position + config) with checks.

  Args:
    directory: the checkpoints folder.
    keep: how many complete checkpoints to keep.
    lock: a :class:`train.workdir.WorkdirLock` to hold while this is open
      (released by :meth:`close`).
    read_only: open for restoring only (evaluation of a read-only workdir).
  """

  def __init__(self, directory: str, keep: int, *, lock: wd.WorkdirLock | None = None,
               read_only: bool = False, note: Callable[[str], None] | None = None):
    import orbax.checkpoint as ocp
    from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

    self._ocp = ocp
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    self._lock = lock
    self._pending: int | None = None
    self._failed = False
    if lock is not None:
      lock.acquire(note=note)
    try:
      if read_only:
        options = ocp.CheckpointManagerOptions(read_only=True)
      else:
        options = ocp.CheckpointManagerOptions(
            preservation_policy=pp.LatestN(keep), enable_async_checkpointing=True)
      self.manager = ocp.CheckpointManager(self.directory, options=options)
    except BaseException as e:
      if lock is not None:
        lock.release()
      if isinstance(e, Exception):
        raise CheckpointError(f"cannot open the checkpoints folder {self.directory}: "
                              f"{wd.reason(e) or type(e).__name__}.") from None
      raise
    steps = complete_steps(self.directory)
    self.last_good: int | None = steps[0] if steps else None

  # -- queries ---------------------------------------------------------------
  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def last_good_text(self) -> str:
    """Wait for a pending save, then name the newest checkpoint that really exists."""
    try:
      self.wait()
    except CheckpointError:
      pass
    return describe_last_good(self.directory, self.last_good)

  # -- saving ----------------------------------------------------------------
  def save(self, step: int, state: PyTree, data_state: dict, config) -> None:
    """Start an asynchronous save of a finite state; errors are one line."""
    bad = first_non_finite(state)
    if bad is not None:
      raise NonFiniteError(
          f"the state to be saved at step {step} is not finite ({bad} holds NaN/Inf); "
          f"it was not saved: {self.last_good_text()}. Lower config.learning_rate, or "
          "fix the model, then rerun.")
    self.finish()  # a failed previous save stops us before we start another
    problem = wd.probe_writable(self.directory) if os.path.isdir(self.directory) else None
    if problem is not None:
      self._fail(step, problem)
    ocp = self._ocp
    try:
      self.manager.save(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              data=ocp.args.JsonSave(data_state),
              config=ocp.args.JsonSave(json.loads(config.to_json())),
          ),
          force=True,
      )
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many types
      self._fail(step, e)
    self._pending = step

  def poll(self) -> None:
    """Between steps: finish a save whose background write is over (cheap)."""
    if self._pending is not None and not self.manager.is_saving_in_progress():
      self.finish()

  def finish(self) -> None:
    """Wait for the pending save; write its manifest or raise its failure."""
    step = self._pending
    if step is None:
      return
    self._pending = None
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      self._fail(step, e)
    step_dir = os.path.join(self.directory, str(step))
    if jax.process_index() == 0 and os.path.isdir(step_dir):
      try:
        write_manifest(step_dir)
      except OSError as e:
        self._fail(step, e)
    self.last_good = step

  def _fail(self, step: int, e: BaseException) -> None:
    self._failed = True
    self._pending = None
    why = wd.reason(e) or _first_words(e)
    free = wd.free_space(self.directory)
    if jax.process_index() == 0:  # the half-written step is garbage: give its space back
      for name in os.listdir(self.directory) if os.path.isdir(self.directory) else []:
        if name.startswith(f"{step}.orbax-checkpoint-tmp"):
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    steps = complete_steps(self.directory)
    last = max((s for s in steps if s != step), default=None)
    self.last_good = last
    raise CheckpointError(
        f"saving checkpoint step {step} to {self.directory} failed: {why} "
        f"({free} free there). Training stopped; "
        f"{describe_last_good(self.directory, last)}. Free space or fix the folder, "
        "then rerun the same command to resume.") from None

  def wait(self) -> None:
    self.finish()

  def close(self) -> None:
    try:
      if self._failed:
        try:
          self.manager.close()
        except Exception:  # noqa: BLE001 - already reported as one line
          pass
      else:
        self.finish()
        self.manager.close()
    finally:
      if self._lock is not None:
        self._lock.release()

  # -- restoring -------------------------------------------------------------
  def _restore_step(self, step: int, abstract: PyTree) -> tuple[PyTree, dict, dict]:
    ocp = self._ocp
    step_dir = os.path.join(self.directory, str(step))
    problem = verify_manifest(step_dir)
    if problem is not None:
      raise _Damaged(problem)
    try:
      with _quiet_absl():
        meta = ocp.PyTreeCheckpointer().metadata(os.path.join(step_dir, "state"))
      meta = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
      saved_shapes = _shape_multiset(meta)
    except Exception:  # noqa: BLE001
      raise _Damaged("its state metadata is missing or unreadable") from None
    want = _shape_multiset(abstract)
    if saved_shapes != want:
      extra = sorted(set(saved_shapes) - set(want))
      missing = sorted(set(want) - set(saved_shapes))
      detail = (f"it holds arrays of shape {extra[0]} where this config has {missing[0]}"
                if extra and missing else f"it holds {len(saved_shapes)} arrays, this config "
                f"{len(want)}")
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} was written by a different model or "
          f"config ({detail}). Use the original model config, or a new --workdir.")
    try:
      out = self.manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract),
              data=ocp.args.JsonRestore(),
              config=ocp.args.JsonRestore(),
          ),
      )
    except Exception:  # noqa: BLE001 - damage of any kind
      if has_manifest(step_dir):
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory} is intact but does not fit this "
            "model or config. Use the original config, or a new --workdir.") from None
      raise _Damaged("its files are incomplete or damaged") from None
    return out.state, dict(out.data), dict(out.config or {})

  def restore(self, step: int, abstract: PyTree) -> tuple[PyTree, dict]:
    """Restore one step (no fallback); errors are one line."""
    try:
      state, data, _ = self._restore_step(step, abstract)
    except _Damaged as e:
      raise CheckpointError(f"checkpoint step {step} in {self.directory} cannot be used: "
                            f"{e}.") from None
    return state, data

  def restore_latest(self, abstract: PyTree, warn: Callable[[str], None] = print):
    """``(state, data_state, step, saved_config)`` of the newest good checkpoint, or None.

    Damaged checkpoints newer than it are moved aside (single-process runs
    with a writable folder) and reported with one warning line each.
    """
    steps = complete_steps(self.directory)
    if not steps:
      return None
    bad: list[tuple[int, str]] = []
    for step in steps:
      try:
        state, data, saved = self._restore_step(step, abstract)
      except _Damaged as e:
        bad.append((step, str(e)))
        continue
      for b, why in bad:
        warn(f"warning: checkpoint step {b} in {self.directory} is unusable ({why}); "
             f"{self._set_aside(b)}; resuming from step {step}.")
      self.last_good = step
      return state, data, step, saved
    listing = "; ".join(f"step {s}: {why}" for s, why in bad)
    raise CheckpointError(
        f"no usable checkpoint in {self.directory} ({listing}). Nothing was changed: move "
        "that folder away to start over, or use a new --workdir.")

  def _set_aside(self, step: int) -> str:
    src = os.path.join(self.directory, str(step))
    if self.read_only or jax.process_count() > 1:
      return f"left it in place at {src}"
    dest_dir = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
    dest = os.path.join(dest_dir, str(step))
    if os.path.exists(dest):
      dest = f"{dest}-{int(time.time())}"
    try:
      os.makedirs(dest_dir, exist_ok=True)
      os.rename(src, dest)
    except OSError as e:
      return f"could not move it aside ({e.strerror}), left it at {src}"
    self.manager.reload()
    return f"moved it to {dest}"


class _quiet_absl:
  """Orbax warns (absl WARNING) about optional metadata files while we probe; hush it."""

  def __enter__(self):
    from absl import logging

    self._old = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)

  def __exit__(self, *exc):
    from absl import logging

    logging.set_verbosity(self._old)


def _first_words(e: BaseException) -> str:
  """A short reason from an exception text, without TensorStore/pybind internals."""
  text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  for marker in (" [source locations", "<bound method", " [tensorstore"):
    text = text.split(marker)[0]
  return text[:200].rstrip(" :;,")


def restore_state(workdir: str, task, config, example: Mapping[str, np.ndarray]):
  """Load the newest good state of a finished or running ``workdir`` (for users)."""
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from train import harness

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints,
                      read_only=True)
  try:
    repl = NamedSharding(harness.make_mesh(config.get("num_devices", 0)), P())
    out = ckpt.restore_latest(abstract_state(task.init, jax.random.key(config.seed), example, repl))
    if out is None:
      raise CheckpointError(f"no checkpoint in {workdir}/checkpoints.")
    return out[0], out[2]
  finally:
    ckpt.close()
