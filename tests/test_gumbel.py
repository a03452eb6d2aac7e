"""Tests for dgmjax.losses.gumbel: the maths, checked against NumPy/SciPy.

Inputs come from NumPy generators and the library calls are jitted once per
shape: eager JAX compiles every primitive (and the threefry sampler) per
shape, which would dominate the run time on CPU.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp as np_logsumexp
from scipy.special import softmax as np_softmax

from dgmjax.losses import gumbel
from dgmjax.losses.gumbel import (
    categorical_kl,
    categorical_kl_uniform,
    concrete_log_prob,
    exp_concrete_log_prob,
    gumbel_max_sample,
    gumbel_noise,
    gumbel_softmax_log_sample,
    gumbel_softmax_sample,
    straight_through_argmax,
    straight_through_categorical,
)

EULER_GAMMA = 0.5772156649015329
KEY = jax.random.key(0)
EXTREME_LOGITS = np.array(
    [[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [0.0, 0.0, 0.0]], np.float32
)

noise_j = jax.jit(gumbel_noise, static_argnums=(1, 2))
max_sample_j = jax.jit(gumbel_max_sample, static_argnames="axis")
log_sample_j = jax.jit(gumbel_softmax_log_sample, static_argnames="axis")
sample_j = jax.jit(gumbel_softmax_sample, static_argnames=("hard", "axis"))
st_argmax_j = jax.jit(straight_through_argmax, static_argnames="axis")
st_categorical_j = jax.jit(straight_through_categorical, static_argnames="axis")
exp_concrete_j = jax.jit(exp_concrete_log_prob, static_argnames="axis")
concrete_j = jax.jit(concrete_log_prob, static_argnames="axis")
kl_uniform_j = jax.jit(categorical_kl_uniform, static_argnames="axis")
kl_j = jax.jit(categorical_kl, static_argnames="axis")


def _normal(seed, shape, scale=1.0):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(
      np.float32
  )


def _all_finite(*arrays):
  return all(bool(np.all(np.isfinite(np.asarray(a)))) for a in arrays)


# ---------------------------------------------------------------------------
# Independent NumPy references (float64).


def np_concrete_log_prob(x, logits, tau):
  """Jang et al. eq. (3): density of x on the simplex, w.r.t. dx_(1:K-1)."""
  k = x.shape[-1]
  log_pi = logits - np_logsumexp(logits, axis=-1, keepdims=True)
  log_x = np.log(x)
  return (
      math.lgamma(k)
      + (k - 1) * np.log(tau)
      - k * np_logsumexp(log_pi - tau * log_x, axis=-1)
      + np.sum(log_pi - (tau + 1) * log_x, axis=-1)
  )


def np_exp_concrete_log_prob(y, logits, tau):
  """Change of variables to the log-ratios r = y_(1:K-1) - y_K: dr = dx/prod x."""
  return np_concrete_log_prob(np.exp(y), logits, tau) + np.sum(y, axis=-1)


def np_kl(logits_q, logits_p):
  q = np_softmax(logits_q, axis=-1)
  return np.sum(
      q * (np.log(q) - np.log(np_softmax(logits_p, axis=-1))), axis=-1
  )


def _log_ratio_to_y(r):
  """(..., K-1) log-ratios against the last class -> normalised log-simplex y."""
  full = np.concatenate([r, np.zeros(r.shape[:-1] + (1,))], axis=-1)
  return full - np_logsumexp(full, axis=-1, keepdims=True)


def _one_hot(indices, k):
  return np.eye(k, dtype=np.float32)[np.asarray(indices)]


# ---------------------------------------------------------------------------
# Gumbel noise.


def test_gumbel_noise_moments_match_gumbel_distribution():
  n = 2**20
  g = np.asarray(noise_j(jax.random.key(1), (n,)), np.float64)
  var = np.pi**2 / 6
  # Standard errors: sd/sqrt(n) for the mean; sqrt((mu4 - var^2)/n) for the
  # variance, with the Gumbel fourth central moment mu4 = 5.4 var^2.
  assert abs(g.mean() - EULER_GAMMA) < 5 * math.sqrt(var / n)
  assert abs(g.var() - var) < 5 * math.sqrt(4.4 * var**2 / n)
  # And the whole distribution, not only two moments.
  assert stats.kstest(g[:20000], stats.gumbel_r.cdf).pvalue > 1e-3


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
def test_gumbel_from_uniform_is_finite_at_extreme_uniforms(dtype):
  finfo = jnp.finfo(dtype)
  u = jnp.array([0.0, finfo.tiny, 0.5, 1.0 - finfo.epsneg, 1.0], dtype)
  g = gumbel._gumbel_from_uniform(u)
  assert g.dtype == dtype
  g = np.asarray(g, np.float64)
  assert _all_finite(g)
  # u = 0 and u = 1 are clipped to the extreme representable uniforms.
  assert g[0] == g[1] and g[-1] == g[-2]
  np.testing.assert_allclose(g[2], -np.log(np.log(2.0)), rtol=1e-2)
  assert np.all(np.diff(g) >= 0)


def test_gumbel_noise_finite_at_large_sample_count():
  # 2^22 float32 draws: an unclipped -log(-log u) would hit u = 0 (raw
  # uniform probability 2^-23 per draw) with probability ~40% here.
  g = np.asarray(noise_j(jax.random.key(2), (2**22,)))
  assert _all_finite(g)
  tiny = np.finfo(np.float32).tiny
  assert g.min() >= -np.log(-np.log(tiny)) - 1e-4
  for dtype in (jnp.float16, jnp.bfloat16):
    g = noise_j(KEY, (2**16,), dtype)
    assert g.dtype == dtype and _all_finite(g.astype(jnp.float32))


def test_gumbel_noise_rejects_integer_dtype():
  with pytest.raises(TypeError, match="dtype"):
    gumbel_noise(KEY, (3,), jnp.int32)


# ---------------------------------------------------------------------------
# Gumbel-max.


def test_gumbel_max_frequencies_match_softmax_chi_square():
  logits = np.array([1.0, 0.0, -0.5, 0.3, -1.2, 0.8], np.float32)
  n = 200_000
  batch = np.broadcast_to(logits, (n, logits.size))
  samples = np.asarray(max_sample_j(jax.random.key(3), batch))
  counts = np.bincount(samples, minlength=logits.size)
  p = np_softmax(logits.astype(np.float64))
  assert stats.chisquare(counts, n * p).pvalue > 1e-3
  # Power: a 5% error in the temperature must be rejected with the same n
  # (non-centrality 162, so a miss has probability ~1e-12).
  wrong = np_softmax(1.05 * logits.astype(np.float64))
  assert stats.chisquare(counts, n * wrong).pvalue < 1e-6


def test_gumbel_max_axis_and_deterministic_when_gap_exceeds_noise_range():
  # float32 Gumbel noise lies in [-4.47, 15.95], so a logit gap of 30 makes
  # the sample deterministic.
  winners = np.array([2, 0, 1, 2])
  logits = 30.0 * _one_hot(winners, 3)  # (4, 3)
  np.testing.assert_array_equal(max_sample_j(KEY, logits), winners)
  np.testing.assert_array_equal(max_sample_j(KEY, logits.T, axis=0), winners)
  assert max_sample_j(KEY, logits).dtype == jnp.int32
  np.testing.assert_array_equal(max_sample_j(KEY, EXTREME_LOGITS)[:2], [0, 2])


def test_gumbel_max_vmap_over_keys():
  logits = _normal(0, (2, 3))
  keys = jax.random.split(KEY, 4)
  vmapped = jax.jit(jax.vmap(lambda k: gumbel_max_sample(k, logits)))(keys)
  for i in range(4):
    np.testing.assert_array_equal(vmapped[i], max_sample_j(keys[i], logits))


# ---------------------------------------------------------------------------
# Gumbel-softmax relaxation.


def test_relaxed_sample_tends_to_the_gumbel_max_one_hot_as_tau_to_zero():
  logits = _normal(4, (2000, 5))
  key = jax.random.key(5)
  y = np.asarray(sample_j(key, logits, temperature=1e-3))
  # Same key, same noise: the relaxed sample's argmax is the Gumbel-max draw.
  np.testing.assert_array_equal(y.argmax(-1), max_sample_j(key, logits))
  assert y.max(-1).mean() > 0.99
  np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def test_relaxed_sample_tends_to_uniform_as_tau_to_infinity():
  logits = _normal(6, (2000, 5))
  y = sample_j(jax.random.key(7), logits, temperature=1e4)
  np.testing.assert_allclose(y, 0.2, atol=1e-2)


def test_log_sample_is_log_of_relaxed_sample_and_matches_definition():
  logits = _normal(8, (2000, 5))
  y = np.asarray(log_sample_j(KEY, logits, temperature=0.5))
  np.testing.assert_allclose(np_logsumexp(y, axis=-1), 0.0, atol=1e-5)
  x = sample_j(KEY, logits, temperature=0.5)
  np.testing.assert_allclose(np.exp(y), x, rtol=1e-5, atol=1e-30)
  # The definition, with the same noise: log_softmax((logits + g) / tau).
  g = np.asarray(noise_j(KEY, logits.shape), np.float64)
  ref = (logits.astype(np.float64) + g) / 0.5
  ref = ref - np_logsumexp(ref, axis=-1, keepdims=True)
  np.testing.assert_allclose(y, ref, atol=1e-4)
  # Classes on axis 0.
  y0 = log_sample_j(KEY, logits.T, temperature=0.5, axis=0)
  g0 = np.asarray(noise_j(KEY, logits.T.shape), np.float64)
  ref0 = (logits.T.astype(np.float64) + g0) / 0.5
  ref0 = ref0 - np_logsumexp(ref0, axis=0, keepdims=True)
  np.testing.assert_allclose(y0, ref0, atol=1e-4)


def test_log_sample_finite_with_finite_grads_at_tiny_temperature():
  weights = np.arange(3.0, dtype=np.float32)

  @jax.jit
  def value_and_grads(logits, tau):
    def loss(logits, tau):
      y = gumbel_softmax_log_sample(KEY, logits, temperature=tau)
      return jnp.sum(y * weights)

    return jax.value_and_grad(loss, argnums=(0, 1))(logits, tau)

  for logits in (EXTREME_LOGITS, np.zeros((3, 3), np.float32)):
    value, (g_logits, g_tau) = value_and_grads(logits, 1e-3)
    assert _all_finite(value, g_logits, g_tau)
  x = np.asarray(sample_j(KEY, EXTREME_LOGITS, temperature=1e-3))
  np.testing.assert_allclose(x.sum(-1), 1.0, atol=1e-6)
  assert _all_finite(x)


def test_hard_straight_through_forward_is_exact_one_hot():
  logits = _normal(9, (2000, 5))
  for tau in (0.1, 1.0, 5.0):
    hard = np.asarray(sample_j(KEY, logits, temperature=tau, hard=True))
    soft = np.asarray(sample_j(KEY, logits, temperature=tau))
    # Exactly equal, not just close: values in {0, 1} and sums exactly 1.
    np.testing.assert_array_equal(hard, _one_hot(soft.argmax(-1), 5))
    np.testing.assert_array_equal(hard.sum(-1), 1.0)
  hard0 = sample_j(KEY, logits.T, temperature=1.0, hard=True, axis=0)
  np.testing.assert_array_equal(np.asarray(hard0).sum(0), 1.0)


def test_hard_straight_through_gradient_is_the_soft_gradient():
  logits = _normal(10, (8, 5))
  w = _normal(11, (8, 5))
  key = jax.random.key(12)

  def sample(logits, hard):
    return gumbel_softmax_sample(key, logits, temperature=0.7, hard=hard)

  def f(y):
    return jnp.sum(jnp.sin(w * y) + y**2)

  @jax.jit
  def gradients(logits):
    g_hard = jax.grad(lambda z: jnp.sum(w * sample(z, True)))(logits)
    g_soft = jax.grad(lambda z: jnp.sum(w * sample(z, False)))(logits)
    # Nonlinear loss f: the ST gradient is the soft sample's VJP applied to
    # grad f evaluated at the hard (forward) value.
    g_st = jax.grad(lambda z: f(sample(z, True)))(logits)
    _, vjp = jax.vjp(lambda z: sample(z, False), logits)
    (expected,) = vjp(jax.grad(f)(sample(logits, True)))
    return g_hard, g_soft, g_st, expected

  g_hard, g_soft, g_st, expected = gradients(logits)
  # Linear downstream loss: the two gradients are identical.
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g_st, expected, rtol=1e-5, atol=1e-7)
  assert np.abs(np.asarray(g_st)).max() > 1e-3  # not trivially zero


def test_gumbel_softmax_vmap_with_traced_temperature():
  logits = _normal(14, (3, 4))
  keys = jax.random.split(KEY, 4)
  taus = np.array([0.1, 0.5, 1.0, 2.0], np.float32)
  out = jax.jit(
      jax.vmap(lambda k, t: gumbel_softmax_log_sample(k, logits, temperature=t))
  )(keys, taus)
  for i in range(4):
    np.testing.assert_allclose(
        out[i], log_sample_j(keys[i], logits, temperature=taus[i]),
        rtol=1e-5, atol=1e-6,
    )


# ---------------------------------------------------------------------------
# Straight-through estimators without relaxation.


def test_straight_through_argmax_forward_and_softmax_jacobian():
  logits = _normal(15, (8, 5))
  w = _normal(16, (8, 5))
  y = np.asarray(st_argmax_j(logits))
  np.testing.assert_array_equal(y, _one_hot(logits.argmax(-1), 5))
  grad = jax.jit(jax.grad(lambda z: jnp.sum(w * straight_through_argmax(z))))(
      logits
  )
  # Closed form of J_softmax^T w: p * (w - <p, w>).
  p = np_softmax(logits.astype(np.float64), axis=-1)
  closed = p * (w - np.sum(p * w, -1, keepdims=True))
  np.testing.assert_allclose(grad, closed, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(
      jax.jit(jax.vmap(straight_through_argmax, in_axes=1, out_axes=1))(logits.T),
      st_argmax_j(logits.T, axis=0),
  )
  # Extremes: one-hot forward, finite gradient.
  np.testing.assert_array_equal(
      st_argmax_j(EXTREME_LOGITS)[:2], [[1, 0, 0], [0, 0, 1]]
  )
  g = jax.jit(jax.grad(lambda z: jnp.sum(straight_through_argmax(z) * z)))(
      EXTREME_LOGITS
  )
  assert _all_finite(g)


def test_straight_through_categorical_forward_is_gumbel_max_backward_softmax():
  logits = _normal(17, (8, 5))
  w = _normal(19, (8, 5))
  key = jax.random.key(18)
  y = st_categorical_j(key, logits)
  np.testing.assert_array_equal(y, _one_hot(max_sample_j(key, logits), 5))
  grad = jax.jit(
      jax.grad(lambda z: jnp.sum(w * straight_through_categorical(key, z)))
  )(logits)
  p = np_softmax(logits.astype(np.float64), axis=-1)
  closed = p * (w - np.sum(p * w, -1, keepdims=True))
  np.testing.assert_allclose(grad, closed, rtol=1e-4, atol=1e-6)
  g = jax.jit(jax.grad(lambda z: jnp.sum(straight_through_categorical(key, z) * z)))(
      EXTREME_LOGITS
  )
  assert _all_finite(g)
  np.testing.assert_array_equal(
      st_categorical_j(key, 30.0 * _one_hot([2, 0, 1], 3).T, axis=0),
      _one_hot([2, 0, 1], 3).T,
  )


# ---------------------------------------------------------------------------
# ExpConcrete / Concrete densities.


@pytest.mark.parametrize(
    "logits,tau", [([0.3, -0.8], 0.7), ([2.0, 0.0], 0.25), ([0.0, 0.0], 3.0)]
)
def test_exp_concrete_k2_integrates_to_one_over_log_ratio(logits, tau):
  logits = np.array(logits, np.float32)

  def density(r):
    y = _log_ratio_to_y(np.array([r])).astype(np.float32)
    return float(np.exp(exp_concrete_j(y, logits, temperature=tau)))

  total, _ = integrate.quad(
      density, -np.inf, np.inf, limit=200, epsabs=1e-6, epsrel=1e-6
  )
  np.testing.assert_allclose(total, 1.0, atol=1e-4)


def test_exp_concrete_k3_integrates_to_one_on_log_ratio_grid():
  logits = np.array([0.5, -1.0, 0.2], np.float32)
  tau = 0.8
  step = 0.1
  r = np.arange(-60.0, 60.0 + step / 2, step)
  r1, r2 = np.meshgrid(r, r, indexing="ij")
  y = _log_ratio_to_y(np.stack([r1, r2], -1)).astype(np.float32)
  density = np.exp(
      np.asarray(
          exp_concrete_j(y, np.broadcast_to(logits, y.shape), temperature=tau),
          np.float64,
      )
  )
  total = integrate.trapezoid(integrate.trapezoid(density, r, axis=1), r)
  np.testing.assert_allclose(total, 1.0, atol=1e-3)


@pytest.mark.parametrize("k", [3, 5])
def test_exp_concrete_and_concrete_match_numpy_reference(k):
  logits = _normal(20 + k, (64, k), scale=2.0)
  tau = 0.6
  y = log_sample_j(jax.random.key(30 + k), logits, temperature=tau)
  ours = exp_concrete_j(y, logits, temperature=tau)
  assert ours.shape == (64,)
  y64, l64 = np.asarray(y, np.float64), logits.astype(np.float64)
  np.testing.assert_allclose(
      ours, np_exp_concrete_log_prob(y64, l64, tau), rtol=1e-4, atol=1e-3
  )
  x = np.exp(y64)
  np.testing.assert_allclose(
      concrete_j(x.astype(np.float32), logits, temperature=tau),
      np_concrete_log_prob(x, l64, tau),
      rtol=1e-4,
      atol=1e-3,
  )


def test_exp_concrete_importance_weights_average_to_one_and_recover_class_probs():
  # y ~ ExpConcrete(logits_q, tau_q) drawn by the sampler; the weights
  # w = p(y)/q(y) for another ExpConcrete p must average to 1, and the
  # weighted frequency of argmax y = k must be P_p(argmax = k) = softmax_k.
  n = 100_000
  logits_q = np.broadcast_to(np.array([0.5, -0.3, 0.1], np.float32), (n, 3))
  logits_p = np.broadcast_to(np.array([-0.4, 0.6, 0.0], np.float32), (n, 3))
  tau_q, tau_p = 0.7, 1.2
  y = log_sample_j(jax.random.key(40), logits_q, temperature=tau_q)
  log_w = np.asarray(
      exp_concrete_j(y, logits_p, temperature=tau_p), np.float64
  ) - np.asarray(exp_concrete_j(y, logits_q, temperature=tau_q), np.float64)
  w = np.exp(log_w)
  se = w.std() / math.sqrt(n)
  assert abs(w.mean() - 1.0) < 5 * se
  assert se < 0.02  # the check has teeth
  winners = np.asarray(y).argmax(-1)
  target = np_softmax(logits_p[0].astype(np.float64))
  for k in range(3):
    wk = w * (winners == k)
    assert abs(wk.mean() - target[k]) < 5 * wk.std() / math.sqrt(n)


def test_concrete_k2_samples_match_density_ks():
  logits = np.array([0.4, -0.3], np.float32)
  tau = 0.5
  n = 20_000
  y = np.asarray(
      log_sample_j(
          jax.random.key(41), np.broadcast_to(logits, (n, 2)), temperature=tau
      ),
      np.float64,
  )
  r_samples = y[:, 0] - y[:, 1]
  grid = np.linspace(-100.0, 100.0, 40_001)
  grid_y = _log_ratio_to_y(grid[:, None]).astype(np.float32)

  def cdf_for(temperature):
    log_density = exp_concrete_j(
        grid_y, np.broadcast_to(logits, grid_y.shape), temperature=temperature
    )
    density = np.exp(np.asarray(log_density, np.float64))
    cdf = integrate.cumulative_trapezoid(density, grid, initial=0.0)
    return lambda r: np.interp(r, grid, cdf)

  assert stats.kstest(r_samples, cdf_for(tau)).pvalue > 1e-3
  # Power: the density at a 20% wrong temperature is rejected.
  assert stats.kstest(r_samples, cdf_for(1.2 * tau)).pvalue < 1e-6


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_concrete_k2_integrates_to_one_over_the_simplex(tau):
  logits = np.array([0.7, -0.2], np.float32)
  # Substitute x_1 = sigmoid(r): dx_1 = x_1 x_2 dr. The grid in r reaches
  # x_k ~ 1e-35 at both ends of (0, 1), where p(x) ~ x^(tau - 1) is singular
  # for tau < 1; x_2 = sigmoid(-r) avoids the cancellation in 1 - x_1.
  r = np.linspace(-80.0, 80.0, 160_001)
  x = np.stack([1 / (1 + np.exp(-r)), 1 / (1 + np.exp(r))], -1)
  log_p = np.asarray(
      concrete_j(x.astype(np.float32), np.broadcast_to(logits, x.shape),
                 temperature=tau),
      np.float64,
  )
  assert _all_finite(log_p)
  integrand = np.exp(log_p + np.log(x).sum(-1))
  np.testing.assert_allclose(integrate.simpson(integrand, x=r), 1.0, atol=1e-4)


def test_exp_concrete_invariances_grads_and_extremes():
  logits = _normal(42, (5, 4))
  tau = 0.8
  y = np.asarray(log_sample_j(jax.random.key(43), logits, temperature=tau))
  base = np.asarray(exp_concrete_j(y, logits, temperature=tau))
  # A function of the log-ratios only, and of normalised logits only.
  np.testing.assert_allclose(
      exp_concrete_j(y + 3.0, logits - 2.0, temperature=tau),
      base, rtol=1e-4, atol=1e-4,
  )
  np.testing.assert_allclose(
      exp_concrete_j(y.T, logits.T, temperature=tau, axis=0), base, rtol=1e-5
  )
  np.testing.assert_allclose(
      jax.jit(jax.vmap(lambda a, b: exp_concrete_log_prob(a, b, temperature=tau)))(
          y, logits
      ),
      base,
      rtol=1e-5,
  )
  # Gradients against the closed form, with z = logits - tau y, s = softmax(z):
  # d/dlogits = 1 - K s;  d/dtau = (K-1)/tau - sum y + K <s, y>.
  g_logits, g_tau = jax.jit(
      jax.grad(
          lambda z, t: jnp.sum(exp_concrete_log_prob(y, z, temperature=t)),
          argnums=(0, 1),
      )
  )(logits, np.float32(tau))
  z = logits.astype(np.float64) - tau * y.astype(np.float64)
  s = np_softmax(z, axis=-1)
  np.testing.assert_allclose(g_logits, 1.0 - 4 * s, rtol=1e-4, atol=1e-5)
  closed_tau = np.sum(3 / tau - y.sum(-1) + 4 * np.sum(s * y, -1))
  np.testing.assert_allclose(g_tau, closed_tau, rtol=1e-4)
  # Extremes: tiny temperature and huge logits stay finite, with gradients.
  y_ext = log_sample_j(KEY, EXTREME_LOGITS, temperature=1e-3)
  value, grads = jax.jit(
      jax.value_and_grad(
          lambda z, t: jnp.sum(exp_concrete_log_prob(y_ext, z, temperature=t)),
          argnums=(0, 1),
      )
  )(EXTREME_LOGITS, np.float32(1e-3))
  assert _all_finite(value, *grads)


# ---------------------------------------------------------------------------
# KL terms.


def test_categorical_kl_uniform_matches_numpy_grad_and_identities():
  logits = _normal(50, (32, 10), scale=3.0)
  kl = np.asarray(kl_uniform_j(logits))
  assert kl.shape == (32,)
  q = np_softmax(logits.astype(np.float64), axis=-1)
  neg_entropy = np.sum(q * np.log(q), -1)
  np.testing.assert_allclose(kl, np.log(10) + neg_entropy, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      kl, kl_j(logits, np.zeros_like(logits)), rtol=1e-5, atol=1e-6
  )
  assert np.all(kl >= -1e-6) and np.all(kl <= np.log(10) + 1e-6)
  np.testing.assert_allclose(
      kl_uniform_j(np.ones((32, 10), np.float32)), 0.0, atol=1e-6
  )
  np.testing.assert_allclose(kl_uniform_j(logits.T, axis=0), kl, rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(jax.vmap(categorical_kl_uniform))(logits), kl, rtol=1e-5
  )
  # Gradient: d KL / d logits = q * (log q - <q, log q>).
  grad = jax.jit(jax.grad(lambda z: jnp.sum(categorical_kl_uniform(z))))(logits)
  closed = q * (np.log(q) - neg_entropy[:, None])
  np.testing.assert_allclose(grad, closed, rtol=1e-4, atol=1e-6)
  # Extremes: one-hot q gives log K, with a finite gradient.
  np.testing.assert_allclose(
      kl_uniform_j(EXTREME_LOGITS), [np.log(3), np.log(3), 0.0], atol=1e-6
  )
  g = jax.jit(jax.grad(lambda z: jnp.sum(categorical_kl_uniform(z))))(
      EXTREME_LOGITS
  )
  assert _all_finite(g)


def test_categorical_kl_matches_numpy_grads_and_extremes():
  lq = _normal(52, (16, 5), scale=2.0)
  lp = _normal(53, (16, 5), scale=2.0)
  kl = np.asarray(kl_j(lq, lp))
  np.testing.assert_allclose(
      kl, np_kl(lq.astype(np.float64), lp.astype(np.float64)),
      rtol=1e-5, atol=1e-6,
  )
  assert np.all(kl >= -1e-6)
  np.testing.assert_allclose(kl_j(lq, lq + 5.0), 0.0, atol=1e-5)
  np.testing.assert_allclose(kl_j(lq.T, lp.T, axis=0), kl, rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(jax.vmap(categorical_kl))(lq, lp), kl, rtol=1e-5
  )
  # Gradients against the closed forms:
  # d/dlogits_q = q * (log q - log p - KL);  d/dlogits_p = p - q.
  grad_fn = jax.jit(
      jax.grad(lambda a, b: jnp.sum(categorical_kl(a, b)), argnums=(0, 1))
  )
  g_q, g_p = grad_fn(lq, lp)
  q = np_softmax(lq.astype(np.float64), axis=-1)
  p = np_softmax(lp.astype(np.float64), axis=-1)
  ref_kl = np_kl(lq.astype(np.float64), lp.astype(np.float64))
  np.testing.assert_allclose(
      g_q, q * (np.log(q) - np.log(p) - ref_kl[:, None]), rtol=1e-4, atol=1e-5
  )
  np.testing.assert_allclose(g_p, p - q, rtol=1e-4, atol=1e-6)
  ext_p = EXTREME_LOGITS[[1, 0, 2]]
  # Row 0: q = one-hot(0) and log p_0 = -2e4; row 1: q = one-hot(2) and
  # log p_2 = -1e4; row 2: uniform against uniform.
  np.testing.assert_allclose(
      kl_j(EXTREME_LOGITS, ext_p), [2e4, 1e4, 0.0], rtol=1e-6, atol=1e-6
  )
  assert _all_finite(*grad_fn(EXTREME_LOGITS, ext_p))


# ---------------------------------------------------------------------------
# Masked (-inf) and far-apart logits in the KL terms (issue 18).


def np_masked_kl(logits_q, logits_p):
  """float64 KL with rel_entr: 0 log 0 = 0, q > 0 = p gives +inf."""
  from scipy.special import rel_entr

  q = np_softmax(np.asarray(logits_q, np.float64), axis=-1)
  p = np_softmax(np.asarray(logits_p, np.float64), axis=-1)
  return np.sum(rel_entr(q, p), axis=-1), q, p


NEG_INF = -np.inf
MASKED_Q = np.array(
    [[0.0, 0.0, NEG_INF], [3e38, -3e38, 0.0], [1e4, -1e4, 0.0],
     [NEG_INF, 1.0, 2.0], [0.5, -1.0, 2.0]], np.float32)
MASKED_P = np.array(
    [[0.0, 1.0, NEG_INF], [1.0, 2.0, NEG_INF], [0.0, NEG_INF, 1.0],
     [NEG_INF, 0.0, -2.0], [-3e38, 3e38, -3e38]], np.float32)


def test_categorical_kl_uniform_masked_and_far_apart_logits():
  kl = np.asarray(kl_uniform_j(MASKED_Q))
  want, q, _ = np_masked_kl(MASKED_Q, np.zeros_like(MASKED_Q))
  # The values of issue 18: log 3 - log 2 and log 3.
  np.testing.assert_allclose(kl[:2], [math.log(1.5), math.log(3.0)], rtol=1e-6)
  np.testing.assert_allclose(kl, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(categorical_kl_uniform(MASKED_Q), kl, rtol=1e-6)
  grad = np.asarray(jax.jit(jax.grad(
      lambda z: jnp.sum(categorical_kl_uniform(z))))(MASKED_Q))
  assert _all_finite(grad)
  # d KL / d logits = q (log q - <q, log q>), 0 on classes without mass.
  from scipy.special import xlogy

  neg_h = np.sum(xlogy(q, q), -1, keepdims=True)
  closed = np.where(q > 0, q * (np.log(np.where(q > 0, q, 1.0)) - neg_h), 0.0)
  np.testing.assert_allclose(grad, closed, rtol=1e-4, atol=1e-6)


def test_categorical_kl_masked_logits_finite_where_the_kl_is():
  kl = np.asarray(kl_j(MASKED_Q[:4], MASKED_P[:4]))
  want, q, p = np_masked_kl(MASKED_Q[:4], MASKED_P[:4])
  assert np.all(np.isfinite(want))  # q never uses a class that p masks
  np.testing.assert_allclose(kl[2], 1.313262, rtol=1e-6)  # log(1 + e)
  np.testing.assert_allclose(kl, want, rtol=1e-5, atol=1e-6)
  grad_fn = jax.jit(
      jax.grad(lambda a, b: jnp.sum(categorical_kl(a, b)), argnums=(0, 1)))
  g_q, g_p = (np.asarray(g) for g in grad_fn(MASKED_Q[:4], MASKED_P[:4]))
  assert _all_finite(g_q, g_p)
  with np.errstate(divide="ignore", invalid="ignore"):
    closed_q = np.where(
        q > 0, q * (np.log(q) - np.log(p) - want[:, None]), 0.0)
  np.testing.assert_allclose(g_q, closed_q, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(g_p, p - q, rtol=1e-4, atol=1e-6)


def test_categorical_kl_is_inf_where_q_uses_a_class_p_masks():
  # Row 4: p is one-hot on class 1 (p_0 and p_2 underflow to 0 in float32
  # and float64 alike) while q has mass everywhere.
  lq = np.array([[0.0, 0.0, 0.0], MASKED_Q[4]], np.float32)
  lp = np.array([[0.0, 0.0, NEG_INF], MASKED_P[4]], np.float32)
  want, _, _ = np_masked_kl(lq, lp)
  np.testing.assert_array_equal(want, [np.inf, np.inf])
  np.testing.assert_array_equal(kl_j(lq, lp), [np.inf, np.inf])
  np.testing.assert_array_equal(categorical_kl(lq, lp), [np.inf, np.inf])


def test_relaxed_samples_ignore_masked_classes_with_finite_gradients():
  logits = np.array([[0.0, NEG_INF, 1.0], [NEG_INF, 2.0, -1.0]], np.float32)
  w = jnp.array([1.0, 2.0, 3.0])
  for hard in (False, True):
    y = np.asarray(sample_j(KEY, logits, temperature=0.5, hard=hard))
    np.testing.assert_array_equal(y[np.isneginf(logits)], 0.0)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)
    grad = jax.jit(jax.grad(lambda z, h=hard: jnp.sum(
        gumbel_softmax_sample(KEY, z, temperature=0.5, hard=h) @ w)))(logits)
    assert _all_finite(grad)


# ---------------------------------------------------------------------------
# Eager mode and bad input.


def test_eager_calls_equal_jitted_calls():
  logits = _normal(60, (4, 3))
  y = np.asarray(log_sample_j(KEY, logits, temperature=0.5))
  pairs = [
      (gumbel_max_sample(KEY, logits), max_sample_j(KEY, logits)),
      (
          gumbel_softmax_sample(KEY, logits, temperature=0.5, hard=True),
          sample_j(KEY, logits, temperature=0.5, hard=True),
      ),
      (straight_through_categorical(KEY, logits),
       st_categorical_j(KEY, logits)),
      (exp_concrete_log_prob(y, logits, temperature=0.5),
       exp_concrete_j(y, logits, temperature=0.5)),
      (categorical_kl_uniform(logits), kl_uniform_j(logits)),
  ]
  for eager, jitted in pairs:
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_clear_errors():
  logits = np.zeros((4, 3), np.float32)
  y = np.zeros((4, 3), np.float32)
  for tau in (0.0, -1.0):
    with pytest.raises(ValueError, match="temperature"):
      gumbel_softmax_sample(KEY, logits, temperature=tau)
    with pytest.raises(ValueError, match="temperature"):
      gumbel_softmax_log_sample(KEY, logits, temperature=tau)
    with pytest.raises(ValueError, match="temperature"):
      exp_concrete_log_prob(y, logits, temperature=tau)
    with pytest.raises(ValueError, match="temperature"):
      concrete_log_prob(y + 1 / 3, logits, temperature=tau)
  with pytest.raises(ValueError, match="temperature"):
    gumbel_softmax_sample(KEY, logits, temperature=np.ones(4, np.float32))
  # NaN and inf used to pass the positivity check (nan <= 0 is False).
  for tau in (math.nan, math.inf):
    with pytest.raises(ValueError, match="temperature must be finite"):
      gumbel_softmax_sample(KEY, logits, temperature=tau, hard=True)
    with pytest.raises(ValueError, match="temperature must be finite"):
      jax.jit(functools.partial(
          gumbel_softmax_sample, KEY, temperature=tau, hard=True))(logits)
    with pytest.raises(ValueError, match="temperature must be finite"):
      exp_concrete_log_prob(y, logits, temperature=tau)
  with pytest.raises(TypeError, match="temperature must be a real number"):
    gumbel_softmax_sample(KEY, logits, temperature="a")
  for fn in (
      lambda z: gumbel_max_sample(KEY, z),
      lambda z: gumbel_softmax_sample(KEY, z, temperature=1.0),
      lambda z: gumbel_softmax_log_sample(KEY, z, temperature=1.0),
      lambda z: straight_through_argmax(z),
      lambda z: straight_through_categorical(KEY, z),
      lambda z: categorical_kl_uniform(z),
      lambda z: categorical_kl(z, z),
      lambda z: exp_concrete_log_prob(z, z, temperature=1.0),
  ):
    with pytest.raises(ValueError, match="logits"):
      fn(np.zeros((4, 1), np.float32))  # K = 1
    with pytest.raises(ValueError, match="logits"):
      fn(np.float32(1.0))  # no class axis
    with pytest.raises(TypeError, match="logits"):
      fn(np.zeros((4, 3), np.int32))
  with pytest.raises(ValueError, match="axis"):
    gumbel_max_sample(KEY, logits, axis=2)
  with pytest.raises(ValueError, match="y"):
    exp_concrete_log_prob(np.zeros((4, 4), np.float32), logits, temperature=1.0)
  with pytest.raises(ValueError, match="x"):
    concrete_log_prob(np.full((3,), 1 / 3, np.float32), logits, temperature=1.0)
  with pytest.raises(TypeError, match="y"):
    exp_concrete_log_prob(np.zeros((4, 3), np.int32), logits, temperature=1.0)
  with pytest.raises(ValueError, match="logits_p"):
    categorical_kl(logits, np.zeros((4, 4), np.float32))
  with pytest.raises(ValueError, match="logits_p"):
    categorical_kl(logits, np.zeros((3,), np.float32))  # would broadcast
  with pytest.raises(TypeError, match="logits_p"):
    categorical_kl(logits, np.zeros((4, 3), np.int32))
  # Checks fire at trace time under jit as well.
  with pytest.raises(ValueError, match="temperature"):
    jax.jit(functools.partial(gumbel_softmax_sample, KEY, temperature=0.0))(
        logits
    )
