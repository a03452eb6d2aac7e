"""Flax quantisation layers beyond the lecture's VQ, with ``VectorQuantizer``'s contract.

Every layer maps encoder outputs ``(..., D)`` to a decoder input of the same
leading shape and returns a NamedTuple whose first eight fields are those of
:class:`dgmjax.nn.vq.VQOutput` (``z``, ``z_q``, ``indices``, ``loss``,
``counts``, ``perplexity``, ``codes_used``, ``restarted``), so a train step
can use ``out.z``, ``jnp.mean(out.loss)``, ``out.perplexity`` and
``out.codes_used`` whatever the quantiser. Every layer has
``lookup(indices)``, which turns the integer tokens back into the decoder
input (equal to ``out.z``'s value), and ``num_codes``, the vocabulary size
of one token.

* :class:`FSQuantizer`: finite scalar quantization (:mod:`dgmjax.losses.fsq`);
  no parameters, no state, no loss.
* :class:`ResidualVectorQuantizer`: ``S`` :class:`VectorQuantizer` stages on
  successive residuals (:mod:`dgmjax.losses.rvq`), with quantizer dropout;
  ``indices`` has one column per stage.
* :class:`LookupFreeQuantizer`: ``sign(z)`` codes with the MAGVIT-v2 entropy
  penalty (:mod:`dgmjax.losses.lfq`); no parameters, no state.
* :class:`FactorizedQuantizer`: ViT-VQGAN's factorized codes: a linear
  projection to a low dimension, an l2-normalised (cosine) codebook, and a
  projection back.

Statistics (histograms, perplexity, EMA updates, restarts, LFQ entropies) are
global: automatically under ``jax.jit`` with a sharded batch, and reduced over
``axis_name`` inside ``shard_map``/``pmap``. Random choices (restarts,
quantizer dropout) use the rng stream ``"vq_restart"``, which must be the same
on every device.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.losses import fsq, lfq, rvq, vq
from dgmjax.nn.vq import VectorQuantizer, VQOutput

__all__ = [
    "FSQuantizer",
    "FactorizedQuantizer",
    "LFQOutput",
    "LookupFreeQuantizer",
    "RVQOutput",
    "ResidualVectorQuantizer",
]


def _check_dim(z: jax.Array, dim: int, what: str) -> None:
  if z.shape[-1:] != (dim,):
    raise ValueError(f"z_e must have last dimension {what}={dim}, got shape {z.shape}.")


class FSQuantizer(nn.Module):
  """Finite scalar quantization (Mentzer et al., 2023).

  The input's last axis has one channel per entry of ``levels``; the
  vocabulary is ``Π levels``. ``z`` is the grid code with a straight-through
  rounding gradient; ``loss`` is zero (FSQ needs no auxiliary loss).

  Attributes:
    levels: number of levels per channel, e.g. (8, 5, 5, 5) for 1000 codes.
    axis_name: mapped axis for shard_map/pmap users (global histogram).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from dgmjax.nn.quantizers import FSQuantizer
    >>> fsq = FSQuantizer(levels=(3, 5))
    >>> z = jax.random.normal(jax.random.key(0), (64, 2)) * 3
    >>> out = fsq.apply({}, z)
    >>> # Indices address the 15 codes, and looking them up gives the output back.
    >>> print(int(out.indices.max()) < 15, bool(jnp.allclose(fsq.apply({}, out.indices,
    ...       method="lookup"), out.z)))
    True True
  """

  levels: Sequence[int]
  axis_name: str | None = None

  @property
  def num_codes(self) -> int:
    return fsq.num_codes(tuple(self.levels))

  def __call__(self, z_e: jax.Array, *, train: bool = False) -> VQOutput:
    del train  # FSQ has no state
    levels = tuple(self.levels)
    _check_dim(z_e, len(levels), "len(levels)")
    codes = fsq.quantize(z_e, levels=levels)
    z_q = jax.lax.stop_gradient(codes)
    indices = fsq.codes_to_indices(z_q, levels=levels)
    counts = vq.code_histogram(indices, self.num_codes, axis_name=self.axis_name)
    return VQOutput(
        z=codes, z_q=z_q, indices=indices, loss=jnp.zeros(indices.shape, jnp.float32),
        counts=counts, perplexity=vq.perplexity(counts), codes_used=vq.codes_used(counts),
        restarted=jnp.zeros((), jnp.int32))

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Indices (...,) -> grid codes (..., len(levels))."""
    return fsq.indices_to_codes(indices, levels=tuple(self.levels))


