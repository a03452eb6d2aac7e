"""Build the notebooks in ``colab/`` from the cell sources below.

The notebooks are committed without outputs; edit this file, then run

    python colab/_build.py

to rewrite every ``colab/*.ipynb`` (``--check`` only reports notebooks that
differ from what this file builds). ``tests/test_notebooks.py`` runs every
notebook top to bottom in tiny mode (``DGMJAX_NOTEBOOK_TINY=1``) and checks
that the committed files match this script.

Conventions every notebook follows:

* the first code cell holds the settings a user edits (``REPO_URL``,
  ``WORKDIR``, ...), and reads ``DGMJAX_NOTEBOOK_TINY``;
* an install cell installs dgmjax from ``REPO_URL`` when it is missing;
* tiny overrides sit in a visible cell of their own;
* the last cell prints ``RESULT {json}``, which the tests parse.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

import nbformat
from nbformat import v4

HERE = os.path.dirname(os.path.abspath(__file__))


def _src(text: str) -> str:
  return textwrap.dedent(text).strip("\n")


def md(text: str) -> tuple[str, str]:
  return ("markdown", _src(text))


def code(text: str) -> tuple[str, str]:
  return ("code", _src(text))


# ----------------------------------------------------------------------------
# Cells shared by the trainer notebooks
# ----------------------------------------------------------------------------
def settings(name: str, extra: str = "") -> tuple[str, str]:
  body = f'''
  # Settings: edit these, then run all cells (Colab: Runtime > Run all).
  import os

  # Where dgmjax lives; used only when `import dgmjax` fails (pip installs it from there).
  REPO_URL = "https://github.com/<you>/dgmjax"
  WORKDIR = "runs/{name}"  # checkpoints, metrics.jsonl, summary.json and images/ of the run(s)
  FRESH = True  # True: delete WORKDIR first; False: resume (or re-evaluate) the run saved there
  USE_FULL_MNIST = True  # prepare the full TFDS MNIST when there is network, else offline digits
  DATA_DIR = os.path.expanduser("~/tensorflow_datasets")  # TFDS data is prepared and read here
  # Tiny mode: a smoke run of about 25 s on a CPU (the project's tests run every notebook so).
  TINY = os.environ.get("DGMJAX_NOTEBOOK_TINY", "") not in ("", "0")
  '''
  if extra:
    body += extra
  body += '''
  print("tiny mode: small nets, a few steps" if TINY else "full mode")
  '''
  return code(body)


INSTALL = code('''
  # Install dgmjax if it is missing (from REPO_URL, with the `prepare` extra for TFDS).
  import importlib
  import importlib.util
  import socket
  import subprocess
  import sys


  def has_network(host="pypi.org", port=443, timeout=3.0):
    if TINY:  # tiny mode never downloads anything
      return False
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      return True
    except OSError:
      return False


  def checkout_root():
    """A dgmjax source checkout around the notebook (running from colab/ in a clone)."""
    for root in (os.getcwd(), os.path.dirname(os.getcwd())):
      if os.path.isfile(os.path.join(root, "dgmjax", "__init__.py")) and os.path.isdir(
          os.path.join(root, "train")):
        return root
    return None


  NETWORK = has_network()
  if importlib.util.find_spec("dgmjax") is None:
    root = checkout_root()
    if root is not None:
      sys.path.insert(0, root)
      print("using the dgmjax checkout in", root)
    elif not NETWORK:
      raise RuntimeError("dgmjax is not installed and there is no network: "
                         "pip install it from a copy of the repository, then run again.")
    elif "<you>" in REPO_URL:
      raise RuntimeError("dgmjax is not installed: set REPO_URL in the first cell to the "
                         "repository's URL, then run again.")
    else:
      extra = "[prepare]" if USE_FULL_MNIST else ""  # tensorflow, to prepare TFDS data
      spec = f"dgmjax{extra} @ git+{REPO_URL}"
      print("pip install", spec)
      subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", spec])
      importlib.invalidate_caches()
      # If an import below fails after this install: Runtime > Restart session, run all again.

  dgmjax = importlib.import_module("dgmjax")
  print("dgmjax from", os.path.dirname(dgmjax.__file__), "| network:", NETWORK)
''')

DEVICES_MD = md('''
  ## Devices

  The harness jits the train step over a 1-D `data` mesh of **all** devices: each batch is sharded
  along its leading axis, the state is replicated, and XLA inserts the gradient all-reduce. The same
  cell therefore uses one CPU, one GPU or all 8 cores of a Colab TPU with no change. `batch_size`
  (and `eval_batch_size`) must be a multiple of the device count; `multiple_of_devices` rounds them up.
''')

DEVICES = code('''
  import jax

  NDEV = jax.device_count()
  print(f"jax {jax.__version__}: backend {jax.default_backend()}, {NDEV} device(s)")
  for d in jax.devices():
    print("  ", d)


  def multiple_of_devices(n):
    """n rounded up to a multiple of the device count."""
    return -(-int(n) // NDEV) * NDEV
''')

DATA_MD = md('''
  ## Data

  With network (and `USE_FULL_MNIST`), the full MNIST is prepared once with TensorFlow Datasets in
  the `array_record` format (`tfds.builder('mnist').download_and_prepare(file_format='array_record')`)
  and read through `tfds.data_source`, which needs no TensorFlow: `dataset='tfds:mnist'`. Otherwise, and
  always in tiny mode, the trainers use the offline `digits`: 5000 real MNIST digits that ship inside a
  PyPI package (4500 train, 500 test).
''')

DATA = code('''
  from dgmjax.data import DatasetUnavailableError, load_tfds_images


  def choose_dataset():
    if TINY or not USE_FULL_MNIST:
      print("dataset: offline digits" + (" (tiny mode: no download)" if TINY else ""))
      return "digits"
    try:  # already prepared?
      load_tfds_images("mnist", "test", data_dir=DATA_DIR)
      print("dataset: tfds:mnist, prepared in", DATA_DIR)
      return "tfds:mnist"
    except DatasetUnavailableError as e:
      missing = e
    if not NETWORK or importlib.util.find_spec("tensorflow") is None:
      print(missing)  # how to prepare it
      print("no network or no tensorflow here: falling back to the offline digits")
      return "digits"
    try:
      import tensorflow_datasets as tfds

      print("preparing TFDS mnist in", DATA_DIR, "(once; needs tensorflow)")
      tfds.builder("mnist", data_dir=DATA_DIR).download_and_prepare(file_format="array_record")
      load_tfds_images("mnist", "test", data_dir=DATA_DIR)
      return "tfds:mnist"
    except Exception as e:  # download refused, disk full, ...
      print(f"could not prepare TFDS mnist ({type(e).__name__}: {e}); using the offline digits")
      return "digits"


  DATASET = choose_dataset()
''')

HELPERS = code('''
  # Helpers: a fresh work directory, the pictures and the summary of a run.
  import glob
  import json
  import re
  import shutil

  from IPython.display import Image, Markdown, display


  def fresh_workdir(path):
    if FRESH and os.path.exists(path):
      shutil.rmtree(path)
    return path


  def show_pictures(workdir, only=()):
    """The latest picture of each series in workdir/images (or those whose name has `only`)."""
    for path in sorted(glob.glob(os.path.join(workdir, "images", "*.png"))):
      name = os.path.basename(path)
      if re.search(r"_\\d{7}\\.png$", name):  # a picture of an intermediate step
        continue
      if name.endswith("_latest.png") and os.path.exists(path.replace("_latest.png", ".png")):
        continue  # the report drew the same picture at the end
      if only and not any(o in name for o in only):
        continue
      print(name)
      display(Image(filename=path))


  def show_summary(summary, keys=None):
    """Scalars of summary.json (the dict train_and_evaluate returns) as a Markdown table."""
    rows = [(k, v) for k, v in sorted(summary.items())
            if isinstance(v, (int, float)) and (keys is None or k in keys)]
    text = "| key | value |\\n|---|---|\\n" + "\\n".join(
        f"| {k} | {v:.5g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows)
    display(Markdown(text))
''')


HOW_TO_RUN = """
**Run it:** Colab > Runtime > Change runtime type (a GPU or TPU helps, a CPU works), set `REPO_URL`
in the first code cell, then Runtime > Run all. **Tiny mode:** with the environment variable
`DGMJAX_NOTEBOOK_TINY=1` every cell runs a smoke-sized version (small nets, a few dozen steps,
offline data, no download; about 25 s on a CPU). The overrides it applies sit in a cell of their
own and are printed.
"""


def trainer_header(title: str, text: str) -> tuple[str, str]:
  return ("markdown", f"# {title}\n\n{_src(text)}\n\n{_src(HOW_TO_RUN)}")


def result_cell(expr: str) -> tuple[str, str]:
  return code(f'''
  # One line the project's tests parse (tests/test_notebooks.py).
  RESULT = {expr}
  print("RESULT " + json.dumps(RESULT))
  ''')


# ----------------------------------------------------------------------------
# 1. VQ-VAE
# ----------------------------------------------------------------------------
def vqvae_nb():
  return [
      trainer_header("VQ-VAE on MNIST with dgmjax", '''
      A VQ-VAE (van den Oord et al. 2017; Lecture 7, "Deterministic variational posterior" and
      "Straight-through gradient estimation"): a conv encoder maps each image to a 7×7 grid of
      vectors, each is replaced by its nearest code of a K = 512 codebook, and the decoder sees
      `z_e + sg(z_q − z_e)`, so gradients pass straight through to the encoder. The codebook follows
      the encoder by EMA with dead-code restarts. Trained with `train.vqvae` through the shared
      harness; the run's pictures and `summary.json` are shown at the end.
      '''),
      settings("vqvae"),
      INSTALL, DEVICES_MD, DEVICES, DATA_MD, DATA, HELPERS,
      md('''
      ## Config

      `train.vqvae.get_config()` holds the defaults (2000 steps, batch 128, K = 512, D = 32, EMA
      decay 0.99, β = 0.25). Any key can be changed here, as `--config.key=value` would on the
      command line. The tiny overrides below apply only in tiny mode.
      '''),
      code('''
      from train import vqvae

      TINY_OVERRIDES = dict(
          num_steps=30, log_every=10, checkpoint_every=30, data_limit=512, batch_size=32,
          eval_batch_size=128, num_images=16, num_codes=64, code_dim=8, channels=(16, 16),
          res_hidden=8, num_res_blocks=1)

      config = vqvae.get_config()
      config.dataset = DATASET
      config.data_dir = DATA_DIR
      if TINY:
        config.update(TINY_OVERRIDES)
        print("tiny overrides:", TINY_OVERRIDES)
      config.batch_size = multiple_of_devices(config.batch_size)
      config.eval_batch_size = multiple_of_devices(config.eval_batch_size)
      print(config)
      '''),
      md('''
      ## Train

      `train_and_evaluate(config, workdir)` trains (or resumes from the last checkpoint in
      `workdir`), evaluates on the whole test split and returns what it writes to `summary.json`.
      Interrupting the cell saves a checkpoint; running it again with `FRESH = False` resumes.
      '''),
      code('''
      workdir = fresh_workdir(WORKDIR)
      summary = vqvae.train_and_evaluate(config, workdir)
      '''),
      md('''
      ## Results

      Test inputs above their reconstructions, and the code frequencies sorted (a flat histogram
      means the whole codebook is in use). `test/mse` is on [0, 1] pixels, `test/nmse` divides it by
      the pixel variance, `test/perplexity` is exp(entropy) of the global code histogram of the test
      split (K at most).
      '''),
      code('''
      show_pictures(workdir)
      show_summary(summary, ["test/mse", "test/nmse", "test/perplexity", "test/codes_used",
                             "num_codes", "num_params", "perf/steps_per_sec",
                             "perf/examples_per_sec", "perf/first_step_s", "devices"])
      '''),
      result_cell('{k: summary[k] for k in ("test/mse", "test/nmse", "test/perplexity", '
                  '"test/codes_used", "num_codes")}'),
  ]


# ----------------------------------------------------------------------------
# 2. Gumbel-softmax categorical VAE
# ----------------------------------------------------------------------------
def dvae_nb():
  return [
      trainer_header("Gumbel-softmax categorical VAE with dgmjax", '''
      Jang, Gu and Poole (2016)'s categorical VAE (Lecture 7, "Discrete VAE latents" and
      "Gumbel-softmax trick"): an MLP encoder gives logits of N = 20 categorical variables with
      K = 10 classes each, the decoder sees a relaxed one-hot sample
      `softmax((logits + g) / τ)` with Gumbel noise g, τ is annealed as `max(0.5, exp(−r·t))`, and the
      prior is uniform, so the KL is `log K − H(q)` per variable. Evaluation uses hard one-hot codes
      c ~ q(c|x): the test −ELBO and an importance-weighted bound −L_k are bounds for the *discrete*
      model. `config.model = "dvae"` switches to the DALL-E-style conv dVAE.
      '''),
      settings("dvae"),
      INSTALL, DEVICES_MD, DEVICES, DATA_MD, DATA, HELPERS,
      md('''
      ## Config

      `train.dvae.get_config()`: 10000 steps, batch 128, Adam 1e-3, binarized pixels (a fresh
      Bernoulli draw per epoch), estimator `gumbel_softmax` (others: `st_gumbel`, `st_argmax`,
      `st_categorical`), IWAE with k = 1000.
      '''),
      code('''
      from train import dvae

      TINY_OVERRIDES = dict(
          num_steps=50, log_every=10, eval_every=0, checkpoint_every=50, data_limit=512,
          batch_size=32, eval_batch_size=128, num_images=16, hidden=(64, 32), num_vars=8,
          num_classes=10, iwae_samples=20, iwae_chunk=10)

      config = dvae.get_config()
      config.dataset = DATASET
      config.data_dir = DATA_DIR
      if TINY:
        config.update(TINY_OVERRIDES)
        print("tiny overrides:", TINY_OVERRIDES)
      config.batch_size = multiple_of_devices(config.batch_size)
      config.eval_batch_size = multiple_of_devices(config.eval_batch_size)
      print(config)
      '''),
      md('''
      ## Train

      The harness shards every batch over the devices; `train_and_evaluate` returns the summary.
      '''),
      code('''
      workdir = fresh_workdir(WORKDIR)
      summary = dvae.train_and_evaluate(config, workdir)
      '''),
      md('''
      ## Results

      Reconstructions from the most likely codes, samples from the prior, and how often each class
      of each latent variable is used on the test split (one row per variable). In nats:
      `test/neg_elbo` (hard codes), `test/neg_iwae` (tighter), `test/neg_elbo_relaxed` (what the
      relaxed estimator optimises; not a bound), and the train-set −ELBO for the overfitting gap.
      '''),
      code('''
      show_pictures(workdir)
      show_summary(summary, ["test/neg_elbo", "test/neg_iwae", "test/recon", "test/kl",
                             "test/neg_elbo_relaxed", "train_set/neg_elbo", "overfit_gap",
                             "iwae_samples", "train/temperature_final", "test/code_perplexity",
                             "test/codes_used", "perf/steps_per_sec", "perf/first_step_s",
                             "devices"])
      '''),
      result_cell('{k: summary[k] for k in ("test/neg_elbo", "test/neg_iwae", "test/kl", '
                  '"test/recon", "test/code_perplexity")}'),
  ]


# ----------------------------------------------------------------------------
# 3. VAE + ELBO surgery + flow prior
# ----------------------------------------------------------------------------
def vae_nb():
  return [
      trainer_header("VAE, ELBO surgery and a flow prior with dgmjax", '''
      Lecture 7, first half. The average KL term of the ELBO splits exactly (Hoffman & Johnson 2016):

      (1/N) Σᵢ KL(q(z|xᵢ) ‖ p(z)) = I_q[x, z] + KL(q_agg(z) ‖ p(z)),  q_agg = (1/N) Σᵢ q(z|xᵢ).

      Only the marginal KL depends on the prior, and it vanishes for p = q_agg. This notebook trains
      the same Gaussian VAE twice with `train.vae`, once with the N(0, I) prior and once with a
      learned RealNVP flow prior, and prints the surgery table of each over the whole train and test
      split: reconstruction (RL), average KL, mutual information (≤ log N), marginal KL, ELBO and the
      IWAE-k bound.
      '''),
      settings("vae"),
      INSTALL, DEVICES_MD, DEVICES, DATA_MD, DATA, HELPERS,
      md('''
      ## Config

      `train.vae.get_config()`: MLP encoder/decoder (512, 256), latent 32, 6000 steps, batch 128,
      binarized digits, IWAE-1000 on the test split. With `latent_dim = 2` the report also draws
      q_agg(z) against the prior (tiny mode uses 2).
      '''),
      code('''
      from train import vae

      PRIORS = ("gaussian", "flow")
      TINY_OVERRIDES = dict(
          num_steps=50, log_every=10, checkpoint_every=50, data_limit=512, batch_size=32,
          eval_batch_size=128, num_images=16, hidden=(64,), latent_dim=2, flow_layers=2,
          flow_hidden=(16,), iwae_k=8, iwae_k_train=0, iwae_chunk=8)


      def make_config(prior):
        config = vae.get_config()
        config.prior = prior
        config.dataset = DATASET
        config.data_dir = DATA_DIR
        if TINY:
          config.update(TINY_OVERRIDES)
        config.batch_size = multiple_of_devices(config.batch_size)
        config.eval_batch_size = multiple_of_devices(config.eval_batch_size)
        return config


      if TINY:
        print("tiny overrides:", TINY_OVERRIDES)
      print(make_config("flow"))
      '''),
      md('''
      ## Train both priors

      Same encoder, decoder, data, steps and seed; only the prior differs. Each run goes to its own
      work directory (`train_and_evaluate` shards the batches over all devices).
      '''),
      code('''
      summaries, workdirs = {}, {}
      for prior in PRIORS:
        workdirs[prior] = fresh_workdir(os.path.join(WORKDIR, prior))
        print(f"--- prior = {prior}")
        summaries[prior] = vae.train_and_evaluate(make_config(prior), workdirs[prior])
      '''),
      md('''
      ## The ELBO-surgery tables

      Each run writes its table to `surgery.md` (and the numbers to `summary.json` as
      `surgery/<split>/<term>`). Then the test split of both priors side by side: the flow prior
      should lower the marginal KL, while the mutual information stays below log N.
      '''),
      code('''
      for prior in PRIORS:
        with open(os.path.join(workdirs[prior], "surgery.md")) as f:
          table = f.read()
        print(table)
        display(Markdown(table))

      TERMS = [("rec", "RL"), ("avg_kl", "avg KL"), ("mutual_info", "MI"),
               ("marginal_kl", "marginal KL"), ("elbo", "ELBO"), ("iwae", "IWAE-k"), ("log_n", "log N")]
      lines = ["| prior (test split) | " + " | ".join(t for _, t in TERMS) + " |",
               "|---" * (len(TERMS) + 1) + "|"]
      for prior in PRIORS:
        s = summaries[prior]
        lines.append(f"| {prior} | " + " | ".join(f"{s[f'surgery/test/{k}']:.3f}" for k, _ in TERMS)
                     + " |")
      comparison = "\\n".join(lines)
      print(comparison)
      display(Markdown(comparison))
      '''),
      md('''
      ## Pictures

      Test reconstructions (inputs above), samples z* ~ N(0, I) → z = f⁻¹(z*) → decoder, and for a
      2-D latent the log-density of q_agg(z) (left) against the prior (right) on one colour scale.
      '''),
      code('''
      for prior in PRIORS:
        print(f"--- prior = {prior}")
        show_pictures(workdirs[prior])
      '''),
      result_cell('{prior: {k: summaries[prior][f"surgery/test/{k}"] for k in ("rec", "avg_kl", "mutual_info", "marginal_kl", "elbo", "iwae", '
                  '"log_n")} for prior in PRIORS}'),
  ]


# ----------------------------------------------------------------------------
# 4. GAN and mode collapse
# ----------------------------------------------------------------------------
def gan_nb():
  return [
      trainer_header("GANs and mode collapse with dgmjax", '''
      Lecture 7, "GAN objective", "GAN optimality" and "Mode collapse". At the optimal
      discriminator the GAN game's value is `2·JSD(π‖p) − log 4`, so `train.gan` logs
      `(log 4 − D loss)/2` as a running JSD estimate. This notebook:

      1. trains a GAN on the 8-Gaussian ring twice, with the lecture's plain minimax generator loss
         `log(1 − D(G(z)))` and with the non-saturating `−log D(G(z))`, and scores 2500 samples by
         mode coverage (VEEGAN/PacGAN protocol: a sample is high quality within 3σ of its nearest
         mode; a mode is covered if it is the nearest mode of one high-quality sample);
      2. fits one Gaussian to a two-Gaussian mixture by forward KL, reverse KL and JSD (the lecture's
         "mode covering vs mode seeking" demo, `bench/kl_vs_jsd_demo.py` in the repository);
      3. trains a small DCGAN on MNIST digits and scores it with a classifier the project trains.
      '''),
      settings("gan"),
      INSTALL, DEVICES_MD, DEVICES, HELPERS,
      md('''
      ## 1. Ring: minimax vs non-saturating

      `train.gan.get_config()`: MLPs 3×256, batch 256, Adam (β₁ = 0.5), 15000 steps. The
      non-saturating run keeps the default cosine learning-rate decay; the minimax run uses a
      constant rate, as in `bench/gan_modes.py`. Real samples are drawn inside the jitted step, so
      the ring needs no data files.
      '''),
      code('''
      from train import gan

      SETTINGS = {
          "non_saturating": dict(generator_loss="non_saturating"),
          "minimax": dict(generator_loss="minimax", lr_schedule="constant"),
      }
      TINY_OVERRIDES = dict(
          num_steps=100, log_every=25, checkpoint_every=100, image_every=50, batch_size=64,
          g_features=(64, 64), d_features=(64, 64))


      def ring_config(setting):
        config = gan.get_config()
        config.dataset = "ring"
        config.update(SETTINGS[setting])
        if TINY:
          config.update(TINY_OVERRIDES)
        config.batch_size = multiple_of_devices(config.batch_size)
        config.eval_batch_size = multiple_of_devices(config.eval_batch_size)
        return config


      if TINY:
        print("tiny overrides:", TINY_OVERRIDES)
      ring, ring_dirs = {}, {}
      for setting in SETTINGS:
        print(f"--- {setting}")
        ring_dirs[setting] = fresh_workdir(os.path.join(WORKDIR, "ring_" + setting))
        ring[setting] = gan.train_and_evaluate(ring_config(setting), ring_dirs[setting])
      '''),
      md('''
      **Mode-coverage scatter**: 2500 samples of the final generator (black) over the 8 true modes
      (red circles of radius 3σ), then the losses and the JSD estimate over training.
      '''),
      code('''
      lines = ["| G loss | modes covered (of 8) | high-quality samples | KL(mode histogram ‖ uniform) |",
               "|---|---|---|---|"]
      for setting, s in ring.items():
        lines.append(f"| {setting} | {s['modes_covered']} | {100 * s['high_quality_fraction']:.1f}% | "
                     f"{s['mode_kl']:.3f} |")
      print("\\n".join(lines))
      display(Markdown("\\n".join(lines)))
      for setting in SETTINGS:
        print(f"--- {setting}")
        show_pictures(ring_dirs[setting], only=("samples", "curves"))
      '''),
      md('''
      ## 2. Forward KL, reverse KL and JSD on a two-Gaussian mixture

      π = ½N(−a, 0.5²) + ½N(a, 0.5²); the model is one Gaussian N(μ, σ²). Each divergence is
      evaluated by quadrature with `dgmjax.losses.divergences` and minimised over (μ, log σ) by Adam
      from 9 starts, keeping the lowest value. Forward KL covers both modes (its optimum is moment
      matching: μ = 0, σ² = a² + 0.25), reverse KL locks onto one; JSD lies in between.
      '''),
      code('''
      import math

      import jax.numpy as jnp
      import jax.scipy.stats as jst
      import numpy as np
      import optax

      from dgmjax import plots
      from dgmjax.data import toy
      from dgmjax.images import save_png
      from dgmjax.losses import divergences

      GRID = jnp.linspace(-12.0, 12.0, 1201 if TINY else 4801)
      DX = float(GRID[1] - GRID[0])
      FIT_STEPS = 300 if TINY else 3000
      DIVERGENCES = {"forward KL(pi||p)": divergences.forward_kl_grid,
                     "reverse KL(p||pi)": divergences.reverse_kl_grid,
                     "JSD(pi||p)": divergences.jsd_grid}


      def log_pi(a, x=GRID):
        return toy.log_prob_mixture_1d(x, weights=(0.5, 0.5), means=(-a, a), stds=(0.5, 0.5))


      def log_p(theta, x=GRID):
        return jst.norm.logpdf(x, theta[0], jnp.exp(theta[1]))


      def fit(divergence, a, lr=0.02):
        """Adam on (mu, log sigma) from 9 starts; returns the best (mu, sigma, value)."""
        target = log_pi(a)
        loss = lambda th: divergence(target, log_p(th), dx=DX)
        tx = optax.adam(lr)

        @jax.jit
        @jax.vmap
        def run(th):
          def step(carry, _):
            th, opt = carry
            updates, opt = tx.update(jax.grad(loss)(th), opt, th)
            return (optax.apply_updates(th, updates), opt), None

          (th, _), _ = jax.lax.scan(step, (th, tx.init(th)), None, length=FIT_STEPS)
          return th, loss(th)

        starts = jnp.array([[m, math.log(s)] for m in (0.5, 0.5 * a, a) for s in (0.5, 1.0, 2.0)])
        th, values = run(starts)
        best = int(jnp.argmin(values))
        return float(th[best, 0]), float(jnp.exp(th[best, 1])), float(values[best])


      kl_jsd = {}
      for a in (2.0, 3.0):
        fits = {name: fit(fn, a) for name, fn in DIVERGENCES.items()}
        kl_jsd[a] = fits
        lines = [f"**a = {a:g}**", "",
                 "| minimised | mu | sigma | " + " | ".join(f"{n} there" for n in DIVERGENCES) + " |",
                 "|---|---|---|" + "---|" * len(DIVERGENCES)]
        for name, (mu, sigma, _) in fits.items():
          th = jnp.array([mu, math.log(sigma)])
          vals = " | ".join(f"{float(fn(log_pi(a), log_p(th), dx=DX)):.4f}"
                            for fn in DIVERGENCES.values())
          lines.append(f"| {name} | {mu:.3f} | {sigma:.3f} | {vals} |")
        lines.append(f"\\nmoment matching (the forward-KL optimum): mu = 0, sigma = "
                     f"{math.sqrt(a * a + 0.25):.3f}")
        print("\\n".join(lines))
        display(Markdown("\\n".join(lines)))
        x = np.asarray(GRID[jnp.abs(GRID) <= a + 4])
        series = {"data pi": (x, np.exp(np.asarray(log_pi(a, jnp.asarray(x)))))}
        for name, (mu, sigma, _) in fits.items():
          series[f"min {name}: mu={mu:.2f}, sigma={sigma:.2f}"] = (
              x, np.exp(np.asarray(log_p(jnp.array([mu, math.log(sigma)]), jnp.asarray(x)))))
        path = os.path.join(WORKDIR, f"kl_vs_jsd_a{a:g}.png")
        styles = {name: {"lw": w} for name, w in zip(series, (2, 6, 4, 2), strict=False)}
        styles["data pi"].update(color="k", zorder=5)  # the data on top of the fits
        save_png(plots.line_chart(
            series, title=f"best Gaussian N(mu, sigma^2) under each divergence, a = {a:g}",
            xlabel="x", ylabel="density", styles=styles, figsize=(7.6, 3.8)), path)
        display(Image(filename=path))
      '''),
      md('''
      ## 3. A DCGAN on MNIST digits

      `dataset = DATASET` (full MNIST when prepared, else the offline digits), pixels in [−1, 1].
      There is no Inception network offline, so the run is scored by a small classifier the project
      trains on the same data (cached): classes covered, KL of the predicted-class histogram to
      uniform, and a Fréchet distance on the classifier's features (**not** FID).
      '''),
      DATA,
      code('''
      TINY_DIGITS = dict(
          num_steps=20, log_every=10, checkpoint_every=20, image_every=0, data_limit=256,
          batch_size=32, base_channels=4, latent_dim=8, num_images=16, classifier_steps=20,
          num_eval_samples=100, classifier_dir=os.path.join(WORKDIR, "classifier"))
      config = gan.get_config()
      # The setting measured in docs/gan.md: 10/10 classes, class KL 0.044.
      config.update(dataset=DATASET, data_dir=DATA_DIR, num_steps=6000, batch_size=64,
                    base_channels=32, learning_rate=5e-4, image_every=1000, log_every=100)
      if TINY:
        config.update(TINY_DIGITS)
        print("tiny overrides:", TINY_DIGITS)
      config.batch_size = multiple_of_devices(config.batch_size)
      config.eval_batch_size = multiple_of_devices(config.eval_batch_size)
      digits_dir = fresh_workdir(os.path.join(WORKDIR, "digits"))
      digits = gan.train_and_evaluate(config, digits_dir)
      show_pictures(digits_dir, only=("samples", "curves"))
      show_summary(digits, ["classes_covered", "class_kl", "confident_fraction",
                            "frechet_classifier_distance",
                            "frechet_classifier_distance_test_vs_train",
                            "classifier_test_accuracy", "perf/steps_per_sec", "devices"])
      '''),
      result_cell('{"ring": {k: {m: s[m] for m in ("modes_covered", "num_modes", '
                  '"high_quality_fraction", "mode_kl")} for k, s in ring.items()}, '
                  '"kl_vs_jsd": {str(a): {n: list(f) for n, f in fits.items()} '
                  'for a, fits in kl_jsd.items()}, '
                  '"digits": {m: digits[m] for m in ("classes_covered", "class_kl", '
                  '"frechet_classifier_distance")}}'),
  ]


# ----------------------------------------------------------------------------
# 5. AVB
# ----------------------------------------------------------------------------
def avb_nb():
  return [
      trainer_header("Adversarial Variational Bayes with dgmjax", '''
      Lecture 7, "Adversarial Variational Bayes" and "Density ratio trick" (Mescheder et al. 2017).
      The encoder is implicit, z = g(x, ε), so q(z|x) has no density and the KL term of the ELBO
      cannot be evaluated. A discriminator T(x, z) learns to tell (x, z ~ q(z|x)) from
      (x, z ~ p(z)); at its optimum T = log q(z|x) − log p(z), so the model maximises
      E_q[log p(x|z) − T(x, z)].

      The paper's toy: four one-hot 2×2 images, a 2-D latent. The best possible log-likelihood is
      −log 4 = −1.386 nats, reached when the four posteriors tile the latent plane. An implicit
      encoder can tile it; a Gaussian encoder cannot. Both are trained with `train.avb` (same decoder,
      data and steps) and their posteriors drawn as a scatter, one colour per data point. A 2-D AVB
      on MNIST digits follows.
      '''),
      settings("avb"),
      INSTALL, DEVICES_MD, DEVICES, HELPERS,
      md('''
      ## 1. The four-point toy

      `train.avb.get_config()`: batch 512, 4000 steps, 2 discriminator updates per model update,
      Adam (β₁ = 0.5). The report integrates p(x) = ∫ p(x|z) p(z) dz on a grid
      (`test/log_px_grid`, exact up to the grid) and importance-samples it (`test/log_px`).
      '''),
      code('''
      from train import avb

      MODELS = {"AVB (implicit q, adversarial KL)": dict(encoder="implicit", kl="adversarial"),
                "VAE (Gaussian q, analytic KL)": dict(encoder="gaussian", kl="analytic")}
      TINY_OVERRIDES = dict(
          num_steps=100, log_every=25, checkpoint_every=100, batch_size=64, eval_batch_size=8,
          toy_train_size=512, hidden=(32, 32), disc_hidden=(32, 32), noise_dim=3, ll_samples=64,
          ll_chunk=32, ll_moment_samples=16, grid_size=96, scatter_samples=100, eval_samples=4)

      if TINY:
        print("tiny overrides:", TINY_OVERRIDES)
      toy_runs, toy_dirs = {}, {}
      for name, over in MODELS.items():
        config = avb.get_config()
        config.update(over)
        if TINY:
          config.update(TINY_OVERRIDES)
        config.batch_size = multiple_of_devices(config.batch_size)
        config.eval_batch_size = multiple_of_devices(config.eval_batch_size)
        print(f"--- {name}")
        toy_dirs[name] = fresh_workdir(os.path.join(WORKDIR, f"toy_{over['encoder']}"))
        toy_runs[name] = avb.train_and_evaluate(config, toy_dirs[name])
      '''),
      md('''
      **Posterior scatter**: samples z ~ q(z|x) for each of the four points (one colour each); grey
      circles are radii 1, 2, 3 of the N(0, I) prior.
      '''),
      code('''
      import math

      lines = ["| model | log p(x), grid | log p(x), importance sampling | ELBO estimate |",
               "|---|---|---|---|"]
      for name, s in toy_runs.items():
        lines.append(f"| {name} | {s['test/log_px_grid']:.3f} | {s['test/log_px']:.3f} | "
                     f"{s['test/elbo']:.3f} |")
      lines.append(f"| best possible (−log 4) | {-math.log(4):.3f} | | |")
      print("\\n".join(lines))
      display(Markdown("\\n".join(lines)))
      for name in MODELS:
        print(f"--- {name}")
        show_pictures(toy_dirs[name], only=("posteriors",))
      '''),
      md('''
      ## 2. AVB on MNIST digits, 2-D latent

      `dataset = DATASET` (full MNIST when prepared, else the offline digits), binarized. With a 2-D
      latent the report draws q(z|x) coloured by digit class.
      '''),
      DATA,
      code('''
      TINY_DIGITS = dict(
          num_steps=20, log_every=10, checkpoint_every=20, data_limit=256, batch_size=32,
          eval_batch_size=64, hidden=(32,), disc_hidden=(32,), noise_dim=4, ll_samples=16,
          ll_chunk=16, ll_moment_samples=16, grid_size=48, scatter_samples=20, eval_samples=2,
          num_images=16)
      config = avb.get_config()
      config.update(dataset=DATASET, data_dir=DATA_DIR, latent_dim=2, batch_size=128,
                    num_steps=3000, hidden=(512, 256), disc_hidden=(512, 256), grid_size=256,
                    ll_samples=100, log_every=100)
      if TINY:
        config.update(TINY_DIGITS)
        print("tiny overrides:", TINY_DIGITS)
      config.batch_size = multiple_of_devices(config.batch_size)
      config.eval_batch_size = multiple_of_devices(config.eval_batch_size)
      digits_dir = fresh_workdir(os.path.join(WORKDIR, "digits"))
      digits = avb.train_and_evaluate(config, digits_dir)
      show_pictures(digits_dir)
      show_summary(digits, ["test/elbo", "test/rec", "test/kl", "test/log_px", "test/log_px_grid",
                            "perf/steps_per_sec", "devices"])
      '''),
      result_cell('{"toy": {over["encoder"]: {k: toy_runs[name][k] for k in ("test/log_px_grid", '
                  '"test/log_px", "test/elbo")} for name, over in MODELS.items()}, '
                  '"digits": {k: digits[k] for k in ("test/elbo", "test/log_px_grid")}}'),
  ]


# ----------------------------------------------------------------------------
# 5b. Token prior: tokenizer -> prior -> samples
# ----------------------------------------------------------------------------
def token_prior_nb():
  return [
      trainer_header("Generating digits from discrete codes: a token prior with dgmjax", '''
      Lecture 7, DALL-E slide: "Since latent space is discrete we could train autoregressive
      transformers in it." A VQ-VAE alone only reconstructs; this notebook makes it generative in
      two stages, as the VQ-VAE paper (PixelCNN prior), DALL-E (a transformer over dVAE tokens)
      and MaskGIT (a bidirectional transformer, parallel decoding) do:

      1. `train.vqvae` learns the **tokenizer**: each 28×28 digit becomes a 7×7 grid of code
         indices (K codes), and back;
      2. `train.prior` encodes every image once into a 49-token sequence (raster order) and fits a
         small transformer to those sequences, autoregressively (`p(x_i | x_<i)`, sampled with a
         key–value cache) or as MaskGIT (`order = "masked"`);
      3. samples from the prior are decoded by the tokenizer into new digits and scored with the
         project's digit classifier — the same classifier and the same function `train.gan`
         uses: classes covered, class-histogram KL to uniform, and a Fréchet distance on the
         classifier's features (**not** FID: Inception weights cannot be downloaded here).
      '''),
      settings("token_prior", '''
  ORDER = "autoregressive"  # or "masked" (MaskGIT decoding)
  CLASS_CONDITIONAL = False  # True: a class token, and a sample grid with one row per digit
  '''),
      INSTALL, DEVICES_MD, DEVICES, DATA_MD, DATA, HELPERS,
      md('''
      ## 1. The tokenizer: a VQ-VAE

      `train.vqvae.get_config()`: 2000 steps, K = 512 codes of dimension 32, a 7×7 grid per image
      (two stride-2 downsamplings). The prior needs a **finished** tokenizer run: its config and its
      last checkpoint are read from the work directory.
      '''),
      code('''
      from train import vqvae

      TINY_TOKENIZER = dict(
          num_steps=30, log_every=10, checkpoint_every=30, data_limit=512, batch_size=32,
          eval_batch_size=128, num_images=16, num_codes=64, code_dim=8, channels=(16, 16),
          res_hidden=8, num_res_blocks=1)

      tok_config = vqvae.get_config()
      tok_config.dataset = DATASET
      tok_config.data_dir = DATA_DIR
      if TINY:
        tok_config.update(TINY_TOKENIZER)
        print("tiny overrides:", TINY_TOKENIZER)
      tok_config.batch_size = multiple_of_devices(tok_config.batch_size)
      tok_config.eval_batch_size = multiple_of_devices(tok_config.eval_batch_size)
      tok_dir = fresh_workdir(os.path.join(WORKDIR, "tokenizer"))
      tok_summary = vqvae.train_and_evaluate(tok_config, tok_dir)
      show_pictures(tok_dir, only=("reconstructions",))
      show_summary(tok_summary, ["test/mse", "test/perplexity", "test/codes_used", "num_codes"])
      '''),
      md('''
      ## 2. The prior: a transformer over the codes

      `train.prior.get_config()`: 4 pre-LN blocks of width 64, batch 64, AdamW 3e-4, 2000 steps (with
      `ORDER = "masked"`: 8000 steps at 1e-3 with a cosine decay). The tokens
      of the tokenizer's train and test splits are computed once and cached in the prior's work
      directory (`tokens.npz`, with a record of the tokenizer they came from: resuming over another
      tokenizer is refused). The test NLL is in bits per token; `log2 K` bits is the uniform code.
      '''),
      code('''
      from train import prior

      TINY_PRIOR = dict(
          num_steps=40, log_every=10, checkpoint_every=40, batch_size=32, eval_batch_size=64,
          learning_rate=3e-3, num_layers=1, width=32, num_heads=2, num_samples=128,
          num_images=64, maskgit_steps=4, classifier_steps=20,
          classifier_dir=os.path.join(WORKDIR, "classifier"))

      config = prior.get_config()
      config.tokenizer = tok_dir
      config.order = ORDER
      config.class_conditional = CLASS_CONDITIONAL
      if TINY:
        config.update(TINY_PRIOR)
        print("tiny overrides:", TINY_PRIOR)
      config.batch_size = multiple_of_devices(config.batch_size)
      config.eval_batch_size = multiple_of_devices(config.eval_batch_size)
      prior_dir = fresh_workdir(os.path.join(WORKDIR, "prior"))
      summary = prior.train_and_evaluate(config, prior_dir)
      '''),
      md('''
      ## 3. Samples and their figures

      The grid shows `num_images` samples decoded by the tokenizer (class-conditional: row r holds
      class r; in tiny mode the grid is drawn in the same batch size as the scored samples, so the
      sampler compiles once). The figures come from `num_samples` samples: `classes_covered` (classes with at
      least a tenth of their fair share; mode collapse shows as missing classes), `class_kl`
      (KL of the predicted-class histogram to uniform, 0 when balanced), the Fréchet classifier
      distance to the training images (and, as a yardstick, that of the test images), and the
      sampling speed in images per second after compilation (sampling plus decoding).
      '''),
      code('''
      FIGURES = ["test/bits_per_token", "test/masked_bits_per_token", "test/raster_bits_per_token",
                 "uniform_bits_per_token",
                 "classes_covered", "class_kl", "frechet_classifier_distance",
                 "frechet_classifier_distance_test_vs_train", "classifier_test_accuracy",
                 "label_accuracy", "sample/images_per_sec", "sample/first_batch_s",
                 "num_params", "perf/steps_per_sec", "devices"]
      show_pictures(prior_dir, only=("samples",))
      show_summary(summary, FIGURES)
      '''),
      md('''
      ## 4. Other sampling settings, same prior

      `eval_only = True` restores the trained prior and only evaluates, so the sampling keys
      (`temperature`, `top_k`, `top_p`, `num_samples`, `maskgit_steps`) can change without
      training again — the command line equivalent is
      `python -m train.prior --workdir=... --config.eval_only=True --config.temperature=0.8 --config.top_k=64`.
      A lower temperature and top-k trade diversity (class coverage) for cleaner digits.
      '''),
      code('''
      sharp = config.copy_and_resolve_references()
      sharp.update(eval_only=True, temperature=0.8, top_k=16 if TINY else 64)
      sharp_summary = prior.train_and_evaluate(sharp, prior_dir)
      show_pictures(prior_dir, only=("samples",))
      lines = ["| setting | classes covered | class KL | Fréchet classifier distance | images/s |",
               "|---|---|---|---|---|"]
      for name, s in (("T = 1", summary), (f"T = 0.8, top-k {sharp.top_k}", sharp_summary)):
        lines.append(f"| {name} | {s['classes_covered']} | {s['class_kl']:.3f} | "
                     f"{s['frechet_classifier_distance']:.2f} | {s['sample/images_per_sec']:.0f} |")
      display(Markdown("\\n".join(lines)))
      '''),
      result_cell('{"bits_per_token": summary.get("test/bits_per_token", '
                  'summary.get("test/masked_bits_per_token")), '
                  '"uniform_bits_per_token": summary["uniform_bits_per_token"], '
                  '**{k: summary[k] for k in ("classes_covered", "class_kl", '
                  '"frechet_classifier_distance", "sample/images_per_sec")}, '
                  '"sharp": {k: sharp_summary[k] for k in ("classes_covered", "class_kl", '
                  '"frechet_classifier_distance")}}'),
  ]


# ----------------------------------------------------------------------------
# 6. The losses in your own code
# ----------------------------------------------------------------------------
def losses_nb():
  return [
      md('''
      # dgmjax's losses in your own code

      `dgmjax.losses` is a set of pure JAX functions: no Flax, no harness, per-example outputs,
      keyword-only hyperparameters. This notebook uses `vq`, `gumbel` and `elbo` inside two small
      models written here with `flax.linen`, trained by a hand-written jitted optax step:

      1. a VQ autoencoder: `vq.quantize`, `vq.straight_through`, `vq.vq_loss`, `vq.perplexity`;
      2. a Gumbel-softmax categorical VAE: `gumbel.gumbel_softmax_sample`,
         `gumbel.categorical_kl_uniform`, `elbo.bernoulli_log_likelihood`, `elbo.elbo`.

      Data: the offline MNIST digits that ship with dgmjax (no download). With
      `DGMJAX_NOTEBOOK_TINY=1` each model trains 150 steps instead of 2000.
      '''),
      code('''
      import os

      REPO_URL = "https://github.com/<you>/dgmjax"  # used only when `import dgmjax` fails
      USE_FULL_MNIST = False  # this notebook always uses the offline digits
      TINY = os.environ.get("DGMJAX_NOTEBOOK_TINY", "") not in ("", "0")
      STEPS = 150 if TINY else 2000  # tiny mode: 150 steps per model
      BATCH = 64
      print("steps per model:", STEPS)
      '''),
      INSTALL,
      code('''
      import flax.linen as nn
      import jax
      import jax.numpy as jnp
      import numpy as np
      import optax

      from dgmjax.data import load_digits
      from dgmjax.losses import elbo, gumbel, vq

      print(f"jax {jax.__version__}: backend {jax.default_backend()}, {jax.device_count()} device(s)")
      images, _ = load_digits("train")  # (4500, 28, 28, 1) uint8
      x_unit = images.astype(np.float32) / 255.0
      x_binary = (x_unit > 0.5).astype(np.float32)
      rng = np.random.default_rng(0)


      def batches(data):
        while True:
          for i in np.array_split(rng.permutation(len(data)), len(data) // BATCH):
            yield jnp.asarray(data[i[:BATCH]])


      def train(loss_fn, params, data, *, lr=1e-3, extra_args=()):
        """A plain optax loop around a jitted step; returns params and the loss curve."""
        tx = optax.adam(lr)
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state, x, key):
          (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, key)
          updates, opt_state = tx.update(grads, opt_state, params)
          return optax.apply_updates(params, updates), opt_state, loss, aux

        losses, it, key = [], batches(data), jax.random.key(0)
        for t in range(STEPS):
          key, sub = jax.random.split(key)
          params, opt_state, loss, aux = step(params, opt_state, next(it), sub)
          losses.append(float(loss))
          if t % max(1, STEPS // 5) == 0 or t == STEPS - 1:
            print(f"step {t:5d}  loss {float(loss):.4f}  " +
                  "  ".join(f"{k} {float(v):.3f}" for k, v in aux.items()))
        return params, losses
      '''),
      md('''
      ## 1. A VQ autoencoder

      The encoder output `z_e` (4 vectors of dimension 8 per image) is replaced by its nearest code
      in a learned codebook of 32; the decoder sees `z_e + sg(z_q − z_e)` so the reconstruction
      gradient reaches the encoder; the codebook and commitment terms come from `vq.vq_loss`.
      '''),
      code('''
      class VQAutoencoder(nn.Module):
        num_codes: int = 32
        code_dim: int = 8
        tokens: int = 4

        @nn.compact
        def __call__(self, x):
          b = x.shape[0]
          h = nn.relu(nn.Dense(256)(x.reshape(b, -1)))
          z_e = nn.Dense(self.tokens * self.code_dim)(h).reshape(b, self.tokens, self.code_dim)
          codebook = self.param("codebook", nn.initializers.normal(0.1),
                                (self.num_codes, self.code_dim))
          z_q, idx = vq.quantize(z_e, codebook)  # nearest code, float32 distances
          z = vq.straight_through(z_e, z_q)  # forward z_q, gradient to z_e
          h = nn.relu(nn.Dense(256)(z.reshape(b, -1)))
          x_rec = nn.sigmoid(nn.Dense(x[0].size)(h)).reshape(x.shape)
          return x_rec, z_e, z_q, idx


      vq_model = VQAutoencoder()


      def vq_loss_fn(params, x, key):
        x_rec, z_e, z_q, idx = vq_model.apply(params, x)
        mse = jnp.mean((x_rec - x) ** 2)
        latent = jnp.mean(vq.vq_loss(z_e, z_q, beta=0.25))  # per vector -> mean
        ppl = vq.perplexity(vq.code_histogram(idx, vq_model.num_codes))
        return mse + latent, {"mse": mse, "vq": latent, "perplexity": ppl}


      vq_params = vq_model.init(jax.random.key(1), jnp.asarray(x_unit[:BATCH]))
      vq_params, vq_losses = train(vq_loss_fn, vq_params, x_unit)
      '''),
      md('''
      ## 2. A Gumbel-softmax categorical VAE

      8 categorical variables with 10 classes each. The decoder sees a relaxed one-hot sample at
      temperature τ = 0.7; the KL to the uniform prior is `log K − H(q)` per variable; the loss is the
      −ELBO per example, averaged over the batch.
      '''),
      code('''
      class CategoricalVAE(nn.Module):
        num_vars: int = 8
        num_classes: int = 10

        @nn.compact
        def __call__(self, x, key, temperature):
          b = x.shape[0]
          h = nn.relu(nn.Dense(256)(x.reshape(b, -1)))
          logits = nn.Dense(self.num_vars * self.num_classes)(h)
          logits = logits.reshape(b, self.num_vars, self.num_classes)
          y = gumbel.gumbel_softmax_sample(key, logits, temperature=temperature)
          h = nn.relu(nn.Dense(256)(y.reshape(b, -1)))
          return nn.Dense(x[0].size)(h).reshape(x.shape), logits


      cat_model = CategoricalVAE()


      def cat_loss_fn(params, x, key, temperature=0.7):
        out, logits = cat_model.apply(params, x, key, temperature)
        log_lik = elbo.bernoulli_log_likelihood(x=x, logits=out, event_ndims=3)  # (B,)
        kl = jnp.sum(gumbel.categorical_kl_uniform(logits), axis=-1)  # (B,)
        loss = -jnp.mean(elbo.elbo(log_lik, kl))
        return loss, {"rec": -jnp.mean(log_lik), "kl": jnp.mean(kl)}


      cat_params = cat_model.init(jax.random.key(2), jnp.asarray(x_binary[:BATCH]),
                                  jax.random.key(3), 1.0)
      cat_params, cat_losses = train(cat_loss_fn, cat_params, x_binary)
      '''),
      md('''
      ## The loss went down

      Mean of the first and last 10 steps of each model.
      '''),
      code('''
      import json


      def first_last(losses, n=10):
        return float(np.mean(losses[:n])), float(np.mean(losses[-n:]))


      RESULT = {"vq": first_last(vq_losses), "gumbel": first_last(cat_losses)}
      for name, (first, last) in RESULT.items():
        print(f"{name}: loss {first:.4f} -> {last:.4f}")
      print("RESULT " + json.dumps(RESULT))
      '''),
  ]


NOTEBOOKS = {
    "vqvae": vqvae_nb,
    "dvae": dvae_nb,
    "vae_surgery_flow": vae_nb,
    "gan_mode_collapse": gan_nb,
    "avb": avb_nb,
    "token_prior": token_prior_nb,
    "losses_in_your_code": losses_nb,
}


def build() -> dict[str, nbformat.NotebookNode]:
  """``{file name: notebook}`` for every notebook, without outputs."""
  out = {}
  for name, cells_fn in NOTEBOOKS.items():
    cells = []
    for i, (kind, source) in enumerate(cells_fn()):
      cell = v4.new_code_cell(source) if kind == "code" else v4.new_markdown_cell(source)
      cell["id"] = f"{name[:40]}-{i:02d}"  # stable ids: rebuilding changes nothing
      cells.append(cell)
    nb = v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": [], "toc_visible": True},
    }
    nbformat.validate(nb)
    out[f"{name}.ipynb"] = nb
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--check", action="store_true",
                  help="write nothing; exit 1 if a committed notebook differs")
  args = ap.parse_args(argv)
  stale = []
  for fname, nb in build().items():
    path = os.path.join(HERE, fname)
    text = nbformat.writes(nb) + "\n"
    old = open(path).read() if os.path.exists(path) else None
    if old != text:
      stale.append(fname)
      if not args.check:
        with open(path, "w") as f:
          f.write(text)
  verb = "differ" if args.check else "written"
  print(f"{len(stale)} notebook(s) {verb}: {', '.join(stale) or '-'}")
  return 1 if (args.check and stale) else 0


if __name__ == "__main__":
  sys.exit(main())
