"""Annealed importance sampling of log p(x) for decoder-based models.

Wu et al. (2017) evaluate VAEs, GANs and GMMNs by the same estimator: for a
model ``p(x) = ∫ p(z) p(x|z) dz`` anneal from the prior to the posterior
through

  ``p_t(z) ∝ p(z) · p(x|z)^{β_t}``,  ``0 = β_0 < β_1 < … < β_T = 1``,

starting from ``z_0 ~ p(z)`` and moving each chain by a Markov transition
that leaves ``p_t`` invariant (here Hamiltonian Monte Carlo). The log weight

  ``log w = Σ_{t=1..T} (β_t − β_{t−1}) · log p(x | z_{t−1})``

has ``E[w] = p(x)`` (Neal 2001), so ``log (1/C) Σ_c w_c`` over C chains is a
stochastic lower bound on log p(x) (Jensen), tight as T grows. For a GAN,
give the generator a Gaussian observation model ``p(x|z) = N(x; G(z), σ²I)``
(σ chosen on held-out data, as Wu et al. do).

Bidirectional Monte Carlo (Grosse et al. 2015): on *simulated* data
``z* ~ p(z), x ~ p(x|z*)``, the latent ``z*`` is an exact posterior sample
of ``x``. Running the same chain backwards (β from 1 to 0) from ``z*`` gives
weights with ``E[w_rev] = 1/p(x)``, hence ``−log (1/C) Σ_c w_rev,c`` is a
stochastic *upper* bound; the gap between the two bounds measures how far
the forward estimate can be from the truth.

Transitions: ``num_leapfrog`` leapfrog steps of HMC with an identity mass
matrix, one Metropolis correction; the step size of each example is
multiplied by 1.02 after a transition whose mean acceptance probability
(over its chains) exceeded ``target_acceptance`` (0.65) and by 0.98
otherwise. Everything is one ``lax.scan`` over temperatures; chains and
examples are a batch axis of every array, so the user's functions see
``(B·C, …)`` batches.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from dgmjax import _checks

__all__ = [
    "AISResult",
    "BDMCResult",
    "ais_log_prob",
    "bdmc",
    "reverse_ais_log_prob",
    "sigmoid_schedule",
    "standard_normal_prior",
]

LogPrior = Callable[[jax.Array], jax.Array]
LogLikelihood = Callable[[jax.Array, jax.Array], jax.Array]
SamplePrior = Callable[[jax.Array, int], jax.Array]


class AISResult(NamedTuple):
  """Output of :func:`ais_log_prob` / :func:`reverse_ais_log_prob`."""

  log_prob: jax.Array  # (B,) the estimate of log p(x): lower (forward) or upper (reverse) bound
  log_weights: jax.Array  # (B, C) per-chain log w (reverse chain: log w_rev, E[w_rev] = 1/p(x))
  acceptance_rate: jax.Array  # (B,) mean HMC acceptance probability over steps and chains
  step_sizes: jax.Array  # (T, B) the leapfrog step size of each transition


class BDMCResult(NamedTuple):
  """Output of :func:`bdmc`: the sandwich ``lower ≤ log p(x) ≤ upper``."""

  lower: jax.Array  # (B,) forward AIS
  upper: jax.Array  # (B,) reverse AIS from the exact posterior sample
  forward: AISResult
  reverse: AISResult


def sigmoid_schedule(num_steps: int, *, rad: float = 4.0) -> jax.Array:
  """Inverse temperatures β_0 = 0 < … < β_T = 1 spaced by a sigmoid.

  ``β̃_t = σ(rad · (2t/T − 1))``, ``β_t = (β̃_t − β̃_0)/(β̃_T − β̃_0)``: small
  steps near both ends, where ``log p(x|z)`` changes fastest relative to
  its weight (Grosse et al. 2015; used by Wu et al. 2017).

  Args:
    num_steps: T >= 1 intermediate transitions.
    rad: steepness > 0 (4 in the papers).

  Returns:
    (T + 1,) float32, increasing, from exactly 0 to exactly 1.

  Example:
    >>> print([round(float(b), 3) for b in sigmoid_schedule(4)])
    [0.0, 0.105, 0.5, 0.895, 1.0]
  """
  _checks.check_int_at_least("num_steps", num_steps, 1)
  _checks.check_positive("rad", rad)
  t = jnp.linspace(-rad, rad, num_steps + 1)
  s = jax.nn.sigmoid(t)
  return ((s - s[0]) / (s[-1] - s[0])).at[0].set(0.0).at[-1].set(1.0)


def standard_normal_prior(latent_dim: int) -> tuple[LogPrior, SamplePrior]:
  """``(log_prior, sample_prior)`` of N(0, I) on ``latent_dim`` dimensions.

  Example:
    >>> log_prior, sample_prior = standard_normal_prior(2)
    >>> z = sample_prior(jax.random.key(0), 3)
    >>> print(z.shape, round(float(log_prior(jnp.zeros((1, 2)))[0]), 4))  # −log 2π
    (3, 2) -1.8379
  """
  _checks.check_int_at_least("latent_dim", latent_dim, 1)

  def log_prior(z):
    return -0.5 * jnp.sum(z * z, axis=-1) - 0.5 * latent_dim * math.log(2 * math.pi)

  def sample_prior(key, n):
    return jax.random.normal(key, (n, latent_dim))

  return log_prior, sample_prior


def _hmc(key, z, x_rep, beta, step, log_prior, log_likelihood, num_leapfrog):
  """One HMC transition of every chain at inverse temperature ``beta``.

  ``z``: (B, C, D); ``beta``, ``step``: scalars broadcast to chains; returns
  the new ``z``, its ``log p(x|z)``, and the (B, C) acceptance probabilities.
  """
  b, c, d = z.shape

  def terms(zz):
    flat = zz.reshape(b * c, d)
    return log_prior(flat).reshape(b, c), log_likelihood(flat, x_rep).reshape(b, c)

  def log_target_and_grad(zz):
    def total(zz):
      lp, ll = terms(zz)
      # Chains are independent, so the gradient of the sum is each chain's.
      return jnp.sum(lp + beta * ll), (lp, ll)

    (_, (lp, ll)), g = jax.value_and_grad(total, has_aux=True)(zz)
    return lp + beta * ll, ll, g

  k_mom, k_acc = jax.random.split(key)
  eps = step[:, None, None]
  p0 = jax.random.normal(k_mom, z.shape, z.dtype)
  lt0, ll0, g0 = log_target_and_grad(z)

  def leapfrog(carry, _):
    zz, p, _, _, g = carry
    p = p + 0.5 * eps * g
    zz = zz + eps * p
    lt, ll, g = log_target_and_grad(zz)
    p = p + 0.5 * eps * g
    return (zz, p, lt, ll, g), None

  (z1, p1, lt1, ll1, _), _ = jax.lax.scan(
      leapfrog, (z, p0, lt0, ll0, g0), None, length=num_leapfrog)
  log_ratio = (lt1 - 0.5 * jnp.sum(p1 * p1, -1)) - (lt0 - 0.5 * jnp.sum(p0 * p0, -1))
  # A diverged trajectory (NaN/inf energy) is rejected, not propagated.
  log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
  accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
  accept = jnp.log(jax.random.uniform(k_acc, accept_prob.shape)) < log_ratio
  z_new = jnp.where(accept[..., None], z1, z)
  return z_new, jnp.where(accept, ll1, ll0), accept_prob


@functools.partial(
    jax.jit,
    static_argnames=("log_prior", "log_likelihood", "num_leapfrog", "target_acceptance",
                     "adapt"),
)
def _anneal(key, z0, x, betas, steps, *, log_prior, log_likelihood, num_leapfrog,
            target_acceptance, adapt):
  """Run chains ``z0`` (B, C, D) through ``betas``; return the AIS pieces.

  ``steps`` (T, B): the step size of every transition; with ``adapt`` only
  ``steps[0]`` is used and later ones follow the acceptance rule.
  """
  b, c, _ = z0.shape
  x_rep = jnp.repeat(x, c, axis=0)  # (B·C, …), example-major like z.reshape
  ll0 = log_likelihood(z0.reshape(b * c, -1), x_rep).reshape(b, c)
  keys = jax.random.split(key, betas.shape[0] - 1)

  def body(carry, xs):
    z, ll, log_w, step, acc_sum = carry
    step_key, beta_prev, beta, fixed_step = xs
    step = step if adapt else fixed_step
    log_w = log_w + (beta - beta_prev) * ll
    z, ll, acc = _hmc(step_key, z, x_rep, beta, step, log_prior, log_likelihood, num_leapfrog)
    mean_acc = jnp.mean(acc, axis=1)
    next_step = step * jnp.where(mean_acc > target_acceptance, 1.02, 0.98)
    return (z, ll, log_w, next_step, acc_sum + mean_acc), step

  init = (z0, ll0, jnp.zeros((b, c), ll0.dtype), steps[0], jnp.zeros((b,), ll0.dtype))
  (_, _, log_w, _, acc_sum), used = jax.lax.scan(
      body, init, (keys, betas[:-1], betas[1:], steps))
  return log_w, acc_sum / (betas.shape[0] - 1), used


def _check_common(x, num_steps, num_chains, num_leapfrog, step_size, target_acceptance,
                  log_prior, log_likelihood):
  _checks.check_floating("x", x)
  _checks.check_min_rank("x", x, 1)
  if x.shape[0] < 1:
    raise ValueError(f"x must hold at least one example, got shape {x.shape}.")
  _checks.check_int_at_least("num_steps", num_steps, 1)
  _checks.check_int_at_least("num_chains", num_chains, 1)
  _checks.check_int_at_least("num_leapfrog", num_leapfrog, 1)
  _checks.check_positive("step_size", step_size)
  _checks.check_in_range("target_acceptance", target_acceptance, 0.0, 1.0, closed=False)
  for name, fn in (("log_prior", log_prior), ("log_likelihood", log_likelihood)):
    if not callable(fn):
      raise TypeError(f"{name} must be callable.")


def _check_latents(name, z, x, num_chains, log_prior, log_likelihood):
  """``z``: (B, C, D) floating; the user's functions must return (B·C,)."""
  _checks.check_floating(name, z)
  _checks.check_rank(name, z, 3)
  if z.shape[0] != x.shape[0]:
    raise ValueError(f"{name} must have {x.shape[0]} rows (one per example of x), got {z.shape}.")
  flat = jax.ShapeDtypeStruct((z.shape[0] * num_chains, z.shape[-1]), z.dtype)
  x_rep = jax.ShapeDtypeStruct((x.shape[0] * num_chains,) + x.shape[1:], x.dtype)
  want = (flat.shape[0],)
  got = jax.eval_shape(log_prior, flat).shape
  if got != want:
    raise ValueError(f"log_prior(z) must map z of shape {flat.shape} to {want}, got {got}.")
  got = jax.eval_shape(log_likelihood, flat, x_rep).shape
  if got != want:
    raise ValueError(
        f"log_likelihood(z, x) must map z {flat.shape} and x {x_rep.shape} to {want}, got {got}."
    )


