"""Evidence lower bound (ELBO) and importance-weighted (IWAE) bounds.

Lecture 7 writes the VAE objective as

  L(φ, θ) = E_q(z|x,φ) log p(x|z,θ) − KL(q(z|x,φ) || p(z))   (slide "ELBO")

and, with a flow prior, as E_q[log p(x|z) + log p(z|λ) − log q(z|x)]
(slide "ELBO with flow-based VAE prior"). This module provides the pieces:
diagonal-Gaussian log-densities and KL divergences, the decoder likelihoods
(Bernoulli, Gaussian, DALL-E's logit-Laplace), the β-weighted ELBO and the
importance-weighted bound of Burda et al. (2016), including a chunked version
that evaluates k = 1000 samples in bounded memory.

Every function returns per-example values; the caller reduces over the batch.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import jax
import jax.numpy as jnp

from dgmjax import _checks

_LOG_2PI = math.log(2.0 * math.pi)


def _event_axes(name: str, x: jax.Array, event_ndims: int) -> tuple[int, ...]:
  _checks.check_int_at_least("event_ndims", event_ndims, 0)
  _checks.check_min_rank(name, x, event_ndims)
  # Negative axes, so they also index a result with extra broadcast axes.
  return tuple(range(-event_ndims, 0))


def _check_sample_broadcast(
    z_name: str, z: jax.Array, p_name: str, p: jax.Array, event_ndims: int
) -> None:
  """Event shapes must match exactly; only leading sample axes broadcast."""
  z_event = z.shape[z.ndim - event_ndims:] if event_ndims else ()
  p_event = p.shape[p.ndim - event_ndims:] if event_ndims else ()
  if z_event != p_event:
    raise ValueError(
        f"{z_name} must have the same event shape (last {event_ndims} axes) as "
        f"{p_name}: got {z.shape} vs {p.shape}."
    )
  try:
    jnp.broadcast_shapes(z.shape, p.shape)
  except ValueError:
    raise ValueError(
        f"{z_name} of shape {z.shape} does not broadcast against {p_name} of "
        f"shape {p.shape}; only leading sample axes may differ."
    ) from None


def _check_broadcasts_to(name: str, x: jax.Array, target: tuple[int, ...]):
  """``x`` (a scale parameter) may broadcast, but only *to* ``target``."""
  try:
    out = jnp.broadcast_shapes(x.shape, target)
  except ValueError:
    out = None
  if out != tuple(target):
    raise ValueError(
        f"{name} must have shape {tuple(target)} or broadcast to it "
        f"(e.g. a shared scalar), got {x.shape}."
    )


def log_normal_diag(
    z: jax.Array,
    mean: jax.Array,
    log_var: jax.Array,
    *,
    event_ndims: int = 1,
) -> jax.Array:
  """Log-density of a diagonal Gaussian, summed over the event axes.

  log N(z; μ, diag σ²) = −½ Σ_d [log 2π + log σ²_d + (z_d − μ_d)² / σ²_d]

  The variance enters only as ``exp(−log_var)``, so log-variances of ±30 stay
  finite. This is log q(z|x, φ) for the Gaussian encoder of Lecture 7, slide
  "ELBO with flow-based VAE prior".

  Args:
    z: points, shape ``(..., *event)``. Leading axes may broadcast against
      ``mean`` (e.g. k samples ``(k, B, d)`` against ``(B, d)``); the event
      axes must match exactly.
    mean: means μ, same shape as ``log_var``.
    log_var: log-variances log σ².
    event_ndims: number of trailing axes that form one event and are summed.

  Returns:
    Log-densities of shape ``broadcast(z, mean).shape[:-event_ndims]``.

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> z = jnp.array([[0.0, 0.0], [1.0, -1.0]])
    >>> print(jnp.round(log_normal_diag(z, jnp.zeros(2), jnp.zeros(2)), 4))
    [-1.8379 -2.8379]
  """
  for name, x in (("z", z), ("mean", mean), ("log_var", log_var)):
    _checks.check_floating(name, x)
  _checks.check_same_shape(mean=mean, log_var=log_var)
  axes = _event_axes("z", z, event_ndims)
  _event_axes("mean", mean, event_ndims)
  _check_sample_broadcast("z", z, "mean", mean, event_ndims)
  per_dim = _LOG_2PI + log_var + jnp.square(z - mean) * jnp.exp(-log_var)
  out = -0.5 * per_dim
  return jnp.sum(out, axis=axes) if axes else out


def log_standard_normal(z: jax.Array, *, event_ndims: int = 1) -> jax.Array:
  """Log-density of the standard Gaussian prior p(z) = N(0, I).

  log N(z; 0, I) = −½ Σ_d [log 2π + z_d²]

  The prior of the VAE in Lecture 7, slide "Optimal prior".

  Args:
    z: points, shape ``(..., *event)``.
    event_ndims: number of trailing axes that form one event and are summed.

  Returns:
    Log-densities of shape ``z.shape[:-event_ndims]``.

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> print(jnp.round(log_standard_normal(jnp.array([[0.0, 2.0]])), 4))
    [-3.8379]
  """
  _checks.check_floating("z", z)
  axes = _event_axes("z", z, event_ndims)
  out = -0.5 * (_LOG_2PI + jnp.square(z))
  return jnp.sum(out, axis=axes) if axes else out


def gaussian_kl_standard(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """Closed-form KL(N(μ, diag σ²) || N(0, I)), summed over the last axis.

  KL = ½ Σ_d [σ²_d − 1 − log σ²_d + μ_d²] = ½ Σ_d [expm1(log σ²_d) − log σ²_d + μ_d²]

  ``expm1`` keeps the value accurate near σ² = 1 (where σ² − 1 − log σ² is a
  difference of nearly equal numbers) and finite for log σ² = ±30 in float32.
  This is the regulariser KL(q(z|x, φ) || p(z)) of Lecture 7, slide "ELBO".

  Args:
    mean: posterior means μ, shape ``(..., d)``.
    log_var: posterior log-variances log σ², same shape as ``mean``.

  Returns:
    KL divergences of shape ``mean.shape[:-1]``.

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014, appendix B.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> mean = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> print(jnp.round(gaussian_kl_standard(mean, jnp.zeros((2, 2))), 4))
    [0. 1.]
  """
  _checks.check_floating("mean", mean)
  _checks.check_floating("log_var", log_var)
  _checks.check_min_rank("mean", mean, 1)
  _checks.check_same_shape(mean=mean, log_var=log_var)
  per_dim = jnp.expm1(log_var) - log_var + jnp.square(mean)
  return 0.5 * jnp.sum(per_dim, axis=-1)


def gaussian_kl(
    mean_q: jax.Array,
    log_var_q: jax.Array,
    mean_p: jax.Array,
    log_var_p: jax.Array,
) -> jax.Array:
  """Closed-form KL(N(μ_q, diag σ_q²) || N(μ_p, diag σ_p²)) over the last axis.

  KL = ½ Σ_d [log σ²_p − log σ²_q + (σ²_q + (μ_q − μ_p)²) / σ²_p − 1]
     = ½ Σ_d [expm1(Δ_d) − Δ_d + (μ_q − μ_p)²_d · exp(−log σ²_p)],  Δ = log σ²_q − log σ²_p

  With μ_p = 0, log σ²_p = 0 it reduces to :func:`gaussian_kl_standard`. Used
  for KL(q(z|x) || p(z)) with a learned Gaussian prior (Lecture 7, slide
  "ELBO revisiting").

  Args:
    mean_q: means of q, shape ``(..., d)``.
    log_var_q: log-variances of q, same shape as ``mean_q``.
    mean_p: means of p, same shape as ``log_var_p``; the last axis must equal
      that of ``mean_q`` and leading axes may broadcast (e.g. a prior of shape
      ``(d,)`` shared by the batch).
    log_var_p: log-variances of p.

  Returns:
    KL divergences of shape ``broadcast(mean_q, mean_p).shape[:-1]``.

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> kl = gaussian_kl(jnp.ones((1, 2)), jnp.zeros((1, 2)),
    ...                  jnp.zeros(2), jnp.log(jnp.array([1.0, 4.0])))
    >>> print(jnp.round(kl, 4))
    [0.9431]
  """
  for name, x in (("mean_q", mean_q), ("log_var_q", log_var_q),
                  ("mean_p", mean_p), ("log_var_p", log_var_p)):
    _checks.check_floating(name, x)
  _checks.check_min_rank("mean_q", mean_q, 1)
  _checks.check_min_rank("mean_p", mean_p, 1)
  _checks.check_same_shape(mean_q=mean_q, log_var_q=log_var_q)
  _checks.check_same_shape(mean_p=mean_p, log_var_p=log_var_p)
  _check_sample_broadcast("mean_q", mean_q, "mean_p", mean_p, 1)
  delta = log_var_q - log_var_p
  per_dim = (
      jnp.expm1(delta) - delta + jnp.square(mean_q - mean_p) * jnp.exp(-log_var_p)
  )
  return 0.5 * jnp.sum(per_dim, axis=-1)


def bernoulli_log_likelihood(
    *args: jax.Array,
    x: jax.Array | None = None,
    logits: jax.Array | None = None,
    event_ndims: int = 1,
) -> jax.Array:
  """Bernoulli log-likelihood log p(x|z) from decoder logits.

  log p(x|ℓ) = x·log σ(ℓ) + (1 − x)·log(1 − σ(ℓ)) = −[x·softplus(−ℓ) + (1 − x)·softplus(ℓ)]

  Written with ``softplus`` only, so logits of ±1e4 give exact finite values
  and gradients (σ(ℓ) − x). For x ∈ [0, 1] that is not binary this is the
  "continuous BCE" commonly used on grey-scale MNIST; it is then not a
  normalised density on [0, 1]. The reconstruction term of Lecture 7, slide
  "ELBO".

  Call it with keywords, ``bernoulli_log_likelihood(x=x, logits=ℓ)``: data
  first, like :func:`gaussian_log_likelihood` and
  :func:`logit_laplace_log_likelihood`. Positional arguments are deprecated:
  they are still read in the old order ``(logits, x)``, with a
  ``DeprecationWarning``, because both are same-shaped arrays and a silent
  swap would give wrong numbers without an error.

  Args:
    x: data in [0, 1] (values are not checked), same shape as ``logits``.
    logits: decoder logits ℓ, shape ``(..., *event)``.
    event_ndims: number of trailing axes that form one example and are summed.

  Returns:
    Log-likelihoods of shape ``x.shape[:-event_ndims]``.

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014, appendix C.1.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> ll = bernoulli_log_likelihood(x=jnp.array([[0., 1., 1.]]), logits=jnp.zeros((1, 3)))
    >>> print(jnp.round(ll, 4))
    [-2.0794]
  """
  if args:
    if len(args) != 2 or x is not None or logits is not None:
      raise TypeError("bernoulli_log_likelihood takes x= and logits= as keywords.")
    warnings.warn(
        "bernoulli_log_likelihood(logits, x) with positional arguments is deprecated; "
        "call bernoulli_log_likelihood(x=..., logits=...) (data first, as in "
        "gaussian_log_likelihood).", DeprecationWarning, stacklevel=2)
    logits, x = args
  if x is None or logits is None:
    raise TypeError("bernoulli_log_likelihood needs both x= and logits=.")
  _checks.check_floating("logits", logits)
  _checks.check_floating("x", x)
  _checks.check_same_shape(logits=logits, x=x)
  axes = _event_axes("x", x, event_ndims)
  out = -(x * jax.nn.softplus(-logits) + (1.0 - x) * jax.nn.softplus(logits))
  return jnp.sum(out, axis=axes) if axes else out


def gaussian_log_likelihood(
    x: jax.Array, mean: jax.Array, log_var: jax.Array, *, event_ndims: int = 1
) -> jax.Array:
  """Gaussian decoder log-likelihood log N(x; μ(z), diag σ²(z)).

  log p(x|z) = −½ Σ_d [log 2π + log σ²_d + (x_d − μ_d)² / σ²_d]

  The reconstruction term of Lecture 7, slide "ELBO", for real-valued data.

  Args:
    x: data, shape ``(..., *event)``.
    mean: decoder means, same shape as ``x``.
    log_var: decoder log-variances; the shape of ``x`` or any shape that
      broadcasts to it (e.g. a learned scalar shared by all pixels).
    event_ndims: number of trailing axes that form one example and are summed.

  Returns:
    Log-likelihoods of shape ``x.shape[:-event_ndims]``.

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014, appendix C.2.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> ll = gaussian_log_likelihood(jnp.ones((1, 2)), jnp.zeros((1, 2)),
    ...                              jnp.array(0.0))
    >>> print(jnp.round(ll, 4))
    [-2.8379]
  """
  for name, a in (("x", x), ("mean", mean), ("log_var", log_var)):
    _checks.check_floating(name, a)
  _checks.check_same_shape(x=x, mean=mean)
  _check_broadcasts_to("log_var", jnp.asarray(log_var), x.shape)
  axes = _event_axes("x", x, event_ndims)
  out = -0.5 * (_LOG_2PI + log_var + jnp.square(x - mean) * jnp.exp(-log_var))
  return jnp.sum(out, axis=axes) if axes else out


def map_pixels(x: jax.Array, *, eps: float = 0.1) -> jax.Array:
  """Squash pixels from [0, 1] into [ε, 1 − ε] for the logit-Laplace loss.

  x ↦ (1 − 2ε)·x + ε

  The logit-Laplace density lives on the open interval (0, 1); DALL-E maps
  pixels away from the boundary with ε = 0.1 before evaluating it.

  Args:
    x: pixels in [0, 1].
    eps: margin ε in (0, ½).

  Returns:
    Mapped pixels in [ε, 1 − ε], same shape as ``x``.

  References:
    Ramesh et al., "Zero-Shot Text-to-Image Generation" (DALL-E), ICML 2021,
    section 2.1 and appendix A.3.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> print(jnp.round(map_pixels(jnp.array([0.0, 0.5, 1.0])), 4))
    [0.1 0.5 0.9]
  """
  _checks.check_floating("x", x)
  _checks.check_in_range("eps", eps, 0.0, 0.5, closed=False)
  return (1.0 - 2.0 * eps) * x + eps


def unmap_pixels(x: jax.Array, *, eps: float = 0.1) -> jax.Array:
  """Inverse of :func:`map_pixels`, clipped back into [0, 1].

  x ↦ clip((x − ε) / (1 − 2ε), 0, 1)

  Args:
    x: mapped pixels (e.g. the decoder's predicted mean sigmoid(μ)).
    eps: the ε used by :func:`map_pixels`, in (0, ½).

  Returns:
    Pixels in [0, 1], same shape as ``x``.

  References:
    Ramesh et al., "Zero-Shot Text-to-Image Generation" (DALL-E), ICML 2021.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> print(jnp.round(unmap_pixels(jnp.array([0.05, 0.5, 0.9])), 4))
    [0.  0.5 1. ]
  """
  _checks.check_floating("x", x)
  _checks.check_in_range("eps", eps, 0.0, 0.5, closed=False)
  return jnp.clip((x - eps) / (1.0 - 2.0 * eps), 0.0, 1.0)


def logit_laplace_log_likelihood(
    x: jax.Array,
    mu: jax.Array,
    log_b: jax.Array,
    *,
    event_ndims: int = 1,
    eps: float = 1e-6,
) -> jax.Array:
  """Logit-Laplace log-likelihood of DALL-E's dVAE decoder.

  f(x | μ, b) = 1 / (2b·x(1 − x)) · exp(−|logit(x) − μ| / b),   x ∈ (0, 1)

  log f = −log 2 − log b − [log x + log(1 − x)] − |log x − log(1 − x) − μ| / b

  This is the Laplace density on logit(x) pushed back to (0, 1) (the factor
  1/(x(1 − x)) is the Jacobian of the logit). log x(1 − x) is computed as
  ``log(x) + log1p(−x)``, which stays accurate near both ends. The
  reconstruction term of Lecture 7's discrete VAE (slides "Discrete VAE
  latents" and "Gumbel-softmax for discrete VAE latents").

  ``x`` must be *mapped* pixels, ``map_pixels(pixels)`` in [0.1, 0.9] for
  DALL-E; raw pixels of exactly 0 or 1 lie outside the support.

  Args:
    x: mapped pixels in (0, 1), shape ``(..., *event)``.
    mu: location μ of logit(x), same shape as ``x``.
    log_b: log-scale log b; the shape of ``x`` or broadcastable to it.
    event_ndims: number of trailing axes that form one example and are summed.
    eps: numerical guard, not the ε of :func:`map_pixels`: ``x`` is clipped
      to [eps, 1 − eps] so a value that rounded onto 0 or 1 gives a finite
      result. Must be in (0, ½).

  Returns:
    Log-likelihoods of shape ``x.shape[:-event_ndims]``.

  References:
    Ramesh et al., "Zero-Shot Text-to-Image Generation" (DALL-E), ICML 2021,
    section 2.1 and appendix A.3.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> ll = logit_laplace_log_likelihood(jnp.array([[0.5]]), jnp.zeros((1, 1)),
    ...                                   jnp.zeros((1, 1)))
    >>> print(jnp.round(ll, 4))
    [0.6931]
  """
  for name, a in (("x", x), ("mu", mu), ("log_b", log_b)):
    _checks.check_floating(name, a)
  _checks.check_same_shape(x=x, mu=mu)
  _check_broadcasts_to("log_b", jnp.asarray(log_b), x.shape)
  _checks.check_in_range("eps", eps, 0.0, 0.5, closed=False)
  axes = _event_axes("x", x, event_ndims)
  x = jnp.clip(x, eps, 1.0 - eps)
  log_x = jnp.log(x)
  log_1mx = jnp.log1p(-x)
  out = (
      -math.log(2.0)
      - log_b
      - (log_x + log_1mx)
      - jnp.abs(log_x - log_1mx - mu) * jnp.exp(-log_b)
  )
  return jnp.sum(out, axis=axes) if axes else out


def elbo(
    log_likelihood: jax.Array, kl: jax.Array, *, beta: float = 1.0
) -> jax.Array:
  """Per-example (β-)ELBO from its two terms.

  L = log p(x|z) − β·KL(q(z|x) || p(z))

  β = 1 is the ELBO of Lecture 7, slide "ELBO"; β ≠ 1 gives the β-VAE
  objective (and β warmed up from 0 is the KL annealing used by DALL-E).
  Maximise it (minimise ``-elbo(...)``). ``log_likelihood`` is usually a
  one-sample Monte-Carlo estimate with z ~ q(z|x).

  Args:
    log_likelihood: log p(x|z), shape ``(B,)`` (or any shape).
    kl: KL terms, same shape as ``log_likelihood``.
    beta: KL weight β >= 0.

  Returns:
    ELBO values, same shape as the inputs.

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014;
    Higgins et al., "β-VAE", ICLR 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> print(jnp.round(elbo(jnp.array([-10.0]), jnp.array([2.0]), beta=0.5), 4))
    [-11.]
  """
  _checks.check_floating("log_likelihood", log_likelihood)
  _checks.check_floating("kl", kl)
  _checks.check_same_shape(log_likelihood=log_likelihood, kl=kl)
  _checks.check_positive("beta", beta, allow_zero=True)
  return log_likelihood - beta * kl


def iwae_log_weights(
    log_likelihood: jax.Array, log_prior: jax.Array, log_posterior: jax.Array
) -> jax.Array:
  """Log importance weights log w = log p(x|z) + log p(z) − log q(z|x).

  With z ~ q(z|x), E_q[w] = p(x); the ELBO is E_q[log w] and the IWAE bound
  averages k weights inside the log (see :func:`iwae_bound`). Any prior
  log-density works here, e.g. the flow prior of Lecture 7, slide "ELBO with
  flow-based VAE prior".

  Args:
    log_likelihood: log p(x|z_k), shape ``(k, B)`` (or any shape).
    log_prior: log p(z_k), same shape.
    log_posterior: log q(z_k|x), same shape.

  Returns:
    Log weights, same shape as the inputs.

  References:
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders",
    ICLR 2016.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> lw = iwae_log_weights(jnp.array([-3.0]), jnp.array([-1.0]),
    ...                       jnp.array([-2.0]))
    >>> print(jnp.round(lw, 4))
    [-2.]
  """
  for name, a in (("log_likelihood", log_likelihood), ("log_prior", log_prior),
                  ("log_posterior", log_posterior)):
    _checks.check_floating(name, a)
  _checks.check_same_shape(
      log_likelihood=log_likelihood,
      log_prior=log_prior,
      log_posterior=log_posterior,
  )
  return log_likelihood + log_prior - log_posterior


def iwae_bound(log_weights: jax.Array, *, axis: int = 0) -> jax.Array:
  """Importance-weighted bound L_k from k log weights.

  L_k = log (1/k) Σ_{j=1..k} w_j = logsumexp_j(log w_j) − log k

  E[L_1] is the ELBO of Lecture 7, slide "ELBO"; E[L_k] ≤ E[L_{k+1}] ≤ log p(x),
  and L_k → log p(x) as k → ∞. Individual draws of L_k can exceed log p(x);
  only the expectation is a bound.

  Args:
    log_weights: log w from :func:`iwae_log_weights`, with the k samples
      along ``axis``, e.g. shape ``(k, B)``.
    axis: the sample axis.

  Returns:
    Per-example bounds, ``log_weights`` with ``axis`` removed.

  References:
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders",
    ICLR 2016, eq. (8).

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> lw = jnp.log(jnp.array([[1.0], [3.0]]))
    >>> print(jnp.round(iwae_bound(lw), 4))
    [0.6931]
  """
  _checks.check_floating("log_weights", log_weights)
  _checks.check_min_rank("log_weights", log_weights, 1)
  if isinstance(axis, bool) or not isinstance(axis, int):
    raise TypeError(f"axis must be an int, got {type(axis).__name__}.")
  if not -log_weights.ndim <= axis < log_weights.ndim:
    raise ValueError(
        f"axis must be in [-{log_weights.ndim}, {log_weights.ndim}) for "
        f"log_weights of shape {log_weights.shape}, got {axis}."
    )
  k = log_weights.shape[axis]
  if k < 1:
    raise ValueError(f"log_weights must have at least one sample on axis {axis}.")
  return jax.nn.logsumexp(log_weights, axis=axis) - math.log(k)


def chunked_iwae_bound(
    log_weight_fn: Callable[[jax.Array, int], jax.Array],
    key: jax.Array,
    num_samples: int,
    *,
    chunk_size: int,
) -> jax.Array:
  """IWAE bound L_k with the k samples drawn and reduced chunk by chunk.

  L_k = logsumexp_{j=1..k} log w_j − log k, with the logsumexp accumulated over
  chunks as acc ← logaddexp(acc, logsumexp(chunk)).

  Only one chunk of ``(chunk_size, B)`` log weights (and whatever
  ``log_weight_fn`` allocates for it) is alive at a time, so k = 1000 or
  5000 evaluation bounds fit in memory. The loop is a ``lax.scan`` over
  ``ceil(k / chunk_size)`` chunks of fixed shape; in the last chunk the
  samples beyond k are masked to −∞, i.e. they contribute zero weight.
  Chunk ``c`` is drawn with key ``jax.random.split(key, num_chunks)[c]``.
  Under ``jax.grad`` the scan keeps each chunk's residuals; wrap
  ``log_weight_fn`` in ``jax.checkpoint`` to trade them for recomputation.

  Args:
    log_weight_fn: ``log_weight_fn(key, n) -> (n, B)`` log weights of n fresh
      samples z ~ q(z|x) (see :func:`iwae_log_weights`); ``n`` is always
      ``chunk_size`` (a static int).
    key: PRNG key.
    num_samples: k >= 1.
    chunk_size: samples per chunk, >= 1 (reduced to k if larger).

  Returns:
    Per-example bounds of shape ``(B,)``.

  References:
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders",
    ICLR 2016, section 5 (k = 5000 evaluation).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> fn = lambda key, n: jnp.zeros((n, 3))  # all weights equal to one
    >>> out = chunked_iwae_bound(fn, jax.random.key(0), 10, chunk_size=4)
    >>> print(jnp.round(out, 4))
    [0. 0. 0.]
  """
  if not callable(log_weight_fn):
    raise TypeError("log_weight_fn must be callable as log_weight_fn(key, n).")
  _checks.check_int_at_least("num_samples", num_samples, 1)
  _checks.check_int_at_least("chunk_size", chunk_size, 1)
  chunk_size = min(int(chunk_size), int(num_samples))
  num_chunks = -(-num_samples // chunk_size)
  keys = jax.random.split(key, num_chunks)

  out_shape = jax.eval_shape(lambda k: log_weight_fn(k, chunk_size), keys[0])
  if len(out_shape.shape) < 1 or out_shape.shape[0] != chunk_size:
    raise ValueError(
        f"log_weight_fn(key, {chunk_size}) must return shape ({chunk_size}, "
        f"...), got {out_shape.shape}."
    )
  if not jnp.issubdtype(out_shape.dtype, jnp.floating):
    raise TypeError(
        f"log_weight_fn must return floating log weights, got {out_shape.dtype}."
    )

  sample_ids = jnp.arange(chunk_size)

  def chunk_lse(chunk_key, start):
    lw = log_weight_fn(chunk_key, chunk_size)
    valid = (start + sample_ids) < num_samples
    valid = valid.reshape((chunk_size,) + (1,) * (lw.ndim - 1))
    return jax.nn.logsumexp(jnp.where(valid, lw, -jnp.inf), axis=0)

  def body(acc, xs):
    return jnp.logaddexp(acc, chunk_lse(*xs)), None

  # The first chunk is always full and seeds the carry (rather than a
  # constant −∞), so inside shard_map the carry has the same device-varying
  # type as the body output.
  starts = jnp.arange(num_chunks) * chunk_size
  init = chunk_lse(keys[0], starts[0])
  total, _ = jax.lax.scan(body, init, (keys[1:], starts[1:]))
  return total - math.log(num_samples)
