"""Mode coverage of a generator on the 2-D ring and grid (VEEGAN / PacGAN).

Lecture 7, slide "Mode collapse": a GAN generator may put all its mass on a
few of the data's modes. On mixtures with known, well-separated modes this is
measured directly (Srivastava et al. 2017, section 5.1; Lin et al. 2018,
section 5):

* draw N = 2500 samples from the generator;
* a sample is **high quality** if its standardized distance to its nearest
  mode, ``‖(x − μ_k)/σ‖₂`` with the per-axis data standard deviation σ, is at
  most 3 (for the isotropic ring and grid: within 3σ of the centre);
* a mode is **covered** if it is the nearest mode of at least one
  high-quality sample;
* the **mode KL** is ``KL(p̂ || uniform) = Σ_k p̂_k log(K p̂_k)``, where p̂ is
  the histogram of nearest modes over the high-quality samples (0 for a
  perfectly balanced generator, ``log K`` for one that produces a single
  mode). With no high-quality sample at all it is defined as ``log K``.

For samples of the data distribution itself the standardized distance to the
generating mode is chi-distributed with ``d = 2`` degrees of freedom, so the
expected high-quality fraction is ``P(χ²₂ ≤ 9) = 1 − exp(−9/2) = 0.98889``
(:func:`expected_high_quality_fraction`), not 99.7 %: 3σ per axis holds for
``0.9973² = 0.9946`` of the samples, the disc of radius 3σ for fewer. The
modes are so far apart (ring: 0.765 = 76σ, grid: 2 = 40σ) that the nearest
mode is always the generating one.

The functions are pure JAX (jit-able) and return arrays; call ``float`` on
the results to report them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dgmjax import _checks
from dgmjax.data import toy

__all__ = [
    "ModeCoverage",
    "NUM_SAMPLES",
    "expected_high_quality_fraction",
    "mode_coverage",
    "nearest_mode",
    "toy_mode_coverage",
]

NUM_SAMPLES = 2500  # the benchmark's sample count (VEEGAN, PacGAN)
THRESHOLD = 3.0  # high quality: within 3 standard deviations


class ModeCoverage(NamedTuple):
  """Result of :func:`mode_coverage` (all JAX scalars except ``counts``)."""

  modes_covered: jax.Array  # int32: modes with >= 1 high-quality sample
  high_quality_fraction: jax.Array  # in [0, 1]
  mode_kl: jax.Array  # KL(histogram of HQ samples' modes || uniform), nats
  counts: jax.Array  # (K,) int32: high-quality samples per mode


def nearest_mode(
    samples: jax.Array, centers: jax.Array, *, std: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Nearest mode and standardized distance to it, for every sample.

  ``dist_i = min_k ‖(x_i − μ_k)/σ‖₂`` with σ a scalar or one value per axis.

  Args:
    samples: (N, d) floating.
    centers: (K, d) mode centres.
    std: the data standard deviation, scalar or (d,), > 0.

  Returns:
    ``(index (N,) int32, distance (N,))``.

  Example:
    >>> centers = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    >>> idx, dist = nearest_mode(jnp.array([[0.9, 0.0], [0.0, 0.02]]), centers, std=0.01)
    >>> print(idx, jnp.round(dist, 3))
    [1 0] [10.  2.]
  """
  _checks.check_floating("samples", samples)
  _checks.check_floating("centers", centers)
  _checks.check_rank("samples", samples, 2)
  _checks.check_rank("centers", centers, 2)
  _checks.check_last_dim("centers", centers, samples.shape[-1], "the sample dimension")
  _checks.check_positive("std", std)
  std = jnp.broadcast_to(jnp.asarray(std, samples.dtype), (samples.shape[-1],))
  diff = (samples[:, None, :] - centers[None, :, :]) / std
  sq = jnp.sum(diff * diff, axis=-1)  # (N, K)
  idx = jnp.argmin(sq, axis=-1).astype(jnp.int32)
  return idx, jnp.sqrt(jnp.min(sq, axis=-1))