def ais_log_prob(
    key: jax.Array,
    x: jax.Array,
    *,
    log_prior: LogPrior,
    log_likelihood: LogLikelihood,
    sample_prior: SamplePrior,
    num_steps: int = 500,
    num_chains: int = 16,
    num_leapfrog: int = 10,
    step_size: float | jax.Array = 0.05,
    target_acceptance: float = 0.65,
    adapt_step_size: bool = True,
    schedule: jax.Array | None = None,
) -> AISResult:
  """AIS estimate of log p(x) per example (a stochastic lower bound).

  ``log p̂(x) = logmeanexp_c Σ_t (β_t − β_{t−1}) log p(x|z_{t−1}^{(c)})`` with
  ``z_0^{(c)} ~ p(z)`` and one HMC transition targeting
  ``p_t ∝ p(z) p(x|z)^{β_t}`` per temperature. ``E[exp log p̂] = p(x)``, so
  ``E[log p̂] ≤ log p(x)``; the gap vanishes as ``num_steps`` grows.

  Args:
    key: PRNG key.
    x: (B, …) examples, floating.
    log_prior: ``log p(z)`` for z of shape (N, D) -> (N,).
    log_likelihood: ``log p(x|z)`` for z (N, D) and x (N, …) -> (N,);
      differentiable in z. Both are called with N = B·C, each example's
      chains consecutive.
    sample_prior: ``sample_prior(key, n) -> (n, D)`` draws from p(z).
    num_steps: T temperatures after β_0 = 0 (Wu et al. use up to 10 000).
    num_chains: C chains per example.
    num_leapfrog: leapfrog steps per HMC transition (10 in Wu et al.).
    step_size: leapfrog step size: the initial one (a scalar) when
      adapting, else a scalar, (T,) or (T, B) array of per-transition sizes.
    target_acceptance: the acceptance probability the step size is steered
      to, in (0, 1).
    adapt_step_size: steer each example's step size after every transition
      (×1.02 if the mean acceptance probability of its chains exceeded
      ``target_acceptance``, else ×0.98). The kernel then depends on the
      chains' past, which AIS theory does not cover; the effect is small
      (each chain moves the rule by 1/C) but with ``False`` the estimate
      is exactly unbiased in ``p(x)``.
    schedule: optional (T + 1,) increasing β from 0 to 1; default
      :func:`sigmoid_schedule`.

  Returns:
    An :class:`AISResult`; ``step_sizes`` can be passed to
    :func:`reverse_ais_log_prob` or a later non-adaptive run.

  References:
    Neal, `Annealed importance sampling
    <https://arxiv.org/abs/physics/9803008>`_, Statistics and Computing 2001;
    Wu, Burda, Salakhutdinov & Grosse, `On the Quantitative Analysis of
    Decoder-Based Generative Models <https://arxiv.org/abs/1611.04273>`_,
    ICLR 2017.

  Example:
    >>> # z ~ N(0, 1), x | z ~ N(z, 1): the marginal is N(0, 2).
    >>> log_prior, sample_prior = standard_normal_prior(1)
    >>> def log_lik(z, x):
    ...   return -0.5 * jnp.sum((x - z) ** 2, -1) - 0.5 * math.log(2 * math.pi)
    >>> x = jnp.array([[0.0], [1.0]])
    >>> out = ais_log_prob(jax.random.key(0), x, log_prior=log_prior,
    ...                    log_likelihood=log_lik, sample_prior=sample_prior,
    ...                    num_steps=200, num_chains=64)
    >>> truth = -0.5 * x[:, 0] ** 2 / 2 - 0.5 * math.log(2 * math.pi * 2)
    >>> print(bool(jnp.all(jnp.abs(out.log_prob - truth) < 0.05)))  # ~4 s.e.
    True
  """
  _check_common(x, num_steps, num_chains, num_leapfrog, step_size, target_acceptance,
                log_prior, log_likelihood)
  if not callable(sample_prior):
    raise TypeError("sample_prior must be callable as sample_prior(key, n).")
  betas = _schedule(schedule, num_steps)
  k_init, k_run = jax.random.split(key)
  b = x.shape[0]
  z0 = sample_prior(k_init, b * num_chains)
  if z0.ndim != 2 or z0.shape[0] != b * num_chains:
    raise ValueError(
        f"sample_prior(key, {b * num_chains}) must return ({b * num_chains}, D), got {z0.shape}."
    )
  z0 = z0.reshape(b, num_chains, -1)
  _check_latents("sample_prior(key, n)", z0, x, num_chains, log_prior, log_likelihood)
  steps = _step_sizes(step_size, betas.shape[0] - 1, b, z0.dtype, adapt_step_size)
  log_w, acc, used = _anneal(
      k_run, z0, x, betas, steps, log_prior=log_prior, log_likelihood=log_likelihood,
      num_leapfrog=num_leapfrog, target_acceptance=float(target_acceptance),
      adapt=bool(adapt_step_size))
  lpx = jax.nn.logsumexp(log_w, axis=1) - math.log(num_chains)
  return AISResult(lpx, log_w, acc, used)


