"""Adversarial Variational Bayes (Mescheder et al. 2017): ``python -m train.avb``.

Lecture 7, slides "Adversarial Variational Bayes" and "Density ratio trick".
The encoder is implicit, z = g_φ(x, ε) with ε ~ N(0, I), so q(z|x) has no
density and the KL term of the ELBO

  L(φ, θ) = E_q[log p(x|z, θ) − log q(z|x, φ) + log p(z)]

cannot be evaluated. A discriminator T_ψ(x, z) is trained by binary
cross-entropy to tell (x, z ~ q(z|x)) (label 1) from (x, z ~ p(z)) (label 0);
its optimum is T*(x, z) = log q(z|x) − log p(z), so the encoder and decoder
maximise E_q[log p(x|z) − T(x, z)]. A two-player game, one step of the
harness being:

1. ``disc_steps`` updates of ψ on fresh noise: BCE of T on posterior vs prior
   samples (:func:`~dgmjax.losses.density_ratio.avb_discriminator_loss`), with
   the model fixed;
2. one update of (φ, θ) on −E_q[log p(x|z)] + E_q[T(x, z)] with ψ fixed;
   gradients reach φ *through z inside T* (AVB Proposition 2, see
   :func:`~dgmjax.losses.density_ratio.avb_kl_term`).

Options (config keys):

* ``dataset``: ``"avb_toy"`` (default; the paper's four one-hot 2×2 images
  with a 2-D latent, data from :mod:`dgmjax.data.toy`), ``"digits"`` (offline
  MNIST digits) or ``"tfds:<name>"``. Pixels must be binary (Bernoulli
  decoder).
* ``encoder``: ``"implicit"`` (AVB) or ``"gaussian"`` (reparameterised
  N(μ(x), σ²(x)) with the same widths). ``kl``: ``"adversarial"`` (T) or
  ``"analytic"`` (closed-form KL; Gaussian encoder only: the plain VAE
  baseline with the very same decoder, data and steps). ``gaussian`` +
  ``adversarial`` is the estimator check: the step also logs the analytic
  KL next to T's estimate (``train/kl_analytic``, ``test/kl_analytic``).
* ``disc_prior_term``: add the analytic −log N(z; 0, I) = ‖z‖²/2 to T.
* ``adaptive_contrast``: estimate the moments μ̂(x), σ̂(x) of q(z|x) from
  ``ac_samples`` extra encoder draws (gradients flow through them), normalise
  the loss sample with them, z̃ = (z − μ̂)/σ̂, train T(x, z̃) against
  ε ~ N(0, I), and use KL ≈ T(x, z̃) + log r(z|x) − log p(z) with the Gaussian
  auxiliary r = N(μ̂, σ̂²) (:func:`~dgmjax.losses.density_ratio.adaptive_contrast_kl`).
  The moment draws are separate from the normalised sample on purpose: a
  sample normalised by moments it helped estimate is bounded,
  |z̃_j| ≤ √(M − 1) for M draws, a give-away to T. The Gaussian encoder uses
  its exact moments.

Evaluation: the test ELBO estimate (``test/elbo`` = rec − T), and in the
report an importance-sampled log-likelihood ``test/log_px``. The implicit
encoder has no density, so the proposal is built on a Gaussian fitted to each
x's encoder samples (``ll_moment_samples`` draws): an equal mixture of that
Gaussian at the widths ``ll_proposal_scales`` (fitted moments of an implicit
q are typically narrower than the true posterior), optionally with a
defensive N(0, I) component (``ll_prior_weight``). The Gaussian encoder's
proposal is built on q itself in the same way (with one width 1 and no prior
component, the IWAE-k bound). For any proposal with full support,
E[p̂(x)] = p(x), so by Jensen E[log p̂(x)] ≤ log p(x): the estimate is a
lower bound in expectation, tight as k grows. With a 2-D latent the report also integrates p(x) = ∫ p(x|z)
p(z) dz on a grid (``test/log_px_grid``, exact up to the grid) and draws the
posteriors as a coloured scatter (``images/posteriors.png``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dgmjax.data import ImageDataset, toy
from dgmjax.errors import ConfigError
from dgmjax.losses import density_ratio as dr
from dgmjax.losses import elbo as elbo_lib
from dgmjax.nn.avb import ACTIVATIONS, Discriminator, ImplicitEncoder
from dgmjax.nn.vae import MLPDecoder, MLPEncoder
from dgmjax.parallel import as_local, mean_over
from train import harness
from train.state import count_params, create_train_state, step_key

ENCODERS = ("implicit", "gaussian")
KLS = ("adversarial", "analytic")
BINARY = ("binary_dynamic", "binary_static")
TOY_IMAGE_SHAPE = (2, 2, 1)


def get_config() -> ml_collections.ConfigDict:
  c = harness.base_config()
  c.dataset = "avb_toy"  # "avb_toy" | "digits" | "tfds:<name>"
  c.pixel_format = "binary_dynamic"
  c.num_steps = 4000
  c.batch_size = 512
  c.eval_batch_size = 256
  c.learning_rate = 1e-3  # encoder + decoder
  c.disc_learning_rate = 1e-3
  c.adam_b1 = 0.5
  c.disc_steps = 2  # discriminator updates per model update
  c.log_every = 200
  c.checkpoint_every = 2000
  c.num_images = 64
  # Model.
  c.encoder = "implicit"  # "implicit" (AVB) | "gaussian"
  c.kl = "adversarial"  # "adversarial" (T) | "analytic" (gaussian encoder: plain VAE)
  c.latent_dim = 2
  c.noise_dim = 8  # size of ε for the implicit encoder
  c.noise_every_layer = True
  c.hidden = (256, 256)  # encoder widths; the decoder mirrors them
  c.disc_hidden = (256, 256)
  c.disc_x_hidden = ()  # layers embedding x alone before it meets z
  c.disc_activation = "relu"
  c.disc_prior_term = True  # T = T_net + ‖z‖²/2
  c.adaptive_contrast = False
  c.ac_samples = 16  # extra z draws per x that estimate the moments (adaptive contrast)
  c.eval_samples = 16  # z draws per test x for test/elbo, test/kl (averaged)
  # Toy data.
  c.toy_train_size = 8192
  # Evaluation (report).
  c.ll_samples = 1000  # importance samples for test log p(x) (0 = skip)
  c.ll_chunk = 100
  c.ll_moment_samples = 256  # encoder draws that fit the Gaussian proposal
  c.ll_proposal_scales = (1.0, 1.5, 2.0)  # widths of the Gaussian proposal mixture
  c.ll_prior_weight = 0.0  # α of the defensive N(0, I) component of the proposal
  c.grid_size = 512  # 2-D latent: grid points per axis for ∫ p(x|z)p(z)dz (0 = skip)
  c.scatter_samples = 400  # posterior samples per test point in the scatter
  return c


def _validate(config) -> None:
  need = harness.config_check(config)
  is_int = harness.is_int

  need(config.encoder in ENCODERS, "encoder", f"one of {ENCODERS}")
  need(config.kl in KLS, "kl", f"one of {KLS}")
  if config.kl == "analytic":
    need(config.encoder == "gaussian", "kl",
         "'adversarial' for encoder='implicit' (an implicit q(z|x) has no density, so no "
         "analytic KL)")
    need(not config.adaptive_contrast, "adaptive_contrast", "False for kl='analytic'")
  need(config.pixel_format in BINARY, "pixel_format",
       f"one of {BINARY} (the decoder is Bernoulli)")
  need(config.disc_activation in ACTIVATIONS, "disc_activation",
       f"one of {tuple(ACTIVATIONS)}")
  for key in ("latent_dim", "noise_dim", "disc_steps", "ac_samples", "eval_samples",
              "ll_chunk", "scatter_samples"):
    need(is_int(config[key], 1), key, "an int >= 1")
  for key in ("ll_samples", "grid_size"):
    need(is_int(config[key], 0), key, "an int >= 0")
  need(is_int(config.ll_moment_samples, 2), "ll_moment_samples", "an int >= 2")
  if config.adaptive_contrast and config.encoder == "implicit":
    need(config.ac_samples >= 2, "ac_samples",
         ">= 2 with adaptive_contrast (the moments are estimated from the draws)")
  for key in ("hidden", "disc_hidden"):
    need(len(config[key]) >= 1 and all(is_int(h, 1) for h in config[key]), key,
         "a non-empty tuple of ints >= 1")
  need(all(is_int(h, 1) for h in config.disc_x_hidden), "disc_x_hidden",
       "a tuple of ints >= 1")
  need(config.disc_learning_rate > 0, "disc_learning_rate", "> 0")
  need(0.0 <= config.adam_b1 < 1.0, "adam_b1", "in [0, 1)")
  need(len(config.ll_proposal_scales) >= 1 and all(v > 0 for v in config.ll_proposal_scales),
       "ll_proposal_scales", "a non-empty tuple of widths > 0")
  need(0.0 <= config.ll_prior_weight < 1.0, "ll_prior_weight", "in [0, 1)")
  if config.dataset == "avb_toy":
    need(is_int(config.toy_train_size, config.batch_size), "toy_train_size",
         f">= batch_size ({config.batch_size})")


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------
def toy_dataset(seed: int, num_train: int) -> ImageDataset:
  """The AVB toy as images: ``num_train`` draws of the four one-hot 2×2 images.

  Training images are i.i.d. uniform draws (:func:`dgmjax.data.toy.sample_avb_points`);
  the test split is the four points once each, so a test mean is the exact
  expectation over the uniform data distribution π(x). Labels are the index
  of the lit pixel.
  """
  pts = np.asarray(toy.sample_avb_points(jax.random.key(seed), num_train))
  test = np.asarray(toy.avb_points())

  def as_images(p):
    return (p.reshape((-1,) + TOY_IMAGE_SHAPE) * 255).astype(np.uint8)

  return ImageDataset("avb_toy", as_images(pts), pts.argmax(-1).astype(np.int64),
                      as_images(test), test.argmax(-1).astype(np.int64))


def load_data(config):
  """The harness ``load=`` hook: the toy, or the harness's image data."""
  if config.dataset == "avb_toy":
    _validate(config)
    ds = toy_dataset(config.seed, config.toy_train_size)
    train = {"image": ds.train_images, "label": ds.train_labels}
    test = {"image": ds.test_images, "label": ds.test_labels}
    info = harness.DataInfo(TOY_IMAGE_SHAPE, len(ds.train_images), len(ds.test_images), ds)
    return train, test, info
  return harness.load_data(config)


