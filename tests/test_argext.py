"""dgmjax.argext: the vectorised first argmin/argmax equal NumPy's and jnp's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import argext
from dgmjax.losses import gumbel


def _scores(seed):
  rng = np.random.default_rng(seed)
  # Few distinct values: many ties, where the first index must win.
  s = rng.integers(0, 4, size=(129, 37)).astype(np.float32)
  s[5, 7] = np.nan  # a NaN counts as the extreme value, as in argmin/argmax
  s[9, :] = np.nan
  s[11, 3] = -np.inf
  s[12, :] = np.inf
  s[13, :] = -np.inf
  s[14, 30] = np.inf
  return s


@pytest.mark.parametrize("name", ["first_argmin", "first_argmax"])
def test_equals_numpy_and_jnp_with_ties_nans_and_infinities(name):
  s = _scores(3)
  ours = getattr(argext, name)
  np_ref = np.argmin if name == "first_argmin" else np.argmax
  jnp_ref = jnp.argmin if name == "first_argmin" else jnp.argmax
  got = np.asarray(jax.jit(ours)(jnp.asarray(s)))
  np.testing.assert_array_equal(got, np_ref(s, axis=-1))
  np.testing.assert_array_equal(got, np.asarray(jnp_ref(jnp.asarray(s), axis=-1)))
  assert got.dtype == np.int32
  # Leading batch axes, and under vmap.
  s3 = jnp.asarray(s[:128].reshape(4, 32, 37))
  np.testing.assert_array_equal(ours(s3), np_ref(np.asarray(s3), axis=-1))
  np.testing.assert_array_equal(jax.vmap(ours)(s3), np_ref(np.asarray(s3), axis=-1))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gumbel_max_sample_is_the_argmax_of_logits_plus_its_noise(axis):
  logits = jax.random.normal(jax.random.key(1), (6, 5, 7))
  logits = logits.at[0, 0, :].set(-jnp.inf).at[0, 0, 3].set(0.0)  # a masked row
  key = jax.random.key(2)
  noise = gumbel.gumbel_noise(key, logits.shape, logits.dtype)
  expected = np.argmax(np.asarray(logits + noise), axis=axis)
  got = np.asarray(jax.jit(gumbel.gumbel_max_sample, static_argnames="axis")(
      key, logits, axis=axis))
  np.testing.assert_array_equal(got, expected)
  assert got.dtype == np.int32
