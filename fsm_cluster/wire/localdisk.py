"""The work dir on a local disk, read and written without following links and without waiting.

Anyone who can write the work dir could otherwise make a node wait forever or write elsewhere:
a FIFO where a file is expected blocks ``open()`` until someone writes to it; a symbolic link in
place of the cluster dir, ``diagnostics/`` or ``previous/`` redirects every write below it (as the
node's user: root in a container). So, below the work dir (the folder given as OCI__WORK_DIR is
taken as it is, links and all):

* every path component is opened with ``O_NOFOLLOW | O_DIRECTORY`` and the next one opened
  relative to it (``dir_fd``): a link or a file where a folder is expected is refused, and no
  component can be swapped between a check and its use;
* a file is read only when it is a regular file: ``lstat`` first (a device or FIFO is never
  opened), then opened with ``O_NONBLOCK | O_NOFOLLOW`` and checked again with ``fstat``;
* a write goes to a fresh temporary file beside its target and is renamed (or, create-if-absent,
  hard-linked) into place; a target that exists and is not a regular file is refused;
* a listing is one ``scandir`` of the folder's descriptor, each entry described by ``lstat``: a
  link is listed as a link, never followed.

A node on a local work dir reads, writes and lists it through this module alone: fsspec (and the
asyncio it loads, ~30 ms of a node's start) is imported only for other storage.

A refusal is a :class:`NotRegular` (a ProtocolError: readers show the file as unreadable).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import contextmanager
from typing import BinaryIO, Callable, Iterator

from ..errors import ProtocolError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder", stat.S_IFLNK: "a symbolic link"}


class NotRegular(ProtocolError):
    """A path below the work dir is not what the node reads or writes there (a link, a FIFO, a
    folder where a file is expected, …): refused, never followed or opened for a wait."""


def kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


class LocalDisk:
    """Files below ``top`` (the work dir); every name is relative to it (``<cluster>/<file>``)."""

    def __init__(self, top: str):
        self.top = top

    @staticmethod
    def _parts(rel: str, what: str = "folder") -> list[str]:
        """The path components of ``rel``; none may be ``.`` or ``..``."""
        parts = [p for p in rel.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"not a {what} below the work dir: {rel!r}")
        return parts

    def _split(self, rel: str) -> tuple[list[str], str]:
        parts = self._parts(rel, "file name")
        if not parts:
            raise ValueError(f"not a file name below the work dir: {rel!r}")
        return parts[:-1], parts[-1]

    @contextmanager
    def folder(self, parts: list[str], create: bool) -> Iterator[int]:
        """A descriptor of the folder ``top/parts…``, every part opened without following a link
        (created owner-only when ``create``). FileNotFoundError when absent and not ``create``."""
        if create:
            os.makedirs(self.top, mode=0o700, exist_ok=True)
        fd = os.open(self.top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts):
                parent, fd = fd, self._step(fd, part, create, "/".join(parts[: i + 1]))
                os.close(parent)
            yield fd
        finally:
            os.close(fd)

    def _step(self, fd: int, part: str, create: bool, where: str) -> int:
        """The descriptor of the folder ``part`` below ``fd``."""
        try:
            return os.open(part, _DIR, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            return self._step(fd, part, False, where)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            raise NotRegular(f"{self.top}/{where}: {kind(st.st_mode)}, not a folder: refused "
                             "(a link or a file there would redirect what is written below it)") from None

    def entries(self, rel: str = "") -> list[dict]:
        """Every entry of the folder ``rel`` (``""``: ``top`` itself), as fsspec lists them
        (``name`` the full path; ``type`` ``directory``, ``file`` or ``other``: a link, FIFO, …;
        ``size``, ``mtime``, ``created``, ``ino``), each from ``lstat``. FileNotFoundError when the
        folder is absent; NotRegular when a part of it is a link or a file."""
        parts = self._parts(rel)
        base = "/".join([self.top.rstrip("/"), *parts])
        out = []
        with self.folder(parts, create=False) as d, os.scandir(d) as found:
            for entry in found:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed since the folder was read
                    continue
                mode = st.st_mode
                out.append({"name": f"{base}/{entry.name}", "size": st.st_size, "mtime": st.st_mtime,
                            "created": st.st_ctime, "ino": st.st_ino,
                            "type": "directory" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"})
        return out

    def exists(self, rel: str) -> bool:
        """Whether anything (a link too, unfollowed) is at ``rel``."""
        parts, name = self._split(rel)
        try:
            with self.folder(parts, create=False) as d:
                os.stat(name, dir_fd=d, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def read(self, rel: str, limit: int) -> bytes:
        """At most ``limit`` bytes of the regular file ``rel``; FileNotFoundError when absent."""
        parts, name = self._split(rel)
        with self.folder(parts, create=False) as d:
            st = os.stat(name, dir_fd=d, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegular(f"{self.top}/{rel}: {kind(st.st_mode)}, not a regular file: refused")
            try:
                fd = os.open(name, _READ, dir_fd=d)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENXIO):
                    raise
                raise NotRegular(f"{self.top}/{rel}: not a regular file (replaced while read): refused") from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise NotRegular(f"{self.top}/{rel}: {kind(st.st_mode)}, not a regular file: refused")
                chunks, left = [], limit
                while left > 0:
                    chunk = os.read(fd, min(left, 1 << 20))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)

    def write(self, rel: str, data: bytes, exclusive: bool) -> bool:
        """Write ``data`` as ``rel`` atomically (0600); with ``exclusive`` only when nothing is
        there (False otherwise, whatever is there left untouched)."""
        return self._place(rel, lambda f: f.write(data), exclusive)

    def copy_in(self, rel: str, source: str) -> None:
        """Copy the local file ``source`` (outside the work dir: artifacts) to ``rel``, streamed,
        under the same rules as :meth:`write` (no link followed below the work dir, atomic)."""
        import shutil

        with open(source, "rb") as src:
            self._place(rel, lambda f: shutil.copyfileobj(src, f, 1 << 20), exclusive=False)

    def _place(self, rel: str, fill: Callable[[BinaryIO], object], exclusive: bool) -> bool:
        parts, name = self._split(rel)
        with self.folder(parts, create=True) as d:
            if not exclusive:
                try:
                    st = os.stat(name, dir_fd=d, follow_symlinks=False)
                except FileNotFoundError:
                    pass
                else:
                    if not stat.S_ISREG(st.st_mode):
                        raise NotRegular(f"{self.top}/{rel}: {kind(st.st_mode)}, not a regular file: "
                                         "refused, not written")
            tmp = f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, _TMP, 0o600, dir_fd=d)
            try:
                with os.fdopen(fd, "wb") as f:
                    fill(f)
                if exclusive:
                    try:
                        os.link(tmp, name, src_dir_fd=d, dst_dir_fd=d, follow_symlinks=False)
                    except FileExistsError:
                        return False
                else:
                    os.replace(tmp, name, src_dir_fd=d, dst_dir_fd=d)
                return True
            finally:
                try:
                    os.unlink(tmp, dir_fd=d)
                except FileNotFoundError:
                    pass

    def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (its folders created); FileNotFoundError when ``src`` is absent."""
        src_parts, src_name = self._split(src)
        dst_parts, dst_name = self._split(dst)
        with self.folder(src_parts, create=False) as s, self.folder(dst_parts, create=True) as d:
            os.rename(src_name, dst_name, src_dir_fd=s, dst_dir_fd=d)

    def remove(self, rel: str) -> None:
        """Remove the file ``rel`` (a link is removed, never followed); FileNotFoundError when absent."""
        parts, name = self._split(rel)
        with self.folder(parts, create=False) as d:
            try:
                os.unlink(name, dir_fd=d)
            except IsADirectoryError:
                raise NotRegular(f"{self.top}/{rel}: a folder, not a regular file: refused, not removed") from None
