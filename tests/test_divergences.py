"""Tests for dgmjax.losses.divergences: grid and Monte-Carlo KL / JSD."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import spatial, stats

from dgmjax.losses import divergences as dv

LOG2 = math.log(2.0)

# A grid wide enough for every density used below (σ ≤ 3, |μ| ≤ 4).
X = jnp.linspace(-30.0, 30.0, 6001)
DX = 60.0 / 6000  # exact; X[1] − X[0] in float32 is off by ~1e-4


def gauss_logpdf(x, mu, sigma):
  return jax.scipy.stats.norm.logpdf(x, mu, sigma)


def gauss_kl(m1, s1, m2, s2):
  """Closed-form KL(N(m1, s1²) || N(m2, s2²)) in float64."""
  return np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def mixture_logpdf(x, *, sep=3.0, sigma=0.5):
  """Lecture demo data π: ½N(−sep, σ²) + ½N(sep, σ²)."""
  return jnp.logaddexp(gauss_logpdf(x, -sep, sigma),
                       gauss_logpdf(x, sep, sigma)) - LOG2


# ----------------------------------------------------------------------------
# Values.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("m1,s1,m2,s2", [
    (0.0, 1.0, 0.0, 1.0),
    (1.0, 1.0, 0.0, 1.0),
    (-2.0, 0.5, 1.0, 2.0),
    (3.0, 2.5, -1.0, 0.7),
])
def test_grid_kl_matches_closed_form(m1, s1, m2, s2):
  log_p = gauss_logpdf(X, m1, s1)
  log_q = gauss_logpdf(X, m2, s2)
  got = dv.kl_divergence_grid(log_p, log_q, dx=DX)
  want = gauss_kl(m1, s1, m2, s2)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # The lecture's naming: forward = KL(π||p), reverse = KL(p||π).
  np.testing.assert_allclose(dv.forward_kl_grid(log_p, log_q, dx=DX), got)
  np.testing.assert_allclose(
      dv.reverse_kl_grid(log_p, log_q, dx=DX), gauss_kl(m2, s2, m1, s1),
      rtol=1e-4, atol=1e-5)


def test_grid_kl_batched_leading_axes():
  mus = jnp.array([[0.0, 1.0, -2.0], [0.5, 2.0, 3.0]])
  log_p = gauss_logpdf(X, mus[..., None], 1.0)
  log_q = jnp.broadcast_to(gauss_logpdf(X, 0.0, 1.0), log_p.shape)
  got = dv.kl_divergence_grid(log_p, log_q, dx=DX)
  assert got.shape == (2, 3)
  np.testing.assert_allclose(got, np.asarray(mus) ** 2 / 2, rtol=1e-4,
                             atol=1e-5)


def test_discrete_kl_and_jsd_match_scipy_with_zeros():
  rng = np.random.default_rng(0)
  for _ in range(5):
    p = rng.dirichlet(np.ones(7))
    q = rng.dirichlet(np.ones(7))
    p[[1, 4]] = 0.0  # zeros in the first argument: 0·log 0 = 0
    p /= p.sum()
    with np.errstate(divide="ignore"):
      log_p = jnp.asarray(np.log(p), jnp.float32)
    log_q = jnp.asarray(np.log(q), jnp.float32)
    np.testing.assert_allclose(dv.kl_divergence_grid(log_p, log_q, dx=1.0),
                               stats.entropy(p, q), rtol=1e-5, atol=1e-6)
    # scipy returns sqrt(JSD) (natural log by default).
    np.testing.assert_allclose(dv.jsd_grid(log_p, log_q, dx=1.0),
                               spatial.distance.jensenshannon(p, q) ** 2,
                               rtol=1e-5, atol=1e-6)


def test_support_mismatch_gives_inf_kl_and_finite_jsd():
  # π is zero on half the grid, p is positive everywhere.
  log_pi = jnp.where(X > 0, gauss_logpdf(X, 2.0, 1.0) + LOG2, -jnp.inf)
  log_p = gauss_logpdf(X, 0.0, 1.0)
  assert np.isfinite(dv.forward_kl_grid(log_pi, log_p, dx=DX))
  assert dv.reverse_kl_grid(log_pi, log_p, dx=DX) == np.inf
  jsd = dv.jsd_grid(log_pi, log_p, dx=DX)
  assert 0.0 < jsd < LOG2


def test_jsd_properties():
  log_a = gauss_logpdf(X, -1.0, 1.0)
  log_b = gauss_logpdf(X, 2.0, 0.5)
  jab = dv.jsd_grid(log_a, log_b, dx=DX)
  jba = dv.jsd_grid(log_b, log_a, dx=DX)
  np.testing.assert_allclose(jab, jba, rtol=1e-6)
  assert 0.0 < jab < LOG2
  np.testing.assert_allclose(dv.jsd_grid(log_a, log_a, dx=DX), 0.0, atol=1e-6)
  # Disjoint supports: exactly log 2, even though log densities are −inf.
  log_left = jnp.where(X < 0, gauss_logpdf(X, -5.0, 1.0), -jnp.inf)
  log_right = jnp.where(X > 0, gauss_logpdf(X, 5.0, 1.0), -jnp.inf)
  np.testing.assert_allclose(
      dv.jsd_grid(log_left, log_right, dx=DX, normalize=True), LOG2,
      rtol=1e-5)
  # Far apart (not exactly disjoint): approaches log 2 from below.
  far = dv.jsd_grid(gauss_logpdf(X, -10.0, 1.0), gauss_logpdf(X, 10.0, 1.0),
                    dx=DX)
  np.testing.assert_allclose(far, LOG2, rtol=1e-4)


def test_normalize_removes_truncation_error():
  # A grid that cuts off the tails: un-normalised KL is biased; normalised KL
  # equals the discrete KL of the renormalised probability vectors.
  x = jnp.linspace(-2.0, 3.0, 201)
  dx = 5.0 / 200
  log_p = gauss_logpdf(x, 0.0, 1.0)
  log_q = gauss_logpdf(x, 1.0, 1.5)
  p = np.exp(np.float64(log_p))
  q = np.exp(np.float64(log_q))
  got = dv.kl_divergence_grid(log_p, log_q, dx=dx, normalize=True)
  np.testing.assert_allclose(got, stats.entropy(p, q), rtol=1e-4)
  got_jsd = dv.jsd_grid(log_p, log_q, dx=dx, normalize=True)
  np.testing.assert_allclose(
      got_jsd, spatial.distance.jensenshannon(p, q) ** 2, rtol=1e-4)


def test_monte_carlo_agrees_with_grid():
  n = 40_000
  m1, s1, m2, s2 = 0.5, 1.0, -1.0, 1.8
  kp, kq = jax.random.split(jax.random.key(0))
  xp = m1 + s1 * jax.random.normal(kp, (n,))
  xq = m2 + s2 * jax.random.normal(kq, (n,))

  terms = dv.kl_from_samples(gauss_logpdf(xp, m1, s1), gauss_logpdf(xp, m2, s2))
  se = float(jnp.std(terms)) / math.sqrt(n)
  want = float(dv.kl_divergence_grid(gauss_logpdf(X, m1, s1),
                                     gauss_logpdf(X, m2, s2), dx=DX))
  np.testing.assert_allclose(want, gauss_kl(m1, s1, m2, s2), rtol=1e-4)
  assert abs(float(jnp.mean(terms)) - want) < 4 * se

  tp, tq = dv.jsd_from_samples(
      gauss_logpdf(xp, m1, s1), gauss_logpdf(xp, m2, s2),
      gauss_logpdf(xq, m1, s1), gauss_logpdf(xq, m2, s2))
  assert tp.shape == (n,) and tq.shape == (n,)
  est = 0.5 * float(jnp.mean(tp)) + 0.5 * float(jnp.mean(tq))
  se = 0.5 * math.sqrt(float(jnp.var(tp)) / n + float(jnp.var(tq)) / n)
  want = float(dv.jsd_grid(gauss_logpdf(X, m1, s1), gauss_logpdf(X, m2, s2),
                           dx=DX))
  assert abs(est - want) < 4 * se
  log2_f32 = float(np.float32(LOG2))
  assert float(jnp.max(tp)) <= log2_f32 and float(jnp.max(tq)) <= log2_f32


def test_jsd_from_samples_matches_logaddexp_formula():
  rng = np.random.default_rng(1)
  a, b, c, d = (rng.normal(size=(5,)) * 3 for _ in range(4))
  tp, tq = dv.jsd_from_samples(*(jnp.asarray(v, jnp.float32)
                                 for v in (a, b, c, d)))
  np.testing.assert_allclose(tp, a - (np.logaddexp(a, b) - LOG2), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(tq, d - (np.logaddexp(c, d) - LOG2), rtol=1e-5,
                             atol=1e-6)


def test_samples_of_different_sizes():
  tp, tq = dv.jsd_from_samples(jnp.zeros(3), jnp.zeros(3), jnp.zeros(5),
                               jnp.zeros(5))
  assert tp.shape == (3,) and tq.shape == (5,)
  np.testing.assert_allclose(tp, 0.0, atol=1e-7)


# ----------------------------------------------------------------------------
# The lecture's demo: mode covering vs mode seeking.
# ----------------------------------------------------------------------------


def _fit_gaussian(loss_name, *, init_mu, steps=600, lr=0.05):
  x = jnp.linspace(-12.0, 12.0, 1201)
  dx = 24.0 / 1200
  log_pi = mixture_logpdf(x)
  loss_fn = getattr(dv, loss_name)

  def loss(params):
    log_p = gauss_logpdf(x, params["mu"], jnp.exp(params["log_sigma"]))
    return loss_fn(log_pi, log_p, dx=dx)

  opt = optax.adam(lr)
  params = {"mu": jnp.float32(init_mu), "log_sigma": jnp.float32(0.0)}

  def step(carry, _):
    params, state = carry
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = opt.update(grads, state)
    return (optax.apply_updates(params, updates), state), value

  (params, _), values = jax.jit(
      lambda p: jax.lax.scan(step, (p, opt.init(p)), None, length=steps))(
          params)
  assert np.all(np.isfinite(values))
  return float(params["mu"]), float(jnp.exp(params["log_sigma"])), values


def test_lecture_demo_forward_kl_covers_modes():
  mu, sigma, values = _fit_gaussian("forward_kl_grid", init_mu=1.0)
  # Moment matching: mean 0, variance 0.5² + 3² of the mixture.
  assert abs(mu) < 0.05
  assert abs(sigma - math.sqrt(0.25 + 9.0)) < 0.05
  assert values[-1] < values[0]


def test_lecture_demo_reverse_kl_seeks_one_mode():
  mu, sigma, values = _fit_gaussian("reverse_kl_grid", init_mu=1.0)
  assert abs(mu - 3.0) < 0.05  # the mode nearest the initialisation
  assert abs(sigma - 0.5) < 0.05  # the component's width
  # Locked on one mode the reverse KL is ≈ log 2 (the other half of π).
  assert abs(values[-1] - LOG2) < 0.01


def test_lecture_demo_jsd_prefers_one_mode():
  # For this mixture JSD's global minimum is a single mode (it also has a
  # covering stationary point at μ = 0, so start nearer a mode).
  x = jnp.linspace(-12.0, 12.0, 1201)
  log_pi = mixture_logpdf(x)
  one_mode = dv.jsd_grid(log_pi, gauss_logpdf(x, 3.0, 0.5), dx=24.0 / 1200)
  covering = dv.jsd_grid(log_pi, gauss_logpdf(x, 0.0, math.sqrt(9.25)),
                         dx=24.0 / 1200)
  assert one_mode < covering
  mu, sigma, _ = _fit_gaussian("jsd_grid", init_mu=2.0)
  assert abs(mu - 3.0) < 0.05
  assert abs(sigma - 0.5) < 0.05


# ----------------------------------------------------------------------------
# Transformations.
# ----------------------------------------------------------------------------


def test_grad_matches_closed_form():
  # d/dμ KL(N(a, s²) || N(μ, σ²)) = (μ − a)/σ²,
  # d/dσ = 1/σ − (s² + (a − μ)²)/σ³.
  a, s = 0.3, 0.8
  log_pi = gauss_logpdf(X, a, s)

  def f(mu, sigma):
    return dv.forward_kl_grid(log_pi, gauss_logpdf(X, mu, sigma), dx=DX)

  mu, sigma = 1.2, 1.7
  gmu, gsig = jax.grad(f, argnums=(0, 1))(mu, sigma)
  np.testing.assert_allclose(gmu, (mu - a) / sigma**2, rtol=1e-4)
  np.testing.assert_allclose(
      gsig, 1 / sigma - (s**2 + (a - mu) ** 2) / sigma**3, rtol=1e-4)


def test_jsd_grad_matches_finite_difference():
  log_pi = mixture_logpdf(X)

  def f(mu):
    return dv.jsd_grid(log_pi, gauss_logpdf(X, mu, 1.0), dx=DX)

  g = jax.grad(f)(1.0)
  h = 1e-2
  fd = (f(1.0 + h) - f(1.0 - h)) / (2 * h)
  np.testing.assert_allclose(g, fd, rtol=1e-2)


def test_jit_and_vmap():
  mus = jnp.array([-1.0, 0.0, 2.0])
  log_pi = gauss_logpdf(X, 0.0, 1.0)
  for fn in (dv.kl_divergence_grid, dv.forward_kl_grid, dv.reverse_kl_grid,
             dv.jsd_grid):
    per = jax.vmap(lambda m, fn=fn: fn(log_pi, gauss_logpdf(X, m, 1.5),
                                       dx=DX))(mus)
    loop = jnp.stack([fn(log_pi, gauss_logpdf(X, m, 1.5), dx=DX)
                      for m in mus])
    np.testing.assert_allclose(per, loop, rtol=1e-6)
    jitted = jax.jit(lambda a, b, fn=fn: fn(a, b, dx=DX))
    np.testing.assert_allclose(
        jitted(log_pi, gauss_logpdf(X, 1.0, 1.5)),
        fn(log_pi, gauss_logpdf(X, 1.0, 1.5), dx=DX), rtol=1e-6)
  # dx may be traced.
  traced = jax.jit(lambda d: dv.jsd_grid(log_pi, log_pi + 0.1, dx=d))(DX)
  assert np.isfinite(traced)

  lp = jax.random.normal(jax.random.key(0), (4, 6))
  lq = jax.random.normal(jax.random.key(1), (4, 6))
  np.testing.assert_allclose(jax.vmap(dv.kl_from_samples)(lp, lq),
                             jax.jit(dv.kl_from_samples)(lp, lq), rtol=1e-6)
  vp, vq = jax.vmap(dv.jsd_from_samples)(lp, lq, lq, lp)
  jp, jq = jax.jit(dv.jsd_from_samples)(lp, lq, lq, lp)
  np.testing.assert_allclose(vp, jp, rtol=1e-6)
  np.testing.assert_allclose(vq, jq, rtol=1e-6)


def test_mc_grads():
  g = jax.grad(lambda a, b: dv.kl_from_samples(a, b).sum(), argnums=(0, 1))(
      jnp.ones(3), jnp.zeros(3))
  np.testing.assert_allclose(g[0], 1.0)
  np.testing.assert_allclose(g[1], -1.0)
  # d/da [log 2 − softplus(b − a)] = sigmoid(b − a).
  a = jnp.array([0.0, 1.0, -2.0])
  b = jnp.array([1.0, -1.0, 0.5])
  g = jax.grad(lambda a: dv.jsd_from_samples(a, b, b, a)[0].sum())(a)
  np.testing.assert_allclose(g, jax.nn.sigmoid(b - a), rtol=1e-6)


# ----------------------------------------------------------------------------
# Extremes.
# ----------------------------------------------------------------------------


def test_zero_density_gradients_are_finite():
  # π has exact zeros; p is a Gaussian whose parameters we differentiate.
  log_pi = jnp.where(jnp.abs(X) < 5, jnp.log(0.1), -jnp.inf)

  def losses(mu, log_sigma):
    log_p = gauss_logpdf(X, mu, jnp.exp(log_sigma))
    return jnp.stack([dv.forward_kl_grid(log_pi, log_p, dx=DX),
                      dv.jsd_grid(log_pi, log_p, dx=DX),
                      dv.jsd_grid(log_p, log_pi, dx=DX)])

  values = losses(0.5, 0.0)
  assert np.all(np.isfinite(values))
  jac = jax.jacobian(losses, argnums=(0, 1))(0.5, 0.0)
  assert all(np.all(np.isfinite(j)) for j in jac)
  # A model density with exact zeros (outside |x| < 1): the points where
  # p = 0 (and, for |x| > 5, π = 0 too) must contribute zero, not NaN, to
  # the gradient with respect to log p.
  log_p_narrow = jnp.where(jnp.abs(X) < 1, 0.0, -jnp.inf)
  g = jax.grad(lambda lp: dv.reverse_kl_grid(log_pi, lp, dx=DX))(log_p_narrow)
  assert not np.any(np.isnan(g))


def test_extreme_log_densities():
  big = jnp.array([1e4, -1e4, 0.0, -jnp.inf])
  other = jnp.array([-1e4, 1e4, -jnp.inf, -jnp.inf])
  # Values at these scales are meaningless as densities but must not be NaN.
  tp, tq = dv.jsd_from_samples(big, other, other, big)
  assert not np.any(np.isnan(tp[:3]))
  np.testing.assert_allclose(tp[2], LOG2)  # other density 0: log own/m = log 2
  g = jax.grad(lambda a: dv.jsd_from_samples(a, other[:3], other[:3], a)[0]
               .sum())(big[:3])
  assert np.all(np.isfinite(g))
  kl = dv.kl_from_samples(jnp.array([1e4, -1e4]), jnp.array([-1e4, 1e4]))
  np.testing.assert_allclose(kl, [2e4, -2e4])
  # Log-densities of −1e4 on a grid underflow to exact zeros: treated as 0.
  lp = jnp.array([0.0, -1e4, -1e4])
  lq = jnp.array([-1e4, 0.0, -1e4])
  np.testing.assert_allclose(dv.kl_divergence_grid(lp, lq, dx=1.0), 1e4)
  np.testing.assert_allclose(dv.jsd_grid(lp, lq, dx=1.0), LOG2, rtol=1e-6)
  assert np.all(np.isfinite(jax.grad(
      lambda a: dv.jsd_grid(a, lq, dx=1.0))(lp)))


# ----------------------------------------------------------------------------
# Bad inputs.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("fn,first,second", [
    (dv.kl_divergence_grid, "log_p", "log_q"),
    (dv.forward_kl_grid, "log_pi", "log_p"),
    (dv.reverse_kl_grid, "log_pi", "log_p"),
    (dv.jsd_grid, "log_pi", "log_p"),
])
def test_grid_bad_inputs(fn, first, second):
  a = jnp.zeros(5)
  with pytest.raises(ValueError, match=second):
    fn(a, jnp.zeros(4), dx=1.0)
  with pytest.raises(TypeError, match=first):
    fn(jnp.zeros(5, jnp.int32), a, dx=1.0)
  with pytest.raises(TypeError, match=second):
    fn(a, jnp.zeros(5, jnp.int32), dx=1.0)
  with pytest.raises(ValueError, match=first):
    fn(jnp.float32(0.0), jnp.float32(0.0), dx=1.0)
  with pytest.raises(ValueError, match="dx"):
    fn(a, a, dx=0.0)
  with pytest.raises(ValueError, match="dx"):
    fn(a, a, dx=-0.1)
  # NaN passed the old `dx <= 0` check and made the divergence NaN.
  for bad in (math.nan, math.inf, jnp.array([0.5, math.nan])):
    with pytest.raises(ValueError, match="^dx must be finite"):
      fn(a, a, dx=bad)
    with pytest.raises(ValueError, match="^dx must be finite"):
      jax.jit(lambda u, v, d=bad: fn(u, v, dx=d))(a, a)
  with pytest.raises(TypeError, match="^dx must be a real number"):
    fn(a, a, dx="0.1")
  with pytest.raises(TypeError):
    fn(a, a, 1.0)  # dx is keyword-only


def test_mc_bad_inputs():
  with pytest.raises(ValueError, match="log_q_at_p_samples"):
    dv.kl_from_samples(jnp.zeros(3), jnp.zeros(4))
  with pytest.raises(TypeError, match="log_p_at_p_samples"):
    dv.kl_from_samples(jnp.zeros(3, jnp.int32), jnp.zeros(3))
  with pytest.raises(ValueError, match="log_q_at_p"):
    dv.jsd_from_samples(jnp.zeros(3), jnp.zeros(2), jnp.zeros(4),
                        jnp.zeros(4))
  with pytest.raises(ValueError, match="log_q_at_q"):
    dv.jsd_from_samples(jnp.zeros(3), jnp.zeros(3), jnp.zeros(4),
                        jnp.zeros(5))
  with pytest.raises(TypeError, match="log_q_at_q"):
    dv.jsd_from_samples(jnp.zeros(3), jnp.zeros(3), jnp.zeros(4),
                        jnp.zeros(4, jnp.int32))
