"""dgmjax.eval.likelihood.two_stage_neg_elbo (the other estimators: tests/test_ais.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.eval import likelihood

X = np.array([-1.5, -0.2, 0.0, 0.7, 2.0, 3.0, -3.0], np.float32)
LOG_OWN = np.log(0.5)
LOG_LEARNED = np.log(np.array([0.2, 0.8]))


@jax.jit
def _posterior_sample(x, keys):
  """One binary code per image, q(c=1|x) = sigmoid(x); log p(x|c) = -(x - c)^2."""
  u = jax.vmap(lambda k: jax.random.uniform(k))(keys)
  c = (u < jax.nn.sigmoid(x)).astype(jnp.int32)
  log_q = jnp.where(c == 1, jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x))
  return c, -(x - c) ** 2, jnp.full(x.shape, LOG_OWN), log_q


@jax.jit
def _log_learned(c):
  return jnp.asarray(LOG_LEARNED)[c]


def _exact(log_prior_of):
  """E_q[(x - c)^2 + log q(c|x) - log p(c)] by enumerating c in {0, 1}."""
  q1 = 1 / (1 + np.exp(-X.astype(np.float64)))
  terms = [(X - c) ** 2 + np.log(q) - log_prior_of(c) for c, q in ((0, 1 - q1), (1, q1))]
  return (1 - q1) * terms[0] + q1 * terms[1], terms


def test_two_stage_neg_elbo_is_the_expected_bound_and_ignores_the_batch_size():
  key, n = jax.random.key(0), 500
  learned, own = likelihood.two_stage_neg_elbo(
      _posterior_sample, _log_learned, X, key=key, num_samples=n, batch_size=3)
  for got, log_prior_of in ((learned, lambda c: LOG_LEARNED[c]), (own, lambda c: LOG_OWN)):
    want, (t0, t1) = _exact(log_prior_of)
    q1 = 1 / (1 + np.exp(-X.astype(np.float64)))
    sd = np.sqrt(q1 * (1 - q1)) * np.abs(t1 - t0) / np.sqrt(n)  # Monte Carlo error
    assert np.all(np.abs(got - want) <= 4 * sd + 1e-4)
  # The same draws, so the two bounds differ only by the prior's log-density.
  assert abs(learned.mean() - own.mean()) > 0.1
  # Keys follow the image's index, not its place in a batch.
  for b in (1, 7):
    again = likelihood.two_stage_neg_elbo(
        _posterior_sample, _log_learned, X, key=key, num_samples=20, batch_size=b)
    ref = likelihood.two_stage_neg_elbo(
        _posterior_sample, _log_learned, X, key=key, num_samples=20, batch_size=3)
    np.testing.assert_allclose(again, ref, rtol=1e-6)
