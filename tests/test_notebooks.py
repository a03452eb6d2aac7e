"""The Colab notebooks in ``colab/``: committed clean, in sync, and runnable.

Every notebook is executed top to bottom with nbclient in tiny mode
(``DGMJAX_NOTEBOOK_TINY=1``: small nets, a few dozen steps, offline digits, no
download) on the CPU, in a fresh kernel of this interpreter whose working
directory is a temporary folder. A failing cell fails the test with that
cell's traceback. Each notebook's last cell prints ``RESULT {json}``; the
figures in it are checked for sense (finite, in range, the loss went down).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os

import nbformat
import pytest
import tests_support
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "colab")
NOTEBOOKS = sorted(f for f in os.listdir(COLAB) if f.endswith(".ipynb"))


def _finite(*values) -> bool:
  return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _check_vqvae(r):
  assert 0.0 < r["test/mse"] < 1.0
  assert 0.0 < r["test/nmse"] < 2.0
  assert 1.0 <= r["test/perplexity"] <= r["num_codes"] + 1e-6
  assert 0.0 < r["test/codes_used"] <= 1.0


def _check_dvae(r):
  assert _finite(*r.values())
  assert r["test/neg_elbo"] > 0 and r["test/neg_iwae"] > 0
  assert r["test/kl"] >= -1e-4  # KL to the uniform prior
  assert r["test/neg_elbo"] == pytest.approx(r["test/recon"] + r["test/kl"], rel=1e-4)
  assert 1.0 <= r["test/code_perplexity"]


def _check_vae(r):
  assert set(r) == {"gaussian", "flow"}
  for terms in r.values():
    assert _finite(*terms.values())
    # ELBO surgery: avg KL = MI + marginal KL, 0 <= MI <= log N.
    assert terms["avg_kl"] == pytest.approx(terms["mutual_info"] + terms["marginal_kl"], abs=1e-3)
    assert -1e-3 <= terms["mutual_info"] <= terms["log_n"] + 1e-3
    assert terms["elbo"] == pytest.approx(terms["rec"] - terms["avg_kl"], abs=1e-3)
    assert terms["elbo"] < 0 and terms["iwae"] < 0


def _check_gan(r):
  assert set(r["ring"]) == {"non_saturating", "minimax"}
  for s in r["ring"].values():
    assert isinstance(s["modes_covered"], int) and 0 <= s["modes_covered"] <= 8
    assert s["num_modes"] == 8
    assert 0.0 <= s["high_quality_fraction"] <= 1.0
  # Forward KL covers both modes (moment matching), reverse KL sits on one.
  for a, fits in r["kl_vs_jsd"].items():
    a = float(a)
    mu_f, sigma_f, _ = fits["forward KL(pi||p)"]
    mu_r, sigma_r, _ = fits["reverse KL(p||pi)"]
    assert abs(mu_f) < 0.1 and sigma_f == pytest.approx(math.sqrt(a * a + 0.25), rel=0.05)
    assert abs(abs(mu_r) - a) < 0.2 and sigma_r == pytest.approx(0.5, rel=0.2)
    assert all(_finite(*f) and 0.0 <= f[2] for f in fits.values())
  d = r["digits"]
  assert isinstance(d["classes_covered"], int) and 0 <= d["classes_covered"] <= 10
  assert _finite(d["class_kl"], d["frechet_classifier_distance"])


def _check_avb(r):
  for s in r["toy"].values():
    assert _finite(*s.values())
    # log p(x) of a binary image is <= 0 and, for a uniform-ish start, not far below log(1/16).
    assert -6.0 < s["test/log_px_grid"] <= 0.0
  assert _finite(*r["digits"].values()) and r["digits"]["test/log_px_grid"] < 0


def _check_token_prior(r):
  # The prior beats the uniform code over the tokenizer's K codes.
  assert _finite(r["bits_per_token"]) and 0 < r["bits_per_token"] < r["uniform_bits_per_token"]
  for s in (r, r["sharp"]):
    assert isinstance(s["classes_covered"], int) and 0 <= s["classes_covered"] <= 10
    assert _finite(s["class_kl"], s["frechet_classifier_distance"])
    assert 0 <= s["class_kl"] <= math.log(10) + 1e-6 and s["frechet_classifier_distance"] >= 0
  assert r["sample/images_per_sec"] > 0


def _check_losses(r):
  for first, last in r.values():
    assert _finite(first, last)
    assert last < first


CHECKS = {
    "vqvae.ipynb": _check_vqvae,
    "dvae.ipynb": _check_dvae,
    "vae_surgery_flow.ipynb": _check_vae,
    "gan_mode_collapse.ipynb": _check_gan,
    "avb.ipynb": _check_avb,
    "token_prior.ipynb": _check_token_prior,
    "losses_in_your_code.ipynb": _check_losses,
}


def _read(name: str) -> nbformat.NotebookNode:
  return nbformat.read(os.path.join(COLAB, name), as_version=4)


def test_every_notebook_has_a_check():
  assert sorted(CHECKS) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
  nb = _read(name)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code
  for cell in code:
    assert cell.outputs == [], f"{name}: cell {cell.id} has outputs"
    assert cell.execution_count is None, f"{name}: cell {cell.id} has an execution count"


def test_committed_notebooks_match_the_generator():
  spec = importlib.util.spec_from_file_location("colab_build", os.path.join(COLAB, "_build.py"))
  build = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(build)
  built = build.build()
  assert sorted(built) == NOTEBOOKS
  for name, nb in built.items():
    committed = _read(name)
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in nb.cells], (
        f"{name} is stale: run python colab/_build.py")


def _kernel_env() -> dict:
  env = dict(os.environ)
  env["DGMJAX_NOTEBOOK_TINY"] = "1"
  env["JAX_PLATFORMS"] = "cpu"
  # Two fake devices: the notebooks' batches really are sharded, at little cost.
  env["JAX_NUM_CPU_DEVICES"] = "2"
  env["XLA_FLAGS"] = tests_support.xla_flags(2)
  env.pop("MPLBACKEND", None)  # a test runner's backend may not exist in the kernel
  return env


def _result(nb: nbformat.NotebookNode) -> dict:
  found = None
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      if out.get("output_type") == "stream" and out.get("name") == "stdout":
        for line in out["text"].splitlines():
          if line.startswith("RESULT "):
            found = json.loads(line[len("RESULT "):])
  assert found is not None, "the notebook printed no RESULT line"
  return found


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_tiny_mode(name, tmp_path):
  nb = _read(name)
  client = NotebookClient(
      nb, timeout=600, kernel_name="python3", allow_errors=False,
      resources={"metadata": {"path": str(tmp_path)}})
  try:
    client.execute(env=_kernel_env())
  except CellExecutionError as e:  # names the cell and carries its traceback
    pytest.fail(f"{name}: a cell failed\n{e}", pytrace=False)
  CHECKS[name](_result(nb))
