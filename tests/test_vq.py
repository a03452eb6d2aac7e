"""Tests for dgmjax.losses.vq: every property is checked against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dgmjax.losses import vq

NDEV = 8


def _rng(seed=0):
  return np.random.default_rng(seed)


def _np_sqdist(z, codebook):
  z = np.asarray(z, np.float64)
  e = np.asarray(codebook, np.float64)
  return np.sum((z[..., None, :] - e) ** 2, axis=-1)


def _mesh():
  return jax.make_mesh(
      (NDEV,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,)
  )


def _shard(mesh, x):
  return jax.device_put(x, NamedSharding(mesh, P("data")))


def _np_ema_update(codebook, cs, es, z, idx, decay, eps):
  """Independent NumPy transcription of van den Oord et al., appendix A.1."""
  k, d = codebook.shape
  z = np.asarray(z, np.float64).reshape(-1, d)
  idx = np.asarray(idx).reshape(-1)
  n = np.zeros(k)
  s = np.zeros((k, d))
  for i, j in enumerate(idx):
    n[j] += 1
    s[j] += z[i]
  cs = decay * cs + (1 - decay) * n
  es = decay * es + (1 - decay) * s
  total = cs.sum()
  smoothed = (cs + eps) / (total + k * eps) * total
  return es / smoothed[:, None], cs, es


def _np_lloyd(z, centres, num_iters):
  centres = np.array(centres, np.float64)
  empty_seen = False
  counts = None
  for _ in range(num_iters):
    idx = np.argmin(_np_sqdist(z, centres), axis=-1)
    counts = np.bincount(idx, minlength=len(centres)).astype(np.float64)
    for k in range(len(centres)):
      if counts[k] > 0:
        centres[k] = z[idx == k].mean(axis=0)
      else:
        empty_seen = True
  return centres, counts, empty_seen


# ---------------------------------------------------------------------------
# Distances and nearest codes.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("zshape,k", [((5,), 3), ((40, 5), 7), ((2, 3, 4, 5), 64)])
def test_squared_distances_match_direct_numpy(zshape, k):
  rng = _rng(1)
  z = rng.normal(size=zshape).astype(np.float32)
  e = rng.normal(size=(k, zshape[-1])).astype(np.float32)
  got = vq.squared_distances(z, e)
  want = _np_sqdist(z, e)
  assert got.dtype == jnp.float32 and got.shape == want.shape
  scale = np.sum(z.astype(np.float64) ** 2, -1)[..., None] + np.sum(
      e.astype(np.float64) ** 2, -1
  )
  np.testing.assert_array_less(np.abs(np.asarray(got) - want), 1e-6 * scale + 1e-6)


def test_squared_distances_bf16_inputs_are_computed_in_float32():
  rng = _rng(2)
  z = jnp.asarray(rng.normal(size=(30, 8)), jnp.bfloat16)
  e = jnp.asarray(rng.normal(size=(16, 8)), jnp.bfloat16)
  got = vq.squared_distances(z, e)
  assert got.dtype == jnp.float32
  want = _np_sqdist(np.asarray(z, np.float32), np.asarray(e, np.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _assert_argmin_equal(got, z, e, rel=1e-5):
  """Equal to brute force, except possibly at float32 near-ties."""
  d = _np_sqdist(z, e)
  want = np.argmin(d, axis=-1)
  got = np.asarray(got)
  mismatch = got != want
  d_got = np.take_along_axis(d, got[..., None], -1)[..., 0]
  d_min = d.min(-1)
  assert np.all(d_got[mismatch] - d_min[mismatch] <= rel * (1 + d_min[mismatch]))
  assert mismatch.mean() <= 0.01


@pytest.mark.parametrize(
    "zshape,k,seed",
    [((1,), 2, 0), ((200, 3), 16, 1), ((4, 6, 6, 8), 50, 2), ((7, 64), 512, 3)],
)
def test_nearest_code_equals_bruteforce_argmin(zshape, k, seed):
  rng = _rng(seed)
  z = rng.normal(size=zshape).astype(np.float32)
  e = rng.normal(size=(k, zshape[-1])).astype(np.float32)
  got = vq.nearest_code(z, e)
  assert got.dtype == jnp.int32 and got.shape == zshape[:-1]
  _assert_argmin_equal(got, z, e)


def test_nearest_code_is_invariant_to_huge_offsets():
  # |z|² is dropped from the argmin; a large common offset must not matter.
  rng = _rng(4)
  e = rng.normal(size=(32, 4)).astype(np.float32)
  z = (e[rng.integers(0, 32, 100)] + 0.01 * rng.normal(size=(100, 4))).astype(
      np.float32
  )
  offset = np.float32(300.0)
  got = vq.nearest_code(z + offset, e + offset)
  _assert_argmin_equal(got, z + offset, e + offset)


@pytest.mark.parametrize("cb_dtype", [jnp.bfloat16, jnp.float32])
def test_nearest_code_bf16_inputs(cb_dtype):
  rng = _rng(5)
  z = jnp.asarray(rng.normal(size=(300, 8)), jnp.bfloat16)
  e = jnp.asarray(rng.normal(size=(64, 8)), cb_dtype)
  got = vq.nearest_code(z, e)
  _assert_argmin_equal(got, np.asarray(z, np.float32), np.asarray(e, np.float32))


def test_squared_distances_gradient_closed_form():
  rng = _rng(6)
  z = rng.normal(size=(3, 4)).astype(np.float32)
  e = rng.normal(size=(5, 4)).astype(np.float32)
  g = jax.grad(lambda z: jnp.sum(vq.squared_distances(z, e)))(z)
  # Σ_k ‖z − e_k‖² has gradient 2 (K z − Σ_k e_k).
  np.testing.assert_allclose(g, 2 * (5 * z - e.sum(0)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Quantisation and the straight-through estimator.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_quantize_lookup_is_bitwise_exact(dtype):
  rng = _rng(7)
  e = jnp.asarray(rng.normal(size=(20, 6)), dtype)
  z = jnp.asarray(rng.normal(size=(5, 9, 6)), dtype)
  z_q, idx = jax.jit(vq.quantize)(z, e)
  assert z_q.dtype == dtype and z_q.shape == z.shape
  np.testing.assert_array_equal(idx, vq.nearest_code(z, e))
  ref = np.asarray(e)[np.asarray(idx)]
  assert np.array_equal(np.asarray(z_q).view(np.uint16 if dtype != jnp.float32
                                             else np.uint32),
                        ref.view(np.uint16 if dtype != jnp.float32 else np.uint32))


def test_quantize_gradient_scatters_into_selected_codes():
  rng = _rng(8)
  e = rng.normal(size=(6, 3)).astype(np.float32)
  z = rng.normal(size=(10, 3)).astype(np.float32)
  w = rng.normal(size=(10, 3)).astype(np.float32)
  g = jax.grad(lambda e: jnp.sum(vq.quantize(z, e)[0] * w))(e)
  idx = np.asarray(vq.nearest_code(z, e))
  want = np.zeros_like(e)
  np.add.at(want, idx, w)
  np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-6)


def test_straight_through_forward_is_exactly_z_q():
  z_e = jnp.array([1e8, -3e7, 0.1, 2.5], jnp.float32)
  z_q = jnp.array([1.0, 0.3, -7.0, 2.5], jnp.float32)
  out = vq.straight_through(z_e, z_q)
  np.testing.assert_array_equal(out, z_q)
  # The textbook form rounds here; the implemented one does not.
  assert not np.array_equal(z_e + (z_q - z_e), z_q)


def test_straight_through_jacobian_is_identity():
  rng = _rng(9)
  z_e = rng.normal(size=(2, 3)).astype(np.float32)
  z_q = rng.normal(size=(2, 3)).astype(np.float32)
  eye = np.eye(6).reshape(2, 3, 2, 3)
  for jac in (jax.jacfwd, jax.jacrev):
    j_e, j_q = jac(vq.straight_through, argnums=(0, 1))(z_e, z_q)
    np.testing.assert_array_equal(j_e, eye)
    np.testing.assert_array_equal(j_q, np.zeros_like(eye))


# ---------------------------------------------------------------------------
# Losses.
# ---------------------------------------------------------------------------


def test_loss_values_and_where_gradients_go():
  rng = _rng(10)
  z_e = rng.normal(size=(4, 5, 3)).astype(np.float32)
  z_q = rng.normal(size=(4, 5, 3)).astype(np.float32)
  mse = np.mean((z_e.astype(np.float64) - z_q) ** 2, axis=-1)
  np.testing.assert_allclose(vq.codebook_loss(z_e, z_q), mse, rtol=1e-6)
  np.testing.assert_allclose(vq.commitment_loss(z_e, z_q), mse, rtol=1e-6)
  np.testing.assert_allclose(vq.vq_loss(z_e, z_q, beta=0.4), 1.4 * mse, rtol=1e-6)

  def grads(fn, **kw):
    return jax.grad(lambda a, b: jnp.sum(fn(a, b, **kw)), argnums=(0, 1))(z_e, z_q)

  d = 3
  ge, gq = grads(vq.codebook_loss)
  np.testing.assert_array_equal(ge, 0.0)
  np.testing.assert_allclose(gq, 2 * (z_q - z_e) / d, rtol=1e-5, atol=1e-6)
  ge, gq = grads(vq.commitment_loss)
  np.testing.assert_allclose(ge, 2 * (z_e - z_q) / d, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(gq, 0.0)
  ge, gq = grads(vq.vq_loss, beta=0.4)
  np.testing.assert_allclose(ge, 0.4 * 2 * (z_e - z_q) / d, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gq, 2 * (z_q - z_e) / d, rtol=1e-5, atol=1e-6)


def test_vq_objective_gradients_through_quantize():
  # Encoder gets β·commitment + the straight-through reconstruction gradient;
  # each code gets the codebook-loss gradient summed over its vectors.
  rng = _rng(11)
  e = rng.normal(size=(5, 2)).astype(np.float32)
  z_e = rng.normal(size=(12, 2)).astype(np.float32)
  x = rng.normal(size=(12, 2)).astype(np.float32)

  def objective(z_e, e):
    z_q, _ = vq.quantize(z_e, e)
    recon = jnp.sum((vq.straight_through(z_e, z_q) - x) ** 2)
    return recon + jnp.sum(vq.vq_loss(z_e, z_q, beta=0.25))

  g_ze, g_e = jax.grad(objective, argnums=(0, 1))(z_e, e)
  idx = np.asarray(vq.nearest_code(z_e, e))
  z_q = e[idx]
  np.testing.assert_allclose(
      g_ze, 2 * (z_q - x) + 0.25 * (z_e - z_q), rtol=1e-5, atol=1e-5
  )
  want = np.zeros_like(e)
  np.add.at(want, idx, (z_q - z_e))
  np.testing.assert_allclose(g_e, want, rtol=1e-5, atol=1e-5)


def test_all_zero_codebook_is_finite():
  e = jnp.zeros((4, 3))
  z = jnp.zeros((6, 3)).at[0].set(1e4)

  def objective(z, e):
    z_q, _ = vq.quantize(z, e)
    rec = jnp.sum(vq.straight_through(z, z_q) ** 2)
    return rec + jnp.sum(vq.vq_loss(z, z_q)) + jnp.sum(vq.squared_distances(z, e))

  val, (gz, ge) = jax.value_and_grad(objective, argnums=(0, 1))(z, e)
  assert np.isfinite(val)
  assert np.all(np.isfinite(gz)) and np.all(np.isfinite(ge))
  state = vq.ema_update(vq.ema_init(e), z, vq.nearest_code(z, e))
  assert all(np.all(np.isfinite(x)) for x in state)


# ---------------------------------------------------------------------------
# EMA codebook.
# ---------------------------------------------------------------------------


def test_ema_update_matches_numpy_transcription():
  rng = _rng(12)
  k, d = 6, 3
  codebook = rng.normal(size=(k, d)).astype(np.float32)
  cs = rng.uniform(0.1, 3.0, size=k).astype(np.float32)
  es = rng.normal(size=(k, d)).astype(np.float32)
  z = rng.normal(size=(4, 5, d)).astype(np.float32)
  idx = rng.integers(0, k - 1, size=(4, 5)).astype(np.int32)  # code k-1 unused
  state = vq.EMAState(jnp.asarray(codebook), jnp.asarray(cs), jnp.asarray(es))
  got = jax.jit(lambda s, z, i: vq.ema_update(s, z, i, decay=0.9, eps=1e-2))(
      state, z, idx
  )
  want = _np_ema_update(codebook, cs, es, z, idx, 0.9, 1e-2)
  for g, w in zip(got, want, strict=True):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_ema_fixed_point_is_smoothed_cluster_mean():
  rng = _rng(13)
  k, d, eps = 4, 2, 0.05  # large ε so that the smoothing is measurable
  z = rng.normal(size=(30, d)).astype(np.float32)
  idx = np.arange(30) % k
  idx[:6] = 0  # unequal cluster sizes
  state = vq.ema_init(rng.normal(size=(k, d)).astype(np.float32))

  @jax.jit
  def run(state):
    return jax.lax.fori_loop(
        0, 200, lambda _, s: vq.ema_update(s, z, idx, decay=0.8, eps=eps), state
    )

  state = run(state)
  n_k = np.bincount(idx, minlength=k).astype(np.float64)
  s_k = np.stack([z[idx == j].sum(0) for j in range(k)])
  mean = s_k / n_k[:, None]
  n = n_k.sum()
  # Fixed point: N_k = n_k, m_k = s_k, e_k = s_k / ((n_k+ε)/(n+Kε)·n).
  fixed = mean * (n_k * (n + k * eps) / ((n_k + eps) * n))[:, None]
  np.testing.assert_allclose(state.cluster_size, n_k, rtol=1e-5)
  np.testing.assert_allclose(state.embed_sum, s_k, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(state.codebook, fixed, rtol=1e-5, atol=1e-6)
  assert np.max(np.abs(fixed - mean)) > 1e-3  # the assertion above is sharp


def test_ema_unassigned_code_stays_put():
  rng = _rng(14)
  k, d, decay, eps = 5, 3, 0.99, 1e-5
  codebook = rng.normal(size=(k, d)).astype(np.float32)
  z = rng.normal(size=(20, d)).astype(np.float32)
  idx = rng.integers(0, k - 1, size=20)  # code k-1 never assigned
  state = vq.ema_update(vq.ema_init(codebook), z, idx, decay=decay, eps=eps)
  cs = decay * 1.0
  total = np.sum(np.asarray(state.cluster_size, np.float64))
  # Exact one-step value: the EMA ratio is unchanged, only smoothing acts.
  want = codebook[-1] * cs / ((cs + eps) / (total + k * eps) * total)
  np.testing.assert_allclose(state.codebook[-1], want, rtol=1e-6)
  np.testing.assert_allclose(state.codebook[-1], codebook[-1], rtol=1e-4)
  for _ in range(20):
    state = vq.ema_update(state, z, idx, decay=decay, eps=eps)
  np.testing.assert_allclose(
      state.embed_sum[-1] / state.cluster_size[-1], codebook[-1], rtol=1e-5
  )
  np.testing.assert_allclose(state.codebook[-1], codebook[-1], rtol=1e-3)


def test_ema_first_update_keeps_kmeans_codebook():
  rng = _rng(15)
  centres = rng.normal(scale=10.0, size=(6, 2))
  z = (centres[rng.integers(0, 6, 300)] + rng.normal(size=(300, 2))).astype(
      np.float32
  )
  codebook, counts = vq.kmeans_init(
      jax.random.key(0), z, 8, num_iters=30, return_counts=True
  )
  # Plus a code that no vector uses (an empty k-means cluster): the code a
  # zero-initialised EMA collapses to the origin on the first update.
  codebook = jnp.concatenate([codebook, jnp.full((1, 2), 1e3)])
  counts = jnp.concatenate([counts, jnp.ones(1)])
  idx = vq.nearest_code(z, codebook)
  assert not np.any(np.asarray(idx) == 8)
  for init in (vq.ema_init(codebook), vq.ema_init(codebook, cluster_size=counts)):
    new = vq.ema_update(init, z, idx)
    np.testing.assert_allclose(new.codebook, codebook, rtol=1e-4, atol=1e-4)
  zero_init = vq.EMAState(codebook, jnp.zeros(9), jnp.zeros((9, 2)))
  collapsed = vq.ema_update(zero_init, z, idx).codebook
  np.testing.assert_array_equal(collapsed[8], [0.0, 0.0])


def test_ema_update_bf16_inputs_and_vmap():
  rng = _rng(16)
  k, d = 4, 3
  states = vq.EMAState(
      jnp.asarray(rng.normal(size=(2, k, d)), jnp.float32),
      jnp.ones((2, k)),
      jnp.asarray(rng.normal(size=(2, k, d)), jnp.float32),
  )
  z = jnp.asarray(rng.normal(size=(2, 10, d)), jnp.bfloat16)
  idx = jnp.asarray(rng.integers(0, k, size=(2, 10)), jnp.int32)
  batched = jax.vmap(lambda s, z, i: vq.ema_update(s, z, i, decay=0.9))(
      states, z, idx
  )
  for b in range(2):
    single = vq.ema_update(
        jax.tree.map(lambda x, b=b: x[b], states), z[b], idx[b], decay=0.9
    )
    for g, w in zip(batched, single, strict=True):
      assert g.dtype == jnp.float32
      np.testing.assert_allclose(g[b], w, rtol=1e-6)


# ---------------------------------------------------------------------------
# Usage statistics.
# ---------------------------------------------------------------------------


def test_code_histogram_perplexity_codes_used_values():
  rng = _rng(17)
  idx = rng.integers(0, 7, size=(3, 50)).astype(np.int32)
  counts = jax.jit(vq.code_histogram, static_argnums=1)(idx, 10)
  want = np.bincount(idx.ravel(), minlength=10)
  np.testing.assert_array_equal(counts, want)
  assert counts.dtype == jnp.float32
  p = want / want.sum()
  nz = p > 0
  np.testing.assert_allclose(
      vq.perplexity(counts), np.exp(-np.sum(p[nz] * np.log(p[nz]))), rtol=1e-6
  )
  np.testing.assert_allclose(vq.codes_used(counts), 0.7)
  # Out-of-range indices are not counted.
  np.testing.assert_array_equal(
      vq.code_histogram(jnp.array([0, -1, 3, 4]), 4), [1, 0, 0, 1]
  )
  # Extremes: uniform → K, one code → 1, empty → 1 (finite).
  np.testing.assert_allclose(vq.perplexity(jnp.ones(8)), 8.0, rtol=1e-6)
  np.testing.assert_allclose(vq.perplexity(jnp.eye(3)), np.ones(3), rtol=1e-6)
  np.testing.assert_allclose(vq.perplexity(jnp.zeros(5)), 1.0)
  np.testing.assert_allclose(vq.codes_used(jnp.zeros((2, 5))), [0.0, 0.0])


def test_perplexity_gradient_and_vmap():
  c = jnp.array([3.0, 1.0, 0.5, 2.0])
  g = jax.grad(vq.perplexity)(c)
  h = 1e-3
  fd = [(vq.perplexity(c.at[i].add(h)) - vq.perplexity(c.at[i].add(-h))) / (2 * h)
        for i in range(4)]
  np.testing.assert_allclose(g, fd, rtol=2e-2, atol=1e-4)
  for c0 in (jnp.array([2.0, 0.0, 0.0, 1.0]), jnp.zeros(4)):
    assert np.all(np.isfinite(jax.grad(vq.perplexity)(c0)))
  batch = jnp.abs(jnp.asarray(_rng(18).normal(size=(5, 6)), jnp.float32))
  np.testing.assert_allclose(
      jax.vmap(vq.perplexity)(batch), [vq.perplexity(b) for b in batch], rtol=1e-6
  )


# ---------------------------------------------------------------------------
# Dead-code restarts and k-means.
# ---------------------------------------------------------------------------


def test_restart_dead_codes_with_more_codes_than_vectors():
  rng = _rng(19)
  k, d, n = 512, 4, 16
  codebook = rng.normal(size=(k, d)).astype(np.float32)
  usage = rng.uniform(0, 2, size=k).astype(np.float32)
  z = rng.normal(size=(2, 8, d)).astype(np.float32)
  new, num = jax.jit(vq.restart_dead_codes)(jax.random.key(1), codebook, usage, z)
  dead = usage < 1.0
  assert int(num) == dead.sum() > 0
  np.testing.assert_array_equal(np.asarray(new)[~dead], codebook[~dead])
  rows = z.reshape(n, d)
  match = np.all(np.asarray(new)[dead][:, None, :] == rows[None], axis=-1)
  assert np.all(match.any(axis=1))  # every restarted code is some row of z
  # ~250 draws from 16 rows: all rows are hit (P(miss) < 16·(15/16)^250 ≈ 1e-6).
  assert np.all(match.any(axis=0))


def test_restart_dead_codes_ema_resets_statistics():
  codebook = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
  state = vq.EMAState(
      codebook, jnp.array([5.0, 5.0, 5.0, 0.01]), codebook * jnp.array(
          [5.0, 5.0, 5.0, 0.01])[:, None]
  )
  z = jnp.array([[0.1, 0.0], [0.9, 0.1], [0.0, 0.8], [0.2, 0.2]])
  new, num = vq.restart_dead_codes_ema(jax.random.key(2), state, z, threshold=1.0)
  assert int(num) == 1
  restarted = np.asarray(new.codebook[3])
  assert np.any(np.all(restarted == np.asarray(z), axis=-1))
  np.testing.assert_array_equal(new.codebook[:3], codebook[:3])
  np.testing.assert_allclose(new.embed_sum[3] / new.cluster_size[3], restarted)
  # The next update (code 3 unassigned) keeps the new code where it is ...
  idx = jnp.array([0, 1, 2, 0])
  after = vq.ema_update(new, z, idx)
  np.testing.assert_allclose(after.codebook[3], restarted, rtol=1e-3, atol=1e-3)
  # ... whereas replacing only the codebook is undone by the stale statistics.
  naive = state._replace(codebook=new.codebook)
  pulled = vq.ema_update(naive, z, idx)
  np.testing.assert_allclose(pulled.codebook[3], [100.0, 100.0], rtol=1e-2)


def test_kmeans_matches_numpy_lloyd_and_beats_random_init():
  rng = _rng(20)
  centres = rng.normal(scale=5.0, size=(5, 3))
  distinct = centres[rng.integers(0, 5, 20)] + rng.normal(size=(20, 3))
  # Repeated rows make duplicate initial centres, hence empty clusters.
  z = np.tile(distinct, (3, 1)).astype(np.float32)
  k, iters = 12, 6
  key = jax.random.key(7)
  got, counts = jax.jit(
      vq.kmeans_init, static_argnums=2,
      static_argnames=("num_iters", "return_counts"),
  )(key, z, k, num_iters=iters, return_counts=True)
  # The documented draw: K rows with replacement.
  init = z[np.asarray(jax.random.randint(key, (k,), 0, len(z)))]
  want, want_counts, empty_seen = _np_lloyd(z, init, iters)
  assert empty_seen  # the empty-cluster rule was exercised
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(counts, want_counts)

  def err(cb):
    return np.mean(np.min(_np_sqdist(z, cb), axis=-1))

  assert err(got) < 0.8 * err(init)


# ---------------------------------------------------------------------------
# Cross-device: shard_map on 8 fake devices equals the concatenated batch.
# ---------------------------------------------------------------------------


def test_shard_map_statistics_equal_single_device():
  assert len(jax.devices()) == NDEV
  mesh = _mesh()
  rng = _rng(21)
  k, d = 10, 3
  z = rng.normal(size=(NDEV * 6, d)).astype(np.float32)
  # Skewed assignments: per-device histograms differ from the global one.
  idx = np.sort(rng.integers(0, k, size=NDEV * 6)).astype(np.int32)
  state = vq.ema_init(rng.normal(size=(k, d)).astype(np.float32))

  def local(state, z, idx):
    new = vq.ema_update(state, z, idx, decay=0.9, axis_name="data")
    counts = vq.code_histogram(idx, k, axis_name="data")
    stats = jnp.stack([vq.perplexity(counts), vq.codes_used(counts)])
    return jax.tree.map(lambda x: x[None], (new, counts, stats))

  fn = jax.jit(jax.shard_map(
      local, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P("data")
  ))
  new, counts, stats = jax.tree.map(
      np.asarray, fn(state, _shard(mesh, z), _shard(mesh, idx))
  )
  want_state = vq.ema_update(state, z, idx, decay=0.9)
  want_counts = vq.code_histogram(idx, k)
  want_stats = [vq.perplexity(want_counts), vq.codes_used(want_counts)]
  for dev in range(NDEV):
    for g, w in zip(new, want_state, strict=True):
      np.testing.assert_allclose(g[dev], w, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(counts[dev], want_counts)
    np.testing.assert_allclose(stats[dev], want_stats, rtol=1e-6)
  local_ppl = [vq.perplexity(vq.code_histogram(c, k)) for c in idx.reshape(NDEV, -1)]
  assert np.mean(local_ppl) < 0.8 * float(want_stats[0])  # why it must be global


def test_shard_map_restart_and_kmeans_identical_on_all_devices():
  mesh = _mesh()
  rng = _rng(22)
  k, d = 64, 3  # K > local batch (4) and > global batch (32)
  z = rng.normal(size=(NDEV * 4, d)).astype(np.float32)
  codebook = rng.normal(size=(k, d)).astype(np.float32)
  state = vq.ema_init(codebook, cluster_size=rng.uniform(0, 2, size=k) + 1e-3)
  key = jax.random.key(3)

  def local(key, state, z):
    cb, n = vq.restart_dead_codes(
        key, state.codebook, state.cluster_size, z, axis_name="data"
    )
    st, _ = vq.restart_dead_codes_ema(key, state, z, axis_name="data")
    km = vq.kmeans_init(key, z, 8, num_iters=3, axis_name="data")
    return jax.tree.map(lambda x: x[None], (cb, n, st, km))

  fn = jax.jit(jax.shard_map(
      local, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=P("data")
  ))
  cb, n, st, km = jax.tree.map(np.asarray, fn(key, state, _shard(mesh, z)))
  want_cb, want_n = vq.restart_dead_codes(key, codebook, state.cluster_size, z)
  want_st, _ = vq.restart_dead_codes_ema(key, state, z)
  want_km = vq.kmeans_init(key, z, 8, num_iters=3)
  assert int(want_n) > 0
  for dev in range(NDEV):
    np.testing.assert_array_equal(cb[dev], want_cb)  # bitwise: rows of z
    assert int(n[dev]) == int(want_n)
    for g, w in zip(st, want_st, strict=True):
      np.testing.assert_array_equal(g[dev], w)
    np.testing.assert_array_equal(km[dev], km[0])
  np.testing.assert_allclose(km[0], want_km, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Transformations and bad input.
# ---------------------------------------------------------------------------


def test_vmap_over_codebooks_and_jit_agree_with_loop():
  rng = _rng(23)
  e = rng.normal(size=(3, 8, 2)).astype(np.float32)
  z = rng.normal(size=(3, 10, 2)).astype(np.float32)
  zq, idx = jax.jit(jax.vmap(vq.quantize))(z, e)
  for b in range(3):
    zq_b, idx_b = vq.quantize(z[b], e[b])
    np.testing.assert_array_equal(idx[b], idx_b)
    np.testing.assert_array_equal(zq[b], zq_b)
  loss = jax.vmap(vq.vq_loss)(z, zq)
  np.testing.assert_allclose(loss[1], vq.vq_loss(z[1], zq[1]), rtol=1e-6)


def test_bad_inputs_raise_clear_errors():
  e = jnp.zeros((4, 3))
  z = jnp.zeros((5, 3))
  state = vq.ema_init(e)
  idx = jnp.zeros((5,), jnp.int32)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="codebook"):
    vq.nearest_code(z, jnp.zeros((3,)))
  with pytest.raises(ValueError, match="codebook"):
    vq.squared_distances(z, jnp.zeros((2, 4, 3)))
  with pytest.raises(ValueError, match="codebook"):
    vq.quantize(z, jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match="z"):
    vq.quantize(jnp.zeros((5, 2)), e)
  with pytest.raises(TypeError, match="z"):
    vq.nearest_code(jnp.zeros((5, 3), jnp.int32), e)
  with pytest.raises(TypeError, match="codebook"):
    vq.quantize(z, jnp.zeros((4, 3), jnp.int32))
  with pytest.raises(ValueError, match="z_q"):
    vq.straight_through(z, jnp.zeros((5, 1)))
  with pytest.raises(ValueError, match="z_q"):
    vq.vq_loss(z, jnp.zeros((3,)))
  with pytest.raises(ValueError, match="beta"):
    vq.vq_loss(z, z, beta=-0.1)
  for bad in (0.0, 1.0, 1.5):
    with pytest.raises(ValueError, match="decay"):
      vq.ema_update(state, z, idx, decay=bad)
  with pytest.raises(ValueError, match="eps"):
    vq.ema_update(state, z, idx, eps=0.0)
  with pytest.raises(ValueError, match="indices"):
    vq.ema_update(state, z, jnp.zeros((4,), jnp.int32))
  with pytest.raises(TypeError, match="indices"):
    vq.ema_update(state, z, jnp.zeros((5,)))
  with pytest.raises(ValueError, match="z"):
    vq.ema_update(state, jnp.zeros((5, 2)), idx)
  with pytest.raises(ValueError, match="cluster_size"):
    vq.ema_update(state._replace(cluster_size=jnp.ones(3)), z, idx)
  with pytest.raises(ValueError, match="cluster_size"):
    vq.ema_init(e, cluster_size=jnp.array([1.0, 0.0, 1.0, 1.0]))
  with pytest.raises(ValueError, match="num_codes"):
    vq.code_histogram(idx, 1)
  with pytest.raises(TypeError, match="indices"):
    vq.code_histogram(jnp.zeros(3), 4)
  with pytest.raises(ValueError, match="num_codes"):
    vq.kmeans_init(key, z, 1)
  with pytest.raises(TypeError, match="z"):
    vq.kmeans_init(key, jnp.zeros((5, 3), jnp.int32), 4)
  with pytest.raises(ValueError, match="usage"):
    vq.restart_dead_codes(key, e, jnp.ones(3), z)
  with pytest.raises(ValueError, match="threshold"):
    vq.restart_dead_codes(key, e, jnp.ones(4), z, threshold=0.0)
  with pytest.raises(ValueError, match="z"):
    vq.restart_dead_codes(key, e, jnp.ones(4), jnp.zeros((0, 3)))


def test_first_argmin_equals_jnp_argmin_with_ties_and_nans():
  rng = np.random.default_rng(3)
  # Few distinct values: many ties, where the first index must win.
  s = rng.integers(0, 4, size=(257, 37)).astype(np.float32)
  s[5, 7] = np.nan  # a NaN counts as the minimum, as in argmin
  s[9, :] = np.nan
  s[11, 3] = -np.inf
  s[12, :] = np.inf
  got = np.asarray(vq.first_argmin(jnp.asarray(s)))
  np.testing.assert_array_equal(got, np.argmin(s, axis=-1))
  np.testing.assert_array_equal(got, np.asarray(jnp.argmin(jnp.asarray(s), axis=-1)))
  assert got.dtype == np.int32
