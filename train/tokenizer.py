"""A finished tokenizer run read back for ``train.prior``, and its tokens cached.

A tokenizer is the workdir of a finished ``train.vqvae`` or ``train.dvae`` run (``model=dvae``
or the categorical VAE): :func:`load_tokenizer` checks the workdir (one ConfigError naming what
is wrong), restores its latest checkpoint through that trainer's own ``make_task`` and gives
jitted ``encode`` (images to ``(B, N)`` raster-order tokens) and ``decode``.
:func:`cached_tokens` encodes the train and test splits once into ``<workdir>/tokens.npz``,
with a record of the tokenizer they came from, and :func:`tokenizer_change` says why a prior
trained on one tokenizer's codes cannot go on with another's.

Like the harness, this is infrastructure of the trainers: it reads another trainer's run, so
it lives in ``train/``, not in the library.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dgmjax import data as dgdata
from dgmjax.errors import ConfigError
from dgmjax.nn import dvae as dvae_nn
from train import checkpoints as ckptlib
from train import harness


def shape_text(shape) -> str:
  return "x".join(str(int(d)) for d in shape)


def _fail_tokenizer(workdir: str, why: str):
  raise ConfigError(f"config.tokenizer must be the workdir of a finished train.vqvae or "
                    f"train.dvae run; {workdir!r} {why}.")


def _fingerprint(workdir: str, step: int) -> str:
  """A short hash of a checkpoint's manifest (the SHA-256 of every file of it)."""
  path = os.path.join(workdir, "checkpoints", str(step), ckptlib.MANIFEST)
  try:
    with open(path, "rb") as f:
      return hashlib.sha256(f.read()).hexdigest()[:16]
  except OSError:  # a checkpoint written before manifests existed
    return ""


def _tokenizer_run(workdir: str) -> tuple[str, ml_collections.ConfigDict, int]:
  """``(kind, config, latest step)`` of a tokenizer workdir, or one ConfigError."""
  from train import dvae, vqvae

  if not workdir:
    raise ConfigError("config.tokenizer must be the workdir of a finished train.vqvae or "
                      "train.dvae run (e.g. --config.tokenizer=workdir/vqvae); it is empty.")
  if not os.path.isdir(workdir):
    _fail_tokenizer(workdir, "does not exist" if not os.path.exists(workdir)
                    else "is not a directory")
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      saved = json.load(f)
  except FileNotFoundError:
    _fail_tokenizer(workdir, "has no config.json")
  except (OSError, ValueError) as e:
    _fail_tokenizer(workdir, f"has an unreadable config.json ({type(e).__name__})")
  if not isinstance(saved, dict):
    _fail_tokenizer(workdir, "has a config.json that is not a config")
  if "tokenizer" in saved:
    _fail_tokenizer(workdir, "is a train.prior run, not a tokenizer")
  if "codebook" in saved:
    kind, defaults = "vqvae", vqvae.get_config()
  elif "estimator" in saved:
    kind, defaults = "dvae", dvae.get_config()
  else:
    _fail_tokenizer(workdir, "is a run of another trainer (its config.json has neither the "
                    "VQ-VAE's 'codebook' key nor the dVAE's 'estimator' key)")
  cfg = ml_collections.ConfigDict(saved)
  for key, value in defaults.items():
    if key not in cfg:  # a workdir from before the key existed: the default then
      cfg[key] = value
    elif isinstance(value, tuple):  # JSON turns tuples into lists
      cfg[key] = tuple(cfg[key])
  steps = ckptlib.complete_steps(os.path.join(workdir, "checkpoints"))
  if not steps:
    _fail_tokenizer(workdir, "has no checkpoint (train it first)")
  if steps[0] < cfg.num_steps:
    _fail_tokenizer(workdir, f"has not finished: its latest checkpoint is step {steps[0]} of "
                    f"num_steps={cfg.num_steps} (rerun its training command to finish it)")
  return kind, cfg, steps[0]


