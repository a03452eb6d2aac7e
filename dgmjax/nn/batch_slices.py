"""Run a per-example network on slices of its batch, so XLA's CPU backend uses every core.

XLA's CPU backend runs most small convolutions of our models on one thread
(``docs/performance.md``), so one device with a whole batch keeps one core of
two busy. Splitting the batch into N slices inside the same jitted function
gives XLA N independent chains of layers, which its CPU runtime executes
concurrently; unlike several CPU devices (``dgmjax.cpu_devices``) it needs no
collectives. The layers are the same modules called N times, so parameters,
their names and checkpoints do not change. For a network without statistics
across its batch (our conv encoders and decoders, the DCGAN nets) the output
equals the unsplit one, and the parameter gradient is the same sum taken in
another order.

``"auto"`` splits only where this was measured to help: the CPU backend, one
device (with several, each device already has its own core), a batch that a
count of at most the usable cores divides into slices of at least
:data:`MIN_SLICE` examples. On GPU and TPU it is always one slice.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from dgmjax.cpu_devices import usable_cores

__all__ = ["MIN_SLICE", "apply_in_slices", "resolve_slices"]

# Slices smaller than this gain nothing measurable on the 2-core machine and
# make each convolution too small to be efficient.
MIN_SLICE = 16


def resolve_slices(batch_slices: int | str, batch: int) -> int:
  """How many slices a batch of ``batch`` examples is cut into.

  Args:
    batch_slices: ``"auto"`` (see the module docstring) or an int ≥ 1 that
      divides ``batch``.
    batch: the leading dimension of the input.

  Example:
    >>> resolve_slices(1, 128), resolve_slices(4, 128)
    (1, 4)
  """
  if batch_slices == "auto":
    if jax.default_backend() != "cpu" or jax.device_count() != 1:
      return 1
    best = 1
    for n in range(2, usable_cores() + 1):
      if batch % n == 0 and batch // n >= MIN_SLICE:
        best = n
    return best
  if isinstance(batch_slices, bool) or not isinstance(batch_slices, int) or batch_slices < 1:
    raise ValueError(f"batch_slices must be 'auto' or an int >= 1, got {batch_slices!r}.")
  if batch % batch_slices:
    raise ValueError(
        f"batch_slices={batch_slices} must divide the batch size, got a batch of {batch}.")
  return batch_slices


def apply_in_slices(fn: Callable[[jax.Array], Any], x: jax.Array,
                    batch_slices: int | str = "auto") -> Any:
  """``fn(x)`` computed as ``concatenate([fn(s) for s in split(x)])``.

  ``fn`` must treat the examples of its batch independently (no batch
  statistics); its output may be any pytree of arrays with the batch first.

  Example:
    >>> x = jnp.arange(8.0).reshape(4, 2)
    >>> out = apply_in_slices(lambda v: (v * 2, v.sum(-1)), x, batch_slices=2)
    >>> print(out[1])
    [ 1.  5.  9. 13.]
  """
  n = resolve_slices(batch_slices, x.shape[0])
  if n == 1:
    return fn(x)
  outs = [fn(part) for part in jnp.split(x, n, axis=0)]
  return jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=0), *outs)
