"""Lookup-free quantization, LFQ (Yu et al., 2023, MAGVIT-v2).

The codebook of Lecture 7, slide "Deterministic variational posterior",
replaced by the corners of the hypercube: a ``d``-channel latent is
quantised channel by channel, ``q = sign(z) ∈ {−1, 1}^d``, so the nearest
code is found without a lookup and the vocabulary has ``2^d`` entries. The
index is the binary number ``Σ_k 2^k [z_k > 0]``. ``z_k = 0`` maps to −1 (bit
0), so ``sign`` here never returns 0.

To use the whole vocabulary, MAGVIT-v2 adds an entropy penalty::

  L_ent = E_x[H(p(q | z_x))] − γ · H(E_x[p(q | z_x)]),

small when every latent is confidently assigned (first term) and the
assignments are spread over the codes (second term). Here ``p`` is the
softmax over codes of ``−‖z − q‖²/τ``, which factorises over bits because
``‖z − q‖² = ‖z‖² − 2z·q + d``::

  p(q | z) = Π_k σ(q_k l_k),      l_k = 4 z_k / τ,

so ``H(p(q|z)) = Σ_k h(σ(l_k))`` with the binary entropy ``h``. The mean
distribution ``E_x[p(q|z_x)]`` is a mixture and does not factorise; it is
computed exactly over the ``2^d`` codes (``codebook_entropy="joint"``) or
replaced by the sum of per-bit entropies of ``E_x[σ(l_k)]``
(``"marginal"``), an upper bound on the joint entropy that costs ``O(d)``
instead of ``O(2^d)`` per vector.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_MAX_BITS = 31  # int32 indices
_MAX_JOINT_BITS = 16  # the joint entropy materialises an (N, 2^d) matrix


def _check_latent(name: str, z: ArrayLike, max_bits: int = _MAX_BITS) -> None:
  _checks.check_floating(name, z)
  _checks.check_min_rank(name, z, 1)
  d = np.shape(z)[-1]
  if not 1 <= d <= max_bits:
    raise ValueError(
        f"{name} must have between 1 and {max_bits} channels (bits) in its last "
        f"axis, got shape {np.shape(z)}."
    )


def quantize(z: ArrayLike) -> Array:
  """``q = sign(z) ∈ {−1, 1}^d`` with a straight-through gradient.

  ``q_k = 1`` if ``z_k > 0`` else ``−1``; evaluated as
  ``sg[q] + (z − sg[z])`` so the value is exactly ±1 and ``∂q/∂z = I``.

  Args:
    z: Latent, shape ``(..., d)``, floating.

  Returns:
    Codes of the shape and dtype of ``z``.

  References:
    Yu et al., `Language Model Beats Diffusion -- Tokenizer is Key to Visual
    Generation <https://arxiv.org/abs/2310.05737>`_, 2023, section 3.1.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import lfq
    >>> print(lfq.quantize(jnp.array([0.3, -2.0, 0.0])))
    [ 1. -1. -1.]
    >>> print(jax.grad(lambda z: jnp.sum(2.0 * lfq.quantize(z)))(jnp.array([0.3, -2.0])))
    [2. 2.]
  """
  _check_latent("z", z)
  z = jnp.asarray(z)
  sg = jax.lax.stop_gradient
  q = jnp.where(z > 0, 1.0, -1.0).astype(z.dtype)
  return sg(q) + (z - sg(z))


def codes_to_indices(codes: ArrayLike) -> Array:
  """Codes (or latents) → int32 indices, ``Σ_k 2^k [codes_k > 0]``.

  Args:
    codes: ±1 codes or unquantised latents, shape ``(..., d)`` with
      ``d <= 31``, floating.

  Returns:
    Int32 indices in ``[0, 2^d)`` of shape ``codes.shape[:-1]``.

  References:
    Yu et al., `Language Model Beats Diffusion -- Tokenizer is Key to Visual
    Generation <https://arxiv.org/abs/2310.05737>`_, 2023.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import lfq
    >>> print(lfq.codes_to_indices(jnp.array([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]])))
    [5 6]
  """
  _check_latent("codes", codes)
  d = np.shape(codes)[-1]
  bits = (jnp.asarray(codes) > 0).astype(jnp.int32)
  return jnp.sum(bits << np.arange(d, dtype=np.int32), axis=-1, dtype=jnp.int32)


def indices_to_codes(indices: ArrayLike, *, dim: int) -> Array:
  """Int32 indices → ±1 codes: bit ``k`` of the index gives channel ``k``.

  Args:
    indices: Integer indices in ``[0, 2^dim)``, any shape.
    dim: Number of channels (bits) ``d``, ``1 <= d <= 31``.

  Returns:
    Float32 codes of shape ``indices.shape + (dim,)``.

  References:
    Yu et al., `Language Model Beats Diffusion -- Tokenizer is Key to Visual
    Generation <https://arxiv.org/abs/2310.05737>`_, 2023.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import lfq
    >>> print(lfq.indices_to_codes(jnp.array([5, 6]), dim=3))
    [[ 1. -1.  1.]
     [-1.  1.  1.]]
  """
  _checks.check_int_at_least("dim", dim, 1)
  if dim > _MAX_BITS:
    raise ValueError(f"dim must be <= {_MAX_BITS} (int32 indices), got {dim}.")
  _checks.check_integer("indices", indices)
  idx = jnp.asarray(indices, jnp.int32)[..., None]
  bits = (idx >> np.arange(dim, dtype=np.int32)) & 1
  return jnp.where(bits == 1, 1.0, -1.0).astype(jnp.float32)


class EntropyTerms(NamedTuple):
  """The parts of the LFQ entropy penalty; scalars are global batch statistics.

  Attributes:
    per_example: ``H(p(q | z_x))`` per latent vector, shape ``z.shape[:-1]``.
    sample_entropy: its mean over the (global) batch, ``E_x[H(p(q|z_x))]``.
    codebook_entropy: ``H(E_x[p(q | z_x)])`` (joint or per-bit marginal).
    penalty: ``sample_entropy − γ · codebook_entropy``.
  """

  per_example: Array
  sample_entropy: Array
  codebook_entropy: Array
  penalty: Array


def _global_sum(x: Array, axis_name: str | None) -> Array:
  s = jnp.sum(x, axis=0)
  return s if axis_name is None else jax.lax.psum(s, axis_name)


def _log_mean_exp(x: Array, axis_name: str | None) -> Array:
  """``log mean_i exp(x_i)`` over axis 0 of the (global) batch, stably."""
  m = jax.lax.stop_gradient(jnp.max(x, axis=0))
  if axis_name is not None:
    m = jax.lax.pmax(m, axis_name)
  total = _global_sum(jnp.exp(x - m), axis_name)
  count = _global_sum(jnp.ones(x.shape[:1], x.dtype), axis_name)
  return m + jnp.log(total) - jnp.log(count)


def entropy_penalty(
    z: ArrayLike,
    *,
    temperature: float = 1.0,
    gamma: float = 1.0,
    codebook_entropy: str = "joint",
    axis_name: str | None = None,
) -> EntropyTerms:
  """MAGVIT-v2 entropy penalty ``E_x[H(p(q|z))] − γ H(E_x[p(q|z)])``.

  With bit logits ``l_k = 4 z_k/τ`` (the factorisation of
  ``softmax_q(−‖z − q‖²/τ)``, see the module docstring)::

    H(p(q|z)) = Σ_k [σ(l_k) softplus(−l_k) + σ(−l_k) softplus(l_k)],
    joint:    H = −Σ_c p̄_c log p̄_c,  log p̄_c = log mean_x exp Σ_k log σ(c_k l_k),
    marginal: H = Σ_k h(p̄_k),        log p̄_k = log mean_x σ(l_k)  (≥ joint).

  Every log-probability is a ``log_sigmoid``/``logsumexp``, so nothing
  underflows to ``log 0``. The batch means run over every leading axis of
  ``z``; under ``jit`` with a sharded batch they are global, and inside
  ``shard_map``/``pmap`` they are reduced over ``axis_name`` (every device
  gets the global value).

  Args:
    z: Unquantised latents, shape ``(..., d)``, floating.
    temperature: ``τ > 0``; smaller is sharper.
    gamma: Weight ``γ >= 0`` of the codebook entropy (1 in MAGVIT-v2).
    codebook_entropy: ``"joint"`` (exact, ``d <= 16``) or ``"marginal"``.
    axis_name: Optional mapped axis the batch is sharded over.

  Returns:
    :class:`EntropyTerms` in float32.

  References:
    Yu et al., `Language Model Beats Diffusion -- Tokenizer is Key to Visual
    Generation <https://arxiv.org/abs/2310.05737>`_, 2023, section 3.1.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import lfq
    >>> # Two confident latents on opposite codes: no sample entropy and a
    >>> # codebook entropy of log 2.
    >>> t = lfq.entropy_penalty(jnp.array([[9.0], [-9.0]]), temperature=1.0)
    >>> print(jnp.round(t.sample_entropy, 4), jnp.round(t.codebook_entropy, 4))
    0.0 0.6931
  """
  _check_latent(
      "z", z, _MAX_JOINT_BITS if codebook_entropy == "joint" else _MAX_BITS
  )
  _checks.check_positive("temperature", temperature)
  _checks.check_positive("gamma", gamma, allow_zero=True)
  if codebook_entropy not in ("joint", "marginal"):
    raise ValueError(
        f"codebook_entropy must be 'joint' or 'marginal', got {codebook_entropy!r}."
    )
  z = jnp.asarray(z)
  d = z.shape[-1]
  zf = z.astype(jnp.promote_types(z.dtype, jnp.float32))
  logits = 4.0 * zf / temperature
  per_example = jnp.sum(
      jax.nn.sigmoid(logits) * jax.nn.softplus(-logits)
      + jax.nn.sigmoid(-logits) * jax.nn.softplus(logits),
      axis=-1,
  )
  flat_logits = logits.reshape(-1, d)
  flat_h = per_example.reshape(-1)
  count = _global_sum(jnp.ones_like(flat_h), axis_name)
  sample_entropy = _global_sum(flat_h, axis_name) / count
  log_on = jax.nn.log_sigmoid(flat_logits)
  log_off = jax.nn.log_sigmoid(-flat_logits)
  if codebook_entropy == "joint":
    bits = np.asarray(
        (np.arange(2**d)[None, :] >> np.arange(d)[:, None]) & 1, np.float32
    )  # (d, 2^d): bit k of code c
    hi = jax.lax.Precision.HIGHEST
    log_p = (jnp.matmul(log_on, bits, precision=hi)
             + jnp.matmul(log_off, 1.0 - bits, precision=hi))
    log_mean = _log_mean_exp(log_p, axis_name)
    h_codebook = -jnp.sum(jnp.exp(log_mean) * log_mean)
  else:
    log_mean_on = _log_mean_exp(log_on, axis_name)
    log_mean_off = _log_mean_exp(log_off, axis_name)
    h_codebook = -jnp.sum(
        jnp.exp(log_mean_on) * log_mean_on + jnp.exp(log_mean_off) * log_mean_off
    )
  return EntropyTerms(
      per_example=per_example,
      sample_entropy=sample_entropy,
      codebook_entropy=h_codebook,
      penalty=sample_entropy - gamma * h_codebook,
  )
