"""stress: a generic real-thread stress harness (instrumented locks, lockdep, watchdog)."""
