"""Residual vector quantization, RVQ (Zeghidour et al., 2021, SoundStream).

A stack of ``S`` vector quantisers (Lecture 7, slide "Deterministic
variational posterior"), each quantising what the previous ones left::

  r_0 = z,    q_i = Q_i(r_{i−1}) = e^{(i)}_{k_i},    r_i = r_{i−1} − q_i,
  z_q = Σ_{i=1}^{S} q_i,    z − z_q = r_S.

With ``K`` codes per stage the vocabulary is ``K^S`` at the cost of ``S``
lookups of ``K`` codes. Quantizer dropout trains the stack so that any prefix
of ``n <= S`` stages decodes: in training ``n`` is drawn uniformly from
``{1, …, S}`` and stages ``i > n`` are skipped. Skipped stages have index
``−1``, zero code and zero loss.

Codebooks are stacked in one ``(S, K, D)`` array.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks
from dgmjax.losses import vq

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


class RVQResult(NamedTuple):
  """Output of :func:`residual_quantize`.

  Attributes:
    z_q: ``Σ_i q_i`` over the active stages, shape ``z.shape``.
    indices: int32, shape ``z.shape[:-1] + (S,)``; ``−1`` for skipped stages.
    stage_inputs: the residuals ``r_{i−1}`` each stage quantised, shape
      ``z.shape[:-1] + (S, D)`` (float32).
    stage_codes: the codes ``q_i`` (zero for skipped stages), same shape.
  """

  z_q: Array
  indices: Array
  stage_inputs: Array
  stage_codes: Array


def _check_codebooks(codebooks: ArrayLike) -> None:
  _checks.check_floating("codebooks", codebooks)
  _checks.check_rank("codebooks", codebooks, 3)
  if np.shape(codebooks)[1] < 2:
    raise ValueError(
        f"codebooks must hold K >= 2 codes per stage (shape (S, K, D)), got "
        f"shape {np.shape(codebooks)}."
    )


def residual_quantize(
    z: ArrayLike,
    codebooks: ArrayLike,
    *,
    num_active: ArrayLike | None = None,
) -> RVQResult:
  """Quantises ``z`` with ``S`` stages, each on the residual of the previous.

  ``r_0 = z``, ``k_i = argmin_k ‖r_{i−1} − e^{(i)}_k‖``, ``q_i = e^{(i)}_{k_i}``,
  ``r_i = r_{i−1} − sg[q_i]``. The stop-gradient keeps each codebook's
  gradient to its own stage; the encoder reaches every stage through the
  residuals (use :func:`residual_vq_loss` for the per-stage losses and
  :func:`dgmjax.losses.vq.straight_through` on ``z_q`` for the decoder).

  Args:
    z: Encoder outputs, shape ``(..., D)``, floating.
    codebooks: Stage codebooks, shape ``(S, K, D)``, floating.
    num_active: Number of stages ``n`` to use, an int or int array
      broadcastable to ``z.shape[:-1]`` (per-vector dropout); stages
      ``i > n`` are skipped. ``None`` uses all ``S``.

  Returns:
    :class:`RVQResult`.

  References:
    Zeghidour et al., `SoundStream: An End-to-End Neural Audio Codec
    <https://arxiv.org/abs/2107.03312>`_, 2021, section III.C.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import rvq
    >>> codebooks = jnp.array([[[0.0], [4.0]], [[0.0], [1.0]]])  # S=2, K=2, D=1
    >>> out = rvq.residual_quantize(jnp.array([[4.9], [1.2]]), codebooks)
    >>> print(out.indices)
    [[1 1]
     [0 1]]
    >>> print(out.z_q)
    [[5.]
     [1.]]
  """
  _check_codebooks(codebooks)
  s, _, d = np.shape(codebooks)
  _checks.check_floating("z", z)
  _checks.check_min_rank("z", z, 1)
  _checks.check_last_dim("z", z, d, "the codebooks' code dimension D")
  codebooks = jnp.asarray(codebooks)
  z = jnp.asarray(z)
  batch = z.shape[:-1]
  if num_active is None:
    active = jnp.ones(batch + (s,), bool)
  else:
    _checks.check_integer("num_active", num_active)
    n = jnp.asarray(num_active)
    try:
      n = jnp.broadcast_to(n, batch)
    except ValueError:
      raise ValueError(
          f"num_active must be broadcastable to z.shape[:-1] = {batch}, got "
          f"shape {n.shape}."
      ) from None
    active = jnp.arange(s) < n[..., None]
  residual = vq._upcast(z)
  inputs, codes, indices = [], [], []
  for i in range(s):
    q, idx = vq.quantize(residual, codebooks[i])
    on = active[..., i]
    q = jnp.where(on[..., None], vq._upcast(q), 0.0)
    inputs.append(residual)
    codes.append(q)
    indices.append(jnp.where(on, idx, -1))
    residual = residual - jax.lax.stop_gradient(q)
  codes_arr = jnp.stack(codes, axis=-2)
  return RVQResult(
      z_q=jnp.sum(codes_arr, axis=-2),
      indices=jnp.stack(indices, axis=-1).astype(jnp.int32),
      stage_inputs=jnp.stack(inputs, axis=-2),
      stage_codes=codes_arr,
  )


def residual_vq_loss(result: RVQResult, *, beta: float = 0.25) -> Array:
  """Per-stage VQ losses ``(1/D)‖sg[r_{i−1}] − q_i‖² + β (1/D)‖r_{i−1} − sg[q_i]‖²``.

  :func:`dgmjax.losses.vq.vq_loss` of every active stage on its own
  residual; skipped stages (index ``−1``) give 0. Sum over the last axis for
  the total. With an EMA codebook use ``β ·`` :func:`dgmjax.losses.vq.
  commitment_loss` of the same pairs instead.

  Args:
    result: Output of :func:`residual_quantize`.
    beta: Commitment weight β >= 0.

  Returns:
    Float32 losses of shape ``z.shape[:-1] + (S,)``.

  References:
    Zeghidour et al., `SoundStream: An End-to-End Neural Audio Codec
    <https://arxiv.org/abs/2107.03312>`_, 2021;
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import rvq
    >>> codebooks = jnp.array([[[0.0], [4.0]], [[0.0], [1.0]]])
    >>> out = rvq.residual_quantize(jnp.array([[4.5]]), codebooks, num_active=1)
    >>> print(rvq.residual_vq_loss(out, beta=0.25))
    [[0.3125 0.    ]]
  """
  _checks.check_positive("beta", beta, allow_zero=True)
  loss = vq.vq_loss(result.stage_inputs, result.stage_codes, beta=beta)
  return jnp.where(result.indices >= 0, loss, 0.0)


def residual_lookup(indices: ArrayLike, codebooks: ArrayLike) -> Array:
  """Decodes stage indices: ``Σ_i e^{(i)}_{k_i}`` over the stages with ``k_i >= 0``.

  The inverse of :func:`residual_quantize` on its indices: equals its
  ``z_q`` (up to the summation order, which is the same here).

  Args:
    indices: Integer indices of shape ``(..., S)``; ``−1`` skips a stage.
    codebooks: Stage codebooks, shape ``(S, K, D)``, floating.

  Returns:
    Float32 vectors of shape ``indices.shape[:-1] + (D,)``.

  References:
    Zeghidour et al., `SoundStream: An End-to-End Neural Audio Codec
    <https://arxiv.org/abs/2107.03312>`_, 2021.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import rvq
    >>> codebooks = jnp.array([[[0.0], [4.0]], [[0.0], [1.0]]])
    >>> print(rvq.residual_lookup(jnp.array([[1, 1], [1, -1]]), codebooks))
    [[5.]
     [4.]]
  """
  _check_codebooks(codebooks)
  _checks.check_integer("indices", indices)
  s = np.shape(codebooks)[0]
  _checks.check_last_dim("indices", indices, s, "one column per stage")
  codebooks = vq._upcast(codebooks)
  indices = jnp.asarray(indices)
  total = 0.0
  for i in range(s):
    idx = indices[..., i]
    code = jnp.take(codebooks[i], jnp.maximum(idx, 0), axis=0)
    total = total + jnp.where((idx >= 0)[..., None], code, 0.0)
  return total


def sample_num_stages(
    key: Array, num_stages: int, *, shape: tuple[int, ...] = (), rate: float = 1.0
) -> Array:
  """Quantizer dropout: how many stages to use, ``n ~ U{1, …, S}`` w.p. ``rate``.

  With probability ``rate`` a draw is uniform on ``{1, …, S}``, otherwise it
  is ``S`` (SoundStream applies the dropout to every example, ``rate = 1``).
  ``shape=()`` gives one draw for the batch; pass the batch shape for one
  draw per vector. With the same ``key`` on every device the draw is the
  same everywhere, so sharded and single-device runs agree.

  Args:
    key: PRNG key.
    num_stages: ``S >= 1``.
    shape: Shape of the draw.
    rate: Probability in ``[0, 1]`` that dropout is applied.

  Returns:
    Int32 array of ``shape`` with values in ``[1, S]``.

  References:
    Zeghidour et al., `SoundStream: An End-to-End Neural Audio Codec
    <https://arxiv.org/abs/2107.03312>`_, 2021, section III.C.

  Example:
    >>> import jax
    >>> from dgmjax.losses import rvq
    >>> n = rvq.sample_num_stages(jax.random.key(0), 4, shape=(1000,))
    >>> print(int(n.min()), int(n.max()))
    1 4
  """
  _checks.check_int_at_least("num_stages", num_stages, 1)
  _checks.check_in_range("rate", rate, 0.0, 1.0)
  k_n, k_on = jax.random.split(key)
  n = jax.random.randint(k_n, shape, 1, num_stages + 1, dtype=jnp.int32)
  on = jax.random.bernoulli(k_on, rate, shape)
  return jnp.where(on, n, num_stages).astype(jnp.int32)
