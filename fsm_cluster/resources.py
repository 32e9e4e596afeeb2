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
    process's last CPU times on its Process object, so the objects are kept between samples)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self._procs: dict[int, object] = {}
        self._smi = shutil.which("nvidia-smi")
        self._cpu_at = 0.0  # when CPU was last measured, and the figure (kept for a second: a state
        self._cpu = 0.0  # change writes again within ms, too short a span for a CPU percentage)
        self._gpu: list = []

    def sample(self):
        from .models import GpuUsage, Resources

        psutil = self._psutil
        try:
            current = [self._me] + self._me.children(recursive=True)
        except psutil.Error:
            current = [self._me]
        procs = {p.pid: self._procs.get(p.pid, p) for p in current}
        self._procs = procs
        import time

        now = time.monotonic()
        measure = now - self._cpu_at >= MIN_SPAN
        cpu = rss = 0.0
        alive = 0
        for p in procs.values():
            try:
                with p.oneshot():
                    if measure:
                        cpu += p.cpu_percent(None)
                    rss += p.memory_info().rss
                alive += 1
            except psutil.Error:
                continue
        if measure:
            self._cpu_at, self._cpu, self._gpu = now, cpu, self._gpus(GpuUsage)
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


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
