"""Vector quantisation for VQ-VAE (van den Oord et al., 2017).

Lecture 7, slides "Deterministic variational posterior" and "Straight-through
gradient estimation". The encoder output ``z_e`` of every latent position is
snapped to its nearest codebook vector, ``q(c = k* | x) = 1`` for
``k* = argmin_k ‖z_e − e_k‖``; the decoder sees ``z_q = e_{k*}`` and the
gradient of the reconstruction term is copied from ``z_q`` to ``z_e``
(straight-through). Two codebook learning rules are provided: the codebook
loss ``‖sg[z_e] − e‖²`` (optimised by gradient descent) and the exponential
moving average (EMA) of cluster statistics from the paper's appendix A.1.
Beyond the lecture: the rotation trick (:func:`rotation_trick`, Fifty et al.
2024), an alternative to the straight-through gradient, and the
l2-normalised lookup of ViT-VQGAN's factorized codes (:func:`cosine_quantize`).

Conventions used throughout the module:

* ``z`` has shape ``(..., D)``; the codebook has shape ``(K, D)``. Every
  leading axis of ``z`` is a batch/position axis.
* Distances, losses, cluster statistics and EMA state are float32 (inputs in
  bfloat16/float16 are cast up), because the ``|z|² − 2z·e + |e|²`` expansion
  loses every significant digit to cancellation in 16-bit floats.
* Losses are per vector: the squared error is averaged over ``D`` (as in the
  paper's reference implementations, where ``β = 0.25`` was tuned) and never
  over the batch; the caller reduces.
* Functions that pool statistics over examples take ``axis_name``; inside
  ``jax.shard_map``/``pmap`` they ``psum`` over that axis so that every device
  holds the same global statistics and hence the same codebook.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dgmjax import _checks
from dgmjax.argext import first_argmin  # noqa: F401  (public here before dgmjax.argext)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
PrecisionLike = jax.lax.PrecisionLike

_HIGHEST = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------
# Internal helpers.
# ---------------------------------------------------------------------------


def _upcast(x: ArrayLike) -> Array:
  """Casts floating ``x`` to at least float32 (float64 stays float64)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_codebook(codebook: ArrayLike, name: str = "codebook") -> None:
  _checks.check_floating(name, codebook)
  _checks.check_rank(name, codebook, 2)
  if jnp.shape(codebook)[0] < 2:
    raise ValueError(
        f"{name} must hold K >= 2 codes (shape (K, D)), got shape "
        f"{jnp.shape(codebook)}."
    )


def _check_vectors(name: str, z: ArrayLike, dim: int) -> None:
  _checks.check_floating(name, z)
  _checks.check_min_rank(name, z, 1)
  _checks.check_last_dim(name, z, dim, "the codebook's code dimension D")


def _cross(z: Array, codebook: Array, precision: PrecisionLike) -> Array:
  """``z · codebookᵀ`` in float32 as a single (N, D) x (D, K) matmul."""
  dim = codebook.shape[1]
  flat = z.reshape(-1, dim)
  dims = (((1,), (1,)), ((), ()))
  if flat.dtype == codebook.dtype and jnp.finfo(flat.dtype).bits <= 16:
    # The product of two 16-bit floats is exact in float32, so a native
    # 16-bit matmul with float32 accumulation equals the float32 matmul of the
    # cast-up inputs while running on the fast 16-bit units.
    cross = jax.lax.dot_general(
        flat, codebook, dims, preferred_element_type=jnp.float32
    )
  else:
    cross = jax.lax.dot_general(
        _upcast(flat), _upcast(codebook), dims, precision=precision
    )
  return cross.reshape(z.shape[:-1] + (codebook.shape[0],))


def _scores(z: Array, codebook: Array, precision: PrecisionLike) -> Array:
  """``|e|² − 2 z·e``: the squared distance minus the per-row constant |z|²."""
  e = _upcast(codebook)
  return jnp.sum(e * e, axis=-1) - 2.0 * _cross(z, codebook, precision)


def _cluster_stats(
    flat_z: Array, flat_indices: Array, num_codes: int, axis_name: str | None
) -> tuple[Array, Array]:
  """Per-code counts ``n_k`` and sums ``s_k`` (psum'd over ``axis_name``)."""
  # segment_sum is O(N·D); a one-hot matmul would be O(N·K·D) and materialise
  # an (N, K) matrix. Out-of-range indices are dropped.
  counts = jax.ops.segment_sum(
      jnp.ones(flat_indices.shape, jnp.float32), flat_indices, num_codes
  )
  sums = jax.ops.segment_sum(flat_z, flat_indices, num_codes)
  if axis_name is not None:
    counts, sums = jax.lax.psum((counts, sums), axis_name)
  return counts, sums


def _sample_rows(
    key: Array, rows: Array, num: int, axis_name: str | None
) -> Array:
  """Draws ``num`` rows uniformly with replacement from the (global) batch.

  The draw is ``g = randint(key, (num,), 0, N_global)`` on the concatenation
  of all devices' rows, so a sharded call with a replicated ``key`` returns
  exactly what the single-device call on the concatenated batch returns.
  Each device gathers the candidates it owns and one ``psum`` of the
  (num, D) result (zeros elsewhere) broadcasts them: the cost is that of the
  EMA statistics' psum, instead of an all-gather of the whole batch.
  """
  n_local = rows.shape[0]
  if axis_name is None:
    return rows[jax.random.randint(key, (num,), 0, n_local)]
  n_devices = jax.lax.axis_size(axis_name)
  g = jax.random.randint(key, (num,), 0, n_devices * n_local)
  owner, local = jnp.divmod(g, n_local)
  mine = owner == jax.lax.axis_index(axis_name)
  # x + 0 is exact, so every device receives the owner's row bit for bit.
  picked = jnp.where(mine[:, None], rows[local], jnp.zeros((), rows.dtype))
  return jax.lax.psum(picked, axis_name)


