"""Tests for dgmjax._checks and the hyperparameter checks of the losses.

Each bad value below used to pass the check (``nan <= 0`` is False) or raise
an error that did not name the argument; every public call site named in
issue 18 is exercised end to end, eagerly and under ``jit``.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import _checks
from dgmjax.losses import density_ratio, divergences, gumbel, vq

NAN, INF = float("nan"), float("inf")
KEY = jax.random.key(0)
LOGITS = jnp.log(jnp.array([0.2, 0.3, 0.5]))


@pytest.mark.parametrize("value", [NAN, INF, -INF, np.float32(NAN),
                                   jnp.array(NAN), jnp.array([1.0, NAN])])
@pytest.mark.parametrize("allow_zero", [False, True])
def test_check_positive_rejects_non_finite(value, allow_zero):
  with pytest.raises(ValueError, match="^tau must be finite"):
    _checks.check_positive("tau", value, allow_zero=allow_zero)


def test_check_positive_finite_false_allows_inf_but_not_nan():
  _checks.check_positive("cap", INF, finite=False)
  with pytest.raises(ValueError, match="cap"):
    _checks.check_positive("cap", NAN, finite=False)
  with pytest.raises(ValueError, match="cap"):
    _checks.check_positive("cap", -INF, finite=False)


@pytest.mark.parametrize("value", ["a", None, True, 1 + 2j, object()])
def test_non_numbers_raise_type_error_naming_the_argument(value):
  with pytest.raises(TypeError, match="^tau must be a real number"):
    _checks.check_positive("tau", value)
  with pytest.raises(TypeError, match="^decay must be a real number"):
    _checks.check_in_range("decay", value, 0.0, 1.0)


def test_valid_values_pass_and_boundaries_are_respected():
  for v in (1e-30, 3, np.float32(2.0), jnp.bfloat16(0.5), jnp.array([1.0, 2.0])):
    _checks.check_positive("x", v)
  _checks.check_positive("x", 0.0, allow_zero=True)
  with pytest.raises(ValueError, match="x must be > 0"):
    _checks.check_positive("x", 0.0)
  with pytest.raises(ValueError, match="x must be >= 0"):
    _checks.check_positive("x", -1e-30, allow_zero=True)
  _checks.check_in_range("d", 1.0, 0.0, 1.0)
  for bad in (NAN, 1.0):
    with pytest.raises(ValueError, match="d must be in"):
      _checks.check_in_range("d", bad, 0.0, 1.0, closed=False)


def test_traced_values_are_let_through():
  @jax.jit
  def f(t):
    _checks.check_positive("t", t)
    _checks.check_in_range("t", t, 0.0, 1.0)
    return t

  assert float(f(0.5)) == 0.5


def test_lists_and_strings_in_array_checks_name_the_argument():
  with pytest.raises(TypeError, match="^values must be an array or a number, got list"):
    _checks.check_floating("values", [1.0, 2.0])
  with pytest.raises(TypeError, match="^idx must be an array or a number, got str"):
    _checks.check_integer("idx", "3")


# End-to-end: the calls of issue 18, eager and jitted with the bad value
# captured as a Python constant (the case a trace-time check can see).
BAD_CALLS = {
    "gumbel_softmax_sample": lambda v: gumbel.gumbel_softmax_sample(
        KEY, LOGITS, temperature=v, hard=True),
    "gumbel_softmax_log_sample": lambda v: gumbel.gumbel_softmax_log_sample(
        KEY, LOGITS, temperature=v),
    "exp_concrete_log_prob": lambda v: gumbel.exp_concrete_log_prob(
        jax.nn.log_softmax(LOGITS), LOGITS, temperature=v),
    "vq_loss": lambda v: vq.vq_loss(jnp.ones((2, 3)), jnp.zeros((2, 3)), beta=v),
    "ema_update": lambda v: vq.ema_update(
        vq.ema_init(jnp.eye(3)), jnp.ones((4, 3)), jnp.zeros(4, jnp.int32),
        decay=0.99, eps=v),
    "kl_divergence_grid": lambda v: divergences.kl_divergence_grid(
        jnp.zeros(4), jnp.zeros(4), dx=v),
}
ARG_NAME = {"vq_loss": "beta", "ema_update": "eps", "kl_divergence_grid": "dx"}


@pytest.mark.parametrize("which", sorted(BAD_CALLS))
@pytest.mark.parametrize("value", [NAN, INF])
@pytest.mark.parametrize("jit", [False, True])
def test_public_hyperparameters_reject_nan_and_inf(which, value, jit):
  call = functools.partial(BAD_CALLS[which], value)
  if jit:
    call = jax.jit(call)
  name = ARG_NAME.get(which, "temperature")
  with pytest.raises(ValueError, match=f"^{name} must be finite"):
    call()


@pytest.mark.parametrize("which", sorted(BAD_CALLS))
def test_public_hyperparameters_reject_strings_with_type_error(which):
  name = ARG_NAME.get(which, "temperature")
  with pytest.raises(TypeError, match=f"^{name} must be a real number"):
    BAD_CALLS[which]("a")


def test_valid_calls_still_work():
  y = BAD_CALLS["gumbel_softmax_sample"](0.5)
  np.testing.assert_array_equal(np.sort(np.asarray(y)), [0.0, 0.0, 1.0])
  kl = BAD_CALLS["kl_divergence_grid"](0.25)
  assert float(kl) == 0.0
  assert math.isfinite(float(BAD_CALLS["exp_concrete_log_prob"](1.0)))


def test_kl_estimate_list_names_the_argument():
  with pytest.raises(TypeError, match="^logits_on_numerator_samples must be an array"):
    density_ratio.kl_estimate([1.0, 2.0])
