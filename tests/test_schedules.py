"""Tests for dgmjax.losses.schedules against closed-form NumPy schedules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.losses.schedules import (
    cosine_temperature_schedule,
    cosine_warmup,
    exponential_temperature_schedule,
    jang_temperature_schedule,
    linear_warmup,
)

# Many steps, including both sides of every boundary used below.
STEPS = np.unique(
    np.concatenate([
        np.arange(0, 3000),
        np.arange(0, 2_000_001, 997),
        [4999, 5000, 5001, 9999, 10_000, 10_001, 10**6, 2 * 10**6],
    ])
).astype(np.int32)


def np_jang(t, rate, every, tau_min, tau_0):
  return np.maximum(tau_min, tau_0 * np.exp(-rate * every * np.floor(t / every)))


def np_jang_compounded(t_final, rate, every, tau_min, tau_0):
  """The known bug: tau <- max(tau_min, tau * exp(-r t)) applied every N steps."""
  tau = tau_0
  for t in range(every, t_final + 1, every):
    tau = max(tau_min, tau * math.exp(-rate * t))
  return tau


def _run_all_ways(schedule, steps):
  """Values from a vectorised call, a jitted traced scalar step and a scan."""
  vectorised = np.asarray(schedule(jnp.asarray(steps)))
  jitted = jax.jit(schedule)
  some = steps[:: max(1, len(steps) // 7)]
  for t in some:
    traced = jitted(jnp.int32(t))
    assert traced.dtype == jnp.float32 and traced.shape == ()
    np.testing.assert_allclose(
        traced, vectorised[list(steps).index(t)], rtol=1e-6, atol=1e-6
    )

  def body(carry, t):
    return carry, schedule(t)

  _, scanned = jax.jit(lambda ts: jax.lax.scan(body, 0, ts))(jnp.asarray(steps))
  # Scalar and vectorised float32 transcendental functions may differ in the
  # last bits, hence the small absolute tolerance.
  np.testing.assert_allclose(scanned, vectorised, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      jax.jit(jax.vmap(schedule))(steps), vectorised, rtol=1e-6, atol=1e-6
  )
  return vectorised


@pytest.mark.parametrize(
    "rate,every,tau_min", [(1e-4, 1000, 0.5), (1e-5, 500, 0.5), (3e-6, 1, 0.05)]
)
def test_jang_schedule_matches_closed_form(rate, every, tau_min):
  schedule = jang_temperature_schedule(
      rate=rate, every=every, min_temperature=tau_min
  )
  values = _run_all_ways(schedule, STEPS)
  assert values.dtype == np.float32
  np.testing.assert_allclose(
      values, np_jang(STEPS.astype(np.float64), rate, every, tau_min, 1.0),
      rtol=1e-6,
  )
  # Staircase: constant within a block of N steps, non-increasing overall.
  assert np.all(np.diff(values) <= 0)
  if every > 1:
    assert schedule(every - 1) == schedule(0) == 1.0
    assert schedule(every) < 1.0


def test_jang_schedule_is_not_compounded():
  # r = 1e-6, N = 1000: the closed form at t = 1e6 is exp(-1) = 0.368; the
  # compounded update multiplies exp(-r * 1000 j) for j = 1..1000, i.e.
  # exp(-500.5), and sits at the floor.
  kwargs = dict(rate=1e-6, every=1000, min_temperature=0.1, init_temperature=1.0)
  schedule = jang_temperature_schedule(**kwargs)
  ours = float(schedule(10**6))
  np.testing.assert_allclose(ours, math.exp(-1.0), rtol=1e-6)
  compounded = np_jang_compounded(10**6, 1e-6, 1000, 0.1, 1.0)
  assert compounded == 0.1
  assert abs(ours - compounded) > 0.25
  # With the paper's r = 1e-4 the bug already differs after 5 updates:
  # closed form exp(-0.5) = 0.607 against max(0.5, exp(-1.5)) = 0.5.
  paper = jang_temperature_schedule(rate=1e-4, every=1000)
  np.testing.assert_allclose(float(paper(5000)), math.exp(-0.5), rtol=1e-6)
  assert np_jang_compounded(5000, 1e-4, 1000, 0.5, 1.0) == 0.5
  # Purity: the value at a step does not depend on which steps came before.
  first = float(paper(7000))
  for t in (0, 10**6, 3000, 7000, 7000):
    paper(t)
  assert float(paper(7000)) == first


def test_jang_schedule_holds_initial_value_before_step_zero():
  schedule = jang_temperature_schedule(rate=1e-3, every=10, init_temperature=2.0)
  np.testing.assert_array_equal(schedule(jnp.array([-100, -1, 0])), 2.0)


@pytest.mark.parametrize("init,final", [(1.0, 1 / 16), (2.0, 0.5), (0.5, 1.0)])
def test_exponential_temperature_schedule_matches_closed_form(init, final):
  decay_steps = 150_000
  schedule = exponential_temperature_schedule(
      init=init, final=final, decay_steps=decay_steps
  )
  values = _run_all_ways(schedule, STEPS)
  t = np.minimum(STEPS.astype(np.float64), decay_steps)
  expected = init * (final / init) ** (t / decay_steps)
  np.testing.assert_allclose(values, expected, rtol=2e-6)
  # log tau is linear in t: the midpoint is the geometric mean.
  np.testing.assert_allclose(
      float(schedule(decay_steps // 2)), math.sqrt(init * final), rtol=1e-6
  )
  np.testing.assert_allclose(float(schedule(-5)), init, rtol=1e-7)


@pytest.mark.parametrize("init,final", [(1.0, 1 / 16), (1.0, 0.5), (0.5, 2.0)])
def test_cosine_temperature_schedule_matches_closed_form(init, final):
  decay_steps = 150_000
  schedule = cosine_temperature_schedule(
      init=init, final=final, decay_steps=decay_steps
  )
  values = _run_all_ways(schedule, STEPS)
  t = np.minimum(STEPS.astype(np.float64), decay_steps)
  expected = final + (init - final) * 0.5 * (1 + np.cos(np.pi * t / decay_steps))
  np.testing.assert_allclose(values, expected, rtol=2e-6)
  np.testing.assert_allclose(float(schedule(-5)), init, rtol=1e-7)


@pytest.mark.parametrize("init_value", [0.0, 1.0])
def test_linear_warmup_matches_closed_form_dalle_recipe(init_value):
  schedule = linear_warmup(
      final_value=6.6, warmup_steps=5000, init_value=init_value
  )
  values = _run_all_ways(schedule, STEPS)
  t = np.minimum(STEPS.astype(np.float64), 5000)
  expected = init_value + (6.6 - init_value) * t / 5000
  np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)
  assert float(schedule(0)) == init_value
  np.testing.assert_allclose(float(schedule(5000)), 6.6, rtol=1e-7)
  np.testing.assert_allclose(float(schedule(-3)), init_value, atol=0)


@pytest.mark.parametrize("init_value", [0.0, 1.0])
def test_cosine_warmup_matches_closed_form(init_value):
  schedule = cosine_warmup(final_value=6.6, warmup_steps=5000, init_value=init_value)
  values = _run_all_ways(schedule, STEPS)
  t = np.minimum(STEPS.astype(np.float64), 5000)
  expected = init_value + (6.6 - init_value) * 0.5 * (1 - np.cos(np.pi * t / 5000))
  np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)
  # Zero slope at both ends, unlike the linear warm-up.
  assert float(schedule(1)) - float(schedule(0)) < 1e-5
  assert float(schedule(5000)) - float(schedule(4999)) < 1e-5
  np.testing.assert_allclose(float(schedule(-3)), init_value, atol=0)


def test_bad_arguments_raise_at_construction():
  for bad in (0.0, -1.0, float("nan")):
    with pytest.raises(ValueError, match="min_temperature"):
      jang_temperature_schedule(rate=1e-4, min_temperature=bad)
    with pytest.raises(ValueError, match="init_temperature"):
      jang_temperature_schedule(rate=1e-4, init_temperature=bad)
    for fn in (exponential_temperature_schedule, cosine_temperature_schedule):
      with pytest.raises(ValueError, match="init"):
        fn(init=bad, final=0.5, decay_steps=10)
      with pytest.raises(ValueError, match="final"):
        fn(init=1.0, final=bad, decay_steps=10)
  with pytest.raises(ValueError, match="rate"):
    jang_temperature_schedule(rate=-1e-4)
  with pytest.raises(ValueError, match="min_temperature"):
    jang_temperature_schedule(rate=1e-4, min_temperature=2.0)
  for steps in (0, -5):
    with pytest.raises(ValueError, match="every"):
      jang_temperature_schedule(rate=1e-4, every=steps)
    with pytest.raises(ValueError, match="decay_steps"):
      exponential_temperature_schedule(init=1.0, final=0.5, decay_steps=steps)
    with pytest.raises(ValueError, match="decay_steps"):
      cosine_temperature_schedule(init=1.0, final=0.5, decay_steps=steps)
    with pytest.raises(ValueError, match="warmup_steps"):
      linear_warmup(final_value=1.0, warmup_steps=steps)
    with pytest.raises(ValueError, match="warmup_steps"):
      cosine_warmup(final_value=1.0, warmup_steps=steps)
  with pytest.raises(TypeError, match="every"):
    jang_temperature_schedule(rate=1e-4, every=10.5)
  with pytest.raises(TypeError, match="warmup_steps"):
    linear_warmup(final_value=1.0, warmup_steps=5000.0)
  with pytest.raises(TypeError, match="rate"):
    jang_temperature_schedule(rate="fast")
  with pytest.raises(ValueError, match="final_value"):
    cosine_warmup(final_value=float("inf"), warmup_steps=10)