def _step_sizes(step_size, num_transitions, batch, dtype, adapt):
  """Broadcast a scalar, (T,) or (T, B) step size to (T, B)."""
  arr = jnp.asarray(step_size, dtype)
  if adapt and arr.ndim != 0:
    raise ValueError(
        f"step_size must be a scalar when adapt_step_size=True, got shape {arr.shape}."
    )
  if arr.ndim == 1:
    arr = arr[:, None]
  if arr.ndim > 2 or (arr.ndim >= 1 and arr.shape[0] != num_transitions) or (
      arr.ndim == 2 and arr.shape[1] not in (1, batch)):
    raise ValueError(
        f"step_size must be a scalar, ({num_transitions},) or ({num_transitions}, {batch}), "
        f"got shape {arr.shape}."
    )
  _checks.check_positive("step_size", step_size)
  return jnp.broadcast_to(arr, (num_transitions, batch))


def _schedule(schedule, num_steps):
  if schedule is None:
    return sigmoid_schedule(num_steps)
  betas = jnp.asarray(schedule)
  _checks.check_floating("schedule", betas)
  _checks.check_rank("schedule", betas, 1)
  if betas.shape[0] < 2:
    raise ValueError(f"schedule must hold at least β_0 = 0 and β_T = 1, got {betas.shape}.")
  return betas


