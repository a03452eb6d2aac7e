"""A small digit classifier trained by the project, and the metrics built on it.

FID and KID need the Inception network's weights, which cannot be downloaded
here. The honest offline substitute (NOTES.md) is a classifier trained on the
same data by the project itself:

* :class:`DigitClassifier`: a two-layer CNN (about 0.1 M parameters) whose
  penultimate layer (64 features) is the feature space; it trains on the
  4500 offline MNIST digits in a few seconds to ~97 % test accuracy
  (:func:`train_classifier`), and :func:`load_or_train_classifier` caches
  the weights on disk keyed by a fingerprint of the training data.
* :func:`class_coverage`: how many classes the generated images fall into and
  ``KL(p̂ || uniform)`` of the predicted-class histogram — the image
  analogue of mode coverage (Lecture 7, slide "Mode collapse").
* :func:`frechet_distance`: the Fréchet distance between Gaussians fitted to
  the classifier features of two image sets. It is computed like FID but on a
  different network, so its values are **not comparable to published FID**:
  call it "Fréchet classifier distance".

References:
  Heusel et al., `GANs trained by a two time-scale update rule converge to a
  local Nash equilibrium <https://arxiv.org/abs/1706.08500>`_, 2017 (FID);
  Dowson, Landau, "The Fréchet distance between multivariate normal
  distributions", J. Multivariate Anal. 12(3), 1982.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgmjax import _checks, rng

__all__ = [
    "Classifier",
    "DigitClassifier",
    "class_coverage",
    "default_cache_dir",
    "feature_statistics",
    "frechet_distance",
    "load_or_train_classifier",
    "train_classifier",
]

_VERSION = 1  # bump when the architecture or training recipe changes


class DigitClassifier(nn.Module):
  """``images (B, H, W, C) in [0, 1] -> (logits (B, K), features (B, F))``.

  Conv(16, 5×5, stride 2) → ReLU → Conv(32, 5×5, stride 2) → ReLU →
  Dense(F) → ReLU (the features) → Dense(K). Small on purpose: it trains in
  seconds on a CPU and still reaches ~97 % on held-out digits.

  Example:
    >>> net = DigitClassifier(num_classes=10, features=16)
    >>> params = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> logits, feats = net.apply(params, jnp.zeros((3, 28, 28, 1)))
    >>> print(logits.shape, feats.shape)
    (3, 10) (3, 16)
  """

  num_classes: int = 10
  features: int = 64

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    init = rng.default_kernel_init  # flax's default, compiled faster on CPU
    x = nn.relu(nn.Conv(16, (5, 5), strides=(2, 2), kernel_init=init)(x))
    x = nn.relu(nn.Conv(32, (5, 5), strides=(2, 2), kernel_init=init)(x))
    feats = nn.relu(nn.Dense(self.features)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(feats), feats


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A trained :class:`DigitClassifier` and what it was measured to do."""

  params: Any
  num_classes: int
  image_shape: tuple[int, ...]
  test_accuracy: float
  features: int = 64

  @property
  def module(self) -> DigitClassifier:
    return DigitClassifier(self.num_classes, self.features)

  def predict(self, images: np.ndarray, *, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] -> ``(class probabilities (N, K), features (N, F))``."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"images must have shape (N, {', '.join(map(str, self.image_shape))}), "
                       f"got {images.shape}.")
    probs, feats = [], []
    for i in range(0, len(images), batch_size):
      p, f = _predict(self.module, self.params, images[i : i + batch_size])
      probs.append(np.asarray(p))
      feats.append(np.asarray(f))
    return np.concatenate(probs), np.concatenate(feats)


@functools.partial(jax.jit, static_argnums=0)
def _predict(module, params, x):
  logits, feats = module.apply(params, x)
  return jax.nn.softmax(logits), feats


