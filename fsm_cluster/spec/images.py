"""The cluster image ``submit`` sends: ``--image``, or oracle-ads' ``"@image"`` read from ``config.ini``.

``ads opctl distributed-training build-image`` writes the image it built as ``registry`` and ``tag``
in the ``[main]`` section of ``config.ini`` where it runs; a spec whose image starts with ``@``
stands for that image. :class:`ImageChoice` settles the image of a spec's data before it is
validated again; :func:`image_from_ini` reads the file as oracle-ads does.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass

from ..errors import SpecError
from .reading import Path, SpecSource, Warn

IMAGE_PATH: Path = ("spec", "cluster", "spec", "image")
ADS_INI = "config.ini"  # what `ads opctl distributed-training build-image` writes where it runs
ADS_INI_SECTION = "main"
ADS_INI_KEYS = ("registry", "tag")


class ImageUnresolved(Exception):
    """An ``@`` image whose ``config.ini`` is missing or lacks what it needs; ``short`` is the
    reason in a few words (for a dry run's placeholder)."""

    def __init__(self, message: str, short: str):
        super().__init__(message)
        self.short = short


def image_from_ini(path: str) -> str:
    """``<registry>:<tag>`` from the ``[main]`` section of oracle-ads' ``config.ini`` at ``path``
    (read with the same ConfigParser settings as oracle-ads); else :class:`ImageUnresolved`."""
    if not os.path.isfile(path):
        raise ImageUnresolved(f"{path} not found", f"{ADS_INI} not found")
    ini = configparser.ConfigParser(allow_no_value=True)
    try:
        ini.read(path, encoding="utf-8")
        if not ini.has_section(ADS_INI_SECTION):
            raise ImageUnresolved(f"{path} has no [{ADS_INI_SECTION}] section",
                                  f"no [{ADS_INI_SECTION}] in {ADS_INI}")
        values = {k: ini.get(ADS_INI_SECTION, k, fallback=None) for k in ADS_INI_KEYS}
    except (configparser.Error, OSError, ValueError) as e:  # ValueError: not UTF-8
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageUnresolved(f"{path} cannot be read ({first})", f"{ADS_INI} unreadable") from None
    missing = [k for k, v in values.items() if not (v or "").strip()]
    if missing:
        keys = " and ".join(missing)
        raise ImageUnresolved(f"{path} has no {keys} in [{ADS_INI_SECTION}]",
                              f"no {keys} in {ADS_INI}")
    return f"{values['registry'].strip()}:{values['tag'].strip()}"


@dataclass(frozen=True)
class ImageChoice:
    """How ``submit`` settles ``spec.cluster.spec.image``.

    ``override`` (``--image``) replaces it. Else an image starting with ``@`` (oracle-ads'
    ``"@image"``) is ``<registry>:<tag>`` from ``config.ini`` in ``directory`` (default: the
    current directory, where oracle-ads looks), as ``ads opctl`` resolves it. When it cannot be:
    with ``placeholder`` (a dry run) the plan shows ``<@image: reason>`` and a warning is given;
    without, a SpecError names the file and what it lacks.
    """

    override: str | None = None
    directory: str | None = None
    placeholder: bool = False

    def settle(self, data: dict, source: SpecSource, warn: Warn) -> bool:
        """Set the image in ``data`` (a validated spec as plain data) in place; True if changed."""
        body = data["spec"]["cluster"]["spec"]
        if self.override is not None:
            body["image"] = self.override
            return True
        image = body.get("image")
        if not isinstance(image, str) or not image.startswith("@"):
            return False
        ini = os.path.join(self.directory or os.getcwd(), ADS_INI)
        try:
            body["image"] = image_from_ini(ini)
        except ImageUnresolved as e:
            why = (f"{image!r} stands for the image `ads opctl distributed-training build-image` "
                   f"named in {ADS_INI} ([{ADS_INI_SECTION}] {' and '.join(ADS_INI_KEYS)}); {e}")
            if not self.placeholder:
                raise SpecError(source.error(IMAGE_PATH, f"{why}: pass --image IMAGE, or submit "
                                                         f"from the folder holding {ADS_INI}")) from None
            body["image"] = f"<{image}: {e.short}>"
            warn(source.error(IMAGE_PATH, f"{why}: planned with a placeholder"))
        return True