def reverse_ais_log_prob(
    key: jax.Array,
    x: jax.Array,
    z_posterior: jax.Array,
    *,
    log_prior: LogPrior,
    log_likelihood: LogLikelihood,
    num_steps: int = 500,
    num_chains: int = 16,
    num_leapfrog: int = 10,
    step_size: float | jax.Array = 0.05,
    target_acceptance: float = 0.65,
    adapt_step_size: bool = True,
    schedule: jax.Array | None = None,
    step_sizes: jax.Array | None = None,
) -> AISResult:
  """Reverse AIS from exact posterior samples: a stochastic upper bound.

  Every chain starts at ``z_posterior`` (an exact draw from ``p(z|x)``; on
  simulated data, the latent that generated x) and anneals β from 1 to 0:
  ``log w_rev = Σ_t (β_{t−1} − β_t) log p(x|z_t)`` along the reversed
  schedule, ``E[w_rev] = 1/p(x)``, and ``log_prob = −logmeanexp_c log w_rev``
  satisfies ``E[log_prob] ≥ log p(x)``. ``log_weights`` holds the per-chain
  ``log w_rev``.

  Args:
    key: PRNG key.
    x: (B, …) simulated examples.
    z_posterior: (B, D) exact posterior samples, one per example.
    log_prior, log_likelihood, num_steps, num_chains, num_leapfrog,
      step_size, target_acceptance, adapt_step_size, schedule: as in
      :func:`ais_log_prob` (``schedule`` in forward order; it is run
      backwards).
    step_sizes: optional (T, B) step sizes of a forward run
      (``AISResult.step_sizes``), in forward order: the transition at each
      β reuses the forward chain's step size there, without adaptation.
      They do not depend on the reverse chain, so its bound is exact in
      expectation (what :func:`bdmc` does).

  Returns:
    An :class:`AISResult` whose ``log_prob`` is the upper bound.

  References:
    Grosse, Ghahramani & Adams, `Sandwiching the marginal likelihood using
    bidirectional Monte Carlo <https://arxiv.org/abs/1511.02543>`_, 2015;
    Wu et al., ICLR 2017, section 4.

  Example:
    >>> log_prior, _ = standard_normal_prior(1)
    >>> log_lik = lambda z, x: -0.5 * jnp.sum((x - z) ** 2, -1) - 0.5 * math.log(2 * math.pi)
    >>> out = reverse_ais_log_prob(jax.random.key(1), jnp.array([[0.3]]), jnp.array([[0.1]]),
    ...                            log_prior=log_prior, log_likelihood=log_lik, num_steps=100)
    >>> truth = -0.5 * 0.3 ** 2 / 2 - 0.5 * math.log(2 * math.pi * 2)
    >>> print(bool(abs(float(out.log_prob[0]) - truth) < 0.02))
    True
  """
  _check_common(x, num_steps, num_chains, num_leapfrog, step_size, target_acceptance,
                log_prior, log_likelihood)
  _checks.check_rank("z_posterior", z_posterior, 2)
  z0 = jnp.repeat(jnp.asarray(z_posterior)[:, None, :], num_chains, axis=1)
  _check_latents("z_posterior", z0, x, num_chains, log_prior, log_likelihood)
  betas = _schedule(schedule, num_steps)[::-1]
  b, num = x.shape[0], betas.shape[0] - 1
  if step_sizes is not None:
    fwd = _step_sizes(step_sizes, num, b, z0.dtype, False)
    # Reverse transition s targets β_{T−s}, where the forward chain's
    # transition t = T − s used fwd[T−s−1]; the last one (at β_0 = 0) does
    # not enter the weight.
    steps, adapt = jnp.concatenate([fwd[:-1][::-1], fwd[:1]]), False
  else:
    steps = _step_sizes(step_size, num, b, z0.dtype, adapt_step_size)
    adapt = bool(adapt_step_size)
  log_w, acc, used = _anneal(
      key, z0, x, betas, steps, log_prior=log_prior, log_likelihood=log_likelihood,
      num_leapfrog=num_leapfrog, target_acceptance=float(target_acceptance), adapt=adapt)
  upper = -(jax.nn.logsumexp(log_w, axis=1) - math.log(num_chains))
  return AISResult(upper, log_w, acc, used)


