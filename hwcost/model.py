"""Cost of a whole model under an assignment (tensor -> candidate): bytes, tokens/s, J per token, area.

For the ILP of ``dse explore``: the energy of a (tensor, candidate) pair is
``tensor_cost(t, c, hw).energy_pj_per_token.total_pj``, additive over tensors; the area is a
fixed charge per hardware unit: ``datapath(c, hw).area`` lists the units ``c`` needs, and a unit
(one key) is paid once however many tensors use it (:func:`shared_area`). Units of different
sizes are not merged: a design supporting NF4 and E2M3 LUTs pays for both LUTs, a conservative
reading (one LUT large enough for either would be smaller).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from hwcost.datapath import ZERO_ENERGY, AreaItem, DecodePath, EnergySplit, datapath
from hwcost.hardware import Hardware
from hwcost.memory import WeightTraffic
from quant import Candidate

if TYPE_CHECKING:
    from models.catalog import ModelSpec

_energy_fields = attrgetter(*(f.name for f in fields(EnergySplit)))
"""An EnergySplit's fields as a tuple, in declaration order."""


@dataclass(frozen=True)
class WeightTensor:
    """One weight matrix as the cost model sees it: shape, copies, and how a token uses it."""

    name: str
    out_features: int
    in_features: int
    count: int = 1
    """Identical-shape copies (MoE experts)."""
    active_copies: int | None = None
    """Copies one token uses (routed experts per token); None: all of them."""
    lookup: bool = False
    """An embedding table: a token reads one row and does no MACs with it."""

    @property
    def numel(self) -> int:
        """Weights in one copy: what per-tensor scale constants are shared by."""
        return self.out_features * self.in_features

    def weights_per_step(self, batch: int) -> float:
        """Weights fetched in one decode step of ``batch`` tokens.

        Routed experts: the expected number of distinct experts hit when each of the ``batch``
        tokens picks ``active_copies`` of ``count`` uniformly [inference: real routing is skewed,
        which fetches fewer].
        """
        if self.lookup:
            return min(batch, self.out_features) * self.in_features
        copies: float = self.count
        if self.active_copies is not None:
            copies = self.count * (1 - (1 - self.active_copies / self.count) ** batch)
        return self.numel * copies

    @property
    def macs_per_token(self) -> float:
        return 0.0 if self.lookup else float(self.numel * self._used_copies)

    @property
    def outputs_per_token(self) -> float:
        return 0.0 if self.lookup else float(self.out_features * self._used_copies)

    @property
    def _used_copies(self) -> int:
        return self.count if self.active_copies is None else self.active_copies


def weight_tensors(spec: ModelSpec) -> tuple[WeightTensor, ...]:
    """The tensors of a catalogued model (models.catalog) with how decode uses them.

    An untied embedding is a row lookup; a tied one is also the lm_head, a full matmul whose
    fetch covers the lookup. Routed experts are used ``experts_per_token`` at a time.
    """
    out = []
    for t in spec.tensors:
        routed = t.role.startswith("expert_")
        out.append(WeightTensor(
            t.name, t.out_features, t.in_features, t.count,
            active_copies=spec.experts_per_token if routed else None,
            lookup=t.role == "embed" and not spec.tied_embeddings,
        ))
    return tuple(out)


@dataclass(frozen=True)
class TensorCost:
    """One tensor under one candidate: traffic and energy per token."""

    tensor: str
    candidate: str
    decode: DecodePath
    bpw: float
    """Bits per weight including this tensor's per-tensor constants."""
    stored_bits: float
    """Size of every copy in memory."""
    bits_per_step: float
    """Fetched per decode step."""
    energy_pj_per_token: EnergySplit