# ----------------------------------------------------------------------------
# The model: pure functions of params
# ----------------------------------------------------------------------------
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
    return elbo_lib.bernoulli_log_likelihood(logits, jnp.broadcast_to(x, logits.shape),
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
    eps = jax.random.normal(key, (num_moment_samples, x.shape[0], self.eps_dim))
    mean, std = dr.estimate_moments(self.encoder.apply(params["encoder"], x, eps), axis=0)
    return mean, 2.0 * jnp.log(std)

  def log_marginal(self, params, x, key, *, num_samples: int, chunk_size: int,
                   num_moment_samples: int = 256, scales: tuple[float, ...] = (1.0,),
                   prior_weight: float = 0.0):
    """Importance-sampled log p(x) per example, (B,); see :func:`importance_log_marginal`."""
    k_fit, k_is = jax.random.split(key)
    mean, log_var = self.proposal(params, x, k_fit, num_moment_samples=num_moment_samples)
    return importance_log_marginal(
        lambda z: self.log_likelihood(params, z, x), mean, log_var, k_is,
        num_samples=num_samples, chunk_size=chunk_size, scales=scales,
        prior_weight=prior_weight)


def importance_log_marginal(
    log_likelihood: Callable[[jax.Array], jax.Array],
    mean: jax.Array,
    log_var: jax.Array,
    key: jax.Array,
    *,
    num_samples: int,
    chunk_size: int,
    scales: tuple[float, ...] = (1.0,),
    prior_weight: float = 0.0,
) -> jax.Array:
  """Importance-sampled log p(x) under a N(0, I) prior: a lower bound in expectation.

    log p̂(x) = logsumexp_k [log p(x|z_k) + log p(z_k) − log r(z_k|x)] − log K,
    r(z|x) = (1 − α)·(1/M) Σ_m N(z; μ(x), diag (s_m σ(x))²) + α·N(z; 0, I).

  E[p̂(x)] = p(x) for any proposal r with full support, so by Jensen
  E[log p̂(x)] ≤ log p(x); the gap closes as K grows, fastest when r is close
  to the true posterior p(z|x). With one scale s = 1, α = 0 and (μ, σ) of a
  Gaussian encoder this is the IWAE-K bound. Several widths (balance-heuristic
  mixture) guard against a proposal narrower than the posterior, which is
  what moments fitted to an implicit (often too narrow) q(z|x) give; the
  defensive prior component (α > 0, Hesterberg 1995) caps each weight at
  p(x|z)/α. Either costs at most log M resp. −log(1 − α) nats when the first
  component alone was already right.

  Args:
    log_likelihood: z (n, B, d) -> log p(x|z) (n, B).
    mean, log_var: (B, d) centre and log-variance of the proposal.
    key: PRNG key.
    num_samples: K >= 1.
    chunk_size: samples evaluated at once.
    scales: widths s_m > 0 of the mixture components.
    prior_weight: α in [0, 1).

  Returns:
    (B,) estimates of log p(x).
  """
  scales = tuple(float(v) for v in scales)
  if not scales or min(scales) <= 0:
    raise ValueError(f"scales must be a non-empty tuple of widths > 0, got {scales}.")
  if not 0.0 <= prior_weight < 1.0:
    raise ValueError(f"prior_weight must be in [0, 1), got {prior_weight}.")
  widths = jnp.asarray(scales, mean.dtype)
  log_vars = log_var[None] + 2.0 * jnp.log(widths)[:, None, None]  # (M, B, d)
  log_mix = math.log1p(-prior_weight) - math.log(len(scales))

  def log_weights(k, n):
    k_z, k_m, k_p, k_c = jax.random.split(k, 4)
    which = jax.random.randint(k_m, (n, mean.shape[0]), 0, len(scales))
    std = widths[which][..., None] * jnp.exp(0.5 * log_var)
    z = mean + std * jax.random.normal(k_z, (n,) + mean.shape)
    if prior_weight > 0.0:
      use_prior = jax.random.uniform(k_c, z.shape[:-1] + (1,)) < prior_weight
      z = jnp.where(use_prior, jax.random.normal(k_p, z.shape), z)
    log_p = elbo_lib.log_standard_normal(z)
    comps = jnp.stack([elbo_lib.log_normal_diag(z, mean, lv) for lv in log_vars])
    log_r = log_mix + jax.nn.logsumexp(comps, axis=0)
    if prior_weight > 0.0:
      log_r = jnp.logaddexp(log_r, math.log(prior_weight) + log_p)
    return elbo_lib.iwae_log_weights(log_likelihood(z), log_p, log_r)

  return elbo_lib.chunked_iwae_bound(log_weights, key, num_samples, chunk_size=chunk_size)


def build_model(config, image_shape) -> AVB:
  """The :class:`AVB` a config describes (validates the model keys)."""
  _validate(config)
  hidden = tuple(config.hidden)
  if config.encoder == "implicit":
    enc = ImplicitEncoder(config.latent_dim, hidden, config.noise_every_layer)
  else:
    enc = MLPEncoder(config.latent_dim, hidden)
  dec = MLPDecoder(tuple(image_shape), tuple(reversed(hidden)))
  disc = None
  if config.kl == "adversarial":
    disc = Discriminator(tuple(config.disc_hidden), tuple(config.disc_x_hidden),
                         config.disc_prior_term, ACTIVATIONS[config.disc_activation])
  return AVB(enc, dec, disc, config.encoder, config.latent_dim, config.noise_dim,
             config.adaptive_contrast)


# ----------------------------------------------------------------------------
# 2-D latent: exact-enough log p(x) on a grid, and the posterior scatter
# ----------------------------------------------------------------------------
def grid_log_marginal(decode_logits, x_flat: np.ndarray, *, extent: float = 6.0,
                      size: int = 512, chunk: int = 8192) -> np.ndarray:
  """log p(x) = log ∫ p(x|z) N(z; 0, I) dz by a Riemann sum on a 2-D grid.

  For binary x, log p(x|z) = Σ_j [x_j ℓ_j + log σ(−ℓ_j)] with decoder logits
  ℓ(z), so a chunk of grid points against all images is one matrix product.
  The prior mass outside [−6, 6]² is < 1e-8.

  Args:
    decode_logits: z (n, 2) -> flat logits (n, D), jittable.
    x_flat: (N, D) binary images.
    extent: the grid covers [−extent, extent]².
    size: points per axis.
    chunk: grid points decoded at once.

  Returns:
    (N,) log p(x) in nats (float64).
  """
  axis = np.linspace(-extent, extent, size)
  zx, zy = np.meshgrid(axis, axis)
  grid = np.stack([zx.ravel(), zy.ravel()], axis=1).astype(np.float32)
  log_cell = 2.0 * math.log(axis[1] - axis[0])
  x = jnp.asarray(x_flat, jnp.float32)

  @jax.jit
  def chunk_lse(z):
    logits = decode_logits(z)
    ll = x @ logits.T + jnp.sum(jax.nn.log_sigmoid(-logits), axis=-1)  # (N, n)
    return jax.nn.logsumexp(ll + elbo_lib.log_standard_normal(z), axis=1)

  acc = np.full(len(x_flat), -np.inf)
  for start in range(0, len(grid), chunk):
    z = grid[start:start + chunk]
    if len(z) < chunk:  # one compiled shape: pad with a far point of ~zero mass
      z = np.concatenate([z, np.full((chunk - len(z), 2), 1e3, np.float32)])
    acc = np.logaddexp(acc, np.asarray(chunk_lse(jnp.asarray(z)), np.float64))
  return acc + log_cell


_PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40],
                     [148, 103, 189], [140, 86, 75], [227, 119, 194], [127, 127, 127],
                     [188, 189, 34], [23, 190, 207]], np.uint8)


