"""The quantizer layers: sharding, agreement with the pure functions, VQ-VAE tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dgmjax.losses import rvq, vq
from dgmjax.nn.quantizers import (
    FactorizedQuantizer,
    FSQuantizer,
    LookupFreeQuantizer,
    ResidualVectorQuantizer,
)
from dgmjax.nn.vq import VectorQuantizer
from dgmjax.nn.vqvae import QUANTIZERS, VQVAE

# Codebook sizes are chosen so that the training call restarts dead codes in
# every EMA layer (checked below): the restart's random draw of replacement
# vectors is where devices most easily disagree.
LAYERS = {
    "vq": (lambda ax: VectorQuantizer(16, 4, axis_name=ax), 4),
    "vq_loss": (lambda ax: VectorQuantizer(16, 4, use_ema=False, axis_name=ax), 4),
    "rotation": (lambda ax: VectorQuantizer(16, 4, gradient="rotation", axis_name=ax), 4),
    "fsq": (lambda ax: FSQuantizer((5, 4, 3), axis_name=ax), 3),
    "rvq": (lambda ax: ResidualVectorQuantizer(32, 4, num_stages=3, dropout_rate=1.0,
                                               axis_name=ax), 4),
    "lfq": (lambda ax: LookupFreeQuantizer(4, temperature=0.5, axis_name=ax), 4),
    "factorized": (lambda ax: FactorizedQuantizer(32, 6, lookup_dim=3, axis_name=ax), 6),
}
RESTARTS = ("vq", "rotation", "rvq", "factorized")


def _train(layer, var, z, key):
  return layer.apply(var, z, train=True, mutable=["vq_ema"], rngs={"vq_restart": key})


def _summary(out, upd, var_grad):
  return {"z": out.z, "indices": out.indices, "loss": out.loss, "counts": out.counts,
          "perplexity": out.perplexity, "codes_used": out.codes_used,
          "restarted": out.restarted, "updates": upd, "grad": var_grad}


def _run(layer, var, z, key):
  def loss(z):
    out, upd = _train(layer, var, z, key)
    return jnp.sum(out.z * jnp.cos(out.z)) + jnp.sum(out.loss), (out, upd)

  (_, (out, upd)), g = jax.value_and_grad(loss, has_aux=True)(z)
  return _summary(out, upd, g)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_sharded_equals_single_device(name):
  make, dim = LAYERS[name]
  z = jax.random.normal(jax.random.key(0), (32, 3, dim)) * 1.5
  key = jax.random.key(5)
  single = make(None)
  var = single.init(jax.random.key(1), z)
  # Jitted on one device too: op-by-op Flax is slower than compiling.
  want = jax.jit(lambda var, z: _run(single, var, z, key))(var, z)
  assert (int(want["restarted"]) > 0) == (name in RESTARTS)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  zs = jax.device_put(z, NamedSharding(mesh, P("data")))
  got_jit = jax.jit(lambda var, z: _run(single, var, z, key))(var, zs)

  sharded = make("data")
  batch_keys = ("z", "indices", "loss", "grad")

  def local(var, z):
    return _run(sharded, var, z, key)

  specs = {k: (P("data") if k in batch_keys else P()) for k in want}
  got_sm = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")),
                                 out_specs=specs))(var, zs)
  for got in (got_jit, got_sm):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for path_a, b in zip(jax.tree.leaves_with_path(got), jax.tree.leaves(want), strict=True):
      path, a = path_a
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6,
                                 err_msg=jax.tree_util.keystr(path))


def test_rvq_layer_equals_pure_function_and_dropout_skips_stages():
  layer = ResidualVectorQuantizer(8, 3, num_stages=3, use_ema=False)
  z = jax.random.normal(jax.random.key(0), (40, 3))
  var = layer.init(jax.random.key(1), z)
  cbs = layer.apply(var, method=lambda m: m.codebooks)
  out = layer.apply(var, z)
  ref = rvq.residual_quantize(z, cbs)
  np.testing.assert_array_equal(np.asarray(out.indices), np.asarray(ref.indices))
  np.testing.assert_allclose(np.asarray(out.z), np.asarray(ref.z_q), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out.loss),
                             np.asarray(rvq.residual_vq_loss(ref, beta=0.25).sum(-1)),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(layer.apply(var, out.indices, method="lookup")),
                             np.asarray(out.z), rtol=1e-6, atol=1e-6)

  ema = ResidualVectorQuantizer(8, 3, num_stages=3, dropout_rate=1.0, dead_code_threshold=0.0)
  var = ema.init(jax.random.key(1), z)
  seen = set()
  for i in range(12):
    out, upd = _train(ema, var, z, jax.random.key(i))
    n = int(out.num_active)
    seen.add(n)
    idx = np.asarray(out.indices)
    assert np.all(idx[:, :n] >= 0) and np.all(idx[:, n:] == -1)
    np.testing.assert_array_equal(np.asarray(out.stage_loss)[:, n:], 0.0)
    for s in range(3):
      old = var["vq_ema"][f"stages_{s}"]["state"].cluster_size
      new = upd["vq_ema"][f"stages_{s}"]["state"].cluster_size
      assert bool(jnp.array_equal(old, new)) == (s >= n)
  assert seen == {1, 2, 3}


def test_rotation_option_same_forward_rotated_gradient():
  z = jax.random.normal(jax.random.key(0), (20, 4))
  ste, rot = VectorQuantizer(16, 4, use_ema=False), VectorQuantizer(16, 4, use_ema=False,
                                                                      gradient="rotation")
  var = ste.init(jax.random.key(1), z)
  assert jax.tree.structure(var) == jax.tree.structure(rot.init(jax.random.key(1), z))
  w = jax.random.normal(jax.random.key(2), z.shape)
  o_ste, o_rot = ste.apply(var, z), rot.apply(var, z)
  np.testing.assert_array_equal(np.asarray(o_ste.z), np.asarray(o_rot.z))
  g = jax.grad(lambda z: jnp.sum(w * rot.apply(var, z).z))(z)
  want = jax.grad(lambda z: jnp.sum(w * vq.rotation_trick(z, o_rot.z_q)))(z)
  np.testing.assert_allclose(np.asarray(g), np.asarray(want), rtol=1e-6, atol=1e-6)
  assert not np.allclose(np.asarray(g), np.asarray(w), atol=1e-3)  # not straight-through
  with pytest.raises(ValueError, match="gradient"):
    VectorQuantizer(16, 4, gradient="sto").init(jax.random.key(0), z)


def test_lfq_layer_loss_mean_is_commitment_plus_penalty():
  layer = LookupFreeQuantizer(3, beta=0.5, entropy_weight=0.2, gamma=0.8, temperature=0.7)
  z = np.asarray(jax.random.normal(jax.random.key(0), (50, 3)), np.float64)
  out = layer.apply({}, jnp.asarray(z, jnp.float32))
  q = np.where(z > 0, 1.0, -1.0)
  np.testing.assert_array_equal(np.asarray(out.z), q)
  # NumPy: p(c|z) = softmax_c(−‖z − c‖²/τ) over the 8 corners.
  codes = np.array([[(c >> k) & 1 for k in range(3)] for c in range(8)]) * 2.0 - 1.0
  logits = -((z[:, None] - codes) ** 2).sum(-1) / 0.7
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  h_x = -(p * np.log(p)).sum(-1)
  pbar = p.mean(0)
  penalty = h_x.mean() + 0.8 * (pbar * np.log(pbar)).sum()
  want = 0.5 * np.mean((z - q) ** 2) + 0.2 * penalty
  # The penalty is a small difference of O(1) entropies: absolute tolerance.
  assert float(jnp.mean(out.loss)) == pytest.approx(want, abs=1e-6)
  np.testing.assert_array_equal(np.asarray(out.counts),
                                np.bincount(((z > 0) * [1, 2, 4]).sum(-1), minlength=8))


# A conv VQ-VAE compiles for about 30 s of CPU per quantizer; the default run
# keeps RVQ (the quantizer whose tokens have an extra stage axis), the others
# run with -m slow (and "vq" also in test_nn_vq.py).
@pytest.mark.parametrize("quantizer", [
    q if q == "rvq" else pytest.param(q, marks=pytest.mark.slow) for q in QUANTIZERS])
def test_vqvae_tokens_decode_to_the_reconstruction(quantizer):
  model = VQVAE(quantizer=quantizer, num_codes=16, code_dim=4, channels=(4, 4), res_hidden=4,
                num_res_blocks=1, levels=(4, 3, 3), num_stages=3)
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))

  @jax.jit  # one compilation: the conv stack dominates the test's time
  def run(x):
    var = model.init(jax.random.key(1), x)
    # One training call first so that EMA/restarts have moved the codebook.
    _, upd = model.apply(var, x, train=True, mutable=["vq_ema"],
                         rngs={"vq_restart": jax.random.key(3)})
    var = {**var, **upd}
    x_rec, out, _ = model.apply(var, x)
    idx = model.apply(var, x, method="encode")
    return x_rec, out.indices, idx, model.apply(var, idx, method="decode_indices")

  x_rec, out_idx, idx, dec = run(x)
  want_shape = (2, 2, 2, 3) if quantizer == "rvq" else (2, 2, 2)
  assert idx.shape == want_shape and idx.dtype == jnp.int32
  assert int(idx.min()) >= 0 and int(idx.max()) < model.vocab_size
  np.testing.assert_array_equal(np.asarray(idx), np.asarray(out_idx))
  np.testing.assert_allclose(np.asarray(dec), np.asarray(x_rec), rtol=1e-5, atol=1e-6)


def test_vqvae_default_is_the_plain_vq_model():
  kw = dict(num_codes=16, code_dim=4, channels=(4, 4), res_hidden=4, num_res_blocks=1)
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
  model = VQVAE(**kw)
  var = model.init(jax.random.key(1), x)
  assert set(var["params"]) == {"encoder", "decoder"}
  assert set(var["vq_ema"]) == {"quantizer"}
  # The quantizer is the plain VectorQuantizer on the encoder output.
  z_e = model.apply(var, x, method=lambda m, x: m.encoder(x))
  layer = VectorQuantizer(16, 4, dead_code_threshold=0.01)
  _, out, _ = model.apply(var, x)
  ref = layer.apply({"vq_ema": var["vq_ema"]["quantizer"]}, z_e)
  for a, b in zip(out, ref, strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="power of two"):
    VQVAE(**{**kw, "num_codes": 12}, quantizer="lfq").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="quantizer"):
    VQVAE(**kw, quantizer="pq").init(jax.random.key(0), x)
