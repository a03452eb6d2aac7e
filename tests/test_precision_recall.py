"""Tests for dgmjax.metrics.precision_recall against brute-force NumPy."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from dgmjax.metrics import precision_recall as pr


def np_radii(x, k):
  d = cdist(x, x)
  np.fill_diagonal(d, np.inf)
  return np.sort(d, axis=1)[:, k - 1]


def np_precision_recall(real, fake, k):
  d = cdist(fake, real)  # (M, N)
  precision = np.mean(np.any(d <= np_radii(real, k)[None, :], axis=1))
  recall = np.mean(np.any(d.T <= np_radii(fake, k)[None, :], axis=1))
  return precision, recall


def clusters(rng, n, *, dim=2, num=10, std=0.05, drop=()):
  """n points from ``num`` Gaussian clusters on a circle (scaled 10 apart)."""
  keep = [c for c in range(num) if c not in drop]
  angles = 2 * np.pi * np.arange(num) / num
  centres = np.zeros((num, dim))
  centres[:, 0], centres[:, 1] = np.cos(angles), np.sin(angles)
  labels = rng.choice(keep, size=n)
  return centres[labels] + std * rng.standard_normal((n, dim)), labels


@pytest.mark.parametrize("chunk_size", [7, 1000])
def test_radii_and_scores_match_brute_force(chunk_size):
  rng = np.random.default_rng(0)
  real = rng.standard_normal((60, 5))
  fake = 0.8 * rng.standard_normal((45, 5)) + 0.5
  for k in (1, 3, 5):
    np.testing.assert_allclose(
        pr.knn_radii(jnp.asarray(real, jnp.float32), k=k, chunk_size=chunk_size),
        np_radii(real, k), rtol=1e-5)
    got = pr.precision_recall(jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32),
                              k=k, chunk_size=chunk_size)
    want = np_precision_recall(real, fake, k)
    # Scores are fractions of 45 and 60: a single point on the wrong side
    # moves them by >= 1/60.
    assert float(got.precision) == pytest.approx(want[0], abs=1e-6)
    assert float(got.recall) == pytest.approx(want[1], abs=1e-6)


def test_knn_distances_sorted_and_exclude_self_by_index():
  x = np.array([[0.0], [0.0], [2.0], [5.0]], np.float32)  # a duplicate pair
  got = np.asarray(pr.knn_distances(jnp.asarray(x), k=3, chunk_size=3))
  d = cdist(x, x)
  np.fill_diagonal(d, np.inf)
  np.testing.assert_allclose(got, np.sort(d, 1)[:, :3], atol=1e-6)
  assert got[0, 0] == 0.0  # the duplicate is a neighbour at distance 0


def test_ball_counts_and_nearest_distances_match_brute_force():
  rng = np.random.default_rng(1)
  c = rng.standard_normal((30, 3))
  q = rng.standard_normal((41, 3))
  r = rng.uniform(0.2, 1.5, 30)
  got = pr.ball_counts(jnp.asarray(q, jnp.float32), jnp.asarray(c, jnp.float32),
                       jnp.asarray(r, jnp.float32), chunk_size=8)
  np.testing.assert_array_equal(got, np.sum(cdist(q, c) <= r[None], axis=1))
  near = pr.nearest_distances(jnp.asarray(q, jnp.float32), jnp.asarray(c, jnp.float32),
                              chunk_size=5)
  np.testing.assert_allclose(near, cdist(q, c).min(1), rtol=1e-5)


def test_exact_same_set_scores_one():
  x = jax.random.normal(jax.random.key(0), (300, 8))
  out = pr.precision_recall(x, x, chunk_size=64)
  assert float(out.precision) == 1.0 and float(out.recall) == 1.0


def test_independent_draws_score_near_one():
  # Two draws of one 2-D law: the 3-NN balls of 2000 points leave only thin
  # gaps and the low-density tails uncovered.
  rng = np.random.default_rng(2)
  a = jnp.asarray(clusters(rng, 2000)[0], jnp.float32)
  b = jnp.asarray(clusters(rng, 2000)[0], jnp.float32)
  out = pr.precision_recall(a, b)
  assert float(out.precision) > 0.93 and float(out.recall) > 0.93
  # Symmetric roles: swapping the sets swaps the two scores.
  swapped = pr.precision_recall(b, a)
  assert float(swapped.precision) == pytest.approx(float(out.recall), abs=1e-7)
  assert float(swapped.recall) == pytest.approx(float(out.precision), abs=1e-7)


def test_dropping_one_of_ten_clusters_costs_a_tenth_of_recall_only():
  rng = np.random.default_rng(3)
  real, _ = clusters(rng, 3000)
  full, _ = clusters(rng, 3000)
  dropped, labels = clusters(rng, 3000, drop=(4,))
  assert 4 not in labels
  real, full, dropped = (jnp.asarray(a, jnp.float32) for a in (real, full, dropped))
  a = pr.precision_recall(real, full)
  b = pr.precision_recall(real, dropped)
  # The reals of cluster 4 (1/10 of them, binomial sd 0.0055) lose their
  # fake balls; every other real keeps the same chance of being covered.
  assert float(a.recall) - float(b.recall) == pytest.approx(0.1 * float(a.recall), abs=0.025)
  assert float(b.precision) == pytest.approx(float(a.precision), abs=0.02)


def test_noise_fakes_have_precision_near_zero():
  rng = np.random.default_rng(4)
  real = jnp.asarray(clusters(rng, 2000, dim=4)[0], jnp.float32)
  noise = jnp.asarray(rng.uniform(-3, 3, (2000, 4)), jnp.float32)
  out = pr.precision_recall(real, noise)
  # The balls cover ten blobs of radius ~0.15 in a box of volume 6⁴.
  assert float(out.precision) < 0.01
  # The noise balls are wide (sparse points), so reals do land in them.
  assert float(out.recall) > 0.5


def test_bad_inputs_raise_naming_the_argument():
  x = jnp.zeros((10, 3))
  with pytest.raises(ValueError, match="fake"):
    pr.precision_recall(x, jnp.zeros((10, 4)))
  with pytest.raises(ValueError, match="real must have rank 2"):
    pr.precision_recall(jnp.zeros((10,)), x)
  with pytest.raises(TypeError, match="real must have a floating"):
    pr.precision_recall(jnp.zeros((10, 3), jnp.int32), x)
  with pytest.raises(ValueError, match="k must be <="):
    pr.precision_recall(x[:3], x, k=3)
  with pytest.raises(ValueError, match="radii"):
    pr.ball_counts(x, x, jnp.ones(3))


@pytest.mark.slow
def test_peak_memory_of_10k_by_10k_metrics_is_under_2_gib():
  script = textwrap.dedent("""
      import resource, jax, jax.numpy as jnp
      from dgmjax.metrics import precision_recall, density_coverage
      k1, k2 = jax.random.split(jax.random.key(0))
      real = jax.random.normal(k1, (10_000, 64))
      fake = jax.random.normal(k2, (10_000, 64))
      p = precision_recall.precision_recall(real, fake)
      d = density_coverage.density_coverage(real, fake)
      print(float(p.precision), float(p.recall), float(d.density), float(d.coverage))
      print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
  """)
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1", XLA_FLAGS="")
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=env, check=True, timeout=900).stdout.split()
  peak_kib = int(out[-1])
  assert peak_kib < 2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
  # Same law in 64-D: density is 1 in expectation, coverage ≈ 1 − 2⁻⁵.
  assert float(out[2]) == pytest.approx(1.0, abs=0.1)
  assert float(out[3]) == pytest.approx(0.969, abs=0.03)