# ---------------------------------------------------------------------------
# Nearest-code assignment (the deterministic posterior).
# ---------------------------------------------------------------------------


def squared_distances(
    z: ArrayLike,
    codebook: ArrayLike,
    *,
    precision: PrecisionLike = _HIGHEST,
) -> Array:
  """Squared Euclidean distances from every vector to every code.

  ``d[..., k] = ‖z − e_k‖² = |z|² − 2 z·e_k + |e_k|²``, computed with one
  matmul and clamped at 0 (the expansion can round slightly below 0).

  Implements the distance inside the argmin of Lecture 7, slide
  "Deterministic variational posterior".

  Args:
    z: Encoder outputs, shape ``(..., D)``, floating.
    codebook: Codes ``e_k``, shape ``(K, D)``, floating.
    precision: Matmul precision for float32 inputs. ``HIGHEST`` (default)
      gives true float32 products on every backend; ``DEFAULT`` lets GPUs/TPUs
      use TF32/bfloat16 passes, which is faster but can flip near-ties.
      Matching 16-bit inputs always use a native 16-bit matmul with float32
      accumulation, which is exact for the products.

  Returns:
    Float32 array of shape ``(..., K)``.

  References:
    van den Oord, Vinyals, Kavukcuoglu, `Neural Discrete Representation
    Learning <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> codebook = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> z = jnp.array([[0.5, 0.0], [1.0, 2.0]])
    >>> print(jnp.round(vq.squared_distances(z, codebook), 4))
    [[0.25 1.25]
     [5.   1.  ]]
  """
  _check_codebook(codebook)
  _check_vectors("z", z, jnp.shape(codebook)[1])
  z, codebook = jnp.asarray(z), jnp.asarray(codebook)
  zf = _upcast(z)
  d = jnp.sum(zf * zf, axis=-1, keepdims=True) + _scores(z, codebook, precision)
  return jnp.maximum(d, 0.0)


def nearest_code(
    z: ArrayLike,
    codebook: ArrayLike,
    *,
    precision: PrecisionLike = _HIGHEST,
) -> Array:
  """Index of the nearest code for every vector.

  ``k*(z) = argmin_k ‖z − e_k‖² = argmin_k (|e_k|² − 2 z·e_k)``; the constant
  ``|z|²`` is dropped because it cannot change the argmin. Ties go to the
  smallest index.

  Implements Lecture 7, slide "Deterministic variational posterior":
  ``q(c = k* | x) = 1`` for ``k* = argmin_k ‖z_e − e_k‖``.

  Args:
    z: Encoder outputs, shape ``(..., D)``, floating.
    codebook: Codes, shape ``(K, D)``, floating.
    precision: See :func:`squared_distances`.

  Returns:
    Int32 indices of shape ``z.shape[:-1]``.

  References:
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> codebook = jnp.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    >>> z = jnp.array([[0.2, 0.1], [0.9, 1.3], [-2.0, 2.0]])
    >>> print(vq.nearest_code(z, codebook))
    [0 1 2]
  """
  _check_codebook(codebook)
  _check_vectors("z", z, jnp.shape(codebook)[1])
  z, codebook = jnp.asarray(z), jnp.asarray(codebook)
  return first_argmin(_scores(z, codebook, precision))


def quantize(
    z: ArrayLike,
    codebook: ArrayLike,
    *,
    precision: PrecisionLike = _HIGHEST,
) -> tuple[Array, Array]:
  """Replaces every vector by its nearest code.

  ``z_q = e_{k*}``, ``k* = argmin_k ‖z − e_k‖``. The lookup is a gather, so
  ``z_q`` equals ``codebook[indices]`` bit for bit (a one-hot matmul would
  round on TPUs), and gradients flow into the selected codebook rows only.

  Implements Lecture 7, slide "Deterministic variational posterior" (the
  decoder input ``z_q``).

  Args:
    z: Encoder outputs ``z_e``, shape ``(..., D)``, floating.
    codebook: Codes, shape ``(K, D)``, floating.
    precision: See :func:`squared_distances`.

  Returns:
    ``(z_q, indices)``: ``z_q`` of shape ``z.shape[:-1] + (D,)`` in the
    codebook's dtype and int32 ``indices`` of shape ``z.shape[:-1]``.

  References:
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> codebook = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> z_q, idx = vq.quantize(jnp.array([[0.9, 0.8], [0.1, -0.3]]), codebook)
    >>> print(z_q)
    [[1. 1.]
     [0. 0.]]
    >>> print(idx)
    [1 0]
  """
  indices = nearest_code(z, codebook, precision=precision)
  codebook = jnp.asarray(codebook)
  z_q = codebook.at[indices].get(mode="promise_in_bounds")
  return z_q, indices


