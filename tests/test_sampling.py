"""dgmjax.sampling: filtering vs NumPy, samplers vs known distributions, MaskGIT."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dgmjax import sampling
from dgmjax.nn.transformer import TokenTransformer

P_VALUE = 1e-3

# --------------------------------------------------------------------------
# filter_logits


def _np_filter(logits, temperature=1.0, top_k=None, top_p=None):
  """The definition, row by row, in float64."""
  out = []
  for row in np.asarray(logits, np.float64).reshape(-1, logits.shape[-1]):
    z = row / temperature
    order = np.argsort(-z, kind="stable")
    keep_sorted = np.ones(len(z), bool)
    if top_k is not None:
      keep_sorted[top_k:] = False
    if top_p is not None:
      zs = np.where(keep_sorted, z[order], -np.inf)
      ps = np.exp(zs - zs.max())
      ps /= ps.sum()
      keep_sorted &= (np.cumsum(ps) - ps) < top_p
      keep_sorted[0] = True
    keep = np.empty(len(z), bool)
    keep[order] = keep_sorted
    kept = np.where(keep, z, -np.inf)
    m = kept.max()
    out.append(kept - (m + np.log(np.exp(kept - m).sum())))
  return np.array(out).reshape(logits.shape)


_filter = jax.jit(
    sampling.filter_logits, static_argnames=("temperature", "top_k", "top_p")
)


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [
        (1.0, None, None),
        (0.7, 3, None),
        (1.0, None, 0.6),
        (1.5, 5, 0.8),
        (1.0, 1, None),
        (1.0, 50, 1.0),
    ],
)
def test_filter_matches_numpy(temperature, top_k, top_p):
  rng = np.random.default_rng(0)
  logits = (2 * rng.normal(size=(2, 5, 9))).astype(np.float32)
  logits[0, 0, :4] = -np.inf  # forbidden tokens stay forbidden
  got = np.asarray(_filter(jnp.asarray(logits), temperature=temperature,
                           top_k=top_k, top_p=top_p))
  want = _np_filter(logits, temperature, top_k, top_p)
  np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
  finite = np.isfinite(want)
  np.testing.assert_allclose(got[finite], want[finite], atol=2e-6)
  assert not np.isnan(got).any()
  if top_k is not None and top_k < logits.shape[-1]:
    assert (np.isfinite(got).sum(-1) <= top_k).all()


def test_filter_top_p_keeps_the_shortest_prefix_reaching_p():
  probs = np.array([0.1, 0.4, 0.05, 0.3, 0.15])
  got = np.exp(np.asarray(_filter(jnp.log(jnp.asarray(probs)), top_p=0.75)))
  # Sorted 0.4, 0.3, 0.15, ...: 0.4 + 0.3 = 0.7 < 0.75, so 0.15 is needed.
  want = np.array([0, 0.4, 0, 0.3, 0.15]) / 0.85
  np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        (dict(top_k=0), ValueError, "top_k"),
        (dict(top_k=2.5), TypeError, "top_k"),
        (dict(top_p=0.0), ValueError, "top_p"),
        (dict(top_p=1.5), ValueError, "top_p"),
        (dict(top_p=float("nan")), ValueError, "top_p"),
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(temperature=float("nan")), ValueError, "temperature"),
    ],
)
def test_filter_rejects_bad_hyperparameters(kwargs, exc, name):
  with pytest.raises(exc, match=name):
    sampling.filter_logits(jnp.zeros((2, 4)), **kwargs)


# --------------------------------------------------------------------------
# The generic sampler driven by a known bigram table.

INIT = np.array([0.1, 0.2, 0.3, 0.4])
TABLE = np.array(
    [
        [0.5, 0.3, 0.2, 0.0],
        [0.0, 0.1, 0.3, 0.6],
        [0.25, 0.0, 0.25, 0.5],
        [0.45, 0.35, 0.0, 0.2],
    ]
)


def _bigram_step(state, prev, index):
  log_init, log_table = state
  logits = jnp.where(index == 0, log_init[None], log_table[prev])
  return logits, state


def _bigram_state():
  with np.errstate(divide="ignore"):
    return (jnp.asarray(np.log(INIT), jnp.float32),
            jnp.asarray(np.log(TABLE), jnp.float32))


def _transition_counts(x):
  counts = np.zeros((4, 4))
  np.add.at(counts, (x[:, :-1].ravel(), x[:, 1:].ravel()), 1)
  return counts


def _chi2_rows(counts, probs):
  """One chi-square test over all rows' allowed cells together."""
  stat, dof = 0.0, 0
  for c, p in zip(counts, probs, strict=True):
    allowed = p > 0
    assert c[~allowed].sum() == 0, "a token outside the allowed set was drawn"
    expected = c.sum() * p[allowed]
    stat += ((c[allowed] - expected) ** 2 / expected).sum()
    dof += allowed.sum() - 1
  return stats.chi2.sf(stat, dof)