def _shift(key, x, max_shift):
  """Random translation by up to ``max_shift`` pixels (zero fill), per image."""
  n, h, w, _ = x.shape
  pad = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)
  crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))
  return jax.vmap(crop)(pad, offsets)


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    seed: int = 0,
    steps: int = 400,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    features: int = 64,
) -> Any:
  """Train a :class:`DigitClassifier` with Adam and random 2-pixel shifts.

  Cross-entropy, cosine learning-rate decay, epochs without replacement
  (about 10 s on a 2-core CPU for the defaults).

  Args:
    images: (N, H, W, C) float32 in [0, 1].
    labels: (N,) integers in ``[0, num_classes)``.
    num_classes: K >= 2.
    seed: initialisation and batch order.
    steps: Adam steps.
    batch_size: examples per step (<= N).
    learning_rate: peak learning rate.
    features: width of the feature layer.

  Returns:
    The trained parameters.
  """
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels)
  _checks.check_rank("images", images, 4)
  _checks.check_integer("labels", labels)
  _checks.check_int_at_least("num_classes", num_classes, 2)
  _checks.check_int_at_least("steps", steps, 1)
  if labels.shape != images.shape[:1]:
    raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}.")
  if batch_size > len(images):
    raise ValueError(f"batch_size must be <= the number of images {len(images)}, got {batch_size}.")
  net = DigitClassifier(num_classes, features)
  key_init, key_data = jax.random.split(jax.random.key(seed))
  params = net.init(key_init, jnp.asarray(images[:1]))
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y, key):
    def loss_fn(p):
      logits, _ = net.apply(p, _shift(key, x, 2))
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  order = np.zeros(0, np.int64)
  for t in range(steps):
    if len(order) < batch_size:  # epochs without replacement
      order = np.concatenate([order, rng.permutation(len(images))])
    idx, order = order[:batch_size], order[batch_size:]
    params, opt_state = step(params, opt_state, images[idx], labels[idx].astype(np.int32),
                             jax.random.fold_in(key_data, t))
  return params


def default_cache_dir() -> str:
  """``$DGMJAX_CACHE``, else ``$XDG_CACHE_HOME/dgmjax``, else ``~/.cache/dgmjax``."""
  if os.environ.get("DGMJAX_CACHE"):
    return os.environ["DGMJAX_CACHE"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "dgmjax")


def _fingerprint(images: np.ndarray, labels: np.ndarray, **recipe) -> str:
  h = hashlib.sha256()
  h.update(np.ascontiguousarray(images).tobytes())
  h.update(np.ascontiguousarray(labels).astype(np.int64).tobytes())
  h.update(json.dumps({"version": _VERSION, **recipe}, sort_keys=True).encode())
  return h.hexdigest()[:16]


def load_or_train_classifier(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    cache_dir: str | None = None,
    seed: int = 0,
    steps: int = 400,
) -> Classifier:
  """The classifier for this training set: from the cache, or trained now.

  The cache file is named by a hash of the training images, labels and the
  recipe, so a different dataset (or a changed recipe) never reuses stale
  weights. The file's SHA-256 is kept next to it and checked before use: a
  truncated or damaged cache file is moved aside (``.damaged``) with one
  warning line and the classifier is trained again.

  Args:
    train_images, test_images: (N, H, W, C) float32 in [0, 1].
    train_labels, test_labels: (N,) integer class labels.
    cache_dir: where to keep the weights (default :func:`default_cache_dir`).
    seed: training seed.
    steps: training steps.

  Returns:
    A :class:`Classifier` with its accuracy on the test images.
  """
  from flax import serialization

  train_images = np.asarray(train_images, np.float32)
  train_labels = np.asarray(train_labels)
  num_classes = int(max(train_labels.max(), np.asarray(test_labels).max())) + 1
  recipe = dict(seed=seed, steps=steps, num_classes=num_classes)
  cache_dir = cache_dir or default_cache_dir()
  path = os.path.join(cache_dir, f"classifier-{_fingerprint(train_images, train_labels, **recipe)}")
  template = DigitClassifier(num_classes).init(jax.random.key(0), jnp.asarray(train_images[:1]))
  params = None
  if os.path.exists(path + ".msgpack") and os.path.exists(path + ".json"):
    try:
      with open(path + ".msgpack", "rb") as f:
        raw = f.read()
      with open(path + ".json") as f:
        meta = json.load(f)
      if hashlib.sha256(raw).hexdigest() != meta.get("sha256"):
        raise ValueError("its checksum does not match (truncated or damaged)")
      params = serialization.from_bytes(template, raw)
      accuracy = float(meta["test_accuracy"])
    except Exception as e:  # noqa: BLE001 - a damaged cache of any kind: train again, loudly
      params = None
      aside = f"{path}.msgpack.damaged"
      try:
        os.replace(path + ".msgpack", aside)
      except OSError:
        aside = path + ".msgpack (left in place)"
      print(f"warning: the classifier cache {path}.msgpack is unusable ({e}); kept it as "
            f"{aside} and training the classifier again.", file=sys.stderr, flush=True)
  if params is None:
    params = jax.device_get(train_classifier(train_images, train_labels,
                                             num_classes=num_classes, seed=seed, steps=steps))
    probe = Classifier(params, num_classes, tuple(train_images.shape[1:]), float("nan"))
    probs, _ = probe.predict(test_images)
    accuracy = float(np.mean(probs.argmax(-1) == np.asarray(test_labels)))
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    raw = serialization.to_bytes(params)
    with open(tmp, "wb") as f:  # write-then-rename: readers never see half a file
      f.write(raw)
    os.replace(tmp, path + ".msgpack")
    with open(tmp, "w") as f:  # the checksum is verified before every use
      json.dump({"test_accuracy": accuracy, "sha256": hashlib.sha256(raw).hexdigest(), **recipe}, f)
    os.replace(tmp, path + ".json")
  return Classifier(params, num_classes, tuple(train_images.shape[1:]), accuracy)