def straight_through(z_e: ArrayLike, z_q: ArrayLike) -> Array:
  """Straight-through estimator: forward ``z_q``, backward identity to ``z_e``.

  ``ST(z_e, z_q) = z_e + sg[z_q − z_e]``, so ``∂ST/∂z_e = I`` and
  ``∂ST/∂z_q = 0``. It is evaluated as ``sg[z_q] + (z_e − sg[z_e])``, which
  is the same function with the same derivatives but returns ``z_q`` exactly
  (``z_e + (z_q − z_e)`` can round, e.g. for ``|z_e| ≫ |z_q|``).

  Implements Lecture 7, slide "Straight-through gradient estimation":
  ``∂ log p(x|z_q)/∂φ ≈ ∂ log p(x|z_q)/∂z_q · ∂z_e/∂φ``.

  Args:
    z_e: Encoder outputs, floating.
    z_q: Quantised vectors, same shape as ``z_e``.

  Returns:
    Array equal to ``z_q`` whose gradient is routed to ``z_e``.

  References:
    Bengio, Léonard, Courville, `Estimating or Propagating Gradients Through
    Stochastic Neurons for Conditional Computation
    <https://arxiv.org/abs/1308.3432>`_, 2013;
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> z_e = jnp.array([0.3, -0.4])
    >>> z_q = jnp.array([0.0, -1.0])
    >>> print(vq.straight_through(z_e, z_q))
    [ 0. -1.]
    >>> f = lambda z_e: jnp.sum(3.0 * vq.straight_through(z_e, z_q))
    >>> print(jax.grad(f)(z_e))
    [3. 3.]
  """
  _checks.check_floating("z_e", z_e)
  _checks.check_floating("z_q", z_q)
  _checks.check_same_shape(z_e=z_e, z_q=z_q)
  sg = jax.lax.stop_gradient
  return sg(z_q) + (z_e - sg(z_e))


def rotation_trick(z_e: ArrayLike, z_q: ArrayLike, *, eps: float = 1e-6) -> Array:
  """Rotation trick: forward ``z_q``, backward rotated and rescaled to ``z_e``.

  With ``e = z_e``, ``q = z_q``, ``ê = e/‖e‖``, ``q̂ = q/‖q‖``,
  ``r = (ê + q̂)/‖ê + q̂‖`` and ``R = I − 2 r rᵀ + 2 q̂ êᵀ`` (the rotation in the
  plane of ``e`` and ``q`` taking ``ê`` to ``q̂``), the output is::

    q̃ = sg[‖q‖/‖e‖ · R] e,      q̃ = q,      ∂L/∂e = (‖q‖/‖e‖) Rᵀ ∂L/∂q̃.

  ``R`` is applied with two dot products (``Rv = v − 2r(r·v) + 2q̂(ê·v)``),
  never formed as a ``(D, D)`` matrix. As in :func:`straight_through`, the
  value is returned as ``sg[q] + (q̃ − sg[q̃])``, which equals ``z_q`` bit for
  bit. No gradient reaches ``z_q``: the codebook is trained by its own loss
  or by EMA. Unlike the straight-through estimator, the gradient keeps the
  angle between itself and ``e`` that it had with ``q``, so vectors that
  share a code receive different updates.

  Degenerate vectors (float32 arithmetic):

  * ``‖e‖ ≤ eps`` or ``‖q‖ ≤ eps``: ``ê`` or ``q̂`` is undefined and the scale
    ``‖q‖/‖e‖`` is unbounded, so the vector falls back to the
    straight-through gradient (identity).
  * ``e`` anti-parallel to ``q`` (``‖ê + q̂‖ ≤ sqrt(eps)``): the rotation plane
    is undefined and ``r`` is unstable; the ``r rᵀ`` term is dropped, leaving
    ``R = I + 2q̂êᵀ ≈ I − 2êêᵀ``, the reflection that still maps ``ê`` to
    ``q̂`` and preserves norms.

  Both cases give finite outputs and gradients.

  An alternative to the straight-through gradient of Lecture 7, slide
  "Straight-through gradient estimation".

  Args:
    z_e: Encoder outputs, shape ``(..., D)``, floating.
    z_q: Quantised vectors, same shape as ``z_e``.
    eps: Norm below which a vector is treated as zero; > 0.

  Returns:
    Array equal to ``z_q`` (dtype ``result_type(z_e, z_q)``) whose gradient is
    routed to ``z_e`` through the rotation.

  References:
    Fifty et al., `Restructuring Vector Quantization with the Rotation Trick
    <https://arxiv.org/abs/2410.06424>`_, 2024.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> z_e = jnp.array([1.0, 0.0])
    >>> z_q = jnp.array([0.0, 2.0])
    >>> print(vq.rotation_trick(z_e, z_q))
    [0. 2.]
    >>> # R is the 90° rotation e_x -> e_y and the scale is ‖q‖/‖e‖ = 2, so
    >>> # an upstream gradient along e_y comes back along e_x, doubled.
    >>> g = jax.grad(lambda e: vq.rotation_trick(e, z_q)[1])(z_e)
    >>> print(jnp.round(g, 6))
    [2. 0.]
  """
  _checks.check_floating("z_e", z_e)
  _checks.check_floating("z_q", z_q)
  _checks.check_min_rank("z_e", z_e, 1)
  _checks.check_same_shape(z_e=z_e, z_q=z_q)
  _checks.check_positive("eps", eps)
  sg = jax.lax.stop_gradient
  out_dtype = jnp.result_type(z_e, z_q)
  e = _upcast(z_e)
  q = sg(_upcast(z_q))
  e0 = sg(e)

  def norm(v):
    return jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True))

  def dot(a, b):
    return jnp.sum(a * b, axis=-1, keepdims=True)

  norm_e, norm_q = norm(e0), norm(q)
  ok = (norm_e > eps) & (norm_q > eps)
  # Dividing by 1 where a norm is (near) zero keeps the unused branch finite,
  # so that neither the value nor the gradient of jnp.where sees a NaN.
  e_hat = e0 / jnp.where(ok, norm_e, 1.0)
  q_hat = q / jnp.where(ok, norm_q, 1.0)
  s = e_hat + q_hat
  norm_s = norm(s)
  planar = norm_s > jnp.sqrt(eps)
  r = jnp.where(planar, s / jnp.where(planar, norm_s, 1.0), 0.0)
  scale = jnp.where(ok, norm_q / jnp.where(ok, norm_e, 1.0), 1.0)
  # Only the last factor e carries a gradient, so d(rotated)/de = scale·R.
  rotated = scale * (e - 2.0 * r * dot(r, e) + 2.0 * q_hat * dot(e_hat, e))
  rotated = jnp.where(ok, rotated, e)
  return (q + (rotated - sg(rotated))).astype(out_dtype)


