"""Tests for dgmjax.eval.ais on a linear-Gaussian model with a closed-form log p(x)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dgmjax.eval import ais
from dgmjax.losses import elbo

# z ~ N(0, I_3), x | z ~ N(W z + b, σ² I_6): p(x) = N(b, W Wᵀ + σ² I). With
# σ = 0.3 the posterior (sd ≈ 0.15–0.3 per axis) is far narrower than the
# prior, so importance sampling from the prior is a poor proposal.
LATENT, OBS, SIGMA = 3, 6, 0.3
_rng = np.random.default_rng(0)
W = (0.6 * _rng.standard_normal((OBS, LATENT))).astype(np.float32)
B = (0.5 * _rng.standard_normal(OBS)).astype(np.float32)
log_prior, sample_prior = ais.standard_normal_prior(LATENT)


def log_likelihood(z, x):
  mean = z @ jnp.asarray(W).T + jnp.asarray(B)
  return (-0.5 * jnp.sum((x - mean) ** 2, -1) / SIGMA**2
          - OBS * math.log(SIGMA) - 0.5 * OBS * math.log(2 * math.pi))


def true_log_px(x):
  cov = W.astype(np.float64) @ W.T.astype(np.float64) + SIGMA**2 * np.eye(OBS)
  return stats.multivariate_normal(B.astype(np.float64), cov).logpdf(np.asarray(x, np.float64))


def simulate(seed, n):
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, LATENT)).astype(np.float32)
  x = z @ W.T + B + SIGMA * rng.standard_normal((n, OBS)).astype(np.float32)
  return jnp.asarray(z), jnp.asarray(x)


def run_ais(key, x, **kw):
  kw = dict(num_steps=500, num_chains=32, step_size=0.3) | kw
  return ais.ais_log_prob(key, x, log_prior=log_prior, log_likelihood=log_likelihood,
                          sample_prior=sample_prior, **kw)


def mc_error(log_weights):
  """Delta-method standard error of logmeanexp over chains, per example."""
  lw = np.asarray(log_weights, np.float64)
  w = np.exp(lw - lw.max(1, keepdims=True))
  return w.std(1, ddof=1) / w.mean(1) / math.sqrt(lw.shape[1])


def test_sigmoid_schedule_is_monotone_with_exact_ends_and_symmetric():
  beta = np.asarray(ais.sigmoid_schedule(50), np.float64)
  assert beta[0] == 0.0 and beta[-1] == 1.0
  assert np.all(np.diff(beta) > 0)
  # σ(−t) = 1 − σ(t): the schedule is point-symmetric about (T/2, 1/2).
  np.testing.assert_allclose(beta + beta[::-1], 1.0, atol=1e-6)


def test_constant_likelihood_gives_exactly_its_value():
  # The weights telescope to Σ_t (β_t − β_{t−1}) · c = c whatever HMC does.
  const = lambda z, x: jnp.full(z.shape[:1], -3.25) + 0.0 * jnp.sum(z, -1)
  out = ais.ais_log_prob(jax.random.key(0), jnp.zeros((2, 1)), log_prior=log_prior,
                         log_likelihood=const, sample_prior=sample_prior, num_steps=20,
                         num_chains=4)
  np.testing.assert_allclose(out.log_weights, -3.25, rtol=1e-5)
  np.testing.assert_allclose(out.log_prob, -3.25, rtol=1e-5)


def test_ais_matches_the_closed_form_and_beats_a_poor_iwae():
  _, x = simulate(1, 8)
  truth = true_log_px(x)
  out = run_ais(jax.random.key(2), x)
  err = np.asarray(out.log_prob, np.float64) - truth
  se = mc_error(out.log_weights)
  # Stated accuracy for T = 500, C = 32: the Monte-Carlo s.e. of each
  # estimate is below 0.12 nat, each lies within 4 s.e. (+0.03 for the
  # s.e.'s own noise), and the average over 8 examples within 0.08.
  assert np.all(se < 0.12), se
  assert np.all(np.abs(err) < 4 * se + 0.03), (err, se)
  assert abs(err.mean()) < 0.08, err
  # The step size was steered toward 0.65 acceptance.
  assert np.all((out.acceptance_rate > 0.5) & (out.acceptance_rate < 0.9)), out.acceptance_rate

  # IWAE-16 with the prior as proposal (deliberately poor: the posterior is
  # ~100× smaller in volume). Single draws of L_k can exceed log p(x); their
  # mean over 40 independent draws estimates E[L_16] <= log p(x).
  def log_weight_fn(key, n):
    z = sample_prior(key, n * x.shape[0]).reshape(n, x.shape[0], LATENT)
    return jax.vmap(lambda zz: log_likelihood(zz, x))(z)

  draws = jax.jit(jax.vmap(lambda key: elbo.chunked_iwae_bound(
      log_weight_fn, key, 16, chunk_size=16)))(jax.random.split(jax.random.key(3), 40))
  draws = np.asarray(draws, np.float64)
  iwae, iwae_se = draws.mean(0), draws.std(0, ddof=1) / math.sqrt(40)
  ais_est = np.asarray(out.log_prob, np.float64)
  assert np.all(iwae < truth + 3 * iwae_se)
  assert np.all(ais_est >= iwae - 3 * iwae_se - 4 * se)
  assert np.mean(ais_est - iwae) > 0.5  # and clearly better on average


@pytest.mark.parametrize("num_steps,max_gap", [(500, 0.4), (10, None)])
def test_bdmc_brackets_the_truth(num_steps, max_gap):
  z_star, x = simulate(4, 8)
  truth = true_log_px(x)
  out = ais.bdmc(jax.random.key(5), x, z_star, log_prior=log_prior,
                 log_likelihood=log_likelihood, sample_prior=sample_prior,
                 num_steps=num_steps, num_chains=32, step_size=0.3)
  lower = np.asarray(out.lower, np.float64)
  upper = np.asarray(out.upper, np.float64)
  slack_lo = 3 * mc_error(out.forward.log_weights)
  slack_hi = 3 * mc_error(out.reverse.log_weights)
  assert np.all(lower <= truth + slack_lo), (lower - truth, slack_lo)
  assert np.all(upper >= truth - slack_hi), (upper - truth, slack_hi)
  gap = upper - lower
  if max_gap is not None:
    assert np.all(gap < max_gap), gap
  else:
    # Ten temperatures are far too few: both bounds are loose, the sandwich
    # says so (on average more than a nat apart), and it still holds.
    assert gap.mean() > 1.0, gap


def test_bad_inputs_raise_naming_the_argument():
  x = jnp.zeros((2, OBS))
  with pytest.raises(ValueError, match="log_likelihood"):
    ais.ais_log_prob(jax.random.key(0), x, log_prior=log_prior,
                     log_likelihood=lambda z, x: jnp.sum(z), sample_prior=sample_prior)
  with pytest.raises(TypeError, match="x must have a floating"):
    ais.ais_log_prob(jax.random.key(0), x.astype(jnp.int32), log_prior=log_prior,
                     log_likelihood=log_likelihood, sample_prior=sample_prior)
  with pytest.raises(ValueError, match="target_acceptance"):
    run_ais(jax.random.key(0), x, target_acceptance=1.0)
  with pytest.raises(ValueError, match="z_posterior must have 2 rows"):
    ais.reverse_ais_log_prob(jax.random.key(0), x, jnp.zeros((3, LATENT)),
                             log_prior=log_prior, log_likelihood=log_likelihood)


# --- AIS on the project's own decoder models (issue: the AVB toy and the VAE) ---
# Both have a 2-D latent, so the exact log p(x) is a grid quadrature
# (dgmjax.eval.likelihood.grid_log_marginal) to compare against.


def _sharpened(params, factor):
  """A decoder sharper than at init, so the posterior is far from the prior."""
  return {**params, "decoder": jax.tree.map(lambda p: factor * p, params["decoder"])}


def _exact_and_ais(decode_logits, log_lik, x):
  """Grid log p(x) of a 2-D-latent Bernoulli decoder, and AIS's estimate and s.e."""
  from dgmjax.eval import likelihood

  exact = likelihood.grid_log_marginal(decode_logits, np.asarray(x).reshape(x.shape[0], -1),
                                       size=512)
  lp, sp = ais.standard_normal_prior(2)
  out = ais.ais_log_prob(jax.random.key(1), x, log_prior=lp, sample_prior=sp,
                         log_likelihood=log_lik, num_steps=300, num_chains=32, step_size=0.3)
  return exact, np.asarray(out.log_prob, np.float64), mc_error(out.log_weights)


