"""A transformer prior over VQ-VAE / dVAE tokens: ``python -m train.prior``.

Lecture 7, DALL-E slide: "Since latent space is discrete we could train
autoregressive transformers in it." A finished tokenizer run (``train.vqvae``
or ``train.dvae``, given as ``--config.tokenizer=<its workdir>``) turns every
image of its data set into a grid of code indices, flattened in raster order;
this trainer fits :class:`dgmjax.nn.transformer.TokenTransformer` to those
sequences, either autoregressively (``order=autoregressive``, DALL-E) or as a
masked-token model (``order=masked``, MaskGIT), optionally class-conditional,
and writes decoded samples. The tokens are encoded once and cached in the
prior's workdir (``tokens.npz``, with a record of the tokenizer they came
from); the data set is the tokenizer's, so the prior's ``dataset`` key may
only be ``""`` or the tokenizer's own.

At the end, ``num_samples`` samples are decoded and scored with the project's
digit classifier by the very functions ``train.gan`` uses
(:func:`dgmjax.eval.samples.digit_classifier`,
:func:`dgmjax.eval.samples.classifier_sample_metrics`), so classes covered,
class KL and the Fréchet classifier distance compare across the two trainers;
the sampling throughput (images/s after compilation) is recorded with them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from ml_collections import config_dict

from dgmjax import images as imglib
from dgmjax import sampling
from dgmjax.errors import ConfigError
from dgmjax.eval import example_keys, likelihood
from dgmjax.eval import samples as sample_eval
from dgmjax.losses import tokens as token_losses
from dgmjax.nn.transformer import TokenTransformer
from train import checkpoints as ckptlib
from train import harness, tokenizer
from train.state import count_params, create_train_state, step_key

ORDERS = ("autoregressive", "masked")
LR_SCHEDULES = ("constant", "cosine")
# Training keys whose default depends on the order (None in get_config). The
# masked model learns more slowly: at the autoregressive prior's 2000 steps and
# 3e-4 its samples scored a Frechet classifier distance of 87 (105 on another
# day), and 6000 steps gave 57; 8000 steps at 1e-3 with a cosine decay gave
# 33.9 and class KL 0.027 (docs/prior.md).
ORDER_DEFAULTS = {
    "autoregressive": {"num_steps": 2000, "learning_rate": 3e-4, "lr_schedule": "constant"},
    "masked": {"num_steps": 8000, "learning_rate": 1e-3, "lr_schedule": "cosine"},
}
#: Keys that fix the prior's parameters: a resume or evaluation must keep them.
MODEL_KEYS = ("order", "class_conditional", "num_classes", "num_layers", "width", "num_heads")
_EVAL_STREAM, _SAMPLE_STREAM, _METRIC_STREAM = 2_000_001, 2_000_002, 2_000_003
_BOUND_STREAM = 2_000_004
#: Draws c ~ q(c|x) per test image in the dVAE's two-stage bound.
BOUND_SAMPLES = 10


def get_config() -> ml_collections.ConfigDict:
  c = harness.base_config()
  c.dataset = ""  # "": the tokenizer's data set (anything else must name that same one)
  c.tokenizer = ""  # workdir of a finished train.vqvae or train.dvae run
  c.order = "autoregressive"  # "autoregressive" (DALL-E) | "masked" (MaskGIT)
  c.class_conditional = False
  c.num_classes = 10
  # Sized so that the default run (tokens, 2000 steps, 5000 scored samples)
  # takes under 10 minutes on a 2-core CPU. On the 4500 digits, width 64 at
  # batch 64 beat width 128 at equal time (4 layers x 128 ran at 1 step/s,
  # 2000 steps would take 33 minutes) and 2 layers x 64 at batch 128 at equal
  # steps (Frechet classifier distance 34.6 against 42.2).
  c.batch_size = 64
  c.num_layers = 4
  c.width = 64
  c.num_heads = 4
  # None: the run's own value when resuming, else ORDER_DEFAULTS[order]
  # (autoregressive: 2000 steps at 3e-4, constant; masked: 8000 at 1e-3, cosine).
  c.num_steps = config_dict.placeholder(int)
  c.learning_rate = config_dict.placeholder(float)
  c.lr_schedule = config_dict.placeholder(str)  # "constant" or "cosine" (to final_lr_fraction)
  c.final_lr_fraction = 0.02
  c.checkpoint_every = 1000
  c.log_every = 100
  c.temperature = 1.0
  c.top_k = 0  # 0: off
  c.top_p = 1.0  # 1: off
  # 16 steps with noisy confidence ranking: on the default masked prior class KL
  # 0.027 and FCD 33.9, against 0.107 and 46.9 with MaskGIT's 8 steps and 4.5.
  c.maskgit_steps = 16
  c.confidence_temperature = 20.0
  c.num_samples = 5000  # samples scored at the end (as train.gan's num_eval_samples)
  c.classifier_dir = ""  # "" = $DGMJAX_CACHE or ~/.cache/dgmjax (shared with train.gan)
  c.classifier_steps = 400  # training steps of the metric classifier (first use only)
  return c


def _saved_config(workdir: str) -> dict:
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def resolve_defaults(config, workdir: str | None) -> None:
  """Fills the training keys left at None: the run's own values, else the order's defaults.

  ``workdir`` None (or a new one): the defaults of ``config.order``.
  """
  harness.check_config(config, choices={"order": ORDERS})
  saved = _saved_config(workdir) if workdir else {}
  if saved and "lr_schedule" not in saved:
    saved["lr_schedule"] = "constant"  # runs from before the key had no schedule
  for key, default in ORDER_DEFAULTS[config.order].items():
    if config[key] is None:
      config[key] = saved.get(key, default) if saved.get("order") == config.order else default


def _check_model_keys(config, workdir: str) -> None:
  """A trained prior is resumed or evaluated only with the model it was trained as."""
  saved = _saved_config(workdir)
  if not saved:
    return
  for key in MODEL_KEYS:
    if key not in saved or saved[key] == config[key]:
      continue
    if key == "num_classes" and not (config.class_conditional and saved.get("class_conditional")):
      continue  # no class token: num_classes is not part of the model
    raise ConfigError(
        f"cannot resume or evaluate {workdir} with config.{key}={config[key]!r}: its "
        f"checkpoints were trained with {key}={saved[key]!r}. Use "
        f"--config.{key}={saved[key]!r}, or a new --workdir.")


def _check_dataset(config, tok: tokenizer.Tokenizer) -> None:
  if config.dataset not in ("", tok.config.dataset):
    raise ConfigError(
        f"config.dataset must be '' (the tokenizer's data) or the tokenizer's own "
        f"{tok.config.dataset!r} ({tokenizer.shape_text(tok.image_shape)} images), got "
        f"{config.dataset!r}: a prior models the codes of the images its tokenizer was "
        f"trained on, so train a tokenizer on {config.dataset} first.")


def load_tokens(config, workdir: str):
  """``harness.train_and_evaluate``'s ``load``: token splits, encoded once per tokenizer."""
  resolve_defaults(config, workdir)  # a no-op after train_and_evaluate's
  validate(config)  # bad sampling or model keys fail before a tokenizer is loaded
  tok = tokenizer.load_tokenizer(config.tokenizer)
  _check_dataset(config, tok)
  trained = bool(ckptlib.complete_steps(os.path.join(workdir, "checkpoints")))
  if trained:
    _check_model_keys(config, workdir)
  arrays = tokenizer.cached_tokens(tok, workdir, trained)
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
      config, choices={"order": ORDERS, "class_conditional": (True, False),
                       "lr_schedule": LR_SCHEDULES},
      ints={"num_layers": 1, "width": 1, "num_heads": 1, "num_samples": 2,
            "maskgit_steps": 1, "num_classes": 1, "classifier_steps": 1},
      ranges={"temperature": "(0, inf)", "top_p": "(0, 1]", "final_lr_fraction": "[0, 1]",
              "confidence_temperature": "[0, inf)"})
  need = harness.config_check(config)
  need(harness.is_int(config.top_k, 0), "top_k", "an int >= 1, or 0 for no top-k filtering")
  need(config.width % config.num_heads == 0, "width", f"divisible by num_heads={config.num_heads}")


