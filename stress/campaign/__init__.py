"""Campaigns: one case function over many cases, on every core or a Dask cluster.

Generic: a case is a key, the case function's arguments and the fields its record
starts with; the case function (named "package.module:function", so that worker
processes can import it) returns a dict with at least `outcome` (clean, defect,
error) and `matched`, and may add `first_defect_s`, `duration_s`, `ops_per_s`,
`signatures` ([{id, kind, summary, count}]), `replay` and `files` ({name: text}, a
run folder the campaign writes under cases/).  Nothing here knows what is tested.

    store = CampaignStore("logs/my-campaign")
    store.create({"title": "demo"})
    with LocalPool(os.cpu_count() or 1, "mypkg.cases:run_one") as pool:
        outcome = Runner(store, pool).run(cases)
    write_html(store.folder / "campaign.html", store.load(), title="demo")

See docs/campaign.md.
"""

from stress.campaign.cluster import ClusterError, DaskPool
from stress.campaign.engine import Observer, Runner, RunOutcome, build_record, time_spent
from stress.campaign.executor import Case, Executor, Finished, describe_exit
from stress.campaign.html import PLOT_IDS, render_html, write_html
from stress.campaign.live import LiveDisplay
from stress.campaign.pool import DEFAULT_RECYCLE, LocalPool
from stress.campaign.stats import (
    GroupStats,
    Rate,
    SignatureStats,
    Spread,
    Summary,
    WorkerMemory,
    quantile,
    rate_of,
    rss_verdict,
    rule_of_three,
    summarize,
    wilson,
)
from stress.campaign.store import CampaignStore, StoreError
from stress.campaign.text import duration_text, summary_lines

__all__ = [
    "DEFAULT_RECYCLE",
    "PLOT_IDS",
    "CampaignStore",
    "Case",
    "ClusterError",
    "DaskPool",
    "Executor",
    "Finished",
    "GroupStats",
    "LiveDisplay",
    "LocalPool",
    "Observer",
    "Rate",
    "RunOutcome",
    "Runner",
    "SignatureStats",
    "Spread",
    "StoreError",
    "Summary",
    "WorkerMemory",
    "build_record",
    "describe_exit",
    "duration_text",
    "quantile",
    "rate_of",
    "render_html",
    "rss_verdict",
    "rule_of_three",
    "summarize",
    "summary_lines",
    "time_spent",
    "wilson",
    "write_html",
]