def l2_normalize(x: ArrayLike, *, eps: float = 1e-12) -> Array:
  """Scales every vector to unit Euclidean norm, in float32.

  ``x̂ = x / max(‖x‖, sqrt(eps))`` over the last axis; the floor keeps zero
  vectors at zero (instead of NaN) with a finite gradient.

  Used by the cosine / factorized codebooks of ViT-VQGAN, where both the
  low-dimensional encoder output and the codes are l2-normalised before the
  nearest-code lookup of Lecture 7, slide "Deterministic variational
  posterior".

  Args:
    x: Array of shape ``(..., D)``, floating.
    eps: Floor on the squared norm; > 0.

  Returns:
    Float32 (or float64) array of the shape of ``x``.

  References:
    Yu et al., `Vector-quantized Image Modeling with Improved VQGAN
    <https://arxiv.org/abs/2110.04627>`_, 2021.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> print(vq.l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])))
    [[0.6 0.8]
     [0.  0. ]]
  """
  _checks.check_floating("x", x)
  _checks.check_min_rank("x", x, 1)
  _checks.check_positive("eps", eps)
  x = _upcast(x)
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps))


def cosine_quantize(
    z: ArrayLike,
    codebook: ArrayLike,
    *,
    precision: PrecisionLike = _HIGHEST,
) -> tuple[Array, Array]:
  """Factorized-code lookup: nearest l2-normalised code to the normalised input.

  ``k* = argmin_k ‖ẑ − ê_k‖² = argmax_k ẑ·ê_k`` with ``ẑ = z/‖z‖`` and
  ``ê_k = e_k/‖e_k‖``; returns ``(ê_{k*}, k*)``. On the unit sphere the
  Euclidean and cosine nearest codes coincide. ViT-VQGAN applies it to a
  low-dimensional linear projection of the encoder output (e.g. 768 → 32
  channels), which improves codebook usage; the projection is a layer (see
  :class:`dgmjax.nn.quantizers.FactorizedQuantizer`).

  The deterministic posterior of Lecture 7, slide "Deterministic variational
  posterior", on the sphere.

  Args:
    z: Low-dimensional encoder outputs, shape ``(..., D)``, floating.
    codebook: Codes, shape ``(K, D)`` (normalised here), floating.
    precision: See :func:`squared_distances`.

  Returns:
    ``(z_q, indices)``: float32 unit-norm codes of shape ``z.shape`` and
    int32 indices of shape ``z.shape[:-1]``.

  References:
    Yu et al., `Vector-quantized Image Modeling with Improved VQGAN
    <https://arxiv.org/abs/2110.04627>`_, 2021, section 3.2.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> codebook = jnp.array([[10.0, 0.0], [0.0, 0.1]])
    >>> z_q, idx = vq.cosine_quantize(jnp.array([[0.2, 0.3], [5.0, 1.0]]), codebook)
    >>> print(idx)
    [1 0]
    >>> print(z_q)
    [[0. 1.]
     [1. 0.]]
  """
  _check_codebook(codebook)
  _check_vectors("z", z, jnp.shape(codebook)[1])
  return quantize(l2_normalize(z), l2_normalize(codebook), precision=precision)


# ---------------------------------------------------------------------------
# Losses (per vector; mean over D).
# ---------------------------------------------------------------------------


def _check_pair(z_e: ArrayLike, z_q: ArrayLike) -> None:
  _checks.check_floating("z_e", z_e)
  _checks.check_floating("z_q", z_q)
  _checks.check_min_rank("z_e", z_e, 1)
  _checks.check_same_shape(z_e=z_e, z_q=z_q)


def codebook_loss(z_e: ArrayLike, z_q: ArrayLike) -> Array:
  """VQ (codebook) loss: moves the selected codes towards the encoder outputs.

  ``L_codebook = (1/D) ‖sg[z_e] − z_q‖²``; its gradient reaches ``z_q`` (the
  codebook) only. The mean over ``D`` matches the paper's reference code, for
  which ``β = 0.25`` was tuned.

  Implements the second term of the VQ-VAE objective (van den Oord et al.,
  eq. 3) that accompanies Lecture 7, slide "Deterministic variational
  posterior".

  Args:
    z_e: Encoder outputs, shape ``(..., D)``, floating.
    z_q: Selected codes (e.g. from :func:`quantize`), same shape.

  Returns:
    Float32 per-vector loss of shape ``z_e.shape[:-1]``.

  References:
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> z_e = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    >>> z_q = jnp.array([[1.0, 1.0], [3.0, 1.0]])
    >>> print(vq.codebook_loss(z_e, z_q))
    [0.5 5. ]
  """
  _check_pair(z_e, z_q)
  diff = _upcast(jax.lax.stop_gradient(z_e)) - _upcast(z_q)
  return jnp.mean(jnp.square(diff), axis=-1)


