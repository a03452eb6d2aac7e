"""Gaussian VAE with ELBO-surgery diagnostics and a flow prior: ``python -m train.vae``.

Lecture 7, first half. The average KL term of the ELBO splits as

  (1/N) Σ_i KL(q(z|x_i) || p(z)) = I_q[x, z] + KL(q_agg(z) || p(z))

(slides "Theorem" and "ELBO surgery"). Only the second term depends on the
prior, and it vanishes for p = q_agg (slide "Optimal prior"): a standard
Gaussian prior pays that marginal KL in full, a learned prior can shrink it.
``--config.prior=flow`` learns p(z|λ) = N(f(z, λ); 0, I) |det J_f| with a
RealNVP flow (:mod:`dgmjax.nn.flows`) jointly through the ELBO (slide "ELBO
with flow-based VAE prior"); its KL term has no closed form, so the step uses
the one-sample estimate log q(z|x) − log p(z|λ) at the reparameterised z.
Samples go z* ~ N(0, I) → z = f⁻¹(z*) → decoder.

At the end of training :func:`split_report` evaluates, on the whole train and
test split, the reconstruction term, the average KL, the mutual information,
the marginal KL (exact q_agg over all N posteriors, from
:mod:`dgmjax.losses.surgery`), the ELBO and the IWAE-k log-likelihood bound.
The results go to ``summary.json`` (``surgery/<split>/<term>``) and to
``surgery.md`` in the workdir; a 2-D latent run also draws q_agg against the
prior (``images/latent_density.png``).

Data: by default dynamically binarized digits for training (a fresh Bernoulli
draw per epoch) and, for every evaluation, one *fixed* binarization per split
(:func:`train.harness.formatted`, independent of ``config.seed``),
so numbers and pictures of different runs and seeds are comparable.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dgmjax.errors import ConfigError
from dgmjax.losses import elbo as elbo_lib
from dgmjax.losses import schedules, surgery
from dgmjax.nn.flows import RealNVP
from dgmjax.nn.vae import ARCHS, make_encoder_decoder, reparameterize
from dgmjax.parallel import as_local, mean_over
from train import harness
from train.state import create_train_state, step_key

PRIORS = ("gaussian", "flow")
LIKELIHOODS = ("bernoulli", "gaussian")
# How many decoded images one compiled report call may hold at once.
_MAX_DECODED = {"mlp": 50_000, "conv": 2_000}


def get_config() -> ml_collections.ConfigDict:
  c = harness.base_config()
  c.pixel_format = "binary_dynamic"
  c.num_steps = 6000
  c.batch_size = 128
  c.learning_rate = 1e-3
  c.checkpoint_every = 2000
  c.log_every = 200
  c.num_images = 64
  c.arch = "mlp"  # "mlp" or "conv"
  c.latent_dim = 32
  c.hidden = (512, 256)  # MLP widths, encoder side (the decoder mirrors them)
  c.channels = (32, 64)  # conv channels, encoder side
  c.num_res_blocks = 1
  c.res_hidden = 32
  c.likelihood = "bernoulli"  # "bernoulli" (binary pixels) or "gaussian" (unit/symmetric)
  c.prior = "flow"  # "gaussian" = N(0, I) or "flow" = RealNVP prior
  c.flow_layers = 4
  c.flow_hidden = (128, 128)
  c.kl_warmup_steps = 0  # >0: KL weight warmed linearly from 0 to 1
  # End-of-training ELBO-surgery report (whole splits).
  c.surgery_samples = 1  # z samples per data point for the surgery estimates
  c.surgery_chunk = 1024  # posteriors per chunk when evaluating q_agg
  c.iwae_k = 1000  # importance samples for the test log-likelihood
  c.iwae_k_train = 100  # ... for the train split (0 skips it)
  c.iwae_chunk = 100
  return c


# ----------------------------------------------------------------------------
# The model: pure functions of params
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class VAE:
  """A Gaussian-encoder VAE and its prior, as pure functions of ``params``.

  ``params`` is a dict with ``"encoder"``, ``"decoder"``, and ``"prior"``
  (flow prior) / ``"obs_log_var"`` (Gaussian likelihood) when used. The
  three methods ``encode``, ``log_likelihood`` and ``log_prior`` are all
  :func:`split_report` needs, so any model offering them (e.g. another
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
      return elbo_lib.bernoulli_log_likelihood(out, x, event_ndims=3)
    return elbo_lib.gaussian_log_likelihood(x, out, params["obs_log_var"], event_ndims=3)

  def log_prior(self, params, z: jax.Array) -> jax.Array:
    """log p(z) (N(0, I) or the flow prior) for z (..., d) -> (...)."""
    if self.flow is None:
      return elbo_lib.log_standard_normal(z)
    return self.flow.apply(params["prior"], z, method=RealNVP.log_prob)

  def kl(self, params, z, mean, log_var) -> jax.Array:
    """Per-example KL(q(z|x) || p(z)): closed form for N(0, I), else one-sample MC."""
    if self.flow is None:
      return elbo_lib.gaussian_kl_standard(mean, log_var)
    return elbo_lib.log_normal_diag(z, mean, log_var) - self.log_prior(params, z)

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


def build_model(config, image_shape) -> VAE:
  """The :class:`VAE` a config describes (validates the model keys)."""
  _validate(config, tuple(image_shape))
  enc, dec = make_encoder_decoder(
      config.arch, image_shape=tuple(image_shape), latent_dim=config.latent_dim,
      hidden=tuple(config.hidden), channels=tuple(config.channels),
      num_res_blocks=config.num_res_blocks, res_hidden=config.res_hidden)
  flow = None
  if config.prior == "flow":
    flow = RealNVP(dim=config.latent_dim, num_layers=config.flow_layers,
                   hidden=tuple(config.flow_hidden))
  return VAE(enc, dec, flow, config.likelihood, config.latent_dim, config.pixel_format)


def _validate(config, image_shape) -> None:
  need = harness.config_check(config)
  is_int = harness.is_int

  need(config.arch in ARCHS, "arch", f"one of {ARCHS}")
  need(config.prior in PRIORS, "prior", f"one of {PRIORS}")
  need(config.likelihood in LIKELIHOODS, "likelihood", f"one of {LIKELIHOODS}")
  need(is_int(config.latent_dim, 1), "latent_dim", "an int >= 1")
  if config.prior == "flow":
    need(is_int(config.latent_dim, 2), "latent_dim",
         "an int >= 2 for prior='flow' (a coupling layer splits z in two)")
  for key in ("flow_layers", "surgery_samples", "surgery_chunk", "iwae_k", "iwae_chunk",
              "num_res_blocks", "res_hidden"):
    need(is_int(config[key], 1), key, "an int >= 1")
  for key in ("kl_warmup_steps", "iwae_k_train"):
    need(is_int(config[key], 0), key, "an int >= 0")
  for key in ("hidden", "channels", "flow_hidden"):
    need(len(config[key]) >= 1 and all(is_int(h, 1) for h in config[key]), key,
         "a non-empty tuple of ints >= 1")
  binary = ("binary_dynamic", "binary_static")
  if config.likelihood == "bernoulli":
    need(config.pixel_format in binary, "pixel_format",
         f"one of {binary} for likelihood='bernoulli' (use likelihood='gaussian' "
         "for continuous pixels)")
  else:
    need(config.pixel_format in ("unit", "symmetric"), "pixel_format",
         "'unit' or 'symmetric' for likelihood='gaussian'")
  if config.arch == "conv" and (image_shape[0] % 4 or image_shape[1] % 4):
    raise ConfigError(f"arch='conv' needs image height and width that are multiples of "
                      f"4, got {image_shape}.")


# ----------------------------------------------------------------------------
# Data: dynamic binarization for training, fixed binarizations for evaluation
# ----------------------------------------------------------------------------
def eval_images(images: np.ndarray, pixel_format: str, split: str) -> np.ndarray:
  """A split's uint8 images as every evaluation sees them (:func:`train.harness.formatted`)."""
  return harness.formatted({"image": images}, pixel_format, split)["image"]


# ----------------------------------------------------------------------------
# ELBO surgery report over a whole split
# ----------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("model", "num_samples"))
def _encode_and_sample(model, params, x, key, num_samples):
  mean, log_var = model.encode(params, x)
  z = reparameterize(key, mean, log_var, num_samples)
  return mean, log_var, z, model.log_likelihood(params, z, x)


@functools.partial(jax.jit, static_argnames=("model",))
def _encode(model, params, x):
  return model.encode(params, x)


@functools.partial(jax.jit, static_argnames=("model",))
def _log_prior(model, params, z):
  return model.log_prior(params, z)


@functools.partial(jax.jit, static_argnames=("model", "chunk_size"))
def _surgery_terms(model, params, z, means, log_vars, chunk_size):
  return surgery.elbo_surgery(z, means, log_vars, lambda zz: model.log_prior(params, zz),
                              chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("model", "k", "chunk"))
def _iwae(model, params, x, key, k, chunk):
  mean, log_var = model.encode(params, x)

  def log_weights(key, n):
    z = reparameterize(key, mean, log_var, n)
    return elbo_lib.iwae_log_weights(model.log_likelihood(params, z, x),
                                     model.log_prior(params, z),
                                     elbo_lib.log_normal_diag(z, mean, log_var))

  return elbo_lib.chunked_iwae_bound(log_weights, key, k, chunk_size=chunk)


def _batches(images: np.ndarray, batch_size: int):
  n = len(images)
  for start in range(0, n, batch_size):
    chunk = images[start:start + batch_size]
    real = len(chunk)
    if real < batch_size:  # one compiled shape for every batch
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
    yield chunk, real


def split_report(
    model,
    params,
    images: np.ndarray,
    key: jax.Array,
    *,
    num_samples: int = 1,
    iwae_k: int = 1000,
    iwae_chunk: int = 100,
    batch_size: int = 500,
    max_decoded: int = 50_000,
    surgery_chunk: int = 1024,
) -> dict[str, float]:
  """ELBO surgery and IWAE-k of a trained model over a whole data split.

  With z_i ~ q(z|x_i) (``num_samples`` per point, the same draws for every
  term) and the exact q_agg = (1/N) Σ_j q(z|x_j) over all N points:

    rec         = mean_i log p(x_i|z_i)                   (RL)
    avg_kl      = mean_i [log q(z_i|x_i) − log p(z_i)]
    mutual_info = mean_i [log q(z_i|x_i) − log q_agg(z_i)]   ≤ log N
    marginal_kl = mean_i [log q_agg(z_i) − log p(z_i)]
    elbo        = rec − avg_kl,   avg_kl = mutual_info + marginal_kl
    iwae        = mean_i L_k(x_i)  (a lower bound on mean log p(x_i))

  Lecture 7, slides "ELBO surgery" and "ELBO revisiting".

  Args:
    model: any object with ``encode(params, x) -> (mean, log_var)`` (a
      diagonal-Gaussian q), ``log_likelihood(params, z, x)`` for z of shape
      ``(k, B, d)`` -> ``(k, B)``, and ``log_prior(params, z) -> z.shape[:-1]``;
      e.g. a :class:`VAE`. It is a static argument of compiled functions,
      so it must be hashable; equal :class:`VAE` objects share compilations.
    params: the model's parameters.
    images: the whole split, ``(N, H, W, C)`` floats in the model's format.
    key: PRNG key; the figures are a deterministic function of it.
    num_samples: z samples per point for the surgery terms.
    iwae_k: importance samples per point for the IWAE bound (0 skips it).
    iwae_chunk: importance samples evaluated at once.
    batch_size: images per encoder pass.
    max_decoded: cap on images decoded at once in the IWAE pass (memory).
    surgery_chunk: posteriors per chunk when evaluating q_agg.

  Returns:
    ``{"rec", "avg_kl", "mutual_info", "marginal_kl", "elbo", "iwae",
    "log_n", "n", "iwae_k"}`` as floats (``iwae`` absent when ``iwae_k=0``).
  """
  images = np.asarray(images, np.float32)
  n = len(images)
  if n < 1:
    raise ValueError("images must hold at least one example.")
  k_sample, k_iwae = jax.random.split(key)
  means, log_vars, zs, recs = [], [], [], []
  bs = min(batch_size, n)
  for i, (x, real) in enumerate(_batches(images, bs)):
    m, lv, z, rec = jax.device_get(_encode_and_sample(
        model, params, jnp.asarray(x), jax.random.fold_in(k_sample, i), num_samples))
    means.append(m[:real])
    log_vars.append(lv[:real])
    zs.append(z[:, :real])
    recs.append(rec[:, :real])
  means, log_vars = np.concatenate(means), np.concatenate(log_vars)
  z, rec = np.concatenate(zs, axis=1), np.concatenate(recs, axis=1)
  terms = jax.device_get(_surgery_terms(model, params, jnp.asarray(z), jnp.asarray(means),
                                        jnp.asarray(log_vars), surgery_chunk))
  out = {
      "rec": float(rec.mean()),
      "avg_kl": float(terms.avg_kl),
      "mutual_info": float(terms.mutual_info),
      "marginal_kl": float(terms.marginal_kl),
      "log_n": math.log(n),
      "n": n,
  }
  out["elbo"] = out["rec"] - out["avg_kl"]
  if iwae_k:
    chunk = min(iwae_chunk, iwae_k)
    ibs = max(1, min(n, batch_size, max_decoded // chunk))
    total = 0.0
    for i, (x, real) in enumerate(_batches(images, ibs)):
      bound = _iwae(model, params, jnp.asarray(x), jax.random.fold_in(k_iwae, i), iwae_k, chunk)
      total += float(np.sum(np.asarray(bound)[:real], dtype=np.float64))
    out["iwae"] = total / n
    out["iwae_k"] = iwae_k
  return out


def report_key(seed: int, split: str) -> jax.Array:
  """The key the trainer's end-of-training report uses for ``split``."""
  return jax.random.fold_in(jax.random.key(seed), 1 + ("train", "test").index(split))


def posterior_params(model, params, images: np.ndarray, *, batch_size: int = 500):
  """(means, log_vars) of q(z|x_i) for every image of a split, as NumPy."""
  means, log_vars = [], []
  for x, real in _batches(np.asarray(images, np.float32), min(batch_size, len(images))):
    m, lv = jax.device_get(_encode(model, params, jnp.asarray(x)))
    means.append(m[:real])
    log_vars.append(lv[:real])
  return np.concatenate(means), np.concatenate(log_vars)


# ----------------------------------------------------------------------------
# The 2-D latent picture: q_agg against the prior
# ----------------------------------------------------------------------------
def latent_density_grids(model, params, images: np.ndarray, *, size: int = 160,
                         extent: float | None = None):
  """log q_agg(z) and log p(z) on a square grid over a 2-D latent space.

  Returns ``(log_q_agg, log_prior, extent)`` with two ``(size, size)`` arrays
  (row 0 at z₂ = +extent) and the half-width of the square.
  """
  if model.latent_dim != 2:
    raise ValueError(f"the latent picture needs latent_dim == 2, got {model.latent_dim}.")
  means, log_vars = posterior_params(model, params, images)
  if extent is None:
    reach = np.abs(means) + 2.0 * np.exp(0.5 * log_vars)
    extent = float(max(3.5, np.percentile(reach, 99.5)))
  axis = np.linspace(-extent, extent, size, dtype=np.float32)
  zx, zy = np.meshgrid(axis, axis[::-1])
  grid = jnp.asarray(np.stack([zx.ravel(), zy.ravel()], axis=1))
  log_q = jax.jit(functools.partial(surgery.aggregate_posterior_log_prob, chunk_size=1024))(
      grid, jnp.asarray(means), jnp.asarray(log_vars))
  log_p = _log_prior(model, params, grid)
  return (np.asarray(log_q).reshape(size, size), np.asarray(log_p).reshape(size, size),
          extent)


_COLORS = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64],
                    [240, 249, 33]], np.float32)  # a plasma-like ramp