class Tokenizer:
  """A restored tokenizer run: images <-> (B, N) raster-order tokens.

  Use :func:`load_tokenizer`, which checks the workdir first.
  """

  def __init__(self, workdir: str):
    from train import dvae, vqvae  # only the chosen tokenizer's trainer is used

    kind, cfg, _ = _tokenizer_run(workdir)
    self.workdir, self.config, self.kind = os.path.realpath(workdir), cfg, kind
    train, test, info = harness.load_data(cfg)
    self.dataset = info.dataset
    self.splits, self.image_shape = {"train": train, "test": test}, tuple(info.image_shape)
    example = harness.formatted({"image": test["image"][:8]}, cfg.pixel_format)
    trainer = vqvae if kind == "vqvae" else dvae
    state, self.step = harness.restore_state(workdir, trainer.make_task(cfg, info), cfg, example)
    if self.step < cfg.num_steps:  # the newer steps were damaged
      _fail_tokenizer(workdir, f"has no usable checkpoint of its last step {cfg.num_steps} "
                      f"(the newest good one is step {self.step})")
    self.fingerprint = _fingerprint(workdir, self.step)
    if kind == "vqvae":
      model = vqvae.build_model(cfg, self.image_shape[-1])
      # FSQ and LFQ keep no codebook statistics (extra is None for them).
      var = {"params": state.params, **({"vq_ema": state.extra} if state.extra is not None
                                        else {})}
      self.vocab_size = model.vocab_size  # num_codes, or Π levels for FSQ
      encode = lambda x: model.apply(var, x, method="encode")
      unit = (lambda x: (x + 1) / 2) if cfg.pixel_format == "symmetric" else (lambda x: x)
      decode = lambda t: unit(model.apply(var, t, method="decode_indices"))
      self.posterior_sample = None  # a VQ-VAE's encoder is deterministic
    else:
      model = dvae.build_model(cfg, self.image_shape)
      self.vocab_size = model.num_classes
      # The mode of q(c|x): the code the decoder was trained to read.
      encode = lambda x: jnp.argmax(model.logits(state.params, x), axis=-1)
      decode = lambda t: model.mean_image(state.params, jax.nn.one_hot(t, self.vocab_size))

      def posterior_sample(x, keys):
        """Tokens c ~ q(c|x), one per key, with log p(x|c) and log p(c) - log q(c|x)
        under the dVAE's own prior (uniform, or its learned factorised one)."""
        logits = model.logits(state.params, x)
        codes = jax.vmap(dvae_nn.hard_codes)(keys, logits)
        tokens = jnp.argmax(codes, -1).reshape(len(x), -1).astype(jnp.int32)
        return (tokens, model.log_likelihood(state.params, codes, x),
                model.log_prior(state.params, codes), model.log_posterior(codes, logits))

      self.posterior_sample = jax.jit(posterior_sample)
    self.grid = jax.eval_shape(encode, jnp.zeros((1, *self.image_shape))).shape[1:]
    self.seq_len = math.prod(self.grid)
    self.encode = jax.jit(lambda x: encode(x).reshape(len(x), -1).astype(jnp.int32))
    self.decode = jax.jit(lambda t: jnp.clip(decode(t.reshape(len(t), *self.grid)), 0, 1))

  @property
  def record(self) -> dict:
    """What a prior trained on these tokens depends on (kept in ``tokens.npz``)."""
    return {"tokenizer": self.workdir, "step": int(self.step), "fingerprint": self.fingerprint,
            "image_shape": [int(d) for d in self.image_shape], "seq_len": int(self.seq_len),
            "vocab_size": int(self.vocab_size)}

  def metric_dataset(self) -> dgdata.ImageDataset:
    """The grey images the digit classifier is trained on (as for ``train.gan``)."""
    if self.config.pixel_format != "binary_static":
      return self.dataset
    # binary_static stores binarized pixels; the classifier sees the originals.
    return dgdata.load_image_dataset(self.config.dataset, data_dir=self.config.data_dir or None,
                                     limit=self.config.data_limit or None)

  def images(self, split: str) -> np.ndarray:
    """A whole split in the tokenizer's pixel format, as its own evaluation saw it."""
    return harness.formatted(self.splits[split], self.config.pixel_format, split)["image"]

  def tokens(self, split: str, batch: int = 256) -> np.ndarray:
    x = self.images(split)
    return np.concatenate([np.asarray(self.encode(x[i:i + batch]))
                           for i in range(0, len(x), batch)])

  def test_mse(self, batch: int = 256) -> float:
    """Mean squared error of the test images' decoded codes, pixels in [0, 1]."""
    x = self.images("test")
    unit = (x + 1) / 2 if self.config.pixel_format == "symmetric" else x
    err = [np.sum((np.asarray(self.decode(self.encode(x[i:i + batch]))) - unit[i:i + batch]) ** 2)
           for i in range(0, len(x), batch)]
    return float(np.sum(err) / unit.size)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str, step: int, fingerprint: str) -> Tokenizer:
  del step, fingerprint  # cache keys: a retrained tokenizer is loaded again
  return Tokenizer(path)


