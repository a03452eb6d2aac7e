"""Discrete-latent VAEs: Jang et al.'s categorical VAE and a DALL-E-style dVAE.

Lecture 7, "Discrete VAE latents", "Gumbel-softmax trick" and "DALL-E/dVAE".
The encoder outputs logits of ``q(c|x) = Categorical(softmax(logits))`` for
each latent variable; a (relaxed or hard) one-hot code ``ĉ`` goes to the
decoder. Two families:

* :class:`MLPEncoder` / :class:`MLPDecoder`: the categorical VAE of Jang,
  Gu, Poole (2016), 784-512-256-(N×K) and (N×K)-256-512-784, ReLU.
* :class:`ConvCodeEncoder` / :class:`ConvCodeDecoder`: the dVAE of DALL-E
  (Ramesh et al. 2021), scaled down: a conv encoder to a grid of logits over
  K codes, the codebook mix ``z = Σ_k ĉ_k e_k`` (:class:`Codebook`), and a
  conv decoder (``dgmjax.nn.conv``).

:func:`sample_codes` draws the code fed to the decoder during training with
one of the gradient estimators of the lecture; :func:`hard_codes` draws the
exact one-hot sample used at evaluation; :func:`codes_log_prob` is
``log q(c|x)`` (or ``log p(c)``) of a one-hot code, the density the
importance-weighted bound needs.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax import _checks
from dgmjax.losses import gumbel
from dgmjax.nn.conv import ConvDecoder, ConvEncoder

__all__ = [
    "ESTIMATORS",
    "sample_codes",
    "hard_codes",
    "codes_log_prob",
    "MLPEncoder",
    "MLPDecoder",
    "Codebook",
    "ConvCodeEncoder",
    "ConvCodeDecoder",
]

#: Training-time gradient estimators for a categorical latent.
#: ``gumbel_softmax``: the relaxed sample ĉ forward and backward (Jang et al.
#: "Gumbel-Softmax", Maddison et al. "Concrete"); ``st_gumbel``: one-hot of
#: argmax ĉ forward, ĉ's gradient backward; ``st_argmax``: one-hot of the
#: mode of q forward (no sampling), softmax's gradient backward;
#: ``st_categorical``: a one-hot sample of q forward, softmax's gradient
#: backward (the "ST" row of Jang et al.'s table 1).
ESTIMATORS = ("gumbel_softmax", "st_gumbel", "st_argmax", "st_categorical")


def sample_codes(
    key: jax.Array,
    logits: jax.Array,
    *,
    estimator: str,
    temperature: float | jax.Array = 1.0,
) -> jax.Array:
  """The code ĉ fed to the decoder during training, per estimator.

  Classes are on the last axis. ``temperature`` is used by the two Gumbel
  estimators only. Every estimator except ``gumbel_softmax`` gives an exact
  one-hot forward value; their gradients differ (see :data:`ESTIMATORS`).

  Args:
    key: PRNG key (unused by ``st_argmax``).
    logits: ``(..., K)`` logits of q(c|x).
    estimator: one of :data:`ESTIMATORS`.
    temperature: Gumbel-softmax temperature τ > 0.

  Returns:
    Array shaped like ``logits``, on the simplex along the last axis.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> logits = jnp.array([[0.0, 2.0, 0.0]])
    >>> print(sample_codes(jax.random.key(0), logits, estimator="st_argmax"))
    [[0. 1. 0.]]
    >>> y = sample_codes(jax.random.key(0), logits, estimator="gumbel_softmax",
    ...                  temperature=0.5)
    >>> print(jnp.round(y.sum(-1), 4))
    [1.]
  """
  if estimator == "gumbel_softmax":
    return gumbel.gumbel_softmax_sample(key, logits, temperature=temperature)
  if estimator == "st_gumbel":
    return gumbel.gumbel_softmax_sample(
        key, logits, temperature=temperature, hard=True
    )
  if estimator == "st_argmax":
    return gumbel.straight_through_argmax(logits)
  if estimator == "st_categorical":
    return gumbel.straight_through_categorical(key, logits)
  raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")


def hard_codes(key: jax.Array, logits: jax.Array) -> jax.Array:
  """An exact one-hot sample ``c ~ q(c|x)`` (Gumbel-max), no gradient path.

  Used at evaluation by every estimator alike, so the test ELBO and the
  importance-weighted bound are those of the discrete-latent model.

  Args:
    key: PRNG key.
    logits: ``(..., K)`` logits.

  Returns:
    One-hot float array shaped like ``logits``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> print(hard_codes(jax.random.key(0), jnp.array([[0.0, 50.0, 0.0]])))
    [[0. 1. 0.]]
  """
  k = jnp.shape(logits)[-1]
  idx = gumbel.gumbel_max_sample(key, jax.lax.stop_gradient(logits))
  return jax.nn.one_hot(idx, k, dtype=jnp.result_type(logits))


def codes_log_prob(
    codes: jax.Array, logits: jax.Array, *, event_ndims: int = 1
) -> jax.Array:
  """``log Categorical(c; softmax(logits))`` of one-hot codes, summed over variables.

  ``log q(c|x) = Σ_i Σ_k c_ik log_softmax(logits_i)_k`` over the latent
  variables ``i`` (the trailing ``event_ndims`` axes before the class axis).

  Args:
    codes: one-hot ``(..., K)`` codes.
    logits: logits of the same shape, or broadcastable to it (e.g. a prior
      shared by a batch).
    event_ndims: number of variable axes (before the class axis) to sum.

  Returns:
    Log-probabilities of shape ``codes.shape[:-1 - event_ndims]``.

  Example:
    >>> import jax.numpy as jnp
    >>> c = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])      # 1 example, 2 variables
    >>> logits = jnp.log(jnp.array([[0.5, 0.5], [0.25, 0.75]]))
    >>> print(jnp.round(codes_log_prob(c, logits), 4))  # log 0.5 + log 0.75
    [-0.9808]
  """
  _checks.check_floating("codes", codes)
  _checks.check_floating("logits", logits)
  _checks.check_min_rank("codes", codes, event_ndims + 1)
  try:
    shape = jnp.broadcast_shapes(jnp.shape(logits), jnp.shape(codes))
  except ValueError:
    shape = None
  if shape != jnp.shape(codes):
    raise ValueError(
        f"logits of shape {jnp.shape(logits)} must broadcast to codes of shape "
        f"{jnp.shape(codes)}."
    )
  per_var = jnp.sum(codes * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  axes = tuple(range(per_var.ndim - event_ndims, per_var.ndim))
  return jnp.sum(per_var, axis=axes)


class MLPEncoder(nn.Module):
  """``(B, *image) -> (B, num_vars, num_classes)`` logits; Jang et al.'s MLP.

  Example (Jang et al.'s encoder has 784·512 + 512·256 + 256·200 weights plus biases):
    >>> enc = MLPEncoder()
    >>> params = enc.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> sum(p.size for p in jax.tree.leaves(params)) == 784*512 + 512 + 512*256 + 256 + 256*200 + 200
    True
  """

  num_vars: int = 20
  num_classes: int = 10
  hidden: Sequence[int] = (512, 256)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    logits = nn.Dense(self.num_vars * self.num_classes)(h)
    return logits.reshape(x.shape[0], self.num_vars, self.num_classes)


class MLPDecoder(nn.Module):
  """``(B, num_vars, num_classes)`` codes -> ``(B, *out_shape)`` pixel parameters.

  Example (the decoder is a function of the flattened codes, so it sees every variable):
    >>> dec = MLPDecoder((28, 28, 1), hidden=(8,))
    >>> c = jax.nn.one_hot(jnp.array([[0, 1], [0, 2]]), 3)  # 2 images, 2 variables, 3 classes
    >>> params = dec.init(jax.random.key(0), c)
    >>> out = dec.apply(params, c)
    >>> print(out.shape, bool(jnp.any(out[0] != out[1])))
    (2, 28, 28, 1) True
  """

  out_shape: Sequence[int]
  hidden: Sequence[int] = (256, 512)

  @nn.compact
  def __call__(self, codes: jax.Array) -> jax.Array:
    h = codes.reshape(codes.shape[0], -1)
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    size = 1
    for d in self.out_shape:
      size *= d
    return nn.Dense(size)(h).reshape(codes.shape[0], *self.out_shape)


class Codebook(nn.Module):
  """``ĉ (..., K) -> z = Σ_k ĉ_k e_k (..., D)``: the lecture's relaxed embedding.

  With a one-hot ĉ this is the lookup ``e_c``; with a relaxed ĉ it is the
  convex mix of Lecture 7, slide "Gumbel-softmax trick" (``z = Σ ĉ_k e_k``).

  Example:
    >>> book = Codebook(num_codes=4, code_dim=3)
    >>> params = book.init(jax.random.key(0), jnp.zeros((1, 4)))
    >>> e = params["params"]["embedding"]
    >>> bool(jnp.allclose(book.apply(params, jnp.eye(4)[2:3]), e[2]))  # one-hot: a lookup
    True
    >>> mix = jnp.array([[0.5, 0.5, 0.0, 0.0]])
    >>> bool(jnp.allclose(book.apply(params, mix), (e[0] + e[1]) / 2))  # relaxed: the mix
    True
  """

  num_codes: int
  code_dim: int

  @nn.compact
  def __call__(self, codes: jax.Array) -> jax.Array:
    _checks.check_last_dim("codes", codes, self.num_codes, "num_codes")
    table = self.param(
        "embedding", nn.initializers.normal(1.0), (self.num_codes, self.code_dim)
    )
    return jnp.einsum("...k,kd->...d", codes, table.astype(codes.dtype))


class ConvCodeEncoder(nn.Module):
  """``(B, H, W, C) -> (B, H/4, W/4, num_codes)`` logits over the codebook.

  Example (each 4×4 patch of a 28×28 image gets its own categorical):
    >>> enc = ConvCodeEncoder(num_codes=8, channels=(4, 4), res_hidden=4)
    >>> x = jnp.zeros((2, 28, 28, 1))
    >>> print(enc.apply(enc.init(jax.random.key(0), x), x).shape)
    (2, 7, 7, 8)
  """

  num_codes: int = 64
  channels: Sequence[int] = (32, 64)
  num_res_blocks: int = 1
  res_hidden: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return ConvEncoder(
        tuple(self.channels), self.num_res_blocks, self.res_hidden, self.num_codes
    )(x)


class ConvCodeDecoder(nn.Module):
  """``ĉ (B, h, w, num_codes) -> (B, 4h, 4w, out_channels)`` via the codebook.

  Example (two different code grids decode to different images):
    >>> dec = ConvCodeDecoder(num_codes=8, code_dim=4, channels=(4, 4), res_hidden=4)
    >>> c = jax.nn.one_hot(jnp.stack([jnp.zeros((7, 7), int), jnp.ones((7, 7), int)]), 8)
    >>> out = dec.apply(dec.init(jax.random.key(0), c), c)
    >>> print(out.shape, bool(jnp.any(out[0] != out[1])))
    (2, 28, 28, 1) True
  """

  num_codes: int = 64
  code_dim: int = 32
  channels: Sequence[int] = (64, 32)
  num_res_blocks: int = 1
  res_hidden: int = 32
  out_channels: int = 1

  @nn.compact
  def __call__(self, codes: jax.Array) -> jax.Array:
    z = Codebook(self.num_codes, self.code_dim)(codes)
    return ConvDecoder(
        tuple(self.channels), self.num_res_blocks, self.res_hidden,
        self.out_channels,
    )(z)