def _colorize(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
  t = np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * (len(_COLORS) - 1)
  i = np.minimum(t.astype(int), len(_COLORS) - 2)
  f = (t - i)[..., None]
  return (_COLORS[i] * (1 - f) + _COLORS[i + 1] * f).astype(np.uint8)


def latent_density_picture(log_q: np.ndarray, log_p: np.ndarray, extent: float,
                           title: str = "", *, dynamic_range: float = 8.0) -> np.ndarray:
  """Two heat maps side by side, one shared log-density colour scale.

  Left: log q_agg(z) of the training split; right: log p(z). Both are
  clipped to [max − ``dynamic_range``, max] with the max over both panels.
  """
  from PIL import Image, ImageDraw

  hi = float(max(log_q.max(), log_p.max()))
  lo = hi - dynamic_range
  size = log_q.shape[0]
  pad, head = 8, 34
  canvas = np.full((head + size + pad, 3 * pad + 2 * size, 3), 255, np.uint8)
  for j, panel in enumerate((log_q, log_p)):
    x0 = pad + j * (size + pad)
    canvas[head:head + size, x0:x0 + size] = _colorize(panel, lo, hi)
    # Axes through the origin.
    c = size // 2
    canvas[head + c, x0:x0 + size] = 255
    canvas[head:head + size, x0 + c] = 255
  img = Image.fromarray(canvas)
  draw = ImageDraw.Draw(img)
  draw.text((pad, 2), title, fill=(0, 0, 0))
  draw.text((pad, 18), f"q_agg(z), |z|<{extent:.1f}", fill=(0, 0, 0))
  draw.text((2 * pad + size, 18), "prior p(z)", fill=(0, 0, 0))
  return np.asarray(img)


# ----------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------
def _global_noise(key, local_batch: int, dim: int, axis_name: str | None) -> jax.Array:
  """ε for this device's examples, sliced from one draw for the global batch.

  Drawing the global batch's noise and keeping this device's rows makes a
  ``shard_map`` step see exactly the noise of the single-device step.
  """
  if axis_name is None:
    return jax.random.normal(key, (local_batch, dim))
  n_dev = jax.lax.axis_size(axis_name)
  eps = jax.random.normal(key, (local_batch * n_dev, dim))
  start = jax.lax.axis_index(axis_name) * local_batch
  return jax.lax.dynamic_slice_in_dim(eps, start, local_batch)


def make_task(config, info: harness.DataInfo) -> harness.Task:
  model = build_model(config, info.image_shape)
  tx = optax.adam(config.learning_rate)
  h, w, c = info.image_shape
  if config.kl_warmup_steps:
    beta_at = schedules.linear_warmup(final_value=1.0, warmup_steps=config.kl_warmup_steps)
  else:
    beta_at = lambda step: jnp.ones((), jnp.float32)

  def check_batch(batch):
    x = batch["image"]
    if x.ndim != 4 or x.shape[1:] != (h, w, c):
      raise ConfigError(f"images must have shape (B, {h}, {w}, {c}), got {x.shape}.")

  def init(key, batch):
    k_model, k_state = jax.random.split(key)
    params = model.init(k_model, jnp.asarray(batch["image"], jnp.float32))
    return create_train_state(params, tx, k_state)

  def terms(params, x, eps):
    mean, log_var = model.encode(params, x)
    z = mean + jnp.exp(0.5 * log_var) * eps
    return model.log_likelihood(params, z, x), model.kl(params, z, mean, log_var)

  def train_step(state, batch, axis_name=None):
    x = batch["image"]
    eps = _global_noise(step_key(state), x.shape[0], config.latent_dim, axis_name)
    beta = beta_at(state.step)

    def loss_fn(params):
      log_lik, kl = terms(params, x, eps)
      return -jnp.mean(elbo_lib.elbo(log_lik, kl, beta=beta)), (log_lik, kl)

    (loss, (log_lik, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        as_local(state.params, axis_name))
    grads, loss, rec, kl = mean_over((grads, loss, jnp.mean(log_lik), jnp.mean(kl)),
                                     axis_name)
    metrics = {"train/loss": loss, "train/elbo": rec - kl, "train/rec": rec, "train/kl": kl,
               "train/beta": beta}
    return state.apply_gradients(grads=grads), metrics

  eval_key = jax.random.key(config.seed + 7919)

  def eval_step(state, batch):
    x = batch["image"]
    eps = jax.random.normal(eval_key, (x.shape[0], config.latent_dim))
    log_lik, kl = terms(state.params, x, eps)
    return {"elbo": log_lik - kl, "rec": log_lik, "kl": kl}

  def images(state, batch):
    from train.images import make_grid, side_by_side

    x = jnp.asarray(batch["image"], jnp.float32)
    mean, _ = model.encode(state.params, x)
    rec = np.asarray(model.mean_image(state.params, mean))
    shown = np.asarray((x + 1.0) / 2.0 if config.pixel_format == "symmetric" else x)
    z = model.sample_latents(state.params, jax.random.key(config.seed + 31), config.num_images)
    samples = np.asarray(model.mean_image(state.params, z))
    return {"reconstructions": side_by_side(shown, rec), "samples": make_grid(samples)}

  def report(state, ctx: harness.Context):
    ds = ctx.info.dataset
    splits = {"train": eval_images(ds.train_images, config.pixel_format, "train"),
              "test": eval_images(ds.test_images, config.pixel_format, "test")}
    out, table = {}, {}
    for split, imgs in splits.items():
      k = config.iwae_k if split == "test" else config.iwae_k_train
      r = split_report(model, state.params, imgs, report_key(config.seed, split),
                       num_samples=config.surgery_samples, iwae_k=k,
                       iwae_chunk=config.iwae_chunk, max_decoded=_MAX_DECODED[config.arch],
                       surgery_chunk=config.surgery_chunk)
      if config.prior == "gaussian":  # a lower-variance check of the MC avg_kl
        means, log_vars = posterior_params(model, state.params, imgs)
        r["avg_kl_analytic"] = float(surgery.analytic_avg_kl(jnp.asarray(means),
                                                             jnp.asarray(log_vars)))
      table[split] = r
      out.update({f"surgery/{split}/{name}": v for name, v in r.items()})
    if ctx.is_main:
      with open(os.path.join(ctx.workdir, "surgery.md"), "w") as f:
        f.write(surgery_table(table, title=f"prior={config.prior}, "
                              f"latent_dim={config.latent_dim}, step={int(state.step)}"))
      with open(os.path.join(ctx.workdir, "surgery.json"), "w") as f:
        json.dump(table, f, indent=2)
      if config.latent_dim == 2:
        log_q, log_p, extent = latent_density_grids(model, state.params, splits["train"])
        from train.images import save_png

        title = (f"prior={config.prior}: KL(q_agg||p) = "
                 f"{table['train']['marginal_kl']:.3f} nats (train)")
        save_png(latent_density_picture(log_q, log_p, extent, title),
                 os.path.join(ctx.workdir, "images", "latent_density.png"))
        np.savez(os.path.join(ctx.workdir, "latent_density.npz"), log_q_agg=log_q,
                 log_prior=log_p, extent=extent)
    return out

  return harness.Task(init=init, train_step=train_step, eval_step=eval_step,
                      images=images, report=report, check_batch=check_batch)


def surgery_table(table: dict[str, dict[str, float]], title: str = "") -> str:
  """Markdown table of :func:`split_report` results, one row per split."""
  cols = [("rec", "RL"), ("avg_kl", "avg KL"), ("mutual_info", "MI"),
          ("marginal_kl", "marginal KL"), ("elbo", "ELBO"), ("iwae", "IWAE-k"),
          ("log_n", "log N")]
  lines = [f"**{title}**\n"] if title else []
  lines.append("| split | " + " | ".join(c for _, c in cols) + " | k |")
  lines.append("|---" * (len(cols) + 2) + "|")
  for split, r in table.items():
    vals = [f"{r[k]:.3f}" if k in r else "–" for k, _ in cols]
    lines.append(f"| {split} (N={r['n']}) | " + " | ".join(vals) + f" | {r.get('iwae_k', '–')} |")
  return "\n".join(lines) + "\n"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Train (or resume) the VAE of ``config`` in ``workdir``; returns the summary."""
  return harness.train_and_evaluate(config, workdir, make_task)


def load_trained(workdir: str) -> tuple[VAE, Any, ml_collections.ConfigDict, dict]:
  """A finished (or running) VAE run, ready for :func:`split_report`.

  Returns ``(model, params, config, splits)``: the :class:`VAE`, its latest
  parameters, the run's config, and ``{"train", "test"}`` images in the fixed
  evaluation binarization that the run's own report used.
  """
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  # JSON turns tuples into lists.
  for key in ("hidden", "channels", "flow_hidden"):
    config[key] = tuple(config[key])
  _, _, info = harness.load_data(config)
  task = make_task(config, info)
  example = {"image": np.zeros((1,) + tuple(info.image_shape), np.float32)}
  state, _ = harness.restore_state(workdir, task, config, example)
  ds = info.dataset
  splits = {"train": eval_images(ds.train_images, config.pixel_format, "train"),
            "test": eval_images(ds.test_images, config.pixel_format, "test")}
  return build_model(config, info.image_shape), state.params, config, splits


if __name__ == "__main__":
  harness.run_cli("vae", get_config, make_task)
