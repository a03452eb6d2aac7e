"""Tests for dgmjax.models.kernel_density (the lecture's p1) against SciPy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from dgmjax.models import kernel_density as kd


def scipy_log_p1(x, train, eps):
  """log (1/n) Σ_i N(x | x_i, εI), one multivariate normal per centre."""
  x = x.reshape(len(x), -1).astype(np.float64)
  train = train.reshape(len(train), -1).astype(np.float64)
  comp = np.stack([stats.multivariate_normal(c, eps * np.eye(x.shape[1])).logpdf(x)
                   for c in train], axis=1)
  return special.logsumexp(comp, axis=1) - math.log(len(train))


@pytest.mark.parametrize("chunk_size", [3, 1000])
@pytest.mark.parametrize("eps", [0.5, 1e-3])
def test_log_prob_matches_scipy(chunk_size, eps):
  rng = np.random.default_rng(0)
  train = rng.uniform(0, 1, (23, 2, 3, 1)).astype(np.float32)  # 6-pixel "images"
  test = rng.uniform(0, 1, (11, 2, 3, 1)).astype(np.float32)
  got = np.asarray(kd.kernel_density_log_prob(jnp.asarray(test), jnp.asarray(train), eps=eps,
                                              chunk_size=chunk_size), np.float64)
  want = scipy_log_p1(test, train, eps)
  # float32 distances; the ε = 1e-3 values are ~ −10³ nats.
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-3)


def test_samples_are_a_training_image_plus_noise_of_variance_eps():
  rng = np.random.default_rng(1)
  train = jnp.asarray(rng.uniform(0, 1, (5, 4, 4)), jnp.float32)
  eps, n = 0.02, 4000
  x, idx = kd.kernel_density_sample(jax.random.key(0), train, n, eps=eps, return_indices=True)
  resid = np.asarray(x - train[idx], np.float64).reshape(n, -1)
  # Σ resid² / ε ~ χ² with n·16 degrees of freedom.
  dof = resid.size
  stat = np.sum(resid**2) / eps
  assert abs(stat - dof) < 4 * math.sqrt(2 * dof)
  # Isotropic and uncorrelated across pixels: sample covariance ≈ ε I.
  cov = np.cov(resid, rowvar=False)
  assert np.max(np.abs(cov - eps * np.eye(16))) < 5 * eps * math.sqrt(2 / n)
  # The centre is uniform over the 5 training images.
  counts = np.bincount(np.asarray(idx), minlength=5)
  assert stats.chisquare(counts).pvalue > 1e-3
  # Without indices the same key gives the same samples.
  np.testing.assert_array_equal(kd.kernel_density_sample(jax.random.key(0), train, n, eps=eps), x)


def test_small_eps_great_samples_poor_likelihood():
  # Data: N(0, I_8). Its exact test log-likelihood is the reference; p1 on
  # 500 training points with tiny ε makes samples that sit on training
  # points (distance √(8ε)) but scores held-out points far below the truth.
  rng = np.random.default_rng(2)
  train = jnp.asarray(rng.standard_normal((500, 8)), jnp.float32)
  test = jnp.asarray(rng.standard_normal((200, 8)), jnp.float32)
  truth = stats.multivariate_normal(np.zeros(8), np.eye(8)).logpdf(np.asarray(test)).mean()
  tiny = float(kd.kernel_density_log_prob(test, train, eps=1e-3).mean())
  fair = float(kd.kernel_density_log_prob(test, train, eps=0.5).mean())
  assert tiny < truth - 100 and tiny < fair
  samples, idx = kd.kernel_density_sample(jax.random.key(1), train, 300, eps=1e-3,
                                          return_indices=True)
  dist = np.linalg.norm(np.asarray(samples - train[idx]), axis=1)
  assert np.all(dist < 0.3)  # √(8·10⁻³) ≈ 0.09 on average


def test_kernel_density_object_and_bad_inputs():
  train = jnp.zeros((4, 3))
  p1 = kd.KernelDensity(train, eps=2.0, chunk_size=2)
  np.testing.assert_allclose(p1.log_prob(jnp.zeros((1, 3))), -1.5 * math.log(2 * math.pi * 2.0),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="x must have shape"):
    kd.kernel_density_log_prob(jnp.zeros((2, 4)), train, eps=1.0)
  with pytest.raises(ValueError, match="eps must be > 0"):
    kd.kernel_density_log_prob(jnp.zeros((2, 3)), train, eps=0.0)
  with pytest.raises(TypeError, match="x must have a floating"):
    kd.kernel_density_log_prob(jnp.zeros((2, 3), jnp.int32), train, eps=1.0)
