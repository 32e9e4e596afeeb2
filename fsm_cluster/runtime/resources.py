"""What a node uses, carried by each heartbeat: CPU and memory of the node and everything it
started (psutil), and GPU utilisation and memory where ``nvidia-smi`` exists."""

from __future__ import annotations

import logging
import shutil
import subprocess

log = logging.getLogger(__name__)

MIN_SPAN = 1.0  # s: the shortest span a CPU percentage is measured over
GPU_QUERY = ["--query-gpu=utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits"]


class Sampler:
    """One per node. CPU percentages are over the time since the previous sample (psutil keeps a
    process's last CPU times on its Process object, so the objects are kept between samples); a
    process's first is its average over its life so far."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self._procs: dict[int, object] = {}
        self._smi = shutil.which("nvidia-smi")
        self._cpu_at = 0.0  # when the figures were last taken, and the CPU one (a state change writes
        self._cpu = 0.0  # again within ms: too short a span for a CPU percentage, and a /proc scan each)
        self._gpu: list = []
        self._last = None  # the last figures (reused within MIN_SPAN)

    def sample(self):
        """The figures, taken at most once per MIN_SPAN (a scan of the node's process tree reads
        /proc; state changes and short heartbeat intervals reuse the last one)."""
        import time

        if self._last is not None and time.monotonic() - self._cpu_at < MIN_SPAN:
            return self._last
        self._last = self._take()
        return self._last

    def _take(self):
        from ..wire.models import GpuUsage, Resources

        psutil = self._psutil
        try:
            current = [self._me] + self._me.children(recursive=True)
        except psutil.Error:
            current = [self._me]
        previous = self._procs
        procs = {p.pid: previous.get(p.pid, p) for p in current}
        self._procs = procs
        import time

        cpu = rss = 0.0
        alive = 0
        now = time.time()
        for pid, p in procs.items():
            try:
                with p.oneshot():
                    if pid in previous:
                        cpu += p.cpu_percent(None)  # since this process's previous sample (≥ MIN_SPAN ago)
                    else:  # first seen (the node's first sample is taken an interval into its life):
                        p.cpu_percent(None)  # its average so far; psutil's own first answer is 0.0
                        cpu += _average_cpu(p, now)
                    rss += p.memory_info().rss
                alive += 1
            except psutil.Error:
                continue
        self._cpu_at, self._cpu, self._gpu = time.monotonic(), cpu, self._gpus(GpuUsage)
        total = psutil.virtual_memory().total
        return Resources(cpu_percent=round(self._cpu, 1), rss_bytes=int(rss), processes=alive,
                         mem_percent=round(100.0 * rss / total, 2) if total else 0.0, gpus=self._gpu)

    def _gpus(self, GpuUsage) -> list:  # noqa: N803 - the model class
        if not self._smi:
            return []
        try:
            out = subprocess.run([self._smi, *GPU_QUERY], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError) as e:
            log.debug("nvidia-smi: %s", e)
            return []
        gpus = []
        for line in out.splitlines():
            try:
                util, used, total = (float(x) for x in line.split(","))
            except ValueError:
                continue
            gpus.append(GpuUsage(util_percent=util, mem_used_mib=used, mem_total_mib=total))
        return gpus


def _average_cpu(p, now: float) -> float:
    """A process's CPU percentage over its life so far (0.0 if it started under MIN_SPAN ago: its
    start time is known to the second only, through the boot time)."""
    span = now - p.create_time()
    if span < MIN_SPAN:
        return 0.0
    t = p.cpu_times()
    return 100.0 * (t.user + t.system) / span


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
