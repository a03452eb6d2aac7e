"""Tests for dgmjax.losses.density_ratio: density ratio trick and AVB."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from scipy import stats

from dgmjax.losses import density_ratio as dr
from dgmjax.losses import divergences as dv

LOG2 = math.log(2.0)


def np_softplus(x):
  return np.logaddexp(0.0, np.asarray(x, np.float64))


def gaussian_kl(mu1, cov1, mu2, cov2):
  """Closed-form KL(N(mu1, cov1) || N(mu2, cov2)) in float64."""
  d = len(mu1)
  inv2 = np.linalg.inv(cov2)
  diff = mu2 - mu1
  return 0.5 * (np.trace(inv2 @ cov1) + diff @ inv2 @ diff - d
                + np.linalg.slogdet(cov2)[1] - np.linalg.slogdet(cov1)[1])


def make_gaussians(d, seed, *, target_kl=3.0):
  """q1 = N(μ1, Σ1) (rotated, narrower), q2 = N(0, Σ2) (diagonal, wider).

  The length of μ1 is solved for so that KL(q1 || q2) = target_kl exactly.
  """
  rng = np.random.default_rng(seed)
  rot, _ = np.linalg.qr(rng.normal(size=(d, d)))
  cov1 = rot @ np.diag(rng.uniform(0.6, 1.2, size=d)) @ rot.T
  cov2 = np.diag(rng.uniform(1.2, 1.8, size=d) ** 2)
  direction = rng.normal(size=d)
  direction /= np.linalg.norm(direction)
  base = gaussian_kl(np.zeros(d), cov1, np.zeros(d), cov2)
  assert base < target_kl
  maha = direction @ np.linalg.inv(cov2) @ direction
  mu1 = direction * math.sqrt(2 * (target_kl - base) / maha)
  np.testing.assert_allclose(
      gaussian_kl(mu1, cov1, np.zeros(d), cov2), target_kl, rtol=1e-10)
  return mu1, cov1, np.zeros(d), cov2


def sample(key, mu, cov, n):
  chol = np.linalg.cholesky(cov)
  eps = jax.random.normal(key, (n, len(mu)))
  return jnp.asarray(mu, jnp.float32) + eps @ jnp.asarray(chol.T, jnp.float32)


def mesh8():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Explicit,))


# ----------------------------------------------------------------------------
# density_ratio_loss, log_density_ratio.
# ----------------------------------------------------------------------------


def test_density_ratio_loss_values_vs_numpy():
  rng = np.random.default_rng(0)
  lp = rng.normal(size=(5,)) * 4
  lq = rng.normal(size=(3, 2)) * 4
  loss_p, loss_q = dr.density_ratio_loss(jnp.float32(lp), jnp.float32(lq))
  # BCE written from probabilities, in float64: −log D and −log(1 − D).
  d_p = 1 / (1 + np.exp(-lp))
  d_q = 1 / (1 + np.exp(-lq))
  np.testing.assert_allclose(loss_p, -np.log(d_p), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(loss_q, -np.log(1 - d_q), rtol=1e-5, atol=1e-6)
  assert loss_q.shape == (3, 2)


def _two_gaussians_on_grid():
  x = jnp.linspace(-15.0, 15.0, 3001)
  dx = 30.0 / 3000
  log_q1 = jax.scipy.stats.norm.logpdf(x, 1.0, 0.8)
  log_q2 = jax.scipy.stats.norm.logpdf(x, -0.5, 1.5)
  return x, dx, log_q1, log_q2


@jax.jit
def _population_loss(logits, log_q1, log_q2, dx):
  # ∫ q1 softplus(−T) + q2 softplus(T) dx with a per-grid-point logit T.
  loss_p, loss_q = dr.density_ratio_loss(logits, logits)
  return jnp.sum(jnp.exp(log_q1) * loss_p + jnp.exp(log_q2) * loss_q) * dx


def test_density_ratio_loss_optimum_is_log_ratio():
  _, dx, log_q1, log_q2 = _two_gaussians_on_grid()
  t_star = dr.log_density_ratio(log_q1 - log_q2)
  best = _population_loss(t_star, log_q1, log_q2, dx)
  # Stationary: the gradient w.r.t. every per-point logit vanishes.
  grad = jax.grad(_population_loss)(t_star, log_q1, log_q2, dx)
  scale = dx * float(jnp.max(jnp.exp(log_q1)))
  assert float(jnp.max(jnp.abs(grad))) < 1e-5 * scale
  # A minimum: every perturbation increases the loss.
  for i, size in enumerate([0.05, 0.3, 1.0]):
    delta = size * jax.random.normal(jax.random.key(i), t_star.shape)
    assert _population_loss(t_star + delta, log_q1, log_q2, dx) > best
    assert _population_loss(t_star + size, log_q1, log_q2, dx) > best
  # Its value: 2 log 2 − 2 JSD(q1 || q2) (the GAN identity at optimal D).
  jsd = dv.jsd_grid(log_q1, log_q2, dx=dx)
  np.testing.assert_allclose(best, 2 * LOG2 - 2 * jsd, rtol=1e-4)


def test_log_density_ratio_is_the_logit():
  logits = jnp.array([-6.0, -0.5, 0.0, 2.0, 7.5])
  np.testing.assert_array_equal(dr.log_density_ratio(logits), logits)
  # The derivation: D/(1 − D) with D = sigmoid(T), computed in float64.
  d = 1 / (1 + np.exp(-np.float64(logits)))
  np.testing.assert_allclose(np.log(d / (1 - d)),
                             dr.log_density_ratio(logits), rtol=1e-6)


# ----------------------------------------------------------------------------
# kl_estimate.
# ----------------------------------------------------------------------------


def test_kl_estimate_with_exact_log_ratio_matches_closed_form():
  mu1, cov1, mu2, cov2 = make_gaussians(3, seed=0, target_kl=2.0)
  n = 20_000
  x = np.asarray(sample(jax.random.key(0), mu1, cov1, n), np.float64)
  log_ratio = (stats.multivariate_normal(mu1, cov1).logpdf(x)
               - stats.multivariate_normal(mu2, cov2).logpdf(x))
  est = dr.kl_estimate(jnp.float32(log_ratio))
  se = np.std(log_ratio) / math.sqrt(n)
  assert abs(float(est) - 2.0) < 4 * se
  np.testing.assert_allclose(est, np.mean(log_ratio), rtol=1e-5)


def test_kl_estimate_reduces_all_axes_jit_grad():
  logits = jax.random.normal(jax.random.key(0), (4, 6)) * 3
  np.testing.assert_allclose(dr.kl_estimate(logits), np.mean(logits),
                             rtol=1e-6)
  np.testing.assert_allclose(jax.jit(dr.kl_estimate)(logits),
                             dr.kl_estimate(logits), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(dr.kl_estimate)(logits),
                             np.full((4, 6), 1 / 24), rtol=1e-6)
  per_row = jax.vmap(dr.kl_estimate)(logits)
  np.testing.assert_allclose(per_row, np.mean(logits, axis=1), rtol=1e-6)
  # bfloat16 logits are accumulated in float32.
  many = jnp.full((4096,), 1.1, jnp.bfloat16)
  est = dr.kl_estimate(many)
  assert est.dtype == jnp.float32
  np.testing.assert_allclose(est, float(many[0]), rtol=1e-6)


def test_kl_estimate_shard_map_equals_single_device():
  assert len(jax.devices()) == 8
  mesh = mesh8()
  logits = jax.random.normal(jax.random.key(3), (64,)) * 2 + 1
  sharded = jax.device_put(logits, jax.sharding.NamedSharding(mesh, P("data")))
  f = jax.shard_map(lambda t: dr.kl_estimate(t, axis_name="data"),
                    mesh=mesh, in_specs=P("data"), out_specs=P())
  np.testing.assert_allclose(jax.jit(f)(sharded), dr.kl_estimate(logits),
                             rtol=1e-6)
  # Without axis_name each device would only see its own 8 examples.
  g = jax.shard_map(lambda t: dr.kl_estimate(t)[None], mesh=mesh,
                    in_specs=P("data"), out_specs=P("data"))
  np.testing.assert_allclose(g(sharded), logits.reshape(8, 8).mean(1),
                             rtol=1e-6)


# ----------------------------------------------------------------------------
# The trained-classifier check: recover a known KL within 5 %.
# ----------------------------------------------------------------------------


def _quadratic_features(x):
  d = x.shape[-1]
  iu = np.triu_indices(d)
  quad = (x[:, :, None] * x[:, None, :])[:, iu[0], iu[1]]
  return jnp.concatenate([jnp.ones((x.shape[0], 1)), x, quad], axis=1)


@pytest.mark.parametrize("d", [2, 8])
def test_trained_classifier_recovers_gaussian_kl(d):
  # The log ratio of two Gaussians is quadratic in x, so logistic regression
  # on quadratic features contains the optimum; Newton's method on the
  # (convex) density-ratio loss finds it in a few steps.
  target = 3.0
  mu1, cov1, mu2, cov2 = make_gaussians(d, seed=d, target_kl=target)
  n = 20_000
  keys = jax.random.split(jax.random.key(d), 3)
  f1 = _quadratic_features(sample(keys[0], mu1, cov1, n))
  f2 = _quadratic_features(sample(keys[1], mu2, cov2, n))
  held_out = _quadratic_features(sample(keys[2], mu1, cov1, n))
  # Standardise the non-constant features for a well-conditioned solve.
  loc = jnp.concatenate([jnp.zeros(1), jnp.mean(f2[:, 1:], 0)])
  scale = jnp.concatenate([jnp.ones(1), jnp.std(f2[:, 1:], 0)])

  def logits(w, f):
    return ((f - loc) / scale) @ w

  def loss(w):
    loss_p, loss_q = dr.density_ratio_loss(logits(w, f1), logits(w, f2))
    return jnp.mean(loss_p) + jnp.mean(loss_q)

  @jax.jit
  def newton(w):
    g = jax.grad(loss)(w)
    h = jax.hessian(loss)(w)
    return w - jnp.linalg.solve(h + 1e-6 * jnp.eye(w.size), g)

  w = jnp.zeros(f1.shape[1])
  for _ in range(20):
    w = newton(w)
  assert float(jnp.max(jnp.abs(jax.grad(loss)(w)))) < 1e-4
  est = float(dr.kl_estimate(logits(w, held_out)))
  assert abs(est - target) / target < 0.05, (d, est)


# ----------------------------------------------------------------------------
# AVB.
# ----------------------------------------------------------------------------


def _avb_setup(n=4096, d=2, seed=0):
  """x ~ N(0, I); q(z|x) = N(A x, s²I); p(z) = N(0, I); exact T = log q − log p."""
  kx, kz, kp = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (n, d))
  a = jnp.array([[0.8, -0.3], [0.2, 0.5]])[:d, :d]
  s = 0.4
  mean = x @ a.T
  z_post = mean + s * jax.random.normal(kz, (n, d))
  z_prior = jax.random.normal(kp, (n, d))

  def t_exact(x, z):
    log_q = jnp.sum(jax.scipy.stats.norm.logpdf(z, x @ a.T, s), axis=-1)
    log_p = jnp.sum(jax.scipy.stats.norm.logpdf(z), axis=-1)
    return log_q - log_p

  return x, z_post, z_prior, t_exact, mean, s


def test_avb_label_convention():
  x, z_post, z_prior, t, _, _ = _avb_setup()
  t_post, t_prior = t(x, z_post), t(x, z_prior)

  def total(tp, tq):
    lp, lq = dr.avb_discriminator_loss(t_posterior=tp, t_prior=tq)
    return float(jnp.mean(lp) + jnp.mean(lq))

  right = total(t_post, t_prior)
  swapped = total(-t_post, -t_prior)  # what the prior = 1 convention learns
  # T = 0 (chance) scores 2 log 2; the right labels beat it, swapped lose.
  assert right < 2 * LOG2 < swapped
  # And it is density_ratio_loss with the posterior as numerator.
  for a, b in zip(dr.avb_discriminator_loss(t_post, t_prior),
                  dr.density_ratio_loss(t_post, t_prior), strict=True):
    np.testing.assert_array_equal(a, b)


def test_avb_kl_term_estimates_gaussian_kl():
  x, z_post, _, t, mean, s = _avb_setup(n=20_000)
  terms = dr.avb_kl_term(t(x, z_post))
  # KL(N(m, s²I) || N(0, I)) per x, in closed form.
  d = x.shape[1]
  kl = 0.5 * jnp.sum(mean**2, -1) + 0.5 * d * (s**2 - 1 - math.log(s**2))
  resid = terms - kl
  se = float(jnp.std(resid)) / math.sqrt(resid.size)
  assert abs(float(jnp.mean(resid))) < 4 * se
  np.testing.assert_array_equal(terms, t(x, z_post))


def test_avb_kl_term_gradient_through_z_is_the_kl_gradient():
  # AVB Proposition 2: with T* held fixed, differentiating T*(x, z(φ))
  # through the reparametrised z gives ∇_φ KL. Here q = N(μ, σ²), 1-D,
  # KL(q || N(0, 1)) = (μ² + σ² − 1)/2 − log σ, ∇ = (μ, σ − 1/σ).
  mu0, sigma0 = 0.7, 0.6
  eps = jax.random.normal(jax.random.key(0), (200_000,))

  def t_star(z):  # frozen at (mu0, sigma0): the "discriminator parameters"
    return (jax.scipy.stats.norm.logpdf(z, mu0, sigma0)
            - jax.scipy.stats.norm.logpdf(z))

  def encoder_kl(phi):
    z = phi[0] + phi[1] * eps
    return jnp.mean(dr.avb_kl_term(t_star(z)))

  g = jax.grad(encoder_kl)(jnp.array([mu0, sigma0]))
  np.testing.assert_allclose(g, [mu0, sigma0 - 1 / sigma0], atol=0.02)
  # With stop_gradient on the discriminator's parameters the same holds when
  # they share a pytree with the encoder's.
  def joint(params):
    frozen = jax.lax.stop_gradient(params["disc"])
    z = params["enc"][0] + params["enc"][1] * eps
    t = (jax.scipy.stats.norm.logpdf(z, frozen[0], frozen[1])
         - jax.scipy.stats.norm.logpdf(z))
    return jnp.mean(dr.avb_kl_term(t))

  params = {"enc": jnp.array([mu0, sigma0]), "disc": jnp.array([mu0, sigma0])}
  gj = jax.grad(joint)(params)
  np.testing.assert_allclose(gj["enc"], g, rtol=1e-5)
  np.testing.assert_array_equal(gj["disc"], 0.0)


def test_avb_elbo_is_exact_log_evidence_for_exact_posterior():
  # p(z) = N(0, 1), p(x|z) = N(z, s²): with q = the true posterior and the
  # exact T, log p(x|z) − T(x, z) = log p(x) = log N(x; 0, 1 + s²) for every z.
  s = 0.5
  x = jnp.linspace(-3.0, 3.0, 7)
  post_var = s**2 / (1 + s**2)
  post_mean = x / (1 + s**2)
  z = post_mean + math.sqrt(post_var) * jax.random.normal(jax.random.key(0),
                                                          (7,))
  log_lik = jax.scipy.stats.norm.logpdf(x, z, s)
  t = (jax.scipy.stats.norm.logpdf(z, post_mean, math.sqrt(post_var))
       - jax.scipy.stats.norm.logpdf(z))
  elbo = dr.avb_elbo(log_lik, t)
  want = stats.norm.logpdf(np.float64(x), 0.0, math.sqrt(1 + s**2))
  np.testing.assert_allclose(elbo, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(elbo, log_lik - t)


def test_add_prior_log_density():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(5, 3)) * 2
  t_net = rng.normal(size=(5,))
  prior = stats.multivariate_normal(np.zeros(3), np.eye(3))
  got = dr.add_prior_log_density(jnp.float32(t_net), jnp.float32(z),
                                 include_constant=True)
  np.testing.assert_allclose(got, t_net - prior.logpdf(z), rtol=1e-5)
  got0 = dr.add_prior_log_density(jnp.float32(t_net), jnp.float32(z))
  np.testing.assert_allclose(got0, t_net + 0.5 * np.sum(z**2, -1), rtol=1e-5)
  # A T_net that has learned only log q(z|x) then gives the exact log ratio.
  q = stats.multivariate_normal(np.ones(3), 0.3 * np.eye(3))
  t_total = dr.add_prior_log_density(jnp.float32(q.logpdf(z)), jnp.float32(z),
                                     include_constant=True)
  np.testing.assert_allclose(t_total, q.logpdf(z) - prior.logpdf(z),
                             rtol=1e-5)
  # Gradient w.r.t. z of the added term is z.
  g = jax.grad(lambda z: dr.add_prior_log_density(jnp.zeros(5), z).sum())(
      jnp.float32(z))
  np.testing.assert_allclose(g, z, rtol=1e-6)


# ----------------------------------------------------------------------------
# Adaptive contrast.
# ----------------------------------------------------------------------------


def _affine_inputs(seed=0, shape=(6, 3)):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=shape) * 2
  mean = rng.normal(size=shape)
  std = rng.uniform(0.2, 3.0, size=shape)
  return z, mean, std


def test_adaptive_contrast_normalize_inverse_and_log_det():
  z, mean, std = _affine_inputs()
  z_t, log_det = dr.adaptive_contrast_normalize(
      jnp.float32(z), jnp.float32(mean), jnp.float32(std))
  np.testing.assert_allclose(z_t, (z - mean) / std, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mean + std * np.asarray(z_t), z, rtol=1e-5,
                             atol=1e-5)
  # log|det| of the Jacobian of z ↦ z̃ for one row, from jax.jacobian+NumPy.
  for i in range(z.shape[0]):
    jac = jax.jacobian(lambda v, i=i: dr.adaptive_contrast_normalize(
        v, jnp.float32(mean[i]), jnp.float32(std[i]))[0])(jnp.float32(z[i]))
    np.testing.assert_allclose(log_det[i],
                               np.linalg.slogdet(np.asarray(jac))[1],
                               rtol=1e-5)


def test_auxiliary_log_density_and_correction_vs_scipy():
  z, mean, std = _affine_inputs(1)
  want_r = np.array([stats.multivariate_normal(m, np.diag(s**2)).logpdf(v)
                     for v, m, s in zip(z, mean, std, strict=True)])
  got_r = dr.auxiliary_log_density(jnp.float32(z), jnp.float32(mean),
                                   jnp.float32(std))
  np.testing.assert_allclose(got_r, want_r, rtol=1e-5)
  want_p = stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(z)
  got_c = dr.adaptive_contrast_correction(jnp.float32(z), jnp.float32(mean),
                                          jnp.float32(std))
  np.testing.assert_allclose(got_c, want_r - want_p, rtol=1e-5, atol=1e-5)


def test_adaptive_contrast_kl_is_exact_with_optimal_t():
  # q(z|x): a product of Laplace densities (not Gaussian), arbitrary (μ, σ).
  # With T*(z̃) = log q̃(z̃) − log N(z̃; 0, I) the decomposition must give
  # log q(z) − log p(z) pointwise.
  z, mean, std = _affine_inputs(2)
  loc, scale = 0.3, 0.7
  log_q = stats.laplace.logpdf(z, loc, scale).sum(-1)
  z_t, log_det = dr.adaptive_contrast_normalize(
      jnp.float32(z), jnp.float32(mean), jnp.float32(std))
  log_q_tilde = log_q - np.asarray(log_det)  # density of z̃
  t_star = log_q_tilde - stats.norm.logpdf(np.asarray(z_t)).sum(-1)
  got = dr.adaptive_contrast_kl(jnp.float32(t_star), jnp.float32(z),
                                jnp.float32(mean), jnp.float32(std))
  want = log_q - stats.norm.logpdf(z).sum(-1)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_adaptive_contrast_gaussian_q_needs_no_discriminator():
  # q(z|x) = N(m, s²) with its exact moments: q̃ = N(0, I), T* = 0, and the
  # analytic correction alone averages to KL(q || N(0, I)).
  m = jnp.array([1.0, -0.5, 2.0])
  s = jnp.array([0.3, 1.5, 0.8])
  n = 20_000
  z = m + s * jax.random.normal(jax.random.key(0), (n, 3))
  mean = jnp.broadcast_to(m, z.shape)
  std = jnp.broadcast_to(s, z.shape)
  terms = dr.adaptive_contrast_kl(jnp.zeros(n), z, mean, std)
  kl = float(jnp.sum(0.5 * (m**2 + s**2 - 1) - jnp.log(s)))
  se = float(jnp.std(terms)) / math.sqrt(n)
  assert abs(float(jnp.mean(terms)) - kl) < 4 * se


def test_estimate_moments():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(16, 4, 3)) * 2 + 1
  mean, std = dr.estimate_moments(jnp.float32(z), eps=1e-6)
  np.testing.assert_allclose(mean, z.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(std, np.sqrt(z.var(0) + 1e-6), rtol=1e-5)
  mean1, std1 = dr.estimate_moments(jnp.float32(z), axis=1)
  np.testing.assert_allclose(std1, np.sqrt(z.var(1) + 1e-6), rtol=1e-5)
  mean_n, _ = dr.estimate_moments(jnp.float32(z), axis=-1)
  np.testing.assert_allclose(mean_n, z.mean(-1), rtol=1e-5, atol=1e-6)
  # The centred formula keeps precision for a large offset.
  big = jnp.float32(rng.normal(size=(64, 2)) * 0.01 + 1e3)
  _, std_big = dr.estimate_moments(big, eps=0.0)
  np.testing.assert_allclose(std_big, np.asarray(big, np.float64).std(0),
                             rtol=1e-2)
  # Identical samples: σ = sqrt(eps) with finite gradients.
  same = jnp.ones((4, 3))
  _, std_same = dr.estimate_moments(same, eps=1e-6)
  np.testing.assert_allclose(std_same, 1e-3, rtol=1e-5)
  g = jax.grad(lambda v: dr.estimate_moments(v)[1].sum())(same)
  assert np.all(np.isfinite(g))
  # Gradient of the std vs the closed form (v − μ)/(S σ).
  zz = jnp.float32(z[:, 0, 0])
  _, s0 = dr.estimate_moments(zz, eps=0.0)
  g = jax.grad(lambda v: dr.estimate_moments(v, eps=0.0)[1])(zz)
  np.testing.assert_allclose(g, (zz - zz.mean()) / (zz.size * s0), rtol=1e-4,
                             atol=1e-6)


# ----------------------------------------------------------------------------
# Transformations and extremes.
# ----------------------------------------------------------------------------


def test_jit_vmap_grad_all():
  z, mean, std = (jnp.float32(a) for a in _affine_inputs(3, shape=(4, 5, 3)))
  t = jnp.float32(np.random.default_rng(3).normal(size=(4, 5)))
  fns = {
      "normalize": lambda t, z, m, s: dr.adaptive_contrast_normalize(z, m, s),
      "aux": lambda t, z, m, s: dr.auxiliary_log_density(z, m, s),
      "corr": lambda t, z, m, s: dr.adaptive_contrast_correction(z, m, s),
      "ackl": dr.adaptive_contrast_kl,
      "prior": lambda t, z, m, s: dr.add_prior_log_density(t, z),
      "drl": lambda t, z, m, s: dr.density_ratio_loss(t, -t),
      "avb": lambda t, z, m, s: dr.avb_discriminator_loss(t, -t),
      "elbo": lambda t, z, m, s: dr.avb_elbo(-t**2, t),
      "klterm": lambda t, z, m, s: dr.avb_kl_term(t),
      "ldr": lambda t, z, m, s: dr.log_density_ratio(t),
  }
  for name, fn in fns.items():
    direct = fn(t, z, mean, std)
    jitted = jax.jit(fn)(t, z, mean, std)
    mapped = jax.vmap(fn)(t, z, mean, std)
    for a, b, c in zip(jax.tree.leaves(direct), jax.tree.leaves(jitted),
                       jax.tree.leaves(mapped), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=name)
      np.testing.assert_allclose(a, c, rtol=1e-5, err_msg=name)
    scalar = lambda *args, fn=fn: sum(
        jnp.sum(leaf) for leaf in jax.tree.leaves(fn(*args)))
    grads = jax.grad(scalar, argnums=(0, 1, 2, 3))(t, z, mean, std)
    assert all(np.all(np.isfinite(g)) for g in grads), name
  # Grad of the losses vs closed form: d softplus(−T)/dT = −sigmoid(−T).
  g = jax.grad(lambda v: dr.density_ratio_loss(v, v)[0].sum())(t)
  np.testing.assert_allclose(g, -jax.nn.sigmoid(-t), rtol=1e-5)
  g = jax.grad(lambda v: dr.avb_discriminator_loss(v, v)[1].sum())(t)
  np.testing.assert_allclose(g, jax.nn.sigmoid(t), rtol=1e-5)


def test_extreme_logits_are_finite():
  ext = jnp.array([-1e4, -30.0, 0.0, 30.0, 1e4])
  for fn in (dr.density_ratio_loss, dr.avb_discriminator_loss):
    lp, lq = fn(ext, ext)
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(lq))
    np.testing.assert_allclose(lp[0], 1e4)
    np.testing.assert_allclose(lp[-1], 0.0, atol=1e-12)
    np.testing.assert_allclose(lq[-1], 1e4)
    g = jax.grad(lambda v, fn=fn: sum(jnp.sum(a) for a in fn(v, v)))(ext)
    assert np.all(np.isfinite(g))
  assert np.isfinite(dr.kl_estimate(ext))
  assert np.all(np.isfinite(dr.avb_elbo(ext, ext)))
  assert np.all(np.isfinite(jax.grad(lambda v: dr.avb_kl_term(v).sum())(ext)))
  # log-variances of ±30: σ = exp(±15).
  z = jnp.array([[0.5, -1.0]])
  mean = jnp.zeros((1, 2))
  for log_var in (-30.0, 30.0):
    std = jnp.full((1, 2), math.exp(log_var / 2))

    def f(z, m, s):
      return (dr.adaptive_contrast_kl(jnp.zeros(1), z, m, s).sum()
              + dr.auxiliary_log_density(z, m, s).sum()
              + dr.adaptive_contrast_normalize(z, m, s)[1].sum())

    assert np.isfinite(f(z, mean, std))
    grads = jax.grad(f, argnums=(0, 1, 2))(z, mean, std)
    assert all(np.all(np.isfinite(g)) for g in grads)


# ----------------------------------------------------------------------------
# Bad inputs.
# ----------------------------------------------------------------------------


def test_bad_inputs():
  ints = jnp.zeros(3, jnp.int32)
  f = jnp.zeros(3)
  with pytest.raises(TypeError, match="logits_p"):
    dr.density_ratio_loss(ints, f)
  with pytest.raises(TypeError, match="logits_q"):
    dr.density_ratio_loss(f, ints)
  with pytest.raises(TypeError, match="logits"):
    dr.log_density_ratio(ints)
  with pytest.raises(TypeError, match="logits_on_numerator_samples"):
    dr.kl_estimate(ints)
  with pytest.raises(ValueError, match="logits_on_numerator_samples"):
    dr.kl_estimate(jnp.zeros((0,)))
  # A list used to fail inside jnp.result_type without naming the argument.
  with pytest.raises(TypeError,
                     match="^logits_on_numerator_samples must be an array"):
    dr.kl_estimate([1.0, 2.0])
  with pytest.raises(TypeError, match="^logits_p must be an array"):
    dr.density_ratio_loss([0.0], f)
  with pytest.raises(TypeError, match="^t_prior must be an array"):
    dr.avb_discriminator_loss(f, [0.0])
  for eps in (float("nan"), float("inf")):
    with pytest.raises(ValueError, match="^eps must be finite"):
      dr.estimate_moments(jnp.zeros((2, 3)), eps=eps)
  with pytest.raises(TypeError):
    dr.kl_estimate(f, "data")  # axis_name is keyword-only
  with pytest.raises(TypeError, match="t_posterior"):
    dr.avb_discriminator_loss(ints, f)
  with pytest.raises(TypeError, match="t_prior"):
    dr.avb_discriminator_loss(f, ints)
  with pytest.raises(TypeError, match="t_posterior"):
    dr.avb_kl_term(ints)
  with pytest.raises(ValueError, match="t_posterior"):
    dr.avb_elbo(jnp.zeros(3), jnp.zeros(4))
  with pytest.raises(TypeError, match="log_likelihood"):
    dr.avb_elbo(ints, f)
  z = jnp.zeros((3, 2))
  with pytest.raises(ValueError, match="t must have shape"):
    dr.add_prior_log_density(jnp.zeros((3, 2)), z)
  with pytest.raises(ValueError, match="z must have rank"):
    dr.add_prior_log_density(jnp.float32(0.0), jnp.float32(0.0))
  with pytest.raises(TypeError, match="z"):
    dr.add_prior_log_density(jnp.zeros(3), jnp.zeros((3, 2), jnp.int32))
  for fn in (dr.adaptive_contrast_normalize, dr.auxiliary_log_density,
             dr.adaptive_contrast_correction):
    with pytest.raises(ValueError, match="mean"):
      fn(z, jnp.zeros((2,)), jnp.ones((3, 2)))  # no silent broadcasting
    with pytest.raises(ValueError, match="std"):
      fn(z, jnp.zeros((3, 2)), jnp.ones((1, 2)))
    with pytest.raises(TypeError, match="std"):
      fn(z, jnp.zeros((3, 2)), jnp.ones((3, 2), jnp.int32))
  with pytest.raises(ValueError, match="t_normalized"):
    dr.adaptive_contrast_kl(jnp.zeros(2), z, z, jnp.ones((3, 2)))
  with pytest.raises(TypeError, match="t_normalized"):
    dr.adaptive_contrast_kl(jnp.zeros(3, jnp.int32), z, z, jnp.ones((3, 2)))
  with pytest.raises(ValueError, match="z_samples"):
    dr.estimate_moments(jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match="axis"):
    dr.estimate_moments(jnp.zeros((4, 3)), axis=2)
  with pytest.raises(ValueError, match="eps"):
    dr.estimate_moments(jnp.zeros((4, 3)), eps=-1.0)
  with pytest.raises(TypeError, match="z_samples"):
    dr.estimate_moments(jnp.zeros((4, 3), jnp.int32))
