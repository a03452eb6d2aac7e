"""Every generator of the project on one evaluation: likelihood is not sample quality.

Lecture 7, "Likelihood based models" and the summary slide: "Likelihood is not
a perfect criterion to measure quality of a generative model". This bench puts
every family side by side on the offline digits:

* trained models: the VAE with an N(0, I) prior and with a RealNVP flow prior
  (``train.vae``), Jang's categorical VAE and the DALL-E-style conv dVAE
  (``train.dvae``), the DCGAN (``train.gan``), AVB on the digits (``train.avb``),
  and, when their workdirs exist or with ``--with-priors``, the token priors of
  ``train.prior`` (VQ-VAE + autoregressive prior, VQ-VAE + MaskGIT prior,
  dVAE + autoregressive prior);
* the lecture's two counter-examples, built here from the data:
  p1, a Gaussian kernel density on the training digits at two values of ε
  (:mod:`dgmjax.models.kernel_density`), and p2 = 0.01·VAE + 0.99·noise
  (:mod:`dgmjax.models.noise_mixture`).

One table over the same test split (the 500 test digits), the same classifier
features (:func:`dgmjax.eval.samples.digit_classifier`, 64 penultimate-layer
features of the project's digit CNN: a *Fréchet classifier distance*, not FID)
and the same number of samples ``--num-samples`` (5000) from every model:

* test log p(x) in nats, with its estimator (IWAE-k, importance sampling,
  exact, AIS) and what it is a probability of: ``binary`` = the Bernoulli pmf
  of the fixed binarization of the test digits that every binary trainer
  evaluates on; ``grey`` = a density on [0, 1]^784 at the grey test digits.
  The two are **not comparable** (a pmf is ≤ 1, a density is not); compare
  within a kind. "—" where the model has none (the GAN without ``--ais``,
  the token priors, whose exact figure is over codes: bits/token in the notes);
* Fréchet classifier distance, improved precision/recall (k = 3), density and
  coverage (k = 5), classes covered and the class-histogram KL to uniform, all
  from :func:`dgmjax.metrics.evaluate_samples` against the test digits;
* sampling speed in images/s (jitted, compilation excluded).

It draws one picture, a labelled row of samples per model
(``generators_samples.png``), and writes the table (``generators.md``) and
every number (``generators.json``) to ``--out``.

With ``--ais`` the decoder-based models with a continuous latent also get an
annealed-importance-sampling estimate (:mod:`dgmjax.eval.ais`, Wu et al.
2017) on ``--ais-examples`` evenly spaced test digits: the two VAEs and AVB
with their Bernoulli decoders (``binary``), the GAN with a Gaussian observation
model p(x|z) = N(x; G(z), σ²I) on [0, 1] pixels (``grey``, σ chosen from
``--gan-sigmas`` by AIS on other test digits, as Wu et al. choose it on held-out
data). AVB's implicit encoder has no density, so AIS is the estimate that does
not depend on a proposal fitted to it. ``--ais`` also evaluates AVB's
same-decoder Gaussian baseline (``train.avb --config.encoder=gaussian
--config.kl=analytic``, the comparison of ``docs/avb.md``) and prints whether
"AVB is worse than the Gaussian VAE on digits" still holds under AIS (paired
by test digit), and AIS − IWAE-k of the VAEs on the same digits (≥ 0 up to
noise if both are right).

Models are loaded from ``--workdir family=path`` (repeatable), or trained
with their default digits settings into ``--cache`` (a finished run there is
reused; a run with other settings is refused, not overwritten). Training
everything takes hours on a CPU; ``--smoke`` checks the plumbing with tiny
runs and few samples, and its numbers are not results.

Run::

  python bench/generators.py                                # train what is missing, evaluate
  python bench/generators.py --workdir vae_flow=workdir/vae --workdir gan=workdir/gan_digits
  python bench/generators.py --ais --ais-chains 16 --ais-steps 500 --ais-examples 100
  python bench/generators.py --with-priors
  python bench/generators.py --smoke                        # plumbing only (minutes)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.data import load_image_dataset, pixels
from dgmjax.eval import ais as ais_lib
from dgmjax.eval import runs, surgery_report
from dgmjax.eval import samples as sample_eval
from dgmjax.losses import elbo
from dgmjax.metrics import evaluate_samples
from dgmjax.models import kernel_density, noise_mixture

# The fixed binarization of each split that every trainer evaluates on
# (train/harness.py: EVAL_BINARIZATION_SEEDS; tests/test_bench_generators.py
# checks that the two agree).
EVAL_BINARIZATION_SEED = {"train": 101, "test": 102}
IMAGE_SHAPE = (28, 28, 1)


# ----------------------------------------------------------------------------
# The families and how each is trained
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Family:
  """One trained family: its trainer, default digits settings and smoke settings."""

  name: str
  label: str
  trainer: str  # module under train/
  overrides: dict
  smoke: dict
  tokenizer: str = ""  # prior families: the family whose run is the tokenizer
  group: str = ""  # "" (always), "priors" (--with-priors), "ais" (--ais), "tokenizer"


# docs/avb.md's digits settings (its eval_batch_size 500 is left at the trainer's 256, a
# multiple of any device count).
_AVB_DIGITS = dict(dataset="digits", latent_dim=32, noise_dim=32, hidden=(512, 256),
                   disc_hidden=(512, 256), batch_size=128, num_steps=3000)
_AVB_SMOKE = dict(latent_dim=4, noise_dim=4, hidden=(32,), disc_hidden=(32,), num_steps=20,
                  ll_samples=8, ll_chunk=8, ll_moment_samples=16, eval_batch_size=96,
                  batch_size=48)
_PRIOR_SMOKE = dict(num_layers=1, width=16, num_heads=2, num_steps=10, batch_size=32,
                    eval_batch_size=64, num_samples=8, log_every=5, checkpoint_every=10,
                    classifier_steps=20)

FAMILIES = [
    Family("vae_gaussian", "VAE, N(0, I) prior", "vae", dict(prior="gaussian"),
           dict(hidden=(32,), latent_dim=4, num_steps=20, iwae_k=8, iwae_k_train=0,
                iwae_chunk=8, log_every=10, batch_size=48, eval_batch_size=96)),
    Family("vae_flow", "VAE, flow prior", "vae", dict(prior="flow"),
           dict(hidden=(32,), latent_dim=4, flow_layers=2, flow_hidden=(16,), num_steps=20,
                iwae_k=8, iwae_k_train=0, iwae_chunk=8, log_every=10, batch_size=48,
                eval_batch_size=96)),
    Family("categorical_vae", "categorical VAE 20×10", "dvae", dict(),
           dict(hidden=(32,), num_steps=20, iwae_samples=8, iwae_chunk=8, eval_every=0,
                log_every=10, batch_size=48, eval_batch_size=96)),
    Family("dvae_conv", "conv dVAE (7×7 × 64 codes)", "dvae",
           # docs/dvae.md's digits settings for the conv model.
           dict(model="dvae", channels=(16, 32), res_hidden=16, batch_size=64, num_steps=2000,
                eval_every=500, temperature="exponential", temperature_final=0.0625,
                anneal_steps=2000, kl_warmup_steps=500, iwae_samples=100, iwae_chunk=10),
           dict(channels=(8, 8), res_hidden=8, num_codes=16, code_dim=8, num_steps=10,
                anneal_steps=10, kl_warmup_steps=5, eval_every=0, iwae_samples=4, iwae_chunk=4,
                log_every=5, batch_size=48, eval_batch_size=96)),
    Family("gan", "GAN (DCGAN)", "gan",
           # docs/gan.md's digits command.
           dict(dataset="digits", num_steps=6000, batch_size=64, base_channels=32,
                learning_rate=5e-4),
           dict(base_channels=4, latent_dim=8, num_steps=10, num_eval_samples=100,
                classifier_steps=20, batch_size=32, eval_batch_size=64, log_every=5,
                num_images=16)),
    Family("avb", "AVB (implicit encoder)", "avb", dict(_AVB_DIGITS), dict(_AVB_SMOKE)),
    Family("avb_gaussian", "AVB's Gaussian baseline (same decoder)", "avb",
           dict(_AVB_DIGITS, encoder="gaussian", kl="analytic", adam_b1=0.9), dict(_AVB_SMOKE),
           group="ais"),
    Family("vqvae", "VQ-VAE tokenizer", "vqvae", dict(),
           dict(num_steps=10, num_codes=16, code_dim=4, channels=(8, 8), res_hidden=8,
                num_res_blocks=1, batch_size=32, eval_batch_size=64, log_every=5,
                checkpoint_every=10), group="tokenizer"),
    Family("vqvae_ar", "VQ-VAE + autoregressive prior", "prior", dict(order="autoregressive"),
           dict(_PRIOR_SMOKE), tokenizer="vqvae", group="priors"),
    Family("vqvae_masked", "VQ-VAE + MaskGIT prior", "prior", dict(order="masked"),
           dict(_PRIOR_SMOKE, maskgit_steps=2), tokenizer="vqvae", group="priors"),
    Family("dvae_ar", "conv dVAE + autoregressive prior", "prior", dict(order="autoregressive"),
           dict(_PRIOR_SMOKE), tokenizer="dvae_conv", group="priors"),
]
BY_NAME = {f.name: f for f in FAMILIES}
TABLE_ORDER = ["p1_small", "p1_large", "vae_gaussian", "vae_flow", "p2", "categorical_vae",
               "dvae_conv", "avb", "avb_gaussian", "gan", "vqvae_ar", "vqvae_masked", "dvae_ar"]
SMOKE_DATA_LIMIT = 300
# Keys that may differ between a cached run and the one asked for.
_IGNORED_KEYS = {"quiet", "eval_only", "classifier_dir", "data_dir"}


def _trainer(name: str):
  import importlib

  return importlib.import_module(f"train.{name}")


def family_config(family: Family, *, smoke: bool, tokenizer_dir: str = "",
                  classifier_dir: str = ""):
  """The trainer config of a family: its defaults, the digits settings, smoke settings."""
  c = _trainer(family.trainer).get_config()
  over = dict(family.overrides, quiet=True)
  if smoke:
    over.update(family.smoke, data_limit=SMOKE_DATA_LIMIT)
  if family.trainer == "prior":
    over["tokenizer"] = tokenizer_dir
  if classifier_dir and "classifier_dir" in c:  # the GAN and the priors score samples too
    over["classifier_dir"] = classifier_dir
  c.update(over)
  resolve = getattr(_trainer(family.trainer), "resolve_defaults", None)
  if resolve is not None:  # defaults that depend on other keys (train.prior: the order)
    resolve(c, None)
  return c


def _same_settings(wanted, saved: dict) -> list[str]:
  diffs = []
  for key, value in wanted.items():
    if key in _IGNORED_KEYS or key not in saved:
      continue
    have = saved[key]
    norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    if norm(have) != norm(value):
      diffs.append(f"{key}={have!r} (wanted {value!r})")
  return diffs


def ensure_trained(family: Family, workdir: str, config, log: Callable[[str], None]) -> None:
  """Train (or resume) ``family`` in ``workdir`` unless a finished run with these settings is there."""
  summary = runs.read_summary(workdir)
  if os.path.exists(os.path.join(workdir, "config.json")):
    diffs = _same_settings(config.to_dict(), runs.read_config(workdir))
    if diffs:
      raise SystemExit(f"error: {workdir} holds a {family.name} run with other settings: "
                       f"{', '.join(diffs[:4])}. Delete it or use another --cache.")
  if summary is not None and summary.get("step", -1) >= config.num_steps:
    log(f"# {family.name}: reusing the finished run in {workdir}")
    return
  log(f"# {family.name}: training {config.num_steps} steps into {workdir}")
  t0 = time.time()
  _trainer(family.trainer).train_and_evaluate(config, workdir)
  log(f"# {family.name}: trained in {time.time() - t0:.0f} s")


# ----------------------------------------------------------------------------
# Generators: what the evaluation needs of a model
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class AISModel:
  """A decoder-based model for :func:`dgmjax.eval.ais.ais_log_prob` and its test data.

  ``log_likelihood`` is None for a GAN until its Gaussian observation model
  (around ``observation_mean(z)``) gets a σ (:func:`choose_gan_sigma`).
  """

  log_prior: Callable[[jax.Array], jax.Array]
  log_likelihood: Callable[[jax.Array, jax.Array], jax.Array] | None
  sample_prior: Callable[[jax.Array, int], jax.Array]
  kind: str  # "binary" or "grey": which test images it scores
  note: str = ""
  observation_mean: Callable[[jax.Array], jax.Array] | None = None


@dataclasses.dataclass
class Generator:
  """One row of the table."""

  name: str
  label: str
  sample: Callable[[jax.Array, int], jax.Array]  # pure JAX: (key, n) -> (n, 28, 28, 1) in ~[0, 1]
  log_lik: float | None = None  # mean over the test split, nats
  estimator: str = "—"
  kind: str = ""  # "binary" | "grey" | ""
  ais: AISModel | None = None
  # test images of its kind (binary or grey) -> (N,) nats
  per_example_log_lik: Callable[[np.ndarray], np.ndarray] | None = None
  notes: list[str] = dataclasses.field(default_factory=list)
  source: str = ""


# The models of each trainer's config, built from dgmjax as the trainers build
# them (tests/test_bench_generators.py compares them with the trainers' own).
def vae_model(c: dict):
  """``train.vae``'s :class:`~dgmjax.models.vae.VAE` of a run config."""
  from dgmjax.models.vae import make_vae

  return make_vae(arch=c["arch"], image_shape=IMAGE_SHAPE, latent_dim=c["latent_dim"],
                  prior=c["prior"], likelihood=c["likelihood"], pixel_format=c["pixel_format"],
                  hidden=tuple(c["hidden"]), channels=tuple(c["channels"]),
                  num_res_blocks=c["num_res_blocks"], res_hidden=c["res_hidden"],
                  flow_layers=c["flow_layers"], flow_hidden=tuple(c["flow_hidden"]))


