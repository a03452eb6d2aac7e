"""Discrete VAEs with Gumbel-softmax: ``python -m train.dvae``.

Lecture 7, "Discrete VAE latents" → "Gumbel-softmax trick" → "DALL-E/dVAE":
the answer to "can we reparametrise a discrete sample?". Two models, one
trainer (``config.model``):

* ``categorical`` (default): Jang, Gu, Poole (2016)'s categorical VAE on
  binarized MNIST, MLP 784-512-256-(N×K) encoder, (N×K)-256-512-784 Bernoulli
  decoder, N = 20 variables × K = 10 classes, uniform prior (KL = log K − H(q)
  per variable) or a learned categorical prior.
* ``dvae``: a DALL-E-style dVAE scaled to 28×28: conv encoder to a 7×7 grid of
  logits over K codes, ``z = Σ_k ĉ_k e_k`` with a learned codebook, conv
  decoder; Bernoulli or logit-Laplace likelihood, KL weight warm-up.

The estimator (``config.estimator``) only changes training:
``gumbel_softmax`` (relaxed ĉ), ``st_gumbel`` (one-hot forward, relaxed
gradient), ``st_argmax`` (one-hot of the mode, softmax gradient; the
baseline), ``st_categorical`` (one-hot sample, softmax gradient: Jang et al.'s
"ST"). Evaluation is the same for all: one-hot codes ``c ~ q(c|x)``.

Evaluation (``summary.json``):

* ``test/neg_elbo``: −ELBO = −log p(x|c) + KL(q(c|x)||p(c)) with one hard
  sample c ~ q per test image (an unbiased estimate of the discrete model's
  −ELBO), and its two terms ``test/recon``, ``test/kl``.
* ``test/neg_iwae``: −L_k, the importance-weighted bound with k =
  ``iwae_samples`` hard samples c_j ~ q(c|x) as proposals:
  ``log w_j = log p(x|c_j) + log p(c_j) − log q(c_j|x)``. With the categorical
  q itself as proposal (not the Concrete relaxation) this is a valid lower
  bound on the log-likelihood of the discrete-latent model, tighter than the
  ELBO for every k ≥ 1 in expectation.
* ``train_set/neg_elbo``: the same −ELBO on the training images (the
  overfitting gap on the 4500-image offline set).
* ``test/neg_elbo_relaxed``: a diagnostic, the decoder on relaxed samples at
  the last training τ with the categorical KL (what the Gumbel-softmax
  estimator optimises). Not a bound on the discrete model: the gap to
  ``test/neg_elbo`` is the price of training on relaxed codes.
* Code usage per latent variable (perplexity, classes used) and
  ``images/code_usage.png``; reconstructions and samples from the prior.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dgmjax.errors import ConfigError
from dgmjax.losses import elbo as elbo_lib
from dgmjax.losses import gumbel, schedules
from dgmjax.nn import dvae as dvae_nn
from dgmjax.parallel import as_local, mean_over
from train import harness
from train.state import create_train_state, step_key

MODELS = ("categorical", "dvae")
LIKELIHOODS = ("bernoulli", "logit_laplace")
PRIORS = ("uniform", "learned")
TEMPERATURES = ("jang", "exponential", "cosine", "constant")
# Streams of randomness folded into the run's key, apart from training steps
# (which use step_key: a fold-in of the step number).
_EVAL_STREAM, _IWAE_STREAM, _SAMPLE_STREAM, _RELAXED_STREAM = (
    1_000_001, 1_000_002, 1_000_003, 1_000_004)


def get_config() -> ml_collections.ConfigDict:
  c = harness.base_config()
  c.model = "categorical"  # "categorical" | "dvae"
  c.estimator = "gumbel_softmax"  # "gumbel_softmax" | "st_gumbel" | "st_argmax" | "st_categorical"
  c.pixel_format = "binary_dynamic"
  c.likelihood = "bernoulli"  # "bernoulli" (binary pixels) | "logit_laplace" (unit pixels)
  c.prior = "uniform"  # "uniform" | "learned"
  c.num_steps = 10000
  c.batch_size = 128  # Jang et al. use 100; 128 divides 8 TPU cores
  c.eval_batch_size = 256
  c.learning_rate = 1e-3
  c.log_every = 100
  c.eval_every = 2000
  c.checkpoint_every = 2000
  # Categorical VAE (Jang et al.): N variables × K classes, MLP widths.
  c.num_vars = 20
  c.num_classes = 10
  c.hidden = (512, 256)
  # dVAE (DALL-E style): a grid of (H/4)×(W/4) codes over a K-entry codebook.
  c.num_codes = 64
  c.code_dim = 32
  c.channels = (32, 64)
  c.num_res_blocks = 1
  c.res_hidden = 32
  c.pixel_eps = 0.1  # logit-Laplace: pixels mapped to [eps, 1 - eps]
  # logit-Laplace: soft floor on the log-scale log b. Without it (or with a
  # low floor such as log 0.1) the decoder buys unbounded density on MNIST's
  # constant background (b -> 0), widens b on the strokes and ignores the
  # codes (measured: black reconstructions). A very negative value (e.g. -30)
  # effectively disables it, as in DALL-E on natural images.
  c.min_log_scale = 0.0
  # Temperature τ: "jang" = max(final, init·exp(−rate·N·floor(t/N))), N = anneal_every;
  # "exponential"/"cosine" anneal init → final over anneal_steps.
  c.temperature = "jang"
  c.temperature_init = 1.0
  c.temperature_final = 0.5
  c.anneal_rate = 1e-4
  c.anneal_every = 1000
  c.anneal_steps = 5000
  # KL weight β, warmed up linearly from 0 over kl_warmup_steps (0: constant).
  c.kl_weight = 1.0
  c.kl_warmup_steps = 0
  # Importance-weighted bound at the end (0: skip), computed chunk by chunk.
  c.iwae_samples = 1000
  c.iwae_chunk = 100
  return c


# ----------------------------------------------------------------------------
# The model as pure functions of the parameters
# ----------------------------------------------------------------------------
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
      return elbo_lib.bernoulli_log_likelihood(out, x, event_ndims=3)
    c = self.image_shape[-1]
    x_mapped = elbo_lib.map_pixels(x, eps=self.pixel_eps)
    return elbo_lib.logit_laplace_log_likelihood(
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
    return elbo_lib.unmap_pixels(jax.nn.sigmoid(out[..., :c]), eps=self.pixel_eps)

  def iwae_bound(self, params, x: jax.Array, key: jax.Array, *, num_samples: int,
                 chunk_size: int) -> jax.Array:
    """L_k per example with k hard proposals c_j ~ q(c|x) (a bound on log p(x))."""
    logits = self.logits(params, x)
    b = x.shape[0]

    def log_weights(chunk_key, n):
      codes = dvae_nn.hard_codes(chunk_key, jnp.broadcast_to(logits, (n, *logits.shape)))
      flat = codes.reshape(n * b, *self.latent_shape)
      xs = jnp.broadcast_to(x, (n, *x.shape)).reshape(n * b, *x.shape[1:])
      ll = self.log_likelihood(params, flat, xs).reshape(n, b)
      lp = self.log_prior(params, codes.reshape(n * b, *self.latent_shape)).reshape(n, b)
      lq = self.log_posterior(codes, logits[None])
      return elbo_lib.iwae_log_weights(ll, lp, lq)

    return elbo_lib.chunked_iwae_bound(log_weights, key, num_samples,
                                       chunk_size=chunk_size)


def build_model(config, image_shape: tuple[int, int, int]) -> DiscreteVAE:
  """The :class:`DiscreteVAE` a config describes (validated)."""
  _validate(config, image_shape)
  h, w, c = image_shape
  out_c = c if config.likelihood == "bernoulli" else 2 * c
  if config.model == "categorical":
    latent = (config.num_vars, config.num_classes)
    enc = dvae_nn.MLPEncoder(config.num_vars, config.num_classes, tuple(config.hidden))
    dec = dvae_nn.MLPDecoder((h, w, out_c), tuple(reversed(config.hidden)))
  else:
    latent = (h // 4, w // 4, config.num_codes)
    enc = dvae_nn.ConvCodeEncoder(config.num_codes, tuple(config.channels),
                                  config.num_res_blocks, config.res_hidden)
    dec = dvae_nn.ConvCodeDecoder(config.num_codes, config.code_dim,
                                  tuple(reversed(config.channels)),
                                  config.num_res_blocks, config.res_hidden, out_c)
  return DiscreteVAE(enc, dec, tuple(image_shape), latent, config.likelihood,
                     config.prior == "learned", float(config.pixel_eps),
                     float(config.min_log_scale))


# ----------------------------------------------------------------------------
# Config checks and schedules
# ----------------------------------------------------------------------------
def _need(cond: bool, key: str, what: str, value: Any) -> None:
  if not cond:
    raise ConfigError(f"config.{key} must be {what}, got {value!r}.")


def _validate(config, image_shape) -> None:
  def one_of(key, options):
    _need(config[key] in options, key, f"one of {options}", config[key])

  one_of("model", MODELS)
  one_of("estimator", dvae_nn.ESTIMATORS)
  one_of("likelihood", LIKELIHOODS)
  one_of("prior", PRIORS)
  one_of("temperature", TEMPERATURES)
  if config.likelihood == "bernoulli":
    _need(config.pixel_format in ("binary_dynamic", "binary_static"), "pixel_format",
          "'binary_dynamic' or 'binary_static' for the Bernoulli likelihood "
          "(use likelihood='logit_laplace' for grey pixels)", config.pixel_format)
  else:
    _need(config.pixel_format == "unit", "pixel_format",
          "'unit' for the logit-Laplace likelihood", config.pixel_format)
    _need(0.0 < config.pixel_eps < 0.5, "pixel_eps", "in (0, 0.5)", config.pixel_eps)
    _need(math.isfinite(config.min_log_scale), "min_log_scale", "finite",
          config.min_log_scale)
  for key in ("num_vars", "code_dim", "num_res_blocks", "res_hidden", "iwae_chunk"):
    _need(isinstance(config[key], int) and config[key] >= 1, key, "an int >= 1", config[key])
  for key in ("num_classes", "num_codes"):
    _need(isinstance(config[key], int) and config[key] >= 2, key, "an int >= 2", config[key])
  for key in ("iwae_samples", "kl_warmup_steps"):
    _need(isinstance(config[key], int) and config[key] >= 0, key, "an int >= 0", config[key])
  for key in ("hidden", "channels"):
    _need(len(config[key]) >= 1 and all(isinstance(v, int) and v >= 1 for v in config[key]),
          key, "a non-empty tuple of ints >= 1", config[key])
  _need(config.kl_weight >= 0, "kl_weight", ">= 0", config.kl_weight)
  h, w, _ = image_shape
  if config.model == "dvae":
    _need(h % 4 == 0 and w % 4 == 0, "model",
          f"'categorical' for images whose sides are not multiples of 4 ({image_shape})",
          config.model)


def temperature_schedule(config) -> schedules.Schedule:
  """τ(step) from the config, a pure function of the step."""
  try:
    if config.temperature == "jang":
      return schedules.jang_temperature_schedule(
          rate=float(config.anneal_rate), every=config.anneal_every,
          min_temperature=float(config.temperature_final),
          init_temperature=float(config.temperature_init))
    if config.temperature == "exponential":
      return schedules.exponential_temperature_schedule(
          init=float(config.temperature_init), final=float(config.temperature_final),
          decay_steps=config.anneal_steps)
    if config.temperature == "cosine":
      return schedules.cosine_temperature_schedule(
          init=float(config.temperature_init), final=float(config.temperature_final),
          decay_steps=config.anneal_steps)
    _need(config.temperature_init > 0, "temperature_init", "> 0", config.temperature_init)
    tau = float(config.temperature_init)
    return lambda step: jnp.full(jnp.shape(step), tau, jnp.float32)
  except (ValueError, TypeError) as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(f"bad temperature schedule (config.temperature="
                      f"{config.temperature!r}, temperature_init/final, anneal_*): {e}") from None


def kl_weight_schedule(config) -> schedules.Schedule:
  """β(step): linear warm-up from 0 to ``kl_weight``, or constant."""
  if config.kl_warmup_steps == 0:
    beta = float(config.kl_weight)
    return lambda step: jnp.full(jnp.shape(step), beta, jnp.float32)
  return schedules.linear_warmup(final_value=float(config.kl_weight),
                                 warmup_steps=config.kl_warmup_steps)


def example_keys(key: jax.Array, batch_size: int, axis_name: str | None = None) -> jax.Array:
  """One key per example, a function of its *global* index in the batch.

  Under ``shard_map``/``pmap`` each device holds ``batch_size`` examples of the
  global batch; folding in the global index gives every example the same
  noise as in a single-device run of the same global batch.
  """
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * batch_size
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(offset + jnp.arange(batch_size))


# ----------------------------------------------------------------------------
# Task
# ----------------------------------------------------------------------------
def make_task(config, info: harness.DataInfo) -> harness.Task:
  model = build_model(config, info.image_shape)
  tau_fn = temperature_schedule(config)
  beta_fn = kl_weight_schedule(config)
  tx = optax.adam(config.learning_rate)
  h, w, c = info.image_shape
  sample = jax.vmap(lambda k, lg, t: dvae_nn.sample_codes(
      k, lg, estimator=config.estimator, temperature=t), in_axes=(0, 0, None))

  def check_batch(batch):
    x = batch["image"]
    if x.ndim != 4 or x.shape[1:] != tuple(info.image_shape):
      raise ConfigError(f"images must have shape (B, {h}, {w}, {c}), got {x.shape}.")

  def init(key, batch):
    k_model, k_state = jax.random.split(key)
    params = model.init(k_model, jnp.asarray(batch["image"], jnp.float32))
    return create_train_state(params, tx, k_state)

  def train_step(state, batch, axis_name=None):
    x = batch["image"]
    keys = example_keys(step_key(state), x.shape[0], axis_name)
    tau = tau_fn(state.step)
    beta = beta_fn(state.step)

    def loss_fn(params):
      logits = model.logits(params, x)
      codes = sample(keys, logits, tau)
      ll = model.log_likelihood(params, codes, x)
      kl = model.kl(params, logits)
      loss = -jnp.mean(elbo_lib.elbo(ll, kl, beta=beta))
      return loss, (ll, kl, logits)

    (loss, (ll, kl, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        as_local(state.params, axis_name))
    q = jax.nn.softmax(logits, axis=-1)
    stats = {
        "train/loss": loss,
        # The relaxed or straight-through sample's −ELBO, not the discrete
        # model's (that is test/neg_elbo with hard codes).
        "train/neg_elbo": jnp.mean(kl - ll),
        "train/recon": -jnp.mean(ll),
        "train/kl": jnp.mean(kl),
        # How confident q is: mean max probability over variables.
        "train/q_max": jnp.mean(jnp.max(q, axis=-1)),
    }
    grads, stats = mean_over((grads, stats), axis_name)
    stats["train/temperature"] = tau
    stats["train/kl_weight"] = beta
    return state.apply_gradients(grads=grads), stats

  def eval_step(state, batch):
    x = batch["image"]
    keys = example_keys(jax.random.fold_in(state.rng, _EVAL_STREAM), x.shape[0])
    logits = model.logits(state.params, x)
    codes = jax.vmap(dvae_nn.hard_codes)(keys, logits)
    ll = model.log_likelihood(state.params, codes, x)
    kl = model.kl(state.params, logits)
    # Diagnostic only: the decoder on relaxed samples at the last training τ
    # with the categorical KL, i.e. the Gumbel-softmax training objective.
    # It is not a bound on the discrete model's log-likelihood.
    tau = tau_fn(jnp.maximum(state.step - 1, 0))
    soft_keys = example_keys(jax.random.fold_in(state.rng, _RELAXED_STREAM), x.shape[0])
    soft = jax.vmap(lambda k, lg: gumbel.gumbel_softmax_sample(k, lg, temperature=tau))(
        soft_keys, logits)
    ll_soft = model.log_likelihood(state.params, soft, x)
    return {"neg_elbo": kl - ll, "recon": -ll, "kl": kl, "neg_elbo_relaxed": kl - ll_soft}

  def iwae_step(state, batch):
    key = jax.random.fold_in(state.rng, _IWAE_STREAM)
    bound = model.iwae_bound(state.params, batch["image"], key,
                             num_samples=config.iwae_samples,
                             chunk_size=min(config.iwae_chunk, config.iwae_samples))
    return {"neg_iwae": -bound}

  @jax.jit
  def mode_codes(params, x):
    return jnp.argmax(model.logits(params, x), axis=-1)

  @jax.jit
  def pictures(state, x):
    idx = jnp.argmax(model.logits(state.params, x), axis=-1)
    rec = model.mean_image(state.params, jax.nn.one_hot(idx, model.num_classes))
    key = jax.random.fold_in(state.rng, _SAMPLE_STREAM)
    prior = jnp.broadcast_to(model.prior_logits(state.params), (x.shape[0], *model.latent_shape))
    return rec, model.mean_image(state.params, dvae_nn.hard_codes(key, prior))

  def images(state, batch):
    from train.images import side_by_side

    x = np.asarray(batch["image"])
    rec, samples = pictures(state, x)
    return {"reconstructions": side_by_side(x, np.asarray(rec)),
            "samples": np.asarray(samples)}

  def encode_all(params, images_):
    return np.concatenate([np.asarray(mode_codes(params, images_[i : i + 500]))
                           for i in range(0, len(images_), 500)])

  def report(state, ctx: harness.Context):
    ds = ctx.info.dataset
    out: dict[str, Any] = {"model": config.model, "estimator": config.estimator,
                           "train/temperature_final": float(tau_fn(state.step - 1))}
    # Same keys as the harness's test arrays, so the compiled evaluator is reused.
    test = harness.formatted({"image": ds.test_images, "label": ds.test_labels},
                             config.pixel_format, "test")
    train = harness.formatted({"image": ds.train_images, "label": ds.train_labels},
                              config.pixel_format, "train")
    tr = ctx.evaluate(state, train)
    out.update({f"train_set/{k}": v for k, v in tr.items()})
    te = ctx.evaluate(state, test)
    out["overfit_gap"] = te["neg_elbo"] - tr["neg_elbo"]
    if config.iwae_samples:
      ndev = jax.device_count()
      bs = min(config.eval_batch_size, -(-len(test["image"]) // ndev) * ndev)
      iwae_eval = harness.make_evaluator(
          harness.Task(init=init, train_step=train_step, eval_step=iwae_step), ctx.mesh, bs)
      out["test/neg_iwae"] = iwae_eval(state, test)["neg_iwae"]
      out["iwae_samples"] = config.iwae_samples
    counts = code_counts(encode_all(state.params, test["image"]), model.num_classes)
    out.update(usage_summary(counts))
    if ctx.is_main:
      _save_usage(counts, f"{ctx.workdir}/images/code_usage.png")
    return out

  return harness.Task(init=init, train_step=train_step, eval_step=eval_step,
                      images=images, report=report, check_batch=check_batch)


# ----------------------------------------------------------------------------
# Code usage
# ----------------------------------------------------------------------------
def code_counts(indices: np.ndarray, num_classes: int) -> np.ndarray:
  """(N, *variables) code indices -> (num_variables, K) counts per variable."""
  flat = np.asarray(indices).reshape(len(indices), -1)
  counts = np.zeros((flat.shape[1], num_classes), np.int64)
  for v in range(flat.shape[1]):
    counts[v] = np.bincount(flat[:, v], minlength=num_classes)
  return counts


def _perplexity(counts: np.ndarray) -> np.ndarray:
  p = counts / np.maximum(counts.sum(-1, keepdims=True), 1)
  with np.errstate(divide="ignore", invalid="ignore"):
    ent = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=-1)
  return np.exp(ent)


def usage_summary(counts: np.ndarray) -> dict:
  """Per-variable and pooled usage of the classes by the modes of q(c|x).

  ``code_perplexity``: mean over variables of exp(entropy of the variable's
  class histogram) — K if every class is used equally, 1 if the variable is
  constant (unused). ``codes_used``: fraction of (variable, class) pairs used
  at least once. ``codebook_*``: the same for the histogram pooled over
  variables (the dVAE's shared codebook).
  """
  per_var = _perplexity(counts)
  pooled = counts.sum(0)
  out = {
      "test/code_perplexity": float(per_var.mean()),
      "test/codes_used": float((counts > 0).mean()),
      "test/constant_variables": int((per_var < 1.0 + 1e-6).sum()),
      "test/codebook_perplexity": float(_perplexity(pooled)),
      "test/codebook_used": float((pooled > 0).mean()),
  }
  if counts.shape[0] <= 64:
    out["test/code_perplexity_per_variable"] = [round(float(v), 3) for v in per_var]
  return out


def _save_usage(counts: np.ndarray, path: str) -> None:
  """A heat map, one row per latent variable, one column per class."""
  from train.images import save_png

  p = counts / np.maximum(counts.sum(-1, keepdims=True), 1)
  scale = max(1, 256 // max(counts.shape))
  img = (255 * (1.0 - p / max(p.max(), 1e-12))).astype(np.uint8)
  img = np.repeat(np.repeat(img, scale, 0), scale, 1)
  save_png(np.stack([img, img, np.full_like(img, 255)], -1), path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Programmatic entry point (tests, benchmarks, notebooks): train or resume, return the summary."""
  return harness.train_and_evaluate(config, workdir, make_task)


if __name__ == "__main__":
  harness.run_cli("dvae", get_config, make_task)
