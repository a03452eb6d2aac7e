"""The lecture's "poor likelihood, great samples" model: a Gaussian kernel density.

Lecture 7, "Likelihood based models":

  ``p1(x) = (1/n) Σ_{i=1..n} N(x | x_i, ε I)``

on the n training images ``x_i``, with ``ε`` the kernel **variance** (the
standard deviation is ``√ε``). A sample is a random training image plus
``N(0, ε I)`` noise, so for small ε the samples are (nearly) training images
and score perfectly on precision/recall or a Fréchet distance, while the
log-likelihood of a held-out image,

  ``log p1(x) = logsumexp_i(−‖x − x_i‖²/(2ε)) − log n − (D/2) log(2πε)``,

tends to −∞ as ε → 0 (``‖x − x_i‖²/(2ε)`` for the nearest training image
dominates): great samples, poor likelihood.

``log p1`` is computed exactly: chunks of test rows (``lax.map``) times
chunks of training rows (``lax.scan`` with a running ``logaddexp``), so
neither the full distance matrix nor ``n`` densities in linear space are
ever formed.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from dgmjax import _checks, rng
from dgmjax.metrics import precision_recall as _pr

__all__ = ["KernelDensity", "kernel_density_log_prob", "kernel_density_sample"]


def _flat(name: str, x: jax.Array, event_shape: tuple[int, ...]) -> jax.Array:
  _checks.check_floating(name, x)
  if tuple(x.shape[1:]) != tuple(event_shape) or x.ndim < 2:
    raise ValueError(
        f"{name} must have shape (N, {', '.join(map(str, event_shape))}) to match the "
        f"training images, got {tuple(x.shape)}."
    )
  return jnp.reshape(x, (x.shape[0], -1))


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _log_prob(x, train, eps, chunk_size):
  n, d = train.shape
  shift = jnp.mean(train, axis=0)  # shrinks the norms in ‖a‖² − 2a·b + ‖b‖²
  x, train = x - shift, train - shift
  c = min(chunk_size, n)
  num = -(-n // c)
  padded = jnp.pad(train, ((0, num * c - n), (0, 0))).reshape(num, c, d)
  valid = (jnp.arange(num * c) < n).reshape(num, c)

  def rows(chunk, _):
    def body(acc, xs):
      block, ok = xs
      logits = jnp.where(ok[None, :], -_pr.sq_dists(chunk, block) / (2 * eps), -jnp.inf)
      return jnp.logaddexp(acc, jax.nn.logsumexp(logits, axis=1)), None

    init = jnp.full((chunk.shape[0],), -jnp.inf, chunk.dtype)
    lse, _ = jax.lax.scan(body, init, (padded, valid))
    return lse

  lse = _pr.map_row_chunks(rows, x, chunk_size)
  return lse - math.log(n) - 0.5 * d * jnp.log(2 * math.pi * eps)


def kernel_density_log_prob(
    x: jax.Array, train: jax.Array, *, eps: float, chunk_size: int = 1000
) -> jax.Array:
  """Exact ``log p1(x)`` of the Gaussian kernel density on ``train``.

  ``log p1(x) = logsumexp_i(−‖x − x_i‖²/(2ε)) − log n − (D/2) log(2πε)``.

  Args:
    x: (B, …) images to score, same trailing shape as ``train``.
    train: (n, …) training images, the kernel centres.
    eps: kernel variance ε > 0 (std ``√ε``).
    chunk_size: rows of ``x`` and of ``train`` per distance block
      (memory ``chunk_size²``).

  Returns:
    (B,) log-densities in nats (densities on R^D: continuous pixels).

  References:
    Lecture 7, "Likelihood based models" (model p1); Theis, van den Oord &
    Bethge, `A note on the evaluation of generative models
    <https://arxiv.org/abs/1511.01844>`_, ICLR 2016, section 3.

  Example:
    >>> train = jnp.array([[0.0], [2.0]])
    >>> # x = 1 is one unit from both centres: log N(1 | 0, 1) exactly.
    >>> print(round(float(kernel_density_log_prob(jnp.array([[1.0]]), train, eps=1.0)[0]), 4))
    -1.4189
  """
  _checks.check_min_rank("train", train, 2)
  if train.shape[0] < 1:
    raise ValueError(f"train must hold at least one image, got shape {train.shape}.")
  flat_train = _flat("train", train, tuple(train.shape[1:]))
  flat_x = _flat("x", x, tuple(train.shape[1:]))
  _checks.check_positive("eps", eps)
  _checks.check_int_at_least("chunk_size", chunk_size, 1)
  dtype = jnp.result_type(flat_x, flat_train)
  return _log_prob(flat_x.astype(dtype), flat_train.astype(dtype),
                   jnp.asarray(eps, dtype), int(chunk_size))


def kernel_density_sample(
    key: jax.Array,
    train: jax.Array,
    num_samples: int,
    *,
    eps: float,
    return_indices: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Samples of p1: ``x = x_i + √ε · ξ``, i uniform on the training set, ξ ~ N(0, I).

  Args:
    key: PRNG key.
    train: (n, …) training images.
    num_samples: number of samples >= 1.
    eps: kernel variance ε > 0.
    return_indices: also return the (num_samples,) int32 indices i.

  Returns:
    (num_samples, …) samples, or ``(samples, indices)``.

  Example:
    >>> train = jnp.zeros((3, 2, 2))
    >>> x, i = kernel_density_sample(jax.random.key(0), train, 5, eps=1e-6,
    ...                              return_indices=True)
    >>> print(x.shape, bool(jnp.all(jnp.abs(x) < 0.01)), bool(jnp.all(i < 3)))
    (5, 2, 2) True True
  """
  _checks.check_floating("train", train)
  _checks.check_min_rank("train", train, 2)
  _checks.check_int_at_least("num_samples", num_samples, 1)
  _checks.check_positive("eps", eps)
  k_idx, k_noise = jax.random.split(key)
  idx = jax.random.randint(k_idx, (num_samples,), 0, train.shape[0], dtype=jnp.int32)
  noise = rng.normal(k_noise, (num_samples,) + tuple(train.shape[1:]), train.dtype)
  x = jnp.asarray(train)[idx] + math.sqrt(eps) * noise
  return (x, idx) if return_indices else x


@dataclasses.dataclass(frozen=True)
class KernelDensity:
  """p1 as an object with ``log_prob(x)`` and ``sample(key, n)``.

  Plugs into :class:`dgmjax.models.noise_mixture.NoiseMixture` and
  :func:`dgmjax.metrics.evaluate.evaluate_samples`.

  Attributes:
    train: (n, …) training images.
    eps: kernel variance ε (std ``√ε``).
    chunk_size: distance block size for :meth:`log_prob`.

  Example:
    >>> p1 = KernelDensity(jnp.array([[0.0], [2.0]]), eps=1.0)
    >>> print(p1.sample(jax.random.key(0), 4).shape, p1.log_prob(jnp.zeros((3, 1))).shape)
    (4, 1) (3,)
  """

  train: jax.Array
  eps: float
  chunk_size: int = 1000

  def log_prob(self, x: jax.Array) -> jax.Array:
    return kernel_density_log_prob(x, self.train, eps=self.eps, chunk_size=self.chunk_size)

  def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
    return kernel_density_sample(key, self.train, num_samples, eps=self.eps)
