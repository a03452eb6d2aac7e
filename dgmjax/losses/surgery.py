"""ELBO surgery: average KL = mutual information + marginal KL.

Lecture 7, slides "Theorem" and "ELBO surgery" (Hoffman & Johnson, 2016):

  (1/N) Σ_i KL(q(z|x_i) || p(z)) = KL(q_agg(z) || p(z)) + I_q[x, z],
  q_agg(z) = (1/N) Σ_i q(z|x_i),

where I_q[x, z] is the mutual information between the data index and the code
under q(x, z) = q(z|x) π(x) with π uniform over the N training points. The
marginal KL vanishes exactly when the prior equals the aggregate posterior
(slide "Optimal prior"), which is what a learned (e.g. flow) prior tries to
approach.

This module evaluates q_agg exactly over a whole data set (O(N·M) work,
chunked so N = M = 60 000 fits in memory), splits the average KL into its two
terms from one set of samples, and provides the minibatch-weighted-sampling
estimate of log q_agg used for training (Chen et al., 2018).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from dgmjax import _checks
from dgmjax.losses import elbo as _elbo

_LOG_2PI = math.log(2.0 * math.pi)


class SurgeryTerms(NamedTuple):
  """The three terms of the ELBO-surgery identity, as scalars (nats).

  ``avg_kl == mutual_info + marginal_kl`` up to float rounding.
  """

  avg_kl: jax.Array
  mutual_info: jax.Array
  marginal_kl: jax.Array


def _check_posteriors(z: jax.Array, means: jax.Array, log_vars: jax.Array):
  for name, a in (("z", z), ("means", means), ("log_vars", log_vars)):
    _checks.check_floating(name, a)
  _checks.check_rank("means", means, 2)
  _checks.check_same_shape(means=means, log_vars=log_vars)
  _checks.check_last_dim("z", z, means.shape[-1], "the latent size of means")


def _check_chunk_size(chunk_size: int | None) -> None:
  if chunk_size is not None:
    _checks.check_int_at_least("chunk_size", chunk_size, 1)


def _pairwise_log_normal(
    z: jax.Array, means: jax.Array, log_vars: jax.Array
) -> jax.Array:
  """(M, d) x (C, d) -> (M, C) matrix of log N(z_m; μ_c, diag σ²_c).

  Written as a broadcast difference rather than the |z|² − 2zμ + |μ|² matmul
  form: the matmul form cancels catastrophically when σ² is small. In the
  forward pass XLA fuses the broadcast into the reduction, so the (M, C, d)
  tensor is not materialised (only the (M, C) result is).
  """
  precision = jnp.exp(-log_vars)
  sq = jnp.square(z[:, None, :] - means[None, :, :])
  quad = jnp.sum(sq * precision[None, :, :], axis=-1)
  log_det = jnp.sum(log_vars, axis=-1)
  return -0.5 * (z.shape[-1] * _LOG_2PI + log_det[None, :] + quad)


def _logsumexp_over_posteriors(
    z: jax.Array, means: jax.Array, log_vars: jax.Array, chunk_size: int | None
) -> jax.Array:
  """logsumexp_j log N(z_m; μ_j, σ²_j) for every row m, chunked over j."""
  n = means.shape[0]
  if chunk_size is None or chunk_size >= n:
    return jax.nn.logsumexp(_pairwise_log_normal(z, means, log_vars), axis=1)

  num_chunks = -(-n // chunk_size)
  pad = num_chunks * chunk_size - n
  # Padded posteriors get finite parameters (so no NaN reaches the gradient
  # through jnp.where) and are then masked to −∞, i.e. zero mixture weight.
  means_p = jnp.pad(means, ((0, pad), (0, 0)))
  log_vars_p = jnp.pad(log_vars, ((0, pad), (0, 0)))
  valid = jnp.arange(num_chunks * chunk_size) < n
  d = means.shape[-1]
  xs = (
      means_p.reshape(num_chunks, chunk_size, d),
      log_vars_p.reshape(num_chunks, chunk_size, d),
      valid.reshape(num_chunks, chunk_size),
  )

  # Recompute each chunk in the backward pass instead of keeping every
  # chunk's residuals (up to (M, C, d) each) alive until the backward scan.
  @jax.checkpoint
  def chunk_lse(mu, lv, ok):
    logp = jnp.where(ok[None, :], _pairwise_log_normal(z, mu, lv), -jnp.inf)
    return jax.nn.logsumexp(logp, axis=1)

  def body(acc, chunk):
    return jnp.logaddexp(acc, chunk_lse(*chunk)), None

  # The first chunk seeds the carry (rather than a constant −∞), so inside
  # shard_map the carry has the same device-varying type as the body output.
  first = jax.tree.map(lambda a: a[0], xs)
  rest = jax.tree.map(lambda a: a[1:], xs)
  total, _ = jax.lax.scan(body, chunk_lse(*first), rest)
  return total


def aggregate_posterior_log_prob(
    z: jax.Array,
    means: jax.Array,
    log_vars: jax.Array,
    *,
    chunk_size: int | None = None,
) -> jax.Array:
  """Log-density of the aggregate posterior q_agg at query points.

  log q_agg(z) = log (1/N) Σ_{j=1..N} N(z; μ_j, diag σ²_j)
               = logsumexp_j log N(z; μ_j, diag σ²_j) − log N

  The aggregate posterior of Lecture 7, slides "Theorem" and "Optimal
  prior". The N posteriors are processed ``chunk_size`` at a time with a
  running logsumexp (``lax.scan`` over fixed-shape chunks; the last chunk is
  padded with zero-weight components), so peak memory is O(M·chunk_size)
  instead of O(M·N). With M = N = 60 000 and d = 8, ``chunk_size=4096``
  needs about 1 GB of scratch memory. Under ``jax.grad`` each chunk is
  recomputed in the backward pass (``jax.checkpoint``), which then holds an
  (M, chunk_size, d) tensor (about 1.1 GB at M = 2 000, chunk 4096, d = 8);
  use a smaller ``chunk_size`` when differentiating through large M.

  Args:
    z: query points, shape ``(M, d)``.
    means: posterior means μ_j of all N data points, shape ``(N, d)``.
    log_vars: posterior log-variances, same shape as ``means``.
    chunk_size: posteriors per chunk (a static int); ``None`` evaluates all N
      at once.

  Returns:
    log q_agg(z), shape ``(M,)``.

  References:
    Hoffman & Johnson, "ELBO surgery: yet another way to carve up the
    variational evidence lower bound", NIPS 2016 Workshop on Advances in
    Approximate Bayesian Inference.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> means = jnp.array([[-1.0], [1.0]])
    >>> z = jnp.array([[-1.0], [0.0]])
    >>> print(aggregate_posterior_log_prob(z, means, jnp.zeros((2, 1))))
    [-1.4852 -1.4189]
  """
  _check_posteriors(z, means, log_vars)
  _checks.check_rank("z", z, 2)
  _check_chunk_size(chunk_size)
  n = means.shape[0]
  if n < 1:
    raise ValueError("means must hold at least one posterior (N >= 1).")
  lse = _logsumexp_over_posteriors(z, means, log_vars, chunk_size)
  return lse - math.log(n)


def elbo_surgery(
    z: jax.Array,
    means: jax.Array,
    log_vars: jax.Array,
    log_prior_fn: Callable[[jax.Array], jax.Array],
    *,
    chunk_size: int | None = None,
    axis_name: str | None = None,
) -> SurgeryTerms:
  """Monte-Carlo split of the average KL into mutual information + marginal KL.

  With z_i ~ q(z|x_i) (one or S samples per data point), all three terms are
  averages over the same samples:

    avg_kl      = mean_i [log q(z_i|x_i) − log p(z_i)]
    mutual_info = mean_i [log q(z_i|x_i) − log q_agg(z_i)]
    marginal_kl = mean_i [log q_agg(z_i) − log p(z_i)]

  so ``avg_kl = mutual_info + marginal_kl`` holds to float precision (Lecture 7,
  slides "Theorem" and "ELBO surgery"). Each summand of ``mutual_info`` is at
  most log N, because q_agg(z) ≥ q(z|x_i)/N; hence 0 ≤ I ≤ log N. I ≥ 0 holds
  for the exact mutual information and for the estimate only in expectation:
  one draw can be slightly negative when the posteriors overlap. The marginal
  KL estimate inherits the variance of the samples in the same way.

  ``log_prior_fn`` can be any log-density (a standard Gaussian, a mixture,
  a flow prior as on the slide "ELBO with flow-based VAE prior").

  Args:
    z: samples, shape ``(N, d)`` (z_i ~ q(z|x_i)) or ``(S, N, d)``.
    means: posterior means of all N data points, shape ``(N, d)``.
    log_vars: posterior log-variances, same shape as ``means``.
    log_prior_fn: ``log_prior_fn(z) -> (B,)`` for a batch ``z`` of shape
      ``(B, d)``.
    chunk_size: passed to :func:`aggregate_posterior_log_prob`.
    axis_name: when the data axis N is sharded over devices (inside
      ``shard_map``/``pmap``), the mapped axis name: every device evaluates
      q_agg against the all-gathered posteriors of the whole data set and the
      averages are taken over all devices (shards must have equal size).

  Returns:
    :class:`SurgeryTerms` of scalars ``(avg_kl, mutual_info, marginal_kl)``.

  References:
    Hoffman & Johnson, "ELBO surgery: yet another way to carve up the
    variational evidence lower bound", NIPS 2016 Workshop on Advances in
    Approximate Bayesian Inference; Tomczak & Welling, "VAE with a VampPrior",
    AISTATS 2018.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> from dgmjax.losses.elbo import log_standard_normal
    >>> means = jnp.array([[-3.0], [3.0]])
    >>> log_vars = jnp.zeros((2, 1))
    >>> terms = elbo_surgery(means, means, log_vars, log_standard_normal)
    >>> print(jnp.stack(terms))
    [4.5    0.6931 3.8069]
  """
  _check_posteriors(z, means, log_vars)
  _checks.check_rank("z", z, (2, 3))
  _check_chunk_size(chunk_size)
  if not callable(log_prior_fn):
    raise TypeError("log_prior_fn must be callable as log_prior_fn(z) -> (B,).")
  n_local, d = means.shape
  if z.shape[-2] != n_local:
    raise ValueError(
        f"z must hold one sample per posterior along axis -2: got z of shape "
        f"{z.shape} for means of shape {means.shape}."
    )

  log_q_own = _elbo.log_normal_diag(z, means, log_vars)
  flat_z = z.reshape(-1, d)
  log_p = log_prior_fn(flat_z)
  if jnp.shape(log_p) != flat_z.shape[:1]:
    raise ValueError(
        f"log_prior_fn must map z of shape {flat_z.shape} to log-densities of "
        f"shape {flat_z.shape[:1]}, got {jnp.shape(log_p)}."
    )
  log_p = log_p.reshape(z.shape[:-1])

  all_means, all_log_vars = means, log_vars
  if axis_name is not None:
    all_means = jax.lax.all_gather(means, axis_name, tiled=True)
    all_log_vars = jax.lax.all_gather(log_vars, axis_name, tiled=True)
  log_q_agg = aggregate_posterior_log_prob(
      flat_z, all_means, all_log_vars, chunk_size=chunk_size
  ).reshape(z.shape[:-1])

  def mean(x):
    m = jnp.mean(x)
    return m if axis_name is None else jax.lax.pmean(m, axis_name)

  return SurgeryTerms(
      avg_kl=mean(log_q_own - log_p),
      mutual_info=mean(log_q_own - log_q_agg),
      marginal_kl=mean(log_q_agg - log_p),
  )


def analytic_avg_kl(
    means: jax.Array, log_vars: jax.Array, *, axis_name: str | None = None
) -> jax.Array:
  """Closed-form average KL(q(z|x_i) || N(0, I)) over the data set.

  (1/N) Σ_i KL(q(z|x_i) || N(0, I)), with each KL from
  :func:`dgmjax.losses.elbo.gaussian_kl_standard`.

  The left-hand side of Lecture 7, slide "Theorem", for the standard Gaussian
  prior; a lower-variance companion to ``elbo_surgery(...).avg_kl``.

  Args:
    means: posterior means, shape ``(N, d)``.
    log_vars: posterior log-variances, same shape.
    axis_name: mapped axis to average over when N is sharded over devices.

  Returns:
    Scalar average KL.

  References:
    Hoffman & Johnson, "ELBO surgery", NIPS 2016 workshop.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> print(analytic_avg_kl(jnp.array([[0.0], [2.0]]), jnp.zeros((2, 1))))
    1.0
  """
  _checks.check_rank("means", means, 2)
  kl = jnp.mean(_elbo.gaussian_kl_standard(means, log_vars))
  return kl if axis_name is None else jax.lax.pmean(kl, axis_name)


def minibatch_aggregate_log_prob(
    z: jax.Array,
    means: jax.Array,
    log_vars: jax.Array,
    *,
    dataset_size: int,
    axis_name: str | None = None,
) -> jax.Array:
  """Minibatch-weighted-sampling (MWS) estimate of log q_agg(z_i) for training.

  log q_agg(z_i) ≈ log (1/(N·M)) Σ_{j=1..M} q(z_i|x_j)
                 = logsumexp_j log q(z_i|x_j) − log(N·M)

  with z_i ~ q(z|x_i) and the M posteriors of the current minibatch standing
  in for all N (Chen et al. 2018, appendix C.1). It makes the marginal-KL /
  total-correlation terms of Lecture 7, slide "ELBO surgery", trainable at
  O(M²) cost. The estimator is biased: on the full data set as one batch
  (M = N) it equals the exact log q_agg(z_i) − log N, because it divides by
  N·M where the mixture needs N. The offset is constant, so gradients are
  unaffected; compare values only with other MWS values.

  Args:
    z: samples z_i ~ q(z|x_i) of the minibatch, shape ``(M, d)``.
    means: the minibatch posterior means, shape ``(M, d)``.
    log_vars: the minibatch posterior log-variances, shape ``(M, d)``.
    dataset_size: N, the size of the training set (int >= 1).
    axis_name: when the batch is sharded over devices, the mapped axis name:
      the posteriors of the global batch are all-gathered and M is the global
      batch size, so the result equals the single-device estimate on the
      concatenated batch.

  Returns:
    Per-example estimates, shape ``(M,)`` (the local shard under
    ``axis_name``).

  References:
    Chen, Li, Grosse & Duvenaud, "Isolating Sources of Disentanglement in
    Variational Autoencoders", NeurIPS 2018.

  Example:
    >>> import jax.numpy as jnp
    >>> jnp.set_printoptions(precision=4)
    >>> means = jnp.array([[-1.0], [1.0]])
    >>> out = minibatch_aggregate_log_prob(
    ...     means, means, jnp.zeros((2, 1)), dataset_size=2)
    >>> print(out)
    [-2.1783 -2.1783]
  """
  _check_posteriors(z, means, log_vars)
  _checks.check_rank("z", z, 2)
  _checks.check_same_shape(z=z, means=means)
  _checks.check_int_at_least("dataset_size", dataset_size, 1)
  if axis_name is not None:
    means = jax.lax.all_gather(means, axis_name, tiled=True)
    log_vars = jax.lax.all_gather(log_vars, axis_name, tiled=True)
  m = means.shape[0]
  lse = jax.nn.logsumexp(_pairwise_log_normal(z, means, log_vars), axis=1)
  return lse - math.log(dataset_size * m)
