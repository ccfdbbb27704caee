"""SRM REST API v2 simulator: spec-faithful plans, tasks and faults for demos and rehearsals."""

from srmflow.simulator.app import create_app
from srmflow.simulator.faults import FaultConfig
from srmflow.simulator.scenario import Scenario, load_scenario
from srmflow.simulator.state import ManualClock, SimState, SystemClock

__all__ = [
    "FaultConfig",
    "ManualClock",
    "Scenario",
    "SimState",
    "SystemClock",
    "create_app",
    "load_scenario",
]
