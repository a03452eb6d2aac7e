"""Gaussian VAE encoders/decoders: sample axes, both architectures, reparameterisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.nn.vae import (
    ConvGaussianDecoder,
    ConvGaussianEncoder,
    MLPDecoder,
    MLPEncoder,
    make_encoder_decoder,
    reparameterize,
)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_decoder_over_sample_axes_equals_one_call_per_sample(arch):
  enc, dec = make_encoder_decoder(arch, image_shape=(28, 28, 1), latent_dim=3,
                                  hidden=(16,), channels=(4, 8), res_hidden=4)
  x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
  z = jax.random.normal(jax.random.key(2), (2, 2, 3))

  @jax.jit
  def run(x, z):
    p_enc = enc.init(jax.random.key(1), x)
    p_dec = dec.init(jax.random.key(3), z[0])
    per_sample = jnp.stack([dec.apply(p_dec, z[k]) for k in range(z.shape[0])])
    return (enc.apply(p_enc, x), enc.apply(p_enc, x[1:])[0], dec.apply(p_dec, z),
            per_sample)

  (mean, log_var), mean_tail, out, per_sample = run(x, z)
  assert mean.shape == log_var.shape == (2, 3)
  assert out.shape == (2, 2, 28, 28, 1)
  np.testing.assert_allclose(out, per_sample, rtol=1e-5, atol=1e-5)
  # Encoding is per example: a batch equals its rows encoded one at a time.
  np.testing.assert_allclose(mean_tail, mean[1:], rtol=1e-5, atol=1e-5)


def test_mirrored_widths_and_module_types():
  enc, dec = make_encoder_decoder("mlp", image_shape=(28, 28, 1), latent_dim=5,
                                  hidden=(64, 32))
  assert isinstance(enc, MLPEncoder) and isinstance(dec, MLPDecoder)
  assert enc.hidden == (64, 32) and dec.hidden == (32, 64)
  enc, dec = make_encoder_decoder("conv", image_shape=(32, 32, 3), latent_dim=5,
                                  channels=(8, 16))
  assert isinstance(enc, ConvGaussianEncoder) and isinstance(dec, ConvGaussianDecoder)
  assert dec.channels == (16, 8)
  z = jnp.zeros((2, 5))
  assert jax.eval_shape(lambda: dec.apply(dec.init(jax.random.key(0), z), z)).shape == (
      2, 32, 32, 3)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_gradients_reach_every_parameter(arch):
  enc, dec = make_encoder_decoder(arch, image_shape=(28, 28, 1), latent_dim=2,
                                  hidden=(8,), channels=(4, 4), res_hidden=4)
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))

  def loss(p):
    mean, log_var = enc.apply(p["enc"], x)
    z = reparameterize(jax.random.key(3), mean, log_var)
    return jnp.mean((dec.apply(p["dec"], z) - x) ** 2) + jnp.mean(log_var ** 2)

  @jax.jit
  def grads():
    params = {"enc": enc.init(jax.random.key(1), x),
              "dec": dec.init(jax.random.key(2), jnp.zeros((3, 2)))}
    return jax.grad(loss)(params)

  for g in jax.tree.leaves(grads()):
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.max(jnp.abs(g))) > 0


def test_reparameterize_moments_and_pathwise_gradient():
  mean = jnp.array([[1.0, -2.0]])
  log_var = jnp.log(jnp.array([[0.25, 4.0]]))
  z = reparameterize(jax.random.key(0), mean, log_var, num_samples=20_000)
  assert z.shape == (20_000, 1, 2)
  sd = np.sqrt([0.25, 4.0])
  np.testing.assert_allclose(z.mean(0)[0], mean[0], atol=float(5 * sd.max() / np.sqrt(20_000)))
  np.testing.assert_allclose(z.std(0)[0], sd, rtol=0.03)
  # dz/dμ = 1 and dz/dlog σ² = ½σε = ½(z − μ).
  key = jax.random.key(1)
  g_mean = jax.grad(lambda m: reparameterize(key, m, log_var).sum())(mean)
  np.testing.assert_allclose(g_mean, 1.0)
  g_lv = jax.grad(lambda lv: reparameterize(key, mean, lv).sum())(log_var)
  np.testing.assert_allclose(g_lv, 0.5 * (reparameterize(key, mean, log_var) - mean), rtol=1e-5)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="arch"):
    make_encoder_decoder("resnet", image_shape=(28, 28, 1), latent_dim=2)
  with pytest.raises(ValueError, match="latent_dim"):
    make_encoder_decoder("mlp", image_shape=(28, 28, 1), latent_dim=0)
  with pytest.raises(ValueError, match="multiples of 4"):
    make_encoder_decoder("conv", image_shape=(30, 30, 1), latent_dim=2)
  enc = MLPEncoder(latent_dim=2, hidden=(4,))
  with pytest.raises(ValueError, match="x must be images"):
    enc.init(jax.random.key(0), jnp.zeros((3, 784)))
  with pytest.raises(ValueError, match="log_var"):
    reparameterize(jax.random.key(0), jnp.zeros((2, 3)), jnp.zeros((2, 2)))
