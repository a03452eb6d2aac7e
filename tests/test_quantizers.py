"""The quantizers beyond the lecture (rotation trick, FSQ, RVQ, LFQ, factorized
codes) against independent NumPy computations."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dgmjax.losses import fsq, lfq, rvq, vq


def _rng(seed=0):
  return np.random.default_rng(seed)


def _mesh():
  return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))


# ---------------------------------------------------------------------------
# Rotation trick.
# ---------------------------------------------------------------------------


def _np_rotation_grad(e, q, g):
  """(‖q‖/‖e‖) Rᵀ g with R = I − 2rrᵀ + 2q̂êᵀ built as a full float64 matrix."""
  e, q, g = (np.asarray(a, np.float64) for a in (e, q, g))
  out = np.empty_like(g)
  for i in range(e.shape[0]):
    eh = e[i] / np.linalg.norm(e[i])
    qh = q[i] / np.linalg.norm(q[i])
    r = (eh + qh) / np.linalg.norm(eh + qh)
    rot = np.eye(len(eh)) - 2 * np.outer(r, r) + 2 * np.outer(qh, eh)
    # The reference itself must be the rotation of the paper.
    np.testing.assert_allclose(rot @ eh, qh, atol=1e-12)
    np.testing.assert_allclose(rot.T @ rot, np.eye(len(eh)), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    out[i] = np.linalg.norm(q[i]) / np.linalg.norm(e[i]) * rot.T @ g[i]
  return out


def test_rotation_trick_forward_is_z_q_exactly():
  rng = _rng(0)
  e = (rng.normal(size=(64, 7)) * rng.uniform(0.01, 100, size=(64, 1))).astype(np.float32)
  q = rng.normal(size=(64, 7)).astype(np.float32)
  out = jax.jit(vq.rotation_trick)(e, q)
  np.testing.assert_array_equal(np.asarray(out), q)


def test_rotation_trick_gradient_is_rotated_and_rescaled():
  rng = _rng(1)
  e = rng.normal(size=(16, 5)).astype(np.float32) * 3
  q = rng.normal(size=(16, 5)).astype(np.float32)
  g = rng.normal(size=(16, 5)).astype(np.float32)
  _, vjp = jax.vjp(lambda e: vq.rotation_trick(e, jnp.asarray(q)), jnp.asarray(e))
  (got,) = vjp(jnp.asarray(g))
  np.testing.assert_allclose(np.asarray(got), _np_rotation_grad(e, q, g), rtol=2e-5, atol=2e-5)
  # No gradient reaches the codebook side.
  gq = jax.grad(lambda q: jnp.sum(vq.rotation_trick(jnp.asarray(e), q) * g))(jnp.asarray(q))
  np.testing.assert_array_equal(np.asarray(gq), 0.0)


def test_rotation_trick_reduces_to_straight_through_and_rescales_parallel():
  rng = _rng(2)
  q = rng.normal(size=(8, 4)).astype(np.float32)
  g = rng.normal(size=(8, 4)).astype(np.float32)

  def grad_at(e):
    return np.asarray(jax.vjp(lambda e: vq.rotation_trick(e, jnp.asarray(q)), e)[1](g)[0])

  np.testing.assert_allclose(grad_at(jnp.asarray(q)), g, rtol=1e-5, atol=1e-6)
  # Parallel with half the norm: R = I and the scale is ‖q‖/‖e‖ = 2.
  np.testing.assert_allclose(grad_at(jnp.asarray(q) * 0.5), 2.0 * g, rtol=1e-5, atol=1e-6)


def test_rotation_trick_degenerate_vectors_are_finite():
  q = jnp.array([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
  e = jnp.array([[0.0, 0.0, 0.0], [-2.0, -4.0, 0.0], [1.0, 0.0, 0.0]])
  g = jnp.array([[0.3, -1.0, 2.0], [0.5, 0.1, -0.7], [1.0, 2.0, 3.0]])
  out, vjp = jax.vjp(lambda e: vq.rotation_trick(e, q), e)
  (grad,) = vjp(g)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(q))
  assert np.all(np.isfinite(np.asarray(grad)))
  # e = 0 and q = 0 fall back to the straight-through gradient.
  np.testing.assert_array_equal(np.asarray(grad[0]), np.asarray(g[0]))
  np.testing.assert_array_equal(np.asarray(grad[2]), np.asarray(g[2]))
  # e = −2q: the reflection preserves the norm and the scale is 1/2, and the
  # component along ê is flipped (ê ↦ q̂ = −ê).
  gn = np.asarray(g[1], np.float64)
  np.testing.assert_allclose(np.linalg.norm(grad[1]), 0.5 * np.linalg.norm(gn), rtol=1e-5)
  eh = np.array([1.0, 2.0, 0.0]) / np.sqrt(5.0)
  np.testing.assert_allclose(float(grad[1] @ eh), -0.5 * float(gn @ eh), rtol=1e-5)


def test_rotation_trick_bad_inputs():
  with pytest.raises(ValueError, match="z_q"):
    vq.rotation_trick(jnp.zeros((3, 2)), jnp.zeros((3, 3)))
  with pytest.raises(TypeError, match="z_e"):
    vq.rotation_trick(jnp.zeros((3, 2), jnp.int32), jnp.zeros((3, 2)))
  with pytest.raises(ValueError, match="eps"):
    vq.rotation_trick(jnp.zeros((3, 2)), jnp.zeros((3, 2)), eps=0.0)


# ---------------------------------------------------------------------------
# Factorized (l2-normalised) lookup.
# ---------------------------------------------------------------------------


def test_cosine_quantize_is_max_cosine_similarity():
  rng = _rng(3)
  z = rng.normal(size=(50, 6)).astype(np.float32)
  cb = (rng.normal(size=(20, 6)) * rng.uniform(0.1, 10, size=(20, 1))).astype(np.float32)
  z_q, idx = vq.cosine_quantize(z, cb)
  zn = z / np.linalg.norm(z, axis=-1, keepdims=True)
  cn = cb / np.linalg.norm(cb, axis=-1, keepdims=True)
  want = np.argmax(zn.astype(np.float64) @ cn.T.astype(np.float64), axis=-1)
  np.testing.assert_array_equal(np.asarray(idx), want)
  np.testing.assert_allclose(np.asarray(z_q), cn[want], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# FSQ.
# ---------------------------------------------------------------------------

LEVELS = [(8, 6, 5), (2, 3, 4), (7,), (8, 5, 5, 5)]


@pytest.mark.parametrize("levels", LEVELS)
def test_fsq_indices_round_trip_and_count(levels):
  n = int(np.prod(levels))
  assert fsq.num_codes(levels) == n
  idx = jnp.arange(n)
  codes = fsq.indices_to_codes(idx, levels=levels)
  np.testing.assert_array_equal(np.asarray(fsq.codes_to_indices(codes, levels=levels)), idx)
  # A bijection onto the grid: n distinct codes, each per-channel value one of
  # the L_i grid values (k − ⌊L/2⌋)/⌊L/2⌋.
  assert len({tuple(c) for c in np.asarray(codes).tolist()}) == n
  for i, lv in enumerate(levels):
    grid = (np.arange(lv) - lv // 2) / (lv // 2)
    np.testing.assert_allclose(np.unique(np.asarray(codes[:, i])), grid, rtol=1e-6)


@pytest.mark.parametrize("levels", LEVELS)
def test_fsq_outputs_on_grid_and_every_code_reachable(levels):
  rng = _rng(4)
  # Uniform on [−3, 3]: tanh reaches every cell, the outermost with p >= 0.3.
  z = rng.uniform(-3, 3, size=(5000, len(levels))).astype(np.float32)
  codes = np.asarray(fsq.quantize(z, levels=levels), np.float64)
  half = np.array([lv // 2 for lv in levels], np.float64)
  k = codes * half + half
  np.testing.assert_allclose(k, np.round(k), atol=1e-5)
  assert k.min() >= -1e-5 and np.all(k.max(0) <= np.array(levels) - 1 + 1e-5)
  # NumPy transcription of the paper: nearest integer to the bounded value.
  lv = np.array(levels, np.float64)
  h = (lv - 1) * (1 - 1e-3) / 2
  o = np.where(lv % 2 == 0, 0.5, 0.0)
  s = np.where(lv == 2, 0.0, np.arctanh(np.minimum(o / h, 0.99)))
  b = np.tanh(z.astype(np.float64) + s) * h - o
  want = np.round(b) / half
  mismatch = np.abs(codes - want) > 1e-6
  assert mismatch.mean() < 1e-3  # only float32 near-ties may differ
  # Every one of the Π L codes is reached: invert the bound at each grid
  # point (in NumPy; the outermost integers lie just outside tanh's range, so
  # aim a quarter step inside) and quantise.
  grid = np.asarray(fsq.indices_to_codes(jnp.arange(int(np.prod(levels))), levels=levels),
                    np.float64)
  target = np.clip(grid * half, -h - o + 0.25, h - o - 0.25)
  z_at = np.arctanh((target + o) / h) - s
  got = fsq.quantize(z_at.astype(np.float32), levels=levels)
  np.testing.assert_allclose(np.asarray(got), grid, atol=1e-6)


def test_fsq_gradient_is_identity_through_rounding():
  levels = (8, 5, 4)
  rng = _rng(5)
  z = rng.normal(size=(200, 3)).astype(np.float32)
  # Rounding is the identity for the gradient.
  x = jnp.asarray(z) * 3
  np.testing.assert_array_equal(
      np.asarray(jax.grad(lambda x: jnp.sum(fsq.round_ste(x) * 2.5))(x)), 2.5)
  # Whole quantizer: diagonal Jacobian h·(1 − tanh²(z + s))/⌊L/2⌋, by NumPy.
  lv = np.array(levels, np.float64)
  h = (lv - 1) * (1 - 1e-3) / 2
  o = np.where(lv % 2 == 0, 0.5, 0.0)
  s = np.arctanh(o / h)
  want = h * (1 - np.tanh(z.astype(np.float64) + s) ** 2) / (lv // 2)
  got = jax.grad(lambda z: jnp.sum(fsq.quantize(z, levels=levels)))(jnp.asarray(z))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7)
  jac = jax.jacobian(lambda v: fsq.quantize(v, levels=levels))(jnp.asarray(z[0]))
  np.testing.assert_allclose(np.asarray(jac), np.diag(want[0]), rtol=1e-5, atol=1e-7)


def test_fsq_bad_inputs():
  with pytest.raises(ValueError, match=r"levels\[1\]"):
    fsq.quantize(jnp.zeros((2, 2)), levels=(3, 1))
  with pytest.raises(TypeError, match="levels"):
    fsq.quantize(jnp.zeros((2, 1)), levels=5)
  with pytest.raises(ValueError, match="z must have last dimension 3"):
    fsq.quantize(jnp.zeros((2, 2)), levels=(3, 3, 3))
  with pytest.raises(TypeError, match="indices"):
    fsq.indices_to_codes(jnp.zeros(3), levels=(3, 3))
  with pytest.raises(ValueError, match="2\\*\\*31"):
    fsq.num_codes((2**16, 2**16))


# ---------------------------------------------------------------------------
# Residual VQ.
# ---------------------------------------------------------------------------


def _np_rvq(z, codebooks, n):
  r = np.asarray(z, np.float64).copy()
  total = np.zeros_like(r)
  idx = np.full(r.shape[:-1] + (len(codebooks),), -1)
  for i, cb in enumerate(codebooks[:n]):
    d = ((r[..., None, :] - np.asarray(cb, np.float64)) ** 2).sum(-1)
    k = d.argmin(-1)
    q = np.asarray(cb, np.float64)[k]
    idx[..., i] = k
    total += q
    r -= q
  return total, idx


def _rvq_codebooks(rng, s=4, k=16, d=3):
  # Stage i works at scale 2^-i, as trained residual codebooks do; code 0 is
  # the zero vector, so a stage can always leave the residual unchanged.
  cbs = rng.normal(size=(s, k, d)) * (0.5 ** np.arange(s))[:, None, None]
  cbs[:, 0] = 0.0
  return cbs.astype(np.float32)


def test_rvq_matches_numpy_and_error_is_non_increasing():
  rng = _rng(6)
  cbs = _rvq_codebooks(rng)
  z = rng.normal(size=(10, 12, 3)).astype(np.float32)
  errors = []
  for n in range(1, 5):
    out = rvq.residual_quantize(z, cbs, num_active=n)
    want_q, want_idx = _np_rvq(z, cbs, n)
    np.testing.assert_array_equal(np.asarray(out.indices), want_idx)
    np.testing.assert_allclose(np.asarray(out.z_q), want_q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rvq.residual_lookup(out.indices, cbs)),
                               np.asarray(out.z_q), rtol=1e-6, atol=1e-7)
    errors.append(((np.asarray(z, np.float64) - np.asarray(out.z_q)) ** 2).sum(-1))
  errors = np.stack(errors)
  assert np.all(np.diff(errors, axis=0) <= 1e-6)  # per vector
  assert errors[-1].mean() < 0.5 * errors[0].mean()  # and it actually helps
  full = rvq.residual_quantize(z, cbs)
  assert full.indices.shape == (10, 12, 4)
  np.testing.assert_array_equal(np.asarray(full.indices), _np_rvq(z, cbs, 4)[1])


def test_rvq_losses_are_per_stage_vq_losses_and_skipped_stages_are_free():
  rng = _rng(7)
  cbs = _rvq_codebooks(rng, s=3)
  z = rng.normal(size=(40, 3)).astype(np.float32)
  n = rng.integers(1, 4, size=(40,))
  out = rvq.residual_quantize(z, cbs, num_active=jnp.asarray(n))
  loss = np.asarray(rvq.residual_vq_loss(out, beta=0.5))
  for j in range(40):
    q, idx = _np_rvq(z[j], cbs, int(n[j]))
    np.testing.assert_array_equal(np.asarray(out.indices[j]), idx)
    r = z[j].astype(np.float64)
    for i in range(3):
      if i < n[j]:
        code = cbs[i][idx[i]].astype(np.float64)
        assert loss[j, i] == pytest.approx(1.5 * np.mean((r - code) ** 2), rel=1e-5, abs=1e-7)
        r = r - code
      else:
        assert loss[j, i] == 0.0
  # The encoder gradient of the summed loss is that of Σ_i β‖r_{i−1} − sg q_i‖²/D.
  g = jax.grad(lambda z: jnp.sum(rvq.residual_vq_loss(
      rvq.residual_quantize(z, cbs, num_active=jnp.asarray(n)), beta=0.5)))(jnp.asarray(z))
  want = np.zeros_like(z, np.float64)
  for j in range(40):
    _, idx = _np_rvq(z[j], cbs, int(n[j]))
    r = z[j].astype(np.float64)
    for i in range(int(n[j])):
      code = cbs[i][idx[i]].astype(np.float64)
      want[j] += 0.5 * 2 * (r - code) / 3
      r = r - code
  np.testing.assert_allclose(np.asarray(g), want, rtol=1e-4, atol=1e-6)


def test_quantizer_dropout_draws_a_random_number_of_stages():
  n = np.asarray(rvq.sample_num_stages(jax.random.key(0), 4, shape=(8000,)))
  freq = np.bincount(n, minlength=5)[1:] / n.size
  np.testing.assert_allclose(freq, 0.25, atol=0.03)
  n0 = rvq.sample_num_stages(jax.random.key(1), 4, shape=(100,), rate=0.0)
  np.testing.assert_array_equal(np.asarray(n0), 4)
  n_half = np.asarray(rvq.sample_num_stages(jax.random.key(2), 4, shape=(8000,), rate=0.5))
  assert np.mean(n_half == 4) == pytest.approx(0.5 + 0.5 / 4, abs=0.03)
  # Different keys give different scalar draws.
  draws = {int(rvq.sample_num_stages(jax.random.key(i), 4)) for i in range(40)}
  assert draws == {1, 2, 3, 4}


def test_rvq_bad_inputs():
  with pytest.raises(ValueError, match="codebooks"):
    rvq.residual_quantize(jnp.zeros((2, 3)), jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match="z must have last dimension 3"):
    rvq.residual_quantize(jnp.zeros((2, 2)), jnp.zeros((2, 4, 3)))
  with pytest.raises(ValueError, match="num_active"):
    rvq.residual_quantize(jnp.zeros((2, 3)), jnp.zeros((2, 4, 3)), num_active=jnp.ones(5, int))
  with pytest.raises(ValueError, match="indices"):
    rvq.residual_lookup(jnp.zeros((2, 3), int), jnp.zeros((2, 4, 3)))
  with pytest.raises(ValueError, match="rate"):
    rvq.sample_num_stages(jax.random.key(0), 3, rate=1.5)


# ---------------------------------------------------------------------------
# LFQ.
# ---------------------------------------------------------------------------


def test_lfq_codes_are_signs_and_indices_round_trip():
  rng = _rng(8)
  z = rng.normal(size=(30, 6)).astype(np.float32)
  z[0, 0] = 0.0
  q = np.asarray(lfq.quantize(z))
  np.testing.assert_array_equal(q, np.where(z > 0, 1.0, -1.0))
  idx = np.asarray(lfq.codes_to_indices(z))
  np.testing.assert_array_equal(idx, ((z > 0) * 2 ** np.arange(6)).sum(-1))
  np.testing.assert_array_equal(np.asarray(lfq.indices_to_codes(idx, dim=6)), q)
  all_idx = jnp.arange(2**6)
  codes = lfq.indices_to_codes(all_idx, dim=6)
  np.testing.assert_array_equal(np.asarray(lfq.codes_to_indices(codes)), all_idx)
  assert set(np.unique(np.asarray(codes)).tolist()) == {-1.0, 1.0}
  g = jax.grad(lambda z: jnp.sum(lfq.quantize(z) * 3.0))(jnp.asarray(z))
  np.testing.assert_array_equal(np.asarray(g), 3.0)


def _np_lfq_entropies(z, tau):
  """Brute force over all 2^d codes with p(c|z) = softmax_c(−‖z − c‖²/τ)."""
  z = np.asarray(z, np.float64).reshape(-1, z.shape[-1])
  d = z.shape[-1]
  codes = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))
  logits = -((z[:, None, :] - codes[None]) ** 2).sum(-1) / tau
  logits -= logits.max(-1, keepdims=True)
  p = np.exp(logits)
  p /= p.sum(-1, keepdims=True)
  h_x = -(p * np.log(np.maximum(p, 1e-300))).sum(-1)
  pbar = p.mean(0)
  h_joint = -(pbar * np.log(np.maximum(pbar, 1e-300))).sum()
  on = np.array([pbar[codes[:, k] > 0].sum() for k in range(d)])
  h_marg = -(on * np.log(on) + (1 - on) * np.log(1 - on)).sum()
  return h_x, h_joint, h_marg


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_lfq_entropy_terms_match_numpy(tau):
  rng = _rng(9)
  z = (rng.normal(size=(6, 5, 4)) * 0.7).astype(np.float32)
  h_x, h_joint, h_marg = _np_lfq_entropies(z, tau)
  joint = lfq.entropy_penalty(z, temperature=tau, gamma=0.7)
  marg = lfq.entropy_penalty(z, temperature=tau, gamma=0.7, codebook_entropy="marginal")
  np.testing.assert_allclose(np.asarray(joint.per_example).reshape(-1), h_x, rtol=1e-5)
  assert float(joint.sample_entropy) == pytest.approx(h_x.mean(), rel=1e-5)
  assert float(joint.codebook_entropy) == pytest.approx(h_joint, rel=1e-5)
  assert float(marg.codebook_entropy) == pytest.approx(h_marg, rel=1e-5)
  assert h_marg >= h_joint  # the marginal form is an upper bound
  assert float(joint.penalty) == pytest.approx(h_x.mean() - 0.7 * h_joint, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("mode", ["joint", "marginal"])
def test_lfq_entropy_is_stable_for_confident_latents(mode):
  z = jnp.array([[300.0, -300.0], [-300.0, 300.0]])
  t, grad = jax.value_and_grad(
      lambda z: lfq.entropy_penalty(z, temperature=0.01, codebook_entropy=mode).penalty)(z)
  assert np.isfinite(float(t)) and np.all(np.isfinite(np.asarray(grad)))
  # Two codes equally used, no uncertainty: the joint codebook entropy is
  # log 2; each bit is also half on, so the marginal form gives 2 log 2.
  want = np.log(2.0) * (1 if mode == "joint" else 2)
  assert float(t) == pytest.approx(-want, abs=1e-6)


def test_lfq_entropy_under_jit_sharding_and_shard_map_equals_one_device():
  mesh = _mesh()
  rng = _rng(10)
  z = rng.normal(size=(64, 3, 5)).astype(np.float32)
  want = lfq.entropy_penalty(z, temperature=0.8)
  zs = jax.device_put(z, NamedSharding(mesh, P("data")))
  got_jit = jax.jit(lambda z: lfq.entropy_penalty(z, temperature=0.8))(zs)

  def local(z):
    t = lfq.entropy_penalty(z, temperature=0.8, axis_name="data")
    return t.per_example, t.sample_entropy, t.codebook_entropy, t.penalty

  got_sm = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("data"),
                                 out_specs=(P("data"), P(), P(), P())))(zs)
  for got in (tuple(got_jit), got_sm):
    for a, b in zip(got, want, strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_lfq_bad_inputs():
  with pytest.raises(ValueError, match="temperature"):
    lfq.entropy_penalty(jnp.zeros((2, 3)), temperature=0.0)
  with pytest.raises(ValueError, match="codebook_entropy"):
    lfq.entropy_penalty(jnp.zeros((2, 3)), codebook_entropy="full")
  with pytest.raises(ValueError, match="16"):
    lfq.entropy_penalty(jnp.zeros((2, 17)))
  with pytest.raises(ValueError, match="31"):
    lfq.codes_to_indices(jnp.zeros((2, 32)))
  with pytest.raises(TypeError, match="indices"):
    lfq.indices_to_codes(jnp.zeros(3), dim=3)
