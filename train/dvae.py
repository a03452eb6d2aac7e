"""Discrete VAEs with Gumbel-softmax: ``python -m train.dvae``.

Lecture 7, "Discrete VAE latents" → "Gumbel-softmax trick" → "DALL-E/dVAE".
``model=categorical`` (default) is Jang et al.'s categorical VAE (MLP, 20
variables × 10 classes, Bernoulli pixels); ``model=dvae`` a DALL-E-style dVAE
(conv, a 7×7 grid over K codes mixed from a codebook, Bernoulli or
logit-Laplace). Both are :class:`dgmjax.models.dvae.DiscreteVAE`.

The estimator only changes training: ``gumbel_softmax`` (relaxed ĉ),
``st_gumbel``, ``st_argmax`` (the baseline) or ``st_categorical`` (Jang's
"ST"). Evaluation uses one-hot codes c ~ q(c|x) for all: ``test/neg_elbo``
and its terms, ``test/neg_iwae`` (−L_k with k hard proposals from q: a bound
on the discrete model's log-likelihood), ``train_set/neg_elbo`` (the
overfitting gap), the diagnostic ``test/neg_elbo_relaxed`` (decoder on
relaxed codes: not a bound), and code usage per variable. Details and
figures: ``docs/dvae.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dgmjax import plots
from dgmjax.errors import ConfigError
from dgmjax.eval import codes, example_keys
from dgmjax.images import side_by_side
from dgmjax.losses import elbo as elbo_lib
from dgmjax.losses import gumbel, schedules
from dgmjax.models.dvae import LIKELIHOODS, MODELS, DiscreteVAE, make_discrete_vae
from dgmjax.nn import dvae as dvae_nn
from train import harness
from train.state import create_train_state, step_key

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


def build_model(config, image_shape: tuple[int, int, int]) -> DiscreteVAE:
  """The :class:`DiscreteVAE` a config describes (validated)."""
  validate(config, image_shape)
  return make_discrete_vae(
      model=config.model, image_shape=tuple(image_shape), likelihood=config.likelihood,
      learned_prior=config.prior == "learned", num_vars=config.num_vars,
      num_classes=config.num_classes, hidden=tuple(config.hidden), num_codes=config.num_codes,
      code_dim=config.code_dim, channels=tuple(config.channels),
      num_res_blocks=config.num_res_blocks, res_hidden=config.res_hidden,
      pixel_eps=config.pixel_eps, min_log_scale=config.min_log_scale)


def validate(config, image_shape) -> None:
  harness.check_config(
      config, choices={"model": MODELS, "estimator": dvae_nn.ESTIMATORS,
                       "likelihood": LIKELIHOODS, "prior": PRIORS, "temperature": TEMPERATURES},
      ints={"num_vars": 1, "code_dim": 1, "num_res_blocks": 1, "res_hidden": 1,
            "iwae_chunk": 1, "num_classes": 2, "num_codes": 2, "iwae_samples": 0,
            "kl_warmup_steps": 0},
      int_tuples=("hidden", "channels"), ranges={"kl_weight": "[0, inf)"})
  need = harness.config_check(config)
  if config.likelihood == "bernoulli":
    need(config.pixel_format in ("binary_dynamic", "binary_static"), "pixel_format",
         "'binary_dynamic' or 'binary_static' for the Bernoulli likelihood "
         "(use likelihood='logit_laplace' for grey pixels)")
  else:
    need(config.pixel_format == "unit", "pixel_format", "'unit' for the logit-Laplace likelihood")
    harness.check_config(config, ranges={"pixel_eps": "(0, 0.5)", "min_log_scale": "[-inf, inf]"})
  h, w, _ = image_shape
  need(config.model != "dvae" or (h % 4 == 0 and w % 4 == 0), "model",
       f"'categorical' for images whose sides are not multiples of 4 ({image_shape})")


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
    harness.config_check(config)(harness.is_finite(config.temperature_init)
                                 and config.temperature_init > 0, "temperature_init", "> 0")
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


def batch_keys(key: jax.Array, batch_size: int) -> jax.Array:
  """One key per training example, a function of its position in the batch."""
  return example_keys(key, jnp.arange(batch_size))


# ----------------------------------------------------------------------------
# Task
# ----------------------------------------------------------------------------
def make_task(config, info: harness.DataInfo) -> harness.Task:
  model = build_model(config, info.image_shape)
  tau_fn = temperature_schedule(config)
  beta_fn = kl_weight_schedule(config)
  tx = optax.adam(config.learning_rate)
  sample = jax.vmap(lambda k, lg, t: dvae_nn.sample_codes(
      k, lg, estimator=config.estimator, temperature=t), in_axes=(0, 0, None))

  def init(key, batch):
    k_model, k_state = jax.random.split(key)
    params = model.init(k_model, jnp.asarray(batch["image"], jnp.float32))
    return create_train_state(params, tx, k_state)

  def train_step(state, batch):
    x = batch["image"]
    keys = batch_keys(step_key(state), x.shape[0])
    tau, beta = tau_fn(state.step), beta_fn(state.step)

    def loss_fn(params):
      logits = model.logits(params, x)
      ll = model.log_likelihood(params, sample(keys, logits, tau), x)
      kl = model.kl(params, logits)
      return -jnp.mean(elbo_lib.elbo(ll, kl, beta=beta)), (ll, kl, logits)

    (loss, (ll, kl, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    q = jax.nn.softmax(logits, axis=-1)
    # train/neg_elbo is the relaxed or straight-through sample's, not the
    # discrete model's (that is test/neg_elbo with hard codes).
    stats = {"train/loss": loss, "train/neg_elbo": jnp.mean(kl - ll),
             "train/recon": -jnp.mean(ll), "train/kl": jnp.mean(kl),
             "train/q_max": jnp.mean(jnp.max(q, axis=-1)),  # how confident q is
             "train/temperature": tau, "train/kl_weight": beta}
    return state.apply_gradients(grads=grads), stats

  def eval_step(state, batch):
    x = batch["image"]
    # Keys from each example's position in its split: the same figures in any
    # batch size or device count.
    keys = example_keys(jax.random.fold_in(state.rng, _EVAL_STREAM), batch["index"])
    logits = model.logits(state.params, x)
    ll = model.log_likelihood(state.params, jax.vmap(dvae_nn.hard_codes)(keys, logits), x)
    kl = model.kl(state.params, logits)
    # Diagnostic only: the decoder on relaxed samples at the last training τ
    # (the Gumbel-softmax objective); not a bound on the discrete model.
    tau = tau_fn(jnp.maximum(state.step - 1, 0))
    soft_keys = example_keys(jax.random.fold_in(state.rng, _RELAXED_STREAM), batch["index"])
    soft = jax.vmap(lambda k, lg: gumbel.gumbel_softmax_sample(k, lg, temperature=tau))(
        soft_keys, logits)
    ll_soft = model.log_likelihood(state.params, soft, x)
    return {"neg_elbo": kl - ll, "recon": -ll, "kl": kl, "neg_elbo_relaxed": kl - ll_soft,
            "code_counts": codes.variable_histograms(jnp.argmax(logits, -1), model.num_classes)}

  def iwae_step(state, batch):
    bound = model.iwae_bound(state.params, batch["image"],
                             jax.random.fold_in(state.rng, _IWAE_STREAM),
                             num_samples=config.iwae_samples,
                             chunk_size=min(config.iwae_chunk, config.iwae_samples),
                             index=batch["index"])
    return {"neg_iwae": -bound}

  @jax.jit
  def pictures(state, x):
    idx = jnp.argmax(model.logits(state.params, x), axis=-1)
    rec = model.mean_image(state.params, jax.nn.one_hot(idx, model.num_classes))
    key = jax.random.fold_in(state.rng, _SAMPLE_STREAM)
    prior = jnp.broadcast_to(model.prior_logits(state.params), (x.shape[0], *model.latent_shape))
    return rec, model.mean_image(state.params, dvae_nn.hard_codes(key, prior))

  def images(state, batch):
    x = np.asarray(batch["image"])
    rec, samples = pictures(state, x)
    return {"reconstructions": side_by_side(x, np.asarray(rec)), "samples": np.asarray(samples)}

  def report(state, ctx: harness.Context):
    elbo = ctx.results["elbo"]
    counts = elbo["test"]["code_counts"] * ctx.info.num_test
    out = {"model": config.model, "estimator": config.estimator,
           "train/temperature_final": float(tau_fn(state.step - 1)),
           "overfit_gap": elbo["test"]["neg_elbo"] - elbo["train"]["neg_elbo"],
           **codes.usage_summary(counts)}
    if config.iwae_samples:
      out["iwae_samples"] = config.iwae_samples
    ctx.image("code_usage", plots.usage_heatmap(
        counts, title=f"q(c|x) modes on the test split: perplexity "
        f"{out['test/code_perplexity']:.2f} of {model.num_classes} per variable",
        xlabel="code" if config.model == "dvae" else "class"))
    return out

  evals = {"elbo": harness.Eval(eval_step, splits=("test", "train"), during_training=True)}
  if config.iwae_samples:
    evals["iwae"] = harness.Eval(iwae_step)
  return harness.Task(init=init, train_step=train_step, evals=evals, images=images,
                      report=report)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Programmatic entry point (tests, benchmarks, notebooks): train or resume, return the summary."""
  return harness.train_and_evaluate(config, workdir, make_task)


def main() -> None:
  """``python -m train.dvae`` / ``dgmjax-dvae``."""
  harness.run_cli("dvae", get_config, make_task)


if __name__ == "__main__":
  main()
