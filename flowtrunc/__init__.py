"""flowtrunc: effective gradient flow and dynamical truncation of data in deep ReLU networks."""

from ._experiment.comparison import CompareConfig as CompareConfig
from ._experiment.comparison import compare as compare
from ._flow.end_state import END_KINDS as END_KINDS
from ._flow.end_state import EndState as EndState
from ._flow.end_state import end_state as end_state
from ._flow.event_loop import EffectiveSolution as EffectiveSolution
from ._flow.events import EVENT_KINDS as EVENT_KINDS
from ._flow.field import EffectiveVelocity as EffectiveVelocity
from ._flow.field import effective_field as effective_field
from ._flow.solve import solve_effective as solve_effective
from ._flow.solve import solve_frozen_exact as solve_frozen_exact
from ._flow.solvers import EventLoop as EventLoop
from ._flow.solvers import OrbitClock as OrbitClock
from ._flow.usual_cost.event_loop import USUAL_EVENT_KINDS as USUAL_EVENT_KINDS
from ._flow.usual_cost.field import UsualVelocity as UsualVelocity
from ._flow.usual_cost.field import usual_cost_field as usual_cost_field
from ._flow.usual_cost.solve import UsualCostSolution as UsualCostSolution
from ._flow.usual_cost.solve import solve_usual_cost as solve_usual_cost
from ._model.cost import coordinate_costs as coordinate_costs
from ._model.cost import input_cost as input_cost
from ._model.data import Dataset as Dataset
from ._model.data import load_npz as load_npz
from ._model.data import make_clusters as make_clusters
from ._model.data import make_staircase as make_staircase
from ._model.input_space import (
    cumulative as cumulative,
)
from ._model.input_space import (
    input_layer as input_layer,
)
from ._model.input_space import (
    thresholds as thresholds,
)
from ._model.input_space import (
    truncation_map as truncation_map,
)
from ._model.network import (
    AbstractReLUNet as AbstractReLUNet,
)
from ._model.network import (
    AdaptedReLUNet as AdaptedReLUNet,
)
from ._model.network import (
    ReLUNet as ReLUNet,
)
from ._model.off_adapted import family_distance as family_distance
from ._model.off_adapted import nearest_adapted as nearest_adapted
from ._model.off_adapted import nearest_adapted_output as nearest_adapted_output
from ._model.off_adapted import off_adapted as off_adapted
from ._model.off_adapted import off_adapted_output as off_adapted_output
from ._model.output_layer import AdaptedOutputLayer as AdaptedOutputLayer
from ._model.output_layer import OutputLayer as OutputLayer
from ._model.output_layer import metric_cost as metric_cost
from ._model.output_layer import output_cost as output_cost
from ._model.output_layer import output_frame_departure as output_frame_departure
from ._model.output_layer import pulled_back as pulled_back
from ._model.output_layer import usual_coordinate_costs as usual_coordinate_costs
from ._results import RESULTS as RESULTS
from ._results import describe as describe
from ._training.gradient_flow import gradient_flow as gradient_flow
from ._training.training import (
    TrainingRun as TrainingRun,
)
from ._training.training import (
    stability_bound as stability_bound,
)
from ._training.training import (
    train as train,
)
from ._version import __version__ as __version__
