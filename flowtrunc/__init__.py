"""flowtrunc: effective gradient flow and dynamical truncation of data in deep ReLU networks."""

import importlib.metadata

from ._cost import coordinate_costs as coordinate_costs, input_cost as input_cost
from ._effective import EffectiveVelocity as EffectiveVelocity, effective_field as effective_field
from ._events import EVENT_KINDS as EVENT_KINDS
from ._flow import solve_effective as solve_effective, solve_frozen_exact as solve_frozen_exact
from ._results import RESULTS as RESULTS, describe as describe
from ._solve import EffectiveSolution as EffectiveSolution
from ._data import Dataset as Dataset, load_npz as load_npz, make_clusters as make_clusters
from ._input_space import (
    cumulative as cumulative,
    input_layer as input_layer,
    thresholds as thresholds,
    truncation_map as truncation_map,
)
from ._network import (
    AbstractReLUNet as AbstractReLUNet,
    AdaptedReLUNet as AdaptedReLUNet,
    ReLUNet as ReLUNet,
)

try:
    __version__ = importlib.metadata.version("flowtrunc")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
