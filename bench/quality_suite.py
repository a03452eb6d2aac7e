"""Every quality benchmark of the project in one command, collected into one Markdown file.

Runs the existing benchmark scripts as subprocesses, each with its own flags,
and writes what each printed (its Markdown tables; progress lines are dropped)
under a heading, with the command, exit status and wall time, plus the date,
machine and commit at the top. The file is rewritten after every script, so
a long run that is stopped keeps what it finished.

=================  ==============================================================
benchmark          what it measures
=================  ==============================================================
vqvae_codebooks    VQ-VAE codebook rules at equal steps (EMA, restarts, k-means)
vae_priors         N(0, I) vs RealNVP flow prior: the ELBO-surgery table
dvae_estimators    Gumbel-softmax vs straight-through estimators (categorical VAE)
gan_modes          GAN mode coverage on the ring and the grid, over seeds
kl_vs_jsd_demo     one Gaussian fitted to a mixture by forward KL, reverse KL, JSD
avb_toy            AVB vs a Gaussian-encoder VAE on the four-point toy
avb_kl_check       the AVB discriminator's KL estimate vs the analytic KL
avb_mnist          AVB vs the Gaussian VAE on the offline digits
density_ratio_kl   a classifier's density-ratio KL estimate vs the closed form
=================  ==============================================================

The full suite takes hours on a 2-core CPU (``dvae_estimators`` alone 20–40
min, ``gan_modes`` 20 runs of 1–2 min, by their own docstrings).

Run::

    python bench/quality_suite.py                    # everything, the scripts' defaults (hours)
    python bench/quality_suite.py --quick            # plumbing check: tiny steps and seeds
    python bench/quality_suite.py --only gan_modes kl_vs_jsd_demo --out gan_quality.md
    python bench/quality_suite.py --dry-run          # print the commands only

Full runs use each script's defaults, including where it keeps its runs (most
reuse a finished run found there) and the pictures it writes under
``docs/images``. ``--quick`` runs everything with a few steps and one seed
under ``--workdir`` (deleted first), so its numbers only show that the
plumbing works; they are not results.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from speed_suite import machine_lines  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Bench:
  script: str
  about: str
  full: tuple[str, ...] = ()
  quick: tuple[str, ...] = ()  # "{work}" is replaced by the quick work directory


BENCHES = {
    "vqvae_codebooks": Bench(
        "vqvae_codebooks.py", "VQ-VAE codebook rules at equal steps (EMA, restarts, k-means)",
        quick=("--steps", "200", "--seeds", "0")),  # >= 2 log windows of 100
    "vae_priors": Bench(
        "vae_priors.py", "VAE: N(0, I) vs RealNVP prior, ELBO-surgery table",
        quick=("--seeds", "1", "--steps", "50", "--iwae_k", "10", "--iwae_k_train", "0",
               "--out", "{work}/vae_priors")),
    "dvae_estimators": Bench(
        "dvae_estimators.py", "categorical VAE: Gumbel-softmax vs straight-through estimators",
        quick=("--steps", "60", "--seeds", "0", "--eval_every", "30", "--iwae", "10",
               "--workdir", "{work}/dvae_estimators", "--fresh")),
    "gan_modes": Bench(
        "gan_modes.py", "GAN mode coverage on the ring and grid (VEEGAN/PacGAN protocol)",
        quick=("--seeds", "0", "--steps", "1000", "--workdir", "{work}/gan_modes")),
    "kl_vs_jsd_demo": Bench(
        "kl_vs_jsd_demo.py", "one Gaussian fitted to a mixture by forward KL, reverse KL, JSD",
        quick=("--steps", "300", "--out", "{work}/gan_kl_vs_jsd.png")),
    "avb_toy": Bench(
        "avb_toy.py", "AVB vs a Gaussian-encoder VAE on the four-point toy",
        quick=("--seeds", "1", "--steps", "400", "--out", "{work}/avb_toy",  # >= 2 log windows
               "--picture", "{work}/avb_toy_posteriors.png")),
    "avb_kl_check": Bench(
        "avb_kl_check.py", "AVB discriminator's KL estimate vs the analytic KL",
        quick=("--seeds", "1", "--settings", "toy", "--out", "{work}/avb_kl_check",
               "--plot", "{work}/avb_kl_check.png")),
    "avb_mnist": Bench(
        "avb_mnist.py", "AVB vs the Gaussian VAE on the offline digits, equal steps",
        quick=("--seeds", "1", "--steps", "200", "--latent_dim", "8", "--avb_variants", "avb",
               "--out", "{work}/avb_mnist")),
    "density_ratio_kl": Bench(
        "density_ratio_kl.py", "density-ratio trick: a classifier's KL vs the closed form",
        quick=("--steps", "200", "--seeds", "0", "--n_eval", "20000")),
}

# Progress lines of the trainers and scripts; the tables and conclusions stay.
_NOISE = re.compile(r"^(summary: |first step \(compile|step \d+ |resuming from step)")


def command(name: str, quick: bool, work: str) -> list[str]:
  bench = BENCHES[name]
  args = [a.replace("{work}", work) for a in (bench.quick if quick else bench.full)]
  return [sys.executable, os.path.join("bench", bench.script), *args]


def run_one(name: str, args, work: str) -> dict:
  cmd = command(name, args.quick, work)
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=args.timeout or None)
    code, out, err = proc.returncode, proc.stdout, proc.stderr
  except subprocess.TimeoutExpired as e:
    code = "timeout"
    out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    err = f"stopped after {args.timeout}s"
  wall = time.perf_counter() - t0
  kept = [ln for ln in out.splitlines() if not _NOISE.match(ln)]
  return {"name": name, "cmd": cmd, "code": code, "wall": wall,
          "stdout": "\n".join(kept).strip(), "stderr_tail": err.strip().splitlines()[-8:]}


def render(results: list[dict], args, pending: list[str]) -> str:
  mode = "quick (plumbing check: tiny steps, one seed; not results)" if args.quick else "full"
  out = ["# dgmjax quality suite", ""] + machine_lines() + [
      f"- mode: {mode}", f"- command: `python bench/quality_suite.py {' '.join(args.argv)}`", ""]
  out += ["| benchmark | status | wall |", "|---|---|---|"]
  for r in results:
    status = "ok" if r["code"] == 0 else f"failed ({r['code']})"
    out.append(f"| [{r['name']}](#{r['name']}) | {status} | {r['wall']:.0f} s |")
  out += [f"| {name} | not run yet | |" for name in pending]
  for r in results:
    bench = BENCHES[r["name"]]
    shown = " ".join(["python", *r["cmd"][1:]])
    text = r["stdout"] or "(printed nothing)"
    if not re.search(r"^\|[- |:]+\|$", text, re.M):  # no Markdown table: keep it verbatim
      text = "```\n" + text + "\n```"
    out += ["", f"## {r['name']}", "", f"{bench.about}. `{shown}`: exit {r['code']}, "
            f"{r['wall']:.0f} s.", "", text]
    if r["code"] != 0 and r["stderr_tail"]:
      out += ["", "```", *r["stderr_tail"], "```"]
  return "\n".join(out) + "\n"


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES),
                  metavar="NAME", help=f"a subset of {list(BENCHES)}")
  ap.add_argument("--quick", action="store_true",
                  help="tiny steps and one seed under --workdir (checks the plumbing)")
  ap.add_argument("--dry-run", action="store_true", help="print the commands and exit")
  ap.add_argument("--out", default="",
                  help="Markdown file (default workdir/quality_suite[_quick].md)")
  ap.add_argument("--workdir", default="workdir/quality_suite_quick",
                  help="where --quick runs keep their files (deleted first)")
  ap.add_argument("--timeout", type=int, default=0, help="seconds per script (0: none)")
  args = ap.parse_args(argv)
  args.argv = argv
  work = os.path.abspath(os.path.join(ROOT, args.workdir))
  if args.dry_run:
    for name in args.only:
      print(" ".join(["python", *command(name, args.quick, work)[1:]]))
    return 0
  out_path = args.out or os.path.join(
      ROOT, "workdir", "quality_suite_quick.md" if args.quick else "quality_suite.md")
  if args.quick and os.path.isdir(work):
    shutil.rmtree(work)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  results = []
  for i, name in enumerate(args.only):
    print(f"[{name}] {' '.join(['python', *command(name, args.quick, work)[1:]])}",
          file=sys.stderr, flush=True)
    results.append(run_one(name, args, work))
    r = results[-1]
    print(f"[{name}] exit {r['code']}, {r['wall']:.0f} s", file=sys.stderr, flush=True)
    with open(out_path, "w") as f:  # rewritten after every script
      f.write(render(results, args, args.only[i + 1:]))
  print(open(out_path).read())
  print(f"wrote {out_path}", file=sys.stderr)
  return 0 if all(r["code"] == 0 for r in results) else 1


if __name__ == "__main__":
  sys.exit(main())
