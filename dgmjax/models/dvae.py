"""Discrete-latent VAEs as pure functions: the categorical VAE and the dVAE.

Lecture 7, "Discrete VAE latents" → "Gumbel-softmax trick" → "DALL-E/dVAE".
:class:`DiscreteVAE` wires an encoder of logits of q(c|x) (one categorical
per latent variable), a decoder p(x|ĉ) of a (relaxed or one-hot) code, and a
prior p(c) (uniform, or learned logits), with the terms of the ELBO and the
importance-weighted bound with hard codes. The layers are in
:mod:`dgmjax.nn.dvae`; :func:`make_discrete_vae` builds the two families.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.eval import example_keys
from dgmjax.losses import elbo, gumbel
from dgmjax.nn import dvae as dvae_nn

MODELS = ("categorical", "dvae")
LIKELIHOODS = ("bernoulli", "logit_laplace")


@dataclasses.dataclass(frozen=True)
class DiscreteVAE:
  """Encoder, decoder and the terms of the ELBO, as pure functions of params.

  ``latent_shape`` is ``(N, K)`` for the categorical VAE and ``(h, w, K)``
  for the dVAE; the last axis holds the classes.
  """

  encoder: nn.Module
  decoder: nn.Module
  image_shape: tuple[int, int, int]
  latent_shape: tuple[int, ...]
  likelihood: str = "bernoulli"
  learned_prior: bool = False
  pixel_eps: float = 0.1
  min_log_scale: float = 0.0

  def _log_scale(self, raw: jax.Array) -> jax.Array:
    # Smooth floor: ≈ raw above the floor, → floor below it, gradient never 0.
    return self.min_log_scale + jax.nn.softplus(raw - self.min_log_scale)

  @property
  def num_vars(self) -> int:
    return math.prod(self.latent_shape[:-1])

  @property
  def num_classes(self) -> int:
    return self.latent_shape[-1]

  def init(self, key: jax.Array, x: jax.Array) -> dict:
    k_enc, k_dec = jax.random.split(key)
    codes = jnp.zeros((x.shape[0], *self.latent_shape), jnp.float32)
    params = {"encoder": self.encoder.init(k_enc, x),
              "decoder": self.decoder.init(k_dec, codes)}
    if self.learned_prior:
      params["prior"] = jnp.zeros(self.latent_shape, jnp.float32)
    return params

  def logits(self, params, x: jax.Array) -> jax.Array:
    return self.encoder.apply(params["encoder"], x)

  def prior_logits(self, params) -> jax.Array:
    if self.learned_prior:
      return params["prior"]
    return jnp.zeros(self.latent_shape, jnp.float32)

  def log_likelihood(self, params, codes: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x|ĉ) per example, summed over pixels."""
    out = self.decoder.apply(params["decoder"], codes)
    if self.likelihood == "bernoulli":
      return elbo.bernoulli_log_likelihood(x=x, logits=out, event_ndims=3)
    c = self.image_shape[-1]
    x_mapped = elbo.map_pixels(x, eps=self.pixel_eps)
    return elbo.logit_laplace_log_likelihood(
        x_mapped, out[..., :c], self._log_scale(out[..., c:]), event_ndims=3)

  def kl(self, params, logits: jax.Array) -> jax.Array:
    """KL(q(c|x) || p(c)) per example, summed over the latent variables."""
    if self.learned_prior:
      prior = jnp.broadcast_to(self.prior_logits(params), logits.shape)
      per_var = gumbel.categorical_kl(logits, prior)
    else:
      per_var = gumbel.categorical_kl_uniform(logits)
    return jnp.sum(per_var.reshape(per_var.shape[0], -1), axis=1)

  def log_prior(self, params, codes: jax.Array) -> jax.Array:
    """log p(c) of one-hot codes, per example."""
    n = len(self.latent_shape) - 1
    return dvae_nn.codes_log_prob(codes, self.prior_logits(params), event_ndims=n)

  def log_posterior(self, codes: jax.Array, logits: jax.Array) -> jax.Array:
    """log q(c|x) of one-hot codes, per example."""
    return dvae_nn.codes_log_prob(codes, logits, event_ndims=len(self.latent_shape) - 1)

  def mean_image(self, params, codes: jax.Array) -> jax.Array:
    """The decoder's mean pixels in [0, 1] (for pictures)."""
    out = self.decoder.apply(params["decoder"], codes)
    if self.likelihood == "bernoulli":
      return jax.nn.sigmoid(out)
    c = self.image_shape[-1]
    return elbo.unmap_pixels(jax.nn.sigmoid(out[..., :c]), eps=self.pixel_eps)

  def iwae_bound(self, params, x: jax.Array, key: jax.Array, *, num_samples: int,
                 chunk_size: int, index: jax.Array | None = None) -> jax.Array:
    """L_k per example with k hard proposals c_j ~ q(c|x) (a bound on log p(x)).

    With ``index`` ((B,) positions of the examples in their split) each
    example's proposals come from ``example_keys(key, index)`` alone, so a
    split gives the same bounds in any batch size or device count; without
    it one key serves the whole batch.
    """
    if index is not None:
      one = lambda xi, ki: self.iwae_bound(params, xi[None], ki, num_samples=num_samples,
                                           chunk_size=chunk_size)[0]
      return jax.vmap(one)(x, example_keys(key, index))
    logits = self.logits(params, x)
    b = x.shape[0]

    def log_weights(chunk_key, n):
      codes = dvae_nn.hard_codes(chunk_key, jnp.broadcast_to(logits, (n, *logits.shape)))
      flat = codes.reshape(n * b, *self.latent_shape)
      xs = jnp.broadcast_to(x, (n, *x.shape)).reshape(n * b, *x.shape[1:])
      ll = self.log_likelihood(params, flat, xs).reshape(n, b)
      lp = self.log_prior(params, codes.reshape(n * b, *self.latent_shape)).reshape(n, b)
      lq = self.log_posterior(codes, logits[None])
      return elbo.iwae_log_weights(ll, lp, lq)

    return elbo.chunked_iwae_bound(log_weights, key, num_samples,
                                       chunk_size=chunk_size)


