"""Tests for dgmjax.nn.gan: PacGAN packing and the generator/discriminator nets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.nn.gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    pack,
)


def test_pack_vectors_concatenates_consecutive_samples():
  x = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
  for m in (1, 2, 3, 4):
    got = np.asarray(jax.jit(pack, static_argnums=1)(x, m))
    expect = np.stack([np.concatenate(list(x[j * m : (j + 1) * m])) for j in range(12 // m)])
    np.testing.assert_array_equal(got, expect)


def test_pack_images_stacks_channels():
  x = np.random.default_rng(1).normal(size=(6, 4, 5, 2)).astype(np.float32)
  got = np.asarray(pack(x, 3))
  assert got.shape == (2, 4, 5, 6)
  for j in range(2):
    expect = np.concatenate([x[3 * j + i] for i in range(3)], axis=-1)
    np.testing.assert_array_equal(got[j], expect)


def test_pack_bad_inputs():
  with pytest.raises(ValueError, match="pack_size"):
    pack(jnp.zeros((5, 2)), 2)
  with pytest.raises(ValueError, match="pack_size"):
    pack(jnp.zeros((4, 2)), 0)
  with pytest.raises(TypeError, match="pack_size"):
    pack(jnp.zeros((4, 2)), 2.0)
  with pytest.raises(ValueError, match="x"):
    pack(jnp.zeros((4, 2, 2)), 2)


def _batch_independent(apply, params, x):
  """Row i of f(batch) equals f(row i alone): no statistics across the batch."""
  full = np.asarray(apply(params, x))
  rows = np.concatenate([np.asarray(apply(params, x[i : i + 1])) for i in range(len(x))])
  np.testing.assert_allclose(full, rows, rtol=2e-5, atol=2e-6)
  return full


def test_mlp_nets_shapes_and_batch_independence():
  g, d = MLPGenerator((16, 16), 2), MLPDiscriminator((16, 16))
  z = jax.random.normal(jax.random.key(0), (5, 3))
  pg = g.init(jax.random.key(1), z)
  x = _batch_independent(g.apply, pg, z)
  assert x.shape == (5, 2)
  pd = d.init(jax.random.key(2), x)
  logits = _batch_independent(d.apply, pd, jnp.asarray(x))
  assert logits.shape == (5,)
  # Packed inputs: the discriminator simply sees m·d features.
  pd2 = d.init(jax.random.key(2), pack(jnp.zeros((4, 2)), 2))
  assert d.apply(pd2, pack(jnp.ones((4, 2)), 2)).shape == (2,)


def test_dcgan_generator_range_shape_and_batch_independence():
  shape = (28, 28, 1)
  g = DCGANGenerator(shape, base_channels=4)
  z = 3.0 * jax.random.normal(jax.random.key(0), (3, 8))
  params = g.init(jax.random.key(1), z)
  x = _batch_independent(jax.jit(g.apply), params, z)
  assert x.shape == (3, *shape)
  assert np.all(np.abs(x) <= 1.0)
  # Different latents give different images.
  assert np.abs(x[0] - x[1]).max() > 1e-3
  # Any size divisible by 4 (shapes only: nothing to compile).
  g32 = DCGANGenerator((32, 32, 3), base_channels=4)
  p32 = jax.eval_shape(g32.init, jax.random.key(0), z)
  assert jax.eval_shape(g32.apply, p32, z).shape == (3, 32, 32, 3)


def test_dcgan_generator_rejects_sizes_not_divisible_by_4():
  g = DCGANGenerator((30, 30, 1), base_channels=4)
  with pytest.raises(ValueError, match="image_shape"):
    g.init(jax.random.key(0), jnp.zeros((1, 8)))


def test_dcgan_discriminator_gradients_reach_every_pixel_and_packs():
  d = DCGANDiscriminator(base_channels=4)
  x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1), minval=-1, maxval=1)
  params = d.init(jax.random.key(1), x)
  logits = _batch_independent(jax.jit(d.apply), params, x)
  assert logits.shape == (4,)
  grad = jax.grad(lambda img: jnp.sum(d.apply(params, img)))(x)
  assert np.all(np.isfinite(np.asarray(grad)))
  # Every pixel is in the receptive field of the logit.
  assert np.mean(np.abs(np.asarray(grad)) > 0) > 0.99
  # A packed pair of images is one example with 2 channels.
  p2 = d.init(jax.random.key(1), pack(x, 2))
  assert d.apply(p2, pack(x, 2)).shape == (2,)


def test_discriminators_return_unbounded_logits():
  # The GAN losses take logits (softplus); a sigmoid inside D would cap them
  # at 1 and make log D(x) saturate. Scaling D's last layer scales its output.
  for d, x in ((MLPDiscriminator((8,)), jax.random.normal(jax.random.key(0), (6, 2))),
               (DCGANDiscriminator(4), jax.random.normal(jax.random.key(0), (6, 28, 28, 1)))):
    params = d.init(jax.random.key(1), x)
    last = sorted(params["params"])[-1]
    big = jax.tree.map(lambda p: p, params)
    big["params"][last] = jax.tree.map(lambda w: 1000.0 * w, params["params"][last])
    small, large = np.asarray(d.apply(params, x)), np.asarray(d.apply(big, x))
    np.testing.assert_allclose(large, 1000.0 * small, rtol=1e-4, atol=1e-3)
    assert np.max(np.abs(large)) > 1.0