def _renormalised_top_k(p, k):
  out = np.zeros_like(p)
  for i, row in enumerate(p):
    top = np.argsort(-row, kind="stable")[:k]
    out[i, top] = row[top] / row[top].sum()
  return out


def test_bigram_sampler_matches_table_at_temperature_one():
  x = np.asarray(sampling.sample_sequence(
      jax.random.key(0), _bigram_step, _bigram_state(), batch_size=4000, length=6
  ))
  assert x.dtype == np.int32 and x.shape == (4000, 6)
  first = np.bincount(x[:, 0], minlength=4)
  assert stats.chisquare(first, INIT * len(x)).pvalue > P_VALUE
  assert _chi2_rows(_transition_counts(x), TABLE) > P_VALUE


def test_bigram_sampler_with_temperature_top_k_and_top_p():
  state = _bigram_state()
  x = np.asarray(sampling.sample_sequence(
      jax.random.key(1), _bigram_step, state, batch_size=4000, length=6,
      temperature=0.5, top_k=2,
  ))
  sharpened = TABLE**2 / (TABLE**2).sum(1, keepdims=True)
  assert _chi2_rows(_transition_counts(x), _renormalised_top_k(sharpened, 2)) > P_VALUE
  # Nucleus 0.55: rows keep {0, 1}, {3}, {3, 0 or 2}, {0, 1}.
  x = np.asarray(sampling.sample_sequence(
      jax.random.key(2), _bigram_step, state, batch_size=2000, length=6,
      top_p=0.55,
  ))
  with np.errstate(divide="ignore"):
    want = np.exp(_np_filter(np.log(TABLE), top_p=0.55))
  assert _chi2_rows(_transition_counts(x), want) > P_VALUE


def test_blocks_give_the_same_draws_and_grow_the_state_at_each_block_end():
  grown = []

  def grow(state, end):
    grown.append(end)  # at trace time: once per block
    return state

  one = sampling.sample_sequence(
      jax.random.key(5), _bigram_step, _bigram_state(), batch_size=50, length=7)
  three = sampling.sample_sequence(
      jax.random.key(5), _bigram_step, _bigram_state(), batch_size=50, length=7,
      blocks=3, grow_state=grow)
  np.testing.assert_array_equal(one, three)
  assert grown == [2, 5, 7]
  assert sampling.block_bounds(7, 3) == [(0, 2), (2, 5), (5, 7)]
  assert sampling.block_bounds(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
  with pytest.raises(ValueError, match="blocks"):
    sampling.block_bounds(3, 4)
  with pytest.raises(ValueError, match="blocks"):
    sampling.block_bounds(3, 0)


def test_prefix_is_kept_and_conditions_the_next_token():
  batch = 3000
  prefix = jnp.tile(jnp.array([[2, 1]]), (batch, 1)).at[::2, 1].set(3)
  x = np.asarray(sampling.sample_sequence(
      jax.random.key(3), _bigram_step, _bigram_state(), batch_size=batch,
      length=4, prefix=prefix,
  ))
  np.testing.assert_array_equal(x[:, :2], np.asarray(prefix))
  for last in (1, 3):
    rows = x[x[:, 1] == last]
    observed = np.bincount(rows[:, 2], minlength=4)
    assert _chi2_rows(observed[None], TABLE[last][None]) > P_VALUE
  with pytest.raises(ValueError, match="prefix"):
    sampling.sample_sequence(
        jax.random.key(0), _bigram_step, _bigram_state(), batch_size=2,
        length=1, prefix=jnp.zeros((2, 3), jnp.int32),
    )


# --------------------------------------------------------------------------
# The transformer through its KV cache.

V, N = 7, 6


@functools.lru_cache(maxsize=None)
def _model_and_params(causal):
  model = TokenTransformer(vocab_size=V, seq_len=N, num_layers=1, width=16,
                           num_heads=2, num_classes=3, causal=causal)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, N), jnp.int32))
  rng = np.random.default_rng(1)
  # O(1) weights, so the sampled distributions are far from uniform.
  params = jax.tree.map(
      lambda x: jnp.asarray(0.4 * rng.normal(size=x.shape), x.dtype), shapes
  )
  return model, params


