"""Tests for dgmjax.losses.elbo (ELBO, likelihoods, KL, IWAE)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from scipy import integrate, special, stats

from dgmjax.losses import elbo as E

RNG = np.random.default_rng(0)


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _np_kl_standard(m, lv):
  m, lv = np.float64(m), np.float64(lv)
  return 0.5 * np.sum(np.exp(lv) - 1.0 - lv + m**2, axis=-1)


def _np_kl(mq, lvq, mp, lvp):
  mq, lvq, mp, lvp = (np.float64(a) for a in (mq, lvq, mp, lvp))
  return 0.5 * np.sum(
      lvp - lvq + (np.exp(lvq) + (mq - mp) ** 2) / np.exp(lvp) - 1.0, axis=-1
  )


def _np_logit_laplace(x, mu, b):
  x = np.float64(x)
  logit = np.log(x / (1.0 - x))
  return np.log(1.0 / (2.0 * b * x * (1.0 - x)) * np.exp(-np.abs(logit - mu) / b))


# ---------------------------------------------------------------- densities


def test_log_normal_diag_matches_scipy():
  z, m = RNG.normal(size=(2, 5, 4))
  lv = RNG.uniform(-3, 2, size=(5, 4))
  want = stats.norm.logpdf(z, m, np.exp(0.5 * lv)).sum(-1)
  got = E.log_normal_diag(_f32(z), _f32(m), _f32(lv))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # event_ndims=2 sums one more axis, 0 sums none.
  got2 = E.log_normal_diag(_f32(z), _f32(m), _f32(lv), event_ndims=2)
  np.testing.assert_allclose(got2, want.sum(), rtol=1e-5)
  got0 = E.log_normal_diag(_f32(z), _f32(m), _f32(lv), event_ndims=0)
  np.testing.assert_allclose(
      got0, stats.norm.logpdf(z, m, np.exp(0.5 * lv)), rtol=1e-5, atol=1e-5
  )


def test_log_normal_diag_sample_axis_broadcasts():
  m = RNG.normal(size=(3, 2))
  lv = RNG.normal(size=(3, 2))
  z = RNG.normal(size=(7, 3, 2))  # k samples for each of 3 examples
  got = E.log_normal_diag(_f32(z), _f32(m), _f32(lv))
  want = stats.norm.logpdf(z, m[None], np.exp(0.5 * lv)[None]).sum(-1)
  assert got.shape == (7, 3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_log_standard_normal_matches_scipy():
  z = RNG.normal(size=(6, 3)) * 3
  np.testing.assert_allclose(
      E.log_standard_normal(_f32(z)), stats.norm.logpdf(z).sum(-1), rtol=1e-5
  )
  np.testing.assert_allclose(
      E.log_standard_normal(_f32(z), event_ndims=2),
      stats.norm.logpdf(z).sum(),
      rtol=1e-5,
  )


# ---------------------------------------------------------------------- KL


def test_gaussian_kl_standard_closed_form():
  m = RNG.normal(size=(8, 5)) * 2
  lv = RNG.uniform(-4, 3, size=(8, 5))
  got = E.gaussian_kl_standard(_f32(m), _f32(lv))
  np.testing.assert_allclose(got, _np_kl_standard(m, lv), rtol=1e-5, atol=1e-6)


def test_gaussian_kl_standard_accurate_near_unit_variance():
  # σ² − 1 − log σ² ≈ (log σ²)²/2 = 5e-9 here. exp(lv) − 1 in float32 has an
  # absolute error of ~6e-8 (a 1000% error); expm1(lv) − lv is off by at most
  # a few ulp of lv, ~1e-11 (0.5%).
  lv = np.full((1, 1), 1e-4, np.float32)
  got = E.gaussian_kl_standard(jnp.zeros((1, 1)), _f32(lv))
  np.testing.assert_allclose(got, _np_kl_standard(0.0 * lv, lv), rtol=1e-2)


def test_gaussian_kl_standard_monte_carlo():
  m = np.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
  lv = np.array([[-1.0, 0.5, 0.0], [1.0, -2.0, 0.2]])
  n = 200_000
  z = m + np.exp(0.5 * lv) * RNG.normal(size=(n, 2, 3))
  terms = (
      stats.norm.logpdf(z, m, np.exp(0.5 * lv)) - stats.norm.logpdf(z)
  ).sum(-1)
  mc, se = terms.mean(0), terms.std(0) / math.sqrt(n)
  got = np.asarray(E.gaussian_kl_standard(_f32(m), _f32(lv)))
  assert np.all(np.abs(got - mc) < 4 * se), (got, mc, se)


def test_gaussian_kl_two_gaussians():
  mq, mp = RNG.normal(size=(2, 6, 4))
  lvq, lvp = RNG.uniform(-3, 3, size=(2, 6, 4))
  got = E.gaussian_kl(_f32(mq), _f32(lvq), _f32(mp), _f32(lvp))
  np.testing.assert_allclose(got, _np_kl(mq, lvq, mp, lvp), rtol=1e-5, atol=1e-5)
  # p = N(0, I) reduces to the standard-normal KL, and KL(q||q) = 0.
  zeros = jnp.zeros((6, 4))
  np.testing.assert_allclose(
      E.gaussian_kl(_f32(mq), _f32(lvq), zeros, zeros),
      E.gaussian_kl_standard(_f32(mq), _f32(lvq)),
      rtol=1e-6,
  )
  np.testing.assert_allclose(
      E.gaussian_kl(_f32(mq), _f32(lvq), _f32(mq), _f32(lvq)), 0.0, atol=1e-6
  )
  # A prior of shape (d,) shared by the batch broadcasts explicitly.
  shared = E.gaussian_kl(_f32(mq), _f32(lvq), _f32(mp[0]), _f32(lvp[0]))
  np.testing.assert_allclose(
      shared, _np_kl(mq, lvq, mp[:1], lvp[:1]), rtol=1e-5, atol=1e-5
  )


def test_gaussian_kl_monte_carlo():
  mq, lvq = np.array([[0.3, -0.5]]), np.array([[-0.5, 0.4]])
  mp, lvp = np.array([[1.0, 0.0]]), np.array([[0.7, -0.3]])
  n = 200_000
  z = mq + np.exp(0.5 * lvq) * RNG.normal(size=(n, 1, 2))
  terms = (
      stats.norm.logpdf(z, mq, np.exp(0.5 * lvq))
      - stats.norm.logpdf(z, mp, np.exp(0.5 * lvp))
  ).sum(-1)
  mc, se = terms.mean(0), terms.std(0) / math.sqrt(n)
  got = np.asarray(E.gaussian_kl(_f32(mq), _f32(lvq), _f32(mp), _f32(lvp)))
  assert np.all(np.abs(got - mc) < 4 * se), (got, mc, se)


def test_kl_gradients_closed_form():
  m = _f32(RNG.normal(size=(3, 4)))
  lv = _f32(RNG.uniform(-2, 2, size=(3, 4)))
  gm, glv = jax.grad(lambda a, b: E.gaussian_kl_standard(a, b).sum(), (0, 1))(m, lv)
  np.testing.assert_allclose(gm, m, rtol=1e-6)
  np.testing.assert_allclose(glv, 0.5 * jnp.expm1(lv), rtol=1e-5, atol=1e-7)
  mp = _f32(RNG.normal(size=(3, 4)))
  lvp = _f32(RNG.normal(size=(3, 4)))
  g = jax.grad(lambda a: E.gaussian_kl(m, lv, a, lvp).sum())(mp)
  np.testing.assert_allclose(g, (mp - m) * jnp.exp(-lvp), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------- likelihoods


def test_bernoulli_log_likelihood_binary_matches_scipy():
  logits = RNG.normal(size=(5, 7)) * 3
  x = (RNG.uniform(size=(5, 7)) < 0.5).astype(np.float64)
  want = stats.bernoulli.logpmf(x, special.expit(logits)).sum(-1)
  got = E.bernoulli_log_likelihood(x=_f32(x), logits=_f32(logits))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bernoulli_log_likelihood_continuous_bce():
  logits = RNG.normal(size=(4, 2, 3))
  x = RNG.uniform(size=(4, 2, 3))
  p = special.expit(logits)
  want = (x * np.log(p) + (1 - x) * np.log1p(-p)).sum((-2, -1))
  got = E.bernoulli_log_likelihood(x=_f32(x), logits=_f32(logits), event_ndims=2)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  g = jax.grad(lambda ll: E.bernoulli_log_likelihood(x=_f32(x), logits=ll).sum())(
      _f32(logits)
  )
  np.testing.assert_allclose(g, x - p, rtol=1e-4, atol=1e-6)


def test_gaussian_log_likelihood_matches_scipy():
  x, m = RNG.normal(size=(2, 4, 6))
  lv = RNG.uniform(-2, 1, size=(4, 6))
  want = stats.norm.logpdf(x, m, np.exp(0.5 * lv)).sum(-1)
  got = E.gaussian_log_likelihood(_f32(x), _f32(m), _f32(lv))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # A learned scalar variance shared by all pixels.
  got_s = E.gaussian_log_likelihood(_f32(x), _f32(m), _f32(0.3))
  want_s = stats.norm.logpdf(x, m, np.exp(0.15)).sum(-1)
  np.testing.assert_allclose(got_s, want_s, rtol=1e-5)
  g = jax.grad(lambda a: E.gaussian_log_likelihood(_f32(x), a, _f32(lv)).sum())(
      _f32(m)
  )
  np.testing.assert_allclose(g, (x - m) * np.exp(-lv), rtol=1e-4, atol=1e-5)


def test_map_unmap_pixels():
  x = RNG.uniform(size=(10,))
  mapped = E.map_pixels(_f32(x))
  np.testing.assert_allclose(mapped, 0.8 * x + 0.1, rtol=1e-6)
  assert float(E.map_pixels(_f32(0.0), eps=0.2)) == pytest.approx(0.2)
  assert float(E.map_pixels(_f32(1.0), eps=0.2)) == pytest.approx(0.8)
  np.testing.assert_allclose(E.unmap_pixels(mapped), x, atol=1e-6)
  np.testing.assert_allclose(
      E.unmap_pixels(_f32([0.0, 0.05, 0.95, 1.0])), [0.0, 0.0, 1.0, 1.0]
  )


@pytest.mark.parametrize("mu,log_b", [(0.0, 0.0), (1.5, -1.0), (-3.0, 0.7)])
def test_logit_laplace_is_a_normalised_density(mu, log_b):
  # Float64, so quad can probe points within 1e-15 of the ends (for b > 1 the
  # density has an integrable x^(1/b − 1) singularity there).
  with jax.enable_x64(True):
    f = jax.jit(lambda t: jnp.exp(E.logit_laplace_log_likelihood(
        t[None], jnp.array([mu]), jnp.array([log_b]), eps=1e-15)))
    density = lambda t: float(f(jnp.float64(t)))
    # Split at the mode sigmoid(μ), where the density has a kink.
    mode = float(special.expit(mu))
    pieces = ((0.0, mode), (mode, 1.0))
    total = sum(integrate.quad(density, lo, hi, limit=200)[0] for lo, hi in pieces)
  assert total == pytest.approx(1.0, abs=1e-5)
  # The same integral of the NumPy formula, as a control of the formula.
  b = math.exp(log_b)
  total_np = sum(
      integrate.quad(lambda t: math.exp(_np_logit_laplace(t, mu, b)), lo, hi,
                     limit=200)[0]
      for lo, hi in pieces)
  assert total_np == pytest.approx(1.0, abs=1e-5)


def test_logit_laplace_matches_numpy_formula():
  x = E.map_pixels(_f32(RNG.uniform(size=(3, 16))))
  mu = RNG.normal(size=(3, 16)) * 2
  log_b = RNG.uniform(-2, 1, size=(3, 16))
  want = _np_logit_laplace(np.asarray(x), mu, np.exp(log_b)).sum(-1)
  got = E.logit_laplace_log_likelihood(x, _f32(mu), _f32(log_b))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Shared scalar log-scale broadcasts to x.
  got_s = E.logit_laplace_log_likelihood(x, _f32(mu), _f32(0.5))
  want_s = _np_logit_laplace(np.asarray(x), mu, np.exp(0.5)).sum(-1)
  np.testing.assert_allclose(got_s, want_s, rtol=1e-5)
  # d/dμ = sign(logit(x) − μ)/b.
  g = jax.grad(lambda m: E.logit_laplace_log_likelihood(x, m, _f32(log_b)).sum())(
      _f32(mu)
  )
  logit = special.logit(np.asarray(x, np.float64))
  np.testing.assert_allclose(g, np.sign(logit - mu) * np.exp(-log_b), rtol=1e-5)


def test_elbo_and_log_weights():
  # The references take the float32-rounded inputs: ll - kl cancels, so the
  # inputs' own rounding would otherwise exceed a relative tolerance.
  ll, kl = np.float64(_f32(RNG.normal(size=(2, 5))))
  np.testing.assert_allclose(E.elbo(_f32(ll), _f32(kl)), ll - kl, rtol=1e-6)
  np.testing.assert_allclose(
      E.elbo(_f32(ll), _f32(kl), beta=6.6), ll - 6.6 * kl, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(E.elbo(_f32(ll), _f32(kl), beta=0.0), ll, rtol=1e-6)
  a, b, c = np.float64(_f32(RNG.normal(size=(3, 4, 2))))
  np.testing.assert_allclose(
      E.iwae_log_weights(_f32(a), _f32(b), _f32(c)), a + b - c, rtol=1e-5,
      atol=1e-6,
  )


# -------------------------------------------------------------------- IWAE


def test_iwae_bound_matches_scipy_logsumexp():
  # float32-rounded inputs and an absolute floor: a bound near 0 has no
  # relative accuracy to test.
  lw = np.float64(_f32(RNG.normal(size=(6, 3, 4)) * 5))
  tol = dict(rtol=1e-5, atol=2e-6)
  got = E.iwae_bound(_f32(lw))
  np.testing.assert_allclose(got, special.logsumexp(lw, 0) - math.log(6), **tol)
  got1 = E.iwae_bound(_f32(lw), axis=1)
  np.testing.assert_allclose(got1, special.logsumexp(lw, 1) - math.log(3), **tol)
  np.testing.assert_allclose(
      E.iwae_bound(_f32(lw), axis=-1), special.logsumexp(lw, -1) - math.log(4),
      **tol,
  )
  # k = 1 is the one-sample ELBO; the gradient is the normalised weights.
  np.testing.assert_allclose(E.iwae_bound(_f32(lw[:1])), lw[0], rtol=1e-6)
  g = jax.grad(lambda w: E.iwae_bound(w).sum())(_f32(lw))
  np.testing.assert_allclose(g, special.softmax(lw, axis=0), rtol=1e-4, atol=1e-7)


class _LinearGaussian:
  """z ~ N(0, 1), x|z ~ N(a z + b, s²): log p(x) and p(z|x) in closed form."""

  a, b, s = 2.0, 0.5, 0.5

  def __init__(self, x):
    self.x = np.asarray(x, np.float64)
    a, b, s = self.a, self.b, self.s
    self.log_px = stats.norm.logpdf(self.x, b, math.sqrt(a * a + s * s))
    self.post_var = s * s / (s * s + a * a)
    self.post_mean = a * (self.x - b) / (s * s + a * a)

  def log_weights(self, z, q_mean, q_log_var):
    """z: (..., B) samples; returns log w of the same shape."""
    x = jnp.broadcast_to(_f32(self.x), z.shape)
    ll = E.gaussian_log_likelihood(
        x, self.a * z + self.b, _f32(2 * math.log(self.s)), event_ndims=0
    )
    log_q = E.log_normal_diag(
        z, q_mean, jnp.broadcast_to(q_log_var, q_mean.shape), event_ndims=0
    )
    return E.iwae_log_weights(ll, E.log_standard_normal(z, event_ndims=0), log_q)

  def sample(self, key, shape, q_mean, q_log_var):
    return q_mean + jnp.exp(0.5 * q_log_var) * jax.random.normal(key, shape)


def test_iwae_with_exact_posterior_equals_log_px_for_every_k():
  model = _LinearGaussian([1.3, -0.4, 2.0, 0.0])
  qm, qlv = _f32(model.post_mean), _f32(math.log(model.post_var))
  @jax.jit
  def bound(key):
    z = model.sample(key, (100, 4), qm, qlv)
    lw = model.log_weights(z, qm, qlv)
    return [E.iwae_bound(lw[:k]) for k in (1, 7, 100)]

  for got in bound(jax.random.key(0)):
    np.testing.assert_allclose(got, model.log_px, atol=5e-5)


def test_iwae_increases_with_k_and_stays_below_log_px():
  model = _LinearGaussian([1.3, -0.4, 2.0])
  # A deliberately poor q: shifted by ~3 posterior std, 3x too wide.
  qm = _f32(model.post_mean + 0.7)
  qlv = _f32(math.log(3 * model.post_var))
  reps = 4000

  @jax.jit
  def bounds(key):
    # Disjoint samples for each k, so the three estimates are independent.
    z = model.sample(key, (reps, 111, 3), qm, qlv)
    lw = model.log_weights(z, qm, qlv)
    return {1: lw[:, :1], 10: lw[:, 1:11], 100: lw[:, 11:]}

  means, ses = {}, {}
  for k, lw in bounds(jax.random.key(1)).items():
    lk = np.asarray(E.iwae_bound(lw, axis=1))
    means[k], ses[k] = lk.mean(0), lk.std(0) / math.sqrt(reps)
  # k = 1 is the ELBO: log p(x) − KL(q || p(z|x)), known in closed form.
  kl = _np_kl(np.asarray(qm)[:, None], np.full((3, 1), float(qlv)),
              model.post_mean[:, None], np.full((3, 1), math.log(model.post_var)))
  assert np.all(np.abs(means[1] - (model.log_px - kl)) < 4 * ses[1])
  for lo, hi in ((1, 10), (10, 100)):
    assert np.all(means[lo] + 3 * np.hypot(ses[lo], ses[hi]) < means[hi])
  for k in means:
    assert np.all(means[k] < model.log_px + 3 * ses[k])


def _chunked_reference(log_weight_fn, key, k, chunk):
  chunk = min(chunk, k)
  n = -(-k // chunk)
  keys = jax.random.split(key, n)
  lw = jnp.concatenate([log_weight_fn(kk, chunk) for kk in keys])[:k]
  return E.iwae_bound(lw)


def test_chunked_iwae_equals_unchunked():
  def fn(key, n):  # widely spread log weights, so every sample matters
    return 3.0 * jax.random.normal(key, (n, 3))

  key = jax.random.key(3)
  for chunk in (1, 3, 4, 64):  # 3 and 4 do not divide k = 10; 64 > k
    got = jax.jit(lambda kk, c=chunk: E.chunked_iwae_bound(fn, kk, 10, chunk_size=c))(
        key
    )
    want = _chunked_reference(fn, key, 10, chunk)
    np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=str(chunk))
  # One chunk holding all k samples is the plain bound on the same draws.
  lw = fn(jax.random.split(key, 1)[0], 10)
  np.testing.assert_allclose(
      E.chunked_iwae_bound(fn, key, 10, chunk_size=10), E.iwae_bound(lw), rtol=1e-6
  )


def test_chunked_iwae_k1000_close_to_log_px():
  model = _LinearGaussian(np.tile([1.3, -0.4, 2.0], 100))
  qm = _f32(model.post_mean + 0.7)
  qlv = _f32(math.log(3 * model.post_var))

  def fn(key, n):
    return model.log_weights(model.sample(key, (n, 300), qm, qlv), qm, qlv)

  out = jax.jit(lambda kk: E.chunked_iwae_bound(fn, kk, 1000, chunk_size=128))(
      jax.random.key(0)
  )
  gap = (np.asarray(out) - model.log_px).reshape(100, 3)
  mean, se = gap.mean(0), gap.std(0) / 10
  # E[L_100] − log p(x) is about −0.03 for this q; L_1000 must be closer.
  assert np.all(mean < 3 * se) and np.all(mean > -0.02), (mean, se)


def test_chunked_iwae_gradient_matches_unchunked():
  model = _LinearGaussian([1.3, -0.4])

  def fn_for(shift):
    def fn(key, n):
      qm = _f32(model.post_mean) + shift
      qlv = _f32(math.log(2 * model.post_var))
      return model.log_weights(model.sample(key, (n, 2), qm, qlv), qm, qlv)
    return fn

  key = jax.random.key(5)
  g = jax.jit(jax.grad(
      lambda s: E.chunked_iwae_bound(fn_for(s), key, 10, chunk_size=4).sum()))

  def reference(s):
    keys = jax.random.split(key, 3)
    lw = jnp.concatenate([fn_for(s)(kk, 4) for kk in keys])[:10]
    return E.iwae_bound(lw).sum()

  g_ref = jax.jit(jax.grad(reference))
  got, want = g(_f32(0.4)), g_ref(_f32(0.4))
  assert np.isfinite(got)
  np.testing.assert_allclose(got, want, rtol=1e-5)


# ------------------------------------------------ transformations, extremes


def _cases():
  m, lv, x = (_f32(RNG.normal(size=(4, 3))) for _ in range(3))
  u = _f32(RNG.uniform(0.1, 0.9, size=(4, 3)))
  return {
      "log_normal_diag": (E.log_normal_diag, (x, m, lv)),
      "log_standard_normal": (E.log_standard_normal, (x,)),
      "gaussian_kl_standard": (E.gaussian_kl_standard, (m, lv)),
      "gaussian_kl": (E.gaussian_kl, (m, lv, x, u)),
      "bernoulli_log_likelihood": (lambda lg, d: E.bernoulli_log_likelihood(x=d, logits=lg),
                                   (x, u)),
      "gaussian_log_likelihood": (E.gaussian_log_likelihood, (x, m, lv)),
      "map_pixels": (E.map_pixels, (u,)),
      "unmap_pixels": (E.unmap_pixels, (u,)),
      "logit_laplace_log_likelihood": (E.logit_laplace_log_likelihood, (u, m, lv)),
      "elbo": (E.elbo, (m[:, 0], lv[:, 0])),
      "iwae_log_weights": (E.iwae_log_weights, (m, lv, x)),
      "iwae_bound": (lambda w: E.iwae_bound(w, axis=-1), (m,)),
  }


@pytest.mark.parametrize("name", list(_cases()))
def test_jit_vmap_grad(name):
  fn, args = _cases()[name]
  want = fn(*args)
  # Per-example sums over pixels of terms of size ~1: jit may fuse them in
  # another order, a float32 rounding of ~1e-7 absolute (seen: 1.2e-7 on 0.114).
  np.testing.assert_allclose(jax.jit(fn)(*args), want, rtol=1e-6, atol=1e-6)
  # vmap over the batch axis equals the batched call.
  np.testing.assert_allclose(jax.vmap(fn)(*args), want, rtol=1e-6, atol=1e-6)
  grads = jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=tuple(range(len(args))))(
      *args
  )
  for g in grads:
    assert np.all(np.isfinite(g)), name


def test_extreme_log_variances_are_finite():
  z = _f32([[3.0, -3.0, 1e3]])
  for lv in (30.0, -30.0):
    lvs = jnp.full((1, 3), lv)
    fns = {
        "log_normal_diag": lambda m, v: E.log_normal_diag(z, m, v),
        "gaussian_kl_standard": E.gaussian_kl_standard,
        "gaussian_kl": lambda m, v: E.gaussian_kl(m, v, -m, -v),
        "gaussian_log_likelihood": lambda m, v: E.gaussian_log_likelihood(z, m, v),
    }
    for name, fn in fns.items():
      val = fn(jnp.ones((1, 3)), lvs)
      grads = jax.grad(lambda m, v, f=fn: f(m, v).sum(), (0, 1))(
          jnp.ones((1, 3)), lvs
      )
      assert np.all(np.isfinite(val)), (name, lv)
      assert all(np.all(np.isfinite(g)) for g in grads), (name, lv)
  # exp(30) ≈ 1.07e13 must show up in the value, not overflow.
  kl = E.gaussian_kl_standard(jnp.zeros((1, 1)), jnp.full((1, 1), 30.0))
  np.testing.assert_allclose(kl, 0.5 * (math.expm1(30.0) - 30.0), rtol=1e-6)


def test_extreme_logits_are_exact_and_finite():
  logits = _f32([[1e4, -1e4, 1e4, -1e4]])
  x = _f32([[1.0, 0.0, 0.0, 0.5]])
  val = E.bernoulli_log_likelihood(x=x, logits=logits)
  np.testing.assert_allclose(val, [-1e4 - 0.5e4], rtol=1e-6)
  g = jax.grad(lambda ll: E.bernoulli_log_likelihood(x=x, logits=ll).sum())(logits)
  np.testing.assert_allclose(g, [[0.0, 0.0, -1.0, 0.5]], atol=1e-6)


def test_extreme_logit_laplace_and_iwae_are_finite():
  x = _f32([[0.1, 0.9, 0.5, 1.0, 0.0]])  # the last two: rounded onto the edge
  for mu, lb in ((1e4, 30.0), (-1e4, -30.0), (0.0, -30.0)):
    mus, lbs = jnp.full((1, 5), mu), jnp.full((1, 5), lb)
    val = E.logit_laplace_log_likelihood(x, mus, lbs)
    g = jax.grad(
        lambda m, b: E.logit_laplace_log_likelihood(x, m, b).sum(), (0, 1)
    )(mus, lbs)
    assert np.all(np.isfinite(val)) and all(np.all(np.isfinite(a)) for a in g)
  lw = _f32([[1e4, -1e30], [-1e4, -1e30], [0.0, -1e30]])
  val = E.iwae_bound(lw)
  g = jax.grad(lambda w: E.iwae_bound(w).sum())(lw)
  assert np.all(np.isfinite(val)) and np.all(np.isfinite(g))
  np.testing.assert_allclose(val[0], 1e4 - math.log(3), rtol=1e-6)


# ------------------------------------------------------------- bad inputs


def test_bad_inputs_raise():
  a = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match="log_var"):
    E.log_normal_diag(a, a, jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="event shape"):
    E.log_normal_diag(jnp.zeros((4, 2)), a, a)
  with pytest.raises(ValueError, match="broadcast"):
    E.log_normal_diag(jnp.zeros((5, 3)), a, a)
  with pytest.raises(ValueError, match="event_ndims"):
    E.log_normal_diag(a, a, a, event_ndims=-1)
  with pytest.raises(ValueError, match="z"):
    E.log_standard_normal(jnp.zeros(3), event_ndims=2)
  with pytest.raises(TypeError, match="z"):
    E.log_standard_normal(jnp.zeros((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="log_var"):
    E.gaussian_kl_standard(a, jnp.zeros((3,)))
  with pytest.raises(ValueError, match="mean"):
    E.gaussian_kl_standard(jnp.zeros(()), jnp.zeros(()))
  with pytest.raises(ValueError, match="mean_q"):
    E.gaussian_kl(a, a, jnp.zeros((4, 2)), jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="log_var_p"):
    E.gaussian_kl(a, a, a, jnp.zeros((3,)))
  with pytest.raises(ValueError, match="x"):
    E.bernoulli_log_likelihood(x=jnp.zeros((3, 4)), logits=a)
  with pytest.raises(TypeError, match="x"):
    E.bernoulli_log_likelihood(x=jnp.zeros((4, 3), jnp.uint8), logits=a)
  with pytest.raises(ValueError, match="mean"):
    E.gaussian_log_likelihood(a, jnp.zeros((3,)), a)
  with pytest.raises(ValueError, match="log_var"):
    E.gaussian_log_likelihood(a, a, jnp.zeros((4, 3, 1)))
  with pytest.raises(ValueError, match="eps"):
    E.map_pixels(a, eps=0.5)
  with pytest.raises(ValueError, match="eps"):
    E.unmap_pixels(a, eps=0.0)
  with pytest.raises(ValueError, match="mu"):
    E.logit_laplace_log_likelihood(a, jnp.zeros((4,)), a)
  with pytest.raises(ValueError, match="log_b"):
    E.logit_laplace_log_likelihood(a, a, jnp.zeros((2,)))
  with pytest.raises(ValueError, match="beta"):
    E.elbo(a, a, beta=-1.0)
  with pytest.raises(ValueError, match="kl"):
    E.elbo(a, jnp.zeros((4,)))
  with pytest.raises(ValueError, match="log_posterior"):
    E.iwae_log_weights(a, a, jnp.zeros((4,)))
  with pytest.raises(ValueError, match="axis"):
    E.iwae_bound(a, axis=2)
  with pytest.raises(ValueError, match="log_weights"):
    E.iwae_bound(jnp.zeros(()))
  with pytest.raises(ValueError, match="num_samples"):
    E.chunked_iwae_bound(lambda k, n: jnp.zeros((n, 2)), jax.random.key(0), 0,
                         chunk_size=2)
  with pytest.raises(ValueError, match="chunk_size"):
    E.chunked_iwae_bound(lambda k, n: jnp.zeros((n, 2)), jax.random.key(0), 4,
                         chunk_size=0)
  with pytest.raises(ValueError, match="log_weight_fn"):
    E.chunked_iwae_bound(lambda k, n: jnp.zeros((2, n)), jax.random.key(0), 4,
                         chunk_size=3)


def test_chunked_iwae_inside_shard_map():
  # Noise shared across the batch, so the per-device result must equal the
  # single-device result on the concatenated batch.
  x = _f32(RNG.normal(size=(16,)))

  def bound(xs):
    fn = lambda key, n: -0.5 * jnp.square(xs[None, :] - jax.random.normal(key, (n, 1)))
    return E.chunked_iwae_bound(fn, jax.random.key(0), 10, chunk_size=3)

  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  sharded = jax.shard_map(bound, mesh=mesh, in_specs=P("data"), out_specs=P("data"))
  xs = jax.device_put(x, jax.sharding.NamedSharding(mesh, P("data")))
  np.testing.assert_allclose(jax.jit(sharded)(xs), bound(x), rtol=1e-6)


def test_bernoulli_positional_order_is_deprecated_not_silently_swapped():
  # The old positional order (logits, x) still means what it meant, with a
  # warning; keywords give the same value, and x/logits swapped would not.
  rng = np.random.default_rng(3)
  logits = _f32(rng.normal(size=(5, 6)) * 3)
  x = _f32(rng.integers(0, 2, size=(5, 6)))
  with pytest.warns(DeprecationWarning, match="x=..., logits=..."):
    old = E.bernoulli_log_likelihood(logits, x)
  new = E.bernoulli_log_likelihood(x=x, logits=logits)
  np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
  ref = np.sum(x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits), axis=-1)
  np.testing.assert_allclose(np.asarray(new), ref, rtol=1e-5)
  with pytest.raises(TypeError, match="x= and logits="):
    E.bernoulli_log_likelihood(x, logits=logits)
