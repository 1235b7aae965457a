"""Controlled scheduling: real threads run one at a time, switched at scheduling points.

See `stress.sched.core` for the scheduler, `stress.sched.strategies` for who runs
next, `stress.sched.schedule` for schedule and reproducer files.
"""

from stress.sched.core import Scheduler, Switch, Task
from stress.sched.strategies import (
    PCT,
    STRATEGIES,
    MarkedReplay,
    RandomWalk,
    Replay,
    RoundRobin,
    Stop,
    Strategy,
    make,
)

__all__ = [
    "PCT",
    "STRATEGIES",
    "MarkedReplay",
    "RandomWalk",
    "Replay",
    "RoundRobin",
    "Scheduler",
    "Stop",
    "Strategy",
    "Switch",
    "Task",
    "make",
]
