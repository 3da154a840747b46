"""The one YAML reader of every user-written file (scenarios, hardware files, exported configs).

PyYAML's ``safe_load`` follows YAML 1.1, which differs from what users write in two ways:

* a float needs a dot and a signed exponent, so ``1e2`` and ``1.5e3`` load as *strings*
  (YAML 1.2 core schema reads them as numbers); here every YAML 1.2 float spelling is a float;
* a key given twice silently keeps the last value; here it is an error naming both lines.

It lives beside :mod:`quant.errors`, the base every package imports, so that ``hwcost`` and
``dse`` share it without an import cycle.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from quant.errors import DseError

# YAML 1.2 core schema floats (yaml.org/spec/1.2.2 §10.3.2) plus YAML 1.1's underscores and
# sexagesimal forms, which SafeLoader already accepts.
_FLOAT = re.compile(r"""^(?:
    [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
  | [-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
  | [-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
  | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
  | [-+]?\.(?:inf|Inf|INF)
  | \.(?:nan|NaN|NAN)
)$""", re.X)


class YamlError(DseError):
    """A YAML file that cannot be read as written (duplicate key, syntax error)."""


class DuplicateKeyError(YamlError):
    """A key given twice in one mapping; the message names both lines and the fix."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_yaml(text: str, origin: str) -> Any:
    """Parse YAML text; ``origin`` (the file name) starts every error message.

    Raises:
        YamlError: invalid YAML (with its line) or a key given twice in one mapping.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(node, "", origin)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise YamlError(f"{origin}:{where} not valid YAML ({problem})") from None
    finally:
        loader.dispose()


def load_yaml(path: Path) -> Any:
    """Read and parse a YAML file (see :func:`parse_yaml`); OSError propagates to the caller."""
    return parse_yaml(path.read_text(), str(path))


def _check_duplicates(node: yaml.Node, where: str, origin: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                continue
            name = key.value if isinstance(key, yaml.ScalarNode) else repr(key.value)
            path = f"{where}.{name}" if where else str(name)
            line = key.start_mark.line + 1
            if name in seen:
                raise DuplicateKeyError(f"{origin}: line {line}: {path} is given twice (first at line {seen[name]}); "
                                "keep one")
            seen[name] = line
            _check_duplicates(value, path, origin)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, f"{where}[{i}]", origin)