def dvae_model(c: dict):
  """``train.dvae``'s :class:`~dgmjax.models.dvae.DiscreteVAE` of a run config."""
  from dgmjax.models.dvae import make_discrete_vae

  return make_discrete_vae(
      model=c["model"], image_shape=IMAGE_SHAPE, likelihood=c["likelihood"],
      learned_prior=c["prior"] == "learned", num_vars=c["num_vars"],
      num_classes=c["num_classes"], hidden=tuple(c["hidden"]), num_codes=c["num_codes"],
      code_dim=c["code_dim"], channels=tuple(c["channels"]),
      num_res_blocks=c["num_res_blocks"], res_hidden=c["res_hidden"], pixel_eps=c["pixel_eps"],
      min_log_scale=c["min_log_scale"])


def avb_model(c: dict):
  """``train.avb``'s :class:`~dgmjax.models.avb.AVB` of a run config."""
  from dgmjax.models.avb import make_avb

  return make_avb(image_shape=IMAGE_SHAPE, encoder=c["encoder"], kl=c["kl"],
                  latent_dim=c["latent_dim"], noise_dim=c["noise_dim"],
                  noise_every_layer=c["noise_every_layer"], hidden=tuple(c["hidden"]),
                  disc_hidden=tuple(c["disc_hidden"]), disc_x_hidden=tuple(c["disc_x_hidden"]),
                  disc_activation=c["disc_activation"], disc_prior_term=c["disc_prior_term"],
                  adaptive_contrast=c["adaptive_contrast"], ac_samples=c["ac_samples"])


