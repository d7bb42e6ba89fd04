"""A pytest plugin that prints the CPU each test used, its own and its subprocesses', busiest first.

    python -m pytest -n 2 --dist loadscope -p bench.pytest_cpu

On two cores the suite's wall time is bound by its CPU, not by how long each
test waits, so `--durations` (wall time, inflated by whatever ran beside the
test) does not say what to cut. Each phase (set-up, call, tear-down) is timed
with `getrusage` in the process that runs it: its own CPU, and that of the
child processes it waited for (pipelines, Keras Tuner workers, servers). The
numbers travel on the reports' `user_properties`, so they reach the table
under pytest-xdist too.
"""

from __future__ import annotations

import resource
import time
from collections import defaultdict

import pytest

_KEY = "cpu_seconds"
_started: dict[str, tuple[float, float, float]] = {}
_tests: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])


def _now() -> tuple[float, float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime, time.perf_counter()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logstart(nodeid, location):
    _started[nodeid] = _now()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    start = _started.get(item.nodeid)
    if start is not None:
        end = _now()
        outcome.get_result().user_properties.append((_KEY, tuple(b - a for a, b in zip(start, end))))
        _started[item.nodeid] = end


def pytest_runtest_logreport(report):
    for key, value in report.user_properties:
        if key == _KEY:
            totals = _tests[report.nodeid]
            for i, seconds in enumerate(value):
                totals[i] += seconds


def pytest_terminal_summary(terminalreporter):
    rows = sorted(_tests.items(), key=lambda row: -(row[1][0] + row[1][1]))
    own, children, wall = (sum(row[1][i] for row in rows) for i in range(3))
    write = terminalreporter.write_line
    terminalreporter.section("CPU seconds per test (own + subprocesses), busiest first")
    write(f"{'own':>7} {'children':>9} {'wall':>7}  test")
    for nodeid, (test_own, test_children, test_wall) in rows[:40]:
        write(f"{test_own:7.1f} {test_children:9.1f} {test_wall:7.1f}  {nodeid}")
    write(f"{own:7.1f} {children:9.1f} {wall:7.1f}  all {len(rows)} tests")