def posterior_scatter_picture(z: np.ndarray, labels: np.ndarray, *, title: str = "",
                              extent: float = 3.0, size: int = 320) -> np.ndarray:
  """A coloured scatter of 2-D posterior samples, one colour per label.

  Args:
    z: (N, 2) samples z ~ q(z|x_i).
    labels: (N,) int, the colour of each sample (e.g. which toy point x_i).
    title: text above the plot.
    extent: the plot shows [−extent, extent]²; grey circles mark prior radii
      1, 2 (and 3).
    size: side of the plot in pixels.

  Returns:
    uint8 (H, W, 3) picture.
  """
  from PIL import Image, ImageDraw

  head = 18
  img = Image.new("RGB", (size, size + head), (255, 255, 255))
  draw = ImageDraw.Draw(img)
  scale = size / (2 * extent)
  c = size / 2
  for r in (1.0, 2.0, 3.0):
    if r <= extent:
      draw.ellipse([c - r * scale, head + c - r * scale, c + r * scale, head + c + r * scale],
                   outline=(200, 200, 200))
  draw.line([0, head + c, size, head + c], fill=(220, 220, 220))
  draw.line([c, head, c, head + size], fill=(220, 220, 220))
  z = np.asarray(z, np.float64)
  px = c + z[:, 0] * scale
  py = head + c - z[:, 1] * scale
  for x0, y0, lab in zip(px, py, np.asarray(labels), strict=True):
    if 0 <= x0 < size and head <= y0 < head + size:
      col = tuple(int(v) for v in _PALETTE[int(lab) % len(_PALETTE)])
      draw.ellipse([x0 - 1.5, y0 - 1.5, x0 + 1.5, y0 + 1.5], fill=col)
  draw.rectangle([0, head, size - 1, head + size - 1], outline=(0, 0, 0))
  draw.text((4, 3), title, fill=(0, 0, 0))
  return np.asarray(img)


