"""Peak resident memory of a benchmark process and of the worker processes it starts (Linux).

`getrusage`'s `ru_maxrss` will not do: Linux carries it across fork and
exec, so a process started by a benchmark that has just generated gigabytes
of data reports the benchmark's peak, not its own. `VmHWM` in
`/proc/<pid>/status` is the high-water mark of one process's own memory,
and exec resets it.
"""

from __future__ import annotations

import threading

import psutil


def high_water_mib(pid: int | str = "self") -> float:
    """`VmHWM` of a live process, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


class ChildrenPeak:
    """The largest `VmHWM` among this process's descendants, sampled while they run.

    A descendant's high-water mark only rises, so the last sample before it
    exits misses at most `interval` seconds of its growth.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self.interval):
            for child in me.children(recursive=True):
                try:
                    self.mib = max(self.mib, high_water_mib(child.pid))
                except (FileNotFoundError, ProcessLookupError, RuntimeError):
                    pass  # it exited between the listing and the read

    def __enter__(self) -> ChildrenPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
