"""VQ-VAE (van den Oord et al. 2017): ``python -m train.vqvae``.

Lecture 7, "Deterministic variational posterior" and "Straight-through
gradient estimation": the encoder output z_e is replaced by its nearest code
z_q; the decoder sees ``z_e + sg(z_q - z_e)`` so gradients pass straight
through to the encoder. The codebook follows the encoder by EMA (default) or
by the codebook loss; the commitment loss (β = 0.25) keeps z_e near its code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dgmjax import plots
from dgmjax.eval import codes
from dgmjax.images import side_by_side
from dgmjax.losses import vq
from dgmjax.nn.vqvae import QUANTIZERS, VQVAE
from train import harness
from train.state import count_params, create_train_state, step_key


def get_config() -> ml_collections.ConfigDict:
  c = harness.base_config()
  c.num_steps = 2000
  c.batch_size = 128
  c.learning_rate = 2e-3
  # --config.cpu_devices=0 (one XLA CPU device per core) gave 2.5x the steps/s
  # on 2 cores, but one run of 12 hung in XLA's CPU all-reduce, so the default
  # stays one device (docs/performance.md). No effect on GPU/TPU.
  c.checkpoint_every = 1000
  c.log_every = 100
  c.num_codes = 512  # K
  c.code_dim = 32  # D
  c.beta = 0.25  # commitment weight
  c.codebook = "ema"  # "ema" or "loss"
  c.ema_decay = 0.99
  c.dead_code_threshold = 1.0  # restart codes used less than once per batch (EMA count)
  c.kmeans_init = False
  c.cosine = False  # l2-normalised codes
  c.channels = (32, 64)
  c.num_res_blocks = 2
  c.res_hidden = 32
  # Quantizer (docs/quantizers.md): "vq" (straight-through), "rotation" (rotation
  # trick), "fsq" (levels), "rvq" (num_stages residual codebooks of num_codes),
  # "lfq" (log2(num_codes) sign bits + entropy penalty), "factorized" (lookup_dim).
  c.quantizer = "vq"
  c.levels = (8, 8, 8)  # FSQ: 512 codes
  c.num_stages = 2  # RVQ
  c.quantizer_dropout = 0.0  # RVQ: probability of training with fewer stages
  c.lookup_dim = 8  # factorized codes
  c.entropy_weight = 0.1  # LFQ
  c.entropy_gamma = 1.0
  c.entropy_temperature = 1.0
  return c


def build_model(config, out_channels: int) -> VQVAE:
  return VQVAE(
      num_codes=config.num_codes, code_dim=config.code_dim, out_channels=out_channels,
      channels=tuple(config.channels), num_res_blocks=config.num_res_blocks,
      res_hidden=config.res_hidden, beta=config.beta, use_ema=config.codebook == "ema",
      decay=config.ema_decay, dead_code_threshold=config.dead_code_threshold,
      cosine=config.cosine, quantizer=config.quantizer, levels=tuple(config.levels),
      num_stages=config.num_stages, quantizer_dropout=config.quantizer_dropout,
      lookup_dim=config.lookup_dim, entropy_weight=config.entropy_weight,
      entropy_gamma=config.entropy_gamma, entropy_temperature=config.entropy_temperature)


def validate(config, info: harness.DataInfo) -> None:
  harness.check_config(
      config, choices={"codebook": ("ema", "loss"), "quantizer": QUANTIZERS},
      ints={"num_codes": 2, "code_dim": 1, "num_res_blocks": 1, "res_hidden": 1,
            "num_stages": 1, "lookup_dim": 1},
      int_tuples=("channels", "levels"),
      ranges={"beta": "[0, inf)", "ema_decay": "(0, 1)", "dead_code_threshold": "[0, inf)",
              "quantizer_dropout": "[0, 1]", "entropy_weight": "[0, inf)",
              "entropy_gamma": "[0, inf)", "entropy_temperature": "(0, inf)"})
  need = harness.config_check(config)
  if config.quantizer == "lfq":
    n = config.num_codes
    need(n & (n - 1) == 0 and n <= 2 ** 16, "num_codes",
         "a power of two <= 65536 for quantizer='lfq' (one sign bit per factor of 2)")
  need(not config.kmeans_init or config.quantizer in ("vq", "rotation"), "kmeans_init",
       "False unless quantizer is 'vq' or 'rotation' (the others have no single codebook)")
  need(config.pixel_format in ("unit", "symmetric"), "pixel_format",
       "'unit' or 'symmetric' for the VQ-VAE (MSE decoder)")
  h, w, _ = info.image_shape
  down = 2 ** len(config.channels)  # one stride-2 convolution per encoder level
  if config.get("image_size"):
    need(config.image_size % down == 0, "image_size",
         f"a multiple of {down} (the encoder halves the image {len(config.channels)} times)")
  need(h % down == 0 and w % down == 0, "dataset", f"images whose sides are multiples of "
       f"{down}, not {info.image_shape} (or set config.image_size)")


def make_task(config, info: harness.DataInfo) -> harness.Task:
  validate(config, info)
  model = build_model(config, info.image_shape[-1])
  use_ema = config.codebook == "ema"
  tx = optax.adam(config.learning_rate)
  # Tokens per position: K, Π levels (FSQ) or 2^bits (LFQ); RVQ counts all stages' codes.
  vocab = model.vocab_size

  def to_unit(x):
    return (x + 1.0) / 2.0 if config.pixel_format == "symmetric" else x

  def variables(state, params=None):
    params = state.params if params is None else params
    # FSQ and LFQ have no codebook statistics: extra is None for them.
    return {"params": params, **({"vq_ema": state.extra} if state.extra is not None else {})}

  def init(key, batch):
    k_init, k_code, k_state = jax.random.split(key, 3)
    x = jnp.asarray(batch["image"], jnp.float32)
    var = model.init(k_init, x)
    params, extra = var["params"], var.get("vq_ema")
    if config.kmeans_init:
      z_e = model.apply(var, x, method=lambda m, x: m.encoder(x))
      codebook, counts = vq.kmeans_init(k_code, z_e.reshape(-1, config.code_dim),
                                        config.num_codes, return_counts=True)
      if use_ema:
        extra = {"state": vq.ema_init(codebook, cluster_size=jnp.maximum(counts, 1.0))}
      else:
        params = {**params, "quantizer": {"codebook": codebook}}
    return create_train_state(params, tx, k_state, extra=extra)

  def train_step(state, batch):
    x = batch["image"]

    def loss_fn(params):
      (x_rec, out, _), updates = model.apply(
          variables(state, params), x, train=True, mutable=["vq_ema"],
          rngs={"vq_restart": step_key(state)})
      rec = jnp.mean((x_rec - x) ** 2)
      return rec + jnp.mean(out.loss), (rec, out, updates)

    (loss, (rec, out, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new = state.apply_gradients(grads=grads)
    if "vq_ema" in updates:
      new = new.replace(extra=updates["vq_ema"])
    return new, {"train/loss": loss, "train/mse": rec, "train/perplexity": out.perplexity,
                 "train/codes_used": out.codes_used,
                 "train/restarted": out.restarted.astype(jnp.float32)}

  def eval_step(state, batch):
    x = batch["image"]
    x_rec, out, _ = model.apply(variables(state), x)
    return {"mse": jnp.mean((to_unit(x_rec) - to_unit(x)) ** 2, axis=(1, 2, 3)),
            "pixel_var": jnp.var(to_unit(x), axis=(1, 2, 3)),
            "code_counts": codes.code_histogram(out.indices.reshape(x.shape[0], -1), vocab)}

  def images(state, batch):
    x = batch["image"]
    x_rec = model.apply(variables(state), x)[0]
    return {"reconstructions": side_by_side(
        np.asarray(to_unit(x)), np.clip(np.asarray(to_unit(x_rec)), 0, 1))}

  def report(state, ctx: harness.Context):
    test = ctx.results["recon"]["test"]
    counts = test["code_counts"] * ctx.info.num_test
    out = codes.usage_summary(counts)
    out.update({"test/nmse": test["mse"] / test["pixel_var"], "num_codes": vocab, "quantizer": config.quantizer,
                "num_params": count_params(state.params)})
    ctx.image("code_usage", plots.code_usage_chart(
        counts, title=f"test split ({config.quantizer}): perplexity "
        f"{out['test/perplexity']:.0f} of {vocab} codes, {100 * out['test/codes_used']:.0f}% used"))
    return out

  return harness.Task(init=init, train_step=train_step, images=images, report=report,
                      evals={"recon": harness.Eval(eval_step, during_training=True)})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Programmatic entry point (tests, benchmarks, notebooks): train or resume, return the summary."""
  return harness.train_and_evaluate(config, workdir, make_task)


def main() -> None:
  """``python -m train.vqvae`` / ``dgmjax-vqvae``."""
  harness.run_cli("vqvae", get_config, make_task)


if __name__ == "__main__":
  main()
