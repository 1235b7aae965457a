"""rmapstress's exploration API beside the Python peers, on three small buggy programs.

    python bench/bench_sched_peers.py [--seeds 5] [--throughput 500]

The programs: a lost update across a switch point, an ABBA deadlock, and a two-step
list move (unlink, then relink at the tail) racing a walker that must see every node.
Each tool gets them written with its own API (rmapstress: `stress.explore` with the
harness's locks and `stress.yield_point`; the peers: their own spawn/explore and
plain code, which they interleave at bytecode level).  For each tool and program:

- schedules/s: schedules per second on the *fixed* program (no failure stops it);
- schedules to the bug: the schedule at which each seed found it (PCT where offered);
- what a failure gives: a reproducer file, whether it replays 5/5, a shrunk schedule,
  a report with source lines and (deadlocks) the blocker chain.

The peers are installed into their own environments under bench/.peers/ on first use
(interleave-test needs Python >= 3.12; pyenv's 3.12 is used when there is one); they
are never dependencies of the project.  A peer that cannot be installed is reported
as such.  Medians and [min, max] over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PEERS = ROOT / "bench" / ".peers"

# -- rmapstress ------------------------------------------------------------------------

OURS = '''
import stress

class Counter:
    def __init__(self, mon):
        self.lock = mon.mutex("counter")
        self.value = 0

def bump(c):
    seen = c.value
    stress.yield_point("loaded")
    c.value = seen + 1

def bump_fixed(c):
    with c.lock:
        seen = c.value
        stress.yield_point("loaded")
        c.value = seen + 1

def counted(c):
    return c.value == 2

class Locks:
    def __init__(self, mon):
        self.a = mon.mutex("A", "lock-A")
        self.b = mon.mutex("B", "lock-B")

def ab(s):
    with s.a:
        stress.yield_point("holding A")
        with s.b:
            pass

def ba(s):
    with s.b:
        stress.yield_point("holding B")
        with s.a:
            pass

def ab_fixed(s):
    ab(s)

def ba_fixed(s):
    ab(s)

class Node:
    def __init__(self, name):
        self.name = name
        self.next = self.prev = self

class Chain:
    def __init__(self, mon):
        self.lock = mon.mutex("chain")
        self.head = Node("head")
        for i in range(4):
            n = Node(f"n{i}")
            n.prev, n.next = self.head.prev, self.head
            self.head.prev.next = n
            self.head.prev = n
        self.seen = None

def move(c):
    n = c.head.next                  # move the first node to the tail, in two steps
    n.prev.next, n.next.prev = n.next, n.prev
    stress.yield_point("unlinked")
    n.prev, n.next = c.head.prev, c.head
    c.head.prev.next = n
    c.head.prev = n

def walk(c):
    seen, pos = 0, c.head.next
    while pos is not c.head and seen < 10:
        seen += 1
        stress.yield_point("step")
        pos = pos.next
    c.seen = seen

def move_fixed(c):
    with c.lock:
        move(c)

def walk_fixed(c):
    with c.lock:
        walk(c)

def all_seen(c):
    return c.seen == 4
'''

CASES = {
    "lost-update": ("Counter", ("bump", "bump"), ("bump_fixed", "bump_fixed"), "counted", True),
    "abba-deadlock": ("Locks", ("ab", "ba"), ("ab_fixed", "ba_fixed"), None, False),
    "list-move": ("Chain", ("move", "walk"), ("move_fixed", "walk_fixed"), "all_seen", True),
}


def ours(seeds: int, throughput: int, work: Path) -> dict[str, Any]:
    import importlib

    (work / "ours_progs.py").write_text(OURS)
    sys.path.insert(0, str(work))
    mod = importlib.import_module("ours_progs")
    import stress

    out: dict[str, Any] = {}
    for case, (setup, bad, good, inv, lock_order) in CASES.items():
        finds, rates, replays, shrunk, lines, chain = [], [], [], [], [], []
        for seed in range(seeds):
            repro = work / f"ours-{case}-{seed}.json"
            r = stress.explore(
                [getattr(mod, f) for f in bad],
                setup=getattr(mod, setup),
                invariant=getattr(mod, inv) if inv else None,
                schedules=1000,
                seed=seed,
                lock_order=lock_order,
                save=repro,
            )
            if r.failure is None:
                finds.append(None)
                continue
            finds.append(r.failure.schedule_index + 1)
            key = r.failure.run.key
            again = [stress.replay(repro).key for _ in range(5)]
            replays.append(sum(k == key for k in again))
            shrunk.append(sum(1 for s in r.failure.run.switches if s.why == "preempt"))
            text = r.failure.report()
            lines.append("ours_progs.py:" in text)
            chain.append("waits for" in text or "Who waits for whom" in text)
        for seed in range(3):
            t = time.perf_counter()
            r = stress.explore(
                [getattr(mod, f) for f in good],
                setup=getattr(mod, setup),
                invariant=getattr(mod, inv) if inv else None,
                schedules=throughput,
                seed=seed,
                lock_order=lock_order,
            )
            rates.append(r.schedules / (time.perf_counter() - t))
        out[case] = {
            "finds": finds,
            "rates": rates,
            "reproducer": True,
            "replays": replays,
            "shrunk_preemptions": shrunk,
            "source_lines": all(lines) if lines else False,
            "blocker_chain": all(chain) if chain else False,
        }
    return out


# -- the peers ------------------------------------------------------------------------

INTERLEAVE = r'''
import json, sys, time
import interleave_test as it

def lost_update(fixed):
    def model():
        c = {"n": 0}
        lock = it.Lock()
        def bump():
            if fixed:
                with lock:
                    v = c["n"]; c["n"] = v + 1
            else:
                v = c["n"]; c["n"] = v + 1
        t1 = it.spawn(bump); t2 = it.spawn(bump); t1.join(); t2.join()
        assert c["n"] == 2
    return model

def abba(fixed):
    def model():
        a, b = it.Lock(), it.Lock()
        def ab():
            with a:
                with b:
                    pass
        def ba():
            first, second = (a, b) if fixed else (b, a)
            with first:
                with second:
                    pass
        t1 = it.spawn(ab); t2 = it.spawn(ba); t1.join(); t2.join()
    return model

def list_move(fixed):
    def model():
        class N:
            def __init__(s, n): s.n = n; s.next = s.prev = s
        head = N("h")
        for i in range(4):
            x = N(i); x.prev, x.next = head.prev, head; head.prev.next = x; head.prev = x
        lock = it.Lock(); seen = [0]
        def move():
            def body():
                n = head.next
                n.prev.next, n.next.prev = n.next, n.prev
                n.prev, n.next = head.prev, head
                head.prev.next = n; head.prev = n
            if fixed:
                with lock: body()
            else:
                body()
        def walk():
            def body():
                k, p = 0, head.next
                while p is not head and k < 10:
                    k += 1; p = p.next
                seen[0] = k
            if fixed:
                with lock: body()
            else:
                body()
        t1 = it.spawn(move); t2 = it.spawn(walk); t1.join(); t2.join()
        assert seen[0] == 4
    return model

MODELS = {"lost-update": lost_update, "abba-deadlock": abba, "list-move": list_move}
seeds, throughput = int(sys.argv[1]), int(sys.argv[2])
out = {}
for case, make in MODELS.items():
    finds, rates = [], []
    for seed in range(seeds):
        r = it.explore(make(False), iterations=1000, seed=seed, strategy="pct",
                       raise_on_failure=False, timeout=10)
        finds.append(r.schedules_run if r.failure is not None else None)
    for seed in range(3):
        t = time.perf_counter()
        r = it.explore(make(True), iterations=throughput, seed=seed, strategy="pct",
                       raise_on_failure=False, timeout=10)
        rates.append(r.schedules_run / (time.perf_counter() - t))
    out[case] = {"finds": finds, "rates": rates, "reproducer": False, "replays": [],
                 "shrunk_preemptions": [], "source_lines": None, "blocker_chain": None}
print("RESULT " + json.dumps(out))
'''

FRONTRUN = r'''
import json, sys, threading, time
import frontrun

class Counter:
    def __init__(self): self.n = 0; self.lock = threading.Lock()
def bump(c):
    v = c.n; c.n = v + 1
def bump_fixed(c):
    with c.lock:
        v = c.n; c.n = v + 1

class Locks:
    def __init__(self): self.a = threading.Lock(); self.b = threading.Lock()
def ab(s):
    with s.a:
        with s.b: pass
def ba(s):
    with s.b:
        with s.a: pass

class Chain:
    def __init__(self):
        class N:
            def __init__(s, n): s.n = n; s.next = s.prev = s
        self.head = h = N("h")
        for i in range(4):
            x = N(i); x.prev, x.next = h.prev, h; h.prev.next = x; h.prev = x
        self.seen = None; self.lock = threading.Lock()
def move(c):
    h = c.head; n = h.next
    n.prev.next, n.next.prev = n.next, n.prev
    n.prev, n.next = h.prev, h
    h.prev.next = n; h.prev = n
def walk(c):
    k, p = 0, c.head.next
    while p is not c.head and k < 10:
        k += 1; p = p.next
    c.seen = k
def move_fixed(c):
    with c.lock: move(c)
def walk_fixed(c):
    with c.lock: walk(c)

CASES = {
    "lost-update": (Counter, [bump, bump], [bump_fixed, bump_fixed], lambda c: c.n == 2),
    "abba-deadlock": (Locks, [ab, ba], [ab, ab], lambda s: True),
    "list-move": (Chain, [move, walk], [move_fixed, walk_fixed], lambda c: c.seen == 4),
}
seeds, throughput = int(sys.argv[1]), int(sys.argv[2])
out = {}
for case, (setup, bad, good, inv) in CASES.items():
    finds, rates = [], []
    for seed in range(seeds):
        try:
            r = frontrun.explore(setup=setup, workers=bad, invariant=inv, strategy="dpor",
                                 max_executions=1000, timeout_per_run=5.0,
                                 reproduce_on_failure=0, deadlock_timeout=2.0)
            finds.append(r.num_explored if r.property_holds is False else None)
        except Exception as exc:  # a deadlock may surface as an exception
            finds.append(f"raised {type(exc).__name__}")
    for seed in range(3):
        t = time.perf_counter()
        r = frontrun.explore(setup=setup, workers=good, invariant=inv, strategy="dpor",
                             max_executions=throughput, preemption_bound=None,
                             timeout_per_run=5.0, reproduce_on_failure=0)
        rates.append(r.num_explored / (time.perf_counter() - t))
    out[case] = {"finds": finds, "rates": rates, "reproducer": False, "replays": [],
                 "shrunk_preemptions": [], "source_lines": None, "blocker_chain": None}
print("RESULT " + json.dumps(out))
'''

#: name -> (requirement, Python it needs, script, launcher in the venv's bin/ or None)
PEERS_SPEC: dict[str, tuple[str, tuple[int, int], str, str | None]] = {
    "interleave-test 0.1.0": ("interleave-test==0.1.0", (3, 12), INTERLEAVE, None),
    "frontrun 0.7.0": ("frontrun==0.7.0", (3, 11), FRONTRUN, "frontrun"),
}


def _python(version: tuple[int, int]) -> str | None:
    if sys.version_info[:2] >= version:
        return sys.executable
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for cand in (
        *sorted(pyenv.glob(f"{version[0]}.{version[1]}.*/bin/python")),
        shutil.which(f"python{version[0]}.{version[1]}"),
    ):
        if cand and Path(cand).exists():
            ok = subprocess.run([str(cand), "-c", "pass"], capture_output=True).returncode == 0
            if ok:
                return str(cand)
    return None


def peer(name: str, seeds: int, throughput: int, work: Path) -> dict[str, Any] | str:
    req, version, script, launcher = PEERS_SPEC[name]
    py = _python(version)
    if py is None:
        return f"needs Python {version[0]}.{version[1]}, not found"
    venv = PEERS / name.split()[0]
    vpy = venv / "bin" / "python"
    if not vpy.exists():
        subprocess.run([py, "-m", "venv", str(venv)], check=True)
        proc = subprocess.run(
            [str(vpy), "-m", "pip", "install", "-q", req], capture_output=True, text=True
        )
        if proc.returncode:
            shutil.rmtree(venv, ignore_errors=True)
            return f"cannot install {req}: {proc.stderr.strip().splitlines()[-1:]}"
    path = work / f"peer_{name.split()[0].replace('-', '_')}.py"
    path.write_text(textwrap.dedent(script))
    prefix = [str(venv / "bin" / launcher)] if launcher else []
    proc = subprocess.run(
        [*prefix, str(vpy), str(path), str(seeds), str(throughput)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return f"failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"
    result: dict[str, Any] = json.loads(line[7:])
    return result


def spread(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{statistics.median(xs):,.0f} [{min(xs):,.0f}, {max(xs):,.0f}]"


def finds_text(finds: list[Any]) -> str:
    nums = [f for f in finds if isinstance(f, int)]
    misses = len(finds) - len(nums)
    text = spread([float(n) for n in nums]) if nums else "never"
    others = sorted({str(f) for f in finds if not isinstance(f, int) and f is not None})
    if misses:
        text += f" ({misses}/{len(finds)} seeds not found" + (f": {others}" if others else "") + ")"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--throughput", type=int, default=500, help="schedules per rate sample")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    rows: dict[str, Any] = {"rmapstress": ours(args.seeds, args.throughput, work)}
    for name in PEERS_SPEC:
        rows[name] = peer(name, args.seeds, args.throughput, work)
    print(f"load average at end {os.getloadavg()[0]:.1f}; seeds {args.seeds}")
    for tool, res in rows.items():
        print(f"\n{tool}:")
        if isinstance(res, str):
            print(f"  not measured: {res}")
            continue
        for case, r in res.items():
            extra = []
            if r["reproducer"]:
                extra.append(f"reproducer replays {min(r['replays'] or [0])}/5")
            if r["shrunk_preemptions"]:
                extra.append(f"shrunk to <= {max(r['shrunk_preemptions'])} preemptions")
            if r["source_lines"]:
                extra.append("source lines")
            if r["blocker_chain"]:
                extra.append("blocker chain")
            print(
                f"  {case:<14} {spread(r['rates'])} schedules/s; bug at schedule "
                f"{finds_text(r['finds'])}; {', '.join(extra) or 'no reproducer file'}"
            )


if __name__ == "__main__":
    main()
