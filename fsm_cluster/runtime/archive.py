"""Safe unpacking of .zip / .tar / .tar.gz code archives into one directory.

Every archive is checked *before* anything is written: an entry with an absolute path, a ``..``
component, a symbolic or hard link leading outside the destination (directly, through another
link of the same archive, or by writing through such a link), a device or FIFO, or a name given
twice as a link, refuses the whole archive with one ``UnsafeArchive`` naming the entry. The check
follows the archive's own links on a virtual tree, so chains such as ``a -> .`` then
``b -> a/..`` are caught without touching the disk. Extraction then goes through ``tarfile`` with
``filter="data"`` / ``zipfile`` (defence in depth), and every link created is verified on disk.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass

_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_HOPS = 40  # like the kernel's symlink limit


class UnsafeArchive(ValueError):
    """The archive would write (or point) outside its destination; nothing was written."""


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink", "other"
    link: str = ""


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def _check_name(label: str, name: str) -> list[str]:
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise UnsafeArchive(f"{label} is an absolute path")
    parts = _parts(name)
    if ".." in parts:
        raise UnsafeArchive(f"{label} contains '..'")
    return parts


class _VirtualTree:
    """The links an archive creates, resolved the way the kernel would, relative to its root."""

    def __init__(self):
        self.links: dict[tuple[str, ...], str] = {}
        self.files: set[tuple[str, ...]] = set()

    def resolve(self, parts: list[str], follow_last: bool = True) -> tuple[str, ...] | None:
        """Real location of ``parts`` below the root, or None when it leaves the root."""
        stack: list[str] = []
        queue = list(parts)
        hops = 0
        while queue:
            p = queue.pop(0)
            if p in ("", "."):
                continue
            if p == "..":
                if not stack:
                    return None
                stack.pop()
                continue
            stack.append(p)
            key = tuple(stack)
            if key in self.links and (queue or follow_last):
                hops += 1
                if hops > _MAX_HOPS:
                    raise UnsafeArchive(f"symbolic link loop through {'/'.join(key)!r}")
                target = self.links[key]
                stack.pop()
                queue = target.split("/") + queue
        return tuple(stack)


def check_entries(entries: list[Entry]) -> None:
    """Raise UnsafeArchive for the first unsafe entry; pure (reads nothing, writes nothing)."""
    tree = _VirtualTree()
    for e in entries:
        label = f"entry {e.name!r}"
        parts = _check_name(label, e.name)
        if not parts:
            continue
        parent = tree.resolve(parts[:-1])
        if parent is None:
            raise UnsafeArchive(f"{label} would be written through a link that points outside")
        where = parent + (parts[-1],)
        if e.kind == "other":
            raise UnsafeArchive(f"{label} is a device or FIFO; only files, directories and links "
                                "are allowed")
        if where in tree.links:
            raise UnsafeArchive(f"{label} replaces a link of the same archive")
        if e.kind == "symlink":
            if e.link.startswith(("/", "\\")) or _DRIVE.match(e.link):
                raise UnsafeArchive(f"{label} is a link to an absolute path ({e.link!r})")
            if tree.resolve(list(parent) + e.link.split("/")) is None:
                raise UnsafeArchive(f"{label} is a link pointing outside ({e.link!r})")
            tree.links[where] = e.link
        elif e.kind == "hardlink":
            target_parts = _check_name(f"{label} (hard link to {e.link!r})", e.link)
            target = tree.resolve(target_parts)
            if target is None:
                raise UnsafeArchive(f"{label} is a hard link pointing outside ({e.link!r})")
            if target not in tree.files:
                raise UnsafeArchive(f"{label} is a hard link to {e.link!r}, which is not a file "
                                    "earlier in the archive")
            tree.files.add(where)
        elif e.kind == "file":
            tree.files.add(where)
    # A later link can change where an earlier one leads: check them all on the final tree.
    for key, target in tree.links.items():
        if tree.resolve(list(key[:-1]) + target.split("/")) is None:
            raise UnsafeArchive(f"entry {'/'.join(key)!r} is a link that ends up pointing outside "
                                f"({target!r}, through other links of the archive)")


def _tar_entries(tf: tarfile.TarFile) -> list[Entry]:
    out = []
    for m in tf.getmembers():
        if m.issym():
            out.append(Entry(m.name, "symlink", m.linkname))
        elif m.islnk():
            out.append(Entry(m.name, "hardlink", m.linkname))
        elif m.isdir():
            out.append(Entry(m.name, "dir"))
        elif m.isreg():
            out.append(Entry(m.name, "file"))
        else:
            out.append(Entry(m.name, "other"))
    return out


def _zip_is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _zip_entries(zf: zipfile.ZipFile) -> list[Entry]:
    out = []
    for info in zf.infolist():
        if _zip_is_link(info):
            out.append(Entry(info.filename, "symlink", zf.read(info).decode("utf-8", "replace")))
        elif info.is_dir():
            out.append(Entry(info.filename, "dir"))
        else:
            out.append(Entry(info.filename, "file"))
    return out


def _inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def archive_kind(name: str) -> str | None:
    low = name.lower()
    if low.endswith(".zip"):
        return "zip"
    if low.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
        return "tar"
    return None


def safe_extract(archive: str, dest: str, kind: str | None = None) -> list[str]:
    """Unpack ``archive`` into ``dest`` (created if missing); return the names written.

    Raises UnsafeArchive (nothing written) or ValueError for an unreadable archive.
    """
    kind = kind or archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                entries = _zip_entries(zf)
                check_entries(entries)
                os.makedirs(dest, exist_ok=True)
                root = os.path.realpath(dest)
                _extract_zip(zf, root)
        elif kind == "tar":
            with tarfile.open(archive, "r:*") as tf:
                entries = _tar_entries(tf)
                check_entries(entries)
                os.makedirs(dest, exist_ok=True)
                root = os.path.realpath(dest)
                _extract_tar(tf, root)
        else:
            raise ValueError(f"{archive!r} is not a .zip, .tar or .tar.gz archive")
    except (zipfile.BadZipFile, tarfile.ReadError, EOFError) as e:
        raise ValueError(f"{os.path.basename(archive)!r} is not a readable {kind} archive ({e})") from None
    for e in entries:
        if e.kind == "symlink" and not _inside(os.path.join(root, e.name), root):
            _remove_created(root, entries)
            raise UnsafeArchive(f"entry {e.name!r} is a link pointing outside ({e.link!r})")
    return [e.name for e in entries]


def _extract_tar(tf: tarfile.TarFile, root: str) -> None:
    """``extractall`` with the ``data`` filter where this Python has it (3.11.4+, 3.10.12+);
    before that, the same rules by hand on the already-checked entries: no owner from the archive,
    no set-uid/set-gid/sticky bits, no group/other write bits."""
    if hasattr(tarfile, "data_filter"):
        try:
            tf.extractall(root, filter="data")
        except tarfile.FilterError as e:
            raise UnsafeArchive(str(e)) from None
        return
    members = []
    for m in tf.getmembers():
        m = copy.copy(m)
        m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
        if m.isfile() or m.isdir():
            m.mode = (m.mode or 0o644) & 0o755 | (0o700 if m.isdir() else 0o600)
        members.append(m)
    tf.extractall(root, members=members, numeric_owner=True)


def _extract_zip(zf: zipfile.ZipFile, root: str) -> None:
    for info in zf.infolist():
        parts = _parts(info.filename)
        if not parts:
            continue
        path = os.path.join(root, *parts)
        if not _inside(os.path.dirname(path), root):
            raise UnsafeArchive(f"entry {info.filename!r} would be written outside")
        if info.is_dir():
            os.makedirs(path, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path) and (os.path.islink(path) or not os.path.isfile(path)):
            raise UnsafeArchive(f"entry {info.filename!r} would replace an existing link or directory")
        if _zip_is_link(info):
            os.symlink(zf.read(info).decode("utf-8"), path)
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out, zf.open(info) as src:
            shutil.copyfileobj(src, out)
        mode = (info.external_attr >> 16) & 0o777
        if mode & 0o111:
            os.chmod(path, 0o755)


def _remove_created(root: str, entries: list[Entry]) -> None:
    for e in reversed(entries):
        path = os.path.join(root, *_parts(e.name))
        try:
            if os.path.islink(path) or os.path.isfile(path):
                os.unlink(path)
        except OSError:
            pass