def test_ais_on_the_avb_toy_agrees_with_the_exact_grid_value():
  from dgmjax.models.avb import make_avb

  model = make_avb(image_shape=(2, 2, 1), latent_dim=2, noise_dim=3, hidden=(16, 16),
                   disc_hidden=(16, 16))
  points = jnp.eye(4).reshape(4, 2, 2, 1)  # the toy's four one-hot 2×2 images
  params, _ = model.init(jax.random.key(0), points)
  params = _sharpened(params, 2.0)
  dec = lambda z: model.decoder.apply(params["decoder"], z).reshape(z.shape[0], -1)
  exact, est, se = _exact_and_ais(dec, lambda z, x: model.log_likelihood(params, z, x), points)
  assert np.all(np.abs(est - exact) < 4 * se + 0.03), (est - exact, se)
  assert abs(np.mean(est - exact)) < 0.03, est - exact


def test_ais_on_a_vae_beats_iwae_k_and_agrees_with_iwae_5000():
  from dgmjax.eval import surgery_report
  from dgmjax.models.vae import make_vae

  model = make_vae(arch="mlp", image_shape=(4, 4, 1), latent_dim=2, prior="gaussian",
                   hidden=(32,))
  x = jnp.asarray(np.random.default_rng(0).random((6, 4, 4, 1)) < 0.4, jnp.float32)
  params = _sharpened(model.init(jax.random.key(0), x), 2.0)
  dec = lambda z: model.decode(params, z).reshape(z.shape[0], -1)
  exact, est, se = _exact_and_ais(dec, lambda z, xx: model.log_likelihood(params, z, xx), x)

  def iwae(k, keys):  # one compiled call for all keys: (len(keys), 6)
    fn = jax.vmap(lambda key: surgery_report.iwae(model, params, x, key, num_samples=k,
                                                  chunk_size=min(k, 1000)))
    return np.asarray(jax.jit(fn)(keys), np.float64)

  # IWAE-8 with the (untrained, so poor) encoder as proposal: E[L_8] over 40
  # draws is a lower bound that AIS must not fall below.
  draws = iwae(8, jax.random.split(jax.random.key(2), 40))
  iwae8, iwae8_se = draws.mean(0), draws.std(0, ddof=1) / math.sqrt(40)
  assert np.all(iwae8 < exact + 3 * iwae8_se)  # the bound is below the truth
  assert np.all(est >= iwae8 - 3 * iwae8_se - 4 * se), (est - iwae8, iwae8_se, se)
  assert np.mean(est - iwae8) > 0.1  # and clearly above it on average
  # AIS against the exact value, then against IWAE-5000 (three draws
  # averaged: with this poor proposal one draw of L_5000 still scatters by
  # ~0.05 nat), within AIS's own stated Monte-Carlo error.
  assert np.all(np.abs(est - exact) < 4 * se + 0.03), (est - exact, se)
  iwae5000 = iwae(5000, jax.random.split(jax.random.key(3), 3)).mean(0)
  assert np.all(np.abs(est - iwae5000) < 4 * se + 0.06), (est - iwae5000, se)
