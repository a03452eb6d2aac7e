"""AVB vs the Gaussian VAE on the offline MNIST digits, same decoder, equal steps.

Lecture 7, slide "Adversarial Variational Bayes". Every model is trained by
the AVB trainer (``train.avb`` with ``dataset="digits"``):

* the Gaussian VAE is its Gaussian-encoder mode, ``encoder="gaussian"``,
  ``kl="analytic"`` with Adam b1 = 0.9 (the optimiser of ``train.vae``);
* AVB is ``encoder="implicit"``, ``kl="adversarial"`` (Adam b1 = 0.5, the
  trainer's default), with or without adaptive contrast.

All use the same decoder (:class:`dgmjax.nn.vae.MLPDecoder`, widths mirrored
from the encoder's ``hidden``), latent size, batch, learning rate, number of
steps, dynamically binarized training digits (4500) and the same fixed
binarization of the 500 test digits.

The figure compared is the trainer's ``test/log_px``: the test
log-likelihood estimated for every row by the same importance sampler,
:func:`dgmjax.eval.likelihood.importance_log_marginal` (K = 1000, a mixture
of Gaussians at widths 1, 1.5, 2 around the encoder's moments — q's own for
the VAE, the moments of 256 encoder draws for AVB), with the same proposal
scales. It is a stochastic lower bound on log p(x) (E[log p̂] ≤ log p). The
ELBO is listed too; the AVB "ELBO" is rec − E_q[T]: T's KL estimate, *not* a
bound (see ``bench/avb_kl_check.py`` for how far T's estimate falls below the
true KL in a high-dimensional latent space).

(Earlier versions of this table took the VAE row from ``train.vae`` scored by
the same estimator; the VAE row is now the AVB trainer's own Gaussian mode.)

Run: ``nice -n 10 python bench/avb_mnist.py`` (``--seeds``, ``--steps``,
``--latent_dim``, ``--avb_variants``, ``--out``). Finished runs in ``--out``
are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

AVB_VARIANTS = {
    "avb": dict(encoder="implicit", kl="adversarial"),
    "avb_ac": dict(encoder="implicit", kl="adversarial", adaptive_contrast=True),
}
NAMES = {
    "vae": "Gaussian VAE (train.avb encoder=gaussian, kl=analytic, Adam b1 0.9)",
    "avb": "AVB (implicit encoder, T)",
    "avb_ac": "AVB + adaptive contrast (16 moment draws)",
}
# The VAE's runs live apart from the old train.vae ones (``vae_s*``), never reused.
WORKDIRS = {"vae": "vae_gaussian"}
SCALES = (1.0, 1.5, 2.0)
K = 1000


def _load_summary(workdir: str, steps: int) -> dict | None:
  path = os.path.join(workdir, "summary.json")
  if os.path.exists(path):
    with open(path) as f:
      s = json.load(f)
    if s.get("step") == steps:
      return s
  return None


MODELS = {
    "vae": dict(encoder="gaussian", kl="analytic", adam_b1=0.9),
    **AVB_VARIANTS,
}


def run(model: str, seed: int, args) -> tuple[dict, float]:
  """Train (or reuse) one ``train.avb`` run; its test log p(x), ELBO and steps/s."""
  from train import avb

  workdir = os.path.join(args.out, f"{WORKDIRS.get(model, model)}_s{seed}")
  t0 = time.time()
  s = _load_summary(workdir, args.steps)
  if s is None:
    c = avb.get_config()
    c.update(dict(dataset="digits", seed=seed, num_steps=args.steps, latent_dim=args.latent_dim,
                  noise_dim=args.latent_dim, hidden=tuple(args.hidden),
                  disc_hidden=tuple(args.hidden), batch_size=args.batch_size,
                  learning_rate=args.learning_rate, disc_learning_rate=args.learning_rate,
                  log_every=100, eval_batch_size=500, ll_samples=K,
                  ll_proposal_scales=SCALES, quiet=True, checkpoint_every=args.steps,
                  **MODELS[model]))
    s = avb.train_and_evaluate(c, workdir)
  return {"log_px": s["test/log_px"], "elbo": s["test/elbo"],
          "sps": s.get("perf/steps_per_sec", float("nan"))}, time.time() - t0


def _fmt(values, digits=2) -> str:
  v = np.asarray(values, np.float64)
  if np.all(np.isnan(v)):
    return "–"
  if len(v) == 1:
    return f"{v[0]:.{digits}f}"
  return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--latent_dim", type=int, default=32)
  p.add_argument("--hidden", type=int, nargs="+", default=[512, 256])
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--learning_rate", type=float, default=1e-3)
  p.add_argument("--avb_variants", nargs="+", default=["avb", "avb_ac"],
                 choices=list(AVB_VARIANTS))
  p.add_argument("--out", default="workdir/bench_avb_mnist")
  args = p.parse_args()
  import jax

  models = ["vae", *args.avb_variants]
  results = {m: [] for m in models}
  walls = {m: [] for m in models}
  for seed in range(args.seeds):
    for m in models:
      r, wall = run(m, seed, args)
      results[m].append(r)
      walls[m].append(wall)
      print(f"# {m} seed {seed}: log p(x) {r['log_px']:.2f}, ELBO {r['elbo']:.2f}, "
            f"{wall:.0f}s", flush=True)

  print(f"\n## AVB vs Gaussian VAE on the offline digits: {args.steps} steps, batch "
        f"{args.batch_size}, latent {args.latent_dim}, MLP {tuple(args.hidden)} (decoder "
        f"mirrored, shared), Adam lr {args.learning_rate}, {args.seeds} seed(s)\n")
  print(f"Setup: 4500 train digits (dynamic binarization), 500 test digits (one fixed "
        f"binarization); AVB: T = MLP {tuple(args.hidden)} + ‖z‖²/2, 2 T steps per model "
        f"step, Adam b1 0.5, noise dim {args.latent_dim}; log p(x) by importance sampling "
        f"K = {K}, proposal mixture widths {SCALES}; {jax.device_count()} "
        f"{jax.default_backend()} device(s), {platform.machine()}, {os.cpu_count()} cores "
        "(shared).\n")
  print("| model (all train.avb) | test log p(x), same IS estimator and proposal scales (nats) "
        "| ELBO (AVB: rec − E[T], not a bound) | steps/s | wall s/run |")
  print("|---|---|---|---|---|")
  for m in models:
    rs = results[m]
    print(f"| {NAMES[m]} | {_fmt([r['log_px'] for r in rs])} | {_fmt([r['elbo'] for r in rs])} | "
          f"{_fmt([r['sps'] for r in rs], 1)} | {_fmt(walls[m], 0)} |")
  for m in args.avb_variants:
    diff = [a["log_px"] - v["log_px"] for a, v in zip(results[m], results["vae"], strict=True)]
    print(f"\n{NAMES[m]} − VAE, test log p(x) (paired by seed): {_fmt(diff)} nats.")


if __name__ == "__main__":
  main()
