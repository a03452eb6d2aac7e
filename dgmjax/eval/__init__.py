"""Estimators that score a trained model over a whole data split.

Likelihood bounds (IWAE, importance sampling, exact grids), the ELBO-surgery
report, code-usage summaries. Pure JAX over a model's methods; no trainer
imports.
"""

import jax as _jax


def example_keys(key: _jax.Array, index: _jax.Array) -> _jax.Array:
  """One key per example, a pure function of ``key`` and the example's index.

  Evaluations that fold each example's position in its split into the key
  draw the same noise for that example whatever the batch size, padding or
  device count.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from dgmjax.eval import example_keys
    >>> k = jax.random.key(0)
    >>> a = example_keys(k, jnp.arange(4))
    >>> b = example_keys(k, jnp.arange(2, 4))
    >>> print(bool(jnp.all(jax.random.key_data(a[2:]) == jax.random.key_data(b))))
    True
  """
  return _jax.vmap(lambda i: _jax.random.fold_in(key, i))(index)