# ----------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------
def _global_normal(key, local_shape: tuple[int, ...], axis_name: str | None,
                   batch_axis: int = 1) -> jax.Array:
  """N(0, I) noise for this device's examples, cut from one global draw.

  Drawing the global batch's noise and keeping this device's slice makes a
  ``shard_map`` step see exactly the noise of the single-device step.
  """
  if axis_name is None:
    return jax.random.normal(key, local_shape)
  n_dev = jax.lax.axis_size(axis_name)
  shape = list(local_shape)
  local = shape[batch_axis]
  shape[batch_axis] = local * n_dev
  eps = jax.random.normal(key, tuple(shape))
  start = jax.lax.axis_index(axis_name) * local
  return jax.lax.dynamic_slice_in_dim(eps, start, local, axis=batch_axis)


@dataclasses.dataclass(frozen=True)
class Steps:
  """The two moves of the AVB game and the per-sample terms they share.

  ``disc_step(state, x, key, axis_name)`` and ``model_step(...)`` take and
  return the state dict ``{"model", "disc"}`` plus scalar metrics (global
  means). ``terms(model_params, disc_params, x, eps, eps_moments)`` gives
  log p(x|z), the KL estimate and the analytic KL (Gaussian encoder, else
  None), each (S, B); ``noise(key, batch, S, axis_name)`` draws its
  ``(eps, eps_moments)``.
  """

  disc_step: Callable
  model_step: Callable
  terms: Callable
  noise: Callable


