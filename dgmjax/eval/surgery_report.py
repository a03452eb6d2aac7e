"""ELBO surgery of a trained Gaussian-encoder model over a whole data split.

Lecture 7, slides "Theorem", "ELBO surgery" and "ELBO revisiting": with the
exact aggregate posterior q_agg(z) = (1/N) Σ_i q(z|x_i) of the N points,

  (1/N) Σ_i KL(q(z|x_i) || p(z)) = I_q[x, z] + KL(q_agg(z) || p(z)),

so the average KL splits into the mutual information (≤ log N) and the
marginal KL, the only term a better prior can shrink.

A model is any object with ``encode(params, x) -> (mean, log_var)``,
``log_likelihood(params, z, x)`` for z ``(S, B, d)`` -> ``(S, B)`` and
``log_prior(params, z) -> z.shape[:-1]``, such as
:class:`dgmjax.models.vae.VAE`. Models are static arguments of compiled
functions, so they must be hashable (frozen dataclasses are).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.data.loader import padded_batches
from dgmjax.eval import example_keys, likelihood
from dgmjax.losses import surgery


@functools.partial(jax.jit, static_argnames=("model", "num_samples"))
def _posterior_draws(model, params, x, key, num_samples, index):
  return posterior_draws(model, params, x, key, num_samples=num_samples, index=index)


@functools.partial(jax.jit, static_argnames=("model",))
def _encode(model, params, x):
  return model.encode(params, x)


@functools.partial(jax.jit, static_argnames=("model",))
def _log_prior(model, params, z):
  return model.log_prior(params, z)


@functools.partial(jax.jit, static_argnames=("model", "chunk_size"))
def _surgery_terms(model, params, z, means, log_vars, chunk_size):
  return surgery.elbo_surgery(z, means, log_vars, lambda zz: model.log_prior(params, zz),
                              chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("model", "k", "chunk"))
def _iwae(model, params, x, key, k, chunk, index):
  return iwae(model, params, x, key, num_samples=k, chunk_size=chunk, index=index)


def iwae(model, params, x: jax.Array, key: jax.Array, *, num_samples: int,
         chunk_size: int, index: jax.Array | None = None) -> jax.Array:
  """IWAE-k lower bound on log p(x) per example, with q(z|x) as the proposal.

  Args:
    model: a Gaussian-encoder model (see :func:`split_report`).
    params: its parameters.
    x: (B, H, W, C) images.
    key: PRNG key.
    num_samples: k.
    chunk_size: importance samples evaluated at once.
    index: (B,) positions of the examples in their split; each example's
      samples then depend on ``key`` and its index only (any batching gives
      the same bound). Default: 0..B-1.

  Returns:
    (B,) values of L_k(x).
  """
  if index is None:
    index = jnp.arange(x.shape[0])

  def one(xi, ki):
    mean, log_var = model.encode(params, xi[None])
    return likelihood.importance_log_marginal(
        lambda z: model.log_likelihood(params, z, xi[None]), mean, log_var, ki,
        num_samples=num_samples, chunk_size=chunk_size,
        log_prior=lambda z: model.log_prior(params, z))[0]

  return jax.vmap(one)(x, example_keys(key, index))


def posterior_draws(model, params, x: jax.Array, key: jax.Array, *,
                    num_samples: int = 1, index: jax.Array | None = None) -> dict[str, jax.Array]:
  """What the surgery terms need of one batch, per example (jittable).

  With ``index`` (each example's position in its split) the noise of an
  example is a function of ``key`` and its index alone, so a split gives the
  same draws in any batching.

  Returns ``{"mean", "log_var"}`` (B, d) of q(z|x), ``"z"`` (B, S, d) draws
  z ~ q(z|x) and ``"rec"`` (B, S) = log p(x|z) at them.
  """
  mean, log_var = model.encode(params, x)
  if index is None:
    index = jnp.arange(x.shape[0])
  eps = jax.vmap(lambda k: jax.random.normal(k, (num_samples, mean.shape[-1]), mean.dtype))(
      example_keys(key, index))
  z = mean[:, None] + jnp.exp(0.5 * log_var)[:, None] * eps
  rec = model.log_likelihood(params, jnp.moveaxis(z, 1, 0), x)
  return {"mean": mean, "log_var": log_var, "z": z, "rec": jnp.moveaxis(rec, 0, 1)}


def surgery_from_draws(model, params, draws: dict, *, chunk_size: int = 1024) -> dict[str, float]:
  """The ELBO-surgery terms of a whole split from its :func:`posterior_draws`.

  ``draws`` holds every example of the split (N rows); q_agg is the exact
  mixture of all N posteriors. Returns ``rec``, ``avg_kl``, ``mutual_info``,
  ``marginal_kl``, ``elbo``, ``log_n`` and ``n``, as in :func:`split_report`.
  """
  z = jnp.moveaxis(jnp.asarray(draws["z"]), 1, 0)
  n = int(z.shape[1])
  terms = jax.device_get(_surgery_terms(model, params, z, jnp.asarray(draws["mean"]),
                                        jnp.asarray(draws["log_var"]), chunk_size))
  out = {
      "rec": float(np.mean(draws["rec"])),
      "avg_kl": float(terms.avg_kl),
      "mutual_info": float(terms.mutual_info),
      "marginal_kl": float(terms.marginal_kl),
      "log_n": math.log(n),
      "n": n,
  }
  out["elbo"] = out["rec"] - out["avg_kl"]
  return out


def _batches(images: np.ndarray, batch_size: int):
  """(padded batch, number of real rows) over a whole split, one compiled shape."""
  for batch, mask in padded_batches({"x": images}, batch_size):
    yield batch["x"], int(mask.sum())


def split_report(
    model,
    params,
    images: np.ndarray,
    key: jax.Array,
    *,
    num_samples: int = 1,
    iwae_k: int = 1000,
    iwae_chunk: int = 100,
    batch_size: int = 500,
    max_decoded: int = 50_000,
    surgery_chunk: int = 1024,
) -> dict[str, float]:
  """ELBO surgery and IWAE-k of a trained model over a whole data split.

  With z_i ~ q(z|x_i) (``num_samples`` per point, the same draws for every
  term) and the exact q_agg = (1/N) Σ_j q(z|x_j) over all N points:

    rec         = mean_i log p(x_i|z_i)                   (RL)
    avg_kl      = mean_i [log q(z_i|x_i) − log p(z_i)]
    mutual_info = mean_i [log q(z_i|x_i) − log q_agg(z_i)]   ≤ log N
    marginal_kl = mean_i [log q_agg(z_i) − log p(z_i)]
    elbo        = rec − avg_kl,   avg_kl = mutual_info + marginal_kl
    iwae        = mean_i L_k(x_i)  (a lower bound on mean log p(x_i))

  Lecture 7, slides "ELBO surgery" and "ELBO revisiting".

  Args:
    model: any object with ``encode(params, x) -> (mean, log_var)`` (a
      diagonal-Gaussian q), ``log_likelihood(params, z, x)`` for z of shape
      ``(k, B, d)`` -> ``(k, B)``, and ``log_prior(params, z) -> z.shape[:-1]``;
      e.g. a :class:`dgmjax.models.vae.VAE`. It is a static argument of compiled functions,
      so it must be hashable; equal :class:`VAE` objects share compilations.
    params: the model's parameters.
    images: the whole split, ``(N, H, W, C)`` floats in the model's format.
    key: PRNG key; the figures are a deterministic function of it.
    num_samples: z samples per point for the surgery terms.
    iwae_k: importance samples per point for the IWAE bound (0 skips it).
    iwae_chunk: importance samples evaluated at once.
    batch_size: images per encoder pass.
    max_decoded: cap on images decoded at once in the IWAE pass (memory).
    surgery_chunk: posteriors per chunk when evaluating q_agg.

  Returns:
    ``{"rec", "avg_kl", "mutual_info", "marginal_kl", "elbo", "iwae",
    "log_n", "n", "iwae_k"}`` as floats (``iwae`` absent when ``iwae_k=0``).
  """
  images = np.asarray(images, np.float32)
  n = len(images)
  if n < 1:
    raise ValueError("images must hold at least one example.")
  k_sample, k_iwae = key, jax.random.fold_in(key, 1)
  parts, bs = [], min(batch_size, n)
  for i, (x, real) in enumerate(_batches(images, bs)):
    index = jnp.minimum(jnp.arange(i * bs, (i + 1) * bs), n - 1)
    d = jax.device_get(_posterior_draws(model, params, jnp.asarray(x), k_sample, num_samples,
                                        index))
    parts.append({k: v[:real] for k, v in d.items()})
  draws = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  out = surgery_from_draws(model, params, draws, chunk_size=surgery_chunk)
  if iwae_k:
    chunk = min(iwae_chunk, iwae_k)
    ibs = max(1, min(n, batch_size, max_decoded // chunk))
    total = 0.0
    for i, (x, real) in enumerate(_batches(images, ibs)):
      index = jnp.minimum(jnp.arange(i * ibs, (i + 1) * ibs), n - 1)
      bound = _iwae(model, params, jnp.asarray(x), k_iwae, iwae_k, chunk, index)
      total += float(np.sum(np.asarray(bound)[:real], dtype=np.float64))
    out["iwae"] = total / n
    out["iwae_k"] = iwae_k
  return out


def posterior_params(model, params, images: np.ndarray, *, batch_size: int = 500):
  """(means, log_vars) of q(z|x_i) for every image of a split, as NumPy."""
  means, log_vars = [], []
  for x, real in _batches(np.asarray(images, np.float32), min(batch_size, len(images))):
    m, lv = jax.device_get(_encode(model, params, jnp.asarray(x)))
    means.append(m[:real])
    log_vars.append(lv[:real])
  return np.concatenate(means), np.concatenate(log_vars)


# ----------------------------------------------------------------------------
# The 2-D latent picture: q_agg against the prior
# ----------------------------------------------------------------------------
def latent_density_grids(model, params, means: np.ndarray, log_vars: np.ndarray, *,
                         size: int = 160, extent: float | None = None):
  """log q_agg(z) and log p(z) on a square grid over a 2-D latent space.

  ``means``/``log_vars`` (N, 2) are the posteriors of the N points whose
  mixture is q_agg (e.g. :func:`posterior_params` of the training split).
  Returns ``(log_q_agg, log_prior, extent)`` with two ``(size, size)`` arrays
  (row 0 at z₂ = +extent) and the half-width of the square.
  """
  if model.latent_dim != 2:
    raise ValueError(f"the latent picture needs latent_dim == 2, got {model.latent_dim}.")
  means, log_vars = np.asarray(means), np.asarray(log_vars)
  if extent is None:
    reach = np.abs(means) + 2.0 * np.exp(0.5 * log_vars)
    extent = float(max(3.5, np.percentile(reach, 99.5)))
  axis = np.linspace(-extent, extent, size, dtype=np.float32)
  zx, zy = np.meshgrid(axis, axis[::-1])
  grid = jnp.asarray(np.stack([zx.ravel(), zy.ravel()], axis=1))
  log_q = jax.jit(functools.partial(surgery.aggregate_posterior_log_prob, chunk_size=1024))(
      grid, jnp.asarray(means), jnp.asarray(log_vars))
  log_p = _log_prior(model, params, grid)
  return (np.asarray(log_q).reshape(size, size), np.asarray(log_p).reshape(size, size),
          extent)


def surgery_table(table: dict[str, dict[str, float]], title: str = "") -> str:
  """Markdown table of :func:`split_report` results, one row per split.

  Example:
    >>> from dgmjax.eval.surgery_report import surgery_table
    >>> row = {"rec": -80.0, "avg_kl": 24.0, "mutual_info": 6.0, "marginal_kl": 18.0,
    ...        "elbo": -104.0, "log_n": 6.2, "n": 500}
    >>> print(surgery_table({"test": row}).splitlines()[-1])
    | test (N=500) | -80.000 | 24.000 | 6.000 | 18.000 | -104.000 | – | 6.200 | – |
  """
  cols = [("rec", "RL"), ("avg_kl", "avg KL"), ("mutual_info", "MI"),
          ("marginal_kl", "marginal KL"), ("elbo", "ELBO"), ("iwae", "IWAE-k"),
          ("log_n", "log N")]
  lines = [f"**{title}**\n"] if title else []
  lines.append("| split | " + " | ".join(c for _, c in cols) + " | k |")
  lines.append("|---" * (len(cols) + 2) + "|")
  for split, r in table.items():
    vals = [f"{r[k]:.3f}" if k in r else "–" for k, _ in cols]
    lines.append(f"| {split} (N={r['n']}) | " + " | ".join(vals) + f" | {r.get('iwae_k', '–')} |")
  return "\n".join(lines) + "\n"