def commitment_loss(z_e: ArrayLike, z_q: ArrayLike) -> Array:
  """Commitment loss: keeps the encoder outputs close to their codes.

  ``L_commit = (1/D) ‖z_e − sg[z_q]‖²``; its gradient reaches ``z_e`` (the
  encoder) only.

  Implements the third term of the VQ-VAE objective (van den Oord et al.,
  eq. 3) that accompanies Lecture 7, slide "Deterministic variational
  posterior".

  Args:
    z_e: Encoder outputs, shape ``(..., D)``, floating.
    z_q: Selected codes, same shape.

  Returns:
    Float32 per-vector loss of shape ``z_e.shape[:-1]``.

  References:
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> z_e = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    >>> z_q = jnp.array([[1.0, 1.0], [3.0, 1.0]])
    >>> print(vq.commitment_loss(z_e, z_q))
    [0.5 5. ]
  """
  _check_pair(z_e, z_q)
  diff = _upcast(z_e) - _upcast(jax.lax.stop_gradient(z_q))
  return jnp.mean(jnp.square(diff), axis=-1)


def vq_loss(z_e: ArrayLike, z_q: ArrayLike, *, beta: float = 0.25) -> Array:
  """VQ-VAE latent loss: codebook loss plus β times the commitment loss.

  ``L = (1/D) ‖sg[z_e] − z_q‖² + β (1/D) ‖z_e − sg[z_q]‖²``. Its value is
  ``(1 + β)·mean_D (z_e − z_q)²``; the codebook receives the gradient of the
  first term and the encoder that of the second. The reconstruction term
  ``−log p(x | ST(z_e, z_q))`` is added by the caller.

  Implements the VQ-VAE objective (van den Oord et al., eq. 3) of Lecture 7,
  slides "Deterministic variational posterior" and "Straight-through gradient
  estimation".

  Args:
    z_e: Encoder outputs, shape ``(..., D)``, floating.
    z_q: Selected codes, same shape.
    beta: Commitment weight β >= 0 (0.25 in the paper; results are
      insensitive for β in [0.1, 2]).

  Returns:
    Float32 per-vector loss of shape ``z_e.shape[:-1]``.

  References:
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> z_e = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    >>> z_q = jnp.array([[1.0, 1.0], [3.0, 1.0]])
    >>> print(vq.vq_loss(z_e, z_q, beta=0.25))
    [0.625 6.25 ]
  """
  _checks.check_positive("beta", beta, allow_zero=True)
  return codebook_loss(z_e, z_q) + beta * commitment_loss(z_e, z_q)


# ---------------------------------------------------------------------------
# EMA codebook (paper appendix A.1).
# ---------------------------------------------------------------------------


class EMAState(NamedTuple):
  """State of an EMA codebook; all fields float32.

  Attributes:
    codebook: ``(K, D)`` codes ``e_k = embed_sum_k / smoothed(cluster_size)_k``.
    cluster_size: ``(K,)`` EMA of the per-batch assignment counts ``n_k``.
    embed_sum: ``(K, D)`` EMA of the per-batch sums ``s_k`` of the vectors
      assigned to code k.
  """

  codebook: Array
  cluster_size: Array
  embed_sum: Array


def _check_state(state: EMAState) -> tuple[int, int]:
  _check_codebook(state.codebook, "state.codebook")
  k, d = jnp.shape(state.codebook)
  _checks.check_floating("state.cluster_size", state.cluster_size)
  _checks.check_floating("state.embed_sum", state.embed_sum)
  if jnp.shape(state.cluster_size) != (k,):
    raise ValueError(
        f"state.cluster_size must have shape ({k},), got "
        f"{jnp.shape(state.cluster_size)}."
    )
  if jnp.shape(state.embed_sum) != (k, d):
    raise ValueError(
        f"state.embed_sum must have shape ({k}, {d}), got "
        f"{jnp.shape(state.embed_sum)}."
    )
  return k, d


def ema_init(
    codebook: ArrayLike, *, cluster_size: ArrayLike | None = None
) -> EMAState:
  """Initial EMA state that leaves ``codebook`` unchanged in expectation.

  ``cluster_size = c`` (default: ones) and ``embed_sum = codebook · c``, i.e.
  every code starts as the mean of ``c_k`` pseudo-observations of itself.
  Then ``embed_sum / cluster_size`` is exactly ``codebook``, and the first
  :func:`ema_update` moves a code only towards the vectors actually assigned
  to it: a code with no assignments, or a k-means centre updated with the
  data it was fitted on, stays where it is (up to the ``ε`` Laplace
  smoothing). Initialising both statistics to zeros instead (a common
  choice) sends every unused code to 0 on the first update, which is how
  k-means initialisations collapse after one step.

  Passing the k-means counts (:func:`kmeans_init` with
  ``return_counts=True``), rescaled to the batch size, weighs the
  initialisation like the data it came from.

  Implements the EMA codebook of van den Oord et al., appendix A.1, used for
  the codebook of Lecture 7, slide "Deterministic variational posterior".

  Args:
    codebook: Initial codes, shape ``(K, D)``, floating.
    cluster_size: Optional initial counts, shape ``(K,)``, all > 0.

  Returns:
    An :class:`EMAState` in float32.

  References:
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017, appendix A.1.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> state = vq.ema_init(jnp.array([[0.0, 2.0], [1.0, 1.0]]))
    >>> print(state.cluster_size)
    [1. 1.]
    >>> print(state.embed_sum)
    [[0. 2.]
     [1. 1.]]
  """
  _check_codebook(codebook)
  codebook = jnp.asarray(codebook, jnp.float32)
  k = codebook.shape[0]
  if cluster_size is None:
    cluster_size = jnp.ones((k,), jnp.float32)
  else:
    _checks.check_rank("cluster_size", cluster_size, 1)
    _checks.check_last_dim("cluster_size", cluster_size, k, "one count per code")
    _checks.check_positive("cluster_size", cluster_size)
    cluster_size = jnp.asarray(cluster_size, jnp.float32)
  return EMAState(codebook, cluster_size, codebook * cluster_size[:, None])


