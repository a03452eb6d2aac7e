"""Tests for dgmjax.models.noise_mixture (the lecture's p2)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dgmjax.models import kernel_density as kd
from dgmjax.models import noise_mixture as nm


class Gaussian:
  """A model with log_prob/sample: N(mu, s² I) on D pixels."""

  def __init__(self, mu, s):
    self.mu, self.s = jnp.asarray(mu, jnp.float32), s

  def log_prob(self, x):
    z = (x - self.mu) / self.s
    return -0.5 * jnp.sum(z * z, -1) - x.shape[-1] * (math.log(self.s) + 0.5 * math.log(2 * math.pi))

  def sample(self, key, n):
    return self.mu + self.s * jax.random.normal(key, (n, self.mu.shape[0]))


def test_log_prob_matches_direct_computation_with_uniform_noise():
  d = 4
  model = Gaussian(np.full(d, 0.5), 0.2)
  p2 = nm.NoiseMixture(model, nm.UniformNoise((d,)))
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.uniform(0, 1, (50, d)), rng.uniform(1.1, 2, (5, d))]).astype(np.float32)
  got = np.asarray(p2.log_prob(jnp.asarray(x)), np.float64)
  p = stats.multivariate_normal(np.full(d, 0.5), 0.04 * np.eye(d)).pdf(x.astype(np.float64))
  inside = np.all((x >= 0) & (x <= 1), axis=1)
  want = np.log(0.01 * p + 0.99 * inside.astype(np.float64))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_log_prob_matches_direct_computation_with_gaussian_noise_and_kde():
  train = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (7, 3)), jnp.float32)
  model = kd.KernelDensity(train, eps=0.05)
  noise = nm.GaussianNoise((3,), mean=0.5, std=0.5)
  p2 = nm.NoiseMixture(model, noise)
  x = jnp.asarray(np.random.default_rng(2).uniform(-0.5, 1.5, (40, 3)), jnp.float32)
  xd = np.asarray(x, np.float64)
  p = np.mean([stats.multivariate_normal(c, 0.05 * np.eye(3)).pdf(xd)
               for c in np.asarray(train, np.float64)], axis=0)
  q = stats.multivariate_normal(np.full(3, 0.5), 0.25 * np.eye(3)).pdf(xd)
  np.testing.assert_allclose(p2.log_prob(x), np.log(0.01 * p + 0.99 * q), rtol=1e-5)


def test_bound_log_p_minus_log_100_holds_on_every_point():
  d = 16
  model = Gaussian(np.full(d, 0.5), 0.1)
  for noise in (nm.UniformNoise((d,)), nm.GaussianNoise((d,))):
    p2 = nm.NoiseMixture(model, noise)
    x = jnp.concatenate([model.sample(jax.random.key(0), 500),  # on the model
                         noise.sample(jax.random.key(1), 500),  # on the noise
                         jnp.full((3, d), 5.0)])  # outside the pixel cube
    lp, lp2 = np.asarray(model.log_prob(x)), np.asarray(p2.log_prob(x))
    assert np.all(lp2 >= lp - math.log(100) - 1e-5)
    # Upper side: p2 <= max(p, p_noise).
    assert np.all(lp2 <= np.maximum(lp, np.asarray(noise.log_prob(x))) + 1e-5)
  # Where the noise has no mass the bound is an equality.
  outside = nm.NoiseMixture(model, nm.UniformNoise((d,))).log_prob(jnp.full((2, d), 5.0))
  np.testing.assert_allclose(outside, model.log_prob(jnp.full((2, d), 5.0)) - math.log(100),
                             rtol=1e-6)


def test_ninety_nine_percent_of_samples_are_noise():
  d, n = 2, 20_000
  model = Gaussian(np.array([5.0, 5.0]), 0.01)  # far from the unit cube
  p2 = nm.NoiseMixture(model, nm.UniformNoise((d,)))
  x, from_model = p2.sample_with_mask(jax.random.key(0), n)
  x, from_model = np.asarray(x), np.asarray(from_model)
  k = int(from_model.sum())
  assert stats.binomtest(k, n, 0.01).pvalue > 1e-3
  # The mask says where each sample came from, and the samples agree.
  np.testing.assert_array_equal(np.all(np.abs(x - 5.0) < 0.1, axis=1), from_model)
  noise = x[~from_model]
  assert stats.kstest(noise[:, 0], "uniform").pvalue > 1e-3
  np.testing.assert_array_equal(p2.sample(jax.random.key(0), n), x)


def test_mixture_log_prob_and_bad_inputs():
  lp = jnp.array([-3.0, -50.0])
  ln = jnp.array([-3.0, 0.0])
  # Equal components: log p2 = log p exactly, whatever the weight.
  assert float(nm.mixture_log_prob(lp, ln, weight=0.3)[0]) == pytest.approx(-3.0, abs=1e-6)
  with pytest.raises(ValueError, match="weight"):
    nm.mixture_log_prob(lp, ln, weight=1.0)
  with pytest.raises(ValueError, match="noise_log_prob must have the same shape"):
    nm.mixture_log_prob(lp, ln[:1])
  with pytest.raises(ValueError, match="high must be > low"):
    nm.UniformNoise((2,), low=1.0, high=1.0)
  with pytest.raises(ValueError, match="x must have shape"):
    nm.UniformNoise((2,)).log_prob(jnp.zeros((3, 4)))