def make_steps(config, model: AVB) -> Steps:
  """Build the discriminator and model updates of :func:`make_task`.

  The discriminator step runs ``config.disc_steps`` BCE updates of T on fresh
  noise with the model's samples treated as data (stop-gradient). The model
  step minimises −mean(log p(x|z) − KL estimate) over the encoder and decoder
  only: T's parameters are a constant of that loss, while z = g(x, ε, φ)
  stays differentiable inside T, so ∇_φ reaches the encoder through ∂T/∂z
  (AVB Proposition 2).
  """
  adversarial = config.kl == "adversarial"
  gaussian = config.encoder == "gaussian"
  d = config.latent_dim
  moment_draws = config.adaptive_contrast and not gaussian

  def noise(key, b, n, axis_name):
    """ε for n loss samples per x, and ε for the moment draws (or None)."""
    k_eps, k_mom = jax.random.split(key)
    eps = _global_normal(k_eps, (n, b, model.eps_dim), axis_name)
    if not moment_draws:
      return eps, None
    return eps, _global_normal(k_mom, (config.ac_samples, b, model.eps_dim), axis_name)

  def terms(params, disc_params, x, eps, eps_moments=None):
    z, mean, std = model.posterior(params, x, eps, eps_moments)
    log_lik = model.log_likelihood(params, z, x)
    exact = None
    if gaussian:
      kl = elbo_lib.gaussian_kl_standard(mean, 2.0 * jnp.log(std))
      exact = jnp.broadcast_to(kl, log_lik.shape)
    kl = model.kl_estimate(disc_params, x, z, mean, std) if adversarial else exact
    return log_lik, kl, exact

  def one_disc_update(disc_state, model_params, x, key, axis_name):
    k_post, k_prior = jax.random.split(key)
    b = x.shape[0]
    eps, eps_m = noise(k_post, b, 1, axis_name)
    z, mean, std = model.posterior(model_params, x, eps, eps_m)
    # The model is the other player: T learns on its samples, not through them.
    z_post = jax.lax.stop_gradient(model.disc_inputs(z, mean, std))
    z_prior = _global_normal(k_prior, (1, b, d), axis_name)

    def loss_fn(dp):
      t_post = model.disc.apply(dp, x, z_post)
      t_prior = model.disc.apply(dp, x, z_prior)
      l_post, l_prior = dr.avb_discriminator_loss(t_post, t_prior)
      acc = 0.5 * (jnp.mean(t_post > 0) + jnp.mean(t_prior < 0))
      return jnp.mean(l_post) + jnp.mean(l_prior), acc

    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        as_local(disc_state.params, axis_name))
    grads, loss, acc = mean_over((grads, loss, acc), axis_name)
    return disc_state.apply_gradients(grads=grads), loss, acc

  def disc_step(state, x, key, axis_name=None):
    disc_state = state["disc"]
    losses, accs = [], []
    for i in range(config.disc_steps):
      disc_state, loss, acc = one_disc_update(disc_state, state["model"].params, x,
                                              jax.random.fold_in(key, i), axis_name)
      losses.append(loss)
      accs.append(acc)
    metrics = {"train/d_loss": jnp.mean(jnp.stack(losses)),
               "train/d_acc": jnp.mean(jnp.stack(accs))}
    return {**state, "disc": disc_state}, metrics

  def model_step(state, x, key, axis_name=None):
    eps, eps_m = noise(key, x.shape[0], 1, axis_name)
    disc_params = state["disc"].params if adversarial else None

    def loss_fn(params):  # a function of the encoder/decoder only: T is fixed
      log_lik, kl, exact = terms(params, disc_params, x, eps, eps_m)
      aux = {"rec": jnp.mean(log_lik), "kl": jnp.mean(kl)}
      if exact is not None and adversarial:
        aux["kl_analytic"] = jnp.mean(exact)
      return -jnp.mean(dr.avb_elbo(log_lik, kl)), aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        as_local(state["model"].params, axis_name))
    grads, loss, aux = mean_over((grads, loss, aux), axis_name)
    metrics = {"train/loss": loss, "train/elbo": aux["rec"] - aux["kl"],
               "train/rec": aux["rec"], "train/kl": aux["kl"]}
    if "kl_analytic" in aux:
      metrics["train/kl_analytic"] = aux["kl_analytic"]
    return {**state, "model": state["model"].apply_gradients(grads=grads)}, metrics

  return Steps(disc_step, model_step, terms, noise)