def ema_update(
    state: EMAState,
    z: ArrayLike,
    indices: ArrayLike,
    *,
    decay: float = 0.99,
    eps: float = 1e-5,
    axis_name: str | None = None,
) -> EMAState:
  """One EMA step of the codebook towards the means of its assigned vectors.

  With batch counts ``n_k = #{i : k_i = k}`` and sums
  ``s_k = Σ_{i: k_i = k} z_i`` (summed over devices when ``axis_name`` is
  given)::

    N_k ← γ N_k + (1 − γ) n_k,        m_k ← γ m_k + (1 − γ) s_k,
    Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j,    e_k = m_k / Ñ_k.

  ``Ñ`` is the Laplace-smoothed count that keeps ``e_k`` finite for codes
  that have not been used for a long time (their ``N_k`` decays like
  ``γ^t``). For a fixed batch and fixed assignments the iteration converges
  to ``e_k = mean_k · n_k (n + Kε) / ((n_k + ε) n)`` with ``n = Σ_k n_k``,
  i.e. the cluster mean up to ``O(Kε/n)``. An unused code keeps
  ``m_k / N_k`` exactly and moves only through the smoothing, which
  eventually (after ``~log ε / log γ`` steps) shrinks it towards 0: restart
  such codes with :func:`restart_dead_codes_ema`.

  Implements van den Oord et al., appendix A.1 (the EMA alternative to the
  codebook loss of Lecture 7, slide "Deterministic variational posterior").

  Args:
    state: Current :class:`EMAState`.
    z: Encoder outputs ``z_e``, shape ``(..., D)``, floating.
    indices: Their codes (e.g. from :func:`quantize`), integer, shape
      ``z.shape[:-1]``. Out-of-range indices are ignored.
    decay: EMA decay γ in (0, 1).
    eps: Laplace smoothing ε > 0.
    axis_name: If given, ``n_k`` and ``s_k`` are ``psum``'d over this mapped
      axis, so that every device ends with the same codebook.

  Returns:
    The updated :class:`EMAState` (float32).

  References:
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017, appendix A.1.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from dgmjax.losses import vq
    >>> state = vq.ema_init(jnp.array([[0.0, 0.0], [4.0, 4.0]]))
    >>> z = jnp.array([[1.0, 1.0], [1.0, 2.0], [4.0, 4.0]])
    >>> _, idx = vq.quantize(z, state.codebook)
    >>> for _ in range(60):
    ...   state = vq.ema_update(state, z, idx, decay=0.5)
    >>> print(np.round(np.asarray(state.codebook), 3))
    [[1.  1.5]
     [4.  4. ]]
  """
  k, d = _check_state(state)
  _check_vectors("z", z, d)
  _checks.check_integer("indices", indices)
  if jnp.shape(indices) != jnp.shape(z)[:-1]:
    raise ValueError(
        f"indices must have shape z.shape[:-1] = {jnp.shape(z)[:-1]}, got "
        f"{jnp.shape(indices)}."
    )
  _checks.check_in_range("decay", decay, 0.0, 1.0, closed=False)
  _checks.check_positive("eps", eps)

  flat_z = jnp.asarray(z, jnp.float32).reshape(-1, d)
  flat_idx = jnp.asarray(indices).reshape(-1)
  counts, sums = _cluster_stats(flat_z, flat_idx, k, axis_name)

  old_size = jnp.asarray(state.cluster_size, jnp.float32)
  old_sum = jnp.asarray(state.embed_sum, jnp.float32)
  cluster_size = decay * old_size + (1.0 - decay) * counts
  embed_sum = decay * old_sum + (1.0 - decay) * sums
  total = jnp.sum(cluster_size)
  smoothed = (cluster_size + eps) / (total + k * eps) * total
  codebook = embed_sum / smoothed[:, None]
  return EMAState(codebook, cluster_size, embed_sum)


# ---------------------------------------------------------------------------
# Codebook usage.
# ---------------------------------------------------------------------------


def code_histogram(
    indices: ArrayLike, num_codes: int, *, axis_name: str | None = None
) -> Array:
  """Number of vectors assigned to each code.

  ``h_k = #{i : k_i = k}``, summed over devices when ``axis_name`` is given
  (the global histogram, which is what :func:`perplexity` and
  :func:`codes_used` must be computed from: per-device perplexities averaged
  over devices understate the codebook usage). Out-of-range indices are not
  counted.

  Used to monitor the deterministic posterior of Lecture 7, slide
  "Deterministic variational posterior".

  Args:
    indices: Integer code indices of any shape.
    num_codes: Codebook size K >= 2 (static).
    axis_name: Optional mapped axis to sum the histogram over.

  Returns:
    Float32 counts of shape ``(K,)``.

  References:
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> print(vq.code_histogram(jnp.array([[0, 2], [2, 2]]), 4))
    [1. 0. 3. 0.]
  """
  _checks.check_integer("indices", indices)
  _checks.check_int_at_least("num_codes", num_codes, 2)
  flat = jnp.asarray(indices).reshape(-1)
  counts = jax.ops.segment_sum(
      jnp.ones(flat.shape, jnp.float32), flat, num_codes
  )
  if axis_name is not None:
    counts = jax.lax.psum(counts, axis_name)
  return counts


