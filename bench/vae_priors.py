"""N(0, I) prior vs RealNVP flow prior at equal steps: the ELBO-surgery table.

Lecture 7, slides "ELBO surgery", "Optimal prior", "ELBO with flow-based VAE
prior". For each prior and seed, ``train.vae`` is trained for the same number
of steps with the same encoder/decoder, and its report
(:mod:`dgmjax.eval.surgery_report`) gives, over the whole train (N=4500) and
test (N=500) split: RL, average KL, mutual information, marginal
KL(q_agg||p), ELBO and the IWAE-k bound. The script prints Markdown tables
(mean ± std over seeds), the paired per-seed difference flow − gaussian, and
the two sanity checks (MI ≤ log N, avg KL = MI + marginal KL).

``--latent2d`` instead trains both priors with a 2-D latent and writes one
picture with q_agg against each prior's density (rows: gaussian, flow), drawn
with :func:`dgmjax.plots.density_pair` from each run's ``latent_density.npz``;
otherwise the picture puts the two priors' sample grids side by side, titled
with the test IWAE (matplotlib through :func:`dgmjax.plots.figure_to_array`).

Run: ``nice -n 10 python bench/vae_priors.py`` (defaults: 3 seeds × 2 priors
of the default config; see ``--help``). Work directories go under ``--out``
(a finished run is reused, not retrained).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import numpy as np

TERMS = [("rec", "RL"), ("avg_kl", "avg KL"), ("mutual_info", "MI"),
         ("marginal_kl", "marginal KL"), ("elbo", "ELBO"), ("iwae", "IWAE-k")]


def _config(prior: str, seed: int, args):
  from train import vae

  c = vae.get_config()
  c.prior = prior
  c.seed = seed
  c.num_steps = args.steps
  c.latent_dim = args.latent_dim
  c.arch = args.arch
  c.iwae_k = args.iwae_k
  c.iwae_k_train = args.iwae_k_train
  c.quiet = True
  c.checkpoint_every = args.steps
  c.log_every = max(1, min(c.log_every, args.steps))
  return c


def _run(prior: str, seed: int, args) -> tuple[dict, float]:
  from train import vae

  workdir = os.path.join(args.out, f"{prior}_d{args.latent_dim}_s{seed}")
  summary_path = os.path.join(workdir, "summary.json")
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      s = json.load(f)
    if s.get("step") == args.steps and s.get("surgery/test/iwae_k") == args.iwae_k:
      return s, float("nan")
  t0 = time.time()
  s = vae.train_and_evaluate(_config(prior, seed, args), workdir)
  return s, time.time() - t0


def _fmt(values) -> str:
  v = np.asarray(values, np.float64)
  if len(v) == 1:
    return f"{v[0]:.2f}"
  return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def table(results: dict, split: str) -> str:
  head = "| prior | " + " | ".join(name for _, name in TERMS) + " |"
  lines = [head, "|---" * (len(TERMS) + 1) + "|"]
  for prior, runs in results.items():
    cells = [_fmt([r[f"surgery/{split}/{k}"] for r in runs])
             if f"surgery/{split}/{k}" in runs[0] else "–" for k, _ in TERMS]
    lines.append(f"| {prior} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--steps", type=int, default=None, help="default: train.vae's num_steps")
  p.add_argument("--latent_dim", type=int, default=None)
  p.add_argument("--arch", default="mlp")
  p.add_argument("--iwae_k", type=int, default=1000)
  p.add_argument("--iwae_k_train", type=int, default=100)
  p.add_argument("--out", default="workdir/bench_vae_priors")
  p.add_argument("--latent2d", action="store_true",
                 help="2-D latent, one seed: the q_agg-vs-prior picture")
  p.add_argument("--figure", default="",
                 help="where to write the picture (default: under --out)")
  args = p.parse_args()

  from train import vae

  defaults = vae.get_config()
  args.steps = args.steps or defaults.num_steps
  if args.latent2d:
    args.latent_dim, args.seeds = 2, 1
  args.latent_dim = args.latent_dim or defaults.latent_dim

  import jax

  results: dict[str, list[dict]] = {"gaussian": [], "flow": []}
  times: dict[str, list[float]] = {"gaussian": [], "flow": []}
  for seed in range(args.seeds):
    for prior in results:
      s, dt = _run(prior, seed, args)
      results[prior].append(s)
      times[prior].append(dt)
      print(f"# {prior} seed {seed}: test IWAE-{args.iwae_k} {s['surgery/test/iwae']:.2f}, "
            f"marginal KL {s['surgery/test/marginal_kl']:.2f}, {dt:.0f}s", flush=True)

  print(f"\n## VAE priors at equal steps ({args.steps} steps, batch {defaults.batch_size}, "
        f"{args.arch}, latent_dim={args.latent_dim}, {args.seeds} seed(s))\n")
  print(f"Setup: digits 4500/500, dynamic binarization for training, fixed binarization "
        f"for evaluation; IWAE k={args.iwae_k} (test) / {args.iwae_k_train} (train); "
        f"{jax.device_count()} {jax.default_backend()} device(s), {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared).\n")
  for split in ("test", "train"):
    print(f"**{split} split (N={results['gaussian'][0][f'surgery/{split}/n']}, "
          f"log N = {results['gaussian'][0][f'surgery/{split}/log_n']:.3f})**\n")
    print(table(results, split))
    print()

  diff = [f["surgery/test/iwae"] - g["surgery/test/iwae"]
          for f, g in zip(results["flow"], results["gaussian"], strict=True)]
  dmk = [f["surgery/test/marginal_kl"] - g["surgery/test/marginal_kl"]
         for f, g in zip(results["flow"], results["gaussian"], strict=True)]
  print(f"flow − gaussian, test IWAE-{args.iwae_k} (paired by seed): {_fmt(diff)} nats "
        f"(per seed: {', '.join(f'{d:+.2f}' for d in diff)}); target ≥ +1.")
  print(f"flow − gaussian, test marginal KL: {_fmt(dmk)} nats.")

  worst_mi, worst_id = -math.inf, 0.0
  for runs in results.values():
    for r in runs:
      for split in ("train", "test"):
        worst_mi = max(worst_mi, r[f"surgery/{split}/mutual_info"] - r[f"surgery/{split}/log_n"])
        worst_id = max(worst_id, abs(r[f"surgery/{split}/avg_kl"]
                                     - r[f"surgery/{split}/mutual_info"]
                                     - r[f"surgery/{split}/marginal_kl"]))
  print(f"Sanity: max(MI − log N) = {worst_mi:.4f} (must be ≤ 0); "
        f"max |avg KL − MI − marginal KL| = {worst_id:.2e} nats.")
  wall = [t for ts in times.values() for t in ts if not math.isnan(t)]
  if wall:
    print(f"Wall time per run (train + report): {np.mean(wall):.0f}s mean.")

  # Seed 0 of both priors: the samples side by side, or the latent densities stacked.
  dirs = {prior: os.path.join(args.out, f"{prior}_d{args.latent_dim}_s0") for prior in results}
  first = {prior: runs[0] for prior, runs in results.items()}
  picture = (latent_picture(dirs, first) if args.latent2d
             else samples_picture(dirs, first, args.iwae_k))
  default = "latent2d_priors.png" if args.latent2d else "samples_priors.png"
  out = args.figure or os.path.join(args.out, default)
  from dgmjax.images import save_png

  save_png(picture, out)
  print(f"\nPicture: {out}")


def latent_picture(dirs: dict[str, str], summaries: dict[str, dict]) -> np.ndarray:
  """One :func:`dgmjax.plots.density_pair` row per prior (log q_agg | log p), stacked.

  Reads each run's ``latent_density.npz`` (written by ``train.vae`` for a 2-D
  latent); the title carries the marginal KL(q_agg ‖ p) and the test IWAE.
  """
  from dgmjax import plots

  rows = []
  for prior, wd in dirs.items():
    with np.load(os.path.join(wd, "latent_density.npz")) as f:
      log_q, log_p, extent = f["log_q_agg"], f["log_prior"], float(f["extent"])
    s = summaries[prior]
    rows.append(plots.density_pair(
        log_q, log_p, extent,
        title=f"prior={prior}: KL(q_agg ‖ p) = {s['surgery/train/marginal_kl']:.3f} nats "
              f"(train), test IWAE-{s['surgery/test/iwae_k']} = {s['surgery/test/iwae']:.2f}"))
  width = max(r.shape[1] for r in rows)
  rows = [np.pad(r, ((0, 12), (0, width - r.shape[1]), (0, 0)), constant_values=255)
          for r in rows]
  return np.concatenate(rows, axis=0)[:-12]


def samples_picture(dirs: dict[str, str], summaries: dict[str, dict], iwae_k: int) -> np.ndarray:
  """The runs' ``samples_latest.png`` grids side by side, titled with prior and test IWAE.

  Drawn with matplotlib (one panel per prior) through
  :func:`dgmjax.plots.figure_to_array`.
  """
  from matplotlib.figure import Figure
  from PIL import Image

  from dgmjax import plots

  fig = Figure(figsize=(4.2 * len(dirs), 4.6), dpi=100, layout="constrained")
  axes = fig.subplots(1, len(dirs), squeeze=False)
  for ax, (prior, wd) in zip(axes[0], dirs.items(), strict=True):
    grid = np.asarray(Image.open(os.path.join(wd, "images", "samples_latest.png")).convert("RGB"))
    s = summaries[prior]
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"prior = {prior}\ntest IWAE-{iwae_k} = {s['surgery/test/iwae']:.2f} nats, "
                 f"marginal KL = {s['surgery/test/marginal_kl']:.2f}", fontsize=10)
  fig.suptitle("decoder means of z ~ p(z), seed 0")
  img = plots.figure_to_array(fig)
  return img


if __name__ == "__main__":
  main()
