"""What else runs while `python -m fastrnn bench` measures: the machine and this process's threads.

Figures taken while other processes hold the cores mean little, so every bench run watches two
things and prints a warning when either says the machine was busy:

- the CPU time the rest of the machine used during the run: busy time of all cores from
  /proc/stat minus this process's own CPU time (os.times), over the wall time, in cores;
- a fixed single-threaded calibration loop timed before and after the run: when the slower of
  the two takes much longer than the faster, the machine's speed changed under the figures.

The mixed bench also needs the CPU time of each of this process's threads (listed in
/proc/self/task, read from their CPU clocks), to tell which threads run while a pass runs.
"""
import os
import threading
import time

import numpy as np

# Warn when the other processes used more than this share of the cores on average.
BUSY_SHARE = 0.25
# Warn when the calibration loop's slower timing exceeds its faster one by more than this factor.
CALIBRATION_SPREAD = 1.25


def machine_cpu_seconds():
    """(busy, steal) CPU seconds of all cores since boot from /proc/stat, or None elsewhere.

    busy counts user, nice, system, irq and softirq time; steal is the time the hypervisor gave
    this VM's cores to other guests.
    """
    try:
        with open("/proc/stat", encoding="ascii") as file:
            fields = file.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(value) for value in fields[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    steal = ticks[7] if len(ticks) > 7 else 0
    return (user + nice + system + irq + softirq) / tick, steal / tick


def own_cpu_seconds():
    """CPU seconds used by every thread of this process so far."""
    times = os.times()
    return times.user + times.system


def calibration_seconds(repeats=5):
    """Best of `repeats` timings of a fixed single-threaded NumPy loop (about 10 ms on an idle core)."""
    values = np.linspace(0.0, 1.0, 1 << 16, dtype=np.float64)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(20):
            np.exp(values, out=np.empty_like(values))
        best = min(best, time.perf_counter() - start)
    return best


class LoadWatch:
    """Watches the machine from construction to `report()`; see the module's docstring."""

    def __init__(self):
        self.cores = os.cpu_count() or 1
        self.calibration_before = calibration_seconds()
        self.load_before = _load_average()
        self.start_wall = time.perf_counter()
        self.start_machine = machine_cpu_seconds()
        self.start_own = own_cpu_seconds()

    def measure(self):
        """What the machine did since construction: cores, wall_seconds, load_average_before and
        _after (1 minute), other_cores_busy, own_cores_busy and steal_cores (cores busy on average,
        where /proc/stat exists) and calibration_ms ([before, after])."""
        wall = time.perf_counter() - self.start_wall
        figures = {"cores": self.cores, "wall_seconds": wall, "load_average_before": self.load_before,
                   "load_average_after": _load_average()}
        end_machine = machine_cpu_seconds()
        if self.start_machine is not None and end_machine is not None and wall > 0:
            busy = end_machine[0] - self.start_machine[0]
            own = own_cpu_seconds() - self.start_own
            figures["other_cores_busy"] = max(0.0, busy - own) / wall
            figures["steal_cores"] = (end_machine[1] - self.start_machine[1]) / wall
            figures["own_cores_busy"] = own / wall
        figures["calibration_ms"] = [1e3 * self.calibration_before, 1e3 * calibration_seconds()]
        return figures

    def report(self):
        """(figures, lines): the dict of `measure` with "busy_warning" added, and `describe`'s lines."""
        figures = self.measure()
        warning, lines = describe(figures)
        figures["busy_warning"] = warning
        return figures, lines


def describe(figures):
    """(warning or None, lines to print) for the figures of `LoadWatch.measure`: the warning says
    which test found the machine too busy for the figures to mean much."""
    cores = figures["cores"]
    lines, reasons = [], []
    load = figures["load_average_before"], figures["load_average_after"]
    if None not in load:
        lines.append(f"load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after, on {cores} cores")
    if "other_cores_busy" in figures:
        lines.append(f"other processes used {figures['other_cores_busy']:.2f} of {cores} cores on average "
                     f"during the run (this one {figures['own_cores_busy']:.2f}, steal {figures['steal_cores']:.2f})")
        taken = figures["other_cores_busy"] + figures["steal_cores"]
        if taken > BUSY_SHARE * cores:
            reasons.append(f"other processes and steal took {taken:.2f} cores (limit {BUSY_SHARE * cores:.2f})")
    before, after = figures["calibration_ms"]
    spread = max(before, after) / min(before, after)
    lines.append(f"calibration loop {before:.1f} ms before, {after:.1f} ms after ({spread:.2f}x)")
    if spread > CALIBRATION_SPREAD:
        reasons.append(f"the calibration loop's timings differ by {spread:.2f}x (limit {CALIBRATION_SPREAD}x)")
    warning = "; ".join(reasons) or None
    if warning:
        lines.append("WARNING: the machine was busy, these figures may mean little: " + warning)
    return warning, lines


def _load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# -- threads of this process ----------------------------------------------------------------------


def thread_cpu_ns():
    """{thread id: CPU nanoseconds used so far} for every thread of this process ({} where /proc is
    missing)."""
    try:
        thread_ids = [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return {}
    times = {}
    for thread_id in thread_ids:
        value = _thread_clock_ns(thread_id)
        if value is not None:
            times[thread_id] = value
    return times


def _thread_clock_ns(thread_id):
    """The thread's CPU clock (Linux's clock id for a thread of this process: the id's complement
    shifted by 3, with CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED), which unlike /proc's counters includes
    the time since the thread was last scheduled; /proc/self/task/ID/stat's ticks elsewhere."""
    try:
        return time.clock_gettime_ns((~thread_id << 3) | 6)
    except (OSError, AttributeError, OverflowError):
        pass
    try:
        with open(f"/proc/self/task/{thread_id}/stat", encoding="ascii") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # the thread ended
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def cpu_during(fn, calls, before=None):
    """Run `before()` (untimed) and `fn()` `calls` times; returns (wall seconds of the fn calls,
    {thread id: CPU seconds used during them}), the CPU sampled around each fn call only."""
    used, wall = {}, 0.0
    for _ in range(calls):
        if before is not None:
            before()
        start_cpu = thread_cpu_ns()
        start = time.perf_counter()
        fn()
        wall += time.perf_counter() - start
        for thread_id, value in thread_cpu_ns().items():
            used[thread_id] = used.get(thread_id, 0.0) + (value - start_cpu.get(thread_id, 0)) / 1e9
    return wall, used


def label_threads(probes, calls=20):
    """{thread id: label}: the main thread, then for each (label, fn) of `probes` the threads
    other than the main one that used CPU while fn ran `calls` times (the first probe to claim a
    thread names it)."""
    main = threading.get_native_id()
    labels = {main: "main thread"}
    for label, fn in probes:
        fn()
        _, used = cpu_during(fn, calls)
        for thread_id, seconds in used.items():
            if thread_id not in labels and seconds > 0:
                labels[thread_id] = label
    return labels
