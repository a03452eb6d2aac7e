"""dgmjax.rng draws the same numbers as jax.random at every shape, under jit too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import rng


@pytest.mark.parametrize("shape,dtype", [((7,), jnp.float32), ((3, 5), jnp.float32),
                                         ((2, 3, 4), jnp.bfloat16), ((4, 4, 8, 8), jnp.float32),
                                         ((2, 1, 3, 1, 5), jnp.bfloat16), ((0, 3, 2), jnp.float32)])
def test_same_numbers_as_jax_random(shape, dtype):
  key = jax.random.key(11)
  np.testing.assert_array_equal(np.asarray(rng.normal(key, shape, dtype), np.float32),
                                np.asarray(jax.random.normal(key, shape, dtype), np.float32))
  tiny = float(jnp.finfo(dtype).tiny)
  np.testing.assert_array_equal(
      np.asarray(rng.uniform(key, shape, dtype, minval=tiny, maxval=1.0), np.float32),
      np.asarray(jax.random.uniform(key, shape, dtype, minval=tiny, maxval=1.0), np.float32))
  np.testing.assert_array_equal(np.asarray(rng.bernoulli(key, 0.3, shape)),
                                np.asarray(jax.random.bernoulli(key, 0.3, shape)))


def test_same_numbers_under_jit_and_with_the_unpartitionable_threefry():
  key, shape = jax.random.key(5), (3, 4, 5, 6)
  mine = jax.jit(lambda k: rng.normal(k, shape))(key)
  np.testing.assert_array_equal(np.asarray(mine), np.asarray(jax.random.normal(key, shape)))
  with jax.threefry_partitionable(False):
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda k: rng.uniform(k, shape))(key)),
                                  np.asarray(jax.random.uniform(key, shape)))


@pytest.mark.parametrize("shape", [(16, 8), (4, 4, 1, 32), (3, 3, 64, 64), (1, 1, 32, 64),
                                   (5, 5, 1, 16)])
def test_lecun_normal_is_flax_default_kernel_init(shape):
  import flax.linen as nn

  key = jax.random.key(2)
  theirs = nn.linear.default_kernel_init(key, shape, jnp.float32)
  np.testing.assert_array_equal(np.asarray(rng.lecun_normal()(key, shape)), np.asarray(theirs))
  # And the scale is LeCun's: variance 1 / fan_in (truncated normal, so only roughly).
  if len(shape) >= 2 and np.prod(shape) >= 4096:
    fan_in = np.prod(shape[:-1])
    assert abs(float(jnp.var(theirs)) * fan_in - 1.0) < 0.1
