"""RealNVP flow prior: exact inverse, log-det against autodiff, a normalised density."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from dgmjax.losses.elbo import log_standard_normal
from dgmjax.nn.flows import AffineCoupling, RealNVP, coupling_masks


def _random_flow(dim, key=0, scale=0.5, num_layers=4, hidden=(16, 16)):
  """A flow with every parameter perturbed, so it is far from the identity."""
  flow = RealNVP(dim=dim, num_layers=num_layers, hidden=hidden)
  params = jax.jit(flow.init)(jax.random.key(key), jnp.zeros((1, dim)))
  flat, unravel = ravel_pytree(params)
  noise = jax.random.normal(jax.random.key(key + 100), flat.shape)
  return flow, unravel(flat + scale * noise)


def _fns(flow):
  """Jitted forward, inverse and log_prob (eager Flax dispatch is slow)."""
  fwd = jax.jit(flow.apply)
  inv = jax.jit(lambda p, v: flow.apply(p, v, method=RealNVP.inverse))
  lp = jax.jit(lambda p, v: flow.apply(p, v, method=RealNVP.log_prob))
  return fwd, inv, lp


def _in_float64(flow_and_params):
  flow, params = flow_and_params
  return flow, jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_exact_inverse_and_log_det_against_autodiff_jacobian(dim):
  # float64: the round trip is exact to rounding (1e-12 at |z*| ~ 300), which
  # float32 cannot show for a flow this far from the identity.
  with jax.enable_x64(True):
    flow, params = _in_float64(_random_flow(dim, key=dim))
    fwd, inv, _ = _fns(flow)
    z = 2.0 * jax.random.normal(jax.random.key(1), (64, dim), jnp.float64)
    z_star, log_det = fwd(params, z)
    assert z_star.dtype == jnp.float64
    assert float(jnp.max(jnp.abs(z_star - z))) > 1.0  # far from the identity
    back, inv_log_det = inv(params, z_star)
    np.testing.assert_allclose(back, z, atol=1e-9, rtol=0)
    np.testing.assert_allclose(inv_log_det, -log_det, atol=1e-9, rtol=0)
    again, _ = fwd(params, inv(params, z)[0])
    np.testing.assert_allclose(again, z, atol=1e-9, rtol=0)
    # log|det J_f| against the autodiff Jacobian, forward and inverse.
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda v: fwd(params, v[None])[0][0])))(z[:6])
    sign, expected = np.linalg.slogdet(np.asarray(jac))
    assert np.all(sign != 0)
    np.testing.assert_allclose(log_det[:6], expected, atol=1e-7, rtol=0)
    jac_inv = jax.jit(jax.vmap(jax.jacfwd(lambda v: inv(params, v[None])[0][0])))(z_star[:6])
    np.testing.assert_allclose(inv_log_det[:6], np.linalg.slogdet(np.asarray(jac_inv))[1],
                               atol=1e-7, rtol=0)


def test_float32_round_trip_and_a_single_layer():
  flow, params = _random_flow(3, key=3, scale=0.2)
  fwd, inv, _ = _fns(flow)
  z = 2.0 * jax.random.normal(jax.random.key(1), (64, 3))
  z_star, _ = fwd(params, z)
  back, _ = inv(params, z_star)
  np.testing.assert_allclose(back, z, atol=2e-6 * float(jnp.max(jnp.abs(z_star))), rtol=0)
  # One coupling: the kept coordinate passes through bit for bit.
  layer = AffineCoupling(mask=(True, False, False), hidden=(8,))
  lp = jax.jit(layer.init)(jax.random.key(4), z)
  lp = jax.tree.map(lambda x: x + 0.7, lp)
  y, ld = jax.jit(layer.apply)(lp, z)
  np.testing.assert_array_equal(y[:, 0], z[:, 0])
  jac = jax.jit(jax.vmap(jax.jacfwd(lambda v: layer.apply(lp, v)[0])))(z[:5])
  np.testing.assert_allclose(ld[:5], np.linalg.slogdet(np.asarray(jac, np.float64))[1],
                             atol=1e-5, rtol=1e-5)
  back = jax.jit(lambda p, v: layer.apply(p, v, method=AffineCoupling.inverse))(lp, y)[0]
  np.testing.assert_allclose(back, z, atol=1e-5)


def test_fresh_flow_is_the_identity_so_the_prior_is_standard_normal():
  flow = RealNVP(dim=4)
  z = jax.random.normal(jax.random.key(5), (10, 4))
  params = jax.jit(flow.init)(jax.random.key(6), z)
  fwd, _, lp = _fns(flow)
  z_star, log_det = fwd(params, z)
  np.testing.assert_array_equal(z_star, z)
  np.testing.assert_array_equal(log_det, 0.0)
  np.testing.assert_allclose(lp(params, z), log_standard_normal(z), rtol=1e-6)


def test_log_prob_is_a_normalised_density_and_matches_its_samples():
  flow, params = _random_flow(2, key=7, scale=0.3)
  _, inv, lp = _fns(flow)
  # Riemann sum of exp(log p) on a grid wide enough for the mass.
  axis = np.linspace(-12.0, 12.0, 481, dtype=np.float32)
  zx, zy = np.meshgrid(axis, axis)
  grid = jnp.asarray(np.stack([zx.ravel(), zy.ravel()], axis=1))
  density = np.exp(np.asarray(lp(params, grid), np.float64))
  cell = (axis[1] - axis[0]) ** 2
  assert abs(density.sum() * cell - 1.0) < 5e-3
  mean_grid = (density[:, None] * np.asarray(grid)).sum(0) * cell
  # Samples z = f⁻¹(z*) have that density: compare their mean.
  z_star = jax.random.normal(jax.random.key(8), (40_000, 2))
  samples = np.asarray(jax.jit(lambda p, v: flow.apply(p, v, method=RealNVP.sample))(
      params, z_star))
  # Two separately compiled programs may round differently: up to 3 float32
  # ulps of a sample of size ~8 (1.3e-6 seen at -O0, see conftest).
  np.testing.assert_allclose(samples, inv(params, z_star)[0], rtol=1e-6, atol=3e-6)
  se = samples.std(0) / np.sqrt(len(samples))
  assert np.all(np.abs(samples.mean(0) - mean_grid) < 5 * se + 1e-3), (samples.mean(0), mean_grid)


def test_jit_vmap_grad_and_leading_axes():
  flow, params = _random_flow(3, key=9)
  _, _, log_prob = _fns(flow)
  z = jax.random.normal(jax.random.key(10), (4, 5, 3))
  lp = log_prob(params, z)
  assert lp.shape == (4, 5)
  np.testing.assert_allclose(log_prob(params, z[1]), lp[1], rtol=1e-5, atol=1e-5)
  vm = jax.jit(jax.vmap(lambda v: log_prob(params, v)))(z)
  np.testing.assert_allclose(vm, lp, rtol=1e-5, atol=1e-5)
  grads = jax.jit(jax.grad(lambda p: jnp.mean(log_prob(p, z))))(params)
  flat = jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads)])
  assert bool(jnp.all(jnp.isfinite(flat))) and float(jnp.max(jnp.abs(flat))) > 0
  # Far-away points stay finite (the tanh bound on the log-scale).
  far = jnp.full((2, 3), 1e3)
  assert bool(jnp.all(jnp.isfinite(log_prob(params, far))))


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="dim"):
    RealNVP(dim=1).init(jax.random.key(0), jnp.zeros((1, 1)))
  with pytest.raises(ValueError, match="num_layers"):
    coupling_masks(3, 0)
  flow = RealNVP(dim=3)
  params = flow.init(jax.random.key(0), jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match="last dimension 3"):
    flow.apply(params, jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="last dimension 3"):
    flow.apply(params, jnp.zeros((2, 2)), method=RealNVP.inverse)
