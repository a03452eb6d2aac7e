"""Seeded, resumable, sharded batches from in-memory arrays.

The whole state of the stream is two integers, ``(epoch, position)``. The
permutation of an epoch is a pure function of ``(seed, epoch)`` and the random
draws of a batch (dynamic binarization) a pure function of
``(seed, epoch, position)``, so saving those two integers in a checkpoint is
enough for a resumed run to see exactly the batches an uninterrupted run would.

Multi-host: every process holds the same arrays, computes the same global
batch indices, keeps only its own contiguous slice, and
``jax.make_array_from_process_local_data`` assembles the global sharded
array.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

import jax
import numpy as np

Transform = Callable[[dict, np.random.Generator], dict]


class BatchLoader:
  """Infinite iterator of global batches, sharded along the batch axis.

  Args:
    arrays: name -> array with a common leading dimension N.
    batch_size: the *global* batch size (over all processes and devices).
    seed: seeds shuffling and per-batch randomness.
    sharding: where to place batches (e.g. ``NamedSharding(mesh, P("data"))``);
      None returns host NumPy arrays.
    transform: ``(numpy batch, rng) -> numpy batch`` applied on the host.
    shuffle: reshuffle every epoch (the last incomplete batch is dropped).
  """

  def __init__(
      self,
      arrays: Mapping[str, np.ndarray],
      *,
      batch_size: int,
      seed: int,
      sharding: jax.sharding.Sharding | None = None,
      transform: Transform | None = None,
      shuffle: bool = True,
  ):
    sizes = {k: len(v) for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
      raise ValueError(f"arrays must share their leading dimension, got {sizes}.")
    self._n = next(iter(sizes.values()))
    if batch_size < 1 or batch_size > self._n:
      raise ValueError(
          f"batch_size must be in [1, {self._n}] (the number of examples), "
          f"got {batch_size}."
      )
    self._arrays = dict(arrays)
    self.batch_size = batch_size
    self.seed = seed
    self._sharding = sharding
    self._transform = transform
    self._shuffle = shuffle
    self.batches_per_epoch = self._n // batch_size
    nproc = jax.process_count()
    if batch_size % nproc:
      raise ValueError(
          f"batch_size={batch_size} must be divisible by the number of "
          f"processes ({nproc})."
      )
    if sharding is not None:
      ndev = sharding.mesh.size if hasattr(sharding, "mesh") else jax.device_count()
      if batch_size % ndev:
        raise ValueError(
            f"batch_size={batch_size} must be divisible by the number of "
            f"devices ({ndev}) to shard the batch evenly."
        )
    self.epoch = 0
    self.position = 0
    self._perm_epoch = -1
    self._perm = None

  # -- state -----------------------------------------------------------------
  def state_dict(self) -> dict:
    return {"epoch": int(self.epoch), "position": int(self.position), "seed": int(self.seed)}

  def load_state_dict(self, state: Mapping[str, int]) -> None:
    if int(state.get("seed", self.seed)) != self.seed:
      raise ValueError(
          f"the checkpoint's data stream used seed {state['seed']}, this run "
          f"uses seed {self.seed}; resume with the same seed or a new workdir."
      )
    self.epoch = int(state["epoch"])
    self.position = int(state["position"])

  # -- iteration -------------------------------------------------------------
  def _permutation(self, epoch: int) -> np.ndarray:
    if self._perm_epoch != epoch:
      if self._shuffle:
        self._perm = np.random.default_rng([self.seed, epoch]).permutation(self._n)
      else:
        self._perm = np.arange(self._n)
      self._perm_epoch = epoch
    return self._perm

  def next_numpy(self) -> dict:
    """The next *process-local* batch as NumPy arrays (advances the stream)."""
    perm = self._permutation(self.epoch)
    start = self.position * self.batch_size
    idx = perm[start : start + self.batch_size]
    per_proc = self.batch_size // jax.process_count()
    pi = jax.process_index()
    idx = idx[pi * per_proc : (pi + 1) * per_proc]
    batch = {k: v[idx] for k, v in self._arrays.items()}
    if self._transform is not None:
      # Per-process stream: each process draws for its own slice only.
      rng = np.random.default_rng([self.seed, self.epoch, self.position, pi])
      batch = self._transform(batch, rng)
    self.position += 1
    if self.position == self.batches_per_epoch:
      self.epoch, self.position = self.epoch + 1, 0
    return batch

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    batch = self.next_numpy()
    if self._sharding is None:
      return batch
    return put_batch(batch, self._sharding, self.batch_size)


def put_batch(batch: Mapping[str, np.ndarray], sharding, global_batch_size: int) -> dict:
  """Assemble process-local NumPy arrays into global arrays with ``sharding``."""
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    out[k] = jax.make_array_from_process_local_data(
        sharding, v, (global_batch_size,) + v.shape[1:]
    )
  return out


def padded_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int
) -> Iterator[tuple[dict, np.ndarray]]:
  """Sequential batches of fixed size over all N examples, the last padded.

  Yields ``(batch, mask)`` where ``mask`` is 1.0 for real examples and 0.0 for
  padding, so one compiled evaluation step covers any N.
  """
  n = len(next(iter(arrays.values())))
  for start in range(0, n, batch_size):
    stop = min(n, start + batch_size)
    pad = batch_size - (stop - start)
    batch = {}
    for k, v in arrays.items():
      chunk = v[start:stop]
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
      batch[k] = chunk
    mask = np.concatenate([np.ones(stop - start), np.zeros(pad)]).astype(np.float32)
    yield batch, mask