def class_coverage(
    probs: np.ndarray, *, min_share: float = 0.1
) -> dict[str, Any]:
  """Classes generated and KL of the predicted-class histogram to uniform.

  With ``p̂_k`` the fraction of samples whose most probable class is k:

  * ``classes_covered``: classes with ``p̂_k >= min_share / K`` (by default a
    tenth of their fair share: one stray sample does not count as covering
    a class);
  * ``class_kl = Σ_k p̂_k log(K p̂_k) = KL(p̂ || uniform)`` (0 for balanced
    classes, ``log K`` for a single class);
  * ``confident_fraction``: samples with max probability >= 0.9;
  * ``histogram``: p̂ as a list.

  Lecture 7, slide "Mode collapse" (for images, classes stand in for modes).

  Args:
    probs: (N, K) class probabilities of generated images.
    min_share: fraction of the fair share 1/K that counts as covered, in
      [0, 1].

  Returns:
    A dict of Python numbers (and the histogram list).

  Example:
    >>> probs = np.eye(10)[np.array([0] * 50 + [1] * 50)]
    >>> out = class_coverage(probs)
    >>> print(out["classes_covered"], round(out["class_kl"], 4))  # log(10/2)
    2 1.6094
  """
  probs = np.asarray(probs, np.float64)
  _checks.check_rank("probs", probs, 2)
  _checks.check_in_range("min_share", min_share, 0.0, 1.0)
  n, k = probs.shape
  if n == 0 or k < 2:
    raise ValueError(f"probs must be (N >= 1, K >= 2), got shape {probs.shape}.")
  hist = np.bincount(probs.argmax(-1), minlength=k) / n
  nz = hist[hist > 0]
  return {
      "classes_covered": int(np.sum(hist >= min_share / k)) if min_share > 0
      else int(np.sum(hist > 0)),
      "class_kl": float(np.sum(nz * np.log(nz * k))),
      "confident_fraction": float(np.mean(probs.max(-1) >= 0.9)),
      "histogram": [float(h) for h in hist],
  }


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and (unbiased, N − 1) covariance of (N, F) features, in float64.

  Example:
    >>> mu, cov = feature_statistics(np.array([[0.0, 1.0], [2.0, 3.0]]))
    >>> print(mu, cov.tolist())
    [1. 2.] [[2.0, 2.0], [2.0, 2.0]]
  """
  x = np.asarray(features, np.float64)
  _checks.check_rank("features", x, 2)
  if x.shape[0] < 2:
    raise ValueError(f"features needs at least 2 rows for a covariance, got {x.shape}.")
  return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray
) -> float:
  """Fréchet (2-Wasserstein²) distance between N(μ1, Σ1) and N(μ2, Σ2).

  ``d² = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}``.

  Computed in float64 with symmetric eigendecompositions (no complex
  ``sqrtm`` residue): ``Σ1^{1/2} Σ2 Σ1^{1/2}`` is symmetric PSD, so the trace of
  its square root is the sum of the square roots of its eigenvalues.

  Args:
    mu1, mu2: (F,) means.
    cov1, cov2: (F, F) covariances (symmetric PSD).

  Returns:
    d² >= 0 as a Python float.

  Example:
    >>> # 1-D: (μ1 − μ2)² + (σ1 − σ2)² = 1 + 1
    >>> print(round(frechet_distance(np.zeros(1), np.eye(1), np.ones(1), 4 * np.eye(1)), 6))
    2.0
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  _checks.check_rank("mu1", mu1, 1)
  _checks.check_same_shape(mu1=mu1, mu2=mu2)
  f = mu1.shape[0]
  for name, c in (("cov1", cov1), ("cov2", cov2)):
    if c.shape != (f, f):
      raise ValueError(f"{name} must have shape ({f}, {f}), got {c.shape}.")
  w, v = np.linalg.eigh((cov1 + cov1.T) / 2)
  root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
  middle = root1 @ cov2 @ root1
  ev = np.linalg.eigvalsh((middle + middle.T) / 2)
  cross = np.sum(np.sqrt(np.clip(ev, 0.0, None)))
  d2 = np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * cross
  return float(max(d2, 0.0))
