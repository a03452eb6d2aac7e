"""Toy distributions of the GAN and AVB lessons, as pure JAX samplers.

Definitions follow VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al.
2018) for the mode-collapse benchmarks, and AVB (Mescheder et al. 2017) for
the four-point toy. Every sampler is a pure function of a PRNG key, so it can
run inside a jitted train step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dgmjax import _checks

RING_STD = 0.01
GRID_STD = 0.05


def ring_centers(num_modes: int = 8, *, radius: float = 1.0) -> jax.Array:
  """Mode centres at angles 2πk/num_modes (k < num_modes: all distinct)."""
  # arange, not linspace(0, 2π, n): linspace repeats the first angle at 2π.
  angles = 2.0 * jnp.pi * jnp.arange(num_modes) / num_modes
  return radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def grid_centers() -> jax.Array:
  """The 25 centres {-4, -2, 0, 2, 4}²."""
  axis = jnp.array([-4.0, -2.0, 0.0, 2.0, 4.0])
  xx, yy = jnp.meshgrid(axis, axis, indexing="ij")
  return jnp.stack([xx.ravel(), yy.ravel()], axis=-1)


def _mixture_sample(key, centers, std, n):
  kc, kn = jax.random.split(key)
  which = jax.random.randint(kc, (n,), 0, centers.shape[0])
  return centers[which] + std * jax.random.normal(kn, (n, 2))


def sample_ring(key: jax.Array, n: int, *, std: float = RING_STD) -> jax.Array:
  """n points from 8 equally weighted Gaussians on the unit circle, σ=0.01."""
  _checks.check_int_at_least("n", n, 1)
  return _mixture_sample(key, ring_centers(8), std, n)


def sample_grid(key: jax.Array, n: int, *, std: float = GRID_STD) -> jax.Array:
  """n points from 25 equally weighted Gaussians on {-4..4 step 2}², σ=0.05."""
  _checks.check_int_at_least("n", n, 1)
  return _mixture_sample(key, grid_centers(), std, n)


MIXTURE_1D = dict(weights=(0.5, 0.5), means=(-2.0, 2.0), stds=(0.5, 0.5))


def sample_mixture_1d(
    key: jax.Array,
    n: int,
    *,
    weights=MIXTURE_1D["weights"],
    means=MIXTURE_1D["means"],
    stds=MIXTURE_1D["stds"],
) -> jax.Array:
  """n draws (n, 1) from a 1-D Gaussian mixture (the lecture's KL vs JSD demo)."""
  _checks.check_int_at_least("n", n, 1)
  kc, kn = jax.random.split(key)
  which = jax.random.categorical(kc, jnp.log(jnp.asarray(weights)), shape=(n,))
  x = jnp.asarray(means)[which] + jnp.asarray(stds)[which] * jax.random.normal(kn, (n,))
  return x[:, None]


def log_prob_mixture_1d(
    x: jax.Array,
    *,
    weights=MIXTURE_1D["weights"],
    means=MIXTURE_1D["means"],
    stds=MIXTURE_1D["stds"],
) -> jax.Array:
  """Log-density of the 1-D mixture at x (any shape)."""
  x = jnp.asarray(x)[..., None]
  w, m, s = (jnp.asarray(v) for v in (weights, means, stds))
  comp = -0.5 * ((x - m) / s) ** 2 - jnp.log(s) - 0.5 * math.log(2 * math.pi)
  return jax.nn.logsumexp(comp + jnp.log(w), axis=-1)


def avb_points() -> jax.Array:
  """The four 2×2 one-hot images of the AVB toy, flattened to (4, 4)."""
  return jnp.eye(4)


def sample_avb_points(key: jax.Array, n: int) -> jax.Array:
  """n draws (n, 4) uniformly from the four one-hot points."""
  _checks.check_int_at_least("n", n, 1)
  return avb_points()[jax.random.randint(key, (n,), 0, 4)]