def gan_generator(c: dict):
  """``train.gan``'s DCGAN generator of a digits run config."""
  from dgmjax.nn import gan as gan_nn

  return gan_nn.DCGANGenerator(IMAGE_SHAPE, c["base_channels"])


def vqvae_model(c: dict):
  """``train.vqvae``'s :class:`~dgmjax.nn.vqvae.VQVAE` of a run config."""
  from dgmjax.nn.vqvae import VQVAE

  return VQVAE(
      num_codes=c["num_codes"], code_dim=c["code_dim"], out_channels=IMAGE_SHAPE[-1],
      channels=tuple(c["channels"]), num_res_blocks=c["num_res_blocks"],
      res_hidden=c["res_hidden"], beta=c["beta"], use_ema=c["codebook"] == "ema",
      decay=c["ema_decay"], dead_code_threshold=c["dead_code_threshold"], cosine=c["cosine"],
      quantizer=c["quantizer"], levels=tuple(c["levels"]), num_stages=c["num_stages"],
      quantizer_dropout=c["quantizer_dropout"], lookup_dim=c["lookup_dim"],
      entropy_weight=c["entropy_weight"], entropy_gamma=c["entropy_gamma"],
      entropy_temperature=c["entropy_temperature"])


def load_vae(run: runs.Run, name: str, label: str, iwae_key: jax.Array) -> Generator:
  c = run.config
  model = vae_model(c)
  params = run.state["params"]
  k = int(run.summary.get("surgery/test/iwae_k", c["iwae_k"]))

  def draw(key, n):
    return model.mean_image(params, model.sample_latents(params, key, n))

  def log_lik_per_example(x_binary):
    fn = jax.jit(lambda x, idx: surgery_report.iwae(model, params, x, iwae_key, num_samples=k,
                                                    chunk_size=min(100, k), index=idx))
    out = [np.asarray(fn(jnp.asarray(x_binary[i:i + 50]), jnp.arange(i, min(i + 50,
                                                                             len(x_binary)))))
           for i in range(0, len(x_binary), 50)]
    return np.concatenate(out)

  return Generator(
      name, label, draw, float(run.summary["surgery/test/iwae"]), f"IWAE-{k}",
      "binary", AISModel(lambda z: model.log_prior(params, z),
                         lambda z, x: model.log_likelihood(params, z, x),
                         lambda key, n: model.sample_latents(params, key, n), "binary"),
      log_lik_per_example, ["samples: decoder means of z ~ p(z)"])


def load_dvae(run: runs.Run, name: str, label: str) -> Generator:
  from dgmjax.nn import dvae as dvae_nn

  model = dvae_model(run.config)
  params = run.state["params"]

  def draw(key, n):
    prior = jnp.broadcast_to(model.prior_logits(params), (n, *model.latent_shape))
    return model.mean_image(params, dvae_nn.hard_codes(key, prior))

  k = int(run.summary.get("iwae_samples", run.config["iwae_samples"]))
  return Generator(name, label, draw, -float(run.summary["test/neg_iwae"]),
                   f"IWAE-{k} (hard codes)", "binary",
                   notes=["samples: decoder means of codes drawn from the factorised prior"])


def load_avb(run: runs.Run, name: str, label: str) -> Generator:
  c = run.config
  model = avb_model(c)
  params = run.state["model"]["params"]
  d = c["latent_dim"]

  def draw(key, n):
    z = jax.random.normal(key, (n, d))
    return jax.nn.sigmoid(model.decoder.apply(params["decoder"], z))

  log_prior, sample_prior = ais_lib.standard_normal_prior(d)
  k = int(run.summary.get("ll_samples", c["ll_samples"]))
  return Generator(
      name, label, draw, float(run.summary["test/log_px"]),
      f"IS-{k}, Gaussian fit to q", "binary",
      AISModel(log_prior, lambda z, x: model.log_likelihood(params, z, x), sample_prior,
               "binary"), notes=["samples: decoder means of z ~ N(0, I)"])


