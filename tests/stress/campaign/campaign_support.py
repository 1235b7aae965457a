"""Case functions for the engine's tests (imported by name in real worker processes),
and the checks of campaign.html that the engine's and the command's tests share."""

from __future__ import annotations

import os
import re
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from stress.campaign import PLOT_IDS

NAME = "tests.stress.campaign.campaign_support"


def numbered(n: int, delay: float = 0.0) -> dict[str, Any]:
    """Multiples of 3 are 'defects' (with a file), the rest clean; two signatures by parity."""
    time.sleep(delay)
    defect = n % 3 == 0
    out: dict[str, Any] = {
        "outcome": "defect" if defect else "clean",
        "expected": "defect" if defect else "clean",
        "matched": True,
        "first_defect_s": n / 10 if defect else None,
        "duration_s": delay,
        "ops_per_s": 1000.0 + n,
        "signatures": (
            [{"id": f"sig-{n % 2}", "kind": "demo", "summary": f"parity {n % 2}", "count": 2}]
            if defect
            else []
        ),
        "replay": f"demo --n {n}",
        "pid": os.getpid(),
        "ppid": os.getppid(),
    }
    if defect:
        out["files"] = {"report.txt": f"case {n}\n", "../escape.txt": "kept inside\n"}
    return out


#: What cases of one process left behind (a leak, as far as the next case can tell).
_HOARD: list[bytearray] = []


def hoard(n: int, delay: float = 0.0) -> dict[str, Any]:
    """Keep 8 MiB past the case's end; say how much earlier cases of this process kept."""
    before = len(_HOARD)
    _HOARD.append(bytearray(8 << 20))
    out = numbered(n, delay)
    out["kept_before"] = before
    return out


def die(code: int) -> dict[str, Any]:
    """Leave a file in the case's temporary folder, then end the process as the harness would."""
    with open(Path(tempfile.mkdtemp(prefix="case-")) / "report.txt", "w") as f:
        f.write("written before the emergency exit\n")
    os._exit(code)


def boom() -> dict[str, Any]:
    raise ValueError("boom")


def by_kind(kind: str, n: int) -> dict[str, Any]:
    """One function for a mixed stream: 'die' ends the process with status n."""
    if kind == "die":
        return die(n)
    return numbered(n)


# -- campaign.html ------------------------------------------------------------------------


class Page(HTMLParser):
    """Every element's attributes, and the inline scripts' text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)

    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.elements if a.get("id")}


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def assert_self_contained(page: Page) -> None:
    """Nothing the page loads comes from elsewhere: no src at all, links only relative."""
    for tag, attrs in page.elements:
        for name in ("src", "href", "data", "poster", "srcset"):
            value = (attrs.get(name) or "").strip().lower()
            assert not re.match(r"^(https?:)?//", value), (tag, name, value)
            if name == "src":
                assert not value, (tag, value)  # every script and image is inline
        if tag == "link":
            assert (attrs.get("rel") or "") != "stylesheet", attrs


def assert_plots(page: Page, text: str) -> None:
    ids = page.ids()
    script = "\n".join(page.scripts)
    assert "plotly.js v" in script or "Plotly" in script
    assert len(script) > 1_000_000  # the library itself, inlined
    for pid in PLOT_IDS:
        assert pid in ids, pid
        # Each plot div is drawn by a call naming it.
        assert re.search(r'Plotly\.newPlot\(\s*"' + re.escape(pid) + '"', text), pid
