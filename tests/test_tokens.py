"""dgmjax.losses.tokens: token cross-entropy and MaskGIT's mask schedule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dgmjax.losses import tokens as tok


def _np_ce(logits, targets):
  logits = np.asarray(logits, np.float64)
  m = logits.max(-1, keepdims=True)
  lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
  tgt = np.take_along_axis(logits, np.asarray(targets)[..., None], -1)[..., 0]
  return lse - tgt


def _data(seed=0, b=3, n=5, v=7):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(b, n, v)).astype(np.float32) * 2
  targets = rng.integers(0, v, size=(b, n)).astype(np.int32)
  return logits, targets, rng


def test_cross_entropy_matches_numpy_mean_and_sum():
  logits, targets, _ = _data()
  ce = _np_ce(logits, targets)
  got_mean = tok.token_cross_entropy(jnp.asarray(logits), jnp.asarray(targets))
  got_sum = tok.token_cross_entropy(
      jnp.asarray(logits), jnp.asarray(targets), reduction="sum"
  )
  np.testing.assert_allclose(got_mean, ce.mean(1), rtol=1e-5)
  np.testing.assert_allclose(got_sum, ce.sum(1), rtol=1e-5)


def test_mask_selects_positions_like_numpy():
  logits, targets, rng = _data(1)
  mask = rng.random(targets.shape) < 0.5
  mask[0] = False  # an example where nothing counts
  mask[1, 0] = True
  ce = _np_ce(logits, targets)
  want_sum = (ce * mask).sum(1)
  want_mean = np.where(mask.sum(1) > 0, want_sum / np.maximum(mask.sum(1), 1), 0)
  args = (jnp.asarray(logits), jnp.asarray(targets))
  np.testing.assert_allclose(
      tok.token_cross_entropy(*args, mask=mask, reduction="sum"), want_sum,
      rtol=1e-5, atol=1e-6,
  )
  np.testing.assert_allclose(
      tok.token_cross_entropy(*args, mask=mask), want_mean, rtol=1e-5, atol=1e-6
  )


def test_masked_out_positions_do_not_contribute_even_if_nonfinite():
  logits, targets, _ = _data(2)
  mask = np.ones(targets.shape, bool)
  mask[:, 1] = False
  mask[2, 3] = False
  poisoned = logits.copy()
  poisoned[~mask] = np.nan
  poisoned[0, 1, targets[0, 1]] = -np.inf  # an infinite loss if it counted
  fn = lambda x: tok.token_cross_entropy(x, jnp.asarray(targets), mask=mask)
  clean = fn(jnp.asarray(logits))
  dirty = fn(jnp.asarray(poisoned))
  np.testing.assert_allclose(dirty, clean, rtol=1e-6)
  grad = jax.grad(lambda x: fn(x).sum())(jnp.asarray(logits))
  assert np.all(np.asarray(grad)[~mask] == 0)
  assert np.all(np.abs(np.asarray(grad)[mask]).sum(-1) > 0)


def test_neg_inf_logits_at_other_classes_stay_finite():
  logits, targets, rng = _data(3)
  blocked = logits.copy()
  # Forbid a random half of the non-target classes.
  forbid = rng.random(logits.shape) < 0.5
  np.put_along_axis(forbid, targets[..., None], False, axis=-1)
  blocked[forbid] = -np.inf
  loss = tok.token_cross_entropy(jnp.asarray(blocked), jnp.asarray(targets))
  # NumPy on the allowed classes only.
  want = []
  for b in range(logits.shape[0]):
    per = []
    for i in range(logits.shape[1]):
      allowed = logits[b, i][~forbid[b, i]].astype(np.float64)
      per.append(np.log(np.exp(allowed).sum()) - logits[b, i, targets[b, i]])
    want.append(np.mean(per))
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  grad = jax.grad(
      lambda x: tok.token_cross_entropy(x, jnp.asarray(targets)).sum()
  )(jnp.asarray(blocked))
  assert np.isfinite(np.asarray(grad)).all()
  assert np.all(np.asarray(grad)[forbid] == 0)


def test_cross_entropy_gradient_is_softmax_minus_onehot():
  logits, targets, _ = _data(4, b=2, n=3, v=4)
  grad = jax.grad(
      lambda x: tok.token_cross_entropy(x, jnp.asarray(targets), reduction="sum").sum()
  )(jnp.asarray(logits))
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = p - np.eye(4)[targets]
  np.testing.assert_allclose(grad, want, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(targets=np.zeros((3, 5), np.float32)), TypeError),
        (dict(targets=np.zeros((3, 4), np.int32)), ValueError),
        (dict(reduction="max"), ValueError),
        (dict(mask=np.ones((3, 4), bool)), ValueError),
    ],
)
def test_cross_entropy_rejects_bad_arguments(kwargs, exc):
  logits, targets, _ = _data()
  args = dict(targets=targets)
  args.update(kwargs)
  with pytest.raises(exc):
    tok.token_cross_entropy(
        jnp.asarray(logits), jnp.asarray(args.pop("targets")), **args
    )


def test_cosine_schedule_and_counts_match_numpy():
  r = np.linspace(0, 1, 33)
  np.testing.assert_allclose(tok.cosine_schedule(r), np.cos(np.pi * r / 2), atol=1e-6)
  assert float(tok.cosine_schedule(1.0)) == 0.0
  assert float(tok.cosine_schedule(0.0)) == 1.0
  for n in (1, 7, 256):
    # Interior points only: at the ends float64 and float32 cos disagree
    # about ceil (the reason the end points are pinned in the library).
    inner = r[1:-1]
    want = np.ceil(np.cos(np.pi * inner / 2).astype(np.float32) * n)
    np.testing.assert_array_equal(tok.num_masked(inner, n), want)
    assert int(tok.num_masked(0.0, n)) == n
    assert int(tok.num_masked(1.0, n)) == 0


def test_training_mask_count_follows_cosine_law():
  # count = ceil(cos(pi r / 2) N) = m  <=>  r in [2/pi acos(m/N), 2/pi acos((m-1)/N)).
  n, batch = 8, 20000
  mask = np.asarray(tok.maskgit_mask(jax.random.key(0), batch, n))
  counts = mask.sum(1)
  assert counts.min() >= 1 and counts.max() <= n
  m = np.arange(1, n + 1)
  probs = (2 / np.pi) * (np.arccos((m - 1) / n) - np.arccos(m / n))
  assert math.isclose(probs.sum(), 1.0, rel_tol=1e-12)
  observed = np.bincount(counts, minlength=n + 1)[1:]
  _, p_value = stats.chisquare(observed, probs * batch)
  assert p_value > 1e-3, (observed, probs * batch)


def test_training_mask_positions_are_uniform_given_count():
  # Within examples of one count, every position is equally likely.
  n, batch = 8, 20000
  mask = np.asarray(tok.maskgit_mask(jax.random.key(1), batch, n))
  counts = mask.sum(1)
  for m in (2, 5):
    rows = mask[counts == m]
    per_position = rows.sum(0)
    _, p_value = stats.chisquare(per_position)
    assert p_value > 1e-3, (m, per_position)
  # Different keys give different masks; the same key the same one.
  again = np.asarray(tok.maskgit_mask(jax.random.key(1), batch, n))
  np.testing.assert_array_equal(mask, again)
  assert not np.array_equal(
      mask, np.asarray(tok.maskgit_mask(jax.random.key(2), batch, n))
  )


def test_training_mask_rejects_bad_sizes():
  with pytest.raises(ValueError, match="num_tokens"):
    tok.maskgit_mask(jax.random.key(0), 2, 0)
  with pytest.raises(TypeError, match="batch_size"):
    tok.maskgit_mask(jax.random.key(0), 2.0, 4)


def _exact_conditionals(joint, n, v, mask_id):
  """logits_fn giving p(x_i | visible tokens) of an explicit joint over V^N sequences."""
  configs = np.array(np.meshgrid(*[np.arange(v)] * n, indexing="ij")).reshape(n, -1).T
  cfg, log_joint = jnp.asarray(configs), jnp.log(jnp.asarray(joint).reshape(-1))

  def logits_fn(tokens):
    # weight of each config: p(c) if it agrees with every visible token, else 0
    agree = (tokens[:, None, :] == cfg[None]) | (tokens[:, None, :] == mask_id)
    log_w = jnp.where(agree.all(-1), log_joint[None], -jnp.inf)  # (B, C)
    onehot = cfg[None, :, :, None] == jnp.arange(v)  # (1, C, N, V)
    return jax.nn.logsumexp(jnp.where(onehot, log_w[:, :, None, None], -jnp.inf), axis=1)

  return configs, logits_fn


@pytest.mark.parametrize("order", [None, (2, 0, 3, 1), (3, 2, 1, 0)])
def test_ordered_nll_of_exact_conditionals_is_the_joint_log_likelihood(order):
  # The chain rule: reading a model whose conditionals are exactly those of a
  # joint p, in any order, gives -log p(x).
  n, v = 4, 3
  joint = np.random.default_rng(1).dirichlet(np.full(v ** n, 0.3))
  configs, fn = _exact_conditionals(joint, n, v, mask_id=v)
  pick = np.random.default_rng(2).choice(len(configs), size=12, p=joint)
  tokens = jnp.asarray(configs[pick], jnp.int32)
  got = tok.ordered_nll(fn, tokens, mask_id=v, order=None if order is None else jnp.array(order))
  np.testing.assert_allclose(got, -np.log(joint[pick]), rtol=1e-5, atol=1e-5)


def test_ordered_nll_depends_on_the_order_of_an_inconsistent_model():
  # A masked model is not one joint: each position's factor is read with the
  # positions revealed before it. Independent NumPy loop over the order.
  rng = np.random.default_rng(3)
  n, v, b = 5, 4, 6
  base, pair = rng.normal(size=(n, v)), rng.normal(size=(n, n, v + 1, v))

  def logits_np(t):
    return base[None] + sum(pair[:, j, t[:, j]].transpose(1, 0, 2) for j in range(n))

  fn = lambda t: jnp.asarray(base)[None] + sum(
      jnp.asarray(pair)[:, j, t[:, j]].transpose(1, 0, 2) for j in range(n))
  tokens = rng.integers(0, v, size=(b, n))
  results = []
  for order in (np.arange(n), rng.permutation(n)):
    visible, want = np.full((b, n), v), np.zeros(b)
    for i in order:
      logits = logits_np(visible)[:, i]
      logz = np.log(np.exp(logits).sum(-1))
      want += logz - logits[np.arange(b), tokens[:, i]]
      visible[:, i] = tokens[:, i]
    got = jax.jit(lambda t, o: tok.ordered_nll(fn, t, mask_id=v, order=o))(
        jnp.asarray(tokens, jnp.int32), jnp.asarray(order))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    results.append(want)
  assert np.abs(results[0] - results[1]).max() > 0.1


def test_ordered_nll_rejects_bad_arguments():
  fn = lambda t: jnp.zeros(t.shape + (3,))
  with pytest.raises(ValueError, match="order"):
    tok.ordered_nll(fn, jnp.zeros((2, 4), jnp.int32), mask_id=3, order=jnp.arange(3))
  with pytest.raises(ValueError, match="order"):
    tok.ordered_nll(fn, jnp.zeros((2, 4), jnp.int32), mask_id=3, order=jnp.array([0, 1, 1, 2]))
  with pytest.raises(TypeError, match="tokens"):
    tok.ordered_nll(fn, jnp.zeros((2, 4)), mask_id=3)
