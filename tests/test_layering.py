"""Layering (issue 13): bench/ and colab/ use only the trainers' public entry points.

A trainer module ``train.<name>`` is config + model wiring + loss; what
``bench/*.py``, ``colab/_build.py`` and the notebooks' code cells may take from
it is ``get_config`` and ``train_and_evaluate``. Everything else (models,
estimators, images, plots, data formatting) comes from ``dgmjax``. And the
library never imports the trainers: no module under ``dgmjax/`` imports
``train``.

The check parses imports with :mod:`ast` and follows the names a trainer
module is bound to (``from train import vqvae``, ``import train.vqvae as vq``,
``import train``), per function scope, flagging

* ``from train.<x> import <name>`` for any other name,
* ``from train import harness`` (or ``state``, ``images``, ...: any
  ``train`` submodule that is not a trainer), ``import train.harness``,
* ``<trainer>.<attr>`` (and ``train.<trainer>.<attr>``) for any other attribute,
  and ``getattr(<trainer>, "<attr>")``.

The checker is also run on sources that break the rule (the old
``bench/avb_mnist.py`` among them), which it must flag.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED = frozenset({"get_config", "train_and_evaluate"})


def _trainers() -> frozenset[str]:
  """The trainer modules of ``train/``: those that define ``train_and_evaluate``."""
  names = set()
  for path in glob.glob(os.path.join(ROOT, "train", "*.py")):
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    if any(isinstance(n, ast.FunctionDef) and n.name == "train_and_evaluate"
           for n in tree.body) and os.path.basename(path) != "harness.py":
      names.add(os.path.basename(path)[:-3])
  return frozenset(names)


TRAINERS = _trainers()


class _Checker(ast.NodeVisitor):
  """Collects ``(line, message)`` for every use of a trainer's internals.

  ``scopes`` maps a local name to what it is bound to: ``("trainer", x)`` for
  the module ``train.x``, ``("train",)`` for the package ``train`` itself.
  A function (or lambda, class, comprehension) sees its enclosing scopes; a
  rebinding of the name (assignment, another import) hides the trainer.
  """

  def __init__(self, trainers: frozenset[str]):
    self.trainers = trainers
    self.scopes: list[dict[str, tuple]] = [{}]
    self.problems: list[tuple[int, str]] = []

  # -- scopes ----------------------------------------------------------------
  def _lookup(self, name: str):
    for scope in reversed(self.scopes):
      if name in scope:
        return scope[name]
    return None

  def _bind(self, name: str, what) -> None:
    self.scopes[-1][name] = what

  def _scoped(self, node) -> None:
    self.scopes.append({})
    self.generic_visit(node)
    self.scopes.pop()

  visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = _scoped
  visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _scoped

  def visit_Name(self, node: ast.Name) -> None:
    if isinstance(node.ctx, (ast.Store, ast.Del)):
      self._bind(node.id, None)

  def visit_arg(self, node: ast.arg) -> None:
    self._bind(node.arg, None)

  # -- imports ---------------------------------------------------------------
  def _flag(self, node, message: str) -> None:
    self.problems.append((node.lineno, message))

  def visit_Import(self, node: ast.Import) -> None:
    for alias in node.names:
      parts = alias.name.split(".")
      if parts[0] != "train":
        self._bind(alias.asname or parts[0], None)
        continue
      if len(parts) >= 2 and parts[1] not in self.trainers:
        self._flag(node, f"import {alias.name}: '{parts[1]}' is not a trainer module "
                         f"(use dgmjax instead)")
      elif len(parts) > 2:
        self._flag(node, f"import {alias.name}: inside a trainer module")
      if alias.asname:
        self._bind(alias.asname, ("trainer", parts[1]) if len(parts) == 2 else None)
      else:
        self._bind("train", ("train",))

  def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
    module = node.module or ""
    parts = module.split(".")
    if node.level or parts[0] != "train":
      for alias in node.names:
        self._bind(alias.asname or alias.name, None)
      return
    if len(parts) == 1:  # from train import <x>
      for alias in node.names:
        if alias.name in self.trainers:
          self._bind(alias.asname or alias.name, ("trainer", alias.name))
        else:
          self._flag(node, f"from train import {alias.name}: '{alias.name}' is not a "
                           f"trainer module (use dgmjax instead)")
          self._bind(alias.asname or alias.name, None)
      return
    for alias in node.names:
      if parts[1] not in self.trainers:
        self._flag(node, f"from {module} import {alias.name}: '{parts[1]}' is not a "
                         f"trainer module (use dgmjax instead)")
      elif len(parts) > 2 or alias.name not in ALLOWED:
        self._flag(node, f"from {module} import {alias.name}: only "
                         f"{sorted(ALLOWED)} may come from a trainer")
      self._bind(alias.asname or alias.name, None)

  # -- uses ------------------------------------------------------------------
  def _trainer_of(self, node) -> str | None:
    """The trainer a node stands for: ``x`` (bound to it) or ``train.x``."""
    if isinstance(node, ast.Name):
      what = self._lookup(node.id)
      return what[1] if what and what[0] == "trainer" else None
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and self._lookup(node.value.id) == ("train",)):
      return node.attr if node.attr in self.trainers else None
    return None

  def visit_Attribute(self, node: ast.Attribute) -> None:
    trainer = self._trainer_of(node.value)
    if trainer is not None and node.attr not in ALLOWED:
      self._flag(node, f"{trainer}.{node.attr}: only {sorted(ALLOWED)} of a trainer "
                       f"(train.{trainer}) may be used")
    elif (trainer is None and isinstance(node.value, ast.Name)
          and self._lookup(node.value.id) == ("train",) and node.attr not in self.trainers):
      self._flag(node, f"train.{node.attr}: not a trainer module (use dgmjax instead)")
    self.generic_visit(node)

  def visit_Call(self, node: ast.Call) -> None:
    if (isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2
        and self._trainer_of(node.args[0]) is not None):
      name = node.args[1]
      if not (isinstance(name, ast.Constant) and name.value in ALLOWED):
        self._flag(node, f"getattr({self._trainer_of(node.args[0])}, ...): only "
                         f"{sorted(ALLOWED)} of a trainer may be used")
    self.generic_visit(node)


def trainer_violations(sources: list[str] | str, name: str = "<source>",
                       trainers: frozenset[str] = TRAINERS) -> list[str]:
  """``"name:line: message"`` for every use of a trainer's internals.

  ``sources`` is one module's text, or a notebook's code cells in order
  (parsed one by one in a shared global scope; ``name`` then gets ``[cell i]``).
  """
  cells = [sources] if isinstance(sources, str) else list(sources)
  checker = _Checker(trainers)
  out = []
  for i, src in enumerate(cells):
    where = name if isinstance(sources, str) else f"{name} [code cell {i}]"
    # Notebook magics and shell lines are not Python.
    src = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln
                    for ln in src.splitlines())
    try:
      tree = ast.parse(src, where)
    except SyntaxError as e:
      out.append(f"{where}:{e.lineno}: does not parse: {e.msg}")
      continue
    checker.problems = []
    checker.visit(tree)
    out += [f"{where}:{line}: {msg}" for line, msg in checker.problems]
  return out


def train_imports(source: str, name: str = "<source>") -> list[str]:
  """``"name:line: ..."`` for every import of the ``train`` package in a module."""
  out = []
  for node in ast.walk(ast.parse(source, name)):
    if isinstance(node, ast.Import):
      out += [f"{name}:{node.lineno}: import {a.name}" for a in node.names
              if a.name.split(".")[0] == "train"]
    elif isinstance(node, ast.ImportFrom) and not node.level and node.module and (
        node.module.split(".")[0] == "train"):
      out.append(f"{name}:{node.lineno}: from {node.module} import "
                 + ", ".join(a.name for a in node.names))
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "import_module" and node.args
          and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
          and node.args[0].value.split(".")[0] == "train"):
      out.append(f"{name}:{node.lineno}: import_module({node.args[0].value!r})")
  return out


def _read(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def _rel(path: str) -> str:
  return os.path.relpath(path, ROOT)


BENCH = sorted(glob.glob(os.path.join(ROOT, "bench", "*.py")))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colab", "*.ipynb")))
LIBRARY = sorted(glob.glob(os.path.join(ROOT, "dgmjax", "**", "*.py"), recursive=True))


def test_the_trainers_are_found():
  assert {"vqvae", "dvae", "vae", "gan", "avb"} <= TRAINERS
  assert not {"harness", "state", "checkpoints", "cli", "workdir"} & TRAINERS


@pytest.mark.parametrize("path", [*BENCH, os.path.join(ROOT, "colab", "_build.py")], ids=_rel)
def test_bench_and_colab_build_use_only_public_trainer_functions(path):
  problems = trainer_violations(_read(path), _rel(path))
  assert not problems, "trainer internals used:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_rel)
def test_notebook_code_cells_use_only_public_trainer_functions(path):
  nb = json.loads(_read(path))
  cells = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
           for c in nb["cells"] if c["cell_type"] == "code"]
  assert cells
  problems = trainer_violations(cells, _rel(path))
  assert not problems, "trainer internals used:\n" + "\n".join(problems)


def test_the_library_does_not_import_the_trainers():
  assert LIBRARY
  problems = [p for path in LIBRARY for p in train_imports(_read(path), _rel(path))]
  assert not problems, "dgmjax imports train:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------
# The checkers flag what they should
# ----------------------------------------------------------------------------
ALLOWED_SOURCES = [
    "from train import vqvae\nc = vqvae.get_config()\nvqvae.train_and_evaluate(c, 'w')\n",
    "import train.vqvae as vq\nvq.train_and_evaluate(vq.get_config(), 'w')\n",
    "import train.avb\ntrain.avb.train_and_evaluate(train.avb.get_config(), 'w')\n",
    "from train.avb import get_config, train_and_evaluate\n",
    # A local variable of the same name as a trainer is not the trainer.
    "from train import vae\ndef f(vae):\n  return vae.encode\n",
    "from train import vae\nvae = object()\nvae.encode\n",
    "from dgmjax.models import vae\nvae.make_vae\n",
]

BAD_SOURCES = [
    ("from train import harness\n", "from train import harness"),
    ("from train import avb, state\n", "from train import state"),
    ("from train.images import save_png\n", "from train.images import save_png"),
    ("from train.gan import line_plot\n", "from train.gan import line_plot"),
    ("import train.harness\n", "import train.harness"),
    ("from train import dvae\nf(dvae.make_task)\n", "dvae.make_task"),
    ("def g():\n  from train import vae\n  return vae.load_trained('w')\n", "vae.load_trained"),
    ("import train.vqvae as vq\nvq.make_task\n", "vqvae.make_task"),
    ("import train\ntrain.avb.importance_log_marginal\n", "avb.importance_log_marginal"),
    ("import train\ntrain.harness.formatted\n", "train.harness"),
    ("from train import gan\ngetattr(gan, 'line_plot')\n", "getattr(gan"),
]


@pytest.mark.parametrize("source", ALLOWED_SOURCES)
def test_checker_allows_the_public_functions(source):
  assert trainer_violations(source) == []


@pytest.mark.parametrize("source, flagged", BAD_SOURCES)
def test_checker_flags_internals(source, flagged):
  problems = trainer_violations(source, "bad.py")
  assert problems and any(flagged in p for p in problems), problems
  assert all(p.startswith("bad.py:") for p in problems)


def test_checker_follows_trainers_across_notebook_cells():
  problems = trainer_violations(["from train import vqvae\n", "x = 1\nvqvae.make_task\n"],
                                "nb.ipynb")
  assert problems == ["nb.ipynb [code cell 1]:2: vqvae.make_task: only ['get_config', "
                      "'train_and_evaluate'] of a trainer (train.vqvae) may be used"]


def test_checker_flags_the_old_avb_mnist_bench():
  """The version before issue 13 scored a train.vae model with train.avb internals."""
  try:
    old = subprocess.run(["git", "show", "4aa45e8:bench/avb_mnist.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    pytest.skip("no git history here")
  problems = "\n".join(trainer_violations(old, "avb_mnist.py"))
  for name in ("from train import harness", "vae.load_trained", "avb.importance_log_marginal"):
    assert name in problems, problems
  assert "avb_mnist.py:63:" in problems  # file and line of `from train import avb, harness, vae`


def test_train_imports_flags_the_library_importing_train():
  src = "import os\nfrom train import harness\nimport train.vae as v\nimport importlib\n" \
        "importlib.import_module('train.gan')\nfrom .images import make_grid\n"
  assert train_imports(src, "lib.py") == [
      "lib.py:2: from train import harness", "lib.py:3: import train.vae",
      "lib.py:5: import_module('train.gan')"]
