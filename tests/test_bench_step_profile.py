"""bench/step_profile.py: the thread-use sweep over a trace's spans."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "bench_step_profile",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                 "step_profile.py"))
step_profile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(step_profile)


def test_thread_use_counts_overlap_idle_nesting_and_zero_length_spans():
  events = [
      (0, 10, "A", "a"),
      (5, 15, "B", "b"),
      (12, 12, "A", "z"),  # zero length: must not leave A busy afterwards
      (20, 30, "A", "outer"),
      (22, 25, "A", "inner"),  # nested: A runs inner, then outer again
  ]
  busy, alone = step_profile.thread_use(events)
  assert dict(busy) == {0: 5, 1: 20, 2: 5}
  assert sum(busy.values()) == 30  # first start to last end
  assert dict(alone) == {"a": 5, "b": 5, "outer": 7, "inner": 3}


def test_thread_use_of_two_threads_always_busy_and_of_nothing():
  busy, alone = step_profile.thread_use([(0, 7, "A", "x"), (0, 7, "B", "y")])
  assert dict(busy) == {2: 7} and not alone
  busy, alone = step_profile.thread_use([])
  assert not busy and not alone