def mode_coverage(
    samples: jax.Array,
    centers: jax.Array,
    *,
    std: float | jax.Array,
    threshold: float = THRESHOLD,
) -> ModeCoverage:
  """Modes covered, fraction of high-quality samples and mode KL to uniform.

  See the module docstring for the definitions (VEEGAN / PacGAN protocol).
  The benchmark uses N = 2500 samples; any N >= 1 is accepted.

  Lecture 7, slide "Mode collapse".

  Args:
    samples: (N, d) generated samples.
    centers: (K, d) true mode centres.
    std: the modes' standard deviation (scalar or per axis).
    threshold: high quality within this many standardized units (3).

  Returns:
    A :class:`ModeCoverage`.

  References:
    Srivastava et al., `VEEGAN <https://arxiv.org/abs/1705.07761>`_, 2017;
    Lin et al., `PacGAN <https://arxiv.org/abs/1712.04086>`_, 2018.

  Example:
    >>> centers = toy.ring_centers(8)
    >>> collapsed = jnp.tile(centers[:1], (2500, 1))  # every sample on mode 0
    >>> m = mode_coverage(collapsed, centers, std=toy.RING_STD)
    >>> print(int(m.modes_covered), float(m.high_quality_fraction), f"{float(m.mode_kl):.4f}")
    1 1.0 2.0794
  """
  _checks.check_positive("threshold", threshold)
  idx, dist = nearest_mode(samples, centers, std=std)
  k = centers.shape[0]
  good = dist <= threshold
  counts = jnp.zeros((k,), jnp.int32).at[idx].add(good.astype(jnp.int32))
  n_good = jnp.sum(counts)
  p = counts / jnp.maximum(n_good, 1)
  # 0 log 0 = 0; the double where keeps the gradient-free path NaN-free too.
  safe = jnp.where(p > 0, p, 1.0)
  kl = jnp.sum(jnp.where(p > 0, p * jnp.log(safe * k), 0.0))
  kl = jnp.where(n_good > 0, kl, math.log(k))
  return ModeCoverage(
      modes_covered=jnp.sum(counts > 0).astype(jnp.int32),
      high_quality_fraction=jnp.mean(good.astype(jnp.float32)),
      mode_kl=kl,
      counts=counts,
  )


def toy_modes(dataset: str) -> tuple[jax.Array, float]:
  """(centres, σ) of the ``"ring"`` (8 modes) or ``"grid"`` (25 modes) benchmark.

  Example:
    >>> centers, std = toy_modes("ring")
    >>> print(centers.shape, std)
    (8, 2) 0.01
  """
  if dataset == "ring":
    return toy.ring_centers(8), toy.RING_STD
  if dataset == "grid":
    return toy.grid_centers(), toy.GRID_STD
  raise ValueError(f"dataset must be 'ring' or 'grid', got {dataset!r}.")


def toy_mode_coverage(samples: jax.Array, dataset: str) -> ModeCoverage:
  """:func:`mode_coverage` with the centres and σ of ``"ring"`` or ``"grid"``.

  Example:
    >>> x = toy.sample_grid(jax.random.key(0), 2500)
    >>> print(int(toy_mode_coverage(x, "grid").modes_covered))
    25
  """
  centers, std = toy_modes(dataset)
  return mode_coverage(samples, centers, std=std)


def expected_high_quality_fraction(dim: int = 2, *, threshold: float = THRESHOLD) -> float:
  """High-quality fraction of samples from the true mixture: ``P(χ²_d ≤ t²)``.

  For a Gaussian mode with per-axis σ the standardized distance is chi
  distributed with ``d`` degrees of freedom. Closed forms: ``d = 1``:
  ``erf(t/√2)``; ``d = 2``: ``1 − exp(−t²/2)``; in general the regularized
  lower incomplete gamma ``P(d/2, t²/2)``.

  Args:
    dim: the data dimension d >= 1.
    threshold: t > 0 (3 in the benchmark).

  Returns:
    The probability as a Python float.

  Example:
    >>> print(f"{expected_high_quality_fraction(2):.5f}")
    0.98889
  """
  _checks.check_int_at_least("dim", dim, 1)
  _checks.check_positive("threshold", threshold)
  return float(jax.scipy.special.gammainc(dim / 2.0, threshold**2 / 2.0))
