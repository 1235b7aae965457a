"""The bridge: the modelled kernel on real threads under the stress harness.

This subpackage (unlike the rmapsim core) uses `stress`: process workers, reclaim
walkers and the hibernation worker are stress workers, the model's locks are the
monitor's instrumented locks and its walks are tracked walks.
"""

from rmapsim.workload.case import matches, replay_command, run_case, watchdog_config
from rmapsim.workload.scenario import Scenario, ScenarioError, load_scenario

__all__ = [
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "matches",
    "replay_command",
    "run_case",
    "watchdog_config",
]
