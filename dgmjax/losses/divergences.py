"""KL and Jensen-Shannon divergences between continuous densities.

Lecture 7, slides "Jensen-Shannon vs Kullback-Leibler" and "Mode covering vs
mode seeking":

  KL(π || p) = ∫ π(x) log π(x)/p(x) dx            (forward: mode covering)
  KL(p || π) = ∫ p(x) log p(x)/π(x) dx            (reverse: mode seeking)
  JSD(π || p) = ½ KL(π || m) + ½ KL(p || m),  m = (π + p)/2.

Two ways to evaluate them:

* on a grid: log-densities at evenly spaced points with spacing ``dx``
  (last axis = grid axis); the integral is the Riemann sum Σ f(x_i)·dx, which
  is spectrally accurate for smooth densities whose tails vanish inside the
  grid. This is the lecture's demo: fit N(μ, σ²) to a mixture by minimising
  these values over (μ, σ) with gradient descent.
* by Monte Carlo: per-sample terms from samples and log-densities; the caller
  averages.

Zero densities are handled exactly: 0·log 0 = 0 (a region where the first
argument has no mass contributes nothing), a region where the first argument
has mass and the second has none makes KL = +inf, and JSD stays finite
(≤ log 2) because the mixture never vanishes where either density is
positive. Gradients stay finite (no NaN) wherever the value is finite.

Divergences between categorical distributions (probability vectors or logits)
live with the Gumbel-softmax code; this module is about continuous densities.

References:
  Cover, Thomas, "Elements of Information Theory", 2nd ed., Wiley 2006, ch. 2.
  Lin, "Divergence measures based on the Shannon entropy", IEEE Trans.
  Inf. Theory 37(1), 1991.
  Goodfellow et al., "Generative Adversarial Networks", NeurIPS 2014.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dgmjax import _checks

_LOG2 = math.log(2.0)


def _check_grid(name_a: str, log_a, name_b: str, log_b, dx) -> None:
  _checks.check_floating(name_a, log_a)
  _checks.check_floating(name_b, log_b)
  _checks.check_min_rank(name_a, log_a, 1)
  _checks.check_same_shape(**{name_a: log_a, name_b: log_b})
  _checks.check_positive("dx", dx)


def _normalize_on_grid(log_a: jax.Array, dx) -> jax.Array:
  # log a_i − log Σ_j a_j dx: makes the Riemann sum of the density exactly 1.
  return log_a - (jax.nn.logsumexp(log_a, axis=-1, keepdims=True)
                  + jnp.log(dx))


def _kl_terms(log_a: jax.Array, log_b: jax.Array) -> jax.Array:
  """Elementwise a·(log a − log b) with 0·log 0 = 0, NaN-free gradients."""
  a = jnp.exp(log_a)
  # Mask on a > 0 (not on log_a > −inf) so that densities that underflow to 0
  # in floating point are treated as exact zeros instead of 0·inf = NaN.
  has_mass = a > 0
  # Double `where`: the masked branch must not see −inf − (−inf) = NaN in the
  # forward pass, and its gradient must be exactly zero in the backward pass.
  diff = jnp.where(has_mass, log_a - log_b, 0.0)
  return jnp.where(has_mass, a * diff, 0.0)


def kl_divergence_grid(
    log_p: jax.typing.ArrayLike,
    log_q: jax.typing.ArrayLike,
    *,
    dx: float | jax.typing.ArrayLike,
    normalize: bool = False,
) -> jax.Array:
  """KL(p || q) between two densities given by their log on a 1-D grid.

    KL(p || q) = ∫ p(x) log p(x)/q(x) dx ≈ Σ_i p(x_i)(log p(x_i) − log q(x_i))·dx

  with 0·log 0 = 0 where p(x_i) = 0, and +inf if p(x_i) > 0 = q(x_i) anywhere.
  Differentiable in both arguments (the lecture's demo differentiates through
  the log-density of a Gaussian w.r.t. its mean and scale).

  Implements Lecture 7, slide "Mode covering vs mode seeking" (the KL
  integrals), evaluated by quadrature. With ``dx=1`` and log-probabilities
  of probability vectors it is the discrete KL.

  Args:
    log_p: log p at the grid points, shape [..., n] (grid on the last axis),
      floating; −inf marks zero density.
    log_q: log q at the same points, same shape.
    dx: grid spacing, > 0.
    normalize: renormalise both densities on the grid first (Σ p_i dx = 1),
      which removes the truncation error of a grid that does not cover all
      the mass and makes KL ≥ 0 hold exactly.

  Returns:
    KL(p || q) in nats, shape [...].

  References:
    Cover, Thomas, "Elements of Information Theory", 2006, section 2.3;
    Kullback, Leibler, "On information and sufficiency", 1951.

  Examples:
    >>> import jax.numpy as jnp
    >>> import jax.scipy.stats as st
    >>> from dgmjax.losses.divergences import kl_divergence_grid
    >>> x = jnp.linspace(-12.0, 12.0, 2401)
    >>> kl = kl_divergence_grid(st.norm.logpdf(x, 1.0, 1.0),
    ...                         st.norm.logpdf(x, 0.0, 1.0), dx=24.0 / 2400)
    >>> print(f"{kl:.4f}")  # closed form: (1 − 0)²/2 = 0.5
    0.5000
  """
  _check_grid("log_p", log_p, "log_q", log_q, dx)
  log_p = jnp.asarray(log_p)
  log_q = jnp.asarray(log_q)
  if normalize:
    log_p = _normalize_on_grid(log_p, dx)
    log_q = _normalize_on_grid(log_q, dx)
  return jnp.sum(_kl_terms(log_p, log_q), axis=-1) * dx


def forward_kl_grid(
    log_pi: jax.typing.ArrayLike,
    log_p: jax.typing.ArrayLike,
    *,
    dx: float | jax.typing.ArrayLike,
    normalize: bool = False,
) -> jax.Array:
  """Forward KL(π || p) of the lecture, on a grid: mode covering.

    KL(π || p) = ∫ π(x) log π(x)/p(x) dx.

  π is the data density, p the model. Wherever π has mass the model must
  too (p → 0 there costs +inf), so a unimodal p fitted to a multimodal π
  spreads over all modes; for a Gaussian p the optimum matches π's mean and
  variance.

  Implements Lecture 7, slide "Mode covering vs mode seeking", KL(π||p).

  Args:
    log_pi: log π (data density) on the grid, shape [..., n], floating.
    log_p: log p (model density) on the same grid, same shape.
    dx: grid spacing, > 0.
    normalize: renormalise both densities on the grid first.

  Returns:
    KL(π || p) in nats, shape [...].

  References:
    Minka, "Divergence measures and message passing", MSR-TR-2005-173;
    Goodfellow, Bengio, Courville, "Deep Learning", 2016, figure 3.6.

  Examples:
    >>> import jax.numpy as jnp
    >>> import jax.scipy.stats as st
    >>> from dgmjax.losses.divergences import forward_kl_grid
    >>> x = jnp.linspace(-15.0, 15.0, 3001)
    >>> kl = forward_kl_grid(st.norm.logpdf(x, 0.0, 1.0),
    ...                      st.norm.logpdf(x, 0.0, 2.0), dx=30.0 / 3000)
    >>> print(f"{kl:.4f}")  # log 2 + 1/8 − 1/2
    0.3181
  """
  _check_grid("log_pi", log_pi, "log_p", log_p, dx)
  return kl_divergence_grid(log_pi, log_p, dx=dx, normalize=normalize)


def reverse_kl_grid(
    log_pi: jax.typing.ArrayLike,
    log_p: jax.typing.ArrayLike,
    *,
    dx: float | jax.typing.ArrayLike,
    normalize: bool = False,
) -> jax.Array:
  """Reverse KL(p || π) of the lecture, on a grid: mode seeking.

    KL(p || π) = ∫ p(x) log p(x)/π(x) dx.

  Same argument order as ``forward_kl_grid`` (data first, model second); only
  the direction of the divergence changes. The model is penalised for mass
  where π has little, not for missing modes, so a unimodal p locks onto one
  mode of a well-separated mixture.

  Implements Lecture 7, slide "Mode covering vs mode seeking", KL(p||π).

  Args:
    log_pi: log π (data density) on the grid, shape [..., n], floating.
    log_p: log p (model density) on the same grid, same shape.
    dx: grid spacing, > 0.
    normalize: renormalise both densities on the grid first.

  Returns:
    KL(p || π) in nats, shape [...].

  References:
    Minka, "Divergence measures and message passing", MSR-TR-2005-173;
    Goodfellow, Bengio, Courville, "Deep Learning", 2016, figure 3.6.

  Examples:
    >>> import jax.numpy as jnp
    >>> import jax.scipy.stats as st
    >>> from dgmjax.losses.divergences import reverse_kl_grid
    >>> x = jnp.linspace(-15.0, 15.0, 3001)
    >>> kl = reverse_kl_grid(st.norm.logpdf(x, 0.0, 1.0),
    ...                      st.norm.logpdf(x, 0.0, 1.5), dx=30.0 / 3000)
    >>> print(f"{kl:.4f}")  # −log 1.5 + 1.5²/2 − 1/2
    0.2195
  """
  _check_grid("log_pi", log_pi, "log_p", log_p, dx)
  return kl_divergence_grid(log_p, log_pi, dx=dx, normalize=normalize)


def jsd_grid(
    log_pi: jax.typing.ArrayLike,
    log_p: jax.typing.ArrayLike,
    *,
    dx: float | jax.typing.ArrayLike,
    normalize: bool = False,
) -> jax.Array:
  """Jensen-Shannon divergence JSD(π || p) on a grid.

    JSD(π || p) = ½ KL(π || m) + ½ KL(p || m),   m = (π + p)/2,
    log m = logaddexp(log π, log p) − log 2.

  Symmetric, 0 iff π = p, and at most log 2 (reached for disjoint supports):
  unlike KL it stays finite where one density vanishes, which is also why
  its gradient vanishes for a GAN generator whose samples are far from the
  data. At the optimal discriminator the GAN value is 2·JSD − log 4.

  Implements Lecture 7, slide "Mode covering vs mode seeking", JSD(π||p).

  Args:
    log_pi: log π on the grid, shape [..., n], floating.
    log_p: log p on the same grid, same shape.
    dx: grid spacing, > 0.
    normalize: renormalise both densities on the grid first (then
      0 ≤ JSD ≤ log 2 holds exactly, not only up to quadrature error).

  Returns:
    JSD(π || p) in nats, shape [...].

  References:
    Lin, "Divergence measures based on the Shannon entropy", 1991;
    Goodfellow et al., "Generative Adversarial Networks", 2014, Theorem 1.

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.divergences import jsd_grid
    >>> log_a = jnp.log(jnp.array([0.5, 0.5, 0.0, 0.0]))
    >>> log_b = jnp.log(jnp.array([0.0, 0.0, 0.5, 0.5]))
    >>> print(f"{jsd_grid(log_a, log_b, dx=1.0):.4f}")  # disjoint: log 2
    0.6931
  """
  _check_grid("log_pi", log_pi, "log_p", log_p, dx)
  log_pi = jnp.asarray(log_pi)
  log_p = jnp.asarray(log_p)
  if normalize:
    log_pi = _normalize_on_grid(log_pi, dx)
    log_p = _normalize_on_grid(log_p, dx)
  # Where both densities are 0 the mixture is 0 too and logaddexp(−inf, −inf)
  # has a NaN gradient; those points contribute nothing, so evaluate the
  # mixture at a harmless placeholder there.
  both_empty = (jnp.exp(log_pi) == 0) & (jnp.exp(log_p) == 0)
  safe_pi = jnp.where(both_empty, 0.0, log_pi)
  safe_p = jnp.where(both_empty, 0.0, log_p)
  log_m = jnp.logaddexp(safe_pi, safe_p) - _LOG2
  terms = 0.5 * (_kl_terms(log_pi, log_m) + _kl_terms(log_p, log_m))
  return jnp.sum(terms, axis=-1) * dx


def kl_from_samples(
    log_p_at_p_samples: jax.typing.ArrayLike,
    log_q_at_p_samples: jax.typing.ArrayLike,
) -> jax.Array:
  """Per-sample Monte-Carlo terms of KL(p || q) from samples of p.

    KL(p || q) = E_{x~p}[log p(x) − log q(x)] ≈ (1/N) Σ_i [log p(x_i) − log q(x_i)].

  Each term can be negative; only the mean estimates the (non-negative)
  divergence. Unbiased; its standard error is std(terms)/√N.

  Implements Lecture 7, slide "Mode covering vs mode seeking" (KL), estimated
  by Monte Carlo as in slide "Adversarial Variational Bayes".

  Args:
    log_p_at_p_samples: log p(x_i) at samples x_i ~ p, any shape, floating.
    log_q_at_p_samples: log q(x_i) at the same samples, same shape.

  Returns:
    Per-sample terms log p(x_i) − log q(x_i), same shape; average them.

  References:
    Cover, Thomas, "Elements of Information Theory", 2006, section 2.3.

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.divergences import kl_from_samples
    >>> print(kl_from_samples(jnp.array([-1.0, -2.0]), jnp.array([-3.0, -2.5])))
    [2.  0.5]
  """
  _checks.check_floating("log_p_at_p_samples", log_p_at_p_samples)
  _checks.check_floating("log_q_at_p_samples", log_q_at_p_samples)
  _checks.check_same_shape(log_p_at_p_samples=log_p_at_p_samples,
                           log_q_at_p_samples=log_q_at_p_samples)
  return jnp.asarray(log_p_at_p_samples) - jnp.asarray(log_q_at_p_samples)


def jsd_from_samples(
    log_p_at_p: jax.typing.ArrayLike,
    log_q_at_p: jax.typing.ArrayLike,
    log_p_at_q: jax.typing.ArrayLike,
    log_q_at_q: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
  """Per-sample Monte-Carlo terms of JSD(p || q) from samples of p and of q.

    JSD(p || q) = ½ E_{x~p}[log p(x) − log m(x)] + ½ E_{x~q}[log q(x) − log m(x)],
    log m = logaddexp(log p, log q) − log 2,

  so JSD ≈ ½·mean(terms_p) + ½·mean(terms_q). The two sample sets may have
  different sizes. Every term lies in [−∞, log 2] and the estimate is always
  ≤ log 2.

  Implements Lecture 7, slide "Mode covering vs mode seeking" (JSD),
  estimated by Monte Carlo.

  Args:
    log_p_at_p: log p(x) at samples x ~ p, any shape, floating.
    log_q_at_p: log q(x) at the same samples, same shape as ``log_p_at_p``.
    log_p_at_q: log p(y) at samples y ~ q, any shape, floating.
    log_q_at_q: log q(y) at the same samples, same shape as ``log_p_at_q``.

  Returns:
    ``(terms_p, terms_q)``: log p − log m at the samples of p and
    log q − log m at the samples of q, shapes of ``log_p_at_p`` and
    ``log_p_at_q``.

  References:
    Lin, "Divergence measures based on the Shannon entropy", 1991;
    Goodfellow et al., "Generative Adversarial Networks", 2014.

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.divergences import jsd_from_samples
    >>> terms_p, terms_q = jsd_from_samples(
    ...     jnp.array([0.0]), jnp.array([-jnp.inf]),
    ...     jnp.array([-jnp.inf]), jnp.array([0.0]))
    >>> print(f"{0.5 * terms_p.mean() + 0.5 * terms_q.mean():.4f}")  # log 2
    0.6931
  """
  for name, value in (("log_p_at_p", log_p_at_p), ("log_q_at_p", log_q_at_p),
                      ("log_p_at_q", log_p_at_q), ("log_q_at_q", log_q_at_q)):
    _checks.check_floating(name, value)
  _checks.check_same_shape(log_p_at_p=log_p_at_p, log_q_at_p=log_q_at_p)
  _checks.check_same_shape(log_p_at_q=log_p_at_q, log_q_at_q=log_q_at_q)

  def terms(log_own, log_other):
    # log own − log m = log 2 − log(1 + other/own) = log 2 − softplus(Δ):
    # finite when the other density is 0 (Δ = −inf) and differentiable there.
    return _LOG2 - jax.nn.softplus(
        jnp.asarray(log_other) - jnp.asarray(log_own))

  return terms(log_p_at_p, log_q_at_p), terms(log_q_at_q, log_p_at_q)
