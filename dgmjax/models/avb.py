"""Adversarial Variational Bayes (Mescheder et al. 2017) as pure functions.

Lecture 7, slides "Adversarial Variational Bayes" and "Density ratio trick".
The encoder is implicit, z = g_φ(x, ε) with ε ~ N(0, I), so q(z|x) has no
density and the ELBO's KL term cannot be evaluated. A discriminator
T_ψ(x, z), trained by binary cross-entropy to tell (x, z ~ q(z|x)) (label 1)
from (x, z ~ p(z)) (label 0), reaches T* = log q(z|x) − log p(z), so the
encoder and decoder maximise E_q[log p(x|z) − T(x, z)]
(:meth:`AVB.model_loss`) while T minimises :meth:`AVB.disc_loss`.

``encoder_kind="gaussian"`` gives the reparameterised N(μ(x), σ²(x)) with
the same widths: with ``kl="analytic"`` the plain VAE baseline, with
``"adversarial"`` the KL-estimator check. ``adaptive_contrast`` normalises
the posterior sample by moments estimated from ``ac_samples`` separate draws
(a sample normalised by moments it helped estimate is bounded,
|z̃_j| ≤ √(M − 1), a give-away to T).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax import rng
from dgmjax.eval import likelihood
from dgmjax.losses import density_ratio as dr
from dgmjax.losses import elbo
from dgmjax.nn.avb import ACTIVATIONS, Discriminator, ImplicitEncoder
from dgmjax.nn.vae import MLPDecoder, MLPEncoder

ENCODERS = ("implicit", "gaussian")
KLS = ("adversarial", "analytic")


@dataclasses.dataclass(frozen=True, eq=False)
class AVB:
  """Encoder, decoder and discriminator of an AVB run, as pure functions.

  ``params`` (the model player's) is ``{"encoder", "decoder"}``; the
  discriminator's parameters are separate (the other player).
  """

  encoder: nn.Module
  decoder: nn.Module
  disc: Discriminator | None
  encoder_kind: str
  latent_dim: int
  noise_dim: int
  adaptive_contrast: bool
  kl: str = "adversarial"
  ac_samples: int = 16

  @property
  def eps_dim(self) -> int:
    """Size of the noise one posterior sample consumes."""
    return self.noise_dim if self.encoder_kind == "implicit" else self.latent_dim

  def init(self, key, x):
    k_enc, k_dec, k_disc = jax.random.split(key, 3)
    b = x.shape[0]
    eps = jnp.zeros((1, b, self.eps_dim), jnp.float32)
    z = jnp.zeros((b, self.latent_dim), jnp.float32)
    if self.encoder_kind == "implicit":
      enc = self.encoder.init(k_enc, x, eps)
    else:
      enc = self.encoder.init(k_enc, x)
    params = {"encoder": enc, "decoder": self.decoder.init(k_dec, z)}
    disc = self.disc.init(k_disc, x, z) if self.disc is not None else None
    return params, disc

  def sample(self, params, x, eps):
    """z ~ q(z|x) for noise eps (S, B, e) -> z (S, B, d), without moments."""
    if self.encoder_kind == "gaussian":
      mean, log_var = self.encoder.apply(params["encoder"], x)
      return mean + jnp.exp(0.5 * log_var) * eps
    return self.encoder.apply(params["encoder"], x, eps)

  def posterior(self, params, x, eps, eps_moments=None):
    """z ~ q(z|x) for noise eps (S, B, e) -> (z (S, B, d), mean, std).

    ``mean``/``std`` (B, d) are the exact moments (Gaussian encoder), the
    moments of the draws made with the *separate* noise ``eps_moments``
    (M, B, e) (implicit encoder with adaptive contrast), or None. Separate
    draws matter: a sample normalised by moments that include itself is
    bounded, |z̃_j| ≤ √(M − 1), which a discriminator spots at once.
    """
    if self.encoder_kind == "gaussian":
      mean, log_var = self.encoder.apply(params["encoder"], x)
      std = jnp.exp(0.5 * log_var)
      return mean + std * eps, mean, std
    z = self.encoder.apply(params["encoder"], x, eps)
    if self.adaptive_contrast:
      if eps_moments is None:
        raise ValueError("adaptive contrast with an implicit encoder needs eps_moments.")
      mean, std = dr.estimate_moments(self.encoder.apply(params["encoder"], x, eps_moments),
                                      axis=0)
      return z, mean, std
    return z, None, None

  def log_likelihood(self, params, z, x):
    """log p(x|z), z (S, B, d), x (B, H, W, C) -> (S, B)."""
    logits = self.decoder.apply(params["decoder"], z)
    return elbo.bernoulli_log_likelihood(x=jnp.broadcast_to(x, logits.shape), logits=logits,
                                             event_ndims=3)

  def disc_inputs(self, z, mean, std):
    """What T sees of the posterior samples: z, or z̃ = (z − μ)/σ (adaptive contrast)."""
    if not self.adaptive_contrast:
      return z
    return dr.adaptive_contrast_normalize(z, jnp.broadcast_to(mean, z.shape),
                                          jnp.broadcast_to(std, z.shape))[0]

  def kl_estimate(self, disc_params, x, z, mean, std):
    """Per-sample KL(q(z|x)||p(z)) estimate from T, (S, B)."""
    t = self.disc.apply(disc_params, x, self.disc_inputs(z, mean, std))
    if not self.adaptive_contrast:
      return dr.avb_kl_term(t)
    return dr.adaptive_contrast_kl(t, z, jnp.broadcast_to(mean, z.shape),
                                   jnp.broadcast_to(std, z.shape))

  def proposal(self, params, x, key, *, num_moment_samples: int = 256):
    """(mean, log_var), each (B, d), that centre the importance-sampling proposal.

    The Gaussian encoder's own q; for the implicit encoder the moments of
    ``num_moment_samples`` draws of q(z|x) (``estimate_moments``).
    """
    if self.encoder_kind == "gaussian":
      return self.encoder.apply(params["encoder"], x)
    eps = rng.normal(key, (num_moment_samples, x.shape[0], self.eps_dim))
    mean, std = dr.estimate_moments(self.encoder.apply(params["encoder"], x, eps), axis=0)
    return mean, 2.0 * jnp.log(std)

  def log_marginal(self, params, x, key, *, num_samples: int, chunk_size: int,
                   num_moment_samples: int = 256, scales: tuple[float, ...] = (1.0,),
                   prior_weight: float = 0.0):
    """Importance-sampled log p(x) per example, (B,); see
    :func:`dgmjax.eval.likelihood.importance_log_marginal`."""
    k_fit, k_is = jax.random.split(key)
    mean, log_var = self.proposal(params, x, k_fit, num_moment_samples=num_moment_samples)
    return likelihood.importance_log_marginal(
        lambda z: self.log_likelihood(params, z, x), mean, log_var, k_is,
        num_samples=num_samples, chunk_size=chunk_size, scales=scales,
        prior_weight=prior_weight)

  # --------------------------------------------------------------------------
  # The two players' losses (AVB Algorithm 1)
  # --------------------------------------------------------------------------
  def noise(self, key: jax.Array, batch: int, num: int):
    """ε for ``num`` loss samples per x, and ε for the moment draws (or None)."""
    k_eps, k_mom = jax.random.split(key)
    eps = rng.normal(k_eps, (num, batch, self.eps_dim))
    if not (self.adaptive_contrast and self.encoder_kind == "implicit"):
      return eps, None
    return eps, rng.normal(k_mom, (self.ac_samples, batch, self.eps_dim))

  def terms(self, params, disc_params, x, eps, eps_moments=None):
    """log p(x|z), the KL estimate and the analytic KL (Gaussian q, else None), each (S, B)."""
    z, mean, std = self.posterior(params, x, eps, eps_moments)
    log_lik = self.log_likelihood(params, z, x)
    exact = None
    if self.encoder_kind == "gaussian":
      exact = jnp.broadcast_to(elbo.gaussian_kl_standard(mean, 2.0 * jnp.log(std)),
                               log_lik.shape)
    kl = self.kl_estimate(disc_params, x, z, mean, std) if self.kl == "adversarial" else exact
    return log_lik, kl, exact

  def disc_loss(self, disc_params, params, x, key):
    """T's BCE on posterior (label 1) vs prior (label 0) samples, and its accuracy.

    The model is the other player: T learns on its samples, not through them.
    """
    k_post, k_prior = jax.random.split(key)
    b = x.shape[0]
    eps, eps_m = self.noise(k_post, b, 1)
    z, mean, std = self.posterior(params, x, eps, eps_m)
    z_post = jax.lax.stop_gradient(self.disc_inputs(z, mean, std))
    z_prior = rng.normal(k_prior, (1, b, self.latent_dim))
    t_post = self.disc.apply(disc_params, x, z_post)
    t_prior = self.disc.apply(disc_params, x, z_prior)
    l_post, l_prior = dr.avb_discriminator_loss(t_post, t_prior)
    acc = 0.5 * (jnp.mean(t_post > 0) + jnp.mean(t_prior < 0))
    return jnp.mean(l_post) + jnp.mean(l_prior), acc

  def model_loss(self, params, disc_params, x, key):
    """−mean(log p(x|z) − KL estimate) over the encoder and decoder, and its terms.

    ``disc_params`` is a constant of this loss, while z = g(x, ε, φ) stays
    differentiable inside T, so ∇_φ reaches the encoder through ∂T/∂z (AVB
    Proposition 2).
    """
    eps, eps_m = self.noise(key, x.shape[0], 1)
    log_lik, kl, exact = self.terms(params, disc_params, x, eps, eps_m)
    aux = {"rec": jnp.mean(log_lik), "kl": jnp.mean(kl)}
    if exact is not None and self.kl == "adversarial":
      aux["kl_analytic"] = jnp.mean(exact)
    return -jnp.mean(dr.avb_elbo(log_lik, kl)), aux


def make_avb(
    *,
    image_shape: tuple[int, int, int],
    encoder: str = "implicit",
    kl: str = "adversarial",
    latent_dim: int = 2,
    noise_dim: int = 8,
    noise_every_layer: bool = True,
    hidden: tuple[int, ...] = (256, 256),
    disc_hidden: tuple[int, ...] = (256, 256),
    disc_x_hidden: tuple[int, ...] = (),
    disc_activation: str = "relu",
    disc_prior_term: bool = True,
    adaptive_contrast: bool = False,
    ac_samples: int = 16,
) -> AVB:
  """An :class:`AVB` with MLP nets; the decoder mirrors the encoder widths.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from dgmjax.models.avb import make_avb
    >>> m = make_avb(image_shape=(2, 2, 1), hidden=(8,), disc_hidden=(8,))
    >>> params, disc = m.init(jax.random.key(0), jnp.zeros((4, 2, 2, 1)))
    >>> eps = jax.random.normal(jax.random.key(1), (5, 4, m.eps_dim))
    >>> print(m.sample(params, jnp.zeros((4, 2, 2, 1)), eps).shape)
    (5, 4, 2)
  """
  if encoder not in ENCODERS:
    raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}.")
  if kl not in KLS:
    raise ValueError(f"kl must be one of {KLS}, got {kl!r}.")
  if kl == "analytic" and encoder != "gaussian":
    raise ValueError("kl='analytic' needs encoder='gaussian' (an implicit q has no density).")
  hidden = tuple(hidden)
  if encoder == "implicit":
    enc = ImplicitEncoder(latent_dim, hidden, noise_every_layer)
  else:
    enc = MLPEncoder(latent_dim, hidden)
  dec = MLPDecoder(tuple(image_shape), tuple(reversed(hidden)))
  disc = None
  if kl == "adversarial":
    disc = Discriminator(tuple(disc_hidden), tuple(disc_x_hidden), disc_prior_term,
                         ACTIVATIONS[disc_activation])
  return AVB(enc, dec, disc, encoder, latent_dim, noise_dim, adaptive_contrast, kl,
             ac_samples)
