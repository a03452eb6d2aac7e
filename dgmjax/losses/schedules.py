"""Temperature and KL-weight schedules for the Gumbel-softmax VAE / dVAE.

Each constructor validates its arguments once and returns an optax-style
schedule ``step -> value``: a pure function of the step (no state carried
from one call to the next), jittable, and usable with a traced integer step.
Negative steps are treated as step 0. Values are float32 scalars (or arrays
shaped like ``step`` under broadcasting).

A schedule that is a pure function of the step cannot compound: calling it at
step ``t`` gives the same value however often, or in whatever order, it was
called before (see :func:`jang_temperature_schedule`).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from dgmjax import _checks

__all__ = [
    "Schedule",
    "jang_temperature_schedule",
    "exponential_temperature_schedule",
    "cosine_temperature_schedule",
    "linear_warmup",
    "cosine_warmup",
]

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]


def _check_finite(name: str, value: float) -> None:
  if not isinstance(value, numbers.Real) or isinstance(value, bool):
    raise TypeError(f"{name} must be a real number, got {type(value).__name__}.")
  if not math.isfinite(value):
    raise ValueError(f"{name} must be finite, got {value!r}.")


def _nonnegative_step(step: jax.typing.ArrayLike) -> jax.Array:
  # Before training starts (step < 0) the schedule holds its initial value.
  return jnp.maximum(jnp.asarray(step), 0)


def jang_temperature_schedule(
    *,
    rate: float,
    every: int = 1000,
    min_temperature: float = 0.5,
    init_temperature: float = 1.0,
) -> Schedule:
  """Jang et al.'s staircase exponential annealing of the temperature.

  ``tau(t) = max(tau_min, tau_0 * exp(-r * N * floor(t / N)))``: the closed
  form of "every N steps set ``tau = max(tau_min, tau_0 exp(-r t))``". It is a
  function of ``t`` only; updating ``tau <- max(tau_min, tau * exp(-r t))``
  in place every N steps would instead multiply the factors of all previous
  updates and decay far too fast (a known bug in some implementations).

  Lecture 7, slide "Gumbel-softmax relaxation" (temperature ``tau``).

  Args:
    rate: decay rate ``r >= 0`` per step; the paper uses 1e-5 or 1e-4.
    every: ``N >= 1``, steps between updates; the paper uses 500 or 1000.
    min_temperature: floor ``tau_min > 0``; the paper uses 0.5.
    init_temperature: ``tau_0 >= min_temperature``; the paper uses 1.

  Returns:
    A schedule ``step -> tau`` (float32).

  References:
    Jang, Gu, Poole, `Categorical Reparameterization with Gumbel-Softmax
    <https://arxiv.org/abs/1611.01144>`_, 2016, section 4 (temperature annealing).

  Example:
    >>> schedule = jang_temperature_schedule(rate=1e-4, every=1000)
    >>> print([round(float(schedule(t)), 4) for t in (0, 999, 1000, 5500, 10**6)])
    [1.0, 1.0, 0.9048, 0.6065, 0.5]
  """
  _check_finite("rate", rate)
  _checks.check_positive("rate", rate, allow_zero=True)
  _checks.check_int_at_least("every", every, 1)
  _check_finite("min_temperature", min_temperature)
  _checks.check_positive("min_temperature", min_temperature)
  _check_finite("init_temperature", init_temperature)
  _checks.check_positive("init_temperature", init_temperature)
  if min_temperature > init_temperature:
    raise ValueError(
        f"min_temperature must be <= init_temperature, got {min_temperature} > "
        f"{init_temperature}."
    )

  def schedule(step: jax.typing.ArrayLike) -> jax.Array:
    step = _nonnegative_step(step)
    # The last update happened at the largest multiple of N that is <= t.
    last_update = (step // every) * every
    decayed = init_temperature * jnp.exp(
        -rate * last_update.astype(jnp.float32)
    )
    return jnp.maximum(decayed, min_temperature).astype(jnp.float32)

  return schedule


def exponential_temperature_schedule(
    *, init: float, final: float, decay_steps: int
) -> Schedule:
  """Geometric annealing from ``init`` to ``final`` over ``decay_steps``.

  ``tau(t) = init * (final / init) ** (min(t, T) / T)``: ``log tau`` moves
  linearly from ``log init`` to ``log final`` and then stays at ``final``.
  Wraps ``optax.exponential_decay``.

  Lecture 7, slide "Gumbel-softmax relaxation" (temperature ``tau``); the
  DALL-E dVAE anneals ``tau`` from 1 to 1/16.

  Args:
    init: temperature at step 0, ``> 0``.
    final: temperature from step ``decay_steps`` on, ``> 0``.
    decay_steps: ``T >= 1``.

  Returns:
    A schedule ``step -> tau`` (float32).

  References:
    Ramesh et al., `Zero-Shot Text-to-Image Generation
    <https://arxiv.org/abs/2102.12092>`_, 2021, appendix A.2.

  Example:
    >>> schedule = exponential_temperature_schedule(
    ...     init=1.0, final=1 / 16, decay_steps=100)
    >>> print([round(float(schedule(t)), 4) for t in (0, 50, 100, 200)])
    [1.0, 0.25, 0.0625, 0.0625]
  """
  _check_finite("init", init)
  _checks.check_positive("init", init)
  _check_finite("final", final)
  _checks.check_positive("final", final)
  _checks.check_int_at_least("decay_steps", decay_steps, 1)
  base = optax.exponential_decay(
      init_value=init,
      transition_steps=decay_steps,
      decay_rate=final / init,
      end_value=final,
  )

  def schedule(step: jax.typing.ArrayLike) -> jax.Array:
    return jnp.asarray(base(_nonnegative_step(step)), jnp.float32)

  return schedule


def cosine_temperature_schedule(
    *, init: float, final: float, decay_steps: int
) -> Schedule:
  """Half-cosine annealing from ``init`` to ``final`` over ``decay_steps``.

  ``tau(t) = final + (init - final) * (1 + cos(pi * min(t, T) / T)) / 2``.
  Wraps ``optax.cosine_decay_schedule``.

  Lecture 7, slide "Gumbel-softmax relaxation" (temperature ``tau``).

  Args:
    init: temperature at step 0, ``> 0``.
    final: temperature from step ``decay_steps`` on, ``> 0``.
    decay_steps: ``T >= 1``.

  Returns:
    A schedule ``step -> tau`` (float32).

  References:
    Loshchilov, Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_, 2017.

  Example:
    >>> schedule = cosine_temperature_schedule(init=1.0, final=0.5, decay_steps=100)
    >>> print([round(float(schedule(t)), 4) for t in (0, 50, 100, 200)])
    [1.0, 0.75, 0.5, 0.5]
  """
  _check_finite("init", init)
  _checks.check_positive("init", init)
  _check_finite("final", final)
  _checks.check_positive("final", final)
  _checks.check_int_at_least("decay_steps", decay_steps, 1)
  base = optax.cosine_decay_schedule(
      init_value=init, decay_steps=decay_steps, alpha=final / init
  )

  def schedule(step: jax.typing.ArrayLike) -> jax.Array:
    return jnp.asarray(base(_nonnegative_step(step)), jnp.float32)

  return schedule


def linear_warmup(
    *, final_value: float, warmup_steps: int, init_value: float = 0.0
) -> Schedule:
  """Linear warm-up of a weight (e.g. the KL weight beta).

  ``beta(t) = init + (final - init) * min(t, T) / T``. Wraps
  ``optax.linear_schedule``.

  Lecture 7, slide "ELBO" (discrete VAE latents): the KL term's weight. The
  DALL-E dVAE warms ``beta`` from 0 to 6.6 over the first 5000 updates.

  Args:
    final_value: value from step ``warmup_steps`` on.
    warmup_steps: ``T >= 1``.
    init_value: value at step 0.

  Returns:
    A schedule ``step -> beta`` (float32).

  References:
    Ramesh et al., `Zero-Shot Text-to-Image Generation
    <https://arxiv.org/abs/2102.12092>`_, 2021, appendix A.2;
    Bowman et al., `Generating Sentences from a Continuous Space
    <https://arxiv.org/abs/1511.06349>`_, 2016 (KL annealing).

  Example:
    >>> schedule = linear_warmup(final_value=6.6, warmup_steps=5000)
    >>> print([round(float(schedule(t)), 4) for t in (0, 2500, 5000, 10**5)])
    [0.0, 3.3, 6.6, 6.6]
  """
  _check_finite("final_value", final_value)
  _check_finite("init_value", init_value)
  _checks.check_int_at_least("warmup_steps", warmup_steps, 1)
  base = optax.linear_schedule(
      init_value=init_value, end_value=final_value, transition_steps=warmup_steps
  )

  def schedule(step: jax.typing.ArrayLike) -> jax.Array:
    return jnp.asarray(base(_nonnegative_step(step)), jnp.float32)

  return schedule


def cosine_warmup(
    *, final_value: float, warmup_steps: int, init_value: float = 0.0
) -> Schedule:
  """Half-cosine warm-up of a weight (e.g. the KL weight beta).

  ``beta(t) = init + (final - init) * (1 - cos(pi * min(t, T) / T)) / 2``:
  starts and ends with zero slope, unlike :func:`linear_warmup`.

  Lecture 7, slide "ELBO" (discrete VAE latents): the KL term's weight.

  Args:
    final_value: value from step ``warmup_steps`` on.
    warmup_steps: ``T >= 1``.
    init_value: value at step 0.

  Returns:
    A schedule ``step -> beta`` (float32).

  References:
    Ramesh et al., `Zero-Shot Text-to-Image Generation
    <https://arxiv.org/abs/2102.12092>`_, 2021, appendix A.2.

  Example:
    >>> schedule = cosine_warmup(final_value=6.6, warmup_steps=5000)
    >>> print([round(float(schedule(t)), 4) for t in (0, 2500, 5000, 10**5)])
    [0.0, 3.3, 6.6, 6.6]
  """
  _check_finite("final_value", final_value)
  _check_finite("init_value", init_value)
  _checks.check_int_at_least("warmup_steps", warmup_steps, 1)

  def schedule(step: jax.typing.ArrayLike) -> jax.Array:
    step = _nonnegative_step(step)
    fraction = jnp.minimum(step, warmup_steps).astype(jnp.float32) / warmup_steps
    ramp = 0.5 * (1.0 - jnp.cos(jnp.pi * fraction))
    return (init_value + (final_value - init_value) * ramp).astype(jnp.float32)

  return schedule