class RVQOutput(NamedTuple):
  """What :class:`ResidualVectorQuantizer` returns.

  Attributes:
    z: straight-through ``Σ_i q_i`` for the decoder, the input's shape.
    z_q: ``Σ_i q_i`` (no gradient path to the encoder).
    indices: int32, the input's leading shape plus one column per stage;
      ``−1`` for stages skipped by quantizer dropout.
    loss: per-vector loss summed over the active stages.
    counts: (S, K) global histograms per stage (zeros for skipped stages).
    perplexity: mean over the active stages of the stage perplexities.
    codes_used: mean over the active stages of the stage code usage.
    restarted: total number of codes re-seeded in this call.
    stage_loss: per-vector loss of every stage, shape ``indices.shape``.
    stage_perplexity: (S,) perplexity per stage (0 when skipped).
    stage_codes_used: (S,) code usage per stage (0 when skipped).
    num_active: int32 number of stages used in this call.
  """

  z: jax.Array
  z_q: jax.Array
  indices: jax.Array
  loss: jax.Array
  counts: jax.Array
  perplexity: jax.Array
  codes_used: jax.Array
  restarted: jax.Array
  stage_loss: jax.Array
  stage_perplexity: jax.Array
  stage_codes_used: jax.Array
  num_active: jax.Array


