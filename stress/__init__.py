"""stress: a generic real-thread stress harness.

Instrumented locks that can say who holds them and who waits, lock-order checking
in the style of the kernel's lockdep, and a watchdog that tells apart endless list
walks, locks held too long, deadlocks, starvation, livelocks and stalls, and
proves each verdict with evidence.  Nothing here knows what it is testing.

    from stress import Config, Monitor, RunReport

    with RunReport("logs/run-1", scenario="demo") as report:
        mon = Monitor(Config(duration_s=5), name="case-1", report=report,
                      meta={"variant": "v1", "seed": 7, "replay": "..."})
        lock = mon.mutex("anon_vma", "anon_vma#1")
        mon.spawn(worker, lock, name="kswapd-0")
        result = mon.run()

See docs/stress.md for the whole API.
"""

from stress.config import EXIT_BACKSTOP, EXIT_EMERGENCY, HARNESS_KINDS, WATCHDOG_KINDS, Config
from stress.errors import (
    Cancelled,
    ConfigError,
    LadderError,
    LockError,
    NotOwnerError,
    SelfDeadlockError,
    StressError,
    StuckThreadsError,
)
from stress.instrument import Instrumentation, Interrupted, instrument_threading, watch_config
from stress.interrupts import Interrupts
from stress.lockdep import LockClass
from stress.locks import Mutex, TimedMutex
from stress.monitor import Monitor, default_monitor
from stress.outcome import Status
from stress.report import CaseResult, RunReport
from stress.rwsem import RWSem
from stress.sched.core import Scheduler, yield_point
from stress.sched.explore import ExploreResult, explore, replay
from stress.tsync import Lock, RLock
from stress.tsync_cond import Barrier, BoundedSemaphore, Condition, Event, Semaphore
from stress.verdicts import Verdict
from stress.walks import Walk
from stress.worker import Worker

__all__ = [
    "EXIT_BACKSTOP",
    "EXIT_EMERGENCY",
    "HARNESS_KINDS",
    "WATCHDOG_KINDS",
    "Barrier",
    "BoundedSemaphore",
    "Cancelled",
    "CaseResult",
    "Condition",
    "Config",
    "ConfigError",
    "Event",
    "ExploreResult",
    "Instrumentation",
    "Interrupted",
    "Interrupts",
    "LadderError",
    "Lock",
    "LockClass",
    "LockError",
    "Monitor",
    "Mutex",
    "NotOwnerError",
    "RLock",
    "RWSem",
    "RunReport",
    "Scheduler",
    "SelfDeadlockError",
    "Semaphore",
    "Status",
    "StressError",
    "StuckThreadsError",
    "TimedMutex",
    "Verdict",
    "Walk",
    "Worker",
    "default_monitor",
    "explore",
    "instrument_threading",
    "replay",
    "watch_config",
    "yield_point",
]
