"""Every example in a public docstring runs and prints what it says."""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import dgmjax

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(dgmjax.__path__, "dgmjax.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  opts = np.get_printoptions()
  try:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  finally:
    np.set_printoptions(**opts)
  assert result.failed == 0, f"{result.failed} failing example(s) in {name}"


def test_every_loss_module_has_examples():
  for name in MODULES:
    if name.startswith("dgmjax.losses."):
      module = importlib.import_module(name)
      finder = doctest.DocTestFinder()
      examples = sum(len(t.examples) for t in finder.find(module))
      assert examples >= 3, f"{name} has {examples} docstring examples"