def build_model(config, tok: tokenizer.Tokenizer) -> TokenTransformer:
  return TokenTransformer(
      vocab_size=tok.vocab_size, seq_len=tok.seq_len, num_layers=config.num_layers,
      width=config.width, num_heads=config.num_heads, causal=config.order == "autoregressive",
      num_classes=config.num_classes if config.class_conditional else 0)


def sample(config, model: TokenTransformer, params, key, labels=None, *,
           batch_size: int | None = None) -> jax.Array:
  """``batch_size`` token sequences from the prior (default ``len(labels)``, else 64)."""
  if batch_size is None:
    batch_size = 64 if labels is None else len(labels)
  filters = dict(temperature=float(config.temperature), top_k=config.top_k or None,
                 top_p=float(config.top_p) if config.top_p < 1 else None)
  if model.causal:
    return sampling.autoregressive_sample(key, model, params, batch_size=batch_size,
                                          labels=labels, **filters)
  return sampling.maskgit_sample(key, model, params, batch_size=batch_size,
                                 labels=labels, num_steps=config.maskgit_steps,
                                 confidence_temperature=float(config.confidence_temperature),
                                 **filters)


def class_grid_labels(config) -> tuple[np.ndarray, int]:
  """Labels of the class-conditional picture, row r all class r, and its columns."""
  per_row = max(1, config.num_images // config.num_classes)
  return np.repeat(np.arange(config.num_classes, dtype=np.int32), per_row), per_row


def make_task(config, info: harness.DataInfo) -> harness.Task:
  resolve_defaults(config, None)  # a no-op after train_and_evaluate's; callers may skip that
  validate(config)
  tok = tokenizer.load_tokenizer(config.tokenizer)
  model = build_model(config, tok)
  lr = config.learning_rate
  if config.lr_schedule == "cosine":
    lr = optax.cosine_decay_schedule(lr, config.num_steps, alpha=config.final_lr_fraction)
  tx = optax.adamw(lr, weight_decay=0.01)
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

  def raster_step(state, batch):
    """The masked model read as an autoregressive one in raster order: a likelihood."""
    fn = lambda x: model.apply(state.params, x, labels_of(batch))
    return {"raster_nats": token_losses.ordered_nll(fn, batch["tokens"], mask_id=model.mask_id)}

  def images(state, batch):
    """The same prior draws at every picture step; class-conditional: one row per class."""
    key = jax.random.fold_in(jax.random.key(config.seed), _SAMPLE_STREAM)
    if not config.class_conditional:
      seqs = sample(config, model, state.params, key, batch_size=config.num_images)
      return {"samples": np.asarray(tok.decode(seqs))}
    labels, per_row = class_grid_labels(config)
    seqs = sample(config, model, state.params, key, jnp.asarray(labels))
    return {"samples": imglib.make_grid(np.asarray(tok.decode(seqs)), ncol=per_row)}

  def draw(state) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """``num_samples`` decoded samples (in batches of one fixed shape) and their speed."""
    n = config.num_samples
    b = min(config.eval_batch_size, n)
    chunks = -(-n // b)
    labels = (np.arange(chunks * b, dtype=np.int32) % config.num_classes
              if config.class_conditional else None)
    key = jax.random.fold_in(jax.random.key(config.seed), _METRIC_STREAM)

    def chunk(i):
      lab = None if labels is None else jnp.asarray(labels[i * b:(i + 1) * b])
      seqs = sample(config, model, state.params, jax.random.fold_in(key, i), lab, batch_size=b)
      return np.asarray(jax.block_until_ready(tok.decode(seqs)))

    t0 = time.perf_counter()
    out = [chunk(0)]  # compiles the sampler and the decoder
    first_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    out += [chunk(i) for i in range(1, chunks)]
    timed = (chunks - 1) * b
    if chunks == 1:  # nothing ran after compilation: time the same batch again
      chunk(0)
      timed = b
    elapsed = max(time.perf_counter() - t1, 1e-9)
    speed = {"sample/images_per_sec": timed / elapsed, "sample/first_batch_s": first_s}
    return np.concatenate(out)[:n], None if labels is None else labels[:n], speed

  def two_stage_bound(params) -> dict:
    """dVAE + autoregressive prior: -ELBO of the test images with p_psi(c) as the prior.

    ``-log p(x) <= E_q[-log p(x|c) + log q(c|x) - log p_psi(c)]`` (the ELBO of
    the lecture with the learned token prior in place of the uniform one),
    estimated with :data:`BOUND_SAMPLES` draws ``c ~ q(c|x)`` per image; the
    same draws with the dVAE's own prior (uniform by default) give its bound.
    """
    x = tok.images("test")
    log_prior = jax.jit(lambda t: -token_losses.token_cross_entropy(
        model.apply(params, t), t, reduction="sum"))
    learned, own = likelihood.two_stage_neg_elbo(
        tok.posterior_sample, log_prior, x, num_samples=BOUND_SAMPLES,
        batch_size=min(config.eval_batch_size, len(x)),
        key=jax.random.fold_in(jax.random.key(config.seed), _BOUND_STREAM))
    nats = float(learned.mean())
    return {"test/two_stage_neg_elbo": nats,
            "test/two_stage_bits_per_dim": nats / (math.prod(tok.image_shape) * math.log(2)),
            "test/tokenizer_prior_neg_elbo": float(own.mean()),
            "two_stage_samples": BOUND_SAMPLES}

  def report(state, ctx: harness.Context):
    nats = float(ctx.results["nll"]["test"]["nats_per_token"])
    # Masked order: the cross-entropy of masked tokens at a random ratio, not a likelihood.
    name = "test/bits_per_token" if model.causal else "test/masked_bits_per_token"
    out = {name: nats / math.log(2)}
    if not model.causal:
      raster = float(ctx.results["raster"]["test"]["raster_nats"])
      out["test/raster_bits_per_token"] = raster / (tok.seq_len * math.log(2))
    out.update({"num_params": count_params(state.params),
                "vocab_size": tok.vocab_size, "seq_len": tok.seq_len,
                "uniform_bits_per_token": math.log2(tok.vocab_size)})
    if tok.posterior_sample is None:
      # What the decoded samples can be at best: the tokenizer's reconstructions.
      out["tokenizer/test_mse"] = tok.test_mse()
    elif model.causal and not config.class_conditional:
      out.update(two_stage_bound(state.params))
    fake, labels, speed = draw(state)
    # Exactly train.gan's figures: its classifier (trained once per data set and
    # cached) and its metric function, so the numbers compare.
    dataset = tok.metric_dataset()
    classifier = sample_eval.digit_classifier(dataset, cache_dir=config.classifier_dir or None,
                                              steps=config.classifier_steps)
    out.update(sample_eval.classifier_sample_metrics(fake, dataset, classifier))
    if labels is not None:
      probs, _ = classifier.predict(fake)
      out["label_accuracy"] = float(np.mean(probs.argmax(-1) == labels))
    out.update(speed)
    out["sampling"] = {"order": config.order, "num_samples": config.num_samples,
                       "temperature": float(config.temperature), "top_k": config.top_k,
                       "top_p": float(config.top_p),
                       **({"maskgit_steps": config.maskgit_steps,
                           "confidence_temperature": float(config.confidence_temperature)}
                          if not model.causal else {})}
    return out

  evals = {"nll": harness.Eval(eval_step, during_training=True)}
  if not model.causal:
    evals["raster"] = harness.Eval(raster_step)
  return harness.Task(init=init, train_step=train_step, images=images, report=report,
                      evals=evals)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Programmatic entry point: train or resume the prior, return the summary."""
  return harness.train_and_evaluate(config, workdir, make_task, prepare=resolve_defaults,
                                    load=functools.partial(load_tokens, workdir=workdir))


def main() -> None:
  """``python -m train.prior --config.tokenizer=<vqvae or dvae workdir> --workdir=DIR``."""
  from absl import flags

  # run_cli hands load the config only; the cache lives in the parsed --workdir.
  harness.run_cli("prior", get_config, make_task, prepare=resolve_defaults,
                  load=lambda config: load_tokens(config, flags.FLAGS.workdir))


if __name__ == "__main__":
  main()
