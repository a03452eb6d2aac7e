"""dgmjax.nn.dvae: code samplers per estimator, log q(c|x), the modules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.losses import gumbel
from dgmjax.nn import dvae


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _softmax_vjp(logits, w):
  """Closed form: d(w·softmax(l))/dl = p ⊙ (w − p·w)."""
  p = _softmax(np.asarray(logits, np.float64))
  return p * (w - (p * w).sum(-1, keepdims=True))


LOGITS = jnp.array([[0.3, -1.2, 2.0, 0.1], [1.5, 1.4, -0.5, 0.0]])
W = np.array([[1.0, -2.0, 0.5, 3.0], [0.2, 0.0, -1.0, 2.0]])


def test_gumbel_softmax_is_the_relaxed_sample_of_the_lecture():
  key, tau = jax.random.key(3), 0.7
  y = dvae.sample_codes(key, LOGITS, estimator="gumbel_softmax", temperature=tau)
  # Same noise as the library's sampler draws from this key.
  g = np.asarray(gumbel.gumbel_noise(key, LOGITS.shape))
  np.testing.assert_allclose(np.asarray(y), _softmax((np.asarray(LOGITS) + g) / tau),
                             rtol=1e-5, atol=1e-6)


def test_st_gumbel_is_one_hot_forward_with_the_soft_gradient():
  key, tau = jax.random.key(5), 0.5
  hard = dvae.sample_codes(key, LOGITS, estimator="st_gumbel", temperature=tau)
  soft = dvae.sample_codes(key, LOGITS, estimator="gumbel_softmax", temperature=tau)
  np.testing.assert_array_equal(np.asarray(hard), np.eye(4)[np.argmax(soft, -1)])
  f = lambda est: lambda lg: jnp.sum(dvae.sample_codes(key, lg, estimator=est,
                                                       temperature=tau) * W)
  g_hard = jax.grad(f("st_gumbel"))(LOGITS)
  g_soft = jax.grad(f("gumbel_softmax"))(LOGITS)
  np.testing.assert_allclose(np.asarray(g_hard), np.asarray(g_soft), rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(g_hard).max()) > 1e-3


@pytest.mark.parametrize("estimator", ["st_argmax", "st_categorical"])
def test_straight_through_estimators_use_the_softmax_jacobian(estimator):
  key = jax.random.key(1)
  y = dvae.sample_codes(key, LOGITS, estimator=estimator)
  assert set(np.unique(np.asarray(y))) <= {0.0, 1.0}
  np.testing.assert_array_equal(np.asarray(y).sum(-1), 1.0)
  if estimator == "st_argmax":  # deterministic: the mode of q
    np.testing.assert_array_equal(np.asarray(y), np.eye(4)[np.argmax(LOGITS, -1)])
  grad = jax.grad(lambda lg: jnp.sum(dvae.sample_codes(key, lg, estimator=estimator) * W))(LOGITS)
  np.testing.assert_allclose(np.asarray(grad), _softmax_vjp(LOGITS, W), rtol=1e-5, atol=1e-6)


def test_st_categorical_samples_follow_q():
  logits = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
  n = 20000
  keys = jax.random.split(jax.random.key(0), n)
  ys = jax.vmap(lambda k: dvae.sample_codes(k, logits, estimator="st_categorical"))(keys)
  freq = np.asarray(ys).mean(0)
  # 5 standard errors of a binomial proportion.
  se = np.sqrt(np.array([0.1, 0.2, 0.3, 0.4]) * 0.9 / n)
  np.testing.assert_array_less(np.abs(freq - [0.1, 0.2, 0.3, 0.4]), 5 * se + 1e-9)


def test_sample_codes_rejects_an_unknown_estimator():
  with pytest.raises(ValueError, match="estimator"):
    dvae.sample_codes(jax.random.key(0), LOGITS, estimator="reinforce")
  with pytest.raises(ValueError, match="temperature"):
    dvae.sample_codes(jax.random.key(0), LOGITS, estimator="gumbel_softmax", temperature=0.0)


def test_hard_codes_are_exact_samples_of_q_without_gradient():
  p = np.array([0.5, 0.25, 0.15, 0.1])
  logits = jnp.broadcast_to(jnp.log(jnp.asarray(p, jnp.float32)), (40000, 4))
  c = np.asarray(jax.jit(dvae.hard_codes)(jax.random.key(7), logits))
  assert set(np.unique(c)) == {0.0, 1.0}
  np.testing.assert_array_equal(c.sum(-1), 1.0)
  se = np.sqrt(p * (1 - p) / len(c))
  np.testing.assert_array_less(np.abs(c.mean(0) - p), 5 * se)
  g = jax.grad(lambda lg: jnp.sum(dvae.hard_codes(jax.random.key(0), lg) * W))(LOGITS)
  np.testing.assert_array_equal(np.asarray(g), 0.0)
  # Finite for extreme logits.
  ext = dvae.hard_codes(jax.random.key(0), jnp.array([[1e4, -1e4, 0.0]]))
  np.testing.assert_array_equal(np.asarray(ext), [[1.0, 0.0, 0.0]])


def test_codes_log_prob_matches_numpy_and_broadcasts_a_prior():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 4)).astype(np.float32)  # batch 3, 5 variables
  idx = rng.integers(0, 4, size=(3, 5))
  codes = np.eye(4, dtype=np.float32)[idx]
  logq = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  want = np.take_along_axis(logq, idx[..., None], -1)[..., 0].sum(-1)
  got = jax.jit(dvae.codes_log_prob)(codes, logits)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
  prior = logits[0]  # (5, 4), shared by the batch
  want_p = np.take_along_axis(logq[0][None].repeat(3, 0), idx[..., None], -1)[..., 0].sum(-1)
  np.testing.assert_allclose(np.asarray(dvae.codes_log_prob(codes, prior)), want_p, rtol=1e-5)
  # A 2-D grid of variables (the dVAE): event_ndims=2 sums both grid axes.
  grid = codes.reshape(3, 5, 1, 4)
  np.testing.assert_allclose(
      np.asarray(dvae.codes_log_prob(grid, logits.reshape(3, 5, 1, 4), event_ndims=2)),
      want, rtol=1e-5)
  with pytest.raises(ValueError, match="broadcast"):
    dvae.codes_log_prob(codes, logits[:, :, :3])
  with pytest.raises(TypeError, match="codes"):
    dvae.codes_log_prob(idx, logits)


def test_mlp_encoder_decoder_have_jangs_architecture():
  x = jnp.zeros((2, 28, 28, 1))
  enc = dvae.MLPEncoder(num_vars=30, num_classes=10)
  p_enc = jax.jit(enc.init)(jax.random.key(0), x)
  logits = jax.jit(enc.apply)(p_enc, x)
  assert logits.shape == (2, 30, 10)
  n_enc = sum(v.size for v in jax.tree.leaves(p_enc))
  assert n_enc == (784 * 512 + 512) + (512 * 256 + 256) + (256 * 300 + 300)
  dec = dvae.MLPDecoder(out_shape=(28, 28, 1))
  p_dec = jax.jit(dec.init)(jax.random.key(1), jax.nn.softmax(logits))
  out = jax.jit(dec.apply)(p_dec, jax.nn.softmax(logits))
  assert out.shape == (2, 28, 28, 1)
  n_dec = sum(v.size for v in jax.tree.leaves(p_dec))
  assert n_dec == (300 * 256 + 256) + (256 * 512 + 512) + (512 * 784 + 784)


def test_codebook_mixes_embeddings_and_trains_only_used_codes():
  book = dvae.Codebook(num_codes=5, code_dim=3)
  params = book.init(jax.random.key(0), jnp.zeros((1, 5)))
  table = np.asarray(params["params"]["embedding"])
  one_hot = jax.nn.one_hot(jnp.array([[2, 4]]), 5)  # (1, 2, 5)
  np.testing.assert_array_equal(np.asarray(book.apply(params, one_hot)), table[[[2, 4]]])
  mix = jnp.array([0.1, 0.2, 0.3, 0.4, 0.0])
  np.testing.assert_allclose(np.asarray(book.apply(params, mix)), mix @ table, rtol=1e-6)
  grad = jax.grad(lambda p: jnp.sum(book.apply(p, one_hot) ** 2))(params)
  g = np.asarray(grad["params"]["embedding"])
  np.testing.assert_allclose(g[[2, 4]], 2 * table[[2, 4]], rtol=1e-6)
  np.testing.assert_array_equal(g[[0, 1, 3]], 0.0)
  with pytest.raises(ValueError, match="codes"):
    book.apply(params, jnp.zeros((1, 4)))


def test_conv_dvae_maps_images_to_a_grid_of_code_logits_and_back():
  enc = dvae.ConvCodeEncoder(num_codes=16, channels=(8, 8), res_hidden=8)
  dec = dvae.ConvCodeDecoder(num_codes=16, code_dim=4, channels=(8, 8), res_hidden=8,
                             out_channels=2)

  @jax.jit
  def run(x):  # one compilation for everything (conv compiles are slow on CPU)
    p_enc = enc.init(jax.random.key(0), x)
    logits = enc.apply(p_enc, x)
    codes = jax.nn.one_hot(jnp.zeros(logits.shape[:-1], jnp.int32), 16)
    p_dec = dec.init(jax.random.key(1), codes)
    # Two grids that differ in the top-left latent cell only.
    other = codes.at[:, 0, 0].set(jax.nn.one_hot(5, 16))
    out = dec.apply(p_dec, jnp.concatenate([codes[:1], other[:1]]))

    def loss(pe):
      y = dvae.sample_codes(jax.random.key(2), enc.apply(pe, x),
                            estimator="gumbel_softmax", temperature=1.0)
      return jnp.sum(dec.apply(p_dec, y) ** 2)

    return logits, out, jax.grad(loss)(p_enc)

  x = jax.random.uniform(jax.random.key(3), (2, 28, 28, 1))
  logits, out, g = run(x)
  assert logits.shape == (2, 7, 7, 16)
  assert out.shape == (2, 28, 28, 2)
  # The decoder is a function of the code grid and is local: changing the
  # code of the top-left cell changes the top-left pixels and leaves the
  # bottom-right 12 × 12 pixels (beyond its receptive field) untouched.
  out = np.asarray(out)
  assert np.max(np.abs(out[0, :4, :4] - out[1, :4, :4])) > 1e-4
  np.testing.assert_allclose(out[0, 16:, 16:], out[1, 16:, 16:], rtol=1e-6, atol=1e-6)
  # Gradients reach the encoder through a relaxed sample.
  assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(g))
  assert max(float(jnp.abs(v).max()) for v in jax.tree.leaves(g)) > 0
