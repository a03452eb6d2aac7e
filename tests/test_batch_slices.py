"""Batch slices: the conv nets give the same outputs and gradients in slices, and "auto" picks them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.nn import batch_slices
from dgmjax.nn.conv import ConvDecoder, ConvEncoder
from dgmjax.nn.gan import DCGANDiscriminator, DCGANGenerator


def _nets():
  # NumPy inputs: an eager rank-4 jax.random draw compiles slowly (dgmjax.rng).
  r = np.random.default_rng(0)
  img = jnp.asarray(r.standard_normal((16, 28, 28, 1)), jnp.float32)
  return [
      ("encoder", lambda s: ConvEncoder((8, 16), 1, 8, 4, batch_slices=s), img),
      ("decoder", lambda s: ConvDecoder((16, 8), 1, 8, 1, batch_slices=s),
       jnp.asarray(r.standard_normal((16, 7, 7, 4)), jnp.float32)),
      ("generator", lambda s: DCGANGenerator((28, 28, 1), 8, batch_slices=s),
       jnp.asarray(r.standard_normal((16, 16)), jnp.float32)),
      ("discriminator", lambda s: DCGANDiscriminator(8, batch_slices=s), img),
  ]


# Two slices for the gradients (the forward pass in four is checked below).
@pytest.mark.parametrize("name,make,x", _nets(), ids=[n for n, *_ in _nets()])
def test_slices_equal_whole_batch(name, make, x, slices=2):
  whole, sliced = make(1), make(slices)
  params = whole.init(jax.random.key(1), x)
  # Same modules, same names: the parameter trees are interchangeable.
  assert jax.tree.structure(params) == jax.tree.structure(sliced.init(jax.random.key(1), x))

  def loss(net, p):
    out = net.apply(p, x)
    return jnp.sum(jnp.sin(out) * jnp.cos(3.0 * out)), out

  (l1, o1), g1 = jax.jit(jax.value_and_grad(lambda p: loss(whole, p), has_aux=True))(params)
  (l2, o2), g2 = jax.jit(jax.value_and_grad(lambda p: loss(sliced, p), has_aux=True))(params)
  np.testing.assert_allclose(np.asarray(o2), np.asarray(o1), rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
    scale = float(jnp.max(jnp.abs(a))) + 1e-6
    np.testing.assert_allclose(np.asarray(b) / scale, np.asarray(a) / scale, atol=1e-5)


def test_each_slice_is_the_net_on_that_slice():
  net = ConvEncoder((8, 16), 1, 8, 4, batch_slices=4)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((64, 28, 28, 1)), jnp.float32)
  params = net.init(jax.random.key(3), x)
  one = ConvEncoder((8, 16), 1, 8, 4, batch_slices=1)
  out = net.apply(params, x)
  for i in range(4):
    part = one.apply(params, x[16 * i:16 * (i + 1)])
    np.testing.assert_allclose(np.asarray(out[16 * i:16 * (i + 1)]), np.asarray(part),
                               rtol=1e-6, atol=1e-6)


def test_auto(monkeypatch):
  # The test session has 8 CPU devices: every device already has its core.
  assert batch_slices.resolve_slices("auto", 128) == 1
  monkeypatch.setattr(batch_slices.jax, "device_count", lambda: 1)
  for cores, batch, want in [(2, 128, 2), (4, 128, 4), (3, 128, 2), (2, 24, 1), (2, 33, 1),
                             (16, 128, 8), (1, 128, 1)]:
    monkeypatch.setattr(batch_slices, "usable_cores", lambda c=cores: c)
    assert batch_slices.resolve_slices("auto", batch) == want, (cores, batch)
  monkeypatch.setattr(batch_slices.jax, "default_backend", lambda: "gpu")
  assert batch_slices.resolve_slices("auto", 128) == 1


@pytest.mark.parametrize("bad,match", [(0, "int >= 1"), (True, "int >= 1"), ("two", "'auto'"),
                                       (3, "divide the batch size")])
def test_bad_slices(bad, match):
  with pytest.raises(ValueError, match=match):
    batch_slices.resolve_slices(bad, 128)
