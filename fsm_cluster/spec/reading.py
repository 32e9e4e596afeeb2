"""Reading a spec: YAML text → plain data, the line of every YAML path, and ``${VAR}`` resolved.

* :func:`read_text` reads a file or fsspec URI (at most :data:`MAX_SPEC_BYTES`);
* :func:`parse_yaml` parses it, refusing a document that expands (aliases counted) past
  :data:`MAX_SPEC_VALUES`, and keeps every node's line in a :class:`SpecSource`, so that each error
  names the file, the YAML path and the line (``train.yaml: spec.cluster.spec.worker.replicas: must
  be ≥ 0, line 23``). A repeated key is an error when ``strict``, else a warning (:func:`tell`);
* :func:`resolve_placeholders` replaces ``${VAR}`` / ``${VAR:-default}`` in string values from the
  environment (``$${`` is a literal ``${``);
* :func:`scalar_text`: a YAML scalar as the string an environment variable holds.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..errors import SpecError

if TYPE_CHECKING:
    import yaml

Path = tuple[str | int, ...]
Warn = Callable[[str], None]  # hears each warning (one line naming file, YAML path and line)

# The spec's warnings keep the logger name they had before the spec package was split out of jobspec.
log = logging.getLogger("fsm_cluster.jobspec")


@dataclass
class SpecSource:
    """Where a spec came from and the 1-based line of every YAML path (``("spec", "cluster")``)."""

    name: str
    lines: dict[Path, int]

    def line_of(self, path: Path) -> int | None:
        """Line of ``path``, or of its nearest ancestor present in the file."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def error(self, path: Path, message: str) -> str:
        line = self.line_of(path)
        where = f", line {line}" if line else ""
        return f"{self.name}: {format_path(path)}: {message}{where}"


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# A spec is a few hundred YAML values in a few KiB. Both bounds are far above any real spec and
# keep a hostile one cheap to refuse: the size is checked before parsing, and the number of values
# the document expands to (every alias counted as a copy of what it points at: a "billion laughs"
# alias bomb of a few hundred bytes expands to 10^8 values) while composing, before anything walks it.
MAX_SPEC_BYTES = 1024 * 1024
MAX_SPEC_VALUES = 100_000


def _check_size(name: str, size: int, *, known: bool = True) -> None:
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{name}: {'' if known else 'more than '}{size if known else MAX_SPEC_BYTES} "
                        f"bytes; a spec may hold at most {MAX_SPEC_BYTES} bytes (1 MiB), refused")


class SpecExpansionError(Exception):
    """Raised by the bounded loader (:func:`_bounded_loader`; becomes a SpecError naming the file)."""

    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


def _bounded_loader(text: str):
    """A :class:`_BoundedLoader` for ``text``. PyYAML is imported here, when a spec is parsed: a
    node imports the spec builders (next to every engine's provider) but never parses YAML."""
    global _BoundedLoader
    if _BoundedLoader is None:
        import yaml

        class Loader(yaml.SafeLoader):
            """SafeLoader that knows, while composing, how many values each node expands to
            (aliases included) and refuses a document past :data:`MAX_SPEC_VALUES` or an alias to
            itself."""

            def __init__(self, stream):
                super().__init__(stream)
                self._values: dict[int, int] = {}  # id(node) → values it expands to (nodes live until the end)

            def compose_node(self, parent, index):
                alias = self.check_event(yaml.AliasEvent)
                node = super().compose_node(parent, index)
                size = self._values.get(id(node))
                if size is None:
                    if alias:  # an alias to a collection still being composed: infinite when expanded
                        raise yaml.composer.ComposerError(None, None, "an alias refers to the collection "
                                                          "that contains it (recursive alias)",
                                                          node.start_mark)
                    size = 1
                    if isinstance(node, yaml.SequenceNode):
                        size += sum(self._values[id(item)] for item in node.value)
                    elif isinstance(node, yaml.MappingNode):
                        size += sum(self._values[id(k)] + self._values[id(v)] for k, v in node.value)
                    if size > MAX_SPEC_VALUES:
                        raise SpecExpansionError(node.start_mark.line + 1)
                    self._values[id(node)] = size
                return node

        _BoundedLoader = Loader
    return _BoundedLoader(text)


_BoundedLoader = None  # the loader class, made by :func:`_bounded_loader` on first use


