"""dgmjax.nn.avb: implicit encoder and the AVB discriminator T(x, z).

Properties: sample axes broadcast exactly like one call per sample; the noise
really changes z (an implicit q is not deterministic) while x is embedded
once; T adds exactly ‖z‖²/2 when asked and depends on both x and z; a T
trained with the AVB loss on a known Gaussian q(z|x) recovers
log q(z|x) − log p(z) and the analytic KL; bad shapes are rejected.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgmjax.losses import density_ratio as dr
from dgmjax.losses import elbo
from dgmjax.nn.avb import Discriminator, ImplicitEncoder, sample_noise


def _toy_images(n=3):
  return jnp.eye(4)[jnp.arange(n) % 4].reshape(n, 2, 2, 1)


@pytest.mark.parametrize("every", [True, False])
def test_encoder_sample_axes_equal_one_call_per_sample(every):
  enc = ImplicitEncoder(latent_dim=3, hidden=(16, 8), noise_every_layer=every)
  x = _toy_images(3)
  eps = sample_noise(jax.random.key(0), (5, 3, 4))
  params = enc.init(jax.random.key(1), x, eps)
  z = enc.apply(params, x, eps)
  assert z.shape == (5, 3, 3)
  for s in range(5):
    np.testing.assert_allclose(z[s], enc.apply(params, x, eps[s]), rtol=1e-6, atol=1e-6)
  # Per example: one image at a time gives the same rows.
  np.testing.assert_allclose(enc.apply(params, x[1:2], eps[:, 1:2]), z[:, 1:2],
                             rtol=1e-6, atol=1e-6)
  # The noise matters: two draws for the same x differ, and the samples of
  # one x have a non-degenerate spread in every latent direction.
  many = enc.apply(params, x, sample_noise(jax.random.key(2), (2000, 3, 4)))
  assert np.all(np.std(np.asarray(many), axis=0) > 1e-3)
  noise_layers = [k for k in params["params"] if k.startswith("noise")]
  assert len(noise_layers) == (3 if every else 1)


def test_encoder_gradients_reach_every_parameter():
  enc = ImplicitEncoder(latent_dim=2, hidden=(8, 8))
  x = _toy_images(4)
  eps = sample_noise(jax.random.key(0), (2, 4, 3))
  params = enc.init(jax.random.key(1), x, eps)
  grads = jax.grad(lambda p: jnp.sum(enc.apply(p, x, eps) ** 2))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.max(jnp.abs(g))) > 0, path


def test_discriminator_prior_term_is_exactly_half_squared_norm():
  x = _toy_images(3)
  z = jax.random.normal(jax.random.key(0), (4, 3, 2))
  with_term = Discriminator(hidden=(8, 8), add_prior_term=True)
  without = Discriminator(hidden=(8, 8), add_prior_term=False)
  params = with_term.init(jax.random.key(1), x, z)
  t1, t0 = with_term.apply(params, x, z), without.apply(params, x, z)
  assert t1.shape == (4, 3)
  np.testing.assert_allclose(t1 - t0, 0.5 * np.sum(np.asarray(z) ** 2, -1), rtol=1e-5,
                             atol=1e-5)
  for s in range(4):
    np.testing.assert_allclose(t1[s], with_term.apply(params, x, z[s]), rtol=1e-5, atol=1e-6)


def test_discriminator_depends_on_x_and_z():
  disc = Discriminator(hidden=(16,), x_hidden=(8,), add_prior_term=False)
  x = _toy_images(4)
  z = jax.random.normal(jax.random.key(0), (4, 2))
  params = disc.init(jax.random.key(1), x, z)
  gx = jax.grad(lambda xx: jnp.sum(disc.apply(params, xx, z)))(x)
  gz = jax.grad(lambda zz: jnp.sum(disc.apply(params, x, zz)))(z)
  assert float(jnp.abs(gx).sum()) > 0 and float(jnp.abs(gz).sum()) > 0
  # Per-example: the logit of pair i does not depend on the other pairs.
  gz_one = jax.grad(lambda zz: disc.apply(params, x, zz)[0])(z)
  np.testing.assert_array_equal(np.asarray(gz_one[1:]), 0.0)


def test_bad_shapes_are_rejected():
  enc = ImplicitEncoder(latent_dim=2, hidden=(8,))
  disc = Discriminator(hidden=(8,))
  x = _toy_images(3)
  with pytest.raises(ValueError, match="eps"):
    enc.init(jax.random.key(0), x, jnp.zeros((2, 4, 3)))  # batch 4 vs 3
  with pytest.raises(ValueError, match="x must be images"):
    enc.init(jax.random.key(0), x.reshape(3, 4), jnp.zeros((3, 3)))
  with pytest.raises(ValueError, match="z"):
    disc.init(jax.random.key(0), x, jnp.zeros((5, 2)))
  with pytest.raises(ValueError, match="hidden"):
    ImplicitEncoder(latent_dim=2, hidden=()).init(jax.random.key(0), x, jnp.zeros((3, 3)))


def test_trained_discriminator_recovers_log_ratio_and_kl():
  """Known q(z|x_i) = N(m_i, s_i² I) for the four toy images, p = N(0, I)."""
  means = jnp.array([[1.5, 0.0], [0.0, 1.5], [-1.5, 0.0], [0.0, -1.5]])
  stds = jnp.array([0.5, 0.7, 0.5, 0.7])[:, None] * jnp.ones((4, 2))
  points = jnp.eye(4).reshape(4, 2, 2, 1)
  disc = Discriminator(hidden=(64, 64), add_prior_term=True)
  params = disc.init(jax.random.key(0), points, means)
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  def draw(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    idx = jax.random.randint(k1, (n,), 0, 4)
    z_post = means[idx] + stds[idx] * jax.random.normal(k2, (n, 2))
    return points[idx], z_post, jax.random.normal(k3, (n, 2))

  @jax.jit
  def step(params, opt, key):
    x, z_post, z_prior = draw(key, 512)

    def loss(p):
      lp, lq = dr.avb_discriminator_loss(disc.apply(p, x, z_post), disc.apply(p, x, z_prior))
      return jnp.mean(lp) + jnp.mean(lq)

    updates, opt = tx.update(jax.grad(loss)(params), opt)
    return optax.apply_updates(params, updates), opt

  for i in range(600):
    params, opt = step(params, opt, jax.random.key(100 + i))
  x, z, _ = draw(jax.random.key(7), 20000)
  t = disc.apply(params, x, z)
  idx = jnp.argmax(x.reshape(-1, 4), axis=-1)
  log_q = elbo.log_normal_diag(z, means[idx], 2 * jnp.log(stds[idx]))
  true_ratio = log_q - elbo.log_standard_normal(z)
  kl = float(jnp.mean(elbo.gaussian_kl_standard(means[idx], 2 * jnp.log(stds[idx]))))
  est = float(dr.kl_estimate(t))
  assert abs(est - kl) / kl < 0.1, (est, kl)
  # Pointwise, where q has its mass, T tracks the log ratio closely.
  assert float(jnp.corrcoef(t, true_ratio)[0, 1]) > 0.95