def load_gan(run: runs.Run, name: str, label: str) -> Generator:
  c = run.config
  g = gan_generator(c)
  params = run.state["gen"]["params"]
  d = c["latent_dim"] or 64

  def to_unit(z):
    return (g.apply(params, z) + 1.0) / 2.0  # tanh output in (−1, 1) -> (0, 1)

  def draw(key, n):
    return to_unit(jax.random.normal(key, (n, d)))

  log_prior, sample_prior = ais_lib.standard_normal_prior(d)
  return Generator(name, label, draw, notes=["samples: G(z), z ~ N(0, I)"],
                   ais=AISModel(log_prior, None, sample_prior, "grey", observation_mean=to_unit))


def gaussian_observation(mean_fn: Callable[[jax.Array], jax.Array], sigma: float):
  """``log N(x; mean_fn(z), σ² I)`` summed over pixels: Wu et al.'s GAN likelihood."""
  log_var = jnp.asarray(2.0 * math.log(sigma), jnp.float32)

  def log_likelihood(z, x):
    return elbo.gaussian_log_likelihood(x, mean_fn(z), log_var, event_ndims=3)

  return log_likelihood


class _Tokenizer:
  """A VQ-VAE or dVAE run as (decode: tokens -> images in [0, 1], grid, vocab)."""

  def __init__(self, run: runs.Run):
    c = run.config
    if "codebook" in c:  # a train.vqvae run
      model = vqvae_model(c)
      var = {"params": run.state["params"]}
      if run.state.get("extra") is not None:  # the EMA codebook state, back in its types
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)))
        var["vq_ema"] = runs.conform(run.state["extra"], shapes["vq_ema"])
      self.vocab = c["num_codes"]  # what train.prior sizes the transformer with
      encode = lambda x: model.apply(var, x, method="encode")  # noqa: E731
      unit = (lambda x: (x + 1) / 2) if c["pixel_format"] == "symmetric" else (lambda x: x)
      self.decode_grid = lambda t: unit(model.apply(var, t, method="decode_indices"))
      self.kind = "VQ-VAE"
    else:
      model = dvae_model(c)
      params = run.state["params"]
      self.vocab = model.num_classes
      encode = lambda x: jnp.argmax(model.logits(params, x), axis=-1)  # noqa: E731
      self.decode_grid = lambda t: model.mean_image(params, jax.nn.one_hot(t, self.vocab))
      self.kind = "dVAE"
    self.grid = jax.eval_shape(encode, jnp.zeros((1, *IMAGE_SHAPE))).shape[1:]
    self.seq_len = math.prod(self.grid)

  def decode(self, tokens):
    return jnp.clip(self.decode_grid(tokens.reshape(tokens.shape[0], *self.grid)), 0.0, 1.0)


def load_prior(run: runs.Run, name: str, label: str) -> Generator:
  from dgmjax import sampling
  from dgmjax.nn.transformer import TokenTransformer

  c = run.config
  tok = _Tokenizer(runs.load_run(c["tokenizer"]))
  model = TokenTransformer(vocab_size=tok.vocab, seq_len=tok.seq_len,
                           num_layers=c["num_layers"], width=c["width"],
                           num_heads=c["num_heads"], causal=c["order"] == "autoregressive",
                           num_classes=c["num_classes"] if c["class_conditional"] else 0)
  params = run.state["params"]
  filters = dict(temperature=float(c["temperature"]), top_k=c["top_k"] or None,
                 top_p=float(c["top_p"]) if c["top_p"] < 1 else None)

  def draw(key, n):
    labels = (jnp.arange(n) % c["num_classes"]) if c["class_conditional"] else None
    if model.causal:
      t = sampling.autoregressive_sample(key, model, params, batch_size=n, labels=labels,
                                         **filters)
    else:
      t = sampling.maskgit_sample(key, model, params, batch_size=n, labels=labels,
                                  num_steps=c["maskgit_steps"],
                                  confidence_temperature=float(c["confidence_temperature"]),
                                  **filters)
    return tok.decode(t)

  s = run.summary
  if model.causal:
    note = f"tokens: {s['test/bits_per_token']:.3f} bits/token, exact (uniform code: " \
           f"{math.log2(tok.vocab):.2f}); no pixel likelihood (the {tok.kind} decoder)"
  else:
    note = f"tokens: masked cross-entropy {s['test/masked_bits_per_token']:.3f} bits/token " \
           "(not a likelihood)"
    if "test/raster_bits_per_token" in s:  # runs from before 2026-12-07 lack it
      note += f"; {s['test/raster_bits_per_token']:.3f} bits/token read in raster order, exact"
  return Generator(name, label, draw, notes=[note,
                                                        f"{tok.kind} tokenizer: {c['tokenizer']}"])


LOADERS = {"vae": load_vae, "dvae": load_dvae, "avb": load_avb, "gan": load_gan,
           "prior": load_prior}


# ----------------------------------------------------------------------------
# The lecture's two counter-examples
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BernoulliNoise:
  """Independent fair coins on every pixel: ``log p = −D log 2`` on {0, 1}^D."""

  event_shape: tuple[int, ...]

  def log_prob(self, x: jax.Array) -> jax.Array:
    d = math.prod(self.event_shape)
    binary = jnp.all((x == 0) | (x == 1), axis=tuple(range(1, x.ndim)))
    return jnp.where(binary, -d * math.log(2.0), -jnp.inf)

  def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
    shape = (num_samples, *self.event_shape)
    return jax.random.bernoulli(key, 0.5, shape).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class _Sampler:
  """A generator as the mixture's model component (only its ``sample`` is used)."""

  sample: Callable[[jax.Array, int], jax.Array]

  def log_prob(self, x):
    raise NotImplementedError("p2's log-likelihood is mixed from the base's per-example bound")


def p1_generator(train_unit: np.ndarray, test_unit: np.ndarray, eps: float, name: str) -> Generator:
  kde = kernel_density.KernelDensity(jnp.asarray(train_unit), eps=eps)

  def per_example(x: np.ndarray) -> np.ndarray:
    return np.asarray(kde.log_prob(jnp.asarray(x)))

  return Generator(
      name, f"p1: kernel density, ε = {eps:g}", kde.sample,
      float(np.mean(per_example(test_unit))), "exact", "grey",
      per_example_log_lik=per_example,
      notes=[f"samples: a training digit + N(0, {eps:g}·I) noise (std {math.sqrt(eps):.3g}); "
             "not clipped for the metrics"])


