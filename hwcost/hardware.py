"""The hardware a candidate is costed on: off-chip memory, process, and the decode datapath's shape.

A hardware description is a memory preset (``hbm3``, case-insensitive) or a YAML file::

    name: edge-npu                 # optional
    memory: lpddr5x                # a preset, or {preset: NAME} and/or the two numbers:
    # memory: {name: my-dram, bandwidth_gbyte_per_s: 100, energy_pj_per_bit: 5.5}
    node_nm: 5
    batch: 4
    lanes_per_lut_port: 16

Every field of :class:`Hardware` after ``memory`` may be given; the rest keep their defaults,
whose reasons are in :data:`DEFAULT_SOURCES`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwcost.errors import HardwareError
from quant.errors import brief
from hwcost.memory import MEMORY_PRESETS, OffChipMemory
from hwcost.node import MAX_NODE_NM, MIN_NODE_NM, Technology
from hwcost.sram import SMALLEST_MACRO_BITS
from quant.yamlfile import YamlError, parse_yaml
from quant import AtomKind, get_atom
from quant.errors import DseError


@dataclass(frozen=True)
class Hardware:
    """Memory, technology and datapath parameters of one design point."""

    name: str
    memory: OffChipMemory
    tech: Technology = Technology()
    lanes: int = 256
    """MAC lanes of the decode/MAC array: the N of 'decode area for N lanes'."""
    lanes_per_lut_port: int = 1
    """Lanes sharing one decoded weight (one LUT read port, or one direct decoder)."""
    batch: int = 1
    """Tokens per decode step: each fetched and decoded weight is reused by all of them."""
    buffer_kib: float = 64.0
    """On-chip buffer the packed weight stream is read from."""
    lut_output_bits: int = 8
    """Width of a LUT word (the HIF the MAC consumes)."""
    lut_format: str = ""
    """Value set of a LUT word, an atom name (``E4M3``, a registered HIF stand-in); "" = the ExMy
    stand-in of width ``lut_output_bits`` (see :func:`hwcost.datapath.lut_word_format`): SOP's
    HIF values are unpublished, so an OCP-style ExMy of the word's width stands in [assumption]."""
    lut_output_exponent_bits: int = 0
    """Exponent bits inside a LUT word; the MAC multiplies the other lut_output_bits - these."""
    activation_significand_bits: int = 8
    activation_exponent_bits: int = 8
    accumulator_bits: int = 24
    lut_min_sram_bits: int = SMALLEST_MACRO_BITS
    """Smallest SRAM macro a LUT may use; raise it to keep larger LUTs in flops."""
    origin: str = "defaults"
    """Where the non-default values come from (a preset or a file)."""
    overridden: frozenset[str] = field(default=frozenset())
    """Fields whose value comes from ``origin`` rather than DEFAULT_SOURCES."""

    @property
    def lut_ports(self) -> int:
        """LUT read ports (and direct decoders): one per group of lanes sharing a decoded weight."""
        return -(-self.lanes // self.lanes_per_lut_port)


DEFAULT_SOURCES: Mapping[str, str] = {
    "node_nm": "default: 7 nm, the smallest node of the Stillmaker & Baas tables (docs/hwcost.md §1g)",
    "vdd_v": "default: 0.8 V, the equal-Vdd column of docs/hwcost.md §1g (hwcomponents' default Vdd)",
    "lanes": "default: a 16 x 16 outer-product MAC array [assumption]",
    "lanes_per_lut_port": "default: one LUT read port per lane, the most area (docs/hwcost.md §2f item 3)",
    "batch": "default: batch 1, the memory-bound decode of docs/hwcost.md §2f",
    "buffer_kib": "default: the 64 KB weight buffer of docs/hwcost.md §2f item 2",
    "lut_output_bits": "default: HIF8, 8-bit LUT words (docs/formats.md §1.12 [inference])",
    "lut_output_exponent_bits": "default: the HIF encoding is unknown (docs/formats.md §1.12), so the LUT word is "
                                "taken as fixed point, every bit in the multiplier [assumption]",
    "activation_significand_bits": "default: BF16 activations, 8-bit significand incl. the hidden bit "
                                   "(docs/hwcost.md §2f worked check: 4b x 8b significand)",
    "activation_exponent_bits": "default: BF16 activations, 8-bit exponent",
    "accumulator_bits": "default: the 24-bit accumulate of docs/hwcost.md §2f worked check",
    "lut_min_sram_bits": "default: 256 B, the smallest organisation CACTI 7 finds (docs/hwcost.md §1b)",
}
"""Why each datapath/technology default is what it is."""

_TECH_FIELDS = tuple(f.name for f in dataclasses.fields(Technology))
_INT_FIELDS = ("lanes", "lanes_per_lut_port", "batch", "lut_output_bits", "lut_output_exponent_bits",
               "activation_significand_bits", "activation_exponent_bits", "accumulator_bits", "lut_min_sram_bits")
_FLOAT_FIELDS = ("buffer_kib",)
_OPTIONAL_TECH = ("energy_factor_vs_45nm_0v9", "area_factor_vs_45nm", "sram_bitcell_um2")
_MEMORY_FIELDS = ("preset", "name", "bandwidth_gbyte_per_s", "energy_pj_per_bit")
KNOWN_FIELDS = ("name", "memory", *_TECH_FIELDS, *_INT_FIELDS, *_FLOAT_FIELDS, "lut_format")

# (lowest, highest) allowed per numeric field; None = unbounded.
_RANGES: Mapping[str, tuple[float, float | None]] = {
    "node_nm": (MIN_NODE_NM, MAX_NODE_NM),
    "vdd_v": (0.4, 1.5),
    "lanes": (1, None),
    "lanes_per_lut_port": (1, None),
    "batch": (1, None),
    "buffer_kib": (0.25, None),
    "lut_output_bits": (2, 32),
    "lut_output_exponent_bits": (0, 30),
    "activation_significand_bits": (1, 64),
    "activation_exponent_bits": (0, 16),
    "accumulator_bits": (2, 128),
    "lut_min_sram_bits": (SMALLEST_MACRO_BITS, None),
}


def preset(name: str) -> Hardware:
    """The default datapath on the memory preset ``name`` (case-insensitive)."""
    memory = MEMORY_PRESETS.get(name.strip().upper())
    if memory is None:
        raise HardwareError(f"unknown hardware preset {brief(name)} (known: {', '.join(MEMORY_PRESETS)}, "
                            "or a YAML file)")
    return Hardware(name=memory.name, memory=memory, origin=f"preset {memory.name}")


def load_hardware(spec: str) -> Hardware:
    """A preset name, or the path of a YAML hardware file."""
    path = Path(spec)
    if spec.strip().upper() in MEMORY_PRESETS:
        return preset(spec)
    if not path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            raise HardwareError(f"hardware file {brief(spec)} not found")
        return preset(spec)  # raises: unknown preset
    try:
        data = parse_yaml(path.read_text(), spec)
    except (OSError, UnicodeDecodeError, RecursionError) as err:
        raise HardwareError(f"{spec}: not readable YAML ({str(err).splitlines()[0][:100]})") from None
    except YamlError as err:
        raise HardwareError(str(err)) from None
    return hardware_from_mapping(data, origin=spec)


def hardware_from_mapping(data: Any, origin: str) -> Hardware:
    """Validate a parsed YAML mapping; every problem is reported, one ``origin: field: why`` each."""
    if not isinstance(data, dict):
        raise HardwareError(f"{origin}: expected a mapping of hardware fields, e.g. 'memory: hbm3'")
    problems = [f"{origin}: unknown field {brief(key)} (known: {', '.join(KNOWN_FIELDS)})"
                for key in data if key not in KNOWN_FIELDS]
    values: dict[str, Any] = {}
    for key in data:
        if key in _INT_FIELDS + _FLOAT_FIELDS + _TECH_FIELDS:
            value = _integral(data[key]) if key in _INT_FIELDS else data[key]
            problem = _check_number(key, value, integer=key in _INT_FIELDS, optional=key in _OPTIONAL_TECH)
            if problem:
                problems.append(f"{origin}: {key}: {problem}")
            else:
                values[key] = value
    memory = None
    if "memory" not in data:
        problems.append(f"{origin}: memory: missing; give a preset ({', '.join(MEMORY_PRESETS)}) or "
                        "{bandwidth_gbyte_per_s: ..., energy_pj_per_bit: ...}")
    else:
        memory, memory_problems = _memory(data["memory"], origin)
        problems += memory_problems
    default_name = Path(origin).stem if origin.endswith((".yaml", ".yml")) else memory.name if memory else ""
    name = data.get("name", default_name)
    if not isinstance(name, str):
        problems.append(f"{origin}: name: must be a string (got {brief(name)})")
    if "lut_format" in data:
        problem = _check_lut_format(data["lut_format"], values.get("lut_output_bits"))
        if problem:
            problems.append(f"{origin}: lut_format: {problem}")
        else:
            values["lut_format"] = data["lut_format"].strip().upper()
            values.setdefault("lut_output_bits", get_atom(data["lut_format"]).code_bits)
    if "lut_output_exponent_bits" in values and values["lut_output_exponent_bits"] > values.get(
            "lut_output_bits", Hardware.lut_output_bits) - 2:
        problems.append(f"{origin}: lut_output_exponent_bits: must leave a sign and a significand bit in "
                        "lut_output_bits")
    if problems or memory is None:
        raise HardwareError("; ".join(problems))
    tech = Technology(**{k: v for k, v in values.items() if k in _TECH_FIELDS})
    datapath = {k: v for k, v in values.items() if k not in _TECH_FIELDS}
    return Hardware(name=name, memory=memory, tech=tech, origin=origin,
                    overridden=frozenset(values) | {"memory"}, **datapath)


def _integral(value: Any) -> Any:
    """A whole float (``lanes: 1e3`` in YAML) as an int; anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _check_lut_format(value: Any, bits: int | None) -> str | None:
    """Why ``value`` is not a usable LUT word format (with ``lut_output_bits`` = ``bits``), or None."""
    if not isinstance(value, str):
        return f"must be an atom name such as E4M3 (got {value!r})"
    try:
        fmt = get_atom(value)
    except DseError as err:
        return str(err)
    if fmt.kind is AtomKind.LEARNED:
        return f"{fmt.name} is learned per tensor; give a fixed value set such as E4M3"
    if bits is not None and bits != fmt.code_bits:
        return f"{fmt.name} has {fmt.code_bits}-bit codes but lut_output_bits is {bits}; drop one of them"
    return None


def _check_number(key: str, value: Any, *, integer: bool, optional: bool) -> str | None:
    """Why ``value`` is not acceptable for ``key``, or None."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return f"must be {'an integer' if integer else 'a number'} (got {brief(value)})"
    if not math.isfinite(value):
        return f"must be a finite number (got {value!r})"
    low, high = _RANGES.get(key, (0.0, None))
    if value < low or (high is not None and value > high) or (not integer and value <= 0):
        return f"must be in [{low}, {high if high is not None else 'inf'}] (got {brief(value)})"
    return None


def _memory(value: Any, origin: str) -> tuple[OffChipMemory | None, list[str]]:
    """The memory a YAML ``memory:`` entry describes, or the problems with it."""
    if isinstance(value, str):
        base = MEMORY_PRESETS.get(value.strip().upper())
        if base is None:
            return None, [f"{origin}: memory: unknown preset {brief(value)} (known: {', '.join(MEMORY_PRESETS)})"]
        return base, []
    if not isinstance(value, dict):
        return None, [f"{origin}: memory: expected a preset name or a mapping (got {brief(value)})"]
    problems = [f"{origin}: memory.{key}: unknown field (known: {', '.join(_MEMORY_FIELDS)})"
                for key in value if key not in _MEMORY_FIELDS]
    base = None
    if "preset" in value:
        base = MEMORY_PRESETS.get(str(value["preset"]).strip().upper())
        if base is None:
            problems.append(f"{origin}: memory.preset: unknown preset {brief(value['preset'])} "
                            f"(known: {', '.join(MEMORY_PRESETS)})")
    numbers: dict[str, float] = {}
    for key in ("bandwidth_gbyte_per_s", "energy_pj_per_bit"):
        if key in value:
            problem = _check_number(key, value[key], integer=False, optional=False)
            if problem:
                problems.append(f"{origin}: memory.{key}: {problem}")
            else:
                numbers[key] = float(value[key])
        elif base is None and "preset" not in value:
            problems.append(f"{origin}: memory.{key}: missing (or give memory.preset)")
    if problems:
        return None, problems
    user = f"{origin}: memory"
    if base is None:
        name = str(value.get("name", "custom"))
        return OffChipMemory(name, numbers["bandwidth_gbyte_per_s"], numbers["energy_pj_per_bit"], user, user), []
    return OffChipMemory(
        str(value.get("name", base.name)),
        numbers.get("bandwidth_gbyte_per_s", base.bandwidth_gbyte_per_s),
        numbers.get("energy_pj_per_bit", base.energy_pj_per_bit),
        user if "bandwidth_gbyte_per_s" in numbers else base.bandwidth_source,
        user if "energy_pj_per_bit" in numbers else base.energy_source,
    ), []
