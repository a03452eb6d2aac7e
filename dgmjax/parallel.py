"""Helpers for steps that run per device under ``shard_map`` or ``pmap``.

The pitfall these exist for: inside ``jax.shard_map`` (with its default
``check_vma=True``), the gradient of a per-device loss with respect to a
*replicated* parameter is summed over devices automatically, while under
``check_vma=False`` or ``pmap`` it is the local gradient. Calling
``lax.pmean`` on the gradients is right in one mode and gives N× the mean
gradient in the other. :func:`as_local` marks the parameters as varying over
the axis first, so the gradient is always local and one explicit
:func:`mean_over` gives the global mean in every mode.
"""

from __future__ import annotations

from typing import Any

import jax

PyTree = Any


def as_local(tree: PyTree, axis_name: str | None) -> PyTree:
  """Mark a replicated PyTree as per-device before differentiating it."""
  if axis_name is None:
    return tree
  return jax.tree.map(lambda x: jax.lax.pcast(x, axis_name, to="varying"), tree)


def mean_over(tree: PyTree, axis_name: str | None) -> PyTree:
  """``lax.pmean`` over ``axis_name``, or the identity when it is None."""
  if axis_name is None:
    return tree
  return jax.lax.pmean(tree, axis_name)
