"""Random draws of rank ≥ 3 that XLA's CPU backend compiles quickly, with jax.random's values.

With JAX's default (partitionable) Threefry, a draw of shape ``(a, b, c, d)``
computes its counters from a rank-4 iota, and XLA's CPU backend takes 1–2 s
to compile one such draw (jax 0.10.2 and 0.12, measured on this project's
2-core machine: ``jax.random.uniform(key, (32, 7, 7, 64))`` 1.8 s against
0.27 s for the same number of values drawn flat; a flax conv kernel's
default initialiser the same). A tiny VQ-VAE's ``init`` spent 12 of its 13
compile seconds there. The counters of every element are its flat index, so
drawing the flat vector and reshaping it gives *the same numbers* as
``jax.random`` at that shape; these functions do that. Their runtime cost is
the same.

The equality holds for the Threefry implementations (the default, both
partitionable or not); under another ``jax_default_prng_impl`` the draws
are still exact samples of the same distribution, but not the same numbers.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

__all__ = ["bernoulli", "default_kernel_init", "lecun_normal", "normal", "uniform"]

Shape = Sequence[int]


def _flat(shape: Shape) -> tuple[int, ...]:
  return (math.prod(shape),)


def uniform(key: jax.Array, shape: Shape, dtype: Any = jnp.float32, minval: Any = 0.0,
            maxval: Any = 1.0) -> jax.Array:
  """``jax.random.uniform(key, shape, dtype, minval, maxval)``, drawn flat (scalar bounds).

  Example:
    >>> import jax
    >>> k = jax.random.key(0)
    >>> bool(jax.numpy.array_equal(uniform(k, (2, 3, 4, 5)), jax.random.uniform(k, (2, 3, 4, 5))))
    True
  """
  shape = tuple(shape)
  return jax.random.uniform(key, _flat(shape), dtype, minval, maxval).reshape(shape)


def normal(key: jax.Array, shape: Shape, dtype: Any = jnp.float32) -> jax.Array:
  """``jax.random.normal(key, shape, dtype)``, drawn flat.

  Example:
    >>> import jax
    >>> k = jax.random.key(1)
    >>> bool(jax.numpy.array_equal(normal(k, (3, 2, 2)), jax.random.normal(k, (3, 2, 2))))
    True
  """
  shape = tuple(shape)
  return jax.random.normal(key, _flat(shape), dtype).reshape(shape)


def bernoulli(key: jax.Array, p: float, shape: Shape) -> jax.Array:
  """``jax.random.bernoulli(key, p, shape)`` for a scalar ``p``, drawn flat.

  Example:
    >>> import jax
    >>> k = jax.random.key(2)
    >>> bool(jax.numpy.array_equal(bernoulli(k, 0.3, (4, 5, 6)),
    ...                            jax.random.bernoulli(k, 0.3, (4, 5, 6))))
    True
  """
  shape = tuple(shape)
  return jax.random.bernoulli(key, p, _flat(shape)).reshape(shape)


def lecun_normal() -> jax.nn.initializers.Initializer:
  """Flax's default kernel initialiser (LeCun truncated normal, fan-in), drawn 2-D.

  A kernel ``(*window, in, out)`` has fan-in ``in · prod(window)``; so does
  the 2-D shape ``(prod(window) · in, out)``, and the draw at that shape,
  reshaped, is the same array as ``lecun_normal()(key, kernel_shape)``.

  Example:
    >>> import jax
    >>> k, shape = jax.random.key(3), (4, 4, 8, 16)
    >>> bool(jax.numpy.array_equal(lecun_normal()(k, shape),
    ...                            jax.nn.initializers.lecun_normal()(k, shape)))
    True
  """
  base = jax.nn.initializers.lecun_normal()

  def init(key: jax.Array, shape: Shape, dtype: Any = jnp.float32) -> jax.Array:
    shape = tuple(shape)
    if len(shape) < 3:
      return base(key, shape, dtype)
    return base(key, (math.prod(shape[:-1]), shape[-1]), dtype).reshape(shape)

  return init


# The one instance our conv layers pass as ``kernel_init`` (flax's default, drawn 2-D).
default_kernel_init = lecun_normal()
