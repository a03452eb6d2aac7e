"""Helpers for steps that run per device under ``shard_map`` or ``pmap``.

The pitfall these exist for: inside ``jax.shard_map`` (with its default
``check_vma=True``), the gradient of a per-device loss with respect to a
*replicated* parameter is summed over devices automatically, while under
``check_vma=False`` or ``pmap`` it is the local gradient. Calling
``lax.pmean`` on the gradients is right in one mode and gives N× the mean
gradient in the other. :func:`as_local` marks the parameters as varying over
the axis first, so the gradient is always local and one explicit
:func:`mean_over` gives the global mean in every mode. :func:`global_mean`
is the mean of a batch split over devices (sums and counts reduced
separately), used by the losses that reduce.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def as_local(tree: PyTree, axis_name: str | None) -> PyTree:
  """Mark a replicated PyTree as per-device before differentiating it."""
  if axis_name is None:
    return tree
  return jax.tree.map(lambda x: jax.lax.pcast(x, axis_name, to="varying"), tree)


def mean_over(tree: PyTree, axis_name: str | None) -> PyTree:
  """``lax.pmean`` over ``axis_name``, or the identity when it is None."""
  if axis_name is None:
    return tree
  return jax.lax.pmean(tree, axis_name)


def global_mean(x: jax.typing.ArrayLike, axis_name: str | None = None) -> jax.Array:
  """Mean over every element of ``x`` and, on ``axis_name``, over devices.

  ``sum_d sum_i x_{d,i} / sum_d n_d``: sums and counts are reduced
  separately, so it is the mean of the concatenated shards even when devices
  hold different numbers of examples (a ``pmean`` of per-device means would
  weight them equally). Accumulates in at least float32: a bfloat16 sum or
  count is off by whole examples past 256.

  Args:
    x: any shape, floating; may be empty on some devices, but the total count
      must be positive.
    axis_name: the mapped axis inside ``shard_map``/``pmap``, or None for the
      plain mean.

  Returns:
    Scalar in ``promote_types(x.dtype, float32)``.

  Example:
    >>> import jax.numpy as jnp
    >>> print(global_mean(jnp.array([1.0, 2.0, 6.0], jnp.bfloat16)))
    3.0
  """
  x = jnp.asarray(x)
  acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
  total = jnp.sum(x, dtype=acc_dtype)
  count = jnp.asarray(x.size, acc_dtype)
  if axis_name is not None:
    total = jax.lax.psum(total, axis_name)
    count = jax.lax.psum(count, axis_name)
  return total / count