def perplexity(counts: ArrayLike) -> Array:
  """Perplexity of a code histogram: the effective number of codes in use.

  ``PPL = exp(H(p))``, ``p = counts / Σ counts``, ``H(p) = −Σ_k p_k log p_k``
  with ``0 · log 0 = 0``. Ranges from 1 (one code) to K (uniform usage); an
  all-zero histogram gives 1. Reduces over the last axis; gradients are
  finite (zero) at empty codes.

  Used to monitor the deterministic posterior of Lecture 7, slide
  "Deterministic variational posterior".

  Args:
    counts: Non-negative counts (or probabilities), shape ``(..., K)``;
      pass the global histogram (:func:`code_histogram` with ``axis_name``).

  Returns:
    Float32 perplexity of shape ``counts.shape[:-1]``.

  References:
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> print(jnp.round(vq.perplexity(jnp.array([5.0, 5.0, 0.0, 0.0])), 4))
    2.0
  """
  _checks.check_min_rank("counts", counts, 1)
  counts = _upcast(jnp.asarray(counts))
  total = jnp.sum(counts, axis=-1, keepdims=True)
  p = counts / jnp.where(total > 0, total, 1.0)
  # Double where: log(1) = 0 at empty codes keeps value and gradient finite.
  log_p = jnp.log(jnp.where(p > 0, p, 1.0))
  return jnp.exp(-jnp.sum(p * log_p, axis=-1))


def codes_used(counts: ArrayLike) -> Array:
  """Fraction of codes with a non-zero count.

  ``U = (1/K) #{k : counts_k > 0}``, over the last axis. Pass the global
  histogram (see :func:`code_histogram`).

  Used to monitor codebook collapse (dead codes) of the deterministic
  posterior of Lecture 7, slide "Deterministic variational posterior".

  Args:
    counts: Counts of shape ``(..., K)``.

  Returns:
    Float32 fraction in [0, 1] of shape ``counts.shape[:-1]``.

  References:
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> print(vq.codes_used(jnp.array([3.0, 0.0, 1.0, 0.0])))
    0.5
  """
  _checks.check_min_rank("counts", counts, 1)
  return jnp.mean(jnp.asarray(counts) > 0, axis=-1, dtype=jnp.float32)


# ---------------------------------------------------------------------------
# Dead-code restarts and k-means initialisation.
# ---------------------------------------------------------------------------


def _check_restart_inputs(
    codebook: ArrayLike, usage: ArrayLike, z: ArrayLike, threshold: float,
    usage_name: str,
) -> None:
  k, d = jnp.shape(codebook)
  if jnp.shape(usage) != (k,):
    raise ValueError(
        f"{usage_name} must have shape ({k},) (one value per code), got "
        f"{jnp.shape(usage)}."
    )
  _check_vectors("z", z, d)
  if jnp.size(z) == 0:
    raise ValueError(f"z must contain at least one vector, got {jnp.shape(z)}.")
  _checks.check_positive("threshold", threshold)


def restart_dead_codes(
    key: Array,
    codebook: ArrayLike,
    usage: ArrayLike,
    z: ArrayLike,
    *,
    threshold: float = 1.0,
    axis_name: str | None = None,
) -> tuple[Array, Array]:
  """Replaces rarely used codes by encoder outputs drawn from the batch.

  ``e_k ← z_{j_k}`` for every k with ``usage_k < threshold``, where
  ``j_k`` is drawn uniformly with replacement from the (global) batch, so it
  works for K > N. Other codes are returned unchanged. Fixed shapes, no
  Python control flow on values: safe to call every step inside ``jit``.

  With ``axis_name``, the draw is over the concatenation of all devices'
  ``z``: each device looks up the rows it owns and one ``psum`` of a
  ``(K, D)`` array broadcasts them, so every device gets the identical
  codebook (equal to the single-device result on the concatenated batch).
  This needs a replicated ``key`` and a global ``usage`` (e.g. the EMA
  ``cluster_size``, or :func:`code_histogram` with ``axis_name``).

  Counteracts codebook collapse of the deterministic posterior of Lecture 7,
  slide "Deterministic variational posterior".

  Args:
    key: PRNG key, the same on every device.
    codebook: Codes, shape ``(K, D)``, floating.
    usage: Per-code usage, shape ``(K,)`` (EMA counts or a histogram).
    z: Current encoder outputs, shape ``(..., D)``, floating.
    threshold: Codes with ``usage < threshold`` are restarted; > 0.
    axis_name: Optional mapped axis the batch is sharded over.

  Returns:
    ``(new_codebook, num_restarted)``: the codebook in its dtype and the
    int32 number of restarted codes.

  References:
    Dhariwal et al., `Jukebox: A Generative Model for Music
    <https://arxiv.org/abs/2005.00341>`_, 2020 (random restarts);
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> codebook = jnp.array([[0.0, 0.0], [9.0, 9.0]])
    >>> z = jnp.full((4, 2), 0.5)
    >>> new, n = vq.restart_dead_codes(
    ...     jax.random.key(0), codebook, jnp.array([4.0, 0.0]), z)
    >>> print(new)
    [[0.  0. ]
     [0.5 0.5]]
    >>> print(n)
    1
  """
  _check_codebook(codebook)
  _check_restart_inputs(codebook, usage, z, threshold, "usage")
  codebook = jnp.asarray(codebook)
  k, d = codebook.shape
  rows = jnp.asarray(z).reshape(-1, d)
  candidates = _sample_rows(key, rows, k, axis_name).astype(codebook.dtype)
  dead = jnp.asarray(usage) < threshold
  new_codebook = jnp.where(dead[:, None], candidates, codebook)
  return new_codebook, jnp.sum(dead, dtype=jnp.int32)


