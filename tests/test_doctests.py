"""Every example in a public docstring runs and prints what it says.

Only modules that hold examples are collected (a module without any would
pass by construction); the second test says which modules must hold them.
"""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import dgmjax

MODULES = sorted(m.name for m in pkgutil.walk_packages(dgmjax.__path__, "dgmjax."))
# Modules a user calls directly: each shows at least one runnable example
# (losses at least three). Data loaders read files, so they are tested in
# tests/test_data.py instead.
NEED_EXAMPLES = ("dgmjax.losses.", "dgmjax.models.", "dgmjax.eval.", "dgmjax.metrics.",
                 "dgmjax.nn.", "dgmjax.sampling", "dgmjax.plots", "dgmjax.images")


def _examples(name: str) -> int:
  module = importlib.import_module(name)
  return sum(len(t.examples) for t in doctest.DocTestFinder().find(module))


WITH_EXAMPLES = [m for m in MODULES if _examples(m)]


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  opts = np.get_printoptions()
  try:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  finally:
    np.set_printoptions(**opts)
  assert result.attempted > 0
  assert result.failed == 0, f"{result.failed} failing example(s) in {name}"


def test_public_modules_have_examples():
  missing = []
  for name in MODULES:
    if not name.startswith(NEED_EXAMPLES) or importlib.import_module(name).__file__.endswith(
        "__init__.py"):
      continue
    need = 3 if name.startswith("dgmjax.losses.") else 1
    if _examples(name) < need:
      missing.append(f"{name} ({_examples(name)} < {need})")
  assert not missing, "modules without enough docstring examples: " + ", ".join(missing)
