"""AVB vs a Gaussian-encoder VAE on the paper's four-point toy, at equal steps.

Lecture 7, slide "Adversarial Variational Bayes"; Mescheder et al. (2017),
section 5.1. The data are the four one-hot 2×2 images, uniformly; the latent
is 2-D. The best possible log-likelihood is −log 4 = −1.386 nats, reached when
the four posteriors tile the latent space and the decoder is certain on each
tile. A Gaussian encoder cannot tile: its posteriors overlap or leave gaps,
which costs likelihood. Both runs use ``train.avb`` with the same decoder,
data, batch, optimiser and number of steps; only the encoder and the KL term
differ:

* AVB: ``encoder="implicit"``, ``kl="adversarial"`` (the defaults);
* VAE: ``encoder="gaussian"``, ``kl="analytic"`` (the same MLP widths).

Figures per run (all on the four test points, i.e. the exact expectation over
π(x)): the importance-sampled log p(x) (k = 1000, Gaussian proposal fitted to
the encoder's samples for AVB, q itself for the VAE), the grid quadrature
∫ p(x|z) p(z) dz (exact up to the grid: the reference value), and the ELBO
estimate (AVB: rec − T, which is *not* a bound). The picture puts the two
posteriors of seed 0 side by side (drawn with :mod:`dgmjax.plots` from each
run's ``posterior_samples.npz``).

Run: ``nice -n 10 python bench/avb_toy.py`` (3 seeds × 2 models of the default
config; ``--steps``, ``--seeds``, ``--out``). A finished run in ``--out`` is
reused, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

MODELS = {
    "AVB (implicit encoder, adversarial KL)": dict(encoder="implicit", kl="adversarial"),
    "VAE (Gaussian encoder, analytic KL)": dict(encoder="gaussian", kl="analytic"),
}
SHORT = {name: ("avb" if "AVB" in name else "vae") for name in MODELS}
PANEL = {"avb": "AVB, implicit q", "vae": "VAE, Gaussian q"}  # titles of the picture
LOG4 = float(np.log(4.0))


def _run(name: str, seed: int, args) -> tuple[dict, float]:
  from train import avb

  workdir = os.path.join(args.out, f"{SHORT[name]}_s{seed}")
  path = os.path.join(workdir, "summary.json")
  if os.path.exists(path):
    with open(path) as f:
      s = json.load(f)
    if s.get("step") == args.steps:
      return s, float("nan")
  c = avb.get_config()
  c.update(dict(seed=seed, num_steps=args.steps, quiet=True, checkpoint_every=args.steps,
                **MODELS[name]))
  t0 = time.time()
  s = avb.train_and_evaluate(c, workdir)
  return s, time.time() - t0


def _fmt(values, digits=3) -> str:
  v = np.asarray(values, np.float64)
  if len(v) == 1:
    return f"{v[0]:.{digits}f}"
  return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def side_by_side_picture(workdirs: dict[str, str], summaries: dict[str, dict],
                         extent=(-4.0, 4.0, -4.0, 4.0)) -> np.ndarray:
  """The posteriors of each run (its ``posterior_samples.npz``), one scatter per model.

  Each panel is :func:`dgmjax.plots.posterior_scatter` on the same axes
  (``extent``), one colour per data point, titled with the model and its grid
  log p(x); the panels are put side by side.
  """
  from dgmjax import plots

  panels = []
  for name, wd in workdirs.items():
    with np.load(os.path.join(wd, "posterior_samples.npz")) as f:
      z, labels = f["z"], f["labels"]  # (n, N, 2), (N,)
    lab = np.broadcast_to(labels[None, :], z.shape[:2]).reshape(-1)
    order = np.random.default_rng(0).permutation(len(lab))
    s = summaries[name]
    title = (f"{PANEL[SHORT[name]]}: log p(x) = {s['test/log_px_grid']:.3f} (grid; optimum "
             f"{-LOG4:.3f})")
    panels.append(plots.posterior_scatter(
        z.reshape(-1, 2)[order], lab[order], extent=extent, title=title,
        label_names=[f"x = one-hot pixel {i + 1}" for i in range(int(labels.max()) + 1)]))
  h = max(p.shape[0] for p in panels)
  out = []
  for i, p in enumerate(panels):
    out.append(np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255))
    if i < len(panels) - 1:
      out.append(np.full((h, 10, 3), 255, np.uint8))
  return np.concatenate(out, axis=1)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--steps", type=int, default=None, help="default: train.avb's num_steps")
  p.add_argument("--out", default="workdir/bench_avb_toy")
  p.add_argument("--picture", default="docs/images/avb_toy_posteriors.png")
  args = p.parse_args()

  import jax

  from train import avb

  defaults = avb.get_config()
  args.steps = args.steps or defaults.num_steps
  results = {name: [] for name in MODELS}
  walls = {name: [] for name in MODELS}
  for seed in range(args.seeds):
    for name in MODELS:
      s, dt = _run(name, seed, args)
      results[name].append(s)
      walls[name].append(dt)
      print(f"# {SHORT[name]} seed {seed}: log p(x) IS {s['test/log_px']:.4f}, grid "
            f"{s['test/log_px_grid']:.4f}, {dt:.0f}s", flush=True)

  print(f"\n## AVB toy: 4 one-hot 2×2 images, 2-D latent, {args.steps} steps, "
        f"{args.seeds} seeds\n")
  print(f"Setup: batch {defaults.batch_size}, Adam(b1={defaults.adam_b1}) lr "
        f"{defaults.learning_rate} (model) / {defaults.disc_learning_rate} (discriminator), "
        f"{defaults.disc_steps} discriminator steps per model step, encoder/decoder MLP "
        f"{tuple(defaults.hidden)}, T MLP {tuple(defaults.disc_hidden)} + ‖z‖²/2, noise dim "
        f"{defaults.noise_dim}; IS k = {defaults.ll_samples}, grid {defaults.grid_size}² on "
        f"[−6, 6]²; {jax.device_count()} {jax.default_backend()} device(s), "
        f"{platform.machine()}, {os.cpu_count()} cores (shared).\n")
  print("| model | log p(x), grid (nats) | log p(x), IS k=1000 | ELBO estimate | "
        "gap to −log 4 (grid) | steps/s |")
  print("|---|---|---|---|---|---|")
  for name, runs in results.items():
    grid = [r["test/log_px_grid"] for r in runs]
    print(f"| {name} | {_fmt(grid)} | {_fmt([r['test/log_px'] for r in runs])} | "
          f"{_fmt([r['test/elbo'] for r in runs])} | {_fmt([-LOG4 - g for g in grid])} | "
          f"{_fmt([r.get('perf/steps_per_sec', float('nan')) for r in runs], 0)} |")
  avb_name, vae_name = list(MODELS)
  diff = [a["test/log_px_grid"] - v["test/log_px_grid"]
          for a, v in zip(results[avb_name], results[vae_name], strict=True)]
  print(f"\nAVB − VAE, log p(x) (grid, paired by seed): {_fmt(diff)} nats "
        f"(per seed: {', '.join(f'{d:+.3f}' for d in diff)}).")
  worst = min(r["test/log_px_grid"] for r in results[avb_name])
  print(f"Target: AVB log p(x) ≥ −1.45 (optimum −log 4 = {-LOG4:.3f}): worst seed "
        f"{worst:.4f} → {'reached' if worst >= -1.45 else 'NOT reached'}; AVB better than "
        f"the VAE on every seed: {all(d > 0 for d in diff)}.")
  is_err = [abs(r["test/log_px"] - r["test/log_px_grid"]) for rs in results.values()
            for r in rs]
  print(f"|IS − grid| over all runs: max {max(is_err):.4f} nats (the IS figure is a "
        "stochastic lower bound).")
  trained = [t for ts in walls.values() for t in ts if not np.isnan(t)]
  if trained:
    print(f"Wall time per run (train + report, shared CPU): {np.mean(trained):.0f}s mean.")

  dirs = {name: os.path.join(args.out, f"{SHORT[name]}_s0") for name in MODELS}
  if args.picture and all(os.path.exists(os.path.join(d, "posterior_samples.npz"))
                          for d in dirs.values()):
    from dgmjax.images import save_png

    save_png(side_by_side_picture(dirs, {n: results[n][0] for n in MODELS}), args.picture)
    print(f"\nPicture (left AVB, right VAE, seed 0): {args.picture}")

if __name__ == "__main__":
  main()
