"""The lecture's "great likelihood, poor samples" model: a model mixed with noise.

Lecture 7, "Likelihood based models":

  ``p2(x) = 0.01 p(x) + 0.99 p_noise(x)``

for any model p. 99 % of its samples are noise, yet its log-likelihood is at
most ``log 100 ≈ 4.6`` nats worse than p's on *every* point:

  ``log p2(x) ≥ log (0.01 p(x)) = log p(x) − log 100``.

For images ``log p(x)`` grows in magnitude with the number of pixels D while
``log 100`` is fixed, so per dimension the penalty vanishes (``log₂ 100 / 784
≈ 0.0085`` bits/dim on 28×28 digits): poor samples, great likelihood.

``log p2`` is exact: ``logaddexp(log w + log p(x), log(1 − w) + log p_noise(x))``
with mixture weight ``w = 0.01``; the components are never exponentiated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import jax
import jax.numpy as jnp

from dgmjax import _checks, rng

__all__ = [
    "Density",
    "GaussianNoise",
    "NoiseMixture",
    "UniformNoise",
    "mixture_log_prob",
]

WEIGHT = 0.01  # the lecture's share of the model


class Density(Protocol):
  """Anything with ``log_prob(x) -> (B,)`` and ``sample(key, n) -> (n, …)``."""

  def log_prob(self, x: jax.Array) -> jax.Array: ...

  def sample(self, key: jax.Array, num_samples: int) -> jax.Array: ...


def mixture_log_prob(
    model_log_prob: jax.Array, noise_log_prob: jax.Array, *, weight: float = WEIGHT
) -> jax.Array:
  """``log(w p(x) + (1 − w) p_noise(x))`` from the two log-densities.

  Always ``>= log p(x) + log w`` (``= log p(x) − log 100`` for w = 0.01),
  with equality where ``p_noise(x) = 0``.

  Args:
    model_log_prob: log p(x), any shape.
    noise_log_prob: log p_noise(x), same shape (−inf allowed).
    weight: the model's share w in (0, 1).

  Returns:
    log p2(x), same shape.

  Example:
    >>> lp = jnp.array([-10.0, -10.0])
    >>> ln = jnp.array([-jnp.inf, -10.0])  # outside / inside the noise support
    >>> print(jnp.round(mixture_log_prob(lp, ln) - lp, 4))  # −log 100, then 0
    [-4.6052  0.    ]
  """
  _checks.check_floating("model_log_prob", model_log_prob)
  _checks.check_floating("noise_log_prob", noise_log_prob)
  _checks.check_same_shape(model_log_prob=model_log_prob, noise_log_prob=noise_log_prob)
  _checks.check_in_range("weight", weight, 0.0, 1.0, closed=False)
  return jnp.logaddexp(math.log(weight) + model_log_prob,
                       math.log1p(-weight) + noise_log_prob)


def _event_size(x: jax.Array, event_shape: tuple[int, ...]) -> int:
  _checks.check_floating("x", x)
  if tuple(x.shape[1:]) != tuple(event_shape) or x.ndim < 1:
    raise ValueError(
        f"x must have shape (B, {', '.join(map(str, event_shape))}), got {tuple(x.shape)}."
    )
  return math.prod(event_shape)


@dataclasses.dataclass(frozen=True)
class UniformNoise:
  """Uniform density on the pixel cube ``[low, high]^D``: ``−D log(high − low)`` inside.

  Example:
    >>> noise = UniformNoise((2,), low=0.0, high=2.0)
    >>> print(noise.log_prob(jnp.array([[1.0, 1.0], [1.0, 3.0]])))  # −2 log 2, outside
    [-1.3862944       -inf]
  """

  event_shape: tuple[int, ...]
  low: float = 0.0
  high: float = 1.0

  def __post_init__(self):
    if not self.high > self.low:
      raise ValueError(f"high must be > low, got low={self.low}, high={self.high}.")

  def log_prob(self, x: jax.Array) -> jax.Array:
    d = _event_size(x, self.event_shape)
    flat = jnp.reshape(x, (x.shape[0], -1))
    inside = jnp.all((flat >= self.low) & (flat <= self.high), axis=1)
    return jnp.where(inside, -d * math.log(self.high - self.low), -jnp.inf)

  def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
    return rng.uniform(key, (num_samples,) + tuple(self.event_shape),
                       minval=self.low, maxval=self.high)


@dataclasses.dataclass(frozen=True)
class GaussianNoise:
  """Independent ``N(mean, std²)`` on every pixel.

  Example:
    >>> noise = GaussianNoise((3,), mean=0.0, std=1.0)
    >>> print(round(float(noise.log_prob(jnp.zeros((1, 3)))[0]), 4))  # −(3/2) log 2π
    -2.7568
  """

  event_shape: tuple[int, ...]
  mean: float = 0.5
  std: float = 0.5

  def __post_init__(self):
    _checks.check_positive("std", self.std)

  def log_prob(self, x: jax.Array) -> jax.Array:
    d = _event_size(x, self.event_shape)
    z = (jnp.reshape(x, (x.shape[0], -1)) - self.mean) / self.std
    return -0.5 * jnp.sum(z * z, axis=1) - d * (math.log(self.std) + 0.5 * math.log(2 * math.pi))

  def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
    shape = (num_samples,) + tuple(self.event_shape)
    return self.mean + self.std * rng.normal(key, shape)


@dataclasses.dataclass(frozen=True)
class NoiseMixture:
  """``p2 = w · model + (1 − w) · noise`` with exact log-density and sampling.

  Attributes:
    model: any :class:`Density` (e.g. a trained model, or
      :class:`dgmjax.models.kernel_density.KernelDensity`).
    noise: the noise :class:`Density` (:class:`UniformNoise`,
      :class:`GaussianNoise`).
    weight: the model's share w (0.01 in the lecture).

  Example:
    >>> from dgmjax.models.kernel_density import KernelDensity
    >>> p = KernelDensity(jnp.full((4, 2), 0.5), eps=0.01)
    >>> p2 = NoiseMixture(p, UniformNoise((2,)))
    >>> x = p.sample(jax.random.key(0), 3)
    >>> print(bool(jnp.all(p2.log_prob(x) >= p.log_prob(x) - jnp.log(100.0))))
    True
    >>> _, from_model = p2.sample_with_mask(jax.random.key(1), 10_000)
    >>> print(round(float(from_model.mean()), 2))  # 1 % model, 99 % noise
    0.01
  """

  model: Density
  noise: Density
  weight: float = WEIGHT

  def __post_init__(self):
    _checks.check_in_range("weight", self.weight, 0.0, 1.0, closed=False)

  def log_prob(self, x: jax.Array) -> jax.Array:
    """Exact ``log p2(x) >= model.log_prob(x) + log weight``."""
    return mixture_log_prob(self.model.log_prob(x), self.noise.log_prob(x), weight=self.weight)

  def sample_with_mask(self, key: jax.Array, num_samples: int) -> tuple[jax.Array, jax.Array]:
    """``(samples, from_model)``: each sample is the model's with probability w."""
    _checks.check_int_at_least("num_samples", num_samples, 1)
    k_pick, k_model, k_noise = jax.random.split(key, 3)
    from_model = jax.random.bernoulli(k_pick, self.weight, (num_samples,))
    # Both components draw every slot so shapes stay static under jit.
    xm = self.model.sample(k_model, num_samples)
    xn = self.noise.sample(k_noise, num_samples)
    mask = from_model.reshape((num_samples,) + (1,) * (xm.ndim - 1))
    return jnp.where(mask, xm, xn.astype(xm.dtype)), from_model

  def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
    return self.sample_with_mask(key, num_samples)[0]
