"""hwcost: area, energy and bandwidth of LUT-decoded weights, with a source for every number.

The public API, usable from a notebook::

    from hwcost import candidate_cost, model_cost, preset, weight_tensors
    from models.catalog import get_model
    from quant import parse_candidate
    hw = preset("hbm3")
    c = parse_candidate("E2M3sUE4M4")
    candidate_cost(c, hw).energy_pj_per_weight.total_pj
    model_cost([(t, c) for t in weight_tensors(get_model("llama-3.1-8b"))], hw).tokens_per_s
"""

from hwcost.datapath import (
    AreaItem, CandidateCost, Datapath, DecodePath, EnergySplit, candidate_cost, datapath, decode_paths,
)
from hwcost.errors import HardwareError
from hwcost.explain import ExplainRow, explain
from hwcost.hardware import Hardware, hardware_from_mapping, load_hardware, preset
from hwcost.memory import MEMORY_PRESETS, OffChipMemory, WeightTraffic
from hwcost.model import ModelCost, TensorCost, WeightTensor, combined_cost, model_cost, shared_area, tensor_cost, weight_tensors
from hwcost.node import Technology

__all__ = [
    "MEMORY_PRESETS", "AreaItem", "CandidateCost", "Datapath", "DecodePath", "EnergySplit", "ExplainRow",
    "Hardware", "HardwareError", "ModelCost", "OffChipMemory", "Technology", "TensorCost", "WeightTensor",
    "WeightTraffic", "candidate_cost", "datapath", "decode_paths", "explain", "hardware_from_mapping",
    "load_hardware", "combined_cost", "model_cost", "preset", "shared_area", "tensor_cost", "weight_tensors",
]
