"""Off-chip weight memory: presets, and the weight traffic of memory-bound decode.

In memory-bound decode every weight is fetched once per decode step and shared by the ``batch``
tokens of that step, so (docs/hwcost.md §2f item 1)::

    bytes/token  = sum(numel * bpw) / 8 / batch
    tokens/s    <= bandwidth / (bytes/token)        (an upper bound: KV cache and compute ignored)
    J/token      = bytes/token * 8 * pJ/bit
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class OffChipMemory:
    """A memory system: peak bandwidth and energy per bit read."""

    name: str
    bandwidth_gbyte_per_s: float
    """Peak bandwidth, 1e9 bytes per second."""
    energy_pj_per_bit: float
    bandwidth_source: str
    energy_source: str


_PATSNAP = "https://eureka.patsnap.com/report-hbm4-energy-metrics-bandwidth-per-watt-and-pj-bit-benchmarks"
_OCONNOR = "HBM2 3.97 pJ/bit, O'Connor et al., 'Fine-Grained DRAM', MICRO 2017, DOI 10.1145/3123939.3124545"

MEMORY_PRESETS: Mapping[str, OffChipMemory] = MappingProxyType({m.name: m for m in (
    OffChipMemory(
        "HBM3", 3350.0, 3.97,
        "H100 SXM (5 HBM3 stacks) 3.35 TB/s [secondary: third-party notes, docs/hwcost.md §1e]",
        f"no HBM3 vendor figure; simulators keep the {_OCONNOR} [secondary, docs/hwcost.md §1e]",
    ),
    OffChipMemory(
        "HBM3E", 4800.0, 3.44,
        "H200 (HBM3E) ~4.8 TB/s [secondary: third-party notes, docs/hwcost.md §1e]",
        "~20% below HBM2E's 4.3 pJ/bit: 0.8 x 4.3, SK hynix IEDM 2023 as cited secondhand "
        "[secondary + inference, docs/hwcost.md §1e]",
    ),
    OffChipMemory(
        "LPDDR5X", 68.264, 8.0,
        "64-bit bus at 8533 MT/s = 68.264 GB/s (hardwaretimes.com, tomshardware.com JEDEC LPDDR5X; "
        "docs/hwcost.md §1e)",
        "no LPDDR5X figure found; LPDDR4 8 pJ/bit (hwcomponents-cacti 'Public data') taken as an upper bound "
        "[inference, docs/hwcost.md §1e]",
    ),
    OffChipMemory(
        "GDDR6", 768.0, 7.5,
        "16 Gb/s/pin (kylolab.com Micron table) on a 384-bit bus, the bus width of the GDDR7 anchor "
        "[inference, docs/hwcost.md §1e]",
        "Micron comparison table, 'average device power', http://www.kylolab.com/ultra-bandwidth-solutions.html",
    ),
    OffChipMemory(
        "GDDR7", 1536.0, 6.0,
        "32 Gb/s/pin (PAM3) on a 384-bit bus, '1.5 TB/s' (aroged.com, blocksandfiles.com; docs/hwcost.md §1e)",
        "no GDDR7 figure found; GDDR6 7.5 pJ/bit x 0.8 from Samsung's '20% more energy-efficient' claim "
        "[inference, docs/hwcost.md §1e]",
    ),
)})
"""Built-in memories by name (upper case)."""


@dataclass(frozen=True)
class WeightTraffic:
    """Weight traffic of one decode step of ``batch`` tokens, and what it implies per token."""

    weight_bits_per_step: float
    batch: int
    memory: OffChipMemory

    @property
    def bytes_per_token(self) -> float:
        return self.weight_bits_per_step / 8 / self.batch

    @property
    def tokens_per_s(self) -> float:
        """Memory-bound upper bound: bandwidth / bytes per token."""
        return self.memory.bandwidth_gbyte_per_s * 1e9 / self.bytes_per_token

    @property
    def energy_j_per_token(self) -> float:
        """Off-chip read energy of the weights, per token."""
        return self.bytes_per_token * 8 * self.memory.energy_pj_per_bit * 1e-12

