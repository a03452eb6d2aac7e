"""Tests for dgmjax.parallel.global_mean (the one mean the losses share)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from dgmjax.parallel import global_mean


def test_global_mean_accumulates_bfloat16_in_float32():
  # 1000 ones and a 3: a bfloat16 running sum stalls at 256.
  x = np.ones(1001, np.float64)
  x[-1] = 3.0
  got = jax.jit(global_mean)(jnp.asarray(x, jnp.bfloat16))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, x.mean(), rtol=1e-6)
  assert float(jnp.mean(jnp.asarray(x, jnp.bfloat16))) != float(got)


def test_global_mean_reduces_every_axis_to_a_scalar():
  x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
  np.testing.assert_allclose(global_mean(x), x.astype(np.float64).mean(),
                             rtol=1e-6)
  assert global_mean(x).shape == ()


def test_global_mean_over_a_device_axis_is_the_mean_of_the_whole_batch():
  assert len(jax.devices()) == 8
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Explicit,))
  x_np = np.random.default_rng(1).standard_normal((8 * 5, 2)).astype(np.float32)
  x = jax.device_put(x_np, jax.sharding.NamedSharding(mesh, P("data")))
  f = jax.jit(jax.shard_map(lambda t: global_mean(t, "data"), mesh=mesh,
                            in_specs=P("data"), out_specs=P()))
  np.testing.assert_allclose(f(x), x_np.astype(np.float64).mean(), rtol=1e-6)
  # Without the axis name each device sees only its own shard.
  local = jax.jit(jax.shard_map(lambda t: global_mean(t)[None], mesh=mesh,
                                in_specs=P("data"), out_specs=P("data")))(x)
  np.testing.assert_allclose(
      local, x_np.reshape(8, 5, 2).astype(np.float64).mean(axis=(1, 2)),
      rtol=1e-5, atol=1e-7)
