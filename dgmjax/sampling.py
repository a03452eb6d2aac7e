"""Sampling from token priors: filtering, autoregressive decoding, MaskGIT.

Lecture 7, DALL-E slide: a transformer over the discrete latents is a
prior ``p(x_1, ..., x_N)``; sampling it and decoding the tokens with the
VQ-VAE/dVAE decoder generates images.

* :func:`filter_logits`: temperature, top-k and top-p (nucleus) filtering,
  composable; returns renormalised log-probabilities, ``-inf`` outside the
  allowed set.
* :func:`sample_sequence`: ancestral sampling ``x_i ~ p(x_i | x_<i)`` inside
  ``lax.scan`` (fixed shapes, no Python loop over positions), driven by any
  ``step_fn(state, prev_tokens, index) -> (logits, state)``, e.g. a bigram
  table, or :func:`autoregressive_sample` for a
  :class:`~dgmjax.nn.transformer.TokenTransformer` with its KV cache.
* :func:`maskgit_decode`: MaskGIT's iterative parallel decoding driven by
  any ``logits_fn(tokens) -> logits``; :func:`maskgit_sample` for a
  bidirectional :class:`~dgmjax.nn.transformer.TokenTransformer`.

Everything is a pure function of a PRNG key and jitted; hyperparameters
(``temperature``, ``top_k``, ``top_p``, step counts, the driving function)
are static, so they are validated at trace time and a new value compiles a
new program. Categorical draws use the Gumbel-max trick with the noise of
:func:`dgmjax.losses.gumbel.gumbel_noise` (uniforms never 0), so ``-inf``
log-probabilities are simply never chosen.

References:
  Holtzman et al., `The Curious Case of Neural Text Degeneration
  <https://arxiv.org/abs/1904.09751>`_, 2019 (top-p).
  Fan, Lewis, Dauphin, `Hierarchical Neural Story Generation
  <https://arxiv.org/abs/1805.04833>`_, 2018 (top-k).
  Chang et al., `MaskGIT: Masked Generative Image Transformer
  <https://arxiv.org/abs/2202.04200>`_, 2022.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax import _checks
from dgmjax.losses import gumbel
from dgmjax.losses.tokens import num_masked
from dgmjax.nn.transformer import extend_cache

__all__ = [
    "filter_logits",
    "sample_categorical",
    "sample_sequence",
    "block_bounds",
    "autoregressive_sample",
    "maskgit_step",
    "maskgit_decode",
    "maskgit_sample",
]

# Scan blocks of the autoregressive sampler's growing KV cache
# (docs/prior.md; 1, 2, 4 and 7 blocks were timed at 49 and 196 tokens).
CACHE_BLOCKS = 4

StepFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]
LogitsFn = Callable[[jax.Array], jax.Array]


def _check_filters(temperature: Any, top_k: Any, top_p: Any) -> None:
  if not isinstance(temperature, jax.core.Tracer):
    try:
      t = float(temperature)
    except (TypeError, ValueError):
      raise TypeError(
          f"temperature must be a number, got {type(temperature).__name__}."
      ) from None
    # "not t > 0" is also true for nan, which "t <= 0" would let through.
    if not t > 0:
      raise ValueError(f"temperature must be > 0 (and not nan), got {temperature!r}.")
  if top_k is not None:
    _checks.check_int_at_least("top_k", top_k, 1)
  if top_p is not None and not isinstance(top_p, jax.core.Tracer):
    try:
      p = float(top_p)
    except (TypeError, ValueError):
      raise TypeError(f"top_p must be a number, got {type(top_p).__name__}.") from None
    if not 0.0 < p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {top_p!r}.")


def filter_logits(
    logits: jax.Array,
    *,
    temperature: float | jax.Array = 1.0,
    top_k: int | None = None,
    top_p: float | jax.Array | None = None,
) -> jax.Array:
  """Temperature, then top-k, then top-p; renormalised log-probabilities.

  With ``z = logits / T`` and ``p = softmax(z)`` sorted in decreasing order
  ``p_(1) >= p_(2) >= ...`` (ties broken by index), the allowed set is

  * top-k: the ``k`` most probable tokens (exactly ``k``; no filtering when
    ``k >= V``);
  * top-p: the shortest prefix of the sorted tokens whose mass reaches
    ``top_p``: token ``(j)`` is kept iff ``sum_{i<j} p_(i) < top_p``,
    computed on the distribution left after top-k, so the most probable token
    is always kept;

  and the result is ``log_softmax`` of ``z`` restricted to that set (``-inf``
  elsewhere). Input logits of ``-inf`` (a forbidden token) stay ``-inf``; at
  least one logit per row must be finite.

  Args:
    logits: ``(..., V)`` floating logits.
    temperature: ``T > 0``; below 1 sharpens, above 1 flattens.
    top_k: optional int ``>= 1``.
    top_p: optional mass in ``(0, 1]``.

  Returns:
    Log-probabilities shaped like ``logits``; ``logsumexp`` over the last
    axis is 0.

  Example:
    >>> import numpy as np
    >>> logits = jnp.log(jnp.array([0.1, 0.5, 0.15, 0.25]))
    >>> print(np.round(np.exp(filter_logits(logits, top_k=2)), 4))
    [0.     0.6667 0.     0.3333]
    >>> print(np.round(np.exp(filter_logits(logits, top_p=0.8)), 4))
    [0.     0.5556 0.1667 0.2778]
    >>> print(np.round(np.exp(filter_logits(logits, temperature=0.5, top_k=3)), 4))
    [0.     0.7463 0.0672 0.1866]
  """
  _checks.check_floating("logits", logits)
  _checks.check_min_rank("logits", logits, 1)
  _check_filters(temperature, top_k, top_p)
  z = logits / jnp.asarray(temperature, jnp.result_type(logits))
  vocab = z.shape[-1]
  if (top_k is None or top_k >= vocab) and top_p is None:
    return jax.nn.log_softmax(z, axis=-1)
  order = jnp.argsort(z, axis=-1, descending=True, stable=True)
  z_sorted = jnp.take_along_axis(z, order, axis=-1)
  keep = jnp.ones(z.shape, bool)
  if top_k is not None and top_k < vocab:
    keep = jnp.broadcast_to(jnp.arange(vocab) < top_k, z.shape)
    z_sorted = jnp.where(keep, z_sorted, -jnp.inf)
  if top_p is not None:
    p_sorted = jnp.exp(jax.nn.log_softmax(z_sorted, axis=-1))
    mass_before = jnp.cumsum(p_sorted, axis=-1) - p_sorted
    keep = keep & (mass_before < top_p)
    keep = keep.at[..., 0].set(True)
  # Back from sorted order: inverse permutation of ``order``.
  keep = jnp.take_along_axis(keep, jnp.argsort(order, axis=-1), axis=-1)
  return jax.nn.log_softmax(jnp.where(keep, z, -jnp.inf), axis=-1)


def sample_categorical(key: jax.Array, log_probs: jax.Array) -> jax.Array:
  """One draw per row from ``Categorical(exp(log_probs))`` (Gumbel-max).

  ``argmax_v (log_probs_v + g_v)``, ``g ~ Gumbel(0, 1)`` from
  :func:`dgmjax.losses.gumbel.gumbel_noise`; entries of ``-inf`` are never
  chosen. The same key gives the same draw, which makes the identities of
  :func:`maskgit_decode` testable exactly.

  Args:
    key: a PRNG key.
    log_probs: ``(..., V)`` (unnormalised) log-probabilities.

  Returns:
    int32 tokens, shape ``log_probs.shape[:-1]``.

  Example:
    >>> import jax
    >>> lp = jnp.log(jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    >>> print(sample_categorical(jax.random.key(0), lp))
    [1 0]
  """
  return gumbel.gumbel_max_sample(key, log_probs, axis=-1)


@functools.partial(
    jax.jit,
    static_argnames=(
        "step_fn", "batch_size", "length", "temperature", "top_k", "top_p",
        "blocks", "grow_state",
    ),
)
def sample_sequence(
    key: jax.Array,
    step_fn: StepFn,
    state: Any,
    *,
    batch_size: int,
    length: int,
    prefix: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    blocks: int = 1,
    grow_state: Callable[[Any, int], Any] | None = None,
) -> jax.Array:
  """Ancestral sampling of ``length`` tokens with any next-token function.

  For ``i = 0, ..., length - 1``:
  ``logits, state = step_fn(state, x_{i-1}, i)`` (``x_{-1} = 0``, a
  placeholder the function should ignore), then
  ``x_i ~ filter_logits(logits, ...)``, or ``x_i = prefix[:, i]`` for the
  first ``P`` positions when a ``(B, P)`` prefix is given (the function still
  sees them, so a KV cache is filled by the prefix). The loop is a
  ``lax.scan``; position ``i`` uses ``jax.random.split(key, length)[i]``.

  With ``blocks = G > 1`` the positions are scanned in ``G`` consecutive
  blocks of nearly equal size, and before the block that ends at position
  ``e`` the state becomes ``grow_state(state, e)``. A KV cache can so start
  short and grow: each step's attention then reads only the blocks decoded so
  far, about half the cache on average, instead of all ``N`` positions. The
  draws are the same as with one block (the same key per position).

  Args:
    key: a PRNG key.
    step_fn: ``(state, prev_tokens (B,), index) -> ((B, V) logits, state)``;
      static (hashable), e.g. a module-level function or a ``partial``.
    state: initial state pytree (a KV cache, or ``None``).
    batch_size: ``B``.
    length: ``N``.
    prefix: optional ``(B, P)`` int tokens to force, ``P <= N``.
    temperature: see :func:`filter_logits`.
    top_k: see :func:`filter_logits`.
    top_p: see :func:`filter_logits`.
    blocks: number of scan blocks ``G``, ``1 <= G <= length`` (static).
    grow_state: ``(state, end) -> state`` called before each block with the
      block's end position (static); ``None`` leaves the state as it is.

  Returns:
    ``(B, N)`` int32 tokens.

  Example:
    >>> import jax
    >>> # A bigram that always moves to the next token mod 5.
    >>> table = jnp.log(jnp.eye(5)[(jnp.arange(5) + 1) % 5])
    >>> def step(state, prev, i):
    ...   return table[prev], state
    >>> print(sample_sequence(jax.random.key(0), step, None, batch_size=1,
    ...                       length=6, prefix=jnp.array([[3]])))
    [[3 4 0 1 2 3]]
  """
  _checks.check_int_at_least("batch_size", batch_size, 1)
  _checks.check_int_at_least("length", length, 1)
  _check_filters(temperature, top_k, top_p)
  forced = jnp.zeros((length,), bool)
  fixed = jnp.zeros((batch_size, length), jnp.int32)
  if prefix is not None:
    _checks.check_integer("prefix", prefix)
    _checks.check_rank("prefix", prefix, 2)
    b, p = jnp.shape(prefix)
    if b != batch_size or p > length:
      raise ValueError(
          f"prefix must have shape ({batch_size}, P) with P <= {length}, got "
          f"{jnp.shape(prefix)}."
      )
    forced = jnp.arange(length) < p
    fixed = fixed.at[:, :p].set(prefix.astype(jnp.int32))

  def body(carry, xs):
    state, prev = carry
    index, step_key, is_forced, fixed_i = xs
    logits, state = step_fn(state, prev, index)
    log_probs = filter_logits(
        logits, temperature=temperature, top_k=top_k, top_p=top_p
    )
    token = jnp.where(is_forced, fixed_i, sample_categorical(step_key, log_probs))
    return (state, token), token

  xs = (
      jnp.arange(length, dtype=jnp.int32),
      jax.random.split(key, length),
      forced,
      fixed.T,
  )
  carry = (state, jnp.zeros((batch_size,), jnp.int32))
  parts = []
  for start, end in block_bounds(length, blocks):
    if grow_state is not None:
      carry = (grow_state(carry[0], end), carry[1])
    block_xs = jax.tree.map(lambda a, s=start, e=end: a[s:e], xs)
    carry, part = jax.lax.scan(body, carry, block_xs)
    parts.append(part)
  return jnp.concatenate(parts, axis=0).T


def block_bounds(length: int, blocks: int) -> list[tuple[int, int]]:
  """``(start, end)`` of ``blocks`` consecutive, nearly equal blocks of ``range(length)``.

  Example:
    >>> block_bounds(10, 3)
    [(0, 3), (3, 7), (7, 10)]
  """
  _checks.check_int_at_least("blocks", blocks, 1)
  if blocks > length:
    raise ValueError(f"blocks must be <= length = {length}, got {blocks}.")
  ends = [round((j + 1) * length / blocks) for j in range(blocks)]
  return list(zip([0] + ends[:-1], ends, strict=True))


def _model_step(model: nn.Module, params: Any, labels: jax.Array | None):
  def step(cache, prev, index):
    return model.apply(
        params, prev, index, cache, labels, method=model.decode_step
    )

  return step


@functools.partial(
    jax.jit,
    static_argnames=(
        "model", "batch_size", "temperature", "top_k", "top_p", "cache_blocks"
    ),
)
def autoregressive_sample(
    key: jax.Array,
    model: nn.Module,
    params: Any,
    *,
    batch_size: int,
    labels: jax.Array | None = None,
    prefix: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cache_blocks: int = CACHE_BLOCKS,
) -> jax.Array:
  """Samples a causal :class:`~dgmjax.nn.transformer.TokenTransformer`.

  :func:`sample_sequence` driven by the model's ``decode_step`` and its KV
  cache: one position per scan step, ``O(N)`` work per token instead of
  recomputing the whole prefix. The cache grows in ``cache_blocks`` steps
  (``min(cache_blocks, N)`` scan blocks, :func:`sample_sequence`'s
  ``blocks``): a step's attention reads only the blocks decoded so far, which
  is most of a step's time at long sequences, where reading the cache is
  memory-bound (``docs/prior.md``). The tokens do not depend on it.

  Args:
    key: a PRNG key.
    model: a causal ``TokenTransformer`` (static).
    params: its variables.
    batch_size: ``B``.
    labels: optional ``(B,)`` int classes for a class-conditional model.
    prefix: optional ``(B, P)`` tokens to force (e.g. the top rows of a grid).
    temperature: see :func:`filter_logits`.
    top_k: see :func:`filter_logits`.
    top_p: see :func:`filter_logits`.
    cache_blocks: ``G >= 1``; 1 allocates the whole cache at once.

  Returns:
    ``(B, N)`` int32 tokens, ``N = model.seq_len``.

  Example:
    >>> import jax
    >>> from dgmjax.nn.transformer import TokenTransformer
    >>> model = TokenTransformer(vocab_size=8, seq_len=5, num_layers=1,
    ...                          width=16, num_heads=2)
    >>> params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 5), jnp.int32))
    >>> x = autoregressive_sample(jax.random.key(1), model, params,
    ...                           batch_size=3, top_k=2)
    >>> print(x.shape, x.dtype, bool(((x >= 0) & (x < 8)).all()))
    (3, 5) int32 True
  """
  _checks.check_int_at_least("cache_blocks", cache_blocks, 1)
  blocks = min(cache_blocks, model.seq_len)
  first_end = block_bounds(model.seq_len, blocks)[0][1]
  cache = model.init_cache(batch_size, length=first_end)
  # A fresh closure per trace; sample_sequence's static step_fn is only
  # hashed within this trace, so no stale parameters are captured.
  return sample_sequence.__wrapped__(
      key,
      _model_step(model, params, labels),
      cache,
      batch_size=batch_size,
      length=model.seq_len,
      prefix=prefix,
      temperature=temperature,
      top_k=top_k,
      top_p=top_p,
      blocks=blocks,
      grow_state=extend_cache,
  )


def maskgit_step(
    key: jax.Array,
    tokens: jax.Array,
    log_probs: jax.Array,
    *,
    ratio: float | jax.Array,
    num_unknown: jax.Array,
    mask_id: int,
    confidence_temperature: float | jax.Array,
) -> jax.Array:
  """One MaskGIT decoding step: sample every masked token, re-mask some.

  With ``key`` split into ``(k_sample, k_conf)``:

  1. ``s_i ~ exp(log_probs_i)`` at every masked position (``tokens_i ==
     mask_id``; :func:`sample_categorical` with ``k_sample``); visible
     tokens are kept;
  2. confidence ``c_i = log_probs_i[s_i] + tau * g_i``, ``g`` Gumbel noise
     from ``k_conf`` (``+inf`` at positions that were visible, so they stay);
  3. the ``n = ceil(gamma(ratio) * num_unknown)`` least confident positions
     get ``mask_id`` again, ``gamma(r) = cos(pi r / 2)``; ``n`` is capped at
     (masked count − 1), so every step reveals at least one token, and is 0
     at ``ratio = 1``.

  Args:
    key: a PRNG key.
    tokens: ``(B, N)`` int tokens, ``mask_id`` where hidden.
    log_probs: ``(B, N, V)`` (filtered) log-probabilities from the model.
    ratio: ``t / T`` after this step (step ``t = 1, ..., T``).
    num_unknown: ``(B,)`` masked count before the first step.
    mask_id: the mask token (``>= V``).
    confidence_temperature: ``tau >= 0``.

  Returns:
    ``(B, N)`` int32 tokens.

  Example:
    >>> import jax
    >>> # One-hot distributions as log-probs: 0 at the token, -inf elsewhere.
    >>> log_probs = jnp.where(jax.nn.one_hot(jnp.array([[1, 2, 3, 0]]), 4) > 0, 0.0, -jnp.inf)
    >>> tokens = jnp.full((1, 4), 4)
    >>> print(maskgit_step(jax.random.key(0), tokens, log_probs, ratio=1.0,
    ...                    num_unknown=jnp.array([4]), mask_id=4,
    ...                    confidence_temperature=0.0))
    [[1 2 3 0]]
  """
  k_sample, k_conf = jax.random.split(key)
  unknown = tokens == mask_id
  sampled = jnp.where(unknown, sample_categorical(k_sample, log_probs), tokens)
  # Visible positions hold a token index that may exceed V - 1 for nothing
  # but mask_id; clip only for the gather, their confidence is +inf anyway.
  safe = jnp.clip(sampled, 0, log_probs.shape[-1] - 1)
  chosen = jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
  noise = gumbel.gumbel_noise(k_conf, chosen.shape, chosen.dtype)
  confidence = jnp.where(unknown, chosen + confidence_temperature * noise, jnp.inf)
  remaining = jnp.sum(unknown, axis=1)
  count = jnp.minimum(num_masked(ratio, num_unknown), jnp.maximum(remaining - 1, 0))
  ranks = jnp.argsort(jnp.argsort(confidence, axis=1, stable=True), axis=1)
  remask = ranks < count[:, None]
  return jnp.where(remask, mask_id, sampled).astype(jnp.int32)


@functools.partial(
    jax.jit,
    static_argnames=(
        "logits_fn", "mask_id", "num_steps", "temperature", "top_k", "top_p",
        "confidence_temperature",
    ),
)
def maskgit_decode(
    key: jax.Array,
    logits_fn: LogitsFn,
    tokens: jax.Array,
    *,
    mask_id: int,
    num_steps: int = 8,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    confidence_temperature: float = 4.5,
) -> jax.Array:
  """MaskGIT iterative decoding from partially (or fully) masked tokens.

  For ``t = 1, ..., T``: ``log_probs = filter_logits(logits_fn(tokens))``
  and :func:`maskgit_step` with ``ratio = t / T`` and confidence temperature
  ``tau_t = confidence_temperature * (1 - t / T)`` (annealed to 0), using
  ``jax.random.split(key, T)[t - 1]``. After step ``t`` at most
  ``ceil(cos(pi t / 2T) M)`` tokens are masked (``M`` = masked count at the
  start), none after the last. With ``T = 1`` this is exactly one draw of
  every masked position from ``logits_fn(tokens)`` (:func:`sample_categorical`
  with the first half of ``jax.random.split(jax.random.split(key, 1)[0])``).

  Args:
    key: a PRNG key.
    logits_fn: ``(B, N) tokens -> (B, N, V)`` logits; static (hashable).
    tokens: ``(B, N)`` int start tokens, ``mask_id`` where to generate.
    mask_id: the mask token.
    num_steps: ``T >= 1`` (8–12 in the paper).
    temperature: see :func:`filter_logits`.
    top_k: see :func:`filter_logits`.
    top_p: see :func:`filter_logits`.
    confidence_temperature: ``tau_0 >= 0``; 4.5 as in the MaskGIT code.

  Returns:
    ``(B, N)`` int32 tokens without ``mask_id``.

  Example:
    >>> import jax
    >>> target = jnp.array([[2, 0, 1, 3, 3, 1]])
    >>> logits_fn = lambda x: 20.0 * jax.nn.one_hot(target, 4)
    >>> start = jnp.full((1, 6), 4)
    >>> print(maskgit_decode(jax.random.key(0), logits_fn, start, mask_id=4,
    ...                      num_steps=3))
    [[2 0 1 3 3 1]]
  """
  _checks.check_integer("tokens", tokens)
  _checks.check_rank("tokens", tokens, 2)
  _checks.check_int_at_least("num_steps", num_steps, 1)
  if not (isinstance(confidence_temperature, (int, float))
          and confidence_temperature >= 0):  # also refuses nan
    raise ValueError(f"confidence_temperature must be a number >= 0, got "
                     f"{confidence_temperature!r}.")
  _check_filters(temperature, top_k, top_p)
  tokens = tokens.astype(jnp.int32)
  num_unknown = jnp.sum(tokens == mask_id, axis=1)

  def body(tokens, xs):
    t, step_key = xs
    ratio = t.astype(jnp.float32) / num_steps
    log_probs = filter_logits(
        logits_fn(tokens), temperature=temperature, top_k=top_k, top_p=top_p
    )
    tokens = maskgit_step(
        step_key,
        tokens,
        log_probs,
        ratio=ratio,
        num_unknown=num_unknown,
        mask_id=mask_id,
        confidence_temperature=confidence_temperature * (1.0 - ratio),
    )
    return tokens, None

  xs = (jnp.arange(1, num_steps + 1), jax.random.split(key, num_steps))
  tokens, _ = jax.lax.scan(body, tokens, xs)
  return tokens


@functools.partial(
    jax.jit,
    static_argnames=(
        "model", "batch_size", "num_steps", "temperature", "top_k", "top_p",
        "confidence_temperature",
    ),
)
def maskgit_sample(
    key: jax.Array,
    model: nn.Module,
    params: Any,
    *,
    batch_size: int,
    labels: jax.Array | None = None,
    tokens: jax.Array | None = None,
    num_steps: int = 8,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    confidence_temperature: float = 4.5,
) -> jax.Array:
  """Samples a bidirectional :class:`~dgmjax.nn.transformer.TokenTransformer`.

  :func:`maskgit_decode` from all-masked tokens (or from ``tokens``, e.g. a
  partly masked grid to inpaint).

  Args:
    key: a PRNG key.
    model: a ``TokenTransformer`` with ``causal=False`` (static).
    params: its variables.
    batch_size: ``B``.
    labels: optional ``(B,)`` int classes.
    tokens: optional ``(B, N)`` start tokens with ``model.mask_id`` where to
      generate; all masked by default.
    num_steps: ``T``.
    temperature: see :func:`filter_logits`.
    top_k: see :func:`filter_logits`.
    top_p: see :func:`filter_logits`.
    confidence_temperature: see :func:`maskgit_decode`.

  Returns:
    ``(B, N)`` int32 tokens.

  Example:
    >>> import jax
    >>> from dgmjax.nn.transformer import TokenTransformer
    >>> model = TokenTransformer(vocab_size=8, seq_len=6, num_layers=1,
    ...                          width=16, num_heads=2, causal=False)
    >>> params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 6), jnp.int32))
    >>> x = maskgit_sample(jax.random.key(1), model, params, batch_size=2,
    ...                    num_steps=4)
    >>> print(x.shape, bool(((x >= 0) & (x < 8)).all()))
    (2, 6) True
  """
  if model.causal:
    raise ValueError("maskgit_sample needs a model with causal=False.")
  if tokens is None:
    tokens = jnp.full((batch_size, model.seq_len), model.mask_id, jnp.int32)
  logits_fn = lambda x: model.apply(params, x, labels)
  return maskgit_decode.__wrapped__(
      key,
      logits_fn,
      tokens,
      mask_id=model.mask_id,
      num_steps=num_steps,
      temperature=temperature,
      top_k=top_k,
      top_p=top_p,
      confidence_temperature=confidence_temperature,
  )

