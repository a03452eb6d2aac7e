"""A transformer prior over VQ-VAE / dVAE tokens: ``python -m train.prior``.

Lecture 7, DALL-E slide: "Since latent space is discrete we could train
autoregressive transformers in it." A finished tokenizer run (``train.vqvae``
or ``train.dvae``, given as ``--config.tokenizer=<its workdir>``) turns every
image of its data set into a grid of code indices, flattened in raster order;
this trainer fits :class:`dgmjax.nn.transformer.TokenTransformer` to those
sequences, either autoregressively (``order=autoregressive``, DALL-E) or as a
masked-token model (``order=masked``, MaskGIT), optionally class-conditional,
and writes decoded samples. The tokens are encoded once and cached in the
prior's workdir (``tokens.npz``); the tokenizer's data keys are used, the
prior's ``dataset`` keys are ignored.
"""

from __future__ import annotations

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dgmjax import sampling
from dgmjax.errors import ConfigError
from dgmjax.eval import example_keys
from dgmjax.losses import tokens as token_losses
from dgmjax.nn.transformer import TokenTransformer
from train import harness
from train.state import count_params, create_train_state, step_key

ORDERS = ("autoregressive", "masked")
_EVAL_STREAM, _SAMPLE_STREAM = 2_000_001, 2_000_002


def get_config() -> ml_collections.ConfigDict:
  c = harness.base_config()
  c.tokenizer = ""  # workdir of a finished train.vqvae or train.dvae run
  c.order = "autoregressive"  # "autoregressive" (DALL-E) | "masked" (MaskGIT)
  c.class_conditional = False
  c.num_classes = 10
  c.num_layers = 4
  c.width = 128
  c.num_heads = 4
  c.num_steps = 5000
  c.learning_rate = 3e-4
  c.checkpoint_every = 1000
  c.log_every = 100
  c.temperature = 1.0
  c.top_k = 0  # 0: off
  c.top_p = 1.0  # 1: off
  c.num_samples = 64
  c.maskgit_steps = 8
  c.confidence_temperature = 4.5
  return c


class Tokenizer:
  """A restored tokenizer run: images <-> (B, N) raster-order tokens."""

  def __init__(self, workdir: str):
    from train import dvae, vqvae  # only the chosen tokenizer's trainer is used

    path = os.path.join(workdir, "config.json")
    if not workdir or not os.path.exists(path):
      raise ConfigError(f"config.tokenizer must be the workdir of a finished train.vqvae or "
                        f"train.dvae run (with config.json), got {workdir!r}.")
    with open(path) as f:
      cfg = ml_collections.ConfigDict(json.load(f))
    for key in ("channels", "hidden"):  # JSON turns tuples into lists
      if key in cfg:
        cfg[key] = tuple(cfg[key])
    self.workdir, self.config = os.path.abspath(workdir), cfg
    self.kind = "vqvae" if "codebook" in cfg else "dvae"
    train, test, info = harness.load_data(cfg)
    self.splits, self.image_shape = {"train": train, "test": test}, tuple(info.image_shape)
    example = harness.formatted({"image": test["image"][:8]}, cfg.pixel_format)
    trainer = vqvae if self.kind == "vqvae" else dvae
    state, self.step = harness.restore_state(workdir, trainer.make_task(cfg, info), cfg, example)
    if self.kind == "vqvae":
      model = vqvae.build_model(cfg, self.image_shape[-1])
      var = {"params": state.params, **({"vq_ema": state.extra} if cfg.codebook == "ema" else {})}
      self.vocab_size = cfg.num_codes
      encode = lambda x: model.apply(var, x, method="encode")
      unit = (lambda x: (x + 1) / 2) if cfg.pixel_format == "symmetric" else (lambda x: x)
      decode = lambda t: unit(model.apply(var, t, method="decode_indices"))
    else:
      model = dvae.build_model(cfg, self.image_shape)
      self.vocab_size = model.num_classes
      # The mode of q(c|x): the code the decoder was trained to read.
      encode = lambda x: jnp.argmax(model.logits(state.params, x), axis=-1)
      decode = lambda t: model.mean_image(state.params, jax.nn.one_hot(t, self.vocab_size))
    self.grid = jax.eval_shape(encode, jnp.zeros((1, *self.image_shape))).shape[1:]
    self.seq_len = math.prod(self.grid)
    self.encode = jax.jit(lambda x: encode(x).reshape(len(x), -1).astype(jnp.int32))
    self.decode = jax.jit(lambda t: jnp.clip(decode(t.reshape(len(t), *self.grid)), 0, 1))

  def tokens(self, split: str, batch: int = 256) -> np.ndarray:
    x = harness.formatted(self.splits[split], self.config.pixel_format, split)["image"]
    return np.concatenate([np.asarray(self.encode(x[i:i + batch]))
                           for i in range(0, len(x), batch)])


@functools.lru_cache(maxsize=4)
def load_tokenizer(workdir: str) -> Tokenizer:
  return Tokenizer(workdir)


