"""A small transformer prior over token sequences (DALL-E and MaskGIT style).

Lecture 7, DALL-E slide: "Since latent space is discrete we could train
autoregressive transformers in it." A VQ-VAE/dVAE token grid is flattened in
raster order into ``N`` tokens over a vocabulary of ``V`` codes.

:class:`TokenTransformer` has two modes:

* ``causal=True`` (DALL-E, an autoregressive prior): the model input is
  ``[c, x_1, ..., x_{N-1}]`` with a causal mask and output ``i`` is the
  logits of ``p(x_i | x_<i, c)``; ``c`` is a conditioning token (the class
  embedding, or a learned start token when unconditional).
  :meth:`TokenTransformer.decode_step` computes one position from a KV cache
  of fixed shape, for sampling inside ``lax.scan``
  (:func:`dgmjax.sampling.autoregressive_sample`).
* ``causal=False`` (MaskGIT, a bidirectional masked-token model): the input
  is ``[c, x_1, ..., x_N]`` where hidden tokens are replaced by
  :attr:`TokenTransformer.mask_id` (``= V``), attention is full, and output
  ``i`` is the logits of ``x_i`` given every visible token.

Blocks are pre-LN (``x + attn(LN(x))``, ``x + mlp(LN(x))``), positions are
learned embeddings, and attention is written here so the cache is explicit:
a dict ``{"k", "v"}`` of per-layer ``(B, heads, N, head_dim)`` arrays,
passed in and returned, no mutable Flax collection.

With ``num_classes = C > 0`` the conditioning table has ``C + 1`` rows; row
``C`` is the "no class" token used when ``labels`` is None (so a model
trained with label dropout supports classifier-free guidance).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax import _checks

__all__ = ["SelfAttention", "Block", "TokenTransformer", "extend_cache"]

# {"k": (k_0, ..., k_{L-1}), "v": (...)}: one (B, heads, N, head_dim) array
# per layer.
Cache = dict[str, tuple[jax.Array, ...]]
# (k, v, index): one layer's keys and values and the position being decoded.
LayerCache = tuple[jax.Array, jax.Array, jax.Array]


def _attend(
    q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, precision: Any
) -> jax.Array:
  """Softmax attention, ``(B, Q, H, D) x (B, K, H, D) -> (B, Q, H, D)``."""
  scale = q.shape[-1] ** -0.5
  scores = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k, precision=precision)
  # A finite floor rather than -inf: exp underflows to exactly 0 all the same
  # and a row can never become all -inf (nan after softmax).
  scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
  weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=precision)


def _attend_cache(
    q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, precision: Any
) -> jax.Array:
  """:func:`_attend` with keys/values in the cache layout ``(B, H, K, D)``.

  Heads before positions, so both products batch over ``(B, H)`` without a
  transpose of the cache.
  """
  scale = q.shape[-1] ** -0.5
  scores = jnp.einsum("bqhd,bhkd->bhqk", q * scale, k, precision=precision)
  scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
  weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bhkd->bqhd", weights, v, precision=precision)


class SelfAttention(nn.Module):
  """Multi-head self-attention with an explicit KV cache for one-step decode.

  Attributes:
    num_heads: number of heads; the input width must be divisible by it.
    precision: matmul precision (``None``: the backend default).
  """

  num_heads: int
  precision: Any = None

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      allowed: jax.Array,
      cache: LayerCache | None = None,
  ) -> tuple[jax.Array, LayerCache | None]:
    """Attends over ``x`` or, with a cache, over the cached positions.

    Args:
      x: ``(B, L, W)``; ``L = 1`` in decode mode.
      allowed: boolean, broadcastable to ``(B, heads, L, keys)``.
      cache: ``None`` or ``(k, v, index)``: this layer's cached keys and
        values, ``(B, heads, N, W/heads)``, and the scalar position that
        ``x`` occupies.

    Returns:
      ``(B, L, W)`` output and the cache with ``x``'s keys and values
      written at ``index`` (``None`` without a cache).
    """
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(
          f"width {width} must be divisible by num_heads {self.num_heads}."
      )
    head_dim = width // self.num_heads
    qkv = nn.DenseGeneral(
        (3, self.num_heads, head_dim), precision=self.precision, name="qkv"
    )(x)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if cache is None:
      out, new_cache = _attend(q, k, v, allowed, self.precision), None
    else:
      # Each layer's cache is its own array, written in place and then read:
      # slicing one stacked (num_layers, ...) cache, or reading the old cache
      # beside the write, made XLA copy the cache every step, and sampling
      # was quadratic in N.
      k_cache, v_cache, index = cache
      start = (0, 0, index, 0)
      k_cache = jax.lax.dynamic_update_slice(
          k_cache, k.swapaxes(1, 2).astype(k_cache.dtype), start)
      v_cache = jax.lax.dynamic_update_slice(
          v_cache, v.swapaxes(1, 2).astype(v_cache.dtype), start)
      out = _attend_cache(q, k_cache.astype(q.dtype), v_cache.astype(v.dtype),
                          allowed, self.precision)
      new_cache = (k_cache, v_cache, index)
    out = nn.DenseGeneral(
        width, axis=(-2, -1), precision=self.precision, name="out"
    )(out)
    return out, new_cache


class Block(nn.Module):
  """Pre-LN transformer block: ``x + attn(LN(x))``, then ``x + mlp(LN(x))``.

  Attributes:
    num_heads: attention heads.
    mlp_ratio: hidden width of the MLP over the model width.
    precision: matmul precision.
  """

  num_heads: int
  mlp_ratio: int = 4
  precision: Any = None

  @nn.compact
  def __call__(
      self,
      x: jax.Array,
      allowed: jax.Array,
      cache: LayerCache | None = None,
  ) -> tuple[jax.Array, LayerCache | None]:
    """Applies the block; ``cache`` as in :class:`SelfAttention`."""
    width = x.shape[-1]
    h, new_cache = SelfAttention(
        self.num_heads, precision=self.precision, name="attn"
    )(nn.LayerNorm(name="ln_attn")(x), allowed, cache)
    x = x + h
    h = nn.LayerNorm(name="ln_mlp")(x)
    h = nn.Dense(width * self.mlp_ratio, precision=self.precision, name="mlp_in")(h)
    h = nn.Dense(width, precision=self.precision, name="mlp_out")(nn.gelu(h))
    return x + h, new_cache


class TokenTransformer(nn.Module):
  """Transformer prior over ``seq_len`` tokens from a ``vocab_size`` codebook.

  Attributes:
    vocab_size: ``V``, the number of codes; logits are over ``V`` classes.
    seq_len: ``N``, tokens per sequence (``h * w`` of a raster-order grid).
    num_layers: transformer blocks.
    width: model width.
    num_heads: attention heads (``width`` divisible by it).
    mlp_ratio: MLP hidden width over ``width``.
    causal: True for the autoregressive prior, False for MaskGIT.
    num_classes: ``C`` for a class-conditional prior, 0 for unconditional.
    precision: matmul precision (e.g. ``"highest"`` to compare the cache with
      full recompute on accelerators whose default float32 matmul is TF32).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = TokenTransformer(vocab_size=16, seq_len=6, num_layers=1,
    ...                          width=16, num_heads=2, num_classes=3)
    >>> tokens = jnp.zeros((2, 6), jnp.int32)
    >>> params = jax.jit(model.init)(jax.random.key(0), tokens, jnp.array([0, 1]))
    >>> print(jax.jit(model.apply)(params, tokens, jnp.array([0, 1])).shape)
    (2, 6, 16)
    >>> cache = model.init_cache(2)
    >>> logits, cache = model.apply(params, tokens[:, 0], 0, cache,
    ...     jnp.array([0, 1]), method=TokenTransformer.decode_step)
    >>> print(logits.shape, len(cache["k"]), cache["k"][0].shape)
    (2, 16) 1 (2, 2, 6, 8)
  """

  vocab_size: int
  seq_len: int
  num_layers: int = 2
  width: int = 32
  num_heads: int = 4
  mlp_ratio: int = 4
  causal: bool = True
  num_classes: int = 0
  precision: Any = None

  @property
  def mask_id(self) -> int:
    """The mask token of the bidirectional mode, one past the codes."""
    return self.vocab_size

  @property
  def null_label(self) -> int:
    """The conditioning index used when ``labels`` is None."""
    return self.num_classes

  @property
  def _positions(self) -> int:
    # Causal: [c, x_1..x_{N-1}]; bidirectional: [c, x_1..x_N].
    return self.seq_len if self.causal else self.seq_len + 1

  def _check_config(self) -> None:
    _checks.check_int_at_least("vocab_size", self.vocab_size, 2)
    _checks.check_int_at_least("seq_len", self.seq_len, 1)
    _checks.check_int_at_least("num_layers", self.num_layers, 1)
    _checks.check_int_at_least("num_heads", self.num_heads, 1)
    _checks.check_int_at_least("num_classes", self.num_classes, 0)
    if self.width % self.num_heads:
      raise ValueError(
          f"width must be divisible by num_heads, got width={self.width}, "
          f"num_heads={self.num_heads}."
      )

  def setup(self) -> None:
    self._check_config()
    num_tokens = self.vocab_size + (0 if self.causal else 1)
    init = nn.initializers.normal(0.02)
    self.token_embed = nn.Embed(num_tokens, self.width, embedding_init=init)
    self.cond_embed = nn.Embed(self.num_classes + 1, self.width, embedding_init=init)
    self.pos_embed = self.param("pos_embed", init, (self._positions, self.width))
    self.blocks = [
        Block(self.num_heads, self.mlp_ratio, self.precision, name=f"block_{i}")
        for i in range(self.num_layers)
    ]
    self.ln_out = nn.LayerNorm()
    self.head = nn.Dense(self.vocab_size, precision=self.precision)

  def _cond(self, labels: jax.Array | None, batch: int) -> jax.Array:
    if labels is None:
      labels = jnp.full((batch,), self.null_label, jnp.int32)
    else:
      _checks.check_integer("labels", labels)
      if jnp.shape(labels) != (batch,):
        raise ValueError(
            f"labels must have shape ({batch},), got {jnp.shape(labels)}."
        )
    return self.cond_embed(labels)

  def __call__(
      self, tokens: jax.Array, labels: jax.Array | None = None
  ) -> jax.Array:
    """Logits of every position.

    Args:
      tokens: ``(B, N)`` int tokens in ``[0, V)``; in the bidirectional mode
        hidden positions hold :attr:`mask_id`.
      labels: optional ``(B,)`` int classes in ``[0, num_classes)``.

    Returns:
      ``(B, N, V)`` logits; causal: of ``p(x_i | x_<i, c)``, bidirectional:
      of ``p(x_i | visible tokens, c)``.
    """
    _checks.check_integer("tokens", tokens)
    _checks.check_rank("tokens", tokens, 2)
    batch, n = jnp.shape(tokens)
    if n != self.seq_len:
      raise ValueError(f"tokens must have {self.seq_len} positions, got {n}.")
    inputs = tokens[:, :-1] if self.causal else tokens
    x = jnp.concatenate(
        [self._cond(labels, batch)[:, None], self.token_embed(inputs)], axis=1
    )
    x = x + self.pos_embed[None]
    length = x.shape[1]
    if self.causal:
      allowed = jnp.tril(jnp.ones((length, length), bool))
    else:
      allowed = jnp.ones((length, length), bool)
    for block in self.blocks:
      x, _ = block(x, allowed)
    logits = self.head(self.ln_out(x))
    return logits if self.causal else logits[:, 1:]

  def init_cache(
      self, batch_size: int, dtype: Any = jnp.float32, length: int | None = None
  ) -> Cache:
    """An empty KV cache for :meth:`decode_step` (zeros; no parameters).

    ``{"k": (k_0, ..., k_{L-1}), "v": (...)}``, one ``(batch_size, heads,
    length, head_dim)`` array per layer. ``length`` defaults to ``seq_len``;
    a shorter cache serves positions ``< length`` and costs less to read
    (:func:`extend_cache` lengthens it, as the blocked sampler does).
    """
    self._check_config()
    length = self.seq_len if length is None else length
    _checks.check_int_at_least("length", length, 1)
    if length > self.seq_len:
      raise ValueError(f"length must be <= seq_len = {self.seq_len}, got {length}.")
    shape = (batch_size, self.num_heads, length, self.width // self.num_heads)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(self.num_layers))
    return {"k": zeros, "v": zeros}

  def decode_step(
      self,
      prev_tokens: jax.Array,
      index: int | jax.Array,
      cache: Cache,
      labels: jax.Array | None = None,
  ) -> tuple[jax.Array, Cache]:
    """Logits of position ``index`` from the cache (causal mode only).

    Feeds model input ``index`` (the conditioning token at 0, else
    ``prev_tokens = x_{index-1}``), writes its keys/values into the cache and
    attends over cache positions ``<= index``. Shapes do not depend on
    ``index``, so it can be traced (``lax.scan``). Calling it for
    ``index = 0, ..., N-1`` with the true previous tokens gives the rows of
    ``__call__``'s logits. The cache may be shorter than ``seq_len`` (see
    :meth:`init_cache`): each step reads the whole cache, so a cache only as
    long as the positions decoded so far is cheaper; ``index`` must be below
    its length.

    Args:
      prev_tokens: ``(B,)`` int token at position ``index - 1`` (ignored at
        ``index = 0``).
      index: scalar int position in ``[0, N)``.
      cache: from :meth:`init_cache` or the previous step.
      labels: optional ``(B,)`` int classes (must be the same at every step).

    Returns:
      ``(B, V)`` logits of ``x_index`` and the updated cache.
    """
    if not self.causal:
      raise ValueError("decode_step needs causal=True (MaskGIT decodes in "
                       "parallel: call the model on the whole sequence).")
    _checks.check_integer("prev_tokens", prev_tokens)
    _checks.check_rank("prev_tokens", prev_tokens, 1)
    batch = jnp.shape(prev_tokens)[0]
    index = jnp.asarray(index, jnp.int32)
    token = self.token_embed(prev_tokens)
    x = jnp.where(index == 0, self._cond(labels, batch), token)
    x = x + jax.lax.dynamic_index_in_dim(self.pos_embed, index, keepdims=False)
    x = x[:, None]
    length = jnp.shape(cache["k"][0])[2]
    if length > self.seq_len:
      raise ValueError(f"the cache holds {length} positions, more than seq_len = "
                       f"{self.seq_len}.")
    allowed = jnp.arange(length) <= index
    new_k, new_v = [], []
    for layer, block in enumerate(self.blocks):
      x, (k, v, _) = block(x, allowed, (cache["k"][layer], cache["v"][layer], index))
      new_k.append(k)
      new_v.append(v)
    logits = self.head(self.ln_out(x))[:, 0]
    return logits, {"k": tuple(new_k), "v": tuple(new_v)}


def extend_cache(cache: Cache, length: int) -> Cache:
  """``cache`` lengthened to ``length`` positions with zeros (the old ones kept).

  Positions past the decoded index are masked out of the attention, so the
  padding changes no logit. A no-op at the cache's own length.

  Example:
    >>> cache = {"k": (jnp.ones((1, 2, 3, 4)),), "v": (jnp.ones((1, 2, 3, 4)),)}
    >>> print(extend_cache(cache, 5)["k"][0][0, 0, :, 0])
    [1. 1. 1. 0. 0.]
  """
  current = jnp.shape(cache["k"][0])[2]
  if length < current:
    raise ValueError(f"length must be >= the cache's {current} positions, got {length}.")
  if length == current:
    return cache
  pad = ((0, 0), (0, 0), (0, length - current), (0, 0))
  return jax.tree.map(lambda a: jnp.pad(a, pad), cache)
