"""What a local cluster prints: every node's output behind its coloured prefix, and the live state line.

:class:`NodeConsole` reads each node's output on a thread of its own (appending it to the node's
log file as it comes), queues the lines and prints them from the launcher's loop behind a prefix
(``[main]`` bold cyan, ``[worker-1]`` a colour per worker, ``[ps-1]`` magenta, a replacement in the
colour of the node it replaces); the launcher's own lines come behind ``[cluster]``. The state
line (how many nodes are in each state, and the outcome once there is one) is a rich ``Live``
line on a terminal, else printed again whenever the counts change.

Quiet by default: the log files get every line, the console what a user watches — the code's own
output, warnings and errors. A line in a log format this project knows (the node's own, ``time
node LEVEL logger: message``; Dask's; Ray's CLI's; glog's, which torch's elastic agent and
TensorFlow's C++ core write) at INFO or below is left to the file (:func:`shown`); anything else,
whatever it looks like, is printed. ``verbose`` prints every line, as the files hold them.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from typing import IO, Mapping

from ..spec.nodeplan import NodePlan

# Records at INFO or below (DEBUG, INFO; Ray's SUCC) in the formats the nodes and engines log in.
CHATTER = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+(?:"
    r"\S+ (?:DEBUG|INFO) [\w.]+: "                      # the node: time node LEVEL logger: message
    r"|- (?:distributed|dask)[\w.]* - (?:DEBUG|INFO) - "  # Dask: time - logger - LEVEL - message
    r"|(?:DEBUG|INFO|SUCC) [\w.]+:\d+ -- )"              # Ray's CLI: time LEVEL file:line -- message
    r"|I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "             # glog (torch's agent, TF's C++), INFO
)


def shown(line: str) -> bool:
    """Whether the quiet console prints this line of a node's output: not a log record at INFO or
    below in a known format (the file has it); everything else is."""
    return CHATTER.match(line) is None


PREFIX_STYLES = ["green", "yellow", "blue", "magenta", "bright_green", "bright_yellow", "bright_blue"]


def prefix_style(plan: NodePlan, index: int) -> str:
    if plan.mode == "MAIN":
        return "bold cyan"
    if plan.mode == "PS":
        return "bold bright_magenta"
    return PREFIX_STYLES[(index - 1) % len(PREFIX_STYLES)]


def counts_text(counts: Mapping[str, int], size: int, replaced: int) -> str:
    """``3 nodes: 2 running, 1 starting``: the nodes per state (most first), those with no state
    file yet, and how many were replaced."""
    parts = [f"{c} {s}" for s, c in sorted(counts.items(), key=lambda kv: -kv[1])]
    pending = size - sum(counts.values())
    if pending > 0:
        parts.append(f"{pending} starting")
    if replaced:
        parts.append(f"{replaced} replaced")
    return f"{size} nodes: " + ", ".join(parts)


def status_line(cluster_id: str, counts: str, outcome: str | None, error: str | None):
    """The live line: the cluster, its counts, its outcome once known, a work-dir error if any."""
    from rich.text import Text

    text = Text.assemble(("cluster ", "dim"), (cluster_id, "bold"), "  ", counts)
    if outcome is not None:
        text.append(f"  · {outcome}", style="bold")
    if error:
        text.append(f"  · {error}", style="red")
    return text


class NodeConsole:
    """The launcher's console (a rich ``Console``): node output, its own lines, the state line."""

    def __init__(self, plans: list[NodePlan], console=None, progress: bool = True, verbose: bool = False):
        self._console = console  # made at the first line printed: rich loads while the nodes start
        self.progress = progress
        self.verbose = verbose  # every line of the nodes' output, not only what :func:`shown` keeps
        self.width = max(len(p.name) for p in plans) + 2
        self.styles = {p.name: prefix_style(p, i) for i, p in enumerate(plans)}
        self.lines: queue.Queue = queue.Queue()
        self.readers: list[threading.Thread] = []
        self._live = None
        self._last_counts = ""

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False)
        return self._console

    def add(self, name: str, like: str) -> None:
        """A node started later (a replacement) gets the prefix colour of the node ``like``."""
        self.styles[name] = self.styles.get(like, "bold")
        self.width = max(self.width, len(name) + 2)

    def _prefix(self, name: str, style: str):
        from rich.text import Text

        return Text(f"[{name}]".ljust(self.width + 1), style=style)

    def say(self, message: str, style: str = "bold") -> None:
        """One line of the launcher's own."""
        from rich.text import Text

        self.console.print(self._prefix("cluster", "bold white"), Text(message, style=style),
                           sep="", soft_wrap=True)

    def _print_line(self, name: str, line: str) -> None:
        from rich.text import Text

        self.console.print(self._prefix(name, self.styles.get(name, "bold")), Text(line), sep="",
                           soft_wrap=True)

    # -- node output -----------------------------------------------------------------------------
    def follow(self, name: str, stream: IO[bytes], log_path: str) -> None:
        """Read ``stream`` (the node's stdout and stderr) on a thread: every line into ``log_path``,
        the lines to print (all when verbose) into the queue."""
        t = threading.Thread(target=self._reader, name=f"out-{name}", daemon=True,
                             args=(name, stream, log_path))
        t.start()
        self.readers.append(t)

    def _reader(self, name: str, stream: IO[bytes], log_path: str) -> None:
        with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC),
                       "ab", buffering=0) as log:
            for raw in iter(stream.readline, b""):
                log.write(raw)
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if self.verbose or shown(line):
                    self.lines.put((name, line))
        stream.close()

    def drain(self, limit: int = 500) -> int:
        """Print up to ``limit`` queued lines without waiting; how many were printed."""
        n = 0
        while n < limit:
            try:
                self._print_line(*self.lines.get_nowait())
            except queue.Empty:
                break
            n += 1
        return n

    def wait_line(self, timeout: float) -> None:
        """Print the next line if one comes within ``timeout`` s (the launcher loop's pause)."""
        try:
            self._print_line(*self.lines.get(timeout=timeout))
        except queue.Empty:
            pass

    def finish(self, timeout: float = 5) -> None:
        """The nodes are gone: wait up to ``timeout`` s per reader, then print every line left."""
        for t in self.readers:
            t.join(timeout=timeout)
        self.drain(limit=10**9)

    # -- the state line --------------------------------------------------------------------------
    def start_live(self, status) -> None:
        """A live state line on a terminal (with progress on); elsewhere :meth:`show` prints lines."""
        from rich.live import Live

        if self.progress and self.console.is_terminal:
            self._live = Live(status, console=self.console, transient=True, auto_refresh=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()

    def stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def show(self, status, counts: str) -> None:
        """The live line gets ``status``; without one, ``counts`` is printed when it changed."""
        if self._live is not None:
            self._live.update(status, refresh=True)
        elif self.progress and counts != self._last_counts:
            self._last_counts = counts
            self.say(counts, "dim")