class ResidualVectorQuantizer(nn.Module):
  """Residual VQ (Zeghidour et al., 2021): ``S`` VQ stages on the residuals.

  Stage ``i`` is a :class:`VectorQuantizer` (submodule ``stages_i``, with its
  own codebook or EMA state) applied to ``r_{i−1} = z − Σ_{j<i} sg[q_j]``; the
  decoder gets ``straight_through(z, Σ_i q_i)``. With ``dropout_rate > 0``,
  each training call draws ``n ~ U{1..S}`` (with that probability, else
  ``n = S``) from the ``"vq_restart"`` stream and stages ``i > n`` are skipped:
  their statistics are not updated, their loss is 0 and their index is −1.

  Attributes:
    num_codes: K codes per stage (the vocabulary of one index column).
    code_dim: D.
    num_stages: S.
    beta, use_ema, decay, eps, dead_code_threshold: as in
      :class:`VectorQuantizer`, for every stage.
    dropout_rate: probability of quantizer dropout per training call.
    axis_name: mapped axis for shard_map/pmap users.
  """

  num_codes: int
  code_dim: int
  num_stages: int = 4
  beta: float = 0.25
  use_ema: bool = True
  decay: float = 0.99
  eps: float = 1e-5
  dead_code_threshold: float = 1.0
  dropout_rate: float = 0.0
  axis_name: str | None = None

  def setup(self):
    if self.num_stages < 1:
      raise ValueError(f"num_stages must be >= 1, got {self.num_stages}.")
    if not 0.0 <= self.dropout_rate <= 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1], got {self.dropout_rate}.")
    self.stages = [
        VectorQuantizer(self.num_codes, self.code_dim, beta=self.beta, use_ema=self.use_ema,
                        decay=self.decay, eps=self.eps,
                        dead_code_threshold=self.dead_code_threshold, axis_name=self.axis_name)
        for _ in range(self.num_stages)
    ]

  @property
  def codebooks(self) -> jax.Array:
    """(S, K, D) stacked stage codebooks."""
    return jnp.stack([stage.codebook for stage in self.stages])

  def __call__(self, z_e: jax.Array, *, train: bool = False) -> RVQOutput:
    _check_dim(z_e, self.code_dim, "code_dim")
    s = self.num_stages
    n = jnp.asarray(s, jnp.int32)
    if train and self.dropout_rate > 0 and not self.is_initializing():
      n = rvq.sample_num_stages(self.make_rng("vq_restart"), s, rate=self.dropout_rate)
    residual = z_e.astype(jnp.promote_types(z_e.dtype, jnp.float32))
    total = jnp.zeros_like(residual)
    idx, losses, counts, ppl, used = [], [], [], [], []
    restarted = jnp.zeros((), jnp.int32)
    for i, stage in enumerate(self.stages):
      active = i < n
      out = stage(residual, train=train, update=active)
      q = jnp.where(active, out.z_q.astype(residual.dtype), 0.0)
      idx.append(jnp.where(active, out.indices, -1))
      losses.append(jnp.where(active, out.loss, 0.0))
      counts.append(jnp.where(active, out.counts, 0.0))
      ppl.append(jnp.where(active, out.perplexity, 0.0))
      used.append(jnp.where(active, out.codes_used, 0.0))
      restarted = restarted + out.restarted
      total = total + q
      residual = residual - jax.lax.stop_gradient(q)
    stage_loss = jnp.stack(losses, axis=-1)
    stage_ppl, stage_used = jnp.stack(ppl), jnp.stack(used)
    nf = n.astype(jnp.float32)
    return RVQOutput(
        z=vq.straight_through(z_e, total.astype(z_e.dtype)),
        z_q=jax.lax.stop_gradient(total),
        indices=jnp.stack(idx, axis=-1).astype(jnp.int32),
        loss=jnp.sum(stage_loss, axis=-1),
        counts=jnp.stack(counts),
        perplexity=jnp.sum(stage_ppl) / nf,
        codes_used=jnp.sum(stage_used) / nf,
        restarted=restarted,
        stage_loss=stage_loss,
        stage_perplexity=stage_ppl,
        stage_codes_used=stage_used,
        num_active=n,
    )

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Indices (..., S) -> Σ of the stage codes (..., D); −1 skips a stage."""
    return rvq.residual_lookup(indices, self.codebooks)


class LFQOutput(NamedTuple):
  """What :class:`LookupFreeQuantizer` returns.

  Attributes:
    z: straight-through ``sign(z)`` codes for the decoder.
    z_q: the ±1 codes (no gradient path).
    indices: int32 ``Σ_k 2^k [z_k > 0]``.
    loss: per-vector ``β·commitment + w·(H(p(q|z_x)) − γ·H(E_x p(q|z)))``;
      its global mean is ``β·E[commitment] + w·penalty``.
    counts: (2^d,) global code histogram.
    perplexity: exp(entropy) of ``counts``.
    codes_used: fraction of the 2^d codes used.
    restarted: always 0 (no codebook to restart).
    sample_entropy: ``E_x[H(p(q|z_x))]`` (global).
    codebook_entropy: ``H(E_x[p(q|z_x)])`` (global).
  """

  z: jax.Array
  z_q: jax.Array
  indices: jax.Array
  loss: jax.Array
  counts: jax.Array
  perplexity: jax.Array
  codes_used: jax.Array
  restarted: jax.Array
  sample_entropy: jax.Array
  codebook_entropy: jax.Array


class LookupFreeQuantizer(nn.Module):
  """Lookup-free quantization (Yu et al., 2023, MAGVIT-v2).

  The input's last axis has ``code_dim = d`` channels, one bit each; the
  vocabulary is ``2^d`` (``d <= 20`` here, because the layer reports the
  full histogram).

  Attributes:
    code_dim: number of bits d.
    beta: commitment weight on ``(1/d)‖z − sg[sign z]‖²``.
    entropy_weight: weight w of the entropy penalty.
    gamma: weight γ of the codebook-entropy term inside the penalty.
    temperature: τ of ``p(q|z) ∝ exp(−‖z − q‖²/τ)``.
    codebook_entropy: ``"joint"`` (exact, d <= 16) or ``"marginal"``.
    axis_name: mapped axis for shard_map/pmap users.
  """

  code_dim: int
  beta: float = 0.25
  entropy_weight: float = 0.1
  gamma: float = 1.0
  temperature: float = 1.0
  codebook_entropy: str = "joint"
  axis_name: str | None = None

  @property
  def num_codes(self) -> int:
    return 2**self.code_dim

  def __call__(self, z_e: jax.Array, *, train: bool = False) -> LFQOutput:
    del train  # LFQ has no state
    if not 1 <= self.code_dim <= 20:
      raise ValueError(f"code_dim must be in [1, 20] bits, got {self.code_dim}.")
    _check_dim(z_e, self.code_dim, "code_dim")
    codes = lfq.quantize(z_e)
    z_q = jax.lax.stop_gradient(codes)
    indices = lfq.codes_to_indices(z_q)
    ent = lfq.entropy_penalty(z_e, temperature=self.temperature, gamma=self.gamma,
                              codebook_entropy=self.codebook_entropy, axis_name=self.axis_name)
    loss = (self.beta * vq.commitment_loss(z_e, z_q)
            + self.entropy_weight * (ent.per_example - self.gamma * ent.codebook_entropy))
    counts = vq.code_histogram(indices, self.num_codes, axis_name=self.axis_name)
    return LFQOutput(
        z=codes, z_q=z_q, indices=indices, loss=loss, counts=counts,
        perplexity=vq.perplexity(counts), codes_used=vq.codes_used(counts),
        restarted=jnp.zeros((), jnp.int32), sample_entropy=ent.sample_entropy,
        codebook_entropy=ent.codebook_entropy)

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Indices (...,) -> ±1 codes (..., d)."""
    return lfq.indices_to_codes(indices, dim=self.code_dim)


