"""Improved precision and recall of generated samples (Kynkäänniemi et al. 2019).

Lecture 7, "Likelihood based models": likelihood does not measure sample
quality, so samples are scored in a feature space by how much of the real
manifold they fill (recall) and how much of them lies on it (precision).

Each set of features approximates its manifold by the union of balls around
its points, the radius of a point being the distance to its k-th nearest
neighbour in the same set (itself excluded), k = 3 by default:

* ``r_i = ‖φ_i − NN_k(φ_i)‖``;
* ``f(φ, Φ) = 1`` if ``‖φ − φ'‖ ≤ r(φ')`` for some ``φ' ∈ Φ``, else 0;
* ``precision = (1/M) Σ_j f(φ_fake_j, Φ_real)``: fakes on the real manifold;
* ``recall = (1/N) Σ_i f(φ_real_i, Φ_fake)``: reals on the fake manifold.

Every pairwise-distance computation runs over row chunks inside
``lax.map`` (one ``(chunk_size, N)`` block alive at a time), so 10 000 ×
10 000 comparisons of 64-D features need a few tens of MB, not the 400 MB of
the full matrix. Distances use ``‖a‖² − 2a·b + ‖b‖²`` at
``Precision.HIGHEST`` (TPUs multiply float32 in bfloat16 by default, which
would move points across ball boundaries), after centring both sets on the
real mean (shrinks the norms, hence the cancellation error).

The functions are pure JAX and return JAX scalars; call ``float`` on them.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from dgmjax import _checks

__all__ = [
    "PrecisionRecall",
    "ball_counts",
    "knn_distances",
    "knn_radii",
    "nearest_distances",
    "precision_recall",
]

DEFAULT_K = 3
DEFAULT_CHUNK = 1000


class PrecisionRecall(NamedTuple):
  """Result of :func:`precision_recall` (JAX scalars in [0, 1])."""

  precision: jax.Array  # fraction of fakes inside the real manifold
  recall: jax.Array  # fraction of reals inside the fake manifold


def check_features(name: str, x: jax.Array) -> None:
  """``x`` must be a floating (N >= 1, F) array."""
  _checks.check_floating(name, x)
  _checks.check_rank(name, x, 2)
  if x.shape[0] < 1:
    raise ValueError(f"{name} must have at least one row, got shape {x.shape}.")


def check_pair(real_name: str, real: jax.Array, fake_name: str, fake: jax.Array) -> None:
  check_features(real_name, real)
  check_features(fake_name, fake)
  _checks.check_last_dim(fake_name, fake, real.shape[-1], f"the feature size of {real_name}")


def check_k(k: int, n: int, set_name: str) -> None:
  _checks.check_int_at_least("k", k, 1)
  if k > n - 1:
    raise ValueError(
        f"k must be <= the number of {set_name} features minus one ({n - 1}): a "
        f"k-th neighbour other than the point itself must exist; got k={k}."
    )


def sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  """``(A, F), (B, F) -> (A, B)`` squared Euclidean distances, clamped at 0."""
  hi = jax.lax.Precision.HIGHEST
  cross = jnp.matmul(a, b.T, precision=hi)
  d2 = jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * cross
  # The expansion can round a true 0 to a tiny negative number.
  return jnp.maximum(d2, 0.0)


def map_row_chunks(
    fn: Callable[[jax.Array, jax.Array], jax.Array], rows: jax.Array, chunk_size: int
) -> jax.Array:
  """``fn(chunk (C, F), global row ids (C,)) -> (C, ...)`` over all rows.

  Rows are zero-padded to a multiple of ``C`` so every chunk has one static
  shape; the padded rows' outputs are dropped.
  """
  n = rows.shape[0]
  c = min(int(chunk_size), n)
  num = -(-n // c)
  padded = jnp.pad(rows, ((0, num * c - n), (0, 0)))
  ids = jnp.arange(num * c, dtype=jnp.int32).reshape(num, c)
  out = jax.lax.map(lambda a: fn(*a), (padded.reshape(num, c, -1), ids))
  return out.reshape((num * c,) + out.shape[2:])[:n]


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def _knn_sq(x: jax.Array, k: int, chunk_size: int) -> jax.Array:
  x = x - jnp.mean(x, axis=0)
  cols = jnp.arange(x.shape[0], dtype=jnp.int32)

  def chunk(rows, ids):
    d2 = sq_dists(rows, x)
    # Exclude the point itself by index, not by distance 0, so an exact
    # duplicate still counts as a neighbour.
    d2 = jnp.where(ids[:, None] == cols[None, :], jnp.inf, d2)
    neg, _ = jax.lax.top_k(-d2, k)
    return -neg

  return map_row_chunks(chunk, x, chunk_size)


def knn_distances(
    features: jax.Array, *, k: int = DEFAULT_K, chunk_size: int = DEFAULT_CHUNK
) -> jax.Array:
  """Distances to the 1st, …, k-th nearest neighbour within the same set.

  ``D_{i,m} = ‖φ_i − NN_m(φ_i)‖`` for ``m = 1..k``, the point itself
  excluded (by index: exact duplicates are neighbours at distance 0).

  Args:
    features: (N, F) floating.
    k: number of neighbours, ``1 <= k <= N − 1``.
    chunk_size: rows per distance block (memory ``chunk_size × N``).

  Returns:
    (N, k) ascending distances.

  Example:
    >>> x = jnp.array([[0.0], [1.0], [3.0], [7.0]])
    >>> print(knn_distances(x, k=2))
    [[1. 3.]
     [1. 2.]
     [2. 3.]
     [4. 6.]]
  """
  check_features("features", features)
  check_k(k, features.shape[0], "features")
  _checks.check_int_at_least("chunk_size", chunk_size, 1)
  return jnp.sqrt(_knn_sq(features, k, chunk_size))


def knn_radii(
    features: jax.Array, *, k: int = DEFAULT_K, chunk_size: int = DEFAULT_CHUNK
) -> jax.Array:
  """Radius of every point's ball: the distance to its k-th nearest neighbour.

  ``r_i = ‖φ_i − NN_k(φ_i)‖``, the point itself excluded (Kynkäänniemi et al.
  2019, eq. 1).

  Args:
    features: (N, F) floating.
    k: the neighbour rank, ``1 <= k <= N − 1`` (3 in the paper).
    chunk_size: rows per distance block.

  Returns:
    (N,) radii.

  References:
    Kynkäänniemi et al., `Improved Precision and Recall Metric for Assessing
    Generative Models <https://arxiv.org/abs/1904.06991>`_, NeurIPS 2019.

  Example:
    >>> x = jnp.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    >>> print(jnp.round(knn_radii(x, k=1), 5))
    [1.      4.24264 1.     ]
  """
  return knn_distances(features, k=k, chunk_size=chunk_size)[:, k - 1]


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _ball_counts_sq(queries, centres, radii_sq, chunk_size):
  def chunk(rows, _):
    return jnp.sum(sq_dists(rows, centres) <= radii_sq[None, :], axis=1, dtype=jnp.int32)

  return map_row_chunks(chunk, queries, chunk_size)


def ball_counts(
    queries: jax.Array,
    centres: jax.Array,
    radii: jax.Array,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> jax.Array:
  """For every query, the number of closed balls ``B(c_i, r_i)`` containing it.

  ``n_j = Σ_i [‖q_j − c_i‖ ≤ r_i]``. ``n_j > 0`` is membership of the union
  (precision/recall); ``Σ_j n_j`` is the numerator of density.

  Args:
    queries: (M, F) floating.
    centres: (N, F) floating.
    radii: (N,) radii of the centres' balls.
    chunk_size: query rows per distance block (memory ``chunk_size × N``).

  Returns:
    (M,) int32 counts.

  Example:
    >>> c = jnp.array([[0.0], [10.0]])
    >>> q = jnp.array([[0.5], [5.0], [9.0], [10.0]])
    >>> print(ball_counts(q, c, jnp.array([1.0, 5.0])))
    [1 1 1 1]
  """
  check_pair("centres", centres, "queries", queries)
  _checks.check_int_at_least("chunk_size", chunk_size, 1)
  radii = jnp.asarray(radii)
  if radii.shape != centres.shape[:1]:
    raise ValueError(
        f"radii must have shape ({centres.shape[0]},) (one per centre), got {radii.shape}."
    )
  shift = jnp.mean(centres, axis=0)
  return _ball_counts_sq(queries - shift, centres - shift, radii * radii, chunk_size)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _nearest_sq(queries, support, chunk_size):
  return map_row_chunks(
      lambda rows, _: jnp.min(sq_dists(rows, support), axis=1), queries, chunk_size
  )


def nearest_distances(
    queries: jax.Array, support: jax.Array, *, chunk_size: int = DEFAULT_CHUNK
) -> jax.Array:
  """Distance from every query to its nearest point of another set.

  ``d_j = min_i ‖q_j − s_i‖``.

  Args:
    queries: (M, F) floating.
    support: (N, F) floating.
    chunk_size: query rows per distance block.

  Returns:
    (M,) distances.

  Example:
    >>> print(nearest_distances(jnp.array([[0.0], [4.0]]), jnp.array([[1.0], [10.0]])))
    [1. 3.]
  """
  check_pair("support", support, "queries", queries)
  _checks.check_int_at_least("chunk_size", chunk_size, 1)
  shift = jnp.mean(support, axis=0)
  return jnp.sqrt(_nearest_sq(queries - shift, support - shift, chunk_size))


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def _precision_recall(real, fake, k, chunk_size):
  shift = jnp.mean(real, axis=0)
  real, fake = real - shift, fake - shift
  r_real = _knn_sq(real, k, chunk_size)[:, k - 1]
  r_fake = _knn_sq(fake, k, chunk_size)[:, k - 1]
  precision = jnp.mean(_ball_counts_sq(fake, real, r_real, chunk_size) > 0, dtype=jnp.float32)
  recall = jnp.mean(_ball_counts_sq(real, fake, r_fake, chunk_size) > 0, dtype=jnp.float32)
  return PrecisionRecall(precision, recall)


def precision_recall(
    real: jax.Array,
    fake: jax.Array,
    *,
    k: int = DEFAULT_K,
    chunk_size: int = DEFAULT_CHUNK,
) -> PrecisionRecall:
  """Improved precision and recall of fake features against real features.

  ``precision = (1/M) Σ_j [∃ i: ‖φ_g_j − φ_r_i‖ ≤ r_k(φ_r_i)]`` and
  ``recall = (1/N) Σ_i [∃ j: ‖φ_r_i − φ_g_j‖ ≤ r_k(φ_g_j)]``, the radii
  ``r_k`` being k-th nearest-neighbour distances within each set
  (:func:`knn_radii`). Both sets are in one feature space (e.g. a
  classifier's penultimate layer, see :mod:`dgmjax.metrics.evaluate`).

  Identical sets give exactly 1 and 1; two independent draws of one
  distribution give slightly less (the balls do not cover the whole
  support), and a generator that drops a tenth of the modes loses a tenth of
  the recall but no precision.

  Args:
    real: (N, F) real features, ``N >= k + 1``.
    fake: (M, F) generated features, ``M >= k + 1``.
    k: neighbour rank for the radii (3 in the paper).
    chunk_size: rows per distance block; peak memory is about
      ``chunk_size × max(N, M)`` floats beyond the inputs.

  Returns:
    A :class:`PrecisionRecall`.

  References:
    Kynkäänniemi et al., `Improved Precision and Recall Metric for Assessing
    Generative Models <https://arxiv.org/abs/1904.06991>`_, NeurIPS 2019.

  Example:
    >>> real = jnp.array([[0.0], [1.0], [2.0], [3.0]])
    >>> fake = jnp.array([[0.5], [1.5], [2.5], [30.0]])  # one fake far off
    >>> pr = precision_recall(real, fake, k=1)
    >>> print(float(pr.precision), float(pr.recall))
    0.75 1.0
  """
  check_pair("real", real, "fake", fake)
  check_k(k, real.shape[0], "real")
  check_k(k, fake.shape[0], "fake")
  _checks.check_int_at_least("chunk_size", chunk_size, 1)
  dtype = jnp.result_type(real, fake)
  return _precision_recall(real.astype(dtype), fake.astype(dtype), k, chunk_size)
