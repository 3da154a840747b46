"""Reading the YAML and JSON documents a user hands to ``dse``: every way a file can be unusable
(missing, a directory, not UTF-8, not valid YAML/JSON, a key given twice, nested too deeply, an
alias bomb) becomes
one DseError line naming the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from quant.errors import DseError, EnvironmentFailure
from quant.yamlfile import DuplicateKeyError, YamlError, parse_yaml

MAX_VALUES = 1_000_000
"""Values a document may expand to: YAML aliases can make a 600-byte file stand for 10^9 values."""


def read_document(path: Path, what: str, fix: str) -> Any:
    """The parsed YAML (or JSON, a subset of YAML; ``.json`` files use the JSON parser) at ``path``.

    Args:
        what: what the file should be, e.g. "scenario file".
        fix: what the user should do, appended to every message.
    Raises:
        DseError: one line ``<path>: <problem>; <fix>``; EnvironmentFailure when the file exists
        but cannot be read (permissions, I/O error).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DseError(f"{path}: no such {what}; {fix}") from None
    except (IsADirectoryError, NotADirectoryError):
        raise DseError(f"{path}: not a {what} (a directory, or under a file); {fix}") from None
    except UnicodeDecodeError as err:
        raise DseError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                       f"{fix}") from None
    except OSError as err:
        raise EnvironmentFailure(f"{path}: cannot read ({err.strerror}); check its permissions") from None
    try:
        doc = json.loads(text) if path.suffix.lower() == ".json" else parse_yaml(text, str(path))
    except json.JSONDecodeError as err:
        raise DseError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); {fix}") from None
    except DuplicateKeyError as err:
        raise DseError(str(err)[:300]) from None  # it names both lines and the fix already
    except YamlError as err:
        raise DseError(f"{str(err)[:300]}; {fix}") from None
    except RecursionError:
        raise DseError(f"{path}: nested too deeply to read; {fix}") from None
    try:
        size = _expanded_size(doc, {})
    except RecursionError:
        raise DseError(f"{path}: nested too deeply to read; {fix}") from None
    if size > MAX_VALUES:
        raise DseError(f"{path}: expands to more than {MAX_VALUES:,} values (YAML aliases); write the values out")
    return doc


def _expanded_size(obj: Any, seen: dict[int, int]) -> int:
    """Values ``obj`` stands for with every alias expanded; linear in distinct nodes (memoized)."""
    if not isinstance(obj, (dict, list)):
        return 1
    key = id(obj)
    if key not in seen:
        seen[key] = MAX_VALUES + 1  # a self-referencing alias (&a [*a]) is infinite
        children = obj.values() if isinstance(obj, dict) else obj
        size = 1
        for child in children:
            size += _expanded_size(child, seen)
            if size > MAX_VALUES:
                break
        seen[key] = size
    return seen[key]
