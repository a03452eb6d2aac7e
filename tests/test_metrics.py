"""Tests for dgmjax.metrics: mode coverage (VEEGAN/PacGAN) and the classifier metrics."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg, stats

from dgmjax.data import load_digits, pixels, toy
from dgmjax.metrics import classifier as clf
from dgmjax.metrics import mode_coverage as mc

# ---------------------------------------------------------------------------
# Mode coverage.


def test_expected_fraction_is_the_chi_square_cdf():
  for d in (1, 2, 3, 5):
    assert mc.expected_high_quality_fraction(d) == pytest.approx(stats.chi2.cdf(9.0, d), abs=2e-6)
  # d = 2 in closed form; not the per-axis 0.9973² = 0.9946 of a 3σ box.
  assert mc.expected_high_quality_fraction(2) == pytest.approx(1 - math.exp(-4.5), abs=1e-6)
  assert mc.expected_high_quality_fraction(1, threshold=1.0) == pytest.approx(0.682689, abs=1e-5)


@pytest.mark.parametrize("dataset,k", [("ring", 8), ("grid", 25)])
def test_true_samples_cover_every_mode_at_the_chi_fraction(dataset, k):
  sampler = toy.sample_ring if dataset == "ring" else toy.sample_grid
  expected = mc.expected_high_quality_fraction(2)
  n = mc.NUM_SAMPLES
  se = math.sqrt(expected * (1 - expected) / n)
  fracs = []
  cover = jax.jit(lambda x: mc.toy_mode_coverage(x, dataset))
  for seed in range(6):
    m = cover(sampler(jax.random.key(100 + seed), n))
    assert int(m.modes_covered) == k
    assert int(m.counts.sum()) == round(float(m.high_quality_fraction) * n)
    # Multinomial mode histogram: KL to uniform is small (≈ (K−1)/(2N)).
    assert 0.0 <= float(m.mode_kl) < 10 * (k - 1) / (2 * n)
    fracs.append(float(m.high_quality_fraction))
  # Each seed within 4.5 standard errors, their mean within 4.5/√6.
  assert np.all(np.abs(np.array(fracs) - expected) < 4.5 * se), fracs
  assert abs(np.mean(fracs) - expected) < 4.5 * se / math.sqrt(len(fracs))


def test_collapsed_and_half_collapsed_generators():
  centers = toy.ring_centers(8)
  one = jnp.tile(centers[3:4], (2500, 1))
  m = mc.mode_coverage(one, centers, std=toy.RING_STD)
  assert int(m.modes_covered) == 1 and float(m.high_quality_fraction) == 1.0
  np.testing.assert_allclose(float(m.mode_kl), math.log(8), rtol=1e-6)
  assert np.asarray(m.counts).tolist() == [0, 0, 0, 2500, 0, 0, 0, 0]
  # Half on mode 0, half on mode 5, plus 500 junk samples at the origin.
  two = jnp.concatenate([jnp.tile(centers[:1], (1000, 1)), jnp.tile(centers[5:6], (1000, 1)),
                         jnp.zeros((500, 2))])
  m = mc.mode_coverage(two, centers, std=toy.RING_STD)
  assert int(m.modes_covered) == 2
  np.testing.assert_allclose(float(m.high_quality_fraction), 0.8, rtol=1e-6)
  np.testing.assert_allclose(float(m.mode_kl), math.log(8 / 2), rtol=1e-6)
  # Nothing near a mode: no coverage, KL defined as log K.
  m = mc.mode_coverage(jnp.zeros((10, 2)), centers, std=toy.RING_STD)
  assert int(m.modes_covered) == 0 and float(m.high_quality_fraction) == 0.0
  np.testing.assert_allclose(float(m.mode_kl), math.log(8), rtol=1e-6)


def test_mode_kl_matches_numpy_on_an_unbalanced_histogram():
  centers = toy.grid_centers()
  rng = np.random.default_rng(0)
  counts = rng.integers(1, 40, size=25)
  counts[[2, 7]] = 0
  x = np.repeat(np.asarray(centers), counts, axis=0) + rng.normal(0, 0.01, (counts.sum(), 2))
  m = mc.mode_coverage(jnp.asarray(x, jnp.float32), centers, std=toy.GRID_STD)
  p = counts / counts.sum()
  expect = np.sum(p[p > 0] * np.log(p[p > 0] * 25))
  np.testing.assert_allclose(float(m.mode_kl), expect, rtol=1e-5)
  assert int(m.modes_covered) == 23
  assert np.asarray(m.counts).tolist() == counts.tolist()


def test_threshold_is_the_standardized_euclidean_distance():
  centers = jnp.zeros((1, 2))
  s = 0.01
  pts = jnp.array([[2.99 * s, 0.0], [3.01 * s, 0.0], [0.0, -2.99 * s],
                   [2.5 * s, 2.5 * s],  # each axis within 3σ, but 3.54σ away
                   [2.1 * s, 2.1 * s]])  # 2.97σ away
  _, dist = mc.nearest_mode(pts, centers, std=s)
  good = np.asarray(dist) <= 3.0
  assert good.tolist() == [True, False, True, False, True]
  # Per-axis σ: standardize each axis by its own σ.
  _, dist = mc.nearest_mode(jnp.array([[0.05, 0.0]]), centers, std=jnp.array([0.02, 1.0]))
  np.testing.assert_allclose(float(dist[0]), 2.5, rtol=1e-6)


def test_nearest_mode_matches_brute_force():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(300, 3)).astype(np.float32)
  c = rng.normal(size=(7, 3)).astype(np.float32)
  std = np.array([0.5, 1.0, 2.0], np.float32)
  idx, dist = jax.jit(lambda a, b: mc.nearest_mode(a, b, std=std))(x, c)
  d = np.linalg.norm((x[:, None] - c[None]) / std, axis=-1)
  np.testing.assert_array_equal(np.asarray(idx), d.argmin(1))
  np.testing.assert_allclose(np.asarray(dist), d.min(1), rtol=1e-5)


def test_mode_coverage_bad_inputs():
  c = toy.ring_centers(8)
  with pytest.raises(ValueError, match="samples"):
    mc.mode_coverage(jnp.zeros(5), c, std=0.01)
  with pytest.raises(ValueError, match="centers"):
    mc.mode_coverage(jnp.zeros((5, 3)), c, std=0.01)
  with pytest.raises(ValueError, match="std"):
    mc.mode_coverage(jnp.zeros((5, 2)), c, std=0.0)
  with pytest.raises(TypeError, match="samples"):
    mc.mode_coverage(jnp.zeros((5, 2), jnp.int32), c, std=0.01)
  with pytest.raises(ValueError, match="threshold"):
    mc.mode_coverage(jnp.zeros((5, 2)), c, std=0.01, threshold=-1.0)
  with pytest.raises(ValueError, match="dataset"):
    mc.toy_mode_coverage(jnp.zeros((5, 2)), "spiral")


# ---------------------------------------------------------------------------
# Classifier metrics.


def _random_cov(rng, f):
  a = rng.normal(size=(f, f))
  return a @ a.T / f + 0.1 * np.eye(f)


def test_frechet_distance_matches_sqrtm_formula():
  rng = np.random.default_rng(0)
  for f in (1, 3, 16):
    mu1, mu2 = rng.normal(size=f), rng.normal(size=f)
    c1, c2 = _random_cov(rng, f), _random_cov(rng, f)
    root = linalg.sqrtm(c1 @ c2).real
    expect = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * root)
    got = clf.frechet_distance(mu1, c1, mu2, c2)
    np.testing.assert_allclose(got, expect, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(got, clf.frechet_distance(mu2, c2, mu1, c1), rtol=1e-8)
    assert clf.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)
  # Commuting (diagonal) covariances: Σ (σ1 − σ2)² in closed form.
  s1, s2 = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 0.5])
  np.testing.assert_allclose(
      clf.frechet_distance(np.zeros(3), np.diag(s1**2), np.ones(3), np.diag(s2**2)),
      3.0 + np.sum((s1 - s2) ** 2), rtol=1e-10)
  # A singular covariance (rank 1) stays finite and non-negative.
  v = rng.normal(size=(4, 1))
  assert clf.frechet_distance(np.zeros(4), v @ v.T, np.zeros(4), np.eye(4)) >= 0.0


def test_frechet_distance_bad_shapes():
  with pytest.raises(ValueError, match="mu2"):
    clf.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="cov2"):
    clf.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
  with pytest.raises(ValueError, match="features"):
    clf.feature_statistics(np.zeros((1, 4)))


def test_feature_statistics_match_numpy():
  x = np.random.default_rng(3).normal(size=(50, 4))
  mu, cov = clf.feature_statistics(x)
  np.testing.assert_allclose(mu, x.mean(0))
  np.testing.assert_allclose(cov, np.cov(x.T))


def test_class_coverage_values():
  k = 10
  labels = np.array([0] * 500 + [1] * 300 + [2] * 195 + [3] * 5)
  probs = np.full((len(labels), k), 0.05 / (k - 1))
  probs[np.arange(len(labels)), labels] = 0.95
  out = clf.class_coverage(probs)
  p = np.array([0.5, 0.3, 0.195, 0.005])
  np.testing.assert_allclose(out["class_kl"], np.sum(p * np.log(p * k)), rtol=1e-10)
  # min_share 0.1: a class needs >= 1 % of the samples; class 3 has 0.5 %.
  assert out["classes_covered"] == 3
  assert clf.class_coverage(probs, min_share=0.0)["classes_covered"] == 4
  assert out["confident_fraction"] == 1.0
  np.testing.assert_allclose(sum(out["histogram"]), 1.0)
  uniform = clf.class_coverage(np.tile(np.eye(k), (7, 1)))
  assert uniform["classes_covered"] == k and uniform["class_kl"] == pytest.approx(0.0, abs=1e-12)
  with pytest.raises(ValueError, match="probs"):
    clf.class_coverage(np.zeros(10))
  with pytest.raises(ValueError, match="min_share"):
    clf.class_coverage(probs, min_share=2.0)


def test_classifier_trains_caches_and_recovers_from_a_damaged_cache(tmp_path):
  (xtr, ytr), (xte, yte) = load_digits("train"), load_digits("test")
  keep = np.random.default_rng(0).permutation(len(xtr))[:2000]  # the split is class-sorted
  xtr, ytr, xte = pixels.to_unit(xtr[keep]), ytr[keep], pixels.to_unit(xte)
  model = clf.load_or_train_classifier(xtr, ytr, xte, yte, cache_dir=str(tmp_path), steps=150)
  assert model.test_accuracy > 0.85, model.test_accuracy
  probs, feats = model.predict(xte)
  assert probs.shape == (500, 10) and feats.shape == (500, model.features)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  # Real held-out digits: every class, near-uniform histogram (50 per class).
  cov = clf.class_coverage(probs)
  assert cov["classes_covered"] == 10 and cov["class_kl"] < 0.05
  files = sorted(os.listdir(tmp_path))
  assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".msgpack")
  with open(tmp_path / files[0]) as f:
    assert json.load(f)["test_accuracy"] == model.test_accuracy
  # Second use: the cached weights, identical predictions.
  again = clf.load_or_train_classifier(xtr, ytr, xte, yte, cache_dir=str(tmp_path), steps=150)
  for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(model.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert again.test_accuracy == model.test_accuracy
  # Other data or recipe: another cache entry, never the stale one.
  short = clf.load_or_train_classifier(xtr, ytr, xte, yte, cache_dir=str(tmp_path), steps=5)
  assert short.test_accuracy != model.test_accuracy
  new = sorted(set(os.listdir(tmp_path)) - set(files))
  assert len(new) == 2
  # A damaged weights file is retrained over (the same deterministic weights).
  (tmp_path / new[1]).write_bytes(b"not msgpack")
  fixed = clf.load_or_train_classifier(xtr, ytr, xte, yte, cache_dir=str(tmp_path), steps=5)
  for a, b in zip(jax.tree.leaves(fixed.params), jax.tree.leaves(short.params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="images"):
    model.predict(np.zeros((2, 32, 32, 1), np.float32))
