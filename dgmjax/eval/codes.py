"""How a discrete model uses its codes: perplexity and dead codes over a split.

One summary for every discrete latent in the project: the VQ-VAE's codebook
(one histogram), and the categorical VAE's or dVAE's latent variables (one
histogram per variable, plus the pool of all of them). The perplexity is
:func:`dgmjax.losses.vq.perplexity` of the *global* histogram, never a mean of
per-batch or per-device perplexities.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array

from dgmjax import _checks
from dgmjax.losses import vq


def code_histogram(indices: Array, num_codes: int) -> Array:
  """Per-example code counts: ``(B, ...)`` integer indices -> ``(B, K)`` float32.

  The mean of these over a split, times N, is the split's code histogram;
  an evaluation returns them so that the harness reduces them like any other
  per-example value.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.eval import codes
    >>> print(codes.code_histogram(jnp.array([[0, 2, 2]]), 4))
    [[1. 0. 2. 0.]]
  """
  _checks.check_integer("indices", indices)
  _checks.check_min_rank("indices", indices, 1)
  _checks.check_int_at_least("num_codes", num_codes, 2)
  flat = jnp.reshape(indices, (indices.shape[0], -1))
  return jnp.sum(jnp.asarray(flat[..., None] == jnp.arange(num_codes), jnp.float32), axis=1)


def variable_histograms(indices: Array, num_codes: int) -> Array:
  """Per-example one-hot codes of every latent variable: ``(B, V)`` -> ``(B, V, K)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from dgmjax.eval import codes
    >>> print(codes.variable_histograms(jnp.array([[1, 0]]), 2)[0])
    [[0. 1.]
     [1. 0.]]
  """
  _checks.check_integer("indices", indices)
  _checks.check_min_rank("indices", indices, 1)
  _checks.check_int_at_least("num_codes", num_codes, 2)
  flat = jnp.reshape(indices, (indices.shape[0], -1))
  return jnp.asarray(flat[..., None] == jnp.arange(num_codes), jnp.float32)


def usage_summary(counts: np.ndarray, *, prefix: str = "test/") -> dict:
  """Perplexity and usage of a code histogram, ``(K,)`` or per variable ``(V, K)``.

  For one histogram: ``perplexity`` = exp(entropy) (1 … K) and
  ``codes_used``, the fraction of codes seen at least once. For ``(V, K)``
  (one histogram per latent variable): ``code_perplexity``, the mean over
  variables; ``codes_used`` over (variable, code) pairs;
  ``constant_variables``, variables whose perplexity is 1 (unused);
  ``codebook_perplexity`` / ``codebook_used`` of the pooled histogram.

  Example:
    >>> import numpy as np
    >>> from dgmjax.eval import codes
    >>> s = codes.usage_summary(np.array([5.0, 5.0, 0.0, 0.0]))
    >>> round(s["test/perplexity"], 4), s["test/codes_used"]
    (2.0, 0.5)
  """
  counts = np.asarray(counts, np.float64)
  if counts.ndim not in (1, 2) or counts.shape[-1] < 2:
    raise ValueError(f"counts must be (K,) or (V, K) with K >= 2, got shape {counts.shape}.")
  if not np.all(np.isfinite(counts)) or np.any(counts < 0):
    raise ValueError("counts must be finite and non-negative.")
  ppl = np.asarray(vq.perplexity(jnp.asarray(counts, jnp.float32)), np.float64)
  if counts.ndim == 1:
    return {f"{prefix}perplexity": float(ppl), f"{prefix}codes_used": float((counts > 0).mean())}
  pooled = counts.sum(0)
  out = {
      f"{prefix}code_perplexity": float(ppl.mean()),
      f"{prefix}codes_used": float((counts > 0).mean()),
      f"{prefix}constant_variables": int((ppl < 1.0 + 1e-5).sum()),
      f"{prefix}codebook_perplexity": float(vq.perplexity(jnp.asarray(pooled, jnp.float32))),
      f"{prefix}codebook_used": float((pooled > 0).mean()),
  }
  if counts.shape[0] <= 64:
    out[f"{prefix}code_perplexity_per_variable"] = [round(float(v), 3) for v in ppl]
  return out
