"""One sample-quality evaluation for every generator: :func:`evaluate_samples`.

Lecture 7, "Likelihood based models": likelihood and sample quality can
disagree arbitrarily (the kernel density p1 and the noise mixture p2 of
:mod:`dgmjax.models`), so samples are scored by themselves, in one feature
space, against real data:

* improved precision and recall (k = 3; :mod:`.precision_recall`);
* density and coverage (k = 5; :mod:`.density_coverage`);
* the Fréchet distance between Gaussians fitted to the two feature sets
  (:func:`.classifier.frechet_distance`; on the project's digit classifier
  this is the "Fréchet classifier distance", **not** comparable to FID);
* with a classifier, the classes the samples fall into and the KL of their
  class histogram to uniform (:func:`.classifier.class_coverage`).

The feature space is the caller's choice: a callable (e.g. the penultimate
layer of :class:`.classifier.Classifier`), a ``Classifier`` itself, or
``None`` for raw flattened pixels (fine for toy data, poor for images:
pixel distances do not measure perceptual similarity).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from dgmjax.metrics import classifier as clf
from dgmjax.metrics import density_coverage as dc
from dgmjax.metrics import precision_recall as pr

__all__ = ["evaluate_samples"]

Features = Callable[[np.ndarray], Any]


def _features(name: str, images: Any, features: Features | clf.Classifier | None) -> np.ndarray:
  if features is None:
    x = np.asarray(images)
    if x.ndim < 2:
      raise ValueError(f"{name} must have shape (N, ...), got {x.shape}.")
    out = x.reshape(x.shape[0], -1)
  elif isinstance(features, clf.Classifier):
    out = features.predict(np.asarray(images))[1]
  else:
    out = np.asarray(features(images))
    if out.ndim != 2 or out.shape[0] != np.shape(images)[0]:
      raise ValueError(
          f"features({name}) must return (N, F) with N = {np.shape(images)[0]}, got {out.shape}."
      )
  out = out.astype(np.float32)
  if not np.all(np.isfinite(out)):
    raise ValueError(f"the features of {name} contain NaN or inf.")
  return out


def evaluate_samples(
    samples: Any,
    real: Any,
    *,
    features: Features | clf.Classifier | None = None,
    classifier: clf.Classifier | Callable[[Any], Any] | None = None,
    k_precision_recall: int = pr.DEFAULT_K,
    k_density_coverage: int = dc.DEFAULT_K,
    chunk_size: int = pr.DEFAULT_CHUNK,
    min_share: float = 0.1,
) -> dict[str, Any]:
  """Sample-quality metrics of a generator's ``samples`` against ``real`` data.

  With ``φ`` the feature map, ``Φ_r = φ(real)`` (N rows) and
  ``Φ_g = φ(samples)`` (M rows):

  * ``precision``, ``recall``: improved precision/recall with
    ``k_precision_recall``-NN balls (Kynkäänniemi et al. 2019);
  * ``density``, ``coverage``: with ``k_density_coverage``-NN real balls
    (Naeem et al. 2020);
  * ``frechet_distance``: ``‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2(Σ_r^{1/2} Σ_g
    Σ_r^{1/2})^{1/2})`` of the feature means and covariances (Heusel et al.
    2017's formula; its value depends on the feature map);
  * with ``classifier``: ``classes_covered``, ``class_kl``,
    ``confident_fraction`` and ``class_histogram`` of the samples' predicted
    classes (:func:`dgmjax.metrics.classifier.class_coverage`).

  Use the same number of samples across the models compared (all the
  metrics depend on M and N), ideally M = N ≥ 5000 for stable precision and
  recall (at least 10 000 in the papers).

  Args:
    samples: (M, …) generated data (e.g. images in [0, 1]).
    real: (N, …) real data, same trailing shape.
    features: ``None`` (flattened raw values), a callable mapping a batch of
      (N, …) data to (N, F) features (e.g. ``lambda x: clf.predict(x)[1]``),
      or a :class:`dgmjax.metrics.classifier.Classifier`, whose 64
      penultimate-layer features are used and which is also the default
      ``classifier``.
    classifier: a ``Classifier`` or a callable returning (M, K) class
      probabilities; enables the class metrics.
    k_precision_recall: neighbour rank for precision/recall (3).
    k_density_coverage: neighbour rank for density/coverage (5).
    chunk_size: rows per pairwise-distance block (memory ``chunk_size × N``).
    min_share: passed to :func:`~dgmjax.metrics.classifier.class_coverage`.

  Returns:
    A dict of Python numbers (and the class histogram list), plus
    ``num_samples``, ``num_real`` and ``feature_dim``.

  References:
    Kynkäänniemi et al., `Improved Precision and Recall Metric
    <https://arxiv.org/abs/1904.06991>`_, 2019; Naeem et al., `Reliable
    Fidelity and Diversity Metrics <https://arxiv.org/abs/2002.09797>`_,
    2020; Heusel et al., `Two time-scale update rule
    <https://arxiv.org/abs/1706.08500>`_, 2017.

  Example:
    >>> rng = np.random.default_rng(0)
    >>> real = rng.normal(size=(500, 2)).astype(np.float32)
    >>> good = rng.normal(size=(500, 2)).astype(np.float32)
    >>> collapsed = 0.1 * rng.normal(size=(500, 2)).astype(np.float32)  # one mode
    >>> a, b = evaluate_samples(good, real), evaluate_samples(collapsed, real)
    >>> print(a["recall"] > 0.8, b["recall"] < 0.3, b["precision"] > 0.9)
    True True True
    >>> print(a["frechet_distance"] < b["frechet_distance"])
    True
  """
  if isinstance(features, clf.Classifier) and classifier is None:
    classifier = features
  if np.shape(samples)[1:] != np.shape(real)[1:]:
    raise ValueError(
        f"samples must have the trailing shape of real {np.shape(real)[1:]}, got "
        f"{np.shape(samples)}."
    )
  fake_f = _features("samples", samples, features)
  real_f = _features("real", real, features)
  if fake_f.shape[1] != real_f.shape[1]:
    raise ValueError(
        f"features gave {fake_f.shape[1]} features for samples but {real_f.shape[1]} for real."
    )
  p = pr.precision_recall(real_f, fake_f, k=k_precision_recall, chunk_size=chunk_size)
  d = dc.density_coverage(real_f, fake_f, k=k_density_coverage, chunk_size=chunk_size)
  out: dict[str, Any] = {
      "precision": float(p.precision),
      "recall": float(p.recall),
      "density": float(d.density),
      "coverage": float(d.coverage),
      "frechet_distance": clf.frechet_distance(*clf.feature_statistics(real_f),
                                               *clf.feature_statistics(fake_f)),
      "num_samples": int(fake_f.shape[0]),
      "num_real": int(real_f.shape[0]),
      "feature_dim": int(fake_f.shape[1]),
  }
  if classifier is not None:
    if isinstance(classifier, clf.Classifier):
      probs = classifier.predict(np.asarray(samples))[0]
    elif callable(classifier):
      probs = np.asarray(classifier(samples))
    else:
      raise TypeError(
          f"classifier must be a Classifier or a callable, got {type(classifier).__name__}."
      )
    cover = clf.class_coverage(probs, min_share=min_share)
    out.update(
        classes_covered=cover["classes_covered"],
        class_kl=cover["class_kl"],
        confident_fraction=cover["confident_fraction"],
        class_histogram=cover["histogram"],
    )
  return out
