"""dgmjax.nn.transformer: KV cache, causality, conditioning, bidirectional mode."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgmjax.losses import tokens as token_losses
from dgmjax.nn.transformer import TokenTransformer, extend_cache

V, N, B = 11, 9, 3


def _model(**kw):
  cfg = dict(vocab_size=V, seq_len=N, num_layers=2, width=32, num_heads=4)
  cfg.update(kw)
  return TokenTransformer(**cfg)


@functools.lru_cache(maxsize=None)
def _random_params(model, seed):
  # Init is N(0, 0.02): logits nearly constant, so differences would be tiny
  # whatever the bug; O(1) weights make every test sensitive. Drawn with
  # NumPy on the abstract shapes: nothing to compile.
  shapes = jax.eval_shape(
      model.init, jax.random.key(0), jnp.zeros((B, N), jnp.int32)
  )
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape), x.dtype), shapes
  )


@functools.lru_cache(maxsize=None)
def _apply(model):
  return jax.jit(model.apply)


def _setup(seed=0, **kw):
  model = _model(**kw)
  tokens = jax.random.randint(jax.random.key(seed + 100), (B, N), 0, V)
  labels = jnp.arange(B) % model.num_classes if model.num_classes else None
  return model, _random_params(model, seed), tokens, labels


@pytest.mark.parametrize("conditional", [False, True])
def test_kv_cache_matches_full_recompute_step_by_step(conditional):
  model, params, tokens, labels = _setup(num_classes=3)
  labels = labels if conditional else None
  full = np.asarray(_apply(model)(params, tokens, labels))
  assert np.std(full) > 0.1  # the randomised weights give non-trivial logits
  step = jax.jit(
      functools.partial(model.apply, method=TokenTransformer.decode_step)
  )
  cache = model.init_cache(B)
  prev = jnp.zeros((B,), jnp.int32)
  for i in range(N):
    logits, cache = step(params, prev, jnp.int32(i), cache, labels)
    np.testing.assert_allclose(logits, full[:, i], atol=1e-5, rtol=0)
    prev = tokens[:, i]


def test_a_cache_grown_block_by_block_matches_full_recompute():
  # The blocked sampler's cache: as long as the positions decoded so far,
  # lengthened with zeros (extend_cache) before each block.
  model, params, tokens, labels = _setup(seed=2, num_classes=3)
  full = np.asarray(_apply(model)(params, tokens, labels))
  step = jax.jit(
      functools.partial(model.apply, method=TokenTransformer.decode_step)
  )
  cache = model.init_cache(B, length=2)
  assert cache["k"][0].shape == (B, 4, 2, 8)
  prev = jnp.zeros((B,), jnp.int32)
  for i in range(N):
    if i >= cache["k"][0].shape[2]:
      old = cache
      cache = extend_cache(cache, min(i + 3, N))
      np.testing.assert_array_equal(cache["v"][1][:, :, :i], old["v"][1])
      assert not np.any(np.asarray(cache["v"][1][:, :, i:]))
    logits, cache = step(params, prev, jnp.int32(i), cache, labels)
    np.testing.assert_allclose(logits, full[:, i], atol=1e-5, rtol=0)
    prev = tokens[:, i]
  assert extend_cache(cache, N) is cache
  with pytest.raises(ValueError, match="length"):
    extend_cache(cache, N - 1)
  with pytest.raises(ValueError, match="length"):
    model.init_cache(B, length=N + 1)


def test_kv_cache_inside_scan_matches_full_recompute():
  model, params, tokens, labels = _setup(seed=3, num_classes=3)

  def body(cache, xs):
    i, prev = xs
    logits, cache = model.apply(
        params, prev, i, cache, labels, method=TokenTransformer.decode_step
    )
    return cache, logits

  prevs = jnp.concatenate([jnp.zeros((1, B), jnp.int32), tokens[:, :-1].T])
  _, logits = jax.jit(
      lambda: jax.lax.scan(body, model.init_cache(B), (jnp.arange(N), prevs))
  )()
  full = _apply(model)(params, tokens, labels)
  np.testing.assert_allclose(jnp.swapaxes(logits, 0, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("t", [0, 4, N - 2])
def test_causal_logits_ignore_the_future(t):
  model, params, tokens, _ = _setup(seed=5, num_classes=3)
  changed = tokens.at[:, t].set((tokens[:, t] + 1) % V)
  a = np.asarray(_apply(model)(params, tokens))
  b = np.asarray(_apply(model)(params, changed))
  # Output i predicts x_i from x_<i, so positions <= t must not move ...
  np.testing.assert_array_equal(a[:, : t + 1], b[:, : t + 1])
  # ... and the next one must.
  assert np.abs(a[:, t + 1] - b[:, t + 1]).max() > 1e-3


def test_class_token_is_used():
  model, params, tokens, _ = _setup(seed=7, num_classes=3)
  logits = [
      np.asarray(_apply(model)(params, tokens, jnp.full((B,), c))) for c in range(3)
  ]
  unconditional = np.asarray(_apply(model)(params, tokens))
  for c in range(3):
    for d in range(c + 1, 3):
      # Every position sees the class (the token is at position 0).
      assert (np.abs(logits[c] - logits[d]).max(axis=-1) > 1e-3).all()
    assert np.abs(logits[c] - unconditional).max() > 1e-3
  # Labels are per example: example 0 with class 2 is unaffected by the
  # labels of the other examples.
  mixed = np.asarray(_apply(model)(params, tokens, jnp.array([2, 0, 1])))
  np.testing.assert_allclose(mixed[0], logits[2][0], atol=1e-6)


def test_bidirectional_mode_sees_future_tokens_and_mask_token():
  model, params, tokens, _ = _setup(seed=9, causal=False)
  assert model.mask_id == V
  base = np.asarray(_apply(model)(params, tokens))
  changed = np.asarray(_apply(model)(params, tokens.at[:, -1].set((tokens[:, -1] + 1) % V)))
  assert np.abs(base[:, 0] - changed[:, 0]).max() > 1e-3
  masked = np.asarray(_apply(model)(params, tokens.at[:, -1].set(model.mask_id)))
  assert np.abs(base[:, 0] - masked[:, 0]).max() > 1e-3
  assert base.shape == (B, N, V)  # logits over codes, never the mask token


def test_bidirectional_mode_is_permutation_equivariant_without_positions():
  # With positional embeddings zeroed, full attention treats the sequence as
  # a set: permuting the tokens permutes the logits. A causal mask or a bug
  # mixing positions would break this identity.
  model, params, tokens, _ = _setup(seed=9, causal=False)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.zeros_like(x) if "pos_embed" in jax.tree_util.keystr(p) else x,
      params,
  )
  perm = np.random.default_rng(0).permutation(N)
  a = np.asarray(_apply(model)(params, tokens))
  b = np.asarray(_apply(model)(params, tokens[:, perm]))
  np.testing.assert_allclose(b, a[:, perm], atol=1e-5)


@pytest.mark.slow
def test_class_conditional_model_learns_one_sequence_per_class():
  # Two classes, one fixed sequence each: the loss can reach ~0 only if the
  # class token steers the prediction at every position.
  model = _model(num_classes=2, seq_len=6)
  seqs = jnp.array([[1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 8, 9]])
  labels = jnp.array([0, 1])
  params = jax.jit(model.init)(jax.random.key(0), seqs, labels)
  opt = optax.adam(3e-3)
  opt_state = opt.init(params)

  def loss_fn(p):
    logits = model.apply(p, seqs, labels)
    return token_losses.token_cross_entropy(logits, seqs).mean()

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    updates, s = opt.update(g, s, p)
    return optax.apply_updates(p, updates), s, loss

  for _ in range(150):
    params, opt_state, loss = step(params, opt_state)
  assert float(loss) < 0.05
  pred = np.asarray(_apply(model)(params, seqs, labels)).argmax(-1)
  np.testing.assert_array_equal(pred, seqs)


def test_bad_inputs_are_rejected():
  model, params, tokens, labels = _setup(num_classes=3)
  with pytest.raises(TypeError, match="tokens"):
    model.apply(params, tokens.astype(jnp.float32))
  with pytest.raises(ValueError, match="positions"):
    model.apply(params, tokens[:, :-1])
  with pytest.raises(ValueError, match="labels"):
    model.apply(params, tokens, jnp.zeros((B + 1,), jnp.int32))
  with pytest.raises(ValueError, match="divisible"):
    jax.eval_shape(_model(width=30, num_heads=4).init, jax.random.key(0), tokens)
  bi, bi_params, _, _ = _setup(seed=9, causal=False)
  with pytest.raises(ValueError, match="causal"):
    bi.apply(bi_params, tokens[:, 0], 0, bi.init_cache(B),
             method=TokenTransformer.decode_step)