def make_task(config, info: harness.DataInfo) -> harness.Task:
  model = build_model(config, info.image_shape)
  adversarial = config.kl == "adversarial"
  d = config.latent_dim
  h, w, c = info.image_shape
  tx_model = optax.adam(config.learning_rate, b1=config.adam_b1)
  tx_disc = optax.adam(config.disc_learning_rate, b1=config.adam_b1)

  def check_batch(batch):
    x = batch["image"]
    if x.ndim != 4 or x.shape[1:] != (h, w, c):
      raise ConfigError(f"images must have shape (B, {h}, {w}, {c}), got {x.shape}.")

  def init(key, batch):
    k_model, k_rng_m, k_rng_d = jax.random.split(key, 3)
    params, disc = model.init(k_model, jnp.asarray(batch["image"], jnp.float32))
    state = {"model": create_train_state(params, tx_model, k_rng_m)}
    if adversarial:
      state["disc"] = create_train_state(disc, tx_disc, k_rng_d)
    return state

  steps = make_steps(config, model)

  def train_step(state, batch, axis_name=None):
    x = batch["image"]
    k_disc, k_model = jax.random.split(step_key(state["model"]))
    metrics = {}
    if adversarial:
      state, metrics = steps.disc_step(state, x, k_disc, axis_name)
    state, model_metrics = steps.model_step(state, x, k_model, axis_name)
    return state, {**metrics, **model_metrics}

  eval_key = jax.random.key(config.seed + 7919)

  def eval_step(state, batch):
    x = batch["image"]
    eps, eps_m = steps.noise(eval_key, x.shape[0], config.eval_samples, None)
    disc_params = state["disc"].params if adversarial else None
    log_lik, kl, exact = steps.terms(state["model"].params, disc_params, x, eps, eps_m)
    out = {"elbo": jnp.mean(log_lik - kl, 0), "rec": jnp.mean(log_lik, 0),
           "kl": jnp.mean(kl, 0)}
    if exact is not None and adversarial:
      out["kl_analytic"] = jnp.mean(exact, 0)
    return out

  @functools.partial(jax.jit, static_argnames=("n",))
  def scatter_samples(params, x, key, n):
    eps = jax.random.normal(key, (n, x.shape[0], model.eps_dim))
    return model.sample(params, x, eps)

  def posterior_picture(state, x, labels, title):
    n = max(1, config.scatter_samples)
    z = np.asarray(scatter_samples(state["model"].params, jnp.asarray(x, jnp.float32),
                                   jax.random.key(config.seed + 5), n))  # (n, B, 2)
    lab = np.broadcast_to(np.asarray(labels)[None, :], z.shape[:2])
    order = np.random.default_rng(0).permutation(z.shape[0] * z.shape[1])
    return posterior_scatter_picture(z.reshape(-1, 2)[order], lab.reshape(-1)[order],
                                     title=title), z

  def images(state, batch):
    from train.images import make_grid, side_by_side

    out = {}
    x = jnp.asarray(batch["image"], jnp.float32)
    if d == 2 and "label" in batch:
      out["posteriors"] = posterior_picture(state, x, batch["label"],
                                            f"q(z|x) by class, step {int(state['model'].step)}")[0]
    if (h, w) != TOY_IMAGE_SHAPE[:2]:
      params = state["model"].params
      eps = jax.random.normal(jax.random.key(config.seed + 3), (1, x.shape[0], model.eps_dim))
      z = model.sample(params, x, eps)[0]
      rec = np.asarray(jax.nn.sigmoid(model.decoder.apply(params["decoder"], z)))
      z0 = jax.random.normal(jax.random.key(config.seed + 31), (config.num_images, d))
      samples = np.asarray(jax.nn.sigmoid(model.decoder.apply(params["decoder"], z0)))
      out["reconstructions"] = side_by_side(np.asarray(x), rec)
      out["samples"] = make_grid(samples)
    return out

  log_marginal = jax.jit(functools.partial(
      model.log_marginal, num_samples=max(1, config.ll_samples),
      chunk_size=min(config.ll_chunk, max(1, config.ll_samples)),
      num_moment_samples=config.ll_moment_samples,
      scales=tuple(float(v) for v in config.ll_proposal_scales),
      prior_weight=config.ll_prior_weight))

  def report(state, ctx: harness.Context):
    from train.images import save_png

    ds = ctx.info.dataset
    params = state["model"].params
    test = harness.formatted({"image": ds.test_images}, config.pixel_format)["image"]
    out = {"num_params/model": count_params(params)}
    if adversarial:
      out["num_params/disc"] = count_params(state["disc"].params)
      ev = ctx.evaluate(state, {"image": test, "label": ds.test_labels})
      if "kl_analytic" in ev:
        out["test/kl_rel_error"] = abs(ev["kl"] - ev["kl_analytic"]) / max(ev["kl_analytic"],
                                                                           1e-12)
    if config.ll_samples:
      bs = 100 if len(test) >= 100 else len(test)
      total, key = 0.0, jax.random.key(config.seed * 1000 + 17)
      for i, start in enumerate(range(0, len(test), bs)):
        xb = test[start:start + bs]
        real = len(xb)
        if real < bs:
          xb = np.concatenate([xb, np.repeat(xb[-1:], bs - real, axis=0)])
        lp = log_marginal(params, jnp.asarray(xb), jax.random.fold_in(key, i))
        total += float(np.sum(np.asarray(lp, np.float64)[:real]))
      out["test/log_px"] = total / len(test)
      out["ll_samples"] = config.ll_samples
    if d == 2:
      if config.grid_size:
        dec = lambda z: model.decoder.apply(params["decoder"], z).reshape(z.shape[0], -1)
        lp = grid_log_marginal(dec, test.reshape(len(test), -1), size=config.grid_size)
        out["test/log_px_grid"] = float(np.mean(lp))
      if ctx.is_main:
        n_show = min(len(test), 1000)
        title = {("implicit", "adversarial"): "AVB (implicit q)",
                 ("gaussian", "analytic"): "VAE (Gaussian q)",
                 ("gaussian", "adversarial"): "Gaussian q, adversarial KL"}[
                     (config.encoder, config.kl)]
        title += f", step {int(state['model'].step)}"
        if "test/log_px_grid" in out:
          title += f": log p(x) = {out['test/log_px_grid']:.3f}"
        pic, z = posterior_picture(state, test[:n_show], ds.test_labels[:n_show], title)
        save_png(pic, os.path.join(ctx.workdir, "images", "posteriors.png"))
        np.savez(os.path.join(ctx.workdir, "posterior_samples.npz"), z=z,
                 labels=ds.test_labels[:n_show])
    return out

  return harness.Task(init=init, train_step=train_step, eval_step=eval_step,
                      images=images, report=report, check_batch=check_batch)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Train (or resume) the run of ``config`` in ``workdir``; returns the summary."""
  return harness.train_and_evaluate(config, workdir, make_task, load=load_data)


if __name__ == "__main__":
  harness.run_cli("avb", get_config, make_task, load=load_data)