def tensor_cost(tensor: WeightTensor, c: Candidate, hw: Hardware, decode: DecodePath | None = None,
                sparse_entries: int | None = None) -> TensorCost:
    """Energy per token of ``tensor`` stored as ``c`` on ``hw``, per-tensor constants included.

    ``sparse_entries``: outliers/residuals stored aside per copy, as measured; None takes the
    residual's fixed fraction (quant's count) and no outliers, which depend on the weights.
    """
    if sparse_entries is None:  # the count quant.engine stores for a residual fraction
        sparse_entries = c.residual.entries(tensor.numel) if c.residual else 0
    bpw = c.bits(tensor.numel, sparse_entries).bpw
    fetched = tensor.weights_per_step(hw.batch)
    dp = datapath(c, hw, decode)
    energy = dp.energy(bits_per_step=fetched * bpw, weights_per_step=fetched, macs=tensor.macs_per_token,
                       outputs=tensor.outputs_per_token, batch=hw.batch)
    return TensorCost(tensor.name, c.name, dp.decode, bpw, tensor.numel * tensor.count * bpw, fetched * bpw,
                      energy)


def shared_area(items: Iterable[AreaItem]) -> tuple[AreaItem, ...]:
    """Each unit once (equal keys are the same hardware): what supports every item's candidate."""
    return tuple({item.key: item for item in items}.values())


@dataclass(frozen=True)
class ModelCost:
    """A model under an assignment on one hardware: traffic, throughput bound, energy, decode area."""

    hardware: str
    tensors: tuple[TensorCost, ...]
    traffic: WeightTraffic
    area: tuple[AreaItem, ...]

    @property
    def energy_pj_per_token(self) -> EnergySplit:
        # field by field, in tensor order: the same additions as chaining EnergySplit.__add__, faster
        columns = zip(*(_energy_fields(t.energy_pj_per_token) for t in self.tensors))
        return EnergySplit(*(sum(c, 0.0) for c in columns)) if self.tensors else ZERO_ENERGY

    @property
    def energy_j_per_token(self) -> float:
        return self.energy_pj_per_token.total_pj * 1e-12

    @property
    def bytes_per_token(self) -> float:
        return self.traffic.bytes_per_token

    @property
    def tokens_per_s(self) -> float:
        """Memory-bound upper bound (weights only; KV cache and compute not modelled)."""
        return self.traffic.tokens_per_s

    @property
    def stored_bytes(self) -> float:
        return sum(t.stored_bits for t in self.tensors) / 8

    @property
    def decode_area_mm2(self) -> float:
        return sum(item.area_um2 for item in self.area) * 1e-6

    def record(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "hardware": self.hardware,
            "bytes_per_token": self.bytes_per_token,
            "tokens_per_s": self.tokens_per_s,
            "energy_j_per_token": self.energy_j_per_token,
            "energy_split_j_per_token": {k.replace("_pj", "_j"): v * 1e-12
                                         for k, v in self.energy_pj_per_token.record().items()},
            "stored_bytes": self.stored_bytes,
            "decode_area_mm2": self.decode_area_mm2,
        }


def model_cost(assignment: Sequence[tuple[WeightTensor, Candidate]], hw: Hardware,
               decode: DecodePath | None = None) -> ModelCost:
    """Cost of running ``assignment`` (each tensor with its candidate) on ``hw``.

    ``decode`` forces one decode path for every candidate; None takes each one's default.
    """
    return combined_cost([tensor_cost(t, c, hw, decode) for t, c in assignment],
                         [c for _, c in assignment], hw, decode)


def combined_cost(tensors: Sequence[TensorCost], candidates: Iterable[Candidate], hw: Hardware,
                  decode: DecodePath | None = None) -> ModelCost:
    """:func:`model_cost` from tensor costs already priced (each ``tensor_cost`` of the tensor and
    its candidate on ``hw``): an explorer pricing many assignments prices each pair once."""
    unique = dict.fromkeys(candidates)  # in order
    units = shared_area(item for c in unique for item in datapath(c, hw, decode).area)
    traffic = WeightTraffic(sum(t.bits_per_step for t in tensors), hw.batch, hw.memory)
    return ModelCost(hw.name, tuple(tensors), traffic, units)
