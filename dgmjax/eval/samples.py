"""Sample quality of an image generator, judged by the project's digit classifier.

Every family that generates digits (GAN, token priors, VAEs) is scored by the
same function on the same classifier, so its numbers compare across trainers:
classes covered and the class-histogram KL to uniform (mode collapse shows as
missing classes), and a Fréchet distance on the classifier's features. It is
*not* FID: the features are those of a small network trained here on the
same data (Inception weights cannot be downloaded), so the values are not
comparable to published FIDs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dgmjax.data import ImageDataset
from dgmjax.metrics import classifier as clf


def unit_images(images: np.ndarray) -> np.ndarray:
  """uint8 0..255 images -> float32 in [0, 1].

  Example:
    >>> import numpy as np
    >>> from dgmjax.eval.samples import unit_images
    >>> print(unit_images(np.array([0, 51, 255], np.uint8)))
    [0.  0.2 1. ]
  """
  return np.asarray(images, np.float32) / 255.0


def digit_classifier(dataset: ImageDataset, *, cache_dir: str | None = None,
                     steps: int = 400) -> clf.Classifier:
  """The metric classifier of a dataset's training split (trained once, then cached)."""
  return clf.load_or_train_classifier(
      unit_images(dataset.train_images), dataset.train_labels,
      unit_images(dataset.test_images), dataset.test_labels, cache_dir=cache_dir, steps=steps)


def classifier_sample_metrics(fake: np.ndarray, dataset: ImageDataset,
                              model: clf.Classifier) -> dict[str, Any]:
  """Class coverage, class KL and Fréchet classifier distance of generated images.

  Args:
    fake: (M, H, W, C) generated images in [0, 1].
    dataset: the real data; the Fréchet distance compares ``fake`` with its
      training images, and the same distance of its test images (as many as
      the test split has) is reported as a reference for "as good as data".
    model: :func:`digit_classifier` of ``dataset``.

  Returns:
    ``classes_covered``, ``class_kl``, ``class_histogram``,
    ``confident_fraction``, ``frechet_classifier_distance``,
    ``frechet_classifier_distance_test_vs_train``, ``classifier_test_accuracy``.
  """
  fake = np.asarray(fake, np.float32)
  if fake.ndim != 4 or fake.shape[1:] != dataset.image_shape:
    raise ValueError(f"fake must be (M, {', '.join(map(str, dataset.image_shape))}) images, "
                     f"got shape {fake.shape}.")
  probs, feats = model.predict(fake)
  _, train_feats = model.predict(unit_images(dataset.train_images))
  _, test_feats = model.predict(unit_images(dataset.test_images))
  ref = clf.feature_statistics(train_feats)
  cov = clf.class_coverage(probs)
  return {
      "classes_covered": cov["classes_covered"],
      "class_kl": cov["class_kl"],
      "class_histogram": cov["histogram"],
      "confident_fraction": cov["confident_fraction"],
      "frechet_classifier_distance": clf.frechet_distance(*clf.feature_statistics(feats), *ref),
      "frechet_classifier_distance_test_vs_train": clf.frechet_distance(
          *clf.feature_statistics(test_feats), *ref),
      "classifier_test_accuracy": model.test_accuracy,
  }