def load_tokens(config, workdir: str):
  """``harness.train_and_evaluate``'s ``load``: token splits, encoded once per tokenizer."""
  tok = load_tokenizer(config.tokenizer)
  cache = os.path.join(workdir, "tokens.npz")
  stamp = f"{tok.workdir}@{tok.step}"
  arrays = None
  if os.path.exists(cache):
    with np.load(cache) as z:
      if str(z["stamp"]) == stamp:
        arrays = {k: z[k] for k in z.files}
  if arrays is None:
    arrays = {"stamp": np.array(stamp)}
    for split in ("train", "test"):
      arrays[f"{split}_tokens"] = tok.tokens(split)
      arrays[f"{split}_label"] = np.asarray(tok.splits[split]["label"], np.int32)
    if jax.process_index() == 0:
      tmp = cache + ".tmp.npz"
      np.savez(tmp, **arrays)
      os.replace(tmp, cache)  # never a half-written cache
  split = {s: {"tokens": arrays[f"{s}_tokens"], "label": arrays[f"{s}_label"]}
           for s in ("train", "test")}
  if config.class_conditional and split["train"]["label"].max() >= config.num_classes:
    raise ConfigError(f"config.num_classes must exceed every label "
                      f"(max {split['train']['label'].max()}), got {config.num_classes}.")
  info = harness.DataInfo(tok.image_shape, len(split["train"]["tokens"]),
                          len(split["test"]["tokens"]))
  return split["train"], split["test"], info


def validate(config) -> None:
  harness.check_config(
      config, choices={"order": ORDERS, "class_conditional": (True, False)},
      ints={"num_layers": 1, "width": 1, "num_heads": 1, "top_k": 0, "num_samples": 1,
            "maskgit_steps": 1, "num_classes": 1},
      ranges={"temperature": "(0, inf)", "top_p": "(0, 1]",
              "confidence_temperature": "[0, inf)"})
  need = harness.config_check(config)
  need(config.width % config.num_heads == 0, "width", f"divisible by num_heads={config.num_heads}")


def build_model(config, tok: Tokenizer) -> TokenTransformer:
  return TokenTransformer(
      vocab_size=tok.vocab_size, seq_len=tok.seq_len, num_layers=config.num_layers,
      width=config.width, num_heads=config.num_heads, causal=config.order == "autoregressive",
      num_classes=config.num_classes if config.class_conditional else 0)


def sample(config, model: TokenTransformer, params, key, labels=None) -> jax.Array:
  """``config.num_samples`` token sequences from the prior."""
  filters = dict(temperature=float(config.temperature), top_k=config.top_k or None,
                 top_p=float(config.top_p) if config.top_p < 1 else None)
  if model.causal:
    return sampling.autoregressive_sample(key, model, params, batch_size=config.num_samples,
                                          labels=labels, **filters)
  return sampling.maskgit_sample(key, model, params, batch_size=config.num_samples,
                                 labels=labels, num_steps=config.maskgit_steps,
                                 confidence_temperature=float(config.confidence_temperature),
                                 **filters)


def make_task(config, info: harness.DataInfo) -> harness.Task:
  validate(config)
  tok = load_tokenizer(config.tokenizer)
  model = build_model(config, tok)
  tx = optax.adamw(config.learning_rate, weight_decay=0.01)
  labels_of = (lambda b: b["label"]) if config.class_conditional else (lambda b: None)

  def inputs(key, tokens):
    """Model input and the positions that score: all (autoregressive) or the masked ones."""
    if model.causal:
      return tokens, None
    mask = jax.vmap(lambda k: token_losses.maskgit_mask(k, 1, model.seq_len)[0])(key)
    return jnp.where(mask, model.mask_id, tokens), mask

  def per_example(params, batch, keys):
    x, mask = inputs(keys, batch["tokens"])
    logits = model.apply(params, x, labels_of(batch))
    return token_losses.token_cross_entropy(logits, batch["tokens"], mask=mask)

  def init(key, batch):
    k_init, k_state = jax.random.split(key)
    params = model.init(k_init, batch["tokens"], labels_of(batch))
    return create_train_state(params, tx, k_state)

  def train_step(state, batch):
    keys = jax.random.split(step_key(state), len(batch["tokens"]))
    loss, grads = jax.value_and_grad(lambda p: per_example(p, batch, keys).mean())(state.params)
    return state.apply_gradients(grads=grads), {"train/nats_per_token": loss}

  def eval_step(state, batch):
    keys = example_keys(jax.random.key(_EVAL_STREAM), batch["index"])
    return {"nats_per_token": per_example(state.params, batch, keys)}

  def images(state, batch):
    labels = (jnp.arange(config.num_samples) % config.num_classes
              if config.class_conditional else None)
    key = jax.random.fold_in(jax.random.key(config.seed), _SAMPLE_STREAM)
    return {"samples": np.asarray(tok.decode(sample(config, model, state.params, key, labels)))}

  def report(state, ctx: harness.Context):
    nats = float(ctx.results["nll"]["test"]["nats_per_token"])
    # Masked order: the cross-entropy of masked tokens at a random ratio, not a likelihood.
    name = "test/bits_per_token" if model.causal else "test/masked_bits_per_token"
    return {name: nats / math.log(2), "num_params": count_params(state.params),
            "vocab_size": tok.vocab_size, "seq_len": tok.seq_len,
            "uniform_bits_per_token": math.log2(tok.vocab_size)}

  return harness.Task(init=init, train_step=train_step, images=images, report=report,
                      evals={"nll": harness.Eval(eval_step, during_training=True)})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Programmatic entry point: train or resume the prior, return the summary."""
  return harness.train_and_evaluate(config, workdir, make_task,
                                    load=functools.partial(load_tokens, workdir=workdir))


def main() -> None:
  """``python -m train.prior --config.tokenizer=<vqvae or dvae workdir> --workdir=DIR``."""
  from absl import flags

  # run_cli hands load the config only; the cache lives in the parsed --workdir.
  harness.run_cli("prior", get_config, make_task,
                  load=lambda config: load_tokens(config, flags.FLAGS.workdir))


if __name__ == "__main__":
  main()