def load_tokenizer(workdir: str) -> Tokenizer:
  """The tokenizer of a finished ``train.vqvae`` / ``train.dvae`` workdir (cached)."""
  _, _, step = _tokenizer_run(workdir)
  return _load_tokenizer(os.path.realpath(workdir), step, _fingerprint(workdir, step))


def tokenizer_change(old: dict, new: dict, workdir: str) -> str | None:
  """Why a prior trained on ``old`` tokens cannot go on with ``new`` ones (None: it can)."""
  if old == new:
    return None

  def what(r):
    return (f"{shape_text(r['image_shape'])} images as {r['seq_len']} tokens over "
            f"{r['vocab_size']} codes")

  def shape(r):
    return (list(r["image_shape"]), r["seq_len"], r["vocab_size"])

  if shape(old) != shape(new):
    return (f"config.tokenizer {new['tokenizer']} encodes {what(new)}, but the prior in "
            f"{workdir} was trained on a tokenizer of {what(old)} ({old['tokenizer']}); use a "
            f"new --workdir for a prior over this tokenizer.")
  if old["tokenizer"] != new["tokenizer"]:
    return (f"cannot resume {workdir} with config.tokenizer={new['tokenizer']!r}: it was "
            f"trained on the tokens of {old['tokenizer']!r}. Use "
            f"--config.tokenizer={old['tokenizer']!r}, or a new --workdir.")
  again = "" if old["step"] != new["step"] else " with other weights"
  return (f"config.tokenizer {new['tokenizer']} changed since the prior in {workdir} was "
          f"trained on it (its checkpoint was step {old['step']}, now step {new['step']}"
          f"{again}), so its codes mean something else now; use a new --workdir.")


def _read_cache(path: str) -> dict | None:
  try:
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError) as e:  # a damaged cache: encode again
    print(f"warning: ignoring the token cache {path} ({type(e).__name__}); encoding again.",
          flush=True)
    return None


def cached_tokens(tok: Tokenizer, workdir: str, trained: bool) -> dict:
  """The train and test splits' tokens and labels, from ``<workdir>/tokens.npz`` or encoded.

  The cache records the tokenizer it came from (:attr:`Tokenizer.record`); a cache of
  another tokenizer is encoded again, or refused with one ConfigError when a prior was
  already ``trained`` on it.
  """
  cache = os.path.join(workdir, "tokens.npz")
  arrays = _read_cache(cache)
  if arrays is not None:
    old = json.loads(str(arrays["record"])) if "record" in arrays else None
    if old != tok.record:
      why = tokenizer_change(old, tok.record, workdir) if old is not None else None
      if trained and why:
        raise ConfigError(why)
      arrays = None
  if arrays is None:
    arrays = {"record": np.array(json.dumps(tok.record, sort_keys=True))}
    for split in ("train", "test"):
      arrays[f"{split}_tokens"] = tok.tokens(split)
      arrays[f"{split}_label"] = np.asarray(tok.splits[split]["label"], np.int32)
    if jax.process_index() == 0:
      tmp = cache + ".tmp.npz"
      try:
        np.savez(tmp, **arrays)
        os.replace(tmp, cache)  # never a half-written cache
      except OSError as e:  # a read-only workdir (eval_only): encode again next time
        print(f"note: could not cache the tokens in {cache} ({e.strerror}).", flush=True)
  return arrays
