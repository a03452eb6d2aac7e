"""Finite scalar quantization, FSQ (Mentzer et al., 2023).

A codebook-free alternative to the vector quantiser of Lecture 7, slide
"Deterministic variational posterior": every channel ``i`` of a
``d = len(levels)``-dimensional latent is bounded to ``L_i`` values, rounded
to the nearest integer with a straight-through gradient, and rescaled to
``[−1, 1]``. The implicit codebook is the grid ``Π_i {0, …, L_i − 1}`` with
``Π_i L_i`` codes, all of them reachable, so there is no codebook loss, no
commitment loss, no EMA state and no dead code.

Per channel with ``L`` levels, ``h = (L − 1)(1 − ε)/2``, offset ``o = 1/2``
for even ``L`` (0 for odd ``L``) and shift ``s = atanh(o/h)`` (0 for ``L = 2``)::

  bound(z)  = h · tanh(z + s) − o                 ∈ (−h − o, h − o)
  round(b)  ∈ {−⌊L/2⌋, …, L − 1 − ⌊L/2⌋}            (L integers)
  code      = round(b) / ⌊L/2⌋                      ∈ [−1, 1]

The half-step offset makes an even ``L`` produce ``L`` integers (e.g. 4
levels: −2, −1, 0, 1), and the shift keeps ``bound(0) = 0`` rounding to 0.

Indices are mixed-radix numbers: with digits ``k_i = code_i·⌊L_i/2⌋ + ⌊L_i/2⌋
∈ {0, …, L_i − 1}`` and basis ``b_i = Π_{j<i} L_j``, ``index = Σ_i k_i b_i``.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

# The ε of ``h = (L − 1)(1 − ε)/2``: keeps tanh's open range strictly inside
# the outermost rounding cell, so the extreme levels are reached but never
# exceeded.
_BOUND_EPS = 1e-3


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
  if isinstance(levels, (int, np.integer)) or not hasattr(levels, "__len__"):
    raise TypeError(
        f"levels must be a sequence of ints (one per channel), got {levels!r}."
    )
  levels = tuple(levels)
  if not levels:
    raise ValueError("levels must hold at least one channel, got ().")
  for i, level in enumerate(levels):
    _checks.check_int_at_least(f"levels[{i}]", level, 2)
  if math.prod(levels) > 2**31 - 1:
    raise ValueError(
        f"levels must give at most 2**31 - 1 codes (int32 indices), got "
        f"prod({levels}) = {math.prod(levels)}."
    )
  return tuple(int(v) for v in levels)


def _check_latent(name: str, z: ArrayLike, levels: tuple[int, ...]) -> None:
  _checks.check_floating(name, z)
  _checks.check_min_rank(name, z, 1)
  _checks.check_last_dim(name, z, len(levels), "one channel per entry of levels")


def _half_width(levels: tuple[int, ...]) -> np.ndarray:
  return np.asarray([v // 2 for v in levels], np.float32)


def _basis(levels: tuple[int, ...]) -> np.ndarray:
  return np.cumprod((1,) + levels[:-1]).astype(np.int32)


def num_codes(levels: Sequence[int]) -> int:
  """Size of the implicit FSQ codebook, ``Π_i L_i``.

  Args:
    levels: Number of levels ``L_i >= 2`` per channel.

  Returns:
    The number of distinct codes as a Python int.

  References:
    Mentzer et al., `Finite Scalar Quantization: VQ-VAE Made Simple
    <https://arxiv.org/abs/2309.15505>`_, 2023.

  Example:
    >>> from dgmjax.losses import fsq
    >>> print(fsq.num_codes((8, 5, 5, 5)))
    1000
  """
  return math.prod(_check_levels(levels))


def bound(z: ArrayLike, *, levels: Sequence[int]) -> Array:
  """Squashes every channel into the range whose rounding gives ``L_i`` values.

  ``bound(z)_i = h_i tanh(z_i + s_i) − o_i`` with ``h_i = (L_i − 1)(1 − ε)/2``,
  ``o_i = 1/2`` for even ``L_i`` (else 0), ``s_i = atanh(o_i/h_i)`` (0 for
  ``L_i = 2``, where it does not exist) and ``ε = 1e-3``.

  Args:
    z: Latent, shape ``(..., len(levels))``, floating.
    levels: Number of levels ``L_i >= 2`` per channel.

  Returns:
    Float32 array of the shape of ``z`` (not rounded).

  References:
    Mentzer et al., `Finite Scalar Quantization: VQ-VAE Made Simple
    <https://arxiv.org/abs/2309.15505>`_, 2023, section 3.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from dgmjax.losses import fsq
    >>> b = fsq.bound(jnp.array([[0.0, 0.0], [50.0, -50.0]]), levels=(5, 4))
    >>> print(np.round(np.asarray(b, np.float64), 3) + 0.0)
    [[ 0.     0.   ]
     [ 1.998 -1.998]]
  """
  levels = _check_levels(levels)
  _check_latent("z", z, levels)
  lv = np.asarray(levels, np.float64)
  half = (lv - 1.0) * (1.0 - _BOUND_EPS) / 2.0
  offset = np.where(lv % 2 == 0, 0.5, 0.0)
  # L = 2 has h < o, where atanh(o/h) does not exist; s = 0 puts its decision
  # boundary (between −1 and 0) at z = 0.
  shift = np.arctanh(np.where(offset < half, offset / half, 0.0))
  z = jnp.asarray(z, jnp.promote_types(jnp.result_type(z), jnp.float32))
  return (
      jnp.tanh(z + shift.astype(np.float32)) * half.astype(np.float32)
      - offset.astype(np.float32)
  )


def round_ste(x: ArrayLike) -> Array:
  """Rounds to the nearest integer with a straight-through (identity) gradient.

  Forward ``round(x)``, backward ``∂/∂x = I``. Evaluated as
  ``sg[round(x)] + (x − sg[x])``, so the value is exactly the rounded one.

  Args:
    x: Floating array.

  Returns:
    ``round(x)`` (ties to even) in the dtype of ``x``.

  References:
    Mentzer et al., `Finite Scalar Quantization: VQ-VAE Made Simple
    <https://arxiv.org/abs/2309.15505>`_, 2023;
    Bengio et al., `Estimating or Propagating Gradients Through Stochastic
    Neurons <https://arxiv.org/abs/1308.3432>`_, 2013.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import fsq
    >>> print(fsq.round_ste(jnp.array([0.4, 1.6, -0.7])))
    [ 0.  2. -1.]
    >>> print(jax.grad(lambda x: jnp.sum(3.0 * fsq.round_ste(x)))(jnp.array([0.4, 1.6])))
    [3. 3.]
  """
  _checks.check_floating("x", x)
  x = jnp.asarray(x)
  sg = jax.lax.stop_gradient
  return sg(jnp.round(x)) + (x - sg(x))


def quantize(z: ArrayLike, *, levels: Sequence[int]) -> Array:
  """FSQ: bound, round (straight-through) and rescale every channel to [−1, 1].

  ``code_i = round_ste(bound(z)_i) / ⌊L_i/2⌋``. The value lies on the grid
  of :func:`indices_to_codes`; the gradient is that of ``bound`` divided by
  ``⌊L_i/2⌋`` (the rounding contributes the identity).

  Args:
    z: Latent, shape ``(..., len(levels))``, floating.
    levels: Number of levels ``L_i >= 2`` per channel.

  Returns:
    Float32 codes of the shape of ``z``.

  References:
    Mentzer et al., `Finite Scalar Quantization: VQ-VAE Made Simple
    <https://arxiv.org/abs/2309.15505>`_, 2023.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import fsq
    >>> print(fsq.quantize(jnp.array([[0.1, 0.1], [9.0, -9.0]]), levels=(5, 4)))
    [[ 0.  0.]
     [ 1. -1.]]
  """
  levels = _check_levels(levels)
  return round_ste(bound(z, levels=levels)) / _half_width(levels)


def codes_to_indices(codes: ArrayLike, *, levels: Sequence[int]) -> Array:
  """Grid codes → int32 indices, ``Σ_i (code_i ⌊L_i/2⌋ + ⌊L_i/2⌋) Π_{j<i} L_j``.

  Args:
    codes: Codes on the FSQ grid (e.g. from :func:`quantize`), shape
      ``(..., len(levels))``, floating.
    levels: Number of levels ``L_i >= 2`` per channel.

  Returns:
    Int32 indices in ``[0, Π L_i)`` of shape ``codes.shape[:-1]``.

  References:
    Mentzer et al., `Finite Scalar Quantization: VQ-VAE Made Simple
    <https://arxiv.org/abs/2309.15505>`_, 2023.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import fsq
    >>> print(fsq.codes_to_indices(jnp.array([[-1.0, -1.0], [0.0, 0.5]]),
    ...                            levels=(3, 4)))
    [ 0 10]
  """
  levels = _check_levels(levels)
  _check_latent("codes", codes, levels)
  half = _half_width(levels)
  # Rounding absorbs the float error of code·⌊L/2⌋ (the codes are exact
  # multiples of 1/⌊L/2⌋ only up to rounding).
  digits = jnp.round(jnp.asarray(codes, jnp.float32) * half + half).astype(jnp.int32)
  return jnp.sum(digits * _basis(levels), axis=-1, dtype=jnp.int32)


def indices_to_codes(indices: ArrayLike, *, levels: Sequence[int]) -> Array:
  """Int32 indices → grid codes, the inverse of :func:`codes_to_indices`.

  ``k_i = ⌊index / Π_{j<i} L_j⌋ mod L_i`` and ``code_i = (k_i − ⌊L_i/2⌋) /
  ⌊L_i/2⌋``. Evaluated on ``arange(num_codes(levels))`` it lists the whole
  implicit codebook.

  Args:
    indices: Integer indices in ``[0, Π L_i)``, any shape.
    levels: Number of levels ``L_i >= 2`` per channel.

  Returns:
    Float32 codes of shape ``indices.shape + (len(levels),)``.

  References:
    Mentzer et al., `Finite Scalar Quantization: VQ-VAE Made Simple
    <https://arxiv.org/abs/2309.15505>`_, 2023.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import fsq
    >>> print(fsq.indices_to_codes(jnp.array([0, 10]), levels=(3, 4)))
    [[-1.  -1. ]
     [ 0.   0.5]]
  """
  levels = _check_levels(levels)
  _checks.check_integer("indices", indices)
  idx = jnp.asarray(indices, jnp.int32)[..., None]
  digits = (idx // _basis(levels)) % np.asarray(levels, np.int32)
  half = _half_width(levels)
  return (digits.astype(jnp.float32) - half) / half
