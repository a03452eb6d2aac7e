"""Tests for dgmjax.losses.surgery (ELBO surgery, aggregate posterior, MWS)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from scipy import special, stats

from dgmjax.losses import surgery as S
from dgmjax.losses.elbo import log_standard_normal

RNG = np.random.default_rng(0)


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _posteriors(n, d, spread=1.5, seed=0):
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(n, d)) * spread
  log_vars = rng.uniform(-2.0, 0.5, size=(n, d))
  return means, log_vars


def _sample(means, log_vars, shape=(), seed=1):
  rng = np.random.default_rng(seed)
  eps = rng.normal(size=shape + means.shape)
  return means + np.exp(0.5 * log_vars) * eps


def _np_pairwise(z, means, log_vars):
  """(M, N) matrix log N(z_m; μ_j, σ²_j) in float64 with scipy."""
  z, means, log_vars = (np.float64(a) for a in (z, means, log_vars))
  return stats.norm.logpdf(
      z[:, None, :], means[None], np.exp(0.5 * log_vars)[None]
  ).sum(-1)


def _np_log_q_agg(z, means, log_vars):
  return special.logsumexp(_np_pairwise(z, means, log_vars), axis=1) - math.log(
      len(means)
  )


def _sinh_flow_log_prob(z):
  """A non-Gaussian prior: z = sinh(u), u ~ N(0, I) (a one-layer flow)."""
  u = jnp.arcsinh(z)
  return jnp.sum(-0.5 * (math.log(2 * math.pi) + u**2) - 0.5 * jnp.log1p(z**2), -1)


def _np_sinh_flow_log_prob(z):
  return (stats.norm.logpdf(np.arcsinh(z)) - 0.5 * np.log1p(z**2)).sum(-1)


# ------------------------------------------------------ aggregate posterior


def test_aggregate_log_prob_matches_scipy_for_all_chunk_sizes():
  means, log_vars = _posteriors(37, 3)
  z = RNG.normal(size=(11, 3)) * 2
  want = _np_log_q_agg(z, means, log_vars)
  for chunk in (None, 1, 7, 16, 40):  # 7 and 16 do not divide 37
    got = S.aggregate_posterior_log_prob(
        _f32(z), _f32(means), _f32(log_vars), chunk_size=chunk
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=str(chunk))


def test_aggregate_log_prob_gradient_closed_form_and_chunked():
  means, log_vars = _posteriors(13, 2)
  z = RNG.normal(size=(4, 2))
  # ∇_z log q_agg(z) = Σ_j w_j(z) (μ_j − z)/σ²_j with w = softmax_j log q_j(z).
  w = special.softmax(_np_pairwise(z, means, log_vars), axis=1)
  want = np.einsum(
      "mj,mjd->md", w, (means[None] - z[:, None]) * np.exp(-log_vars)[None]
  )

  def total(zz, mm, lv, chunk):
    return S.aggregate_posterior_log_prob(zz, mm, lv, chunk_size=chunk).sum()

  grad = jax.jit(jax.grad(total, argnums=(0, 1, 2)), static_argnums=3)
  g_full = grad(_f32(z), _f32(means), _f32(log_vars), None)
  np.testing.assert_allclose(g_full[0], want, rtol=1e-4, atol=1e-5)
  # Chunking with a padded last chunk does not change any gradient.
  g_chunk = grad(_f32(z), _f32(means), _f32(log_vars), 5)
  for a, b in zip(g_full, g_chunk, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_aggregate_log_prob_jit_and_vmap():
  means, log_vars = _f32(_posteriors(9, 2)[0]), _f32(_posteriors(9, 2)[1])
  zs = _f32(RNG.normal(size=(3, 4, 2)))
  fn = lambda z: S.aggregate_posterior_log_prob(z, means, log_vars, chunk_size=4)
  batched = jax.jit(jax.vmap(fn))(zs)
  for i in range(3):
    np.testing.assert_allclose(batched[i], fn(zs[i]), rtol=1e-6)


def test_aggregate_log_prob_60k_posteriors():
  # The memory claim at MNIST size: N = 60 000 posteriors, 2 000 queries, d = 8.
  n, m, d = 60_000, 2_000, 8
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  means = 2.0 * jax.random.normal(k1, (n, d))
  log_vars = jax.random.uniform(k2, (n, d), minval=-3.0, maxval=1.0)
  z = means[:m] + jnp.exp(0.5 * log_vars[:m]) * jax.random.normal(k3, (m, d))
  fn = jax.jit(S.aggregate_posterior_log_prob, static_argnames="chunk_size")
  out = np.asarray(fn(z, means, log_vars, chunk_size=4096))
  assert out.shape == (m,) and np.all(np.isfinite(out))
  rows = [0, 777, m - 1]
  want = _np_log_q_agg(np.asarray(z)[rows], np.asarray(means), np.asarray(log_vars))
  np.testing.assert_allclose(out[rows], want, rtol=1e-5)


# ------------------------------------------------------------ ELBO surgery


@pytest.mark.parametrize("prior", ["standard", "flow"])
def test_surgery_identity_and_independent_values(prior):
  log_prior = log_standard_normal if prior == "standard" else _sinh_flow_log_prob
  np_prior = (
      (lambda z: stats.norm.logpdf(z).sum(-1))
      if prior == "standard"
      else _np_sinh_flow_log_prob
  )
  means, log_vars = _posteriors(24, 3)
  z = _sample(means, log_vars)
  terms = S.elbo_surgery(_f32(z), _f32(means), _f32(log_vars), log_prior,
                         chunk_size=7)
  avg_kl, mi, marg = (float(t) for t in terms)
  assert avg_kl == pytest.approx(mi + marg, abs=1e-5 * max(1.0, abs(avg_kl)))
  log_q = stats.norm.logpdf(z, means, np.exp(0.5 * log_vars)).sum(-1)
  log_agg = _np_log_q_agg(z, means, log_vars)
  log_p = np_prior(z)
  assert avg_kl == pytest.approx(np.mean(log_q - log_p), rel=1e-5)
  assert mi == pytest.approx(np.mean(log_q - log_agg), rel=1e-5)
  assert marg == pytest.approx(np.mean(log_agg - log_p), rel=1e-5)
  assert mi <= math.log(24)


def test_surgery_with_several_samples_per_point_and_chunking():
  means, log_vars = _posteriors(19, 2)
  z = _sample(means, log_vars, shape=(4,))
  args = (_f32(z), _f32(means), _f32(log_vars), _sinh_flow_log_prob)
  full = S.elbo_surgery(*args)
  for chunk in (4, 30):
    np.testing.assert_allclose(
        jnp.stack(S.elbo_surgery(*args, chunk_size=chunk)), jnp.stack(full),
        rtol=1e-5, err_msg=str(chunk),
    )
  # (S, N, d) averages the S per-sample estimates.
  per_s = [jnp.stack(S.elbo_surgery(_f32(z[s]), *args[1:])) for s in range(4)]
  np.testing.assert_allclose(jnp.stack(full), jnp.mean(jnp.stack(per_s), 0),
                             rtol=1e-5)
  assert float(full.avg_kl) == pytest.approx(
      float(full.mutual_info + full.marginal_kl), abs=1e-5
  )


def test_mutual_info_bounds():
  n = 16
  means, log_vars = _posteriors(n, 2, spread=1.0)
  z = _sample(means, log_vars, shape=(64,))
  terms = S.elbo_surgery(_f32(z), _f32(means), _f32(log_vars), log_standard_normal)
  # Overlapping posteriors: 0 < I < log N, clearly inside (I ≥ 0 only holds in
  # expectation; 64 samples per point make the estimate's noise small).
  assert 0.2 < float(terms.mutual_info) < math.log(n) - 0.2

  # Well-separated posteriors: the code identifies the data point, I = log N.
  far = 100.0 * np.eye(n)[:, :4] + 100.0 * np.arange(n)[:, None] * np.ones((1, 4))
  far_lv = np.full((n, 4), -4.0)
  zf = _sample(far, far_lv)
  sep = S.elbo_surgery(_f32(zf), _f32(far), _f32(far_lv), log_standard_normal)
  assert float(sep.mutual_info) == pytest.approx(math.log(n), abs=1e-5)

  # Identical posteriors: q_agg = q(z|x_i), so I = 0 and marginal KL = avg KL.
  same_m = np.tile(RNG.normal(size=(1, 3)), (n, 1))
  same_lv = np.tile(RNG.normal(size=(1, 3)), (n, 1))
  zs = _sample(same_m, same_lv)
  eq = S.elbo_surgery(_f32(zs), _f32(same_m), _f32(same_lv), log_standard_normal)
  assert abs(float(eq.mutual_info)) < 1e-5
  assert float(eq.marginal_kl) == pytest.approx(float(eq.avg_kl), abs=1e-5)


def test_prior_equal_to_aggregate_posterior_has_zero_marginal_kl():
  # Lecture 7, slide "Optimal prior": p = q_agg ⇒ KL(q_agg || p) = 0, I = avg KL.
  means, log_vars = _f32(_posteriors(20, 2)[0]), _f32(_posteriors(20, 2)[1])
  z = _f32(_sample(np.asarray(means), np.asarray(log_vars)))
  prior = lambda zz: S.aggregate_posterior_log_prob(zz, means, log_vars)
  terms = S.elbo_surgery(z, means, log_vars, prior)
  assert float(terms.marginal_kl) == pytest.approx(0.0, abs=1e-5)
  assert float(terms.mutual_info) == pytest.approx(float(terms.avg_kl), abs=1e-5)


def test_analytic_avg_kl_matches_numpy_and_monte_carlo():
  means, log_vars = _posteriors(8, 3)
  want = np.mean(0.5 * np.sum(np.exp(log_vars) - 1 - log_vars + means**2, -1))
  got = S.analytic_avg_kl(_f32(means), _f32(log_vars))
  assert float(got) == pytest.approx(want, rel=1e-5)
  # The Monte-Carlo avg_kl of elbo_surgery is unbiased for it.
  reps = 2000
  z = _sample(means, log_vars, shape=(reps,))
  log_q = stats.norm.logpdf(z, means, np.exp(0.5 * log_vars)).sum(-1)
  per_rep = (log_q - stats.norm.logpdf(z).sum(-1)).mean(-1)
  se = per_rep.std() / math.sqrt(reps)
  mc = S.elbo_surgery(_f32(z), _f32(means), _f32(log_vars), log_standard_normal,
                      chunk_size=8).avg_kl
  assert float(mc) == pytest.approx(per_rep.mean(), rel=1e-5)
  assert abs(float(mc) - want) < 4 * se


def test_surgery_jit_and_grad():
  means, log_vars = _posteriors(10, 2)
  z = _sample(means, log_vars)
  fn = lambda zz, m, lv: S.elbo_surgery(zz, m, lv, _sinh_flow_log_prob,
                                        chunk_size=3)
  args = (_f32(z), _f32(means), _f32(log_vars))
  np.testing.assert_allclose(jnp.stack(jax.jit(fn)(*args)), jnp.stack(fn(*args)),
                             rtol=1e-6)
  grads = jax.jit(jax.grad(lambda *a: sum(fn(*a)), argnums=(0, 1, 2)))(*args)
  assert all(np.all(np.isfinite(g)) for g in grads)


def _mesh():
  return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))


def _shard(mesh, *arrays):
  """Place arrays batch-sharded on the mesh (explicit axes need this)."""
  sharding = jax.sharding.NamedSharding(mesh, P("data"))
  return tuple(jax.device_put(a, sharding) for a in arrays)


def test_surgery_under_shard_map_equals_single_device():
  means, log_vars = _posteriors(32, 2)
  z = _sample(means, log_vars)
  args = (_f32(z), _f32(means), _f32(log_vars))
  mesh = _mesh()
  sharded = jax.shard_map(
      lambda *a: S.elbo_surgery(*a, _sinh_flow_log_prob, chunk_size=5,
                                axis_name="data"),
      mesh=mesh, in_specs=(P("data"), P("data"), P("data")), out_specs=P(),
  )
  got = jax.jit(sharded)(*_shard(mesh, *args))
  want = S.elbo_surgery(*args, _sinh_flow_log_prob)
  np.testing.assert_allclose(jnp.stack(got), jnp.stack(want), rtol=1e-5)
  kl = jax.shard_map(
      lambda m, lv: S.analytic_avg_kl(m, lv, axis_name="data"),
      mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P(),
  )(*_shard(mesh, args[1], args[2]))
  np.testing.assert_allclose(kl, S.analytic_avg_kl(args[1], args[2]), rtol=1e-6)


# --------------------------------------------------- minibatch estimator (MWS)


def test_mws_matches_numpy():
  means, log_vars = _posteriors(12, 3)
  z = _sample(means, log_vars)
  got = S.minibatch_aggregate_log_prob(_f32(z), _f32(means), _f32(log_vars),
                                       dataset_size=1000)
  want = special.logsumexp(_np_pairwise(z, means, log_vars), 1) - math.log(1000 * 12)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_mws_on_the_full_data_set_is_exact_minus_log_n():
  # With M = N: logsumexp_j log q(z_i|x_j) − log(N·N) = log q_agg(z_i) − log N.
  n = 25
  means, log_vars = _posteriors(n, 2)
  z = _sample(means, log_vars)
  args = (_f32(z), _f32(means), _f32(log_vars))
  mws = S.minibatch_aggregate_log_prob(*args, dataset_size=n)
  exact = S.aggregate_posterior_log_prob(*args)
  np.testing.assert_allclose(mws, exact - math.log(n), rtol=1e-6, atol=1e-6)


def test_mws_under_shard_map_equals_single_device():
  means, log_vars = _posteriors(32, 3)
  z = _sample(means, log_vars)
  args = (_f32(z), _f32(means), _f32(log_vars))
  mesh = _mesh()
  sharded = jax.shard_map(
      lambda *a: S.minibatch_aggregate_log_prob(*a, dataset_size=60_000,
                                                axis_name="data"),
      mesh=mesh, in_specs=(P("data"),) * 3, out_specs=P("data"),
  )
  got = jax.jit(sharded)(*_shard(mesh, *args))
  want = S.minibatch_aggregate_log_prob(*args, dataset_size=60_000)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_mws_jit_vmap_grad():
  means, log_vars = _posteriors(6, 2)
  z = _sample(means, log_vars, shape=(3,))
  fn = lambda zz, m, lv: S.minibatch_aggregate_log_prob(zz, m, lv, dataset_size=50)
  args = (_f32(z), _f32(np.stack([means] * 3)), _f32(np.stack([log_vars] * 3)))
  batched = jax.jit(jax.vmap(fn))(*args)
  for i in range(3):
    np.testing.assert_allclose(batched[i], fn(*(a[i] for a in args)), rtol=1e-6)
  grads = jax.grad(lambda *a: fn(*a).sum(), argnums=(0, 1, 2))(
      *(a[0] for a in args)
  )
  assert all(np.all(np.isfinite(g)) for g in grads)


# ------------------------------------------------------- extremes, errors


def test_extreme_log_variances_are_finite():
  means = _f32(RNG.normal(size=(6, 2)))
  z = _f32(RNG.normal(size=(6, 2)) + 3.0)
  fns = {
      "aggregate": lambda m, v: S.aggregate_posterior_log_prob(
          z, m, v, chunk_size=4).sum(),
      "surgery": lambda m, v: sum(S.elbo_surgery(z, m, v, log_standard_normal,
                                                 chunk_size=4)),
      "mws": lambda m, v: S.minibatch_aggregate_log_prob(
          z, m, v, dataset_size=100).sum(),
  }
  for name, fn in fns.items():
    value_and_grad = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
    for lv in (-30.0, 30.0):
      val, grads = value_and_grad(means, jnp.full((6, 2), lv))
      assert np.isfinite(val), (name, lv)
      assert all(np.all(np.isfinite(g)) for g in grads), (name, lv)


def test_bad_inputs_raise():
  m = jnp.zeros((5, 2))
  z = jnp.zeros((3, 2))
  with pytest.raises(ValueError, match="z"):
    S.aggregate_posterior_log_prob(jnp.zeros((2,)), m, m)
  with pytest.raises(ValueError, match="z"):
    S.aggregate_posterior_log_prob(jnp.zeros((3, 4)), m, m)
  with pytest.raises(ValueError, match="means"):
    S.aggregate_posterior_log_prob(z, jnp.zeros((5, 2, 1)), jnp.zeros((5, 2, 1)))
  with pytest.raises(ValueError, match="log_vars"):
    S.aggregate_posterior_log_prob(z, m, jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="chunk_size"):
    S.aggregate_posterior_log_prob(z, m, m, chunk_size=0)
  with pytest.raises(TypeError, match="z"):
    S.aggregate_posterior_log_prob(jnp.zeros((3, 2), jnp.int32), m, m)
  with pytest.raises(ValueError, match="z"):
    S.elbo_surgery(z, m, m, log_standard_normal)  # 3 samples for 5 posteriors
  with pytest.raises(ValueError, match="z"):
    S.elbo_surgery(jnp.zeros((1, 1, 5, 2)), m, m, log_standard_normal)
  with pytest.raises(ValueError, match="log_prior_fn"):
    S.elbo_surgery(m, m, m, lambda zz: jnp.zeros(zz.shape))
  with pytest.raises(TypeError, match="log_prior_fn"):
    S.elbo_surgery(m, m, m, None)
  with pytest.raises(ValueError, match="dataset_size"):
    S.minibatch_aggregate_log_prob(m, m, m, dataset_size=0)
  with pytest.raises(ValueError, match="same shape"):
    S.minibatch_aggregate_log_prob(z, m, m, dataset_size=10)
  with pytest.raises(ValueError, match="means"):
    S.analytic_avg_kl(jnp.zeros((2,)), jnp.zeros((2,)))
