"""The Flax VQ layer and VQ-VAE model against the pure functions they wrap."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dgmjax.losses import vq
from dgmjax.nn.vq import VectorQuantizer
from dgmjax.nn.vqvae import VQVAE


def _apply_train(layer, variables, z, key=None):
  key = jax.random.key(7) if key is None else key
  return layer.apply(variables, z, train=True, mutable=["vq_ema"], rngs={"vq_restart": key})


def test_forward_is_nearest_code_and_gradient_is_straight_through():
  layer = VectorQuantizer(16, 4, use_ema=False)
  z = jax.random.normal(jax.random.key(0), (3, 5, 4))
  var = layer.init(jax.random.key(1), z)
  out = layer.apply(var, z)
  cb = np.asarray(var["params"]["codebook"])
  d = ((np.asarray(z)[..., None, :] - cb) ** 2).sum(-1)
  np.testing.assert_array_equal(np.asarray(out.indices), d.argmin(-1))
  np.testing.assert_array_equal(np.asarray(out.z), cb[d.argmin(-1)])
  # d(sum(w * z_st))/dz = w exactly: the straight-through Jacobian is I.
  w = jax.random.normal(jax.random.key(2), z.shape)
  g = jax.grad(lambda z: jnp.sum(w * layer.apply(var, z).z))(z)
  np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
  # The codebook is learned by the codebook loss: it gets a gradient.
  gp = jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, z).loss))(var["params"])
  assert float(jnp.abs(gp["codebook"]).sum()) > 0


def test_ema_layer_update_equals_pure_function():
  layer = VectorQuantizer(8, 3, decay=0.9, dead_code_threshold=0.0)
  z = jax.random.normal(jax.random.key(0), (64, 3))
  var = layer.init(jax.random.key(1), z)
  assert "params" not in var or "codebook" not in var.get("params", {})
  out, upd = _apply_train(layer, var, z)
  state = var["vq_ema"]["state"]
  want = vq.ema_update(state, z, vq.nearest_code(z, state.codebook), decay=0.9)
  for a, b in zip(upd["vq_ema"]["state"], want, strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  # Not training: no update, and the histogram is the true one.
  counts = np.bincount(np.asarray(out.indices), minlength=8)
  np.testing.assert_array_equal(np.asarray(out.counts), counts)


def test_restart_with_more_codes_than_vectors():
  layer = VectorQuantizer(64, 2, dead_code_threshold=1.0)
  z = jax.random.normal(jax.random.key(0), (2, 2, 2)) + 10.0  # 4 vectors, far from init
  var = layer.init(jax.random.key(1), z)
  out, upd = _apply_train(layer, var, z)
  cb = np.asarray(upd["vq_ema"]["state"].codebook)
  rows = np.asarray(z).reshape(-1, 2)
  restarted = int(out.restarted)
  assert restarted >= 60  # nearly every code was dead
  # Every restarted code is one of the 4 encoder vectors.
  is_row = (np.abs(cb[:, None] - rows[None]).max(-1) < 1e-6).any(1)
  assert is_row.sum() >= restarted


def test_cosine_codes_stay_unit_norm():
  layer = VectorQuantizer(8, 4, cosine=True)
  z = jax.random.normal(jax.random.key(0), (32, 4)) * 5
  var = layer.init(jax.random.key(1), z)
  for i in range(3):
    out, upd = _apply_train(layer, var, z, jax.random.key(i))
    var = {**var, **upd}
  np.testing.assert_allclose(np.linalg.norm(np.asarray(var["vq_ema"]["state"].codebook), axis=1),
                             1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out.z_q), axis=-1), 1.0, rtol=1e-5)


def test_layer_under_shard_map_equals_single_device():
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  z = jax.random.normal(jax.random.key(0), (64, 6, 4))
  single = VectorQuantizer(32, 4, dead_code_threshold=1.0)
  sharded = VectorQuantizer(32, 4, dead_code_threshold=1.0, axis_name="data")
  var = single.init(jax.random.key(1), z)
  out1, upd1 = _apply_train(single, var, z)

  def f(var, z):
    out, upd = _apply_train(sharded, var, z)
    return upd, out.perplexity, out.restarted

  fn = jax.shard_map(f, mesh=mesh, in_specs=(P(), P("data")), out_specs=(P(), P(), P()))
  upd8, ppl8, rs8 = jax.jit(fn)(var, jax.device_put(z, NamedSharding(mesh, P("data"))))
  for a, b in zip(upd1["vq_ema"]["state"], upd8["vq_ema"]["state"], strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(out1.perplexity), float(ppl8), rtol=1e-6)
  assert int(out1.restarted) == int(rs8)


def test_bad_inputs():
  layer = VectorQuantizer(8, 3)
  with pytest.raises(ValueError, match="code_dim"):
    layer.init(jax.random.key(0), jnp.zeros((4, 5)))
  with pytest.raises(ValueError, match="num_codes"):
    VectorQuantizer(1, 3).init(jax.random.key(0), jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match="decay"):
    VectorQuantizer(8, 3, decay=1.0).init(jax.random.key(0), jnp.zeros((4, 3)))


def test_vqvae_tokens_round_trip():
  model = VQVAE(num_codes=16, code_dim=4, channels=(8, 8), res_hidden=8, num_res_blocks=1)
  x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
  var = model.init(jax.random.key(1), x)
  x_rec, out, z_e = model.apply(var, x)
  idx = model.apply(var, x, method="encode")
  assert idx.shape == (2, 7, 7) and idx.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(idx), np.asarray(out.indices))
  dec = model.apply(var, idx, method="decode_indices")
  np.testing.assert_allclose(np.asarray(dec), np.asarray(x_rec), rtol=1e-5, atol=1e-6)
  # 32x32x3 gives an 8x8 grid.
  model3 = functools.partial(VQVAE, num_codes=16, code_dim=4, channels=(8, 8),
                             res_hidden=8, num_res_blocks=1)(out_channels=3)
  x3 = jnp.zeros((1, 32, 32, 3))
  v3 = model3.init(jax.random.key(0), x3)
  assert model3.apply(v3, x3, method="encode").shape == (1, 8, 8)
  assert model3.apply(v3, x3)[0].shape == (1, 32, 32, 3)