def _index_lines(node: yaml.Node, path: Path, lines: dict[Path, int], duplicates: list) -> None:
    """Fill ``lines``; ``duplicates`` gets ``(path, first line, line)`` of every repeated key (the
    last value wins, as in PyYAML and oracle-ads: the lines below the first one are forgotten)."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append((path + (key,), seen[key], line))
                below = path + (key,)
                for stale in [p for p in lines if p[:len(below)] == below]:
                    del lines[stale]
            seen[key] = line
            lines[path + (key,)] = line
            _index_lines(value_node, path + (key,), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _index_lines(item, path + (i,), lines, duplicates)


MAX_WARNINGS = 20  # of one kind per spec; the rest are counted (--strict lists every one)


def tell(warn: Warn | None, messages: list[str], more: str) -> None:
    """``messages`` to ``warn`` (default: the logger ``fsm_cluster.jobspec``), the first
    :data:`MAX_WARNINGS` of them and then one line counting the rest (``more``: what they are)."""
    warn = warn or log.warning
    for message in messages[:MAX_WARNINGS]:
        warn(message)
    if len(messages) > MAX_WARNINGS:
        warn(f"{more}: {len(messages) - MAX_WARNINGS} not shown (--strict lists them all)")


def read_text(path_or_text: str | os.PathLike) -> tuple[str, str]:
    """(source name, YAML text). A path (or fsspec URI) is read; text with a newline is used as is.
    A file larger than :data:`MAX_SPEC_BYTES` is refused before it is read."""
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return "<spec>", path_or_text
    path = os.fspath(path_or_text)
    try:
        if "://" in path:
            import fsspec

            f = fsspec.open(path, "rb").open()
            size = getattr(f, "size", None)
        elif not os.path.isfile(path):
            raise SpecError(f"{path}: no such file")
        else:
            f = open(path, "rb")
            size = os.fstat(f.fileno()).st_size
        with f:
            _check_size(path, size or 0)
            data = f.read(MAX_SPEC_BYTES + 1)
        _check_size(path, len(data), known=False)  # grew while read, or storage that did not say
        return path, data.decode("utf-8")
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise SpecError(f"{path}: cannot read the spec ({e})") from None


def parse_yaml(name: str, text: str, *, strict: bool = True,
               warn: Warn | None = None) -> tuple[Any, SpecSource]:
    """The YAML document as plain data and its :class:`SpecSource`; syntax errors → SpecError.
    A key repeated in a mapping is an error when ``strict``; else the last value wins (as in
    oracle-ads) and ``warn`` hears of it with the lines of both."""
    import yaml

    _check_size(name, len(text.encode("utf-8", errors="replace")))
    loader = _bounded_loader(text)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
        what = " ".join(p for p in (e.context, e.problem) if p)
        raise SpecError(f"{name}: not valid YAML: {what}{where}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{name}: not valid YAML: {e}") from None
    except SpecExpansionError as e:
        raise SpecError(f"{name}: the YAML expands to more than {MAX_SPEC_VALUES} values (aliases "
                        f"repeating large collections?), refused, line {e.line}") from None
    except RecursionError:
        raise SpecError(f"{name}: the YAML is nested too deeply, refused") from None
    finally:
        loader.dispose()
    lines: dict[Path, int] = {}
    duplicates: list = []
    if root is not None:
        lines[()] = root.start_mark.line + 1
        _index_lines(root, (), lines, duplicates)
    source = SpecSource(name, lines)
    if duplicates and strict:
        raise SpecError("\n".join(f"{name}: {format_path(p)}: duplicate key (first at line {first}), "
                                  f"line {line}" for p, first, line in duplicates))
    tell(warn, [f"{name}: {format_path(p)}: duplicate key (first at line {first}): the last one "
                f"wins, line {line}" for p, first, line in duplicates], f"{name}: more keys repeated")
    if not isinstance(data, dict):
        raise SpecError(f"{name}: the spec must be a YAML mapping (kind: distributed, apiVersion, spec)")
    return data, source


# ------------------------------------------------------------------------------------------------
# ${VAR} placeholders
# ------------------------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def resolve_placeholders(data: Any, environ: Mapping[str, str], source: SpecSource,
                         path: Path = ()) -> Any:
    """``data`` with ``${VAR}`` / ``${VAR:-default}`` replaced in every string value."""
    missing: list[str] = []
    out = _resolve(data, environ, source, path, missing)
    if missing:
        raise SpecError("\n".join(missing))
    return out


def _resolve(data, environ, source, path, missing):
    if isinstance(data, dict):
        return {k: _resolve(v, environ, source, path + (k,), missing) for k, v in data.items()}
    if isinstance(data, list):
        return [_resolve(v, environ, source, path + (i,), missing) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def sub(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        missing.append(source.error(path, f"${{{name}}} is not set in the environment"))
        return m.group(0)

    return _PLACEHOLDER.sub(sub, data)


def scalar_text(v: Any) -> str:
    """A YAML scalar as text (None: empty); anything else → ValueError (a field's validator)."""
    if v is None:
        return ""
    if isinstance(v, (str, int, float, bool)):
        return str(v)
    raise ValueError(f"must be a string or a number (got a {type(v).__name__})")
