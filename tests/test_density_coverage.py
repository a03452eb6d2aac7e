"""Tests for dgmjax.metrics.density_coverage: brute force and exact expectations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from dgmjax.metrics import density_coverage as dc


def np_density_coverage(real, fake, k):
  d_rr = cdist(real, real)
  np.fill_diagonal(d_rr, np.inf)
  radii = np.sort(d_rr, axis=1)[:, k - 1]
  inside = cdist(fake, real) <= radii[None, :]  # (M, N)
  return inside.sum() / (k * len(fake)), np.mean(inside.any(axis=0))


@pytest.mark.parametrize("chunk_size", [6, 1000])
def test_matches_brute_force(chunk_size):
  rng = np.random.default_rng(0)
  real = rng.standard_normal((50, 4))
  # A shifted, narrower fake law: density and coverage both differ from 1.
  fake = 0.6 * rng.standard_normal((37, 4)) + 0.4
  for k in (1, 5):
    got = dc.density_coverage(jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32),
                              k=k, chunk_size=chunk_size)
    density, coverage = np_density_coverage(real, fake, k)
    assert float(got.density) == pytest.approx(density, rel=1e-6)
    assert float(got.coverage) == pytest.approx(coverage, abs=1e-7)


def test_same_law_has_the_exact_expected_density_and_coverage():
  # E[density] = 1 and E[coverage] = 1 − Π (N−1−m)/(N+M−1−m) hold for any
  # continuous law (exchangeability); check both over 40 independent draws.
  n, m, k, reps = 200, 150, 5, 40
  fn = jax.jit(lambda key: dc.density_coverage(*jnp.split(
      jax.random.normal(key, (n + m, 3)), [n]), k=k))
  out = [fn(key) for key in jax.random.split(jax.random.key(0), reps)]
  dens = np.array([float(o.density) for o in out])
  cov = np.array([float(o.coverage) for o in out])
  want_cov = dc.expected_coverage(n, m, k=k)
  assert want_cov == pytest.approx(1 - math.comb(n - 1, k) / math.comb(n - 1 + m, k))
  # 4 standard errors of the mean over the repetitions.
  assert abs(dens.mean() - 1.0) < 4 * dens.std(ddof=1) / math.sqrt(reps)
  assert abs(cov.mean() - want_cov) < 4 * cov.std(ddof=1) / math.sqrt(reps)


def test_fakes_on_one_real_point_pile_up_density_and_lose_coverage():
  rng = np.random.default_rng(1)
  real = rng.standard_normal((100, 2)).astype(np.float32)
  fake = np.repeat(real[:1], 40, axis=0) + 1e-4  # all fakes in real 0's ball
  got = dc.density_coverage(jnp.asarray(real), jnp.asarray(fake))
  d, c = np_density_coverage(real, fake, 5)
  assert float(got.density) == pytest.approx(d, rel=1e-6)
  assert float(got.coverage) == pytest.approx(c)
  # Every fake sits in the ball of real 0 and only in the (few) balls that
  # contain real 0 itself, so coverage is a handful of reals out of 100.
  assert float(got.coverage) <= 0.1


def test_bad_inputs_raise():
  x = jnp.zeros((10, 3))
  with pytest.raises(ValueError, match="fake must have last dimension 3"):
    dc.density_coverage(x, jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="k must be <="):
    dc.density_coverage(x[:5], x, k=5)
  with pytest.raises(ValueError, match="num_real"):
    dc.expected_coverage(3, 10, k=5)
