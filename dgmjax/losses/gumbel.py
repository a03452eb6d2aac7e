"""Gumbel-max, Gumbel-softmax (Concrete) and the categorical KL term.

Lecture 7, slides "Gumbel-max trick", "Gumbel-softmax relaxation",
"Gumbel-softmax trick / Concrete distribution" and "KL term" (discrete VAE
latents). Classes live on ``axis`` (the last axis by default); every other axis
is a batch axis and is kept in the output (per-example values, the caller
reduces).

Numerics: the relaxed sample is computed in log space,
``log_softmax((logits + g) / tau)``, so it stays finite at ``tau = 1e-3`` and
logits of ``±1e4``; uniforms are drawn from ``[finfo.tiny, 1)`` so the Gumbel
noise is always finite.

References:
  Jang, Gu, Poole, `Categorical Reparameterization with Gumbel-Softmax
  <https://arxiv.org/abs/1611.01144>`_, 2016.
  Maddison, Mnih, Teh, `The Concrete Distribution: A Continuous Relaxation of
  Discrete Random Variables <https://arxiv.org/abs/1611.00712>`_, 2016.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from dgmjax import _checks, rng
from dgmjax.argext import first_argmax

__all__ = [
    "gumbel_noise",
    "gumbel_max_sample",
    "gumbel_softmax_log_sample",
    "gumbel_softmax_sample",
    "straight_through_argmax",
    "straight_through_categorical",
    "exp_concrete_log_prob",
    "concrete_log_prob",
    "categorical_kl_uniform",
    "categorical_kl",
]


# --------------------------------------------------------------------------
# Validation helpers (trace time only).


def _check_logits(name: str, logits: Any, axis: int) -> int:
  """Checks a floating array with >= 2 classes on ``axis``; returns K."""
  _checks.check_floating(name, logits)
  _checks.check_min_rank(name, logits, 1)
  shape = jnp.shape(logits)
  if not isinstance(axis, int) or not -len(shape) <= axis < len(shape):
    raise ValueError(
        f"axis must be an int in [{-len(shape)}, {len(shape)}) for {name} of "
        f"shape {shape}, got {axis!r}."
    )
  num_classes = shape[axis]
  if num_classes < 2:
    raise ValueError(
        f"{name} must have at least 2 classes along axis {axis}, got shape "
        f"{shape}."
    )
  return num_classes


def _check_temperature(temperature: Any) -> None:
  # A scalar only: a temperature array would broadcast against the logits in
  # ways that are easy to get wrong silently.
  _checks.check_rank("temperature", temperature, 0)
  _checks.check_positive("temperature", temperature)


# --------------------------------------------------------------------------
# Gumbel noise and the Gumbel-max trick.


def _gumbel_from_uniform(u: jax.Array) -> jax.Array:
  """Maps uniforms to Gumbel(0, 1) noise, ``g = -log(-log u)``.

  ``u`` is clipped to ``[finfo.tiny, 1 - finfo.epsneg]`` (the largest float
  below 1) first, so even ``u = 0`` or ``u = 1`` give a finite ``g``. The
  sampler below never produces those values; the clip is a second line of
  defence for callers that bring their own uniforms.
  """
  finfo = jnp.finfo(u.dtype)
  # Bounds in u's own dtype: finfo scalars of bfloat16 would promote to f32.
  lo = jnp.asarray(finfo.tiny, u.dtype)
  hi = jnp.asarray(1.0 - finfo.epsneg, u.dtype)
  return -jnp.log(-jnp.log(jnp.clip(u, lo, hi)))


def gumbel_noise(
    key: jax.Array,
    shape: Sequence[int],
    dtype: Any = jnp.float32,
) -> jax.Array:
  """Samples standard Gumbel noise, ``g = -log(-log u)``, ``u ~ U[tiny, 1)``.

  Lecture 7, slide "Gumbel-max trick": ``g_k ~ Gumbel(0, 1)``, i.e.
  ``g = -log(-log u)``, ``u ~ Uniform[0, 1]``. The uniform is drawn from
  ``[finfo(dtype).tiny, 1)`` instead of ``[0, 1)``: ``u = 0`` would give
  ``g = -inf``. For float32 every sample lies in ``[-4.47, 15.95]``.
  Mean is the Euler-Mascheroni constant 0.5772..., variance ``pi**2 / 6``.

  Args:
    key: a PRNG key (``jax.random.key``).
    shape: shape of the returned noise.
    dtype: a floating dtype.

  Returns:
    Gumbel(0, 1) samples of the given shape and dtype.

  References:
    Gumbel, Statistical Theory of Extreme Values and Some Practical
    Applications, National Bureau of Standards, Applied Mathematics Series
    33, 1954.

  Example:
    >>> import jax
    >>> g = gumbel_noise(jax.random.key(0), (4, 3))
    >>> print(g.shape, g.dtype)
    (4, 3) float32
    >>> big = gumbel_noise(jax.random.key(1), (10**6,))
    >>> print(bool(jnp.isfinite(big).all()))
    True
  """
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"dtype must be a floating dtype, got {dtype}.")
  finfo = jnp.finfo(dtype)
  # jax.random.uniform's numbers, drawn flat: a rank-4 draw compiles slowly on CPU.
  u = rng.uniform(key, tuple(shape), dtype, minval=finfo.tiny, maxval=1.0)
  return _gumbel_from_uniform(u)


def gumbel_max_sample(
    key: jax.Array, logits: jax.Array, *, axis: int = -1
) -> jax.Array:
  """Samples class indices with the Gumbel-max trick.

  ``c = argmax_k (logits_k + g_k)``, ``g_k ~ Gumbel(0, 1)`` i.i.d., which has
  ``c ~ Categorical(softmax(logits))``. Logits may be unnormalised.

  Lecture 7, slide "Gumbel-max trick".

  Args:
    key: a PRNG key.
    logits: floating array, classes on ``axis``.
    axis: the class axis.

  Returns:
    int32 indices, shape of ``logits`` without ``axis``.

  References:
    Maddison, Mnih, Teh, `The Concrete Distribution
    <https://arxiv.org/abs/1611.00712>`_, 2016, section 3.1.

  Example:
    >>> import jax
    >>> logits = jnp.array([[0.0, 30.0, 0.0], [30.0, 0.0, 0.0]])
    >>> print(gumbel_max_sample(jax.random.key(0), logits))
    [1 0]
  """
  _check_logits("logits", logits, axis)
  g = gumbel_noise(key, jnp.shape(logits), jnp.result_type(logits))
  # jnp.argmax's (value, index) reduction is a scalar loop on CPU (dgmjax.argext).
  return first_argmax(jnp.moveaxis(logits + g, axis, -1))


# --------------------------------------------------------------------------
# Gumbel-softmax / Concrete relaxation and straight-through estimators.


def gumbel_softmax_log_sample(
    key: jax.Array,
    logits: jax.Array,
    *,
    temperature: float | jax.Array,
    axis: int = -1,
) -> jax.Array:
  """Samples the log of a Gumbel-softmax (Concrete) relaxed sample.

  ``y = log_softmax((logits + g) / tau)``, ``g ~ Gumbel(0, 1)``; ``exp(y)`` is
  the relaxed one-hot sample ``c_hat`` of the lecture. ``y`` follows the
  ExpConcrete distribution, whose density is :func:`exp_concrete_log_prob`.
  Working with ``y`` instead of ``exp(y)`` keeps the sample and its log
  density accurate when ``tau`` is small and ``exp(y)`` underflows to 0.

  Lecture 7, slide "Gumbel-softmax relaxation":
  ``c_hat_k = exp((log q(k) + g_k)/tau) / sum_j exp((log q(j) + g_j)/tau)``.

  Args:
    key: a PRNG key.
    logits: floating array, classes on ``axis``.
    temperature: scalar ``tau > 0``; may be traced (e.g. from a schedule).
    axis: the class axis.

  Returns:
    ``y`` with the shape and dtype of ``logits``; ``logsumexp(y, axis) = 0``.

  References:
    Maddison, Mnih, Teh, `The Concrete Distribution
    <https://arxiv.org/abs/1611.00712>`_, 2016, appendix (ExpConcrete).

  Example:
    >>> import jax
    >>> logits = jnp.array([0.0, 30.0, 0.0])
    >>> y = gumbel_softmax_log_sample(jax.random.key(0), logits, temperature=0.1)
    >>> print(jnp.round(jnp.exp(y), 4))
    [0. 1. 0.]
  """
  _check_logits("logits", logits, axis)
  _check_temperature(temperature)
  g = gumbel_noise(key, jnp.shape(logits), jnp.result_type(logits))
  return jax.nn.log_softmax((logits + g) / temperature, axis=axis)


def gumbel_softmax_sample(
    key: jax.Array,
    logits: jax.Array,
    *,
    temperature: float | jax.Array,
    hard: bool = False,
    axis: int = -1,
) -> jax.Array:
  """Samples a Gumbel-softmax relaxed one-hot vector, optionally hard (ST).

  Soft: ``y_soft = softmax((logits + g) / tau)``, a point of the simplex.
  Hard (straight-through Gumbel-softmax): the forward value is
  ``one_hot(argmax y_soft)``, exactly, and the gradient is the gradient of
  ``y_soft``, i.e. ``y_hard - stop_gradient(y_soft) + y_soft``. It is written
  as ``y_hard + (y_soft - stop_gradient(y_soft))``, the same value and
  gradient, so that the forward value is exactly ``y_hard`` by construction
  (the bracket is ``s - s = 0``) rather than by the rounding of ``1 - s + s``.

  Lecture 7, slide "Gumbel-softmax relaxation"; the hard version is "ST
  Gumbel-softmax" in Jang et al., section 2.2.

  Args:
    key: a PRNG key.
    logits: floating array, classes on ``axis``.
    temperature: scalar ``tau > 0``.
    hard: return the straight-through one-hot sample.
    axis: the class axis.

  Returns:
    Array with the shape and dtype of ``logits``, summing to 1 along ``axis``.

  References:
    Jang, Gu, Poole, `Categorical Reparameterization with Gumbel-Softmax
    <https://arxiv.org/abs/1611.01144>`_, 2016.

  Example:
    >>> import jax
    >>> logits = jnp.log(jnp.array([[0.2, 0.3, 0.5]]))
    >>> y = gumbel_softmax_sample(jax.random.key(0), logits, temperature=0.5)
    >>> print(jnp.round(y.sum(-1), 4))
    [1.]
    >>> h = gumbel_softmax_sample(
    ...     jax.random.key(0), logits, temperature=0.5, hard=True)
    >>> print(h.sum(-1), bool((jnp.argmax(h) == jnp.argmax(y))))
    [1.] True
  """
  log_y = gumbel_softmax_log_sample(
      key, logits, temperature=temperature, axis=axis
  )
  y_soft = jnp.exp(log_y)
  if not hard:
    return y_soft
  num_classes = jnp.shape(logits)[axis]
  y_hard = jax.nn.one_hot(
      jnp.argmax(log_y, axis=axis), num_classes, dtype=y_soft.dtype, axis=axis
  )
  return y_hard + (y_soft - jax.lax.stop_gradient(y_soft))


def straight_through_argmax(logits: jax.Array, *, axis: int = -1) -> jax.Array:
  """Deterministic straight-through one-hot of ``argmax(logits)``.

  Forward: ``one_hot(argmax_k logits_k)``. Backward: the Jacobian of
  ``softmax(logits)``. No sampling; a baseline for the estimators below.

  Lecture 7, slide "Straight-through gradient estimation" (the same
  copy-the-gradient idea as VQ-VAE's ``z_e + stop_gradient(z_q - z_e)``).

  Args:
    logits: floating array, classes on ``axis``.
    axis: the class axis.

  Returns:
    One-hot array with the shape and dtype of ``logits``.

  References:
    Bengio, Leonard, Courville, `Estimating or Propagating Gradients Through
    Stochastic Neurons <https://arxiv.org/abs/1308.3432>`_, 2013.

  Example:
    >>> import jax
    >>> logits = jnp.array([1.0, 3.0, 2.0])
    >>> print(straight_through_argmax(logits))
    [0. 1. 0.]
    >>> w = jnp.array([1.0, 0.0, 0.0])
    >>> grad = jax.grad(lambda l: straight_through_argmax(l) @ w)(logits)
    >>> print(jnp.round(grad, 4))
    [ 0.0819 -0.0599 -0.022 ]
  """
  num_classes = _check_logits("logits", logits, axis)
  y_soft = jax.nn.softmax(logits, axis=axis)
  y_hard = jax.nn.one_hot(
      jnp.argmax(logits, axis=axis), num_classes, dtype=y_soft.dtype, axis=axis
  )
  return y_hard + (y_soft - jax.lax.stop_gradient(y_soft))


def straight_through_categorical(
    key: jax.Array, logits: jax.Array, *, axis: int = -1
) -> jax.Array:
  """Straight-through categorical sample (the "ST" estimator of Jang et al.).

  Forward: ``one_hot(c)`` with ``c ~ Categorical(softmax(logits))`` drawn by
  Gumbel-max (same noise as :func:`gumbel_max_sample` for the same key).
  Backward: the Jacobian of ``softmax(logits)``, not of a relaxed sample.

  Lecture 7, slides "Gumbel-max trick" and "Straight-through gradient
  estimation".

  Args:
    key: a PRNG key.
    logits: floating array, classes on ``axis``.
    axis: the class axis.

  Returns:
    One-hot array with the shape and dtype of ``logits``.

  References:
    Jang, Gu, Poole, `Categorical Reparameterization with Gumbel-Softmax
    <https://arxiv.org/abs/1611.01144>`_, 2016, section 3.1 and table 1 ("ST").

  Example:
    >>> import jax
    >>> logits = jnp.array([[0.0, 30.0, 0.0], [30.0, 0.0, 0.0]])
    >>> print(straight_through_categorical(jax.random.key(0), logits))
    [[0. 1. 0.]
     [1. 0. 0.]]
  """
  num_classes = _check_logits("logits", logits, axis)
  y_soft = jax.nn.softmax(logits, axis=axis)
  y_hard = jax.nn.one_hot(
      gumbel_max_sample(key, logits, axis=axis),
      num_classes,
      dtype=y_soft.dtype,
      axis=axis,
  )
  return y_hard + (y_soft - jax.lax.stop_gradient(y_soft))


# --------------------------------------------------------------------------
# Densities of the relaxed sample.


def exp_concrete_log_prob(
    y: jax.Array,
    logits: jax.Array,
    *,
    temperature: float | jax.Array,
    axis: int = -1,
) -> jax.Array:
  """Log-density of ``y``, the log of a Concrete sample (ExpConcrete).

  With ``z = logits - tau * y`` and ``K`` classes::

    log p(y) = lgamma(K) + (K - 1) log tau + sum_k z_k - K logsumexp_k z_k.

  Base measure: Lebesgue measure on the ``K - 1`` log-ratios
  ``r_k = y_k - y_K`` (``k < K``); for ``K = 2`` this is the density of
  ``logit(x_1)``. Derivation: the Concrete density of ``x = exp(y)`` is
  ``(K-1)! tau^(K-1) prod_k (a_k x_k^(-tau-1)) / (sum_i a_i x_i^(-tau))^K``
  with ``a = exp(logits)``, and ``d r = d x_(1:K-1) / prod_k x_k``, so
  ``log p(y) = log p_x(x) + sum_k y_k``. The density of ``y_(1:K-1)`` with
  respect to plain ``d y_(1:K-1)`` is smaller by the factor ``x_K``; that
  factor does not depend on ``logits`` or ``tau`` and cancels in the density
  ratios of a KL estimate. The value is invariant to adding a constant to
  ``logits`` or to ``y``.

  Lecture 7, slide "Gumbel-softmax trick / Concrete distribution".

  Args:
    y: log of a point of the simplex (``logsumexp(y, axis) = 0``), e.g. from
      :func:`gumbel_softmax_log_sample`; same shape as ``logits``.
    logits: floating array, classes on ``axis`` (unnormalised log ``a``).
    temperature: scalar ``tau > 0``.
    axis: the class axis.

  Returns:
    Log-density per example: shape of ``logits`` without ``axis``.

  References:
    Maddison, Mnih, Teh, `The Concrete Distribution
    <https://arxiv.org/abs/1611.00712>`_, 2016, appendix (ExpConcrete density).

  Example:
    >>> # K = 2, tau = 1, equal logits: the log-ratio is standard logistic,
    >>> # whose density at 0 is 1/4.
    >>> y = jnp.log(jnp.array([0.5, 0.5]))
    >>> lp = exp_concrete_log_prob(y, jnp.zeros(2), temperature=1.0)
    >>> print(jnp.round(lp, 4), jnp.round(jnp.log(0.25), 4))
    -1.3863 -1.3863
  """
  num_classes = _check_logits("logits", logits, axis)
  _checks.check_floating("y", y)
  _checks.check_same_shape(logits=logits, y=y)
  _check_temperature(temperature)
  z = logits - temperature * y
  return (
      math.lgamma(num_classes)
      + (num_classes - 1) * jnp.log(temperature)
      + jnp.sum(z, axis=axis)
      - num_classes * jax.nn.logsumexp(z, axis=axis)
  ).astype(jnp.result_type(logits))


def concrete_log_prob(
    x: jax.Array,
    logits: jax.Array,
    *,
    temperature: float | jax.Array,
    axis: int = -1,
) -> jax.Array:
  """Log-density of a Concrete (Gumbel-softmax) sample ``x`` on the simplex.

  ``log p(x) = lgamma(K) + (K-1) log tau + sum_k (logits_k - (tau+1) log x_k)
  - K logsumexp_k (logits_k - tau log x_k)``, with respect to Lebesgue measure
  on the first ``K - 1`` coordinates ``x_(1:K-1)`` (``x_K = 1 - sum``).
  Equals ``exp_concrete_log_prob(log x) - sum_k log x_k``. For small ``tau``
  entries of ``x`` underflow to 0 and this density is ``nan``/``inf``: use
  :func:`exp_concrete_log_prob` on the log sample instead.

  Lecture 7, slide "Gumbel-softmax trick / Concrete distribution".

  Args:
    x: a point of the open simplex (positive, sums to 1 along ``axis``), same
      shape as ``logits``.
    logits: floating array, classes on ``axis``.
    temperature: scalar ``tau > 0``.
    axis: the class axis.

  Returns:
    Log-density per example: shape of ``logits`` without ``axis``.

  References:
    Maddison, Mnih, Teh, `The Concrete Distribution
    <https://arxiv.org/abs/1611.00712>`_, 2016, definition 1;
    Jang, Gu, Poole, `Categorical Reparameterization with Gumbel-Softmax
    <https://arxiv.org/abs/1611.01144>`_, 2016, eq. (3).

  Example:
    >>> # K = 2, tau = 1, equal logits: x_1 is uniform on (0, 1).
    >>> x = jnp.array([0.3, 0.7])
    >>> print(jnp.round(jnp.exp(concrete_log_prob(x, jnp.zeros(2), temperature=1.0)), 4))
    1.0
  """
  _checks.check_floating("x", x)
  _checks.check_same_shape(logits=logits, x=x)
  log_x = jnp.log(x)
  return exp_concrete_log_prob(
      log_x, logits, temperature=temperature, axis=axis
  ) - jnp.sum(log_x, axis=axis)


# --------------------------------------------------------------------------
# KL term of the discrete VAE.


def _sum_q_times(log_q: jax.Array, values: jax.Array, axis: int) -> jax.Array:
  """``sum_k q_k values_k`` over the classes with ``q_k > 0``, ``q = exp(log_q)``.

  A class with no mass contributes exactly 0 (``0 log 0 = 0``). Multiplying
  instead would give ``0 * (-inf) = nan`` for a masked logit (``-inf``), and
  for finite logits too: ``log_softmax([3e38, -3e38, 0])`` overflows to
  ``-inf`` in the difference of the logits. The mask is on ``q > 0`` rather
  than on ``log_q > -inf`` so that probabilities that underflow to 0 count as
  zeros, not as ``0 * inf``. A class with mass where ``values`` is ``+inf``
  (``q`` has mass where ``p`` is masked) still gives ``+inf``.
  """
  q = jnp.exp(log_q)
  has_mass = q > 0
  # Double where: the masked branch must neither see nan in the forward pass
  # nor pass a nan cotangent (0 * inf) back through log_softmax.
  safe = jnp.where(has_mass, values, 0.0)
  return jnp.sum(jnp.where(has_mass, q * safe, 0.0), axis=axis)


def categorical_kl_uniform(logits: jax.Array, *, axis: int = -1) -> jax.Array:
  """KL from ``Categorical(softmax(logits))`` to the uniform prior over K.

  ``KL(q || U(K)) = sum_k q_k log q_k + log K = log K - H(q)``, computed from
  ``log_softmax`` (finite for logits of ``±1e4``, where ``q`` is one-hot and
  the KL is ``log K``). Classes with ``q_k = 0`` contribute ``0 log 0 = 0``:
  masked logits (``-inf``) and finite logits as far apart as ``±3e38`` give
  the exact KL and finite gradients, not ``nan``.

  Lecture 7, slide "KL term": ``KL(q(c|x) || p(c)) = -H(q(c|x)) + log K``.

  Args:
    logits: floating array, classes on ``axis``; ``-inf`` masks a class
      (at least one class per example must be finite).
    axis: the class axis.

  Returns:
    KL per example, shape of ``logits`` without ``axis``; in ``[0, log K]``.

  References:
    Jang, Gu, Poole, `Categorical Reparameterization with Gumbel-Softmax
    <https://arxiv.org/abs/1611.01144>`_, 2016 (categorical VAE).

  Example:
    >>> logits = jnp.array([[100.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    >>> print(jnp.round(categorical_kl_uniform(logits), 4))
    [1.3863 0.1109]
    >>> # A masked class: q = (1/2, 1/2, 0), KL = log 3 - log 2.
    >>> print(jnp.round(categorical_kl_uniform(jnp.array([0.0, 0.0, -jnp.inf])), 4))
    0.4055
  """
  num_classes = _check_logits("logits", logits, axis)
  log_q = jax.nn.log_softmax(logits, axis=axis)
  neg_entropy = _sum_q_times(log_q, log_q, axis)
  return neg_entropy + math.log(num_classes)


def categorical_kl(
    logits_q: jax.Array, logits_p: jax.Array, *, axis: int = -1
) -> jax.Array:
  """KL between two categorical distributions given by logits.

  ``KL(q || p) = sum_k q_k (log q_k - log p_k)``, ``q = softmax(logits_q)``,
  ``p = softmax(logits_p)``; both computed with ``log_softmax``. Use it for a
  non-uniform (e.g. learned) prior over the codes.

  The sum runs over the classes where ``q_k > 0`` (``0 log 0 = 0``), so
  masked logits (``-inf``) in either argument give the exact KL as long as
  ``q`` has no mass where ``p`` has none; this includes ``q_k`` that
  underflows to 0 (``logits_q = [1e4, -1e4, 0]``). If ``q`` puts mass on a
  class that ``p`` masks, the KL is truly infinite and the result is
  ``+inf`` (its gradient is then not meaningful and may hold ``nan`` or
  ``inf``). Wherever the KL is finite the gradients are finite.

  Lecture 7, slide "ELBO" (discrete VAE latents),
  ``KL(q(c|x, phi) || p(c))``.

  Args:
    logits_q: floating array, classes on ``axis``; ``-inf`` masks a class.
    logits_p: floating array, same shape as ``logits_q``; ``-inf`` masks a
      class.
    axis: the class axis.

  Returns:
    KL per example, shape of the logits without ``axis``; ``+inf`` where
    ``q`` has mass on a class masked in ``p``.

  References:
    Kullback, Leibler, `On Information and Sufficiency
    <https://doi.org/10.1214/aoms/1177729694>`_, 1951.

  Example:
    >>> q = jnp.log(jnp.array([0.5, 0.5]))
    >>> p = jnp.log(jnp.array([0.25, 0.75]))
    >>> print(f"{float(categorical_kl(q, p)):.4f}")
    0.1438
    >>> # p masks a class that q does not use: finite, log(1 + e).
    >>> kl = categorical_kl(jnp.array([1e4, -1e4, 0.0]),
    ...                     jnp.array([0.0, -jnp.inf, 1.0]))
    >>> print(f"{float(kl):.4f}")
    1.3133
    >>> # q uses a class that p masks: truly infinite.
    >>> print(categorical_kl(jnp.zeros(2), jnp.array([0.0, -jnp.inf])))
    inf
  """
  _check_logits("logits_q", logits_q, axis)
  _checks.check_floating("logits_p", logits_p)
  _checks.check_same_shape(logits_q=logits_q, logits_p=logits_p)
  log_q = jax.nn.log_softmax(logits_q, axis=axis)
  log_p = jax.nn.log_softmax(logits_p, axis=axis)
  return _sum_q_times(log_q, log_q - log_p, axis)
