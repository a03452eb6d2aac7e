"""A Flax vector-quantisation layer on top of :mod:`dgmjax.losses.vq`.

Lecture 7, "Deterministic variational posterior": every position's encoder
output z_e is replaced by its nearest code, and the decoder receives the
straight-through ``z_e + sg(z_q − z_e)``.

The codebook is either a parameter trained by the codebook loss
(``use_ema=False``) or an EMA of cluster statistics (``use_ema=True``, the
default). EMA statistics live in the variable collection ``"vq_ema"``; a
train step applies the layer with ``mutable=["vq_ema"]`` and stores the
returned collection in its train state, so nothing is hidden mutation and
everything is checkpointed. Dead-code restart draws from the rng stream
``"vq_restart"``.

Under ``jax.jit`` with a batch sharded over devices, statistics are global
automatically. Inside ``shard_map``/``pmap`` set ``axis_name`` so that counts,
sums, restarts and perplexity are reduced across devices.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.losses import vq


class VQOutput(NamedTuple):
  """What :class:`VectorQuantizer` returns.

  Attributes:
    z: straight-through output for the decoder, same shape as the input.
    z_q: the selected codes (no gradient path to the encoder).
    indices: int32 code indices, the input shape without its last axis.
    loss: per-vector VQ loss (β·commitment, plus the codebook loss when the
      codebook is learned by gradient), shape of ``indices``.
    counts: (K,) global code histogram of this call.
    perplexity: exp(entropy) of ``counts``.
    codes_used: fraction of codes with a non-zero count.
    restarted: number of codes re-seeded in this call (0 when not training).
  """

  z: jax.Array
  z_q: jax.Array
  indices: jax.Array
  loss: jax.Array
  counts: jax.Array
  perplexity: jax.Array
  codes_used: jax.Array
  restarted: jax.Array


def _l2_normalize(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


class VectorQuantizer(nn.Module):
  """Nearest-code quantisation with straight-through gradients.

  Attributes:
    num_codes: K, the codebook size.
    code_dim: D, the size of each code (the input's last axis).
    beta: commitment weight β (0.25 in the paper).
    use_ema: EMA codebook (True) or codebook loss (False).
    decay: EMA decay (0.99).
    eps: Laplace smoothing of EMA counts.
    dead_code_threshold: in training, codes whose EMA count falls below this
      are re-seeded from current encoder outputs (EMA only; 0 disables). The
      default 1.0 (less than one use per batch) is what the trainer uses; 0.01
      restarted too late and trained worse.
    cosine: l2-normalise inputs and codes (cosine-similarity codebook).
    gradient: how the decoder's gradient reaches the encoder: ``"ste"``
      (straight-through, the identity) or ``"rotation"`` (the rotation trick
      of Fifty et al. 2024, :func:`dgmjax.losses.vq.rotation_trick`). The
      forward value and the parameter tree are the same for both.
    axis_name: mapped axis for shard_map/pmap users.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from dgmjax.nn.vq import VectorQuantizer
    >>> vq = VectorQuantizer(num_codes=8, code_dim=2)
    >>> z_e = jax.random.normal(jax.random.key(0), (16, 2))
    >>> variables = vq.init(jax.random.key(1), z_e)
    >>> out = vq.apply(variables, z_e)
    >>> codebook = vq.apply(variables, jnp.arange(8), method="lookup")
    >>> # Each vector goes to its nearest code (brute force over the codebook).
    >>> d = jnp.sum((z_e[:, None] - codebook[None]) ** 2, -1)
    >>> print(bool(jnp.all(out.indices == jnp.argmin(d, -1))),
    ...       bool(jnp.allclose(out.z, codebook[out.indices], atol=1e-6)))
    True True
  """

  num_codes: int
  code_dim: int
  beta: float = 0.25
  use_ema: bool = True
  decay: float = 0.99
  eps: float = 1e-5
  dead_code_threshold: float = 1.0
  cosine: bool = False
  gradient: str = "ste"
  axis_name: str | None = None

  def setup(self):
    if self.num_codes < 2:
      raise ValueError(f"num_codes must be >= 2, got {self.num_codes}.")
    if not 0.0 < self.decay < 1.0:
      raise ValueError(f"decay must be in (0, 1), got {self.decay}.")
    if self.gradient not in ("ste", "rotation"):
      raise ValueError(f"gradient must be 'ste' or 'rotation', got {self.gradient!r}.")
    init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
    shape = (self.num_codes, self.code_dim)
    if self.use_ema:
      def ema_state():
        key = self.make_rng("params") if self.has_rng("params") else jax.random.key(0)
        codebook = init(key, shape, jnp.float32)
        return vq.ema_init(_l2_normalize(codebook) if self.cosine else codebook)

      self.ema = self.variable("vq_ema", "state", ema_state)
    else:
      self.codebook_param = self.param("codebook", init, shape, jnp.float32)

  @property
  def codebook(self) -> jax.Array:
    if self.use_ema:
      return self.ema.value.codebook  # kept unit-norm by the update when cosine
    # A learned cosine codebook is normalised where it is used, so that the
    # lookup is a cosine-similarity argmax and z_q lies on the sphere.
    return _l2_normalize(self.codebook_param) if self.cosine else self.codebook_param

  def __call__(
      self, z_e: jax.Array, *, train: bool = False, update: bool | jax.Array = True
  ) -> VQOutput:
    """Quantises ``z_e`` (..., D).

    ``update`` (a bool or a traced boolean scalar, e.g. from quantizer
    dropout) gates the EMA update and restarts of a training call: when it is
    False the statistics are left unchanged and ``restarted`` is 0.
    """
    if z_e.shape[-1] != self.code_dim:
      raise ValueError(
          f"z_e must have last dimension code_dim={self.code_dim}, got shape {z_e.shape}."
      )
    z_in = _l2_normalize(z_e) if self.cosine else z_e
    codebook = self.codebook
    z_q, indices = vq.quantize(z_in, codebook)
    if self.use_ema:
      loss = self.beta * vq.commitment_loss(z_in, z_q)
    else:
      loss = vq.vq_loss(z_in, z_q, beta=self.beta)
    flat_i = indices.reshape(-1)
    counts = vq.code_histogram(flat_i, self.num_codes, axis_name=self.axis_name)
    restarted = jnp.zeros((), jnp.int32)
    if train and self.use_ema and not self.is_initializing():
      flat_z = jax.lax.stop_gradient(z_in).reshape(-1, self.code_dim).astype(jnp.float32)
      state = vq.ema_update(self.ema.value, flat_z, flat_i, decay=self.decay,
                            eps=self.eps, axis_name=self.axis_name)
      if self.dead_code_threshold > 0:
        state, restarted = vq.restart_dead_codes_ema(
            self.make_rng("vq_restart"), state, flat_z,
            threshold=self.dead_code_threshold, axis_name=self.axis_name)
      if self.cosine:
        state = state._replace(codebook=_l2_normalize(state.codebook))
      if update is not True:
        old = self.ema.value
        state = jax.tree.map(lambda new, o: jnp.where(update, new, o), state, old)
        restarted = jnp.where(update, restarted, 0)
      self.ema.value = state
    if self.gradient == "rotation":
      z_out = vq.rotation_trick(z_in, z_q.astype(z_in.dtype))
    else:
      z_out = vq.straight_through(z_in, z_q.astype(z_in.dtype))
    return VQOutput(
        z=z_out,
        z_q=z_q,
        indices=indices,
        loss=loss,
        counts=counts,
        perplexity=vq.perplexity(counts),
        codes_used=vq.codes_used(counts),
        restarted=jnp.asarray(restarted, jnp.int32),
    )

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Codes for integer indices (..., ) -> (..., D): decode from tokens."""
    return jnp.take(self.codebook, indices, axis=0)
