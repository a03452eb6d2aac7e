"""Tests for dgmjax.metrics.evaluate_samples, and the lecture's two counter-examples."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg, special
from scipy.spatial.distance import cdist

from dgmjax.metrics import evaluate_samples
from dgmjax.models import kernel_density as kd
from dgmjax.models import noise_mixture as nm


def np_metrics(real, fake, k_pr=3, k_dc=5):
  """Brute-force NumPy/SciPy versions of every metric, float64."""
  real, fake = real.astype(np.float64), fake.astype(np.float64)

  def radii(x, k):
    d = cdist(x, x)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, 1)[:, k - 1]

  d = cdist(fake, real)
  in_real = d <= radii(real, k_pr)[None]
  in_fake = d.T <= radii(fake, k_pr)[None]
  in_dc = d <= radii(real, k_dc)[None]
  mu1, mu2 = real.mean(0), fake.mean(0)
  c1, c2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
  fd = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * np.real(linalg.sqrtm(c1 @ c2)))
  return dict(precision=in_real.any(1).mean(), recall=in_fake.any(1).mean(),
              density=in_dc.sum() / (k_dc * len(fake)), coverage=in_dc.any(0).mean(),
              frechet_distance=fd)


def check_close(got, want):
  for key in ("precision", "recall", "density", "coverage"):
    assert got[key] == pytest.approx(want[key], abs=1e-6), key
  assert got["frechet_distance"] == pytest.approx(want["frechet_distance"], rel=1e-3, abs=1e-4)


def test_raw_pixels_match_brute_force():
  rng = np.random.default_rng(0)
  real = rng.uniform(0, 1, (80, 3, 2, 1)).astype(np.float32)
  fake = (0.7 * rng.uniform(0, 1, (60, 3, 2, 1)) + 0.2).astype(np.float32)
  got = evaluate_samples(fake, real, chunk_size=16)
  check_close(got, np_metrics(real.reshape(80, -1), fake.reshape(60, -1)))
  assert (got["num_samples"], got["num_real"], got["feature_dim"]) == (60, 80, 6)
  assert "class_kl" not in got


def test_feature_callable_and_class_metrics():
  rng = np.random.default_rng(1)
  real = rng.uniform(0, 1, (70, 4, 4)).astype(np.float32)
  fake = rng.uniform(0, 1, (50, 4, 4)).astype(np.float32)
  proj = rng.standard_normal((16, 3)).astype(np.float32)
  feats = lambda x: np.asarray(x).reshape(len(x), -1) @ proj
  # A stand-in classifier: class = index of the brightest of the first 10
  # pixels, which for these fakes we force into classes 0..4 only.
  fake.reshape(50, -1)[:, 5:10] = 0.0
  probs = lambda x: np.eye(10)[np.asarray(x).reshape(len(x), -1)[:, :10].argmax(1)]
  got = evaluate_samples(fake, real, features=feats, classifier=probs,
                         k_precision_recall=2, k_density_coverage=4)
  check_close(got, np_metrics(feats(real), feats(fake), k_pr=2, k_dc=4))
  hist = np.bincount(probs(fake).argmax(1), minlength=10) / 50
  assert got["class_histogram"] == pytest.approx(hist.tolist())
  nz = hist[hist > 0]
  assert got["class_kl"] == pytest.approx(float(np.sum(nz * np.log(10 * nz))), abs=1e-9)
  assert got["classes_covered"] == np.sum(hist >= 0.01) and hist[5:].sum() == 0


def test_lecture_counter_examples_likelihood_is_not_sample_quality():
  # True law: ten tight 2-D clusters. p1 = kernel density with tiny ε on
  # training points; p2 = the true law mixed 1:99 with uniform noise on a box.
  rng = np.random.default_rng(2)
  centres = np.stack([np.cos(np.arange(10) * 0.2 * np.pi), np.sin(np.arange(10) * 0.2 * np.pi)], 1)
  std = 0.05

  def draw(n):
    return (centres[rng.integers(0, 10, n)] + std * rng.standard_normal((n, 2))).astype(np.float32)

  def true_log_p(x):
    d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    return special.logsumexp(-d2 / (2 * std**2), axis=1) - math.log(10) - math.log(2 * math.pi * std**2)

  class TrueModel:
    def log_prob(self, x):
      return jnp.asarray(true_log_p(np.asarray(x, np.float64)), jnp.float32)

    def sample(self, key, n):
      return jnp.asarray(draw(n))

  train, test, real = draw(1000), draw(1000), draw(1000)
  truth = true_log_p(test.astype(np.float64))

  p1 = kd.KernelDensity(jnp.asarray(train), eps=1e-6)
  p2 = nm.NoiseMixture(TrueModel(), nm.UniformNoise((2,), low=-2.0, high=2.0))
  ll1 = np.asarray(p1.log_prob(jnp.asarray(test)))
  ll2 = np.asarray(p2.log_prob(jnp.asarray(test)))
  s1 = evaluate_samples(np.asarray(p1.sample(jax.random.key(0), 1000)), real)
  s2 = evaluate_samples(np.asarray(p2.sample(jax.random.key(1), 1000)), real)

  # p1: poor likelihood (far below the truth), great samples.
  assert ll1.mean() < truth.mean() - 50
  # (Recall a bit lower: 1000 draws with replacement hit ~63 % of the
  # training points, so the fake balls are fewer and wider.)
  assert s1["precision"] > 0.9 and s1["recall"] > 0.8
  # p2: likelihood within log 100 of the truth on every test point, poor
  # samples: 1 % come from the clusters, and the noise lands in the real
  # balls (a few % of the 4 × 4 box) only by chance.
  assert np.all(ll2 >= truth - math.log(100) - 1e-4)
  assert s2["precision"] < 0.1
  assert s2["frechet_distance"] > 10 * s1["frechet_distance"]


def test_bad_inputs_raise():
  x = np.zeros((10, 3), np.float32)
  with pytest.raises(ValueError, match="trailing shape"):
    evaluate_samples(np.zeros((10, 4), np.float32), x)
  with pytest.raises(ValueError, match="features\\(samples\\) must return"):
    evaluate_samples(x, x, features=lambda a: np.zeros(len(a)))
  with pytest.raises(ValueError, match="NaN"):
    evaluate_samples(np.full((10, 3), np.nan, np.float32), x)
  with pytest.raises(TypeError, match="classifier"):
    evaluate_samples(np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32),
                     np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32),
                     classifier=3)
