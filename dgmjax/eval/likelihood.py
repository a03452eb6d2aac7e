"""Log-likelihood estimators for latent-variable models, over any decoder.

* :func:`importance_log_marginal`: log p(x) by importance sampling from a
  Gaussian (mixture) proposal around each x: the IWAE-K bound for a
  Gaussian encoder, and the evaluation of AVB's implicit encoder (moments
  fitted to its samples). Lecture 7, "Adversarial Variational Bayes": the
  implicit q(z|x) has no density, so its ELBO cannot be evaluated, but p(x)
  can be estimated with any proposal.
* :func:`grid_log_marginal`: log p(x) = log ∫ p(x|z) p(z) dz on a 2-D grid,
  exact up to the grid, for 2-D latents.
* :func:`two_stage_neg_elbo`: the −ELBO with a second-stage prior fitted to
  the latents (a token prior over a dVAE's codes) in place of the model's own.

For decoder-based models without an encoder (GANs), see :mod:`dgmjax.eval.ais`.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import rng
from dgmjax.eval import example_keys
from dgmjax.losses import elbo


def importance_log_marginal(
    log_likelihood: Callable[[jax.Array], jax.Array],
    mean: jax.Array,
    log_var: jax.Array,
    key: jax.Array,
    *,
    num_samples: int,
    chunk_size: int,
    scales: tuple[float, ...] = (1.0,),
    prior_weight: float = 0.0,
    log_prior: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
  """Importance-sampled log p(x): a lower bound in expectation.

    log p̂(x) = logsumexp_k [log p(x|z_k) + log p(z_k) − log r(z_k|x)] − log K,
    r(z|x) = (1 − α)·(1/M) Σ_m N(z; μ(x), diag (s_m σ(x))²) + α·N(z; 0, I).

  E[p̂(x)] = p(x) for any proposal r with full support, so by Jensen
  E[log p̂(x)] ≤ log p(x); the gap closes as K grows, fastest when r is close
  to the true posterior p(z|x). With one scale s = 1, α = 0 and (μ, σ) of a
  Gaussian encoder this is the IWAE-K bound. Several widths (balance-heuristic
  mixture) guard against a proposal narrower than the posterior, which is
  what moments fitted to an implicit (often too narrow) q(z|x) give; the
  defensive prior component (α > 0, Hesterberg 1995) caps each weight at
  p(x|z)/α. Either costs at most log M resp. −log(1 − α) nats when the first
  component alone was already right.

  Args:
    log_likelihood: z (n, B, d) -> log p(x|z) (n, B).
    mean, log_var: (B, d) centre and log-variance of the proposal.
    key: PRNG key.
    num_samples: K >= 1.
    chunk_size: samples evaluated at once.
    scales: widths s_m > 0 of the mixture components.
    prior_weight: α in [0, 1); the defensive component samples N(0, I),
      so α > 0 needs the default prior.
    log_prior: z (..., d) -> log p(z) (...); default N(0, I). A flow prior
      plugs in here (with one scale and α = 0 this is the VAE's IWAE-K).

  Returns:
    (B,) estimates of log p(x).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from dgmjax.eval import likelihood
    >>> # x = z + N(0, 1) noise, z ~ N(0, 1): p(x) = N(x; 0, 2), posterior N(x/2, 1/2).
    >>> x = jnp.array([0.5, -1.0])
    >>> ll = lambda z: -0.5 * jnp.log(2 * jnp.pi) - 0.5 * (x - z[..., 0]) ** 2
    >>> est = likelihood.importance_log_marginal(
    ...     ll, (x / 2)[:, None], jnp.log(jnp.full((2, 1), 0.5)), jax.random.key(0),
    ...     num_samples=8, chunk_size=8)
    >>> exact = -0.5 * jnp.log(2 * jnp.pi * 2.0) - x ** 2 / 4
    >>> print(jnp.allclose(est, exact, atol=1e-5))  # the exact posterior: zero variance
    True
  """
  scales = tuple(float(v) for v in scales)
  if not scales or min(scales) <= 0:
    raise ValueError(f"scales must be a non-empty tuple of widths > 0, got {scales}.")
  if not 0.0 <= prior_weight < 1.0:
    raise ValueError(f"prior_weight must be in [0, 1), got {prior_weight}.")
  if prior_weight > 0.0 and log_prior is not None:
    raise ValueError("prior_weight > 0 draws from N(0, I), so it needs the default log_prior.")
  prior = elbo.log_standard_normal if log_prior is None else log_prior
  widths = jnp.asarray(scales, mean.dtype)
  log_vars = log_var[None] + 2.0 * jnp.log(widths)[:, None, None]  # (M, B, d)
  log_mix = math.log1p(-prior_weight) - math.log(len(scales))

  def log_weights(k, n):
    k_z, k_m, k_p, k_c = jax.random.split(k, 4)
    which = jax.random.randint(k_m, (n, mean.shape[0]), 0, len(scales))
    std = widths[which][..., None] * jnp.exp(0.5 * log_var)
    z = mean + std * rng.normal(k_z, (n,) + mean.shape)
    if prior_weight > 0.0:
      use_prior = rng.uniform(k_c, z.shape[:-1] + (1,)) < prior_weight
      z = jnp.where(use_prior, rng.normal(k_p, z.shape), z)
    log_p = prior(z)
    comps = jnp.stack([elbo.log_normal_diag(z, mean, lv) for lv in log_vars])
    log_r = log_mix + jax.nn.logsumexp(comps, axis=0)
    if prior_weight > 0.0:
      log_r = jnp.logaddexp(log_r, math.log(prior_weight) + log_p)
    return elbo.iwae_log_weights(log_likelihood(z), log_p, log_r)

  return elbo.chunked_iwae_bound(log_weights, key, num_samples, chunk_size=chunk_size)


def grid_log_marginal(decode_logits, x_flat: np.ndarray, *, extent: float = 6.0,
                      size: int = 512, chunk: int = 8192) -> np.ndarray:
  """log p(x) = log ∫ p(x|z) N(z; 0, I) dz by a Riemann sum on a 2-D grid.

  For binary x, log p(x|z) = Σ_j [x_j ℓ_j + log σ(−ℓ_j)] with decoder logits
  ℓ(z), so a chunk of grid points against all images is one matrix product.
  The prior mass outside [−6, 6]² is < 1e-8.

  Args:
    decode_logits: z (n, 2) -> flat logits (n, D), jittable.
    x_flat: (N, D) binary images.
    extent: the grid covers [−extent, extent]².
    size: points per axis.
    chunk: grid points decoded at once.

  Returns:
    (N,) log p(x) in nats (float64).

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> from dgmjax.eval import likelihood
    >>> # A decoder that ignores z: p(x) is p(x|z) itself, log(1/2) per pixel.
    >>> lp = likelihood.grid_log_marginal(lambda z: jnp.zeros((z.shape[0], 3)),
    ...                                   np.array([[1.0, 0.0, 1.0]]), size=64)
    >>> print(np.round(lp / np.log(0.5), 4))
    [3.]
  """
  axis = np.linspace(-extent, extent, size)
  zx, zy = np.meshgrid(axis, axis)
  grid = np.stack([zx.ravel(), zy.ravel()], axis=1).astype(np.float32)
  log_cell = 2.0 * math.log(axis[1] - axis[0])
  x = jnp.asarray(x_flat, jnp.float32)

  @jax.jit
  def chunk_lse(z):
    logits = decode_logits(z)
    ll = x @ logits.T + jnp.sum(jax.nn.log_sigmoid(-logits), axis=-1)  # (N, n)
    return jax.nn.logsumexp(ll + elbo.log_standard_normal(z), axis=1)

  acc = np.full(len(x_flat), -np.inf)
  for start in range(0, len(grid), chunk):
    z = grid[start:start + chunk]
    if len(z) < chunk:  # one compiled shape: pad with a far point of ~zero mass
      z = np.concatenate([z, np.full((chunk - len(z), 2), 1e3, np.float32)])
    acc = np.logaddexp(acc, np.asarray(chunk_lse(jnp.asarray(z)), np.float64))
  return acc + log_cell


def two_stage_neg_elbo(
    posterior_sample: Callable[[jax.Array, jax.Array], tuple[jax.Array, ...]],
    log_prior: Callable[[jax.Array], jax.Array],
    images: np.ndarray,
    *,
    key: jax.Array,
    num_samples: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Per-image −ELBO with a learned prior in place of the model's own, and with its own.

  ``-log p(x) <= E_{q(c|x)}[-log p(x|c) + log q(c|x) - log p_psi(c)]``: the
  ELBO of the lecture with a second-stage prior ``p_psi`` (e.g. a transformer
  over a dVAE's codes, DALL-E's second stage) in place of the first stage's
  prior; the same draws ``c ~ q(c|x)`` with the model's own prior give its
  bound, so the two compare draw for draw. ``num_samples`` draws per image,
  each keyed by the image's index (:func:`dgmjax.eval.example_keys`), so the
  result does not depend on ``batch_size``.

  Args:
    posterior_sample: ``(x, keys) -> (c, log p(x|c), log p(c), log q(c|x))``
      for a batch of images and one key per image.
    log_prior: ``c -> log p_psi(c)``, one value per image.
    images: ``(n, ...)`` images.
    key: a PRNG key.
    num_samples: draws per image.
    batch_size: images per call.

  Returns:
    ``(learned, own)``: ``(n,)`` float64 means over the draws, in nats.
  """
  n = len(images)
  learned, own = np.zeros(n), np.zeros(n)
  for s in range(num_samples):
    for i in range(0, n, batch_size):
      index = jnp.arange(i, min(i + batch_size, n))
      c, ll, log_p, log_q = posterior_sample(
          images[i:i + batch_size], example_keys(jax.random.fold_in(key, s), index))
      learned[i:i + len(index)] -= np.asarray(elbo.iwae_log_weights(ll, log_prior(c), log_q))
      own[i:i + len(index)] -= np.asarray(elbo.iwae_log_weights(ll, log_p, log_q))
  return learned / num_samples, own / num_samples
