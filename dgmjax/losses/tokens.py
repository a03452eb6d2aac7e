"""Losses for priors over discrete tokens: cross-entropy and MaskGIT masking.

Lecture 7, DALL-E slide: "Since latent space is discrete we could train
autoregressive transformers in it." A VQ-VAE or dVAE turns an image into a
grid of token indices; flattened in raster order it is a sequence
``x = (x_1, ..., x_N)`` over a vocabulary of ``V`` codes, and a prior is
trained by maximum likelihood on those sequences:

* autoregressive (DALL-E, VQ-VAE's PixelCNN prior):
  ``-log p(x) = -sum_i log p(x_i | x_<i)``, every position counts;
* masked (MaskGIT): draw a ratio ``r ~ U(0, 1)``, hide ``ceil(gamma(r) N)``
  positions with a mask token, and score only the hidden positions,
  ``-sum_{i in M} log p(x_i | x_unmasked)``, ``gamma(r) = cos(pi r / 2)``.

Positions are on axis 1 and classes on the last axis; every loss returns one
value per example (the caller reduces over the batch).

Numerics: the cross-entropy is ``logsumexp(logits) - logits[target]`` via
``log_softmax``, so logits of ``-inf`` at classes other than the target (a
filtered vocabulary) give a finite loss and a finite gradient; positions left
out by the mask are removed with ``where`` before the sum, so whatever they
hold (even ``inf``) cannot reach the result.

References:
  Ramesh et al., `Zero-Shot Text-to-Image Generation
  <https://arxiv.org/abs/2102.12092>`_, 2021 (DALL-E).
  Chang et al., `MaskGIT: Masked Generative Image Transformer
  <https://arxiv.org/abs/2202.04200>`_, 2022.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks

__all__ = [
    "token_cross_entropy",
    "cosine_schedule",
    "num_masked",
    "maskgit_mask",
    "ordered_nll",
]


def token_cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    *,
    mask: jax.Array | None = None,
    reduction: str = "mean",
) -> jax.Array:
  """Per-example cross-entropy of token sequences, optionally masked.

  ``l_i = -log softmax(logits_i)[x_i] = logsumexp_v logits_iv - logits_ix_i``
  per position, then per example ``sum_i m_i l_i`` (``reduction="sum"``) or
  ``sum_i m_i l_i / sum_i m_i`` (``reduction="mean"``, the mean over the
  positions that count; 0 for an example where none counts). Without ``mask``
  every position counts (``m_i = 1``). In nats; divide the mean by ``log 2``
  for bits per token.

  Lecture 7, DALL-E slide (an autoregressive prior over the dVAE tokens);
  for MaskGIT pass the masked positions as ``mask`` (Chang et al., eq. 1).

  Args:
    logits: ``(B, N, V)`` floating logits (unnormalised).
    targets: ``(B, N)`` integer tokens in ``[0, V)``.
    mask: optional ``(B, N)`` boolean (or 0/1, or non-negative weights) of
      the positions that count.
    reduction: ``"mean"`` or ``"sum"`` over positions.

  Returns:
    ``(B,)`` loss per example, dtype of ``logits``.

  References:
    Chang et al., `MaskGIT: Masked Generative Image Transformer
    <https://arxiv.org/abs/2202.04200>`_, 2022.

  Example:
    >>> logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
    >>> targets = jnp.array([[0, 2]])
    >>> print(jnp.round(token_cross_entropy(logits, targets), 4))
    [0.4581]
    >>> mask = jnp.array([[False, True]])
    >>> loss = token_cross_entropy(logits, targets, mask=mask, reduction="sum")
    >>> print(f"{float(loss[0]):.4f}")
    0.2231
    >>> blocked = jnp.array([[[-jnp.inf, 0.0, -jnp.inf]]])
    >>> print(token_cross_entropy(blocked, jnp.array([[1]])) == 0)
    [ True]
  """
  _checks.check_floating("logits", logits)
  _checks.check_rank("logits", logits, 3)
  _checks.check_integer("targets", targets)
  _checks.check_rank("targets", targets, 2)
  if jnp.shape(targets) != jnp.shape(logits)[:2]:
    raise ValueError(
        f"targets must have shape logits.shape[:2] = {jnp.shape(logits)[:2]},"
        f" got {jnp.shape(targets)}."
    )
  if reduction not in ("mean", "sum"):
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
  log_p = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
  if mask is None:
    total = jnp.sum(nll, axis=1)
    return total / nll.shape[1] if reduction == "mean" else total
  _checks.check_same_shape(targets=targets, mask=mask)
  weights = jnp.asarray(mask).astype(nll.dtype)
  # where, not a product: 0 * inf at an excluded position would be nan.
  total = jnp.sum(jnp.where(weights != 0, nll * weights, 0.0), axis=1)
  if reduction == "sum":
    return total
  return total / jnp.maximum(jnp.sum(weights, axis=1), 1e-12)


def cosine_schedule(ratio: Any) -> jax.Array:
  """MaskGIT's mask schedule ``gamma(r) = cos(pi r / 2)``.

  The fraction of tokens still masked after a fraction ``r`` of the decoding
  steps (and the training mask ratio for ``r ~ U(0, 1)``). Decreasing from
  ``gamma(0) = 1`` to ``gamma(1) = 0``; the end point is set exactly, since
  ``cos(pi / 2)`` in floating point is ``6e-17`` (float64) or ``-4e-8``
  (float32) and ``ceil`` would turn the first into one masked token.

  Args:
    ratio: scalar or array in ``[0, 1]``.

  Returns:
    ``gamma(ratio)`` as float32, same shape.

  References:
    Chang et al., `MaskGIT <https://arxiv.org/abs/2202.04200>`_, 2022,
    section 3.3 and figure 8.

  Example:
    >>> print(jnp.round(cosine_schedule(jnp.array([0.0, 0.5, 1.0])), 4))
    [1.     0.7071 0.    ]
  """
  r = jnp.clip(jnp.asarray(ratio, jnp.float32), 0.0, 1.0)
  return jnp.where(r >= 1.0, 0.0, jnp.cos(0.5 * math.pi * r))


def num_masked(ratio: Any, num_tokens: int | jax.Array) -> jax.Array:
  """How many of ``num_tokens`` are masked at ``ratio``: ``ceil(gamma(r) N)``.

  Args:
    ratio: scalar or array in ``[0, 1]``.
    num_tokens: ``N`` (an int or an int array broadcasting with ``ratio``).

  Returns:
    int32 counts in ``[0, N]``; ``N`` at ``r = 0``, ``0`` at ``r = 1`` and
    at least 1 for every ``r < 1``.

  Example:
    >>> print(num_masked(jnp.array([0.0, 0.25, 0.5, 0.75, 1.0]), 16))
    [16 15 12  7  0]
  """
  n = jnp.asarray(num_tokens, jnp.int32)
  count = jnp.ceil(cosine_schedule(ratio) * n.astype(jnp.float32))
  return jnp.clip(count.astype(jnp.int32), 0, n)


def maskgit_mask(key: jax.Array, batch_size: int, num_tokens: int) -> jax.Array:
  """Draws MaskGIT's training mask: ``ceil(gamma(r) N)`` random positions.

  Per example, ``r ~ U[0, 1)`` and a uniformly random subset of
  ``ceil(cos(pi r / 2) N)`` of the ``N`` positions is masked (between 1 and
  ``N`` of them: ``gamma(r) > 0`` for ``r < 1``). Replace the masked tokens
  with the model's mask token, e.g.
  ``jnp.where(mask, model.mask_id, tokens)``, and score the masked positions
  with ``token_cross_entropy(logits, tokens, mask=mask)``.

  Args:
    key: a PRNG key.
    batch_size: ``B``.
    num_tokens: ``N``, the sequence length.

  Returns:
    ``(B, N)`` boolean mask, True at the positions to hide.

  References:
    Chang et al., `MaskGIT <https://arxiv.org/abs/2202.04200>`_, 2022,
    section 3.2 ("Masked Visual Token Modeling").

  Example:
    >>> import jax
    >>> m = maskgit_mask(jax.random.key(0), 4, 16)
    >>> print(m.shape, m.dtype)
    (4, 16) bool
    >>> print(bool((m.sum(1) >= 1).all()))
    True
  """
  _checks.check_int_at_least("batch_size", batch_size, 1)
  _checks.check_int_at_least("num_tokens", num_tokens, 1)
  k_ratio, k_perm = jax.random.split(key)
  ratio = jax.random.uniform(k_ratio, (batch_size,))
  count = num_masked(ratio, num_tokens)
  # The ranks of i.i.d. uniform scores are a uniform random permutation, so
  # "rank < count" is a uniform subset of size count.
  scores = jax.random.uniform(k_perm, (batch_size, num_tokens))
  ranks = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
  return ranks < count[:, None]


def ordered_nll(
    logits_fn: Callable[[jax.Array], jax.Array],
    tokens: jax.Array,
    *,
    mask_id: int,
    order: jax.Array | None = None,
) -> jax.Array:
  """Per-example ``-log p(x)`` of a masked-token model read in a fixed order.

  A bidirectional model ``p(x_i | x_visible)`` (MaskGIT) defines an
  autoregressive one for any order ``o`` of the positions:
  ``p_o(x) = prod_j p(x_{o_j} | x_{o_1}, ..., x_{o_{j-1}})``, each factor read
  from the model with the positions not yet revealed set to ``mask_id``. It
  is a normalised likelihood, so in bits per token it compares with an
  autoregressive prior's test NLL, which the masked training loss (at a
  random mask ratio, scoring only the hidden positions) does not. ``N``
  calls of ``logits_fn`` inside ``lax.scan``.

  Args:
    logits_fn: ``(B, N)`` int tokens (``mask_id`` where hidden) ->
      ``(B, N, V)`` logits of every position.
    tokens: ``(B, N)`` int tokens in ``[0, V)``.
    mask_id: the model's mask token.
    order: optional ``(N,)`` permutation of ``range(N)``, the order in which
      positions are revealed; raster order ``0, ..., N-1`` by default.

  Returns:
    ``(B,)`` ``-log p_o(x)`` in nats (divide by ``N log 2`` for bits/token).

  References:
    Chang et al., `MaskGIT <https://arxiv.org/abs/2202.04200>`_, 2022;
    Uria et al., `A Deep and Tractable Density Estimator
    <https://arxiv.org/abs/1310.1757>`_, 2014 (any order of a masked model).

  Example:
    >>> table = jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1]]))  # per position
    >>> fn = lambda t: jnp.broadcast_to(table, t.shape + (2,))
    >>> nll = ordered_nll(fn, jnp.array([[1, 0]]), mask_id=2)
    >>> print(f"{float(nll[0]):.4f}")  # -log 0.5 - log 0.9
    0.7985
  """
  _checks.check_integer("tokens", tokens)
  _checks.check_rank("tokens", tokens, 2)
  batch, n = jnp.shape(tokens)
  order = jnp.arange(n) if order is None else jnp.asarray(order)
  if jnp.shape(order) != (n,):
    raise ValueError(f"order must have shape ({n},), got {jnp.shape(order)}.")
  if not isinstance(order, jax.core.Tracer) and not np.array_equal(
      np.sort(np.asarray(order)), np.arange(n)):
    raise ValueError(f"order must be a permutation of range({n}), got {np.asarray(order)}.")
  # reveal_at[i]: the step at which position i becomes visible.
  reveal_at = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))

  def body(total, step):
    visible = jnp.where(reveal_at[None] < step, tokens, mask_id)
    position = order[step]
    log_p = jax.nn.log_softmax(
        jax.lax.dynamic_index_in_dim(logits_fn(visible), position, 1, keepdims=False)
    )
    target = jax.lax.dynamic_index_in_dim(tokens, position, 1, keepdims=True)
    return total - jnp.take_along_axis(log_p, target, axis=1)[:, 0], None

  total, _ = jax.lax.scan(body, jnp.zeros((batch,), jnp.float32), jnp.arange(n))
  return total
