"""Density and coverage of generated samples (Naeem et al. 2020).

Precision and recall (:mod:`dgmjax.metrics.precision_recall`) build the fake
manifold from the fakes themselves, so a few outlying fakes inflate recall
and an outlying real inflates precision. Density and coverage use only the
real balls ``B(φ_r_i, r_i)``, ``r_i`` the distance to the k-th nearest real
neighbour (k = 5 by default):

* ``density = (1/(kM)) Σ_j Σ_i [φ_g_j ∈ B(φ_r_i, r_i)]``: how many real
  balls the average fake falls into, over k. It is not bounded by 1 (fakes
  piled on dense regions score above 1), and for fakes drawn from the real
  distribution ``E[density] = 1`` exactly: the rank of a fake among the
  distances to ``φ_r_i`` is uniform over N, so it falls in the ball with
  probability k/N.
* ``coverage = (1/N) Σ_i [∃ j: φ_g_j ∈ B(φ_r_i, r_i)]``: the fraction of real
  balls holding at least one fake, in [0, 1]. For fakes from the real
  distribution ``E[coverage] = 1 − Π_{m=0}^{k−1} (N−1−m)/(N+M−1−m)``
  (:func:`expected_coverage`; 0.969 for M = N large and k = 5).

Both are computed by chunked distance blocks (see
:mod:`dgmjax.metrics.precision_recall`), never the full N × M matrix.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dgmjax import _checks
from dgmjax.metrics import precision_recall as pr

__all__ = ["DEFAULT_K", "DensityCoverage", "density_coverage", "expected_coverage"]

DEFAULT_K = 5


class DensityCoverage(NamedTuple):
  """Result of :func:`density_coverage` (JAX scalars)."""

  density: jax.Array  # >= 0, 1 in expectation for fakes from the real law
  coverage: jax.Array  # in [0, 1]


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def _density_coverage(real, fake, k, chunk_size):
  shift = jnp.mean(real, axis=0)
  real, fake = real - shift, fake - shift
  r2 = pr._knn_sq(real, k, chunk_size)[:, k - 1]
  counts = pr._ball_counts_sq(fake, real, r2, chunk_size)
  density = jnp.sum(counts, dtype=jnp.float32) / (k * fake.shape[0])
  nearest_fake = pr._nearest_sq(real, fake, chunk_size)
  coverage = jnp.mean(nearest_fake <= r2, dtype=jnp.float32)
  return DensityCoverage(density, coverage)


def density_coverage(
    real: jax.Array,
    fake: jax.Array,
    *,
    k: int = DEFAULT_K,
    chunk_size: int = pr.DEFAULT_CHUNK,
) -> DensityCoverage:
  """Density and coverage of fake features against real features.

  ``density = (1/(kM)) Σ_j Σ_i [‖φ_g_j − φ_r_i‖ ≤ r_i]``,
  ``coverage = (1/N) Σ_i [min_j ‖φ_r_i − φ_g_j‖ ≤ r_i]``, with
  ``r_i`` the k-th nearest-neighbour distance among the reals (itself
  excluded). Balls are closed, as in :func:`precision_recall`.

  Args:
    real: (N, F) real features, ``N >= k + 1``.
    fake: (M, F) generated features, ``M >= 1``.
    k: neighbour rank for the radii (5 in the paper).
    chunk_size: rows per distance block.

  Returns:
    A :class:`DensityCoverage`.

  References:
    Naeem et al., `Reliable Fidelity and Diversity Metrics for Generative
    Models <https://arxiv.org/abs/2002.09797>`_, ICML 2020.

  Example:
    >>> real = jnp.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    >>> fake = jnp.array([[1.1], [1.3], [1.6], [9.0]])  # radii (k=1): 1 1 1 1 7
    >>> dc = density_coverage(real, fake, k=1)
    >>> print(round(float(dc.density), 4), round(float(dc.coverage), 4))  # 7 hits / (1·4)
    1.75 0.6
  """
  pr.check_pair("real", real, "fake", fake)
  pr.check_k(k, real.shape[0], "real")
  _checks.check_int_at_least("chunk_size", chunk_size, 1)
  dtype = jnp.result_type(real, fake)
  return _density_coverage(real.astype(dtype), fake.astype(dtype), k, chunk_size)


def expected_coverage(num_real: int, num_fake: int, *, k: int = DEFAULT_K) -> float:
  """``E[coverage]`` when real and fake features are i.i.d. from one law.

  A real ball is empty of fakes iff the k nearest of the other
  ``N − 1 + M`` points to its centre are all reals; by exchangeability
  that happens with probability ``C(N−1, k) / C(N−1+M, k)``, so
  ``E[coverage] = 1 − Π_{m=0}^{k−1} (N−1−m)/(N+M−1−m)`` (Naeem et al.
  2020, section 4.2), for any continuous distribution.

  Example:
    >>> print(f"{expected_coverage(10_000, 10_000):.4f}")  # ≈ 1 − 2⁻⁵
    0.9688
  """
  _checks.check_int_at_least("k", k, 1)
  _checks.check_int_at_least("num_real", num_real, k + 1)
  _checks.check_int_at_least("num_fake", num_fake, 1)
  empty = 1.0
  for m in range(k):
    empty *= (num_real - 1 - m) / (num_real + num_fake - 1 - m)
  return 1.0 - empty