class FactorizedQuantizer(nn.Module):
  """ViT-VQGAN's factorized codes (Yu et al., 2021, section 3.2).

  ``z_low = W_in z``, cosine VQ of ``z_low`` (l2-normalised input and
  codebook, :class:`VectorQuantizer` with ``cosine=True``), decoder input
  ``W_out ST(ẑ_low, ê_k)``. ``z_q`` is the low-dimensional unit code; ``z``
  has the input's width ``code_dim``. Parameters: ``down`` and ``up``
  (Dense) and ``vq`` (the codebook or its EMA state).

  Attributes:
    num_codes: K.
    code_dim: width of the encoder output and of the decoder input.
    lookup_dim: width of the codebook (8 or 32 in the paper).
    beta, use_ema, decay, eps, dead_code_threshold, gradient: as in
      :class:`VectorQuantizer`.
    axis_name: mapped axis for shard_map/pmap users.
  """

  num_codes: int
  code_dim: int
  lookup_dim: int = 8
  beta: float = 0.25
  use_ema: bool = True
  decay: float = 0.99
  eps: float = 1e-5
  dead_code_threshold: float = 1.0
  gradient: str = "ste"
  axis_name: str | None = None

  def setup(self):
    self.down = nn.Dense(self.lookup_dim)
    self.vq = VectorQuantizer(
        self.num_codes, self.lookup_dim, beta=self.beta, use_ema=self.use_ema,
        decay=self.decay, eps=self.eps, dead_code_threshold=self.dead_code_threshold,
        cosine=True, gradient=self.gradient, axis_name=self.axis_name)
    self.up = nn.Dense(self.code_dim)

  def __call__(self, z_e: jax.Array, *, train: bool = False) -> VQOutput:
    _check_dim(z_e, self.code_dim, "code_dim")
    out = self.vq(self.down(z_e), train=train)
    return out._replace(z=self.up(out.z))

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Indices (...,) -> decoder input (..., code_dim)."""
    return self.up(self.vq.lookup(indices))