def p2_generator(base: Generator, base_per_example: np.ndarray) -> Generator:
  """p2 = 0.01 · base + 0.99 · Bernoulli(1/2) noise; exact mixture of the base's bound."""
  noise = BernoulliNoise(IMAGE_SHAPE)
  mix = noise_mixture.NoiseMixture(_Sampler(base.sample), noise)
  lp = np.asarray(noise_mixture.mixture_log_prob(
      jnp.asarray(base_per_example, jnp.float32),
      jnp.full(base_per_example.shape, -math.prod(IMAGE_SHAPE) * math.log(2.0), jnp.float32)))
  # The base's figure is a lower bound and the mixture is increasing in it, so
  # this is a lower bound on log p2 too.
  return Generator(
      "p2", f"p2: 0.01·{base.label.replace('VAE, ', 'VAE (')}) + 0.99·noise", mix.sample,
      float(lp.mean()), f"{base.estimator} of the VAE, mixed exactly", "binary",
      notes=[f"log p2 − log p_VAE ≥ −log 100 = −4.61 on every test digit (min here "
             f"{float(np.min(lp - base_per_example)):.3f})",
             "samples: 99 % fair-coin pixels, 1 % the VAE's"])


# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------
def generate(gen: Generator, key: jax.Array, n: int, batch: int) -> tuple[np.ndarray, float]:
  """``n`` samples in batches of one compiled shape, and images/s after a warm-up batch."""
  b = min(batch, n)
  draw = jax.jit(gen.sample, static_argnums=1)
  jax.block_until_ready(draw(jax.random.fold_in(key, 10**6), b))  # compile
  t0 = time.perf_counter()
  out = [np.asarray(draw(jax.random.fold_in(key, i), b)) for i in range(-(-n // b))]
  elapsed = time.perf_counter() - t0
  x = np.concatenate(out)[:n].astype(np.float32)
  return x, n / elapsed


def ais_estimate(model: AISModel, x: np.ndarray, key: jax.Array, *, steps: int, chains: int,
                 batch: int) -> dict:
  """AIS log p̂(x) per example (batched over examples, one compiled shape)."""
  b = min(batch, len(x))
  out, acc = [], []
  for i in range(0, len(x), b):
    chunk = x[i:i + b]
    pad = b - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    res = ais_lib.ais_log_prob(
        jax.random.fold_in(key, i), jnp.asarray(chunk), log_prior=model.log_prior,
        log_likelihood=model.log_likelihood, sample_prior=model.sample_prior,
        num_steps=steps, num_chains=chains)
    out.append(np.asarray(res.log_prob)[:b - pad])
    acc.append(np.asarray(res.acceptance_rate)[:b - pad])
  lp = np.concatenate(out)
  return {"per_example": lp, "mean": float(lp.mean()),
          "sem": float(lp.std(ddof=1) / math.sqrt(len(lp))) if len(lp) > 1 else float("nan"),
          "acceptance": float(np.concatenate(acc).mean())}


def choose_gan_sigma(gen: Generator, x_val: np.ndarray, key: jax.Array, args,
                     log: Callable[[str], None]) -> float:
  """σ of N(x; G(z), σ²I) with the best AIS log-likelihood on held-out digits."""
  if args.gan_sigma:
    return args.gan_sigma
  scores = {}
  for s in args.gan_sigmas:
    model = dataclasses.replace(
        gen.ais, log_likelihood=gaussian_observation(gen.ais.observation_mean, s))
    scores[s] = ais_estimate(model, x_val, key, steps=args.gan_sigma_steps,
                             chains=args.gan_sigma_chains, batch=len(x_val))["mean"]
  best = max(scores, key=scores.get)
  if best in (min(scores), max(scores)) and len(scores) > 1:
    log(f"# gan: warning: σ = {best:g} is at the edge of --gan-sigmas; widen the grid.")
  log(f"# gan: σ by AIS ({args.gan_sigma_steps} steps, {args.gan_sigma_chains} chains) on "
      f"{len(x_val)} held-out test digits: "
      + ", ".join(f"σ={s:g}: {v:.1f}" for s, v in scores.items()) + f" -> σ = {best:g}")
  return best


def _fmt(v, digits=2) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return "—"
  if isinstance(v, int):
    return str(v)
  if abs(v) >= 1e4:
    return f"{v:,.0f}"
  return f"{v:.{digits}f}"


def table(results: list[dict], with_ais: bool, ais_n: int) -> str:
  head = ["model", "test log p(x) (nats)", "estimator", "of", "Fréchet cls. dist.", "precision",
          "recall", "density", "coverage", "classes", "class KL", "images/s"]
  if with_ais:
    head.insert(4, f"AIS log p(x), {ais_n} test digits")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in results:
    m = r["metrics"]
    row = [r["label"], _fmt(r["log_lik"]), r["estimator"], r["kind"] or "—",
           _fmt(m["frechet_distance"], 1), _fmt(m["precision"], 3), _fmt(m["recall"], 3),
           _fmt(m["density"], 3), _fmt(m["coverage"], 3), str(m["classes_covered"]),
           _fmt(m["class_kl"], 3), f"{r['images_per_s']:,.0f}"]
    if with_ais:
      a = r.get("ais")
      n = len(a.get("indices", ())) if a else 0
      where = f", {n} digits" if a and n and n != ais_n else ""
      row.insert(4, f"{a['mean']:.2f} ± {a['sem']:.2f} ({a['kind']}{where})" if a else "—")
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def sample_rows(rows: list[tuple[str, np.ndarray]], per_row: int) -> np.ndarray:
  """One labelled row of samples per model, as a uint8 picture."""
  from matplotlib.figure import Figure

  from dgmjax.plots import figure_to_array

  fig = Figure(figsize=(2.6 + 0.55 * per_row, 0.62 * len(rows) + 0.2), dpi=110)
  for i, (label, x) in enumerate(rows):
    strip = np.concatenate([np.pad(np.clip(im[..., 0], 0, 1), 1, constant_values=1.0)
                            for im in x[:per_row]], axis=1)
    ax = fig.add_axes((0.36, 1 - (i + 1) / len(rows) + 0.05 / len(rows), 0.63,
                       0.9 / len(rows)))
    ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7.5)
  return figure_to_array(fig)


def _commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True, cwd=os.path.dirname(__file__)).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _read_ais(path: str, settings: dict) -> dict | None:
  """A stored AIS result with exactly these settings, else None (recomputed)."""
  try:
    with open(path) as f:
      stored = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(stored, dict) or stored.get("settings") != settings:
    return None
  return stored.get("result")


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")


def _parse_workdirs(items: list[str]) -> dict[str, str]:
  out = {}
  for item in items:
    name, sep, path = item.partition("=")
    if not sep or not path:
      raise SystemExit(f"error: --workdir takes family=path, got {item!r}.")
    if name not in BY_NAME:
      raise SystemExit(f"error: --workdir: unknown family {name!r}; one of "
                       f"{', '.join(f.name for f in FAMILIES)}.")
    out[name] = path
  return out


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", action="append", default=[], metavar="FAMILY=PATH",
                 help="a finished run of a family (repeatable): "
                 + ", ".join(f.name for f in FAMILIES))
  p.add_argument("--cache", default="workdir/bench_generators",
                 help="where missing families are trained (finished runs are reused) and the "
                 "table, JSON and picture are written")
  p.add_argument("--only", nargs="+", default=None, help="evaluate only these rows")
  p.add_argument("--num-samples", type=int, default=5000)
  p.add_argument("--sample-batch", type=int, default=500)
  p.add_argument("--p1-eps", type=float, nargs=2, default=[1e-4, 0.03],
                 help="kernel variances of p1: a small one (near copies of training digits) and "
                 "the one with about the best test log-likelihood on the digits (0.03)")
  p.add_argument("--p2-base", default="vae_flow", choices=["vae_gaussian", "vae_flow"])
  p.add_argument("--with-priors", action="store_true",
                 help="also train the token priors (and their tokenizers) if missing")
  p.add_argument("--ais", action="store_true", help="AIS log p(x) for the VAEs, AVB and the GAN")
  p.add_argument("--ais-examples", type=int, default=100,
                 help="evenly spaced test digits scored by AIS")
  p.add_argument("--ais-chains", type=int, default=16)
  p.add_argument("--ais-steps", type=int, default=500)
  p.add_argument("--ais-batch", type=int, default=10, help="test digits per AIS call")
  p.add_argument("--gan-sigmas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
  p.add_argument("--gan-sigma", type=float, default=0.0, help="fix σ instead of choosing it")
  p.add_argument("--gan-sigma-examples", type=int, default=10,
                 help="held-out test digits (outside the AIS subset) that choose σ")
  p.add_argument("--gan-sigma-steps", type=int, default=60, help="AIS steps of the σ choice")
  p.add_argument("--gan-sigma-chains", type=int, default=4, help="AIS chains of the σ choice")
  # The DCGAN's generator costs ~0.2 s per gradient at 160 latents on a 2-core CPU, so the
  # settings of the MLP decoders would take hours: the GAN gets its own, on a subset of the
  # same digits (the VAEs' AIS on that subset is printed beside it).
  p.add_argument("--gan-ais-examples", type=int, default=20,
                 help="test digits of the GAN's AIS (every k-th of the --ais-examples subset)")
  p.add_argument("--gan-ais-chains", type=int, default=8)
  p.add_argument("--gan-ais-steps", type=int, default=300)
  p.add_argument("--picture-samples", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--smoke", action="store_true",
                 help="tiny trainings, 200 samples, short AIS: checks the plumbing only")
  args = p.parse_args(argv)
  if args.smoke:
    if args.cache == p.get_default("cache"):
      args.cache = "workdir/bench_generators_smoke"
    args.num_samples = min(args.num_samples, 200)
    args.ais_examples, args.ais_chains = min(args.ais_examples, 4), min(args.ais_chains, 2)
    args.ais_steps, args.gan_sigma_examples = min(args.ais_steps, 10), 2
    args.ais_batch = min(args.ais_batch, 2)
    args.gan_ais_examples, args.gan_ais_chains = min(args.gan_ais_examples, 2), 2
    args.gan_ais_steps, args.gan_sigma_steps = min(args.gan_ais_steps, 10), 5
    args.gan_sigma_chains = 2
  for name in ("num_samples", "sample_batch", "ais_examples", "ais_chains", "ais_steps",
               "ais_batch", "picture_samples", "gan_sigma_examples", "gan_sigma_steps",
               "gan_sigma_chains", "gan_ais_examples", "gan_ais_chains", "gan_ais_steps"):
    if getattr(args, name) < (2 if name in ("num_samples", "ais_examples",
                                            "gan_ais_examples") else 1):
      raise SystemExit(f"error: --{name.replace('_', '-')} must be a positive int, got "
                       f"{getattr(args, name)}.")
  if any(e <= 0 for e in args.p1_eps) or any(s <= 0 for s in args.gan_sigmas) or \
      args.gan_sigma < 0:
    raise SystemExit("error: --p1-eps and --gan-sigma(s) must be > 0.")
  given = _parse_workdirs(args.workdir)
  if args.only is not None:
    unknown = sorted(set(args.only) - set(TABLE_ORDER))
    if unknown:
      raise SystemExit(f"error: --only: unknown row(s) {unknown}; rows: {', '.join(TABLE_ORDER)}.")
  log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
  os.makedirs(args.cache, exist_ok=True)
  classifier_dir = os.path.join(args.cache, "classifier") if args.smoke else ""

  # -- which families, and their runs ----------------------------------------
  def wanted(f: Family) -> bool:
    if f.group == "tokenizer":
      return False
    if args.only is not None and f.name not in args.only and not (
        f.name == args.p2_base and "p2" in args.only):
      return False
    if f.name in given:
      return True
    done = runs.read_summary(os.path.join(args.cache, "runs", f.name)) is not None
    if f.group == "priors":
      return args.with_priors or done
    if f.group == "ais":
      return args.ais or done
    return True

  workdirs: dict[str, str] = {}

  def workdir_of(f: Family) -> str:
    if f.name in workdirs:
      return workdirs[f.name]
    if f.name in given:
      path = given[f.name]
      if runs.read_summary(path) is None:
        raise SystemExit(f"error: --workdir {f.name}={path}: no summary.json there (not a "
                         "finished run).")
    else:
      path = os.path.join(args.cache, "runs", f.name)
      tokenizer = workdir_of(BY_NAME[f.tokenizer]) if f.tokenizer else ""
      config = family_config(f, smoke=args.smoke, tokenizer_dir=os.path.abspath(tokenizer)
                             if tokenizer else "", classifier_dir=classifier_dir)
      ensure_trained(f, path, config, log)
    workdirs[f.name] = path
    return path

  families = [f for f in FAMILIES if wanted(f)]
  for f in families:
    workdir_of(f)

  # -- the data every row is scored on ---------------------------------------
  limit = SMOKE_DATA_LIMIT if args.smoke else None
  ds = load_image_dataset("digits", limit=limit)
  train_unit = pixels.to_unit(ds.train_images)
  test_unit = pixels.to_unit(ds.test_images)
  test_binary = pixels.static_binarization(ds.test_images, seed=EVAL_BINARIZATION_SEED["test"])
  for f in families:
    c = runs.read_config(workdirs[f.name])
    if f.trainer == "prior":
      c = runs.read_config(c["tokenizer"])
    if c.get("dataset") != "digits" or (c.get("data_limit") or None) != limit:
      raise SystemExit(f"error: the {f.name} run in {workdirs[f.name]} was trained on "
                       f"dataset={c.get('dataset')!r}, data_limit={c.get('data_limit')}; this "
                       f"table needs digits with data_limit={limit or 0} (same test split).")
  classifier = sample_eval.digit_classifier(ds, cache_dir=classifier_dir or None,
                                            steps=50 if args.smoke else 400)
  log(f"# classifier: test accuracy {classifier.test_accuracy:.3f}")

  # -- the generators ----------------------------------------------------------
  key = jax.random.key(args.seed)
  gens: dict[str, Generator] = {}
  for f in families:
    run = runs.load_run(workdirs[f.name])
    if f.trainer == "vae":
      gen = load_vae(run, f.name, f.label, jax.random.fold_in(key, 7))
    else:
      gen = LOADERS[f.trainer](run, f.name, f.label)
    gen.source = f"{run.workdir} (step {run.step})"
    gens[f.name] = gen
  show = lambda n: args.only is None or n in args.only  # noqa: E731
  if show("p1_small") or show("p1_large"):
    for name, eps in (("p1_small", args.p1_eps[0]), ("p1_large", args.p1_eps[1])):
      if show(name):
        gens[name] = p1_generator(train_unit, test_unit, eps, name)
  base_lp = None
  if show("p2") and args.p2_base in gens:
    base_lp = gens[args.p2_base].per_example_log_lik(test_binary)
    gens["p2"] = p2_generator(gens[args.p2_base], base_lp)
    log(f"# p2: base {args.p2_base} IWAE recomputed here {base_lp.mean():.2f} "
        f"(its run: {gens[args.p2_base].log_lik:.2f})")

  # -- AIS ---------------------------------------------------------------------
  ais_idx = np.linspace(0, len(test_unit) - 1, min(args.ais_examples, len(test_unit))).astype(int)
  ais_idx = np.unique(ais_idx)
  ais_results: dict[str, dict] = {}
  gan_idx = ais_idx[np.linspace(0, len(ais_idx) - 1,
                                min(args.gan_ais_examples, len(ais_idx))).astype(int)]
  gan_idx = np.unique(gan_idx)
  ais_cache = os.path.join(args.cache, "ais")
  if args.ais:
    os.makedirs(ais_cache, exist_ok=True)
    for name, gen in gens.items():
      if gen.ais is None or not show(name):
        continue
      t0 = time.time()
      k_ais = jax.random.fold_in(key, 1000 + TABLE_ORDER.index(name))
      is_gan = name == "gan"
      idx = gan_idx if is_gan else ais_idx
      steps, chains = ((args.gan_ais_steps, args.gan_ais_chains) if is_gan
                       else (args.ais_steps, args.ais_chains))
      batch = max(1, args.ais_batch * args.ais_chains // chains)
      settings = {"source": gen.source, "indices": [int(i) for i in idx], "steps": steps,
                  "chains": chains, "batch": batch, "seed": args.seed}
      if is_gan:
        settings["sigma"] = args.gan_sigma or {
            "grid": list(args.gan_sigmas), "examples": args.gan_sigma_examples,
            "steps": args.gan_sigma_steps, "chains": args.gan_sigma_chains}
      path = os.path.join(ais_cache, f"{name}.json")
      res = _read_ais(path, settings)
      if res is not None:
        log(f"# {name}: reusing its AIS result from {path}")
      else:
        if is_gan:
          rest = np.setdiff1d(np.arange(len(test_unit)), ais_idx)[:args.gan_sigma_examples]
          if not args.gan_sigma and len(rest) == 0:
            raise SystemExit("error: no test digit is left outside the AIS subset to choose "
                             "the GAN's σ; lower --ais-examples or give --gan-sigma.")
          sigma = choose_gan_sigma(gen, test_unit[rest], jax.random.fold_in(k_ais, 1), args,
                                   log)
          model = dataclasses.replace(
              gen.ais, log_likelihood=gaussian_observation(gen.ais.observation_mean, sigma),
              note=f"N(x; G(z), σ²I), σ = {sigma:g} on [0, 1] pixels; AIS {steps} steps, "
              f"{chains} chains on {len(idx)} of the AIS digits")
        else:
          model = gen.ais
        x = (test_binary if model.kind == "binary" else test_unit)[idx]
        res = ais_estimate(model, x, k_ais, steps=steps, chains=chains, batch=batch)
        res.update(kind=model.kind, note=model.note, seconds=time.time() - t0,
                   indices=[int(i) for i in idx])
        res["per_example"] = [float(v) for v in res["per_example"]]
        with open(path + ".tmp", "w") as f:
          json.dump({"settings": settings, "result": res}, f)
        os.replace(path + ".tmp", path)
      ais_results[name] = res
      log(f"# {name}: AIS {res['mean']:.2f} ± {res['sem']:.2f} nats on {len(idx)} digits "
          f"(acceptance {res['acceptance']:.2f}, {res['seconds']:.0f} s)")

  # -- sample metrics ----------------------------------------------------------
  results = []
  picture = []
  for name in [n for n in TABLE_ORDER if n in gens and show(n)]:
    gen = gens[name]
    x, speed = generate(gen, jax.random.fold_in(key, TABLE_ORDER.index(name)),
                        args.num_samples, args.sample_batch)
    m = evaluate_samples(x, test_unit, features=classifier)
    r = {"name": name, "label": gen.label, "log_lik": gen.log_lik, "estimator": gen.estimator,
         "kind": gen.kind, "images_per_s": speed, "metrics": m, "notes": gen.notes,
         "source": gen.source}
    if name in ais_results:
      a = ais_results[name]
      r["ais"] = {k: v for k, v in a.items() if k != "per_example"}
      r["ais"]["per_example"] = [float(v) for v in a["per_example"]]
    results.append(r)
    picture.append((gen.label, x))
    log(f"# {name}: precision {m['precision']:.3f}, recall {m['recall']:.3f}, FCD "
        f"{m['frechet_distance']:.1f}, {speed:,.0f} images/s")

  # -- the statements ------------------------------------------------------------
  findings = []
  by = {r["name"]: r for r in results}
  if "p1_small" in by and "p1_large" in by:
    a, b = by["p1_small"], by["p1_large"]
    findings.append(
        f"p1 at ε = {args.p1_eps[0]:g} vs ε = {args.p1_eps[1]:g} (same model family, exact "
        f"likelihoods on the same grey digits): log p(x) {_fmt(a['log_lik'])} vs "
        f"{_fmt(b['log_lik'])} nats, precision {a['metrics']['precision']:.3f} vs "
        f"{b['metrics']['precision']:.3f}, Fréchet distance {a['metrics']['frechet_distance']:.1f} "
        f"vs {b['metrics']['frechet_distance']:.1f}.")
    ranked = sorted(results, key=lambda r: -r["metrics"]["precision"])
    findings.append(f"Highest precision: {ranked[0]['label']} ({ranked[0]['metrics']['precision']:.3f}); "
                    f"lowest: {ranked[-1]['label']} ({ranked[-1]['metrics']['precision']:.3f}).")
  if "p2" in by and args.p2_base in by:
    a, b = by["p2"], by[args.p2_base]
    findings.append(
        f"p2 vs its VAE (binary pmf, the same IWAE draws): log p(x) {a['log_lik']:.2f} vs "
        f"{base_lp.mean():.2f} nats ({a['log_lik'] - base_lp.mean():+.2f}; ≥ −log 100 = "
        f"−4.61), "
        f"precision {a['metrics']['precision']:.3f} vs {b['metrics']['precision']:.3f}, "
        f"Fréchet distance {a['metrics']['frechet_distance']:.1f} vs "
        f"{b['metrics']['frechet_distance']:.1f}.")
  for vae in ("vae_gaussian", "vae_flow"):
    if vae in ais_results and vae in gens and gens[vae].per_example_log_lik is not None:
      iwae = gens[vae].per_example_log_lik(test_binary[ais_idx])
      d, se = _paired(ais_results[vae]["per_example"], iwae)
      findings.append(f"{gens[vae].label}: AIS − {gens[vae].estimator} on the same "
                      f"{len(ais_idx)} digits = {d:+.2f} ± {se:.2f} nats (AIS should be ≥).")
  if "gan" in ais_results:
    sub = np.asarray(ais_results["gan"]["indices"])
    gan_lp = np.asarray(ais_results["gan"]["per_example"])
    for p1 in ("p1_small", "p1_large"):
      if p1 in gens:
        exact = gens[p1].per_example_log_lik(test_unit[sub])
        d, se = _paired(gan_lp, exact)
        findings.append(
            f"Grey densities on the GAN's {len(sub)} AIS digits: GAN (AIS, Gaussian "
            f"observation) {gan_lp.mean():.1f} vs {gens[p1].label} "
            f"(exact) {exact.mean():.1f} nats; GAN − p1 = {d:+.1f} ± {se:.1f}.")
  if "avb" in ais_results:
    for vae in ("avb_gaussian", "vae_gaussian"):
      if vae in ais_results:
        d, se = _paired(ais_results["avb"]["per_example"], ais_results[vae]["per_example"])
        holds = d + 2 * se < 0
        findings.append(
            f"AIS, AVB − {gens[vae].label}: {d:+.2f} ± {se:.2f} nats (paired over "
            f"{len(ais_idx)} test digits): 'AVB is worse than the Gaussian VAE on digits' "
            + ("still holds" if holds else "does not hold" if d - 2 * se > 0 else
               "is not resolved (within 2 s.e.)") + " under AIS.")

  # -- outputs -------------------------------------------------------------------
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  header = (f"## Every generator on the offline digits ({'SMOKE: not results, ' if args.smoke else ''}"
            f"{now}, commit {_commit()}, {jax.default_backend()} × {jax.device_count()}, "
            f"{platform.machine()}, {os.cpu_count()} cores)\n\n"
            f"{args.num_samples} samples per model against the {len(test_unit)} test digits, "
            f"features of the project's digit classifier (test accuracy "
            f"{classifier.test_accuracy:.3f}; Fréchet *classifier* distance, not FID). "
            "log p(x) of `binary` rows: the Bernoulli pmf of the fixed test binarization; of "
            "`grey` rows: a density on [0, 1]^784; the two kinds are not comparable.")
  ais_line = ""
  if args.ais:
    ais_line = (f"\n\nAIS: {args.ais_steps} sigmoid-spaced temperatures, {args.ais_chains} "
                f"chains, HMC with 10 leapfrog steps (step size adapted to 0.65 acceptance), "
                f"on {len(ais_idx)} evenly spaced test digits (the GAN: {args.gan_ais_steps} "
                f"temperatures, {args.gan_ais_chains} chains on {len(gan_idx)} of them); ± is the "
                "standard error over digits.")
  text = header + ais_line + "\n\n" + table(results, args.ais, len(ais_idx))
  notes = [f"- {r['label']}: " + "; ".join(r["notes"] + ([r["ais"]["note"]] if r.get("ais")
                                                          and r["ais"]["note"] else []))
           for r in results if r["notes"]]
  text += "\n\n" + "\n".join(notes)
  if findings:
    text += "\n\n" + "\n".join(f"- {s}" for s in findings)
  command = "python bench/generators.py " + " ".join(sys.argv[1:] if argv is None else argv)
  text += f"\n\nCommand: `{command.strip()}`\n"
  print(text)
  with open(os.path.join(args.cache, "generators.md"), "w") as f:
    f.write(text)
  with open(os.path.join(args.cache, "generators.json"), "w") as f:
    json.dump({"date": now, "commit": _commit(), "command": command.strip(),
               "args": vars(args), "results": results, "findings": findings}, f, indent=1,
              default=float)
  from dgmjax.images import save_png

  save_png(sample_rows(picture, args.picture_samples),
           os.path.join(args.cache, "generators_samples.png"))
  log(f"# wrote {args.cache}/generators.md, generators.json, generators_samples.png")


if __name__ == "__main__":
  main()
