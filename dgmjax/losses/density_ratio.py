"""Density-ratio estimation by classification, and Adversarial Variational Bayes.

Lecture 7, slides "Density ratio trick" and "Adversarial Variational Bayes".

The density ratio trick: label samples of a numerator density ``p`` (also
called q1) with y = 1 and samples of a denominator density ``q`` (q2) with
y = 0, in equal proportion, and train a classifier D(x) = sigmoid(T(x)) with
binary cross-entropy. Bayes' rule with p(y=1) = p(y=0) = 1/2 gives

  p(x) / q(x) = p(x|y=1) / p(x|y=0) = p(y=1|x) / p(y=0|x) = D*(x) / (1 − D*(x))

so the optimal *logit* is the log density ratio,

  T*(x) = log D*(x) − log(1 − D*(x)) = log p(x) − log q(x),

and E_p[T*(x)] = KL(p || q). The lecture slide "Monte-Carlo estimation for KL
divergence" drops the log; the estimate is E_q[log D/(1−D)] = E_q[T], not
E_q[D/(1−D)].

AVB applies this with p = q(z|x)π(x) (posterior, label 1) and q = p(z)π(x)
(prior, label 0): the discriminator logit T(x, z) estimates
log q(z|x) − log p(z), the integrand of the ELBO's KL term, so an implicit
encoder (no density, only samples) can be trained.

Conventions used everywhere in this module:

* label 1 ↔ numerator ↔ ``logits_p`` ↔ AVB posterior samples z ~ q(z|x);
* label 0 ↔ denominator ↔ ``logits_q`` ↔ AVB prior samples z ~ p(z);
* the logit is the log-ratio numerator / denominator, never its negative.

All losses are per example; the caller reduces.

References:
  Sugiyama, Suzuki, Kanamori, "Density Ratio Estimation in Machine Learning",
  Cambridge University Press, 2012.
  Mescheder, Nowozin, Geiger, "Adversarial Variational Bayes: Unifying
  Variational Autoencoders and Generative Adversarial Networks", ICML 2017,
  https://arxiv.org/abs/1701.04722
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from dgmjax import _checks
from dgmjax.parallel import global_mean

_LOG_2PI = math.log(2.0 * math.pi)


def _check_latent_and_scalar(t_name: str, t, z_name: str, z) -> None:
  """``t`` holds one value per latent vector in ``z`` (shape z.shape[:-1])."""
  _checks.check_min_rank(z_name, z, 1)
  if tuple(jnp.shape(t)) != tuple(jnp.shape(z))[:-1]:
    raise ValueError(
        f"{t_name} must have shape {z_name}.shape[:-1] = "
        f"{tuple(jnp.shape(z))[:-1]} (one value per latent vector), got "
        f"{tuple(jnp.shape(t))}."
    )


def _bce_label_1_and_0(logits_1, logits_0) -> tuple[jax.Array, jax.Array]:
  """BCE of logits labelled 1 and of logits labelled 0.

  ``softplus(−T)`` and ``softplus(T)`` through optax's log-sigmoid form, so
  T = ±1e4 stays finite (a log(D + eps) formulation would cap the loss).
  """
  logits_1 = jnp.asarray(logits_1)
  logits_0 = jnp.asarray(logits_0)
  return (optax.sigmoid_binary_cross_entropy(logits_1, 1.0),
          optax.sigmoid_binary_cross_entropy(logits_0, 0.0))


# ----------------------------------------------------------------------------
# The density ratio trick.
# ----------------------------------------------------------------------------


def density_ratio_loss(
    logits_p: jax.typing.ArrayLike,
    logits_q: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
  """Binary cross-entropy of a density-ratio classifier, from logits.

  The classifier D = sigmoid(T) labels samples of the numerator p (q1 in the
  lecture) as 1 and samples of the denominator q (q2) as 0:

    loss_p(x) = −log D(x)       = softplus(−T(x)),   x ~ p   (label 1)
    loss_q(x) = −log(1 − D(x))  = softplus(T(x)),    x ~ q   (label 0)

  The training objective is mean(loss_p) + mean(loss_q) (the two batches get
  equal weight, i.e. the prior p(y=1) = 1/2 of the lecture). Its pointwise
  minimiser is T*(x) = log p(x) − log q(x): setting the derivative
  p(x)·(−sigmoid(−T)) + q(x)·sigmoid(T) to zero gives
  sigmoid(T)/sigmoid(−T) = exp(T) = p(x)/q(x).

  The two halves are returned separately, per example, so the numerator and
  denominator batches may have different sizes and shapes.

  Implements Lecture 7, slide "Density ratio trick":
  max_D E_{q1} log D(x) + E_{q2} log(1 − D(x)).

  Args:
    logits_p: T(x) evaluated at samples of the numerator p (label 1), any
      shape, floating.
    logits_q: T(x) evaluated at samples of the denominator q (label 0), any
      shape, floating.

  Returns:
    ``(loss_p, loss_q)``, elementwise BCE, shapes of ``logits_p`` and
    ``logits_q``.

  References:
    Sugiyama et al., "Density Ratio Estimation in Machine Learning", 2012;
    Mescheder et al., "Adversarial Variational Bayes", 2017.

  Examples:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from dgmjax.losses.density_ratio import density_ratio_loss
    >>> loss_p, loss_q = density_ratio_loss(jnp.array([0.0, 2.0]),
    ...                                     jnp.array([-1.0]))
    >>> print(np.round(np.float64(loss_p), 4), np.round(np.float64(loss_q), 4))
    [0.6931 0.1269] [0.3133]
  """
  _checks.check_floating("logits_p", logits_p)
  _checks.check_floating("logits_q", logits_q)
  return _bce_label_1_and_0(logits_p, logits_q)


def log_density_ratio(logits: jax.typing.ArrayLike) -> jax.Array:
  """Log density ratio from a density-ratio classifier's logit (the identity).

  With D(x) = sigmoid(T(x)) the probability that x came from the numerator p
  rather than the denominator q, and equal class priors,

    p(x)/q(x) = p(y=1|x)/p(y=0|x) = D(x)/(1 − D(x)) = sigmoid(T)/sigmoid(−T)
              = exp(T(x)),

  so log p(x) − log q(x) = T(x): the logit *is* the log ratio. Computing
  log(D/(1−D)) from the probability instead loses all precision once D
  saturates in float32 (|T| ≳ 17), which is why every function here takes
  logits. This function exists to make that identity explicit at call sites.

  Implements Lecture 7, slide "Density ratio trick" (r = D/(1 − D)).

  Args:
    logits: classifier logits T(x), any shape, floating.

  Returns:
    log p(x) − log q(x) estimates, same shape (the logits themselves).

  References:
    Sugiyama et al., "Density Ratio Estimation in Machine Learning", 2012.

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.density_ratio import log_density_ratio
    >>> print(log_density_ratio(jnp.array([-1.5, 0.0, 3.0])))
    [-1.5  0.   3. ]
  """
  _checks.check_floating("logits", logits)
  return jnp.asarray(logits)


def kl_estimate(
    logits_on_numerator_samples: jax.typing.ArrayLike,
    *,
    axis_name: str | None = None,
) -> jax.Array:
  """Density-ratio estimate of KL(p || q): the mean logit on samples of p.

    KL(p || q) = E_{x~p}[log p(x) − log q(x)] ≈ (1/N) Σ_i T(x_i),  x_i ~ p,

  where T is the logit of a classifier trained with ``density_ratio_loss``
  (p labelled 1). The estimate is only as good as T is close to the true log
  ratio *where p has mass*. Unlike the losses this is an estimator, so it
  reduces: the mean is over every element of the input (e.g. a batch of x, or
  [samples, batch] for several z per x, giving the KL averaged over x). The
  per-example terms are the logits themselves (``log_density_ratio``).

  Implements Lecture 7, slide "Density ratio trick" / "Adversarial Variational
  Bayes", Monte-Carlo estimation for KL divergence, with the log the slide
  drops: KL(q(z|x)||p(z)) ≈ E_q[log D/(1 − D)] = E_q[T(x, z)].

  Args:
    logits_on_numerator_samples: T evaluated at samples of the numerator p,
      any shape with at least one element, floating.
    axis_name: if given (inside ``shard_map``/``pmap``), the mean is taken over
      the examples of all devices along this mapped axis, exactly as if the
      shards were concatenated.

  Returns:
    Scalar KL estimate in nats (float32 or wider).

  References:
    Sugiyama et al., "Density Ratio Estimation in Machine Learning", 2012;
    Mescheder et al., "Adversarial Variational Bayes", 2017.

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.density_ratio import kl_estimate
    >>> print(f"{kl_estimate(jnp.array([0.5, 1.5, 2.5])):.4f}")
    1.5000
  """
  name = "logits_on_numerator_samples"
  _checks.check_floating(name, logits_on_numerator_samples)
  logits = jnp.asarray(logits_on_numerator_samples)
  if logits.size == 0:
    raise ValueError(f"{name} must contain at least one sample, got shape "
                     f"{logits.shape}.")
  # Sums and counts reduced separately, in at least float32: the mean of the
  # concatenated batch, not a mean of per-device means.
  return global_mean(logits, axis_name)


# ----------------------------------------------------------------------------
# Adversarial Variational Bayes.
# ----------------------------------------------------------------------------


def avb_discriminator_loss(
    t_posterior: jax.typing.ArrayLike,
    t_prior: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
  """AVB discriminator BCE: posterior z ~ q(z|x) → label 1, prior z ~ p(z) → 0.

    loss_posterior = softplus(−T(x, z)),  z ~ q(z|x), x ~ π(x)   (label 1)
    loss_prior     = softplus(T(x, z)),   z ~ p(z),   x ~ π(x)   (label 0)

  Minimising mean(loss_posterior) + mean(loss_prior) over T gives
  T*(x, z) = log q(z|x) − log p(z), so E_q[T*] = KL(q(z|x) || p(z)) and the
  encoder's KL term is ``avb_kl_term(t_posterior)`` with a plus sign in
  −ELBO. Some public AVB code uses the opposite labels (prior = 1), which
  silently turns T into log p(z) − log q(z|x); with this function the
  posterior logits always go first, under the name ``t_posterior``. Both
  halves see the *same* x: pair each x with one z from the encoder and one z
  from the prior, and feed (x, z) jointly to T (a T that sees only z cannot
  represent log q(z|x)).

  This is ``density_ratio_loss`` with numerator q(z|x)π(x) and denominator
  p(z)π(x); it is a separate name only to fix the AVB convention.

  Implements Lecture 7, slide "Density ratio trick" (Adversarial Variational
  Bayes): max_D E_π E_{q(z|x)} log D(x,z) + E_π E_{p(z)} log(1 − D(x,z)).

  Args:
    t_posterior: T(x, z) with z ~ q(z|x) from the encoder, any shape,
      floating. Label 1.
    t_prior: T(x, z) with z ~ p(z) from the prior, any shape, floating.
      Label 0.

  Returns:
    ``(loss_posterior, loss_prior)``, elementwise, shapes of the inputs.

  References:
    Mescheder, Nowozin, Geiger, "Adversarial Variational Bayes", ICML 2017,
    Proposition 1.

  Examples:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from dgmjax.losses.density_ratio import avb_discriminator_loss
    >>> loss_post, loss_prior = avb_discriminator_loss(
    ...     t_posterior=jnp.array([3.0]), t_prior=jnp.array([-3.0]))
    >>> print(np.round(np.float64(loss_post), 4),
    ...       np.round(np.float64(loss_prior), 4))
    [0.0486] [0.0486]
  """
  _checks.check_floating("t_posterior", t_posterior)
  _checks.check_floating("t_prior", t_prior)
  return _bce_label_1_and_0(t_posterior, t_prior)


def avb_kl_term(t_posterior: jax.typing.ArrayLike) -> jax.Array:
  """AVB encoder KL term: T(x, z) at z ~ q(z|x), per example.

    KL(q(z|x) || p(z)) = E_q[log q(z|x) − log p(z)] ≈ E_q[T*(x, z)].

  Gradients reach the encoder through z = g(x, ε, φ) inside T (the
  reparametrisation trick). T* = log q_φ(z|x) − log p(z) also depends on φ
  directly, but AVB's Proposition 2 shows that part has zero expectation,
  E_q[∇_φ T*(x, z)] = E_q[∇_φ log q_φ(z|x)] = 0, so differentiating T only
  through z, at fixed discriminator parameters, gives the correct ∇_φ KL
  (checked in the tests). The discriminator's parameters must be held fixed
  in this term. In JAX the natural way is to differentiate the encoder loss only with
  respect to the encoder/decoder parameters (``jax.grad`` over those
  arguments); if all parameters live in one pytree, evaluate T with
  ``jax.lax.stop_gradient(disc_params)``. Do not stop the gradient through z.

  Implements Lecture 7, slide "Adversarial Variational Bayes": the KL term of
  the ELBO replaced by the discriminator's logit.

  Args:
    t_posterior: T(x, z) with z ~ q(z|x), any shape, floating.

  Returns:
    The per-example KL estimates (the logits themselves), same shape; add
    them to −log p(x|z) to get the −ELBO.

  References:
    Mescheder, Nowozin, Geiger, "Adversarial Variational Bayes", ICML 2017,
    Proposition 2 and Algorithm 1.

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.density_ratio import avb_kl_term
    >>> print(avb_kl_term(jnp.array([0.25, 4.0])))
    [0.25 4.  ]
  """
  _checks.check_floating("t_posterior", t_posterior)
  return jnp.asarray(t_posterior)


def avb_elbo(
    log_likelihood: jax.typing.ArrayLike,
    t_posterior: jax.typing.ArrayLike,
) -> jax.Array:
  """AVB ELBO estimate per example: log p(x|z) − T(x, z), z ~ q(z|x).

    ELBO(x) = E_q[log p(x|z) − (log q(z|x) − log p(z))]
            ≈ log p(x|z) − T(x, z).

  Maximise it over the encoder and decoder (with the discriminator's
  parameters held fixed, see ``avb_kl_term``), i.e. minimise its negative.

  Implements Lecture 7, slide "Adversarial Variational Bayes":
  L(φ, θ) = E_q[log p(x|z, θ) − log q(z|x, φ)/p(z)].

  Args:
    log_likelihood: log p(x|z) for each (x, z) pair, floating, any shape.
    t_posterior: T(x, z) for the same pairs, same shape.

  Returns:
    Per-example ELBO estimates, same shape.

  References:
    Mescheder, Nowozin, Geiger, "Adversarial Variational Bayes", ICML 2017,
    Algorithm 1.

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.density_ratio import avb_elbo
    >>> print(avb_elbo(jnp.array([-90.0, -85.5]), jnp.array([10.0, 12.5])))
    [-100.  -98.]
  """
  _checks.check_floating("log_likelihood", log_likelihood)
  _checks.check_floating("t_posterior", t_posterior)
  _checks.check_same_shape(log_likelihood=log_likelihood,
                           t_posterior=t_posterior)
  return jnp.asarray(log_likelihood) - jnp.asarray(t_posterior)


def add_prior_log_density(
    t: jax.typing.ArrayLike,
    z: jax.typing.ArrayLike,
    *,
    include_constant: bool = False,
) -> jax.Array:
  """Adds the analytic −log p(z) of a N(0, I) prior to a network's logit.

    T_total(x, z) = T_net(x, z) + ‖z‖²/2  (+ d/2·log 2π if include_constant)
                  = T_net(x, z) − log N(z; 0, I).

  The optimal discriminator is T*(x, z) = log q(z|x) − log p(z). For a
  standard normal prior the −log p(z) part is the known quadratic ‖z‖²/2,
  which grows without bound away from the origin; a network would have to
  learn it from samples and extrapolates it badly where prior samples are
  rare. Adding it analytically leaves T_net to learn only log q(z|x) (up to a
  constant, which the bias absorbs, so the constant is off by default as in
  the reference implementation). This also keeps the logits of prior samples
  from saturating early in training. Feed ``T_total`` to
  ``avb_discriminator_loss`` and ``avb_kl_term``; gradients flow to z through
  the quadratic exactly as through the network.

  Implements Lecture 7, slide "Adversarial Variational Bayes" (the density
  ratio q(z|x)/p(z) with the known p(z) factored out).

  Args:
    t: network logits T_net(x, z), shape ``z.shape[:-1]``, floating.
    z: latent codes, shape [..., d], floating.
    include_constant: also add d/2·log(2π), making T_total exactly
      T_net − log N(z; 0, I).

  Returns:
    T_total, shape ``z.shape[:-1]``.

  References:
    Mescheder, Nowozin, Geiger, "Adversarial Variational Bayes", ICML 2017,
    reference implementation (adversary with an added ‖z‖²/2 term).

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.density_ratio import add_prior_log_density
    >>> z = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    >>> print(add_prior_log_density(jnp.array([0.5, 0.5]), z))
    [3.  0.5]
  """
  _checks.check_floating("t", t)
  _checks.check_floating("z", z)
  _check_latent_and_scalar("t", t, "z", z)
  z = jnp.asarray(z)
  out = jnp.asarray(t) + 0.5 * jnp.sum(jnp.square(z), axis=-1)
  if include_constant:
    out = out + 0.5 * z.shape[-1] * _LOG_2PI
  return out


# ----------------------------------------------------------------------------
# Adaptive contrast (AVB, section "Adaptive Contrast").
#
# A discriminator has to learn log q(z|x) − log p(z), which is large and hard
# when q(z|x) is much narrower than p(z). Adaptive contrast compares q(z|x)
# with an auxiliary Gaussian r_α(z|x) = N(μ(x), diag σ(x)²) that has q's first
# two moments instead, which is much closer to q:
#
#   KL(q(z|x) || p(z)) = KL(q(z|x) || r_α(z|x)) + E_q[log r_α(z|x) − log p(z)].
#
# The second term is analytic per sample (``adaptive_contrast_correction``).
# The first is invariant under the affine map z̃ = (z − μ)/σ applied to both
# densities, so KL(q || r_α) = KL(q̃(z̃|x) || N(0, I)): the discriminator
# T(x, z̃) is trained with ``avb_discriminator_loss`` on normalised posterior
# samples z̃ (label 1) against ε ~ N(0, I) (label 0). The trainer then uses
#
#   −ELBO(x) = −log p(x|z) + adaptive_contrast_kl(T(x, z̃), z, μ, σ).
#
# μ(x), σ(x) are either analytic (the paper's noise-basis encoder) or
# ``estimate_moments`` over several noise draws per x. Gradients flow through
# μ and σ as well as z.
# ----------------------------------------------------------------------------


def _check_affine(z, mean, std) -> None:
  _checks.check_floating("z", z)
  _checks.check_floating("mean", mean)
  _checks.check_floating("std", std)
  _checks.check_min_rank("z", z, 1)
  # Explicit shapes: a [B, d] mean against [S, B, d] samples must be
  # broadcast by the caller (jnp.broadcast_to), never silently here.
  _checks.check_same_shape(z=z, mean=mean, std=std)


def adaptive_contrast_normalize(
    z: jax.typing.ArrayLike,
    mean: jax.typing.ArrayLike,
    std: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
  """Normalises latents with the encoder's moments: z̃ = (z − μ)/σ.

    z̃ = (z − μ(x)) / σ(x),   log|det ∂z̃/∂z| = −Σ_j log σ_j(x).

  The density of z̃ is q̃(z̃|x) = q(z|x)·Π_j σ_j, i.e.
  log q̃(z̃) = log q(z) − log_det. KL(q || r_α) = KL(q̃ || N(0, I)) because the
  Jacobian cancels in the ratio, so the discriminator sees z̃. The inverse is
  z = μ + σ·z̃.

  Implements the adaptive-contrast normalisation of AVB (Lecture 7, slide
  "Adversarial Variational Bayes", section "Adaptive Contrast" of the paper).

  Args:
    z: latent samples z ~ q(z|x), shape [..., d], floating.
    mean: μ(x), same shape as ``z`` (broadcast it yourself for several z
      per x).
    std: σ(x) > 0, same shape as ``z``.

  Returns:
    ``(z_tilde, log_det)``: z̃ with the shape of ``z``, and the log-absolute
    Jacobian determinant of z ↦ z̃, shape ``z.shape[:-1]``.

  References:
    Mescheder, Nowozin, Geiger, "Adversarial Variational Bayes", ICML 2017,
    section "Adaptive Contrast".

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.density_ratio import adaptive_contrast_normalize
    >>> z_t, log_det = adaptive_contrast_normalize(
    ...     jnp.array([3.0, 0.0]), jnp.array([1.0, 1.0]), jnp.array([2.0, 0.5]))
    >>> print(z_t, f"{log_det:.4f}")
    [ 1. -2.] -0.0000
  """
  _check_affine(z, mean, std)
  std = jnp.asarray(std)
  z_tilde = (jnp.asarray(z) - jnp.asarray(mean)) / std
  log_det = -jnp.sum(jnp.log(std), axis=-1)
  return z_tilde, log_det


def auxiliary_log_density(
    z: jax.typing.ArrayLike,
    mean: jax.typing.ArrayLike,
    std: jax.typing.ArrayLike,
) -> jax.Array:
  """Log-density of the adaptive-contrast Gaussian r_α(z|x) = N(μ, diag σ²).

    log r_α(z|x) = −½ Σ_j [((z_j − μ_j)/σ_j)² + 2 log σ_j + log 2π].

  Implements the auxiliary distribution of AVB's adaptive contrast
  (Lecture 7, slide "Adversarial Variational Bayes"; paper section
  "Adaptive Contrast").

  Args:
    z: latent points, shape [..., d], floating.
    mean: μ(x), same shape as ``z``.
    std: σ(x) > 0, same shape as ``z``.

  Returns:
    log r_α(z|x), shape ``z.shape[:-1]``.

  References:
    Mescheder, Nowozin, Geiger, "Adversarial Variational Bayes", ICML 2017,
    section "Adaptive Contrast".

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.density_ratio import auxiliary_log_density
    >>> lp = auxiliary_log_density(jnp.zeros(2), jnp.zeros(2), jnp.ones(2))
    >>> print(f"{lp:.4f}")
    -1.8379
  """
  _check_affine(z, mean, std)
  std = jnp.asarray(std)
  z_tilde = (jnp.asarray(z) - jnp.asarray(mean)) / std
  return -0.5 * jnp.sum(
      jnp.square(z_tilde) + 2.0 * jnp.log(std) + _LOG_2PI, axis=-1)


def adaptive_contrast_correction(
    z: jax.typing.ArrayLike,
    mean: jax.typing.ArrayLike,
    std: jax.typing.ArrayLike,
) -> jax.Array:
  """Analytic part of the adaptive-contrast KL: log r_α(z|x) − log N(z; 0, I).

    c(x, z) = log r_α(z|x) − log p(z)
            = −½ Σ_j ((z_j − μ_j)/σ_j)² − Σ_j log σ_j + ½ Σ_j z_j²,

  for a standard normal prior p(z) (the 2π constants cancel). Its mean under
  q(z|x) is KL(q || p) − KL(q || r_α); when q(z|x) is itself Gaussian with
  moments (μ, σ), r_α = q and this term alone is the KL.

  Implements AVB adaptive contrast (Lecture 7, slide "Adversarial Variational
  Bayes"; paper section "Adaptive Contrast", the E_q[log r_α − log p] term).

  Args:
    z: latent samples z ~ q(z|x), shape [..., d], floating.
    mean: μ(x), same shape as ``z``.
    std: σ(x) > 0, same shape as ``z``.

  Returns:
    Per-sample correction, shape ``z.shape[:-1]``.

  References:
    Mescheder, Nowozin, Geiger, "Adversarial Variational Bayes", ICML 2017,
    section "Adaptive Contrast".

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.density_ratio import adaptive_contrast_correction
    >>> c = adaptive_contrast_correction(
    ...     jnp.array([1.0]), jnp.array([1.0]), jnp.array([1.0]))
    >>> print(f"{c:.4f}")
    0.5000
  """
  _check_affine(z, mean, std)
  z = jnp.asarray(z)
  std = jnp.asarray(std)
  z_tilde = (z - jnp.asarray(mean)) / std
  return 0.5 * jnp.sum(
      jnp.square(z) - jnp.square(z_tilde) - 2.0 * jnp.log(std), axis=-1)


def adaptive_contrast_kl(
    t_normalized: jax.typing.ArrayLike,
    z: jax.typing.ArrayLike,
    mean: jax.typing.ArrayLike,
    std: jax.typing.ArrayLike,
) -> jax.Array:
  """Per-sample KL(q(z|x) || N(0, I)) estimate with adaptive contrast.

    KL(q || p) = KL(q̃(z̃|x) || N(0, I)) + E_q[log r_α(z|x) − log p(z)]
               ≈ T(x, z̃) + c(x, z),

  with z̃ = (z − μ)/σ (``adaptive_contrast_normalize``), T trained by
  ``avb_discriminator_loss`` on z̃ from the encoder (label 1) against
  ε ~ N(0, I) (label 0), and c from ``adaptive_contrast_correction``. With
  the optimal T*(x, z̃) = log q̃(z̃|x) − log N(z̃; 0, I) the sum equals
  log q(z|x) − log p(z) exactly, for any μ and σ.

  Implements AVB adaptive contrast (Lecture 7, slide "Adversarial Variational
  Bayes"; paper section "Adaptive Contrast").

  Args:
    t_normalized: T(x, z̃), the discriminator logit on normalised latents,
      shape ``z.shape[:-1]``, floating.
    z: latent samples z ~ q(z|x) (not normalised), shape [..., d].
    mean: μ(x), same shape as ``z``.
    std: σ(x) > 0, same shape as ``z``.

  Returns:
    Per-sample KL estimate, shape ``z.shape[:-1]``; add it to −log p(x|z)
    for the −ELBO.

  References:
    Mescheder, Nowozin, Geiger, "Adversarial Variational Bayes", ICML 2017,
    section "Adaptive Contrast".

  Examples:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses.density_ratio import adaptive_contrast_kl
    >>> kl = adaptive_contrast_kl(jnp.array(0.25), jnp.array([1.0]),
    ...                           jnp.array([1.0]), jnp.array([1.0]))
    >>> print(f"{kl:.4f}")
    0.7500
  """
  _checks.check_floating("t_normalized", t_normalized)
  _check_affine(z, mean, std)
  _check_latent_and_scalar("t_normalized", t_normalized, "z", z)
  return jnp.asarray(t_normalized) + adaptive_contrast_correction(z, mean, std)


def estimate_moments(
    z_samples: jax.typing.ArrayLike,
    *,
    axis: int = 0,
    eps: float = 1e-6,
) -> tuple[jax.Array, jax.Array]:
  """Mean and (floored) standard deviation of encoder samples along ``axis``.

    μ = (1/S) Σ_s z_s,   σ = sqrt((1/S) Σ_s (z_s − μ)² + eps).

  For an implicit encoder the moments of q(z|x) are estimated from S noise
  draws per x. The variance is the two-pass (centred) estimate, which does not
  cancel catastrophically like E[z²] − E[z]²; ``eps`` keeps σ > 0 and the
  gradient of the square root finite when the samples coincide. Gradients
  flow through both moments.

  Implements the moment estimates for AVB adaptive contrast (Lecture 7, slide
  "Adversarial Variational Bayes"; paper section "Adaptive Contrast").

  Args:
    z_samples: samples with the sample axis ``axis`` (at least 2 samples),
      floating, e.g. [S, B, d].
    axis: the sample axis.
    eps: variance floor added under the square root, >= 0.

  Returns:
    ``(mean, std)``, each with ``axis`` removed.

  References:
    Mescheder, Nowozin, Geiger, "Adversarial Variational Bayes", ICML 2017,
    section "Adaptive Contrast".

  Examples:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from dgmjax.losses.density_ratio import estimate_moments
    >>> mean, std = estimate_moments(jnp.array([[0.0, 1.0], [2.0, 1.0]]))
    >>> print(mean, np.round(np.float64(std), 4))
    [1. 1.] [1.    0.001]
  """
  _checks.check_floating("z_samples", z_samples)
  _checks.check_positive("eps", eps, allow_zero=True)
  z_samples = jnp.asarray(z_samples)
  if not isinstance(axis, int) or isinstance(axis, bool):
    raise TypeError(f"axis must be an int, got {type(axis).__name__}.")
  ndim = z_samples.ndim
  if not -ndim <= axis < ndim:
    raise ValueError(f"axis {axis} is out of range for z_samples of shape "
                     f"{z_samples.shape}.")
  if z_samples.shape[axis] < 2:
    raise ValueError(
        f"z_samples must have at least 2 samples along axis {axis} to "
        f"estimate a standard deviation, got shape {z_samples.shape}.")
  mean = jnp.mean(z_samples, axis=axis)
  var = jnp.mean(jnp.square(z_samples - jnp.expand_dims(mean, axis)),
                 axis=axis)
  return mean, jnp.sqrt(var + eps)
