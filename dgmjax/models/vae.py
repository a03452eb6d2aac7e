"""The Gaussian VAE of Lecture 7's first half, with an optional flow prior.

:class:`VAE` holds an encoder q(z|x) = N(μ(x), diag σ²(x)), a decoder
p(x|z) (Bernoulli logits or Gaussian means) and a prior p(z): N(0, I), or a
RealNVP flow p(z|λ) = N(f(z, λ); 0, I)·|det J_f| (slide "ELBO with
flow-based VAE prior"). Everything is a pure function of ``params``, so a
train step, an evaluator or the ELBO-surgery report
(:mod:`dgmjax.eval.surgery_report`) can call it under ``jit``.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.losses import elbo
from dgmjax.nn.flows import RealNVP
from dgmjax.nn.vae import make_encoder_decoder

PRIORS = ("gaussian", "flow")
LIKELIHOODS = ("bernoulli", "gaussian")


@dataclasses.dataclass(frozen=True)
class VAE:
  """A Gaussian-encoder VAE and its prior, as pure functions of ``params``.

  ``params`` is a dict with ``"encoder"``, ``"decoder"``, and ``"prior"``
  (flow prior) / ``"obs_log_var"`` (Gaussian likelihood) when used. The
  three methods ``encode``, ``log_likelihood`` and ``log_prior`` are all
  :func:`dgmjax.eval.surgery_report.split_report` needs, so any model offering them (e.g. another
  encoder with this decoder) can be reported the same way.
  """

  encoder: nn.Module
  decoder: nn.Module
  flow: RealNVP | None
  likelihood: str
  latent_dim: int
  pixel_format: str

  def init(self, key: jax.Array, x: jax.Array) -> dict:
    k_enc, k_dec, k_flow = jax.random.split(key, 3)
    z = jnp.zeros((x.shape[0], self.latent_dim), jnp.float32)
    params = {"encoder": self.encoder.init(k_enc, x), "decoder": self.decoder.init(k_dec, z)}
    if self.flow is not None:
      params["prior"] = self.flow.init(k_flow, z)
    if self.likelihood == "gaussian":
      # σ = 0.1 to start: pixels in [0, 1] are nowhere near unit variance.
      params["obs_log_var"] = jnp.asarray(math.log(0.01), jnp.float32)
    return params

  def encode(self, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x (B, H, W, C) -> (mean, log_var) of q(z|x), each (B, d)."""
    return self.encoder.apply(params["encoder"], x)

  def decode(self, params, z: jax.Array) -> jax.Array:
    """z (..., d) -> logits (Bernoulli) or means (Gaussian), (..., H, W, C)."""
    return self.decoder.apply(params["decoder"], z)

  def log_likelihood(self, params, z: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x|z) for z (..., B, d) and x (B, H, W, C) -> (..., B)."""
    out = self.decode(params, z)
    x = jnp.broadcast_to(x, out.shape)
    if self.likelihood == "bernoulli":
      return elbo.bernoulli_log_likelihood(x=x, logits=out, event_ndims=3)
    return elbo.gaussian_log_likelihood(x, out, params["obs_log_var"], event_ndims=3)

  def log_prior(self, params, z: jax.Array) -> jax.Array:
    """log p(z) (N(0, I) or the flow prior) for z (..., d) -> (...)."""
    if self.flow is None:
      return elbo.log_standard_normal(z)
    return self.flow.apply(params["prior"], z, method=RealNVP.log_prob)

  def kl(self, params, z, mean, log_var) -> jax.Array:
    """Per-example KL(q(z|x) || p(z)): closed form for N(0, I), else one-sample MC."""
    if self.flow is None:
      return elbo.gaussian_kl_standard(mean, log_var)
    return elbo.log_normal_diag(z, mean, log_var) - self.log_prior(params, z)

  def sample_latents(self, params, key: jax.Array, n: int) -> jax.Array:
    """z* ~ N(0, I) -> z = f⁻¹(z*) (the identity for the Gaussian prior)."""
    z_star = jax.random.normal(key, (n, self.latent_dim))
    if self.flow is None:
      return z_star
    return self.flow.apply(params["prior"], z_star, method=RealNVP.sample)

  def mean_image(self, params, z: jax.Array) -> jax.Array:
    """Decoder mean E[x|z] mapped to [0, 1] for pictures."""
    out = self.decode(params, z)
    if self.likelihood == "bernoulli":
      return jax.nn.sigmoid(out)
    if self.pixel_format == "symmetric":
      out = (out + 1.0) / 2.0
    return jnp.clip(out, 0.0, 1.0)


def make_vae(
    *,
    arch: str,
    image_shape: tuple[int, int, int],
    latent_dim: int,
    prior: str = "flow",
    likelihood: str = "bernoulli",
    pixel_format: str = "binary_dynamic",
    hidden: tuple[int, ...] = (512, 256),
    channels: tuple[int, ...] = (32, 64),
    num_res_blocks: int = 1,
    res_hidden: int = 32,
    flow_layers: int = 4,
    flow_hidden: tuple[int, ...] = (128, 128),
) -> VAE:
  """A :class:`VAE` with the MLP or conv encoder/decoder of :mod:`dgmjax.nn.vae`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from dgmjax.models.vae import make_vae
    >>> vae = make_vae(arch="mlp", image_shape=(4, 4, 1), latent_dim=2, prior="gaussian",
    ...                hidden=(8,))
    >>> params = vae.init(jax.random.key(0), jnp.zeros((3, 4, 4, 1)))
    >>> z = jnp.zeros((3, 2))
    >>> print(jnp.allclose(vae.log_prior(params, z), -jnp.log(2 * jnp.pi)))
    True
  """
  if prior not in PRIORS:
    raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}.")
  if likelihood not in LIKELIHOODS:
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")
  enc, dec = make_encoder_decoder(
      arch, image_shape=tuple(image_shape), latent_dim=latent_dim, hidden=tuple(hidden),
      channels=tuple(channels), num_res_blocks=num_res_blocks, res_hidden=res_hidden)
  flow = None
  if prior == "flow":
    flow = RealNVP(dim=latent_dim, num_layers=flow_layers, hidden=tuple(flow_hidden))
  return VAE(enc, dec, flow, likelihood, latent_dim, pixel_format)
