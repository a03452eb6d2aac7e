"""Tests for dgmjax.losses.gan: BCE identities, GAN optimality, numerics."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from scipy import integrate, stats

from dgmjax.losses.gan import (
    discriminator_loss,
    discriminator_loss_mean,
    generator_loss_minimax,
    generator_loss_non_saturating,
    jsd_estimate,
    r1_penalty,
)

d_loss_j = jax.jit(discriminator_loss)
d_loss_mean_j = jax.jit(discriminator_loss_mean)
jsd_j = jax.jit(jsd_estimate)
g_minimax_j = jax.jit(generator_loss_minimax)
g_non_sat_j = jax.jit(generator_loss_non_saturating)

EXTREMES = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], np.float32)


def np_softplus(x):
  return np.logaddexp(0.0, x)


def np_bce(logits, target):
  """BCE from logits, BCE(l, t) = softplus(l) - t l, in float64."""
  logits = np.asarray(logits, np.float64)
  return np_softplus(logits) - target * logits


def _normal(seed, shape, scale=1.0):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(
      np.float32
  )


# Two known 1-D densities: data pi = N(0, 1), model p = 0.5 N(1.5, 0.7^2) +
# 0.5 N(-2, 0.5^2). The Bayes-optimal discriminator is D* = pi / (pi + p),
# whose logit is log pi - log p.
def log_pi(x):
  return stats.norm.logpdf(x, 0.0, 1.0)


def log_p(x):
  return np.logaddexp(
      np.log(0.5) + stats.norm.logpdf(x, 1.5, 0.7),
      np.log(0.5) + stats.norm.logpdf(x, -2.0, 0.5),
  )


def sample_p(rng, n):
  first = rng.random(n) < 0.5
  return np.where(
      first, rng.normal(1.5, 0.7, n), rng.normal(-2.0, 0.5, n)
  )


def jsd_by_quad():
  def integrand(x):
    lp, lq = log_pi(x), log_p(x)
    log_m = np.logaddexp(lp, lq) - np.log(2.0)
    return 0.5 * (np.exp(lp) * (lp - log_m) + np.exp(lq) * (lq - log_m))

  value, _ = integrate.quad(integrand, -15.0, 15.0, limit=200)
  return value


# ---------------------------------------------------------------------------
# Values.


@pytest.mark.parametrize("real_label", [1.0, 0.9, 0.7])
def test_discriminator_loss_matches_numpy_bce(real_label):
  real = _normal(0, (64,), scale=4.0)
  fake = _normal(1, (40,), scale=4.0)
  real_loss, fake_loss = d_loss_j(real, fake, real_label=real_label)
  assert real_loss.shape == (64,) and fake_loss.shape == (40,)
  np.testing.assert_allclose(real_loss, np_bce(real, real_label), rtol=1e-5, atol=1e-6)
  # One-sided smoothing: fake targets stay 0 whatever real_label is.
  np.testing.assert_allclose(fake_loss, np_bce(fake, 0.0), rtol=1e-5, atol=1e-6)
  expected_mean = np_bce(real, real_label).mean() + np_bce(fake, 0.0).mean()
  np.testing.assert_allclose(
      d_loss_mean_j(real, fake, real_label=real_label), expected_mean, rtol=1e-5
  )
  # As -[t log D + (1 - t) log(1 - D)] with D = sigmoid(l).
  d = 1.0 / (1.0 + np.exp(-real.astype(np.float64)))
  np.testing.assert_allclose(
      real_loss,
      -(real_label * np.log(d) + (1 - real_label) * np.log1p(-d)),
      rtol=1e-5,
      atol=1e-6,
  )


def test_generator_losses_match_numpy():
  fake = _normal(2, (50,), scale=4.0)
  f64 = fake.astype(np.float64)
  d = 1.0 / (1.0 + np.exp(-f64))
  np.testing.assert_allclose(g_minimax_j(fake), np.log1p(-d), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_non_sat_j(fake), -np.log(d), rtol=1e-5, atol=1e-6)
  # Both are minimised by fooling D: decreasing in the fake logit.
  order = np.argsort(fake)
  assert np.all(np.diff(np.asarray(g_minimax_j(fake))[order]) <= 0)
  assert np.all(np.diff(np.asarray(g_non_sat_j(fake))[order]) <= 0)


def test_optimal_discriminator_loss_equals_2log2_minus_2jsd():
  jsd = jsd_by_quad()
  assert 0.05 < jsd < math.log(2)  # a non-trivial pair of densities
  # Population D loss at D*: integrate our per-example losses on a grid.
  x = np.linspace(-15.0, 15.0, 300_001)
  logits = (log_pi(x) - log_p(x)).astype(np.float32)
  real_loss, fake_loss = d_loss_j(logits, logits)
  expected_loss = integrate.simpson(
      np.exp(log_pi(x)) * np.asarray(real_loss, np.float64)
      + np.exp(log_p(x)) * np.asarray(fake_loss, np.float64),
      x=x,
  )
  np.testing.assert_allclose(expected_loss, 2 * math.log(2) - 2 * jsd, atol=1e-5)
  # A worse discriminator (tempered, shifted logits) can only do worse, so
  # the estimate (log 4 - L_D) / 2 is a lower bound on the JSD.
  for scale, shift in ((0.5, 0.0), (1.0, 1.0), (2.0, -0.5)):
    worse = (scale * logits + shift).astype(np.float32)
    real_w, fake_w = d_loss_j(worse, worse)
    loss_w = integrate.simpson(
        np.exp(log_pi(x)) * np.asarray(real_w, np.float64)
        + np.exp(log_p(x)) * np.asarray(fake_w, np.float64),
        x=x,
    )
    assert (math.log(4) - loss_w) / 2 < jsd - 1e-3


def test_jsd_estimate_matches_quad_within_monte_carlo_error():
  jsd = jsd_by_quad()
  rng = np.random.default_rng(3)
  n_real, n_fake = 200_000, 150_000  # different batch sizes on purpose
  x_real = rng.normal(0.0, 1.0, n_real)
  x_fake = sample_p(rng, n_fake)
  real_logits = (log_pi(x_real) - log_p(x_real)).astype(np.float32)
  fake_logits = (log_pi(x_fake) - log_p(x_fake)).astype(np.float32)
  estimate = float(jsd_j(real_logits, fake_logits))
  real_loss, fake_loss = d_loss_j(real_logits, fake_logits)
  se = 0.5 * math.sqrt(
      np.var(np.asarray(real_loss, np.float64)) / n_real
      + np.var(np.asarray(fake_loss, np.float64)) / n_fake
  )
  assert se < 2e-3
  assert abs(estimate - jsd) < 5 * se
  # Identical distributions and a D that cannot tell them apart: JSD 0.
  np.testing.assert_allclose(
      jsd_j(np.zeros(7, np.float32), np.zeros(3, np.float32)), 0.0, atol=1e-7
  )


# ---------------------------------------------------------------------------
# Gradients.


def test_non_saturating_gradient_survives_confident_rejection_minimax_does_not():
  fake = np.array([-10.0], np.float32)  # D(G(z)) = 4.5e-5
  grad_ns = jax.jit(jax.grad(lambda z: jnp.sum(generator_loss_non_saturating(z))))
  grad_mm = jax.jit(jax.grad(lambda z: jnp.sum(generator_loss_minimax(z))))
  g_ns, g_mm = float(grad_ns(fake)[0]), float(grad_mm(fake)[0])
  # Closed forms: d softplus(-l)/dl = -sigmoid(-l); d(-softplus(l))/dl = -sigmoid(l).
  np.testing.assert_allclose(g_ns, -1.0 / (1.0 + math.exp(-10.0)), rtol=1e-6)
  np.testing.assert_allclose(g_mm, -1.0 / (1.0 + math.exp(10.0)), rtol=1e-5)
  assert abs(g_ns) > 0.99 and abs(g_mm) < 1e-4
  assert abs(g_ns) / abs(g_mm) > 1e4


@pytest.mark.parametrize("real_label", [1.0, 0.9])
def test_discriminator_gradients_match_closed_form(real_label):
  real = _normal(4, (16,), scale=3.0)
  fake = _normal(5, (12,), scale=3.0)
  g_real, g_fake = jax.jit(
      jax.grad(
          lambda r, f: discriminator_loss_mean(r, f, real_label=real_label),
          argnums=(0, 1),
      )
  )(real, fake)
  sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z.astype(np.float64)))  # noqa: E731
  # d BCE(l, t)/dl = sigmoid(l) - t, divided by each batch's own size.
  np.testing.assert_allclose(g_real, (sigmoid(real) - real_label) / 16, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g_fake, sigmoid(fake) / 12, rtol=1e-5, atol=1e-7)


def test_extreme_logits_exact_values_and_finite_gradients():
  real_loss, fake_loss = d_loss_j(EXTREMES, EXTREMES)
  # softplus(1e4) = 1e4 exactly; no 1e-8 floor caps the loss at 18.4.
  exact = dict(rtol=1e-7, atol=1e-30)
  np.testing.assert_allclose(real_loss, [1e4, 100.0, math.log(2), 0.0, 0.0], **exact)
  np.testing.assert_allclose(fake_loss, [0.0, 0.0, math.log(2), 100.0, 1e4], **exact)
  smoothed, _ = d_loss_j(EXTREMES, EXTREMES, real_label=0.9)
  np.testing.assert_allclose(
      smoothed, np_bce(EXTREMES, 0.9), rtol=1e-6, atol=1e-6
  )
  np.testing.assert_array_equal(g_minimax_j(EXTREMES), -np.asarray(fake_loss))
  np.testing.assert_array_equal(g_non_sat_j(EXTREMES), real_loss)
  expected_sigmoid = np.array([0.0, 0.0, 0.5, 1.0, 1.0])
  for fn, expected in (
      (lambda z: discriminator_loss(z, z, real_label=0.9)[0], expected_sigmoid - 0.9),
      (lambda z: discriminator_loss(z, z)[1], expected_sigmoid),
      (generator_loss_minimax, -expected_sigmoid),
      (generator_loss_non_saturating, expected_sigmoid - 1.0),
  ):
    grad = jax.jit(jax.grad(lambda z, fn=fn: jnp.sum(fn(z))))(EXTREMES)
    np.testing.assert_allclose(grad, expected, atol=1e-6)
  assert np.isfinite(float(jsd_j(EXTREMES, EXTREMES)))


def test_means_accumulate_bfloat16_logits_in_float32():
  # 1001 is not a bfloat16 number (it rounds to 1000): a bfloat16 count or
  # sum would be off by about 0.1%.
  logits = jnp.zeros(1001, jnp.bfloat16)
  per_example = float(jax.nn.softplus(jnp.zeros((), jnp.bfloat16)))
  loss = d_loss_mean_j(logits, logits)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, 2 * per_example, rtol=1e-6)


# ---------------------------------------------------------------------------
# Transformations.


def test_eager_jit_and_vmap_agree():
  real = _normal(6, (4, 5))
  fake = _normal(7, (4, 3))
  eager_real, eager_fake = discriminator_loss(real, fake, real_label=0.9)
  jit_real, jit_fake = d_loss_j(real, fake, real_label=0.9)
  np.testing.assert_allclose(eager_real, jit_real, rtol=1e-6)
  np.testing.assert_allclose(eager_fake, jit_fake, rtol=1e-6)
  v_real, v_fake = jax.vmap(
      lambda r, f: discriminator_loss(r, f, real_label=0.9)
  )(real, fake)
  np.testing.assert_allclose(v_real, jit_real, rtol=1e-6)
  np.testing.assert_allclose(v_fake, jit_fake, rtol=1e-6)
  per_row = jax.vmap(jsd_estimate)(real, fake)
  for i in range(4):
    np.testing.assert_allclose(per_row[i], jsd_estimate(real[i], fake[i]), rtol=1e-5)
  np.testing.assert_allclose(
      jax.vmap(generator_loss_non_saturating)(fake), g_non_sat_j(fake), rtol=1e-6
  )
  np.testing.assert_allclose(
      jax.vmap(generator_loss_minimax)(fake), g_minimax_j(fake), rtol=1e-6
  )


def test_shard_map_with_axis_name_equals_single_device():
  assert len(jax.devices()) == 8
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  # Explicit mesh axes: the inputs must already carry the sharding.
  data = jax.sharding.NamedSharding(mesh, P("data"))
  real_np = _normal(8, (8 * 6,), scale=2.0)
  fake_np = _normal(9, (8 * 3,), scale=2.0)  # another batch size per device
  real, fake = jax.device_put(real_np, data), jax.device_put(fake_np, data)

  def sharded(fn):
    return jax.jit(
        jax.shard_map(fn, mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P())
    )

  d_sharded = sharded(
      lambda r, f: discriminator_loss_mean(r, f, real_label=0.9, axis_name="data")
  )(real, fake)
  np.testing.assert_allclose(
      d_sharded, d_loss_mean_j(real_np, fake_np, real_label=0.9), rtol=1e-6
  )
  jsd_sharded = sharded(lambda r, f: jsd_estimate(r, f, axis_name="data"))(real, fake)
  np.testing.assert_allclose(
      jsd_sharded, jsd_j(real_np, fake_np), rtol=1e-5, atol=1e-7
  )
  # Without axis_name each device would only see its own shard.
  local = jax.jit(
      jax.shard_map(
          lambda r, f: jsd_estimate(r, f)[None],
          mesh=mesh,
          in_specs=(P("data"), P("data")),
          out_specs=P("data"),
      )
  )(real, fake)
  assert np.ptp(np.asarray(local)) > 1e-3


# ---------------------------------------------------------------------------
# R1 penalty.


def _tiny_disc(params, x):
  """A per-example MLP discriminator on (B, 3, 2) inputs, logits (B,)."""
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
  return h @ params["w2"]


def _tiny_params(seed):
  return {"w1": jnp.asarray(_normal(seed, (6, 5))),
          "b1": jnp.asarray(_normal(seed + 1, (5,))),
          "w2": jnp.asarray(_normal(seed + 2, (5,)))}


def test_r1_penalty_quadratic_discriminator_closed_form():
  # l(x) = x^T A x + b.x: grad = (A + A^T) x + b, in float64 NumPy.
  a = _normal(70, (3, 3))
  b = _normal(71, (3,))
  x = _normal(72, (8, 3))
  gamma = 10.0

  def disc(x):
    return jnp.einsum("bi,ij,bj->b", x, a, x) + x @ b

  got = jax.jit(lambda x: r1_penalty(disc, x, gamma=gamma))(x)
  grad = x.astype(np.float64) @ (a + a.T).astype(np.float64) + b
  np.testing.assert_allclose(got, 0.5 * gamma * np.sum(grad**2, -1), rtol=1e-5)
  assert got.shape == (8,)


def test_r1_penalty_matches_per_example_grad_and_returns_logits():
  params = _tiny_params(80)
  x = jnp.asarray(_normal(83, (7, 3, 2)))
  disc = functools.partial(_tiny_disc, params)
  penalty, logits = jax.jit(
      lambda x: r1_penalty(disc, x, gamma=0.5, return_logits=True))(x)
  # Independent: the gradient of each example on its own (a batch of one).
  per_example = jax.vmap(jax.grad(lambda xi: disc(xi[None])[0]))(x)
  want = 0.25 * np.sum(np.asarray(per_example, np.float64) ** 2, axis=(1, 2))
  np.testing.assert_allclose(penalty, want, rtol=1e-5)
  np.testing.assert_allclose(logits, disc(x), rtol=1e-6)
  np.testing.assert_array_equal(r1_penalty(disc, x, gamma=0.0), 0.0)


def test_r1_penalty_gradient_wrt_discriminator_params_closed_form():
  # Linear l(x) = w.x: R1 = gamma/2 ||w||^2 for every x, d/dw = gamma w.
  w = jnp.asarray(_normal(90, (4,)))
  x = jnp.asarray(_normal(91, (5, 4)))

  def mean_penalty(w):
    return jnp.mean(r1_penalty(lambda x: x @ w, x, gamma=3.0))

  value, grad = jax.jit(jax.value_and_grad(mean_penalty))(w)
  w64 = np.asarray(w, np.float64)
  np.testing.assert_allclose(value, 1.5 * np.sum(w64**2), rtol=1e-6)
  np.testing.assert_allclose(grad, 3.0 * w64, rtol=1e-6)


def test_r1_penalty_bad_inputs():
  x = np.zeros((4, 2), np.float32)
  with pytest.raises(ValueError, match=r"disc_fn\(x\) must return one logit"):
    r1_penalty(lambda x: x[:, :1], x, gamma=1.0)  # (B, 1), not (B,)
  for gamma in (-1.0, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="gamma"):
      r1_penalty(lambda x: x[:, 0], x, gamma=gamma)
  with pytest.raises(TypeError, match="gamma"):
    r1_penalty(lambda x: x[:, 0], x, gamma="1")
  with pytest.raises(TypeError, match="x must have a floating"):
    r1_penalty(lambda x: x[:, 0], x.astype(np.int32), gamma=1.0)


# ---------------------------------------------------------------------------
# Bad input.


def test_bad_inputs_raise_clear_errors():
  ok = np.zeros(4, np.float32)
  ints = np.zeros(4, np.int32)
  with pytest.raises(TypeError, match="real_logits"):
    discriminator_loss(ints, ok)
  with pytest.raises(TypeError, match="fake_logits"):
    discriminator_loss(ok, ints)
  with pytest.raises(TypeError, match="fake_logits"):
    generator_loss_minimax(ints)
  with pytest.raises(TypeError, match="fake_logits"):
    generator_loss_non_saturating(ints)
  with pytest.raises(TypeError, match="real_logits"):
    jsd_estimate(ints, ok)
  for label in (0.0, -0.1, 1.5, float("nan")):
    with pytest.raises(ValueError, match="real_label"):
      discriminator_loss(ok, ok, real_label=label)
  with pytest.raises(ValueError, match="real_label"):
    discriminator_loss_mean(ok, ok, real_label=np.full(4, 0.9, np.float32))
  with pytest.raises(ValueError, match="real_logits"):
    discriminator_loss_mean(np.zeros(0, np.float32), ok)
  with pytest.raises(ValueError, match="fake_logits"):
    jsd_estimate(ok, np.zeros((2, 0), np.float32))
