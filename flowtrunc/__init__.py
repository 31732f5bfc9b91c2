"""flowtrunc: effective gradient flow and dynamical truncation of data in deep ReLU networks."""

import importlib.metadata

from ._compare import CompareConfig as CompareConfig
from ._compare import compare as compare
from ._cost import coordinate_costs as coordinate_costs
from ._cost import input_cost as input_cost
from ._data import Dataset as Dataset
from ._data import load_npz as load_npz
from ._data import make_clusters as make_clusters
from ._data import make_staircase as make_staircase
from ._effective import EffectiveVelocity as EffectiveVelocity
from ._effective import effective_field as effective_field
from ._end_state import END_KINDS as END_KINDS
from ._end_state import EndState as EndState
from ._end_state import end_state as end_state
from ._events import EVENT_KINDS as EVENT_KINDS
from ._flow import solve_effective as solve_effective
from ._flow import solve_frozen_exact as solve_frozen_exact
from ._gradient_flow import gradient_flow as gradient_flow
from ._input_space import (
    cumulative as cumulative,
)
from ._input_space import (
    input_layer as input_layer,
)
from ._input_space import (
    thresholds as thresholds,
)
from ._input_space import (
    truncation_map as truncation_map,
)
from ._network import (
    AbstractReLUNet as AbstractReLUNet,
)
from ._network import (
    AdaptedReLUNet as AdaptedReLUNet,
)
from ._network import (
    ReLUNet as ReLUNet,
)
from ._off_adapted import family_distance as family_distance
from ._off_adapted import nearest_adapted as nearest_adapted
from ._off_adapted import off_adapted as off_adapted
from ._output_layer import OutputLayer as OutputLayer
from ._output_layer import metric_cost as metric_cost
from ._output_layer import output_cost as output_cost
from ._output_layer import pulled_back as pulled_back
from ._results import RESULTS as RESULTS
from ._results import describe as describe
from ._solve import EffectiveSolution as EffectiveSolution
from ._training import (
    TrainingRun as TrainingRun,
)
from ._training import (
    stability_bound as stability_bound,
)
from ._training import (
    train as train,
)

try:
    __version__ = importlib.metadata.version("flowtrunc")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
