"""Read a finished trainer run (config, summary, latest state) without the trainers.

A workdir written by ``train.<name>`` holds ``config.json``, ``summary.json``
and Orbax checkpoints ``checkpoints/<step>/state``. :func:`load_run` reads
them back as plain Python and NumPy, so a benchmark or notebook can rebuild
the model from :mod:`dgmjax.models` / :mod:`dgmjax.nn` with the run's config
and apply it to the restored parameters, with no trainer code involved.

The state is restored *without* a target: its containers come back as nested
dicts keyed by the field names of the saved state (``params``, ``opt_state``,
``step``, ``rng``, ``extra`` for a train state; ``{"gen", "disc"}`` or
``{"model", "disc"}`` around them for the two-player trainers), every array a
NumPy array. Parameters are nested dicts already; a part that was a
NamedTuple or dataclass (e.g. the VQ-VAE's EMA codebook state) is put back
into its type by :func:`conform` with a template from ``jax.eval_shape``. The newest checkpoint that restores is used; an unreadable newer
one is skipped with a warning (the trainers' own resume also checks each
checkpoint's manifest and sets damaged ones aside; this reader changes
nothing in the workdir).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import jax
import numpy as np

__all__ = ["Run", "conform", "load_run", "read_config", "read_summary"]


@dataclasses.dataclass(frozen=True)
class Run:
  """A trainer run read back from its workdir.

  Attributes:
    workdir: the absolute path.
    config: ``config.json`` as a dict, JSON lists turned back into tuples
      (the trainers' configs hold layer widths as tuples).
    summary: ``summary.json``, or None while the run has not finished.
    step: the step of the restored checkpoint.
    state: the checkpointed state as nested dicts of NumPy arrays.
  """

  workdir: str
  config: dict[str, Any]
  summary: dict[str, Any] | None
  step: int
  state: Any


def _tuples(value: Any) -> Any:
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def read_config(workdir: str) -> dict[str, Any]:
  """``<workdir>/config.json`` with lists as tuples; one clear error if it is missing."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"workdir {workdir!r} holds no config.json: not a trainer run.")
  with open(path) as f:
    return _tuples(json.load(f))


def read_summary(workdir: str) -> dict[str, Any] | None:
  """``<workdir>/summary.json``, or None if the run has not written it."""
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _steps(directory: str) -> list[int]:
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted((int(n) for n in names if n.isdigit()
                 and os.path.isdir(os.path.join(directory, n, "state"))), reverse=True)


def _to_numpy(tree: Any) -> Any:
  def leaf(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return x  # a typed key stays a key
    return np.asarray(x) if hasattr(x, "shape") else x

  return jax.tree.map(leaf, tree)


def load_run(workdir: str) -> Run:
  """The config, summary and newest restorable checkpoint of a trainer's workdir.

  Args:
    workdir: the ``--workdir`` of a ``train.<name>`` run.

  Returns:
    A :class:`Run`.

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint in the workdir.
    ValueError: no checkpoint of the workdir could be restored.

  Example:
    >>> import tempfile
    >>> try:
    ...   load_run(tempfile.mkdtemp())
    ... except FileNotFoundError as e:
    ...   print("no config.json" in str(e))
    True
  """
  import orbax.checkpoint as ocp

  config = read_config(workdir)
  folder = os.path.join(workdir, "checkpoints")
  steps = _steps(folder)
  if not steps:
    raise FileNotFoundError(f"workdir {workdir!r} holds no checkpoint under checkpoints/.")
  problems = []
  for step in steps:
    try:
      with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore(os.path.abspath(os.path.join(folder, str(step), "state")))
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many kinds
      problems.append(f"step {step}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
      print(f"warning: checkpoint step {step} of {workdir} cannot be read; trying an older one.",
            file=sys.stderr, flush=True)
      continue
    return Run(os.path.abspath(workdir), config, read_summary(workdir), step, _to_numpy(state))
  raise ValueError(f"no checkpoint of {workdir!r} could be restored ({'; '.join(problems)}).")


def _child(node: Any, entry: Any, where: str) -> Any:
  key = getattr(entry, "key", None)
  if key is None:
    key = getattr(entry, "name", None)
  if key is None:
    key = getattr(entry, "idx", None)
  try:
    if isinstance(node, (list, tuple)):
      return node[int(key)]
    return node[key] if isinstance(node, dict) else getattr(node, key)
  except (KeyError, IndexError, AttributeError, TypeError, ValueError):
    raise ValueError(f"the saved tree has no {where or 'root'}/{key}.") from None


def conform(saved: Any, template: Any) -> Any:
  """``saved`` (nested dicts/lists from :func:`load_run`) in the structure of ``template``.

  Each leaf of ``template`` (arrays or ``jax.ShapeDtypeStruct``, e.g. from
  ``jax.eval_shape(module.init, ...)``) is looked up in ``saved`` by its path:
  dict keys, attribute names of NamedTuples and dataclasses, sequence
  indices. Shapes must agree.

  Args:
    saved: a restored subtree, e.g. ``run.state["extra"]``.
    template: the tree whose structure and shapes the result has.

  Returns:
    ``template``'s structure holding ``saved``'s arrays.

  Raises:
    ValueError: a path of ``template`` is missing in ``saved``, or a shape differs.

  Example:
    >>> from typing import NamedTuple
    >>> class Ema(NamedTuple):
    ...   codebook: np.ndarray
    ...   counts: np.ndarray
    >>> saved = {"counts": np.ones(2), "codebook": np.zeros((2, 3))}
    >>> out = conform(saved, Ema(np.empty((2, 3)), np.empty(2)))
    >>> print(type(out).__name__, out.codebook.shape, out.counts)
    Ema (2, 3) [1. 1.]
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
  out = []
  for path, want in leaves:
    node, where = saved, ""
    for entry in path:
      node = _child(node, entry, where)
      where += jax.tree_util.keystr((entry,))
    if tuple(np.shape(node)) != tuple(np.shape(want)):
      raise ValueError(f"saved{where} has shape {np.shape(node)}, the template "
                       f"{np.shape(want)}.")
    out.append(node)
  return jax.tree_util.tree_unflatten(treedef, out)