def _recompute_step(model, state, prev, index):
  """A cache-free step: the whole prefix through the model every time."""
  params, buf, labels = state
  buf = jax.lax.dynamic_update_index_in_dim(
      buf, prev, jnp.maximum(index - 1, 0), axis=1
  )
  logits = model.apply(params, buf, labels)
  return jax.lax.dynamic_index_in_dim(logits, index, 1, keepdims=False), (
      params, buf, labels
  )


@pytest.mark.parametrize("cache_blocks", [1, 3, N])
def test_cached_sampler_equals_full_recompute_sampler_for_the_same_key(cache_blocks):
  # 1: the whole cache from the start; 3: a cache grown twice; N: one
  # position per block, the cache always exactly as long as the prefix.
  model, params = _model_and_params(True)
  batch = 64
  labels = jnp.arange(batch) % 3
  prefix = jnp.full((batch, 1), 5, jnp.int32)
  kwargs = dict(batch_size=batch, prefix=prefix, temperature=0.8, top_k=4)
  cached = sampling.autoregressive_sample(
      jax.random.key(4), model, params, labels=labels, cache_blocks=cache_blocks,
      **kwargs
  )
  recomputed = sampling.sample_sequence(
      jax.random.key(4), functools.partial(_recompute_step, model),
      (params, jnp.zeros((batch, N), jnp.int32), labels), length=N, **kwargs,
  )
  np.testing.assert_array_equal(cached, recomputed)
  assert len(np.unique(np.asarray(cached)[:, 1:])) > 1  # not degenerate


def test_greedy_sampling_is_argmax_of_the_full_model():
  model, params = _model_and_params(True)
  labels = jnp.array([0, 1, 2])
  x = np.asarray(sampling.autoregressive_sample(
      jax.random.key(5), model, params, batch_size=3, labels=labels, top_k=1
  ))
  logits = np.asarray(jax.jit(model.apply)(params, jnp.asarray(x), labels))
  np.testing.assert_array_equal(x, logits.argmax(-1))


# --------------------------------------------------------------------------
# MaskGIT.

MASK = V
FACTORS = np.random.default_rng(2).normal(size=(4, 5)).astype(np.float32) * 1.5


def _factorised_logits(tokens):
  # Independent positions: one step of MaskGIT must draw from these exactly.
  return jnp.broadcast_to(jnp.asarray(FACTORS), tokens.shape + (5,))


def test_maskgit_one_step_is_one_parallel_draw_exactly():
  model, params = _model_and_params(False)
  key = jax.random.key(6)
  labels = jnp.array([0, 2, 1, 1])
  x = sampling.maskgit_sample(key, model, params, batch_size=4, labels=labels,
                              num_steps=1, top_k=5)
  start = jnp.full((4, N), model.mask_id, jnp.int32)
  log_probs = sampling.filter_logits(
      jax.jit(model.apply)(params, start, labels), top_k=5
  )
  k_sample, _ = jax.random.split(jax.random.split(key, 1)[0])
  np.testing.assert_array_equal(x, sampling.sample_categorical(k_sample, log_probs))