def restart_dead_codes_ema(
    key: Array,
    state: EMAState,
    z: ArrayLike,
    *,
    threshold: float = 1.0,
    axis_name: str | None = None,
) -> tuple[EMAState, Array]:
  """:func:`restart_dead_codes` for an EMA codebook, resetting its statistics.

  Codes with ``cluster_size_k < threshold`` become encoder outputs ``z_j``
  (see :func:`restart_dead_codes`), and their statistics are reset to
  ``cluster_size_k = threshold``, ``embed_sum_k = threshold · z_j``, so that
  ``embed_sum / cluster_size`` is the new code. Keeping the old
  ``embed_sum`` would make the next :func:`ema_update` pull the code straight
  back to where it died. A restarted code that then attracts no vectors
  decays below ``threshold`` again and is redrawn at the next call.

  Counteracts codebook collapse of the EMA codebook (van den Oord et al.,
  appendix A.1) for Lecture 7, slide "Deterministic variational posterior".

  Args:
    key: PRNG key, the same on every device.
    state: Current :class:`EMAState`.
    z: Current encoder outputs, shape ``(..., D)``, floating.
    threshold: EMA count below which a code is dead; > 0.
    axis_name: Optional mapped axis the batch is sharded over.

  Returns:
    ``(new_state, num_restarted)``.

  References:
    Dhariwal et al., `Jukebox: A Generative Model for Music
    <https://arxiv.org/abs/2005.00341>`_, 2020;
    van den Oord et al., `Neural Discrete Representation Learning
    <https://arxiv.org/abs/1711.00937>`_, 2017, appendix A.1.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> state = vq.EMAState(codebook=jnp.array([[0.0, 0.0], [9.0, 9.0]]),
    ...                     cluster_size=jnp.array([4.0, 0.01]),
    ...                     embed_sum=jnp.array([[0.0, 0.0], [0.09, 0.09]]))
    >>> z = jnp.full((4, 2), 0.5)
    >>> new, n = vq.restart_dead_codes_ema(jax.random.key(0), state, z)
    >>> print(new.cluster_size)
    [4. 1.]
    >>> print(new.embed_sum)
    [[0.  0. ]
     [0.5 0.5]]
  """
  _check_state(state)
  _check_restart_inputs(
      state.codebook, state.cluster_size, z, threshold, "state.cluster_size"
  )
  codebook, num = restart_dead_codes(
      key, state.codebook, state.cluster_size, z, threshold=threshold,
      axis_name=axis_name,
  )
  dead = state.cluster_size < threshold
  cluster_size = jnp.where(dead, threshold, state.cluster_size)
  embed_sum = jnp.where(dead[:, None], codebook * threshold, state.embed_sum)
  new_state = EMAState(
      codebook,
      cluster_size.astype(state.cluster_size.dtype),
      embed_sum.astype(state.embed_sum.dtype),
  )
  return new_state, num


def kmeans_init(
    key: Array,
    z: ArrayLike,
    num_codes: int,
    *,
    num_iters: int = 10,
    axis_name: str | None = None,
    return_counts: bool = False,
) -> Array | tuple[Array, Array]:
  """K-means (Lloyd's algorithm) codebook initialisation from encoder outputs.

  Centres start as ``K`` rows of ``z`` drawn uniformly with replacement
  (``j = randint(key, (K,), 0, N)`` on the flattened, global batch), then
  ``num_iters`` times: assign every vector to its nearest centre and move
  every centre to the mean of its cluster; a centre with an empty cluster
  keeps its previous position. Runs in one ``lax.fori_loop`` (jittable with
  ``num_codes``/``num_iters`` static). With ``axis_name`` the cluster counts
  and sums are ``psum``'d, so every device gets the same centres, equal to
  the single-device result on the concatenated batch.

  Initialises the codebook ``{e_k}`` of Lecture 7, slide "Discrete VAE
  latents"; pass the result to :func:`ema_init` for an EMA codebook.

  Args:
    key: PRNG key (the same on every device).
    z: Encoder outputs, shape ``(..., D)``, floating.
    num_codes: Codebook size K >= 2.
    num_iters: Number of Lloyd iterations >= 1.
    axis_name: Optional mapped axis the batch is sharded over.
    return_counts: Also return the cluster sizes of the final assignment
      (the clusters whose means are the returned centres), e.g. for
      :func:`ema_init` after rescaling to the batch size.

  Returns:
    The float32 ``(K, D)`` codebook, or ``(codebook, counts)``.

  References:
    Lloyd, `Least squares quantization in PCM
    <https://doi.org/10.1109/TIT.1982.1056489>`_, 1982;
    Łańcucki et al., `Robust Training of Vector Quantized Bottleneck Models
    <https://arxiv.org/abs/2005.08520>`_, 2020.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from dgmjax.losses import vq
    >>> z = jnp.array([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    >>> codebook = vq.kmeans_init(jax.random.key(3), z, 2)
    >>> print(jnp.sort(codebook, axis=0))
    [[ 0.   0.5]
     [10.  10.5]]
  """
  _checks.check_int_at_least("num_codes", num_codes, 2)
  _checks.check_int_at_least("num_iters", num_iters, 1)
  _checks.check_floating("z", z)
  _checks.check_min_rank("z", z, 1)
  if jnp.size(z) == 0:
    raise ValueError(f"z must contain at least one vector, got {jnp.shape(z)}.")
  d = jnp.shape(z)[-1]
  rows = jnp.asarray(z, jnp.float32).reshape(-1, d)
  centres = _sample_rows(key, rows, num_codes, axis_name)

  def lloyd_step(_, carry):
    centres, _ = carry
    indices = nearest_code(rows, centres)
    counts, sums = _cluster_stats(rows, indices, num_codes, axis_name)
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    return jnp.where(counts[:, None] > 0, means, centres), counts

  centres, counts = jax.lax.fori_loop(
      0, num_iters, lloyd_step,
      (centres, jnp.zeros((num_codes,), jnp.float32)),
  )
  return (centres, counts) if return_counts else centres
