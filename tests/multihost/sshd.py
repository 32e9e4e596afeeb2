"""A real OpenSSH sshd on every host, for Horovod across hosts: horovodrun on MAIN starts the other
hosts' ranks over SSH, as oracle-ads' Horovod images provide it (an sshd in every container; its
port in OCI__HOROVOD_SSH_PORT → horovodrun ``-p``, the key in OCI__START_ARGS → ``-i``).

:class:`SshServers` (``start()`` … ``close()``, or a ``with`` block) makes, in a folder of its own:

* one throwaway host key and one throwaway client key (ed25519, no passphrase), the client key
  root's only authorized key;
* per host an ``sshd -D`` under ``ip netns exec <host>``, listening only on the host's address
  (:data:`PORT`), its own config (public key only, no PAM, no password, root by key) and log;
* an ssh client config (``StrictHostKeyChecking no``, ``UserKnownHostsFile /dev/null``: nothing is
  written to root's ~/.ssh, which ssh finds from the password database, never from HOME) and an
  ``ssh`` wrapper using it (``ssh -F <config>``), first on the nodes' PATH (:meth:`SshServers.env`):
  horovodrun runs plain ``ssh`` through a shell. horovodrun passes ``-p`` and ``-i`` itself.

horovodrun exports its whole environment on the remote command line (``env K=V … <python>
<script>``): the remote ranks run the same venv python with the same variables as the ranks on MAIN.

Each host also gets a hostname of its own (:class:`NamedHost`, :attr:`SshServers.hosts`: its
namespace's name, which the hosts' /etc/hosts maps to its address), as real machines have: the
namespaces otherwise share this machine's hostname, which its /etc/hosts maps to 127.0.0.1, and
Horovod 0.28's gloo contexts of process sets (the global one included) ignore HOROVOD_GLOO_IFACE and
bind to the address of the hostname (GlooContext::InitializeForProcessSet creates its device from an
interface it never set): every rank advertised 127.0.0.1 and the other hosts' ranks failed with
``connect [127.0.0.1]:…: Connection refused``. The nodes must run on these hosts too (MAIN's ranks
are started by horovodrun in MAIN's node).

:meth:`SshServers.close` kills every sshd and every session (and what runs in it) they started.
:func:`sshd_missing` says why sshd cannot run here (``apt-get install openssh-server``;
scripts/test.sh installs it as root); the ``sshd`` fixture skips with that reason, or with why the
sshds did not start, and fails instead under CI=true.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from fsm_cluster.launch.hosts import Host

PORT = 2222  # every host's sshd (each host has its own network); not 22, so horovodrun's -p counts
START_GUARD = 30.0  # seconds for the sshds to accept a login (a hang guard)
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
INSTALL = "apt-get install openssh-server (bash scripts/test.sh installs it as root)"


@dataclass(frozen=True)
class NamedHost(Host):
    """A host whose processes have its namespace's name as hostname (a UTS namespace of their own,
    ``unshare --uts``; the same process id, as with Host: each step execs the next)."""

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        return super().wrap(["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *cmd])


def named(host: Host) -> NamedHost:
    return host if isinstance(host, NamedHost) else NamedHost(*(getattr(host, f.name) for f in fields(host)))


def _which(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path=os.pathsep.join(SBIN))


def sshd_missing() -> str | None:
    """Why an OpenSSH sshd cannot run here (sshd, ssh or ssh-keygen missing), else None."""
    missing = [p for p in ("sshd", "ssh", "ssh-keygen", "unshare", "hostname") if _which(p) is None]
    if missing:
        return f"Horovod across hosts needs OpenSSH and util-linux ({', '.join(missing)} not found): {INSTALL}"
    return None


class SshServers:
    """An sshd per host of ``hosts`` and the client side the nodes use (see the module doc);
    ``folder``: where the keys, configs and logs go (default: a temporary folder, removed at close)."""

    def __init__(self, hosts: Sequence[Host], folder: Path | None = None, port: int = PORT):
        self.hosts: list[NamedHost] = [named(h) for h in hosts]  # run the nodes on these
        self.port = port
        self._own_folder = folder is None
        self.folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="fsm-sshd-"))
        self.key = self.folder / "client_ed25519"
        self.config = self.folder / "ssh_config"
        self.bin = self.folder / "bin"
        self.procs: list[subprocess.Popen] = []
        self._seen: dict[int, object] = {}  # pid → psutil.Process: the sshds' sessions and theirs

    def __enter__(self) -> "SshServers":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- starting ----------------------------------------------------------------------------
    def log(self, host: Host) -> Path:
        return self.folder / f"sshd-{host.index}.log"

    def start(self) -> "SshServers":
        """Keys, configs, an sshd per host; returns once every sshd accepted a login from host 0.
        A RuntimeError says why not (the sshds started are killed)."""
        problem = sshd_missing()
        if problem:
            raise RuntimeError(problem)
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        f = self.folder
        f.mkdir(parents=True, exist_ok=True)
        os.chmod(f, 0o700)
        keygen = _which("ssh-keygen")
        for key, comment in ((f / "host_ed25519", "fsm-test-host"), (self.key, "fsm-test-client")):
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                           check=True, capture_output=True, timeout=60)
        shutil.copyfile(f"{self.key}.pub", f / "authorized_keys")
        os.chmod(f / "authorized_keys", 0o600)
        self.config.write_text("# ssh client of the multi-host tests (tests/multihost/sshd.py): throwaway keys\n"
                               "Host *\n  User root\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                               "  GlobalKnownHostsFile /dev/null\n  BatchMode yes\n  IdentitiesOnly yes\n"
                               "  LogLevel ERROR\n  ConnectTimeout 10\n")
        os.chmod(self.config, 0o600)
        self.bin.mkdir(exist_ok=True)
        wrapper = self.bin / "ssh"
        wrapper.write_text("#!/bin/sh\n# ssh with the multi-host tests' client config (tests/multihost/sshd.py)\n"
                           f"exec {shlex.quote(_which('ssh'))} -F {shlex.quote(str(self.config))} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        # sshd's privilege separation directory (compiled in); the package's service makes it at boot
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        sshd = _which("sshd")  # an absolute path: sshd re-executes itself
        for h in self.hosts:
            conf = f / f"sshd_config-{h.index}"
            conf.write_text(f"# sshd of host {h.name} (tests/multihost/sshd.py)\n"
                            f"ListenAddress {h.address}:{self.port}\nHostKey {f / 'host_ed25519'}\n"
                            f"AuthorizedKeysFile {f / 'authorized_keys'}\nPidFile none\n"
                            "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
                            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                            "StrictModes no\nUseDNS no\nPrintMotd no\nX11Forwarding no\n"
                            "AllowTcpForwarding no\nMaxStartups 100\nLogLevel VERBOSE\n")
            with open(os.devnull, "rb") as null:
                self.procs.append(subprocess.Popen(
                    h.wrap([sshd, "-D", "-f", str(conf), "-E", str(self.log(h))]), stdin=null,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self._until_logins()

    def _until_logins(self) -> None:
        """Until every sshd accepts a login from host 0 (the client horovodrun uses, with its options)."""
        deadline = time.monotonic() + START_GUARD
        for h, proc in zip(self.hosts, self.procs):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"sshd on {h.name} exited {proc.returncode}: {self._tail(h)}")
                r = subprocess.run(self.hosts[0].wrap([str(self.bin / "ssh"), *self.client_options(), h.address,
                                                       "true"]),
                                   capture_output=True, text=True, timeout=START_GUARD, stdin=subprocess.DEVNULL,
                                   check=False)
                if r.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no login to {h.name}'s sshd ({h.address}:{self.port}) within "
                                       f"{START_GUARD:g} s: ssh: {r.stderr.strip()[-500:]}; sshd: {self._tail(h)}")
                time.sleep(0.1)

    def _tail(self, host: Host) -> str:
        try:
            return " | ".join(self.log(host).read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    # -- using -------------------------------------------------------------------------------
    def client_options(self) -> list[str]:
        """The options horovodrun adds to ssh: the port (``-p``) and the key (``-i``)."""
        return ["-p", str(self.port), "-i", str(self.key)]

    def env(self) -> dict[str, str]:
        """The nodes' variables: the sshd port, the key (OCI__START_ARGS, as ADS images pass
        ``-i``), the ``ssh`` wrapper first on PATH."""
        return {"OCI__HOROVOD_SSH_PORT": str(self.port), "OCI__START_ARGS": shlex.join(["-i", str(self.key)]),
                "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}

    def logins(self, host: Host) -> int:
        """The logins host ``host``'s sshd accepted (the start's check from host 0 included)."""
        try:
            return self.log(host).read_text(errors="replace").count("Accepted publickey for root from ")
        except OSError:
            return 0

    # -- ending ------------------------------------------------------------------------------
    def _note_sessions(self) -> None:
        """Remember the sshds' sessions and their processes (a session leaves its sshd's process
        group and outlives it): close() kills them."""
        import psutil

        for proc in self.procs:
            try:
                for p in psutil.Process(proc.pid).children(recursive=True):
                    self._seen.setdefault(p.pid, p)
            except psutil.Error:
                pass

    def stop(self) -> None:
        """Stop the listening sshds (SIGTERM) and wait for them; their sessions, if any are left,
        run on (close() kills those): what is left in the hosts after this is a session's."""
        self._note_sessions()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Kill every sshd and every session it started (may be called again); remove the folder
        when it is this object's own."""
        import psutil

        self._note_sessions()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for p in self._seen.values():
            try:
                p.kill()  # psutil checks it is still that process (pid reuse)
            except psutil.Error:
                pass
        for proc in self.procs:
            proc.wait()
        psutil.wait_procs(list(self._seen.values()), timeout=10)
        self._seen.clear()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def require_sshd(problem: str | None) -> None:
    """Skip with ``problem`` (sshd missing, or the sshds did not start); under CI=true, fail."""
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI Horovod across hosts must run: {problem}", pytrace=False)
        pytest.skip(problem)


@pytest.fixture(name="sshd")
def sshd_fixture(tmp_path):
    """``sshd(hosts)`` → started :class:`SshServers` on ``hosts`` (skipped, or under CI failed, when
    they cannot run); every sshd and session killed after the test."""
    made: list[SshServers] = []

    def start(hosts: Sequence[Host]) -> SshServers:
        require_sshd(sshd_missing())
        servers = SshServers(hosts, tmp_path / f"sshd{len(made)}")
        made.append(servers)
        try:
            return servers.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            require_sshd(f"the hosts' sshds did not start: {e}")
            raise

    yield start
    for servers in made:
        servers.close()
