"""Where the default VQ-VAE train step spends its time on this CPU: a whole-step trace.

The default ``train.vqvae`` model (built from its ``get_config()``: batch 128,
K = 512, D = 32, one device, batch slices as the trainer gets them) and its
step: MSE + the VQ loss, gradients, Adam, the EMA codebook update with
dead-code restart, jitted with the state donated. After ``--warmup`` steps,
``--steps`` steps are timed (wall and process CPU time), then ``--trace``
more run under ``jax.profiler``, and the trace is read back with
``jax.profiler.ProfileData``:

* **op time by kind**: XLA CPU thunks (each fusion, convolution or library
  call once per step) summed over the runtime's threads, grouped by what they
  compute (forward / backward convolutions, layout copies, the nearest-code
  search, ...) from the op names of the compiled HLO;
* **thread use**: per step, how long 0, 1 and 2 or more threads were busy;
  a step that keeps one core of two busy most of the time is what the
  batch slices (``dgmjax.nn.batch_slices``) are meant to avoid;
* the longest single ops, and those that ran while every other thread idled.

Set ``XLA_FLAGS`` in the environment to see an XLA option's effect (the
trainers set none on CPU). The op times are the trace's, which adds a few
percent to each op; the step times above them are not traced.

Run::

    python bench/step_profile.py [--steps 30] [--trace 10] [--top 20]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build_step():
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from dgmjax.nn.vqvae import VQVAE
  from train import vqvae

  c = vqvae.get_config()
  model = VQVAE(num_codes=c.num_codes, code_dim=c.code_dim, channels=tuple(c.channels),
                num_res_blocks=c.num_res_blocks, res_hidden=c.res_hidden, beta=c.beta,
                use_ema=c.codebook == "ema", decay=c.ema_decay,
                dead_code_threshold=c.dead_code_threshold)
  x = jnp.asarray(np.random.default_rng(0).random((c.batch_size, 28, 28, 1), np.float32))
  variables = model.init(jax.random.key(0), x)
  tx = optax.adam(c.learning_rate)

  def step(params, opt, ema, x, key):
    def loss_fn(p):
      (x_rec, out, _), upd = model.apply({"params": p, "vq_ema": ema}, x, train=True,
                                         mutable=["vq_ema"], rngs={"vq_restart": key})
      return jnp.mean((x_rec - x) ** 2) + jnp.mean(out.loss), upd

    (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, upd["vq_ema"], loss

  fn = jax.jit(step, donate_argnums=(0, 1, 2))
  state = (variables["params"], tx.init(variables["params"]), variables["vq_ema"])
  return fn, state, x


def _kind(name: str, op: str) -> str:
  """A coarse label for one thunk, from its HLO name and op_name metadata."""
  backward = "transpose(" in op
  if "quantizer" in op:
    return "nearest code, EMA, restart (quantizer)"
  if "conv_general_dilated" in op or name.startswith("convolution"):
    return "convolution, " + ("backward" if backward else "forward")
  if name.startswith(("transpose", "copy")) or "transpose_copy" in name:
    return "layout copies (transpose/copy)"
  if "reduce_sum" in op and backward:
    return "bias gradients (reduce_sum)"
  if "adam" in op.lower() or "optax" in op.lower() or op.endswith(("/sqrt", "/rsqrt")):
    return "optimizer"
  return "other elementwise / fusions"


def thread_use(events) -> tuple[collections.Counter, collections.Counter]:
  """From ``(start, end, thread, name)`` spans: time with 0, 1 and 2+ threads busy, and
  per op the time it ran while every other thread idled.

  The spans of one thread may nest or touch; a thread is busy while any of its spans is
  open (the innermost one is what it runs), from the first start to the last end.
  """
  # Starts before ends at equal times, so a zero-length op opens and closes.
  points = sorted([(s, 1, t, n) for s, e, t, n in events] + [(e, -1, t, n) for s, e, t, n in events],
                  key=lambda p: (p[0], -p[1]))
  stacks: dict[str, list[str]] = {}  # per busy thread, its open spans
  busy: collections.Counter = collections.Counter()
  alone: collections.Counter = collections.Counter()
  last = points[0][0] if points else 0
  for t, d, thread, name in points:
    busy[min(len(stacks), 2)] += t - last
    if len(stacks) == 1:
      alone[next(iter(stacks.values()))[-1]] += t - last
    last = t
    if d > 0:
      stacks.setdefault(thread, []).append(name)
    else:
      spans = stacks[thread]
      del spans[len(spans) - 1 - spans[::-1].index(name)]
      if not spans:
        del stacks[thread]
  return +busy, +alone  # unary plus drops the zero entries


def profile(fn, state, x, n_trace: int, top: int) -> list[str]:
  import jax

  compiled_text = fn.lower(*state, x, jax.random.key(1)).compile().as_text()
  op_names = {}
  for line in compiled_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%(\S+) = ", line)
    if m:
      on = re.search(r'op_name="([^"]*)"', line)
      op_names[m.group(1)] = on.group(1) if on else ""
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    key = jax.random.key(2)
    for _ in range(n_trace):
      *state, loss = fn(*state, x, key)
    jax.block_until_ready(loss)
    jax.profiler.stop_trace()
    files = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs if f.endswith(".xplane.pb")]
    data = jax.profiler.ProfileData.from_file(files[0])
  events = []  # (start, end, thread, name)
  for plane in data.planes:
    for line in plane.lines:
      if "XLA" not in line.name:  # the runtime's threads, not Python's
        continue
      for ev in line.events:
        # The executor's own spans enclose the ops; "while" encloses its body's.
        # The profiler's own bookkeeping ("ThreadpoolListener::Record") is not work.
        if ev.name.startswith(("ThunkExecutor", "ThreadpoolListener")) or ev.name == "while":
          continue
        events.append((ev.start_ns, ev.start_ns + ev.duration_ns, line.name, ev.name))
  per_op = collections.Counter()
  for s, e, _, name in events:
    per_op[name] += e - s
  by_kind = collections.Counter()
  for name, ns in per_op.items():
    by_kind[_kind(name, op_names.get(name, ""))] += ns
  busy, alone = thread_use(events)
  ms = lambda ns: ns / n_trace / 1e6  # noqa: E731
  total = sum(per_op.values())
  wall = sum(busy.values())
  out = [f"Traced {n_trace} steps: op time {ms(total):.1f} ms per step summed over threads; "
         f"wall {ms(wall):.1f} ms per step, of which 2+ threads busy {ms(busy[2]):.1f}, "
         f"one thread {ms(busy[1]):.1f}, none {ms(busy[0]):.1f}.", "",
         "| what | ms per step (all threads) | share |", "|---|---|---|"]
  for kind, ns in by_kind.most_common():
    out.append(f"| {kind} | {ms(ns):.2f} | {100 * ns / total:.0f}% |")
  out += ["", f"Longest ops (ms per step; op_name from the compiled HLO), top {top}:", "",
          "| op | ms | op_name |", "|---|---|---|"]
  for name, ns in per_op.most_common(top):
    out.append(f"| {name} | {ms(ns):.2f} | {op_names.get(name, '')[-80:]} |")
  out += ["", f"Ops that ran while every other thread idled, top {top}:", "",
          "| op | ms alone | op_name |", "|---|---|---|"]
  for name, ns in alone.most_common(top):
    out.append(f"| {name} | {ms(ns):.2f} | {op_names.get(name, '')[-80:]} |")
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--warmup", type=int, default=5)
  ap.add_argument("--steps", type=int, default=30, help="untraced steps timed")
  ap.add_argument("--trace", type=int, default=10, help="steps run under the profiler")
  ap.add_argument("--top", type=int, default=15)
  args = ap.parse_args(argv)
  import jax

  load = os.getloadavg()[0]
  fn, state, x = build_step()
  key = jax.random.key(1)
  for _ in range(args.warmup):
    *state, loss = fn(*state, x, key)
  jax.block_until_ready(loss)
  c0, w0 = time.process_time(), time.perf_counter()
  for _ in range(args.steps):
    *state, loss = fn(*state, x, key)
  jax.block_until_ready(loss)
  wall = 1e3 * (time.perf_counter() - w0) / args.steps
  cpu = 1e3 * (time.process_time() - c0) / args.steps
  lines = [f"VQ-VAE default train step, jax {jax.__version__}, {jax.device_count()} "
           f"{jax.default_backend()} device(s), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
           f"1-minute load {load:.2f} at the start", "",
           f"Untraced: {wall:.1f} ms per step wall, {cpu:.1f} ms process CPU "
           f"({cpu / wall:.2f} cores busy on average), {args.steps} steps.", ""]
  lines += profile(fn, state, x, args.trace, args.top)
  lines.append(f"\n1-minute load {os.getloadavg()[0]:.2f} at the end")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
