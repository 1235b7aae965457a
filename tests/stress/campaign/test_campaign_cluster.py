"""The Dask executor on its own: a real LocalCluster, the generic case function."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from stress.campaign import CampaignStore, Case, ClusterError, DaskPool, Runner
from tests.stress.campaign.campaign_support import NAME

pytestmark = pytest.mark.timeout(90)


def test_cases_run_on_the_cluster_and_files_come_back(tmp_path: Path) -> None:
    import dask
    from distributed import LocalCluster

    # A task whose worker died comes back lost at once (by default Dask tries it 3 more times).
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
    ):
        pool = DaskPool(cluster.scheduler_address, f"{NAME}:by_kind")
        assert pool.slots == 2 and "2 worker thread(s)" in pool.description
        store = CampaignStore(tmp_path)
        todo = [Case(f"n/{n}", ("n", n), {"seed": n}) for n in range(1, 7)]
        todo.append(Case("die/3", ("die", 3), {"seed": 7, "replay": "demo --die"}))
        Runner(store, pool, poll_s=0.05).run(todo)
        store.close()
    recs = {r["key"]: r for r in store.load()}
    assert set(recs) == {f"n/{n}" for n in range(1, 7)} | {"die/3"}
    assert (tmp_path / recs["n/3"]["run_folder"] / "report.txt").read_text() == "case 3\n"
    assert recs["n/1"]["run_folder"] is None
    assert len({recs[f"n/{n}"]["pid"] for n in range(1, 7)}) == 2
    lost = recs["die/3"]
    assert (lost["outcome"], lost["lost"], lost["replay"]) == ("error", True, "demo --die")
    assert lost["error"].startswith("case lost: the cluster lost it: ")


def test_a_scheduler_nobody_runs_is_one_clear_error() -> None:
    with socket.socket() as sock:  # a free port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        ClusterError, match=rf"^--cluster tcp://127\.0\.0\.1:{port}: cannot connect"
    ):
        DaskPool(f"tcp://127.0.0.1:{port}", f"{NAME}:numbered", timeout_s=1.0)