def test_maskgit_one_step_marginals_match_the_model():
  batch = 5000
  start = jnp.full((batch, 4), 5, jnp.int32)
  x = np.asarray(sampling.maskgit_decode(
      jax.random.key(7), _factorised_logits, start, mask_id=5, num_steps=1
  ))
  probs = np.exp(FACTORS - FACTORS.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  counts = np.stack([np.bincount(x[:, i], minlength=5) for i in range(4)])
  assert _chi2_rows(counts, probs) > P_VALUE


def test_maskgit_masked_count_follows_the_cosine_schedule():
  seen = []

  def logits_fn(tokens):
    jax.debug.callback(
        lambda t: seen.append(np.asarray(t)), jnp.sum(tokens == 5, axis=1),
        ordered=True,
    )
    return _factorised_logits(tokens)

  steps, n = 5, 4
  start = jnp.full((3, n), 5, jnp.int32)
  x = sampling.maskgit_decode(
      jax.random.key(8), logits_fn, start, mask_id=5, num_steps=steps
  )
  jax.effects_barrier()
  want, left = [n], n
  for t in range(1, steps):
    left = min(math.ceil(np.cos(np.pi * t / (2 * steps)) * n), left - 1)
    want.append(max(left, 0))
  np.testing.assert_array_equal(np.stack(seen), np.repeat(np.array(want)[:, None], 3, 1))
  assert not (np.asarray(x) == 5).any()


def test_maskgit_step_keeps_the_most_confident_and_the_visible_tokens():
  n, v = 10, 6
  rng = np.random.default_rng(3)
  peak_token = rng.integers(0, v, size=n)
  # Position j puts 1 - eps_j on its peak token: the draw is the peak (all
  # eps together are 5e-4), and its log-prob log(1 - eps_j) orders the
  # confidences; eps stays >= 1e-6 so float32 keeps them distinct.
  eps = rng.permutation(np.linspace(1e-6, 1e-4, n))
  probs = np.repeat((eps / (v - 1))[:, None], v, 1)
  probs[np.arange(n), peak_token] = 1 - eps
  log_probs = jnp.asarray(np.log(probs)[None], jnp.float32)
  strength = -eps
  tokens = np.full((1, n), v, np.int32)
  visible = np.argsort(strength)[:2]  # the two least confident are given
  tokens[0, visible] = (peak_token[visible] + 1) % v
  out = np.asarray(sampling.maskgit_step(
      jax.random.key(9), jnp.asarray(tokens), log_probs, ratio=0.5,
      num_unknown=jnp.array([n - 2]), mask_id=v, confidence_temperature=0.0,
  ))
  np.testing.assert_array_equal(out[0, visible], tokens[0, visible])
  # ceil(cos(pi/4) * 8) = 6 of the 8 unknown are re-masked: the 2 kept are
  # the most confident, i.e. the strongest peaks.
  remasked = out[0] == v
  assert remasked.sum() == 6
  kept = np.setdiff1d(np.flatnonzero(~remasked), visible)
  np.testing.assert_array_equal(np.sort(kept), np.sort(np.argsort(strength)[-2:]))
  np.testing.assert_array_equal(out[0, kept], peak_token[kept])


def test_maskgit_inpainting_keeps_visible_tokens_and_fills_the_rest():
  model, params = _model_and_params(False)
  given = jax.random.randint(jax.random.key(10), (8, N), 0, V)
  hide = jax.random.bernoulli(jax.random.key(11), 0.6, (8, N))
  start = jnp.where(hide, model.mask_id, given)
  x = np.asarray(sampling.maskgit_sample(
      jax.random.key(12), model, params, batch_size=8, tokens=start,
      num_steps=3, top_p=0.9,
  ))
  np.testing.assert_array_equal(x[~np.asarray(hide)], np.asarray(given)[~np.asarray(hide)])
  assert ((x >= 0) & (x < V)).all()
  with pytest.raises(ValueError, match="causal"):
    sampling.maskgit_sample(jax.random.key(0), *_model_and_params(True), batch_size=1)
  for bad in (-1.0, float("nan")):
    with pytest.raises(ValueError, match="confidence_temperature"):
      sampling.maskgit_decode(jax.random.key(0), _factorised_logits, start[:, :4],
                              mask_id=model.mask_id, confidence_temperature=bad)
  with pytest.raises(TypeError, match="num_steps"):
    sampling.maskgit_decode(jax.random.key(0), _factorised_logits, start[:, :4],
                            mask_id=model.mask_id, num_steps=2.0)