def make_discrete_vae(
    *,
    model: str,
    image_shape: tuple[int, int, int],
    likelihood: str = "bernoulli",
    learned_prior: bool = False,
    num_vars: int = 20,
    num_classes: int = 10,
    hidden: tuple[int, ...] = (512, 256),
    num_codes: int = 64,
    code_dim: int = 32,
    channels: tuple[int, ...] = (32, 64),
    num_res_blocks: int = 1,
    res_hidden: int = 32,
    pixel_eps: float = 0.1,
    min_log_scale: float = 0.0,
) -> DiscreteVAE:
  """Jang et al.'s categorical VAE (``model="categorical"``: MLP, N × K) or a
  DALL-E-style dVAE (``"dvae"``: conv, an (H/4)×(W/4) grid over K codes).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from dgmjax.models.dvae import make_discrete_vae
    >>> m = make_discrete_vae(model="categorical", image_shape=(4, 4, 1), num_vars=3,
    ...                       num_classes=5, hidden=(8,))
    >>> params = m.init(jax.random.key(0), jnp.zeros((2, 4, 4, 1)))
    >>> logits = m.logits(params, jnp.zeros((2, 4, 4, 1)))
    >>> print(logits.shape, jnp.allclose(m.kl(params, jnp.zeros_like(logits)), 0.0))
    (2, 3, 5) True
  """
  if model not in MODELS:
    raise ValueError(f"model must be one of {MODELS}, got {model!r}.")
  if likelihood not in LIKELIHOODS:
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")
  h, w, c = image_shape
  out_c = c if likelihood == "bernoulli" else 2 * c
  if model == "categorical":
    latent = (num_vars, num_classes)
    enc = dvae_nn.MLPEncoder(num_vars, num_classes, tuple(hidden))
    dec = dvae_nn.MLPDecoder((h, w, out_c), tuple(reversed(hidden)))
  else:
    latent = (h // 4, w // 4, num_codes)
    enc = dvae_nn.ConvCodeEncoder(num_codes, tuple(channels), num_res_blocks, res_hidden)
    dec = dvae_nn.ConvCodeDecoder(num_codes, code_dim, tuple(reversed(channels)),
                                  num_res_blocks, res_hidden, out_c)
  return DiscreteVAE(enc, dec, tuple(image_shape), latent, likelihood, learned_prior,
                     float(pixel_eps), float(min_log_scale))