def bdmc(
    key: jax.Array,
    x: jax.Array,
    z_posterior: jax.Array,
    *,
    log_prior: LogPrior,
    log_likelihood: LogLikelihood,
    sample_prior: SamplePrior,
    **kwargs,
) -> BDMCResult:
  """Bidirectional Monte Carlo: forward and reverse AIS on simulated data.

  Simulate ``z* ~ p(z)``, ``x ~ p(x|z*)`` and pass ``z_posterior = z*``. The
  forward chain (:func:`ais_log_prob`) bounds log p(x) from below and the
  reverse chain (:func:`reverse_ais_log_prob`) from above, both in
  expectation; ``upper − lower`` bounds the error of the forward estimate on
  data like this (Grosse et al. 2015). The keyword arguments (``num_steps``
  etc.) go to both chains; the reverse chain reuses the forward chain's
  adapted step sizes (``step_sizes``) instead of adapting on its own
  states.

  Returns:
    A :class:`BDMCResult`.

  Example:
    >>> log_prior, sample_prior = standard_normal_prior(1)
    >>> log_lik = lambda z, x: -0.5 * jnp.sum((x - z) ** 2, -1) - 0.5 * math.log(2 * math.pi)
    >>> z_star = jnp.array([[0.5]])
    >>> x = z_star + jnp.array([[-0.2]])  # a draw of x | z*
    >>> out = bdmc(jax.random.key(0), x, z_star, log_prior=log_prior,
    ...            log_likelihood=log_lik, sample_prior=sample_prior, num_steps=5)
    >>> print(bool(out.lower[0] <= out.upper[0]))  # 5 steps: a visible gap
    True
  """
  k_fwd, k_rev = jax.random.split(key)
  forward = ais_log_prob(k_fwd, x, log_prior=log_prior, log_likelihood=log_likelihood,
                         sample_prior=sample_prior, **kwargs)
  kwargs.pop("adapt_step_size", None)
  kwargs.pop("step_size", None)
  reverse = reverse_ais_log_prob(k_rev, x, z_posterior, log_prior=log_prior,
                                 log_likelihood=log_likelihood,
                                 step_sizes=forward.step_sizes, **kwargs)
  return BDMCResult(forward.log_prob, reverse.log_prob, forward, reverse)
