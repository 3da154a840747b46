"""sop-dse: design-space exploration of LUT-decoded LLM weight formats.

The notebook API (:mod:`dse.api`) is re-exported here: ``import dse; dse.explore(dse.load_scenario(path))``.
"""

from dse.api import (
    Candidate, DseError, ExploreResult, FrontPoint, Hardware, HardwareSpec, Scenario, ScenarioError, candidate_cost,
    explore, get_model, load_hardware, load_scenario, measure, measure_source, model_cost, open_source,
    parse_candidate, preset, quantize_package, scenario_from_dict, tensor_cost, validate, verify_package,
    weight_tensors, write_outputs,
)
from dse.api import __all__ as __all__
