"""Mode coverage on the 2-D ring and grid, over seeds (VEEGAN / PacGAN protocol).

Lecture 7, slide "Mode collapse". Every run is a real ``train.gan`` run
through the harness (``gan.train_and_evaluate``), then 2500 samples from the
final generator are scored by :mod:`dgmjax.metrics.mode_coverage`: modes
covered, % high-quality samples (within 3σ of the nearest mode) and KL of the
mode histogram to uniform. Two settings:

* ``ours``: ``train.gan``'s defaults (non-saturating G loss, R1 penalty
  γ = 0.1 on real data, Adam with cosine decay, MLPs 3×128, batch 256) and
  the step counts below;
* ``minimax``: the same nets, data and steps, but the lecture's plain
  minimax game — saturating G loss ``log(1 − D(G(z)))`` — with no R1
  penalty and a constant learning rate;
* ``vanilla``: the 2-D setup of Metz et al. 2016 (G 2×128, D 1×128, 256-D
  noise, batch 512, Adam lr 1e-4, non-saturating loss, no penalty), 10 000
  steps: the generator does not settle and wanders between modes.

Run: ``nice -n 10 python bench/gan_modes.py`` (all four tables, 5 seeds:
20 runs of ~2 min each on a quiet 2-core CPU). Flags: ``--datasets``,
``--settings``, ``--seeds``, ``--steps`` (override), ``--workdir``,
``--json`` (write all per-run results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train import gan  # noqa: E402

STEPS = {"ring": 30000, "grid": 40000}
SETTINGS = {
    "ours": {},
    "minimax": {"generator_loss": "minimax", "lr_schedule": "constant", "r1_weight": 0.0},
    # The 2-D setup of Metz et al. (2016), whose vanilla-GAN figure the lecture's
    # "Mode collapse" slide shows: small D, 256-D noise, lr 1e-4, no tricks.
    "vanilla": {"g_features": (128, 128), "d_features": (128,), "latent_dim": 256,
                "learning_rate": 1e-4, "lr_schedule": "constant", "r1_weight": 0.0,
                "batch_size": 512, "num_steps": 10000},
}
PUBLISHED = {
    "ring": "GAN 1/99.3, Unrolled 7.6/35.6, VEEGAN 8/52.9 (VEEGAN); GAN 6.3/98.2, "
            "PacGAN2 7.9/95.6 (PacGAN)",
    "grid": "GAN 3.3/0.5, Unrolled 23.6/16, VEEGAN 24.6/40 (VEEGAN); GAN 17.3/94.8, "
            "PacGAN4 24.8/93.6 (PacGAN)",
}


def config_for(dataset: str, setting: str, seed: int, steps: int | None):
  c = gan.get_config()
  c.dataset = dataset
  c.seed = seed
  c.num_steps = STEPS[dataset]
  c.update(SETTINGS[setting])
  c.num_steps = steps or c.num_steps
  c.quiet = True
  c.image_every = c.num_steps // 5
  c.checkpoint_every = c.num_steps
  c.log_every = 500
  return c


def run_one(dataset: str, setting: str, seed: int, steps: int | None, root: str) -> dict:
  config = config_for(dataset, setting, seed, steps)
  workdir = os.path.join(root, f"{dataset}_{setting}_{seed}")
  shutil.rmtree(workdir, ignore_errors=True)
  cpu0, t0 = time.process_time(), time.perf_counter()
  summary = gan.train_and_evaluate(config, workdir)
  wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
  return {"dataset": dataset, "setting": setting, "seed": seed, "steps": config.num_steps,
          "modes": summary["modes_covered"], "num_modes": summary["num_modes"],
          "hq": summary["high_quality_fraction"], "kl": summary["mode_kl"],
          "wall_s": wall, "cpu_s": cpu, "steps_per_sec": summary.get("perf/steps_per_sec"),
          "workdir": workdir}


def _ms(values, fmt):
  v = np.asarray(values, np.float64)
  return f"{fmt.format(v.mean())} ± {fmt.format(v.std())}"


def table(rows: list[dict]) -> str:
  out = ["| data | setting | seeds | steps | modes covered | % high quality | mode KL | "
         "wall s / run | CPU s / run |",
         "|---|---|---|---|---|---|---|---|---|"]
  keys = sorted({(r["dataset"], r["setting"]) for r in rows},
                key=lambda k: (k[0], list(SETTINGS).index(k[1])))
  for dataset, setting in keys:
    rs = [r for r in rows if r["dataset"] == dataset and r["setting"] == setting]
    k = rs[0]["num_modes"]
    out.append(
        f"| {dataset} | {setting} | {len(rs)} | {rs[0]['steps']} | "
        f"{_ms([r['modes'] for r in rs], '{:.1f}')} / {k} | "
        f"{_ms([100 * r['hq'] for r in rs], '{:.1f}')} | {_ms([r['kl'] for r in rs], '{:.3f}')} | "
        f"{np.mean([r['wall_s'] for r in rs]):.0f} | {np.mean([r['cpu_s'] for r in rs]):.0f} |")
  return "\n".join(out)


def main(argv=None) -> list[dict]:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--datasets", nargs="+", default=["ring", "grid"], choices=["ring", "grid"])
  ap.add_argument("--settings", nargs="+", default=["ours", "minimax"], choices=list(SETTINGS))
  ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
  ap.add_argument("--steps", type=int, default=0, help="override the per-dataset step count")
  ap.add_argument("--workdir", default="/tmp/dgmjax_gan_modes")
  ap.add_argument("--json", default="")
  args = ap.parse_args(argv)

  rows = []
  for dataset in args.datasets:
    for setting in args.settings:
      for seed in args.seeds:
        r = run_one(dataset, setting, seed, args.steps or None, args.workdir)
        rows.append(r)
        print(f"{dataset} {setting} seed {seed}: {r['modes']}/{r['num_modes']} modes, "
              f"{100 * r['hq']:.1f}% HQ, KL {r['kl']:.3f}, {r['wall_s']:.0f}s wall, "
              f"{r['cpu_s']:.0f}s CPU", flush=True)
        if args.json:
          with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
  print()
  print("2500 samples per run; high quality = within 3σ (standardized Euclidean distance) of "
        "the nearest mode; KL = KL(mode histogram of the high-quality samples || uniform). "
        "Nets: G MLP 2→128→128→128→2 (ReLU), D MLP 2→128→128→128→1 (LeakyReLU 0.2); "
        "batch 256; Adam(β1=0.5, β2=0.999), lr 1e-3 for both players, one D step per G step; "
        "ours: non-saturating G loss, R1 γ = 0.1, cosine decay to 2%; minimax: saturating G "
        "loss, no R1, constant lr; vanilla (Metz et al.): G 2→128→128→2, D 2→128→1, 256-D noise, "
        "batch 512, lr 1e-4 constant, non-saturating, no R1.")
  print()
  print(table(rows))
  print()
  for dataset in args.datasets:
    print(f"Published ({dataset}, modes / % HQ): {PUBLISHED[dataset]}")
  return rows


if __name__ == "__main__":
  main()
