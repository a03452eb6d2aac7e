"""Gaussian VAE with ELBO-surgery diagnostics and a flow prior: ``python -m train.vae``.

Lecture 7, first half: (1/N) Σ_i KL(q(z|x_i) || p(z)) = I_q[x, z] +
KL(q_agg(z) || p(z)) (slides "Theorem", "ELBO surgery"); only the marginal KL
depends on the prior, so ``--config.prior=flow`` learns a RealNVP prior
p(z|λ) jointly through the ELBO (slide "ELBO with flow-based VAE prior"; its
KL term is the one-sample estimate log q(z|x) − log p(z|λ)). The model is
:class:`dgmjax.models.vae.VAE`.

At the end the harness hands the report every posterior of the train and
test split (a gathering evaluation), from which it computes RL, avg KL, MI,
marginal KL over the exact q_agg (:mod:`dgmjax.eval.surgery_report`), and
IWAE-k. They go to ``summary.json`` (``surgery/<split>/<term>``) and
``surgery.md``; a 2-D latent also draws q_agg against the prior
(``images/latent_density.png``). Training binarizes dynamically; every
evaluation sees one fixed binarization per split (:func:`train.harness.formatted`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dgmjax import plots
from dgmjax.eval import surgery_report
from dgmjax.images import make_grid, side_by_side
from dgmjax.losses import elbo as elbo_lib
from dgmjax.losses import schedules, surgery
from dgmjax.models.vae import LIKELIHOODS, PRIORS, VAE, make_vae
from dgmjax.nn.vae import ARCHS
from train import harness
from train.state import create_train_state, step_key

# Decoded images one compiled IWAE call may hold at once (memory).
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


def build_model(config, image_shape) -> VAE:
  """The :class:`VAE` a config describes (validates the model keys)."""
  validate(config, tuple(image_shape))
  return make_vae(
      arch=config.arch, image_shape=tuple(image_shape), latent_dim=config.latent_dim,
      prior=config.prior, likelihood=config.likelihood, pixel_format=config.pixel_format,
      hidden=tuple(config.hidden), channels=tuple(config.channels),
      num_res_blocks=config.num_res_blocks, res_hidden=config.res_hidden,
      flow_layers=config.flow_layers, flow_hidden=tuple(config.flow_hidden))


def validate(config, image_shape) -> None:
  need, is_int = harness.config_check(config), harness.is_int
  need(config.arch in ARCHS, "arch", f"one of {ARCHS}")
  need(config.prior in PRIORS, "prior", f"one of {PRIORS}")
  need(config.likelihood in LIKELIHOODS, "likelihood", f"one of {LIKELIHOODS}")
  need(is_int(config.latent_dim, 2 if config.prior == "flow" else 1), "latent_dim",
       "an int >= 2 for prior='flow' (a coupling layer splits z in two)"
       if config.prior == "flow" else "an int >= 1")
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
    need(config.pixel_format in binary, "pixel_format", f"one of {binary} for likelihood="
         "'bernoulli' (use likelihood='gaussian' for continuous pixels)")
  else:
    need(config.pixel_format in ("unit", "symmetric"), "pixel_format",
         "'unit' or 'symmetric' for likelihood='gaussian'")
  need(config.arch != "conv" or (image_shape[0] % 4 == 0 and image_shape[1] % 4 == 0), "arch",
       f"'mlp' for images whose sides are not multiples of 4 ({image_shape})")


def report_key(config) -> jax.Array:
  """The key of the end-of-run surgery report (pass it to ``split_report`` to redo it)."""
  return jax.random.fold_in(jax.random.key(config.seed + 7919), 1)


def make_task(config, info: harness.DataInfo) -> harness.Task:
  model = build_model(config, info.image_shape)
  tx = optax.adam(config.learning_rate)
  if config.kl_warmup_steps:
    beta_at = schedules.linear_warmup(final_value=1.0, warmup_steps=config.kl_warmup_steps)
  else:
    beta_at = lambda step: jnp.ones((), jnp.float32)
  eval_key = jax.random.key(config.seed + 7919)
  surgery_key = report_key(config)

  def init(key, batch):
    k_model, k_state = jax.random.split(key)
    return create_train_state(model.init(k_model, jnp.asarray(batch["image"], jnp.float32)),
                              tx, k_state)

  def terms(params, x, eps):
    mean, log_var = model.encode(params, x)
    z = mean + jnp.exp(0.5 * log_var) * eps
    return model.log_likelihood(params, z, x), model.kl(params, z, mean, log_var)

  def train_step(state, batch):
    x = batch["image"]
    eps = jax.random.normal(step_key(state), (x.shape[0], config.latent_dim))
    beta = beta_at(state.step)

    def loss_fn(params):
      log_lik, kl = terms(params, x, eps)
      return -jnp.mean(elbo_lib.elbo(log_lik, kl, beta=beta)), (log_lik, kl)

    (loss, (log_lik, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    rec, kl = jnp.mean(log_lik), jnp.mean(kl)
    return state.apply_gradients(grads=grads), {
        "train/loss": loss, "train/elbo": rec - kl, "train/rec": rec, "train/kl": kl,
        "train/beta": beta}

  def eval_step(state, batch):
    eps = jax.random.normal(eval_key, (batch["image"].shape[0], config.latent_dim))
    log_lik, kl = terms(state.params, batch["image"], eps)
    return {"elbo": log_lik - kl, "rec": log_lik, "kl": kl}

  def draws_step(state, batch):
    return surgery_report.posterior_draws(model, state.params, batch["image"], surgery_key,
                                          num_samples=config.surgery_samples,
                                          index=batch["index"])

  def iwae_step(k):
    chunk = min(config.iwae_chunk, k, max(1, _MAX_DECODED[config.arch] // config.eval_batch_size))
    return lambda state, batch: {"iwae": surgery_report.iwae(
        model, state.params, batch["image"], jax.random.fold_in(surgery_key, 1),
        num_samples=k, chunk_size=chunk, index=batch["index"])}

  def images(state, batch):
    x = jnp.asarray(batch["image"], jnp.float32)
    rec = np.asarray(model.mean_image(state.params, model.encode(state.params, x)[0]))
    shown = np.asarray((x + 1.0) / 2.0 if config.pixel_format == "symmetric" else x)
    z = model.sample_latents(state.params, jax.random.key(config.seed + 31), config.num_images)
    return {"reconstructions": side_by_side(shown, rec),
            "samples": make_grid(np.asarray(model.mean_image(state.params, z)))}

  def report(state, ctx: harness.Context):
    out, table = {}, {}
    for split in ("train", "test"):
      draws = ctx.results["draws"][split]
      r = surgery_report.surgery_from_draws(model, state.params, draws,
                                            chunk_size=config.surgery_chunk)
      iwae_name, k = ("iwae", config.iwae_k) if split == "test" else ("iwae_train",
                                                                      config.iwae_k_train)
      if k:
        r.update(iwae=ctx.results[iwae_name][split]["iwae"], iwae_k=k)
      if config.prior == "gaussian":  # a lower-variance check of the MC avg_kl
        r["avg_kl_analytic"] = float(surgery.analytic_avg_kl(
            jnp.asarray(draws["mean"]), jnp.asarray(draws["log_var"])))
      table[split] = r
      out.update({f"surgery/{split}/{name}": v for name, v in r.items()})
    ctx.write_text("surgery.md", surgery_report.surgery_table(
        table, title=f"prior={config.prior}, latent_dim={config.latent_dim}, "
        f"step={int(state.step)}"))
    ctx.write_text("surgery.json", json.dumps(table, indent=2))
    if config.latent_dim == 2:
      train = ctx.results["draws"]["train"]
      log_q, log_p, extent = surgery_report.latent_density_grids(
          model, state.params, train["mean"], train["log_var"])
      ctx.image("latent_density", plots.density_pair(
          log_q, log_p, extent, title=f"prior={config.prior}: KL(q_agg||p) = "
          f"{table['train']['marginal_kl']:.3f} nats (train)"))
      ctx.write_arrays("latent_density.npz", log_q_agg=log_q, log_prior=log_p, extent=extent)
    return out

  evals = {"elbo": harness.Eval(eval_step, during_training=True),
           "draws": harness.Eval(draws_step, splits=("train", "test"), gather=True),
           "iwae": harness.Eval(iwae_step(config.iwae_k))}
  if config.iwae_k_train:
    evals["iwae_train"] = harness.Eval(iwae_step(config.iwae_k_train), splits=("train",))
  return harness.Task(init=init, train_step=train_step, evals=evals, images=images,
                      report=report)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Train (or resume) the VAE of ``config`` in ``workdir``; returns the summary."""
  return harness.train_and_evaluate(config, workdir, make_task)


def load_trained(workdir: str) -> tuple[VAE, Any, ml_collections.ConfigDict, dict]:
  """A finished (or running) VAE run, ready for :func:`dgmjax.eval.surgery_report.split_report`.

  Returns ``(model, params, config, splits)``: the :class:`VAE`, its latest
  parameters, the run's config, and ``{"train", "test"}`` images in the fixed
  evaluation binarization that the run's own report used.
  """
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  for key in ("hidden", "channels", "flow_hidden"):  # JSON turns tuples into lists
    config[key] = tuple(config[key])
  train, test, info = harness.load_data(config)
  example = {"image": np.zeros((1,) + tuple(info.image_shape), np.float32)}
  state, _ = harness.restore_state(workdir, make_task(config, info), config, example)
  splits = {"train": harness.formatted(train, config.pixel_format, "train")["image"],
            "test": harness.formatted(test, config.pixel_format, "test")["image"]}
  return build_model(config, info.image_shape), state.params, config, splits


def main() -> None:
  """``python -m train.vae`` / ``dgmjax-vae``."""
  harness.run_cli("vae", get_config, make_task)


if __name__ == "__main__":
  main()
