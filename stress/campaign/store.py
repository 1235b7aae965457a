"""The campaign folder: a manifest, a results file that loses nothing, run folders.

    DIR/campaign.json    what the campaign runs (the caller's settings) and its sessions
    DIR/results.jsonl    one JSON object per finished case, appended as it finishes
    DIR/cases/NAME/      the files a case handed back (a defect's run folder)
    DIR/campaign.html    the report (written by the html module)

Each result is one `os.write` of one line on an O_APPEND descriptor followed by
`fsync`, so a campaign killed at any instant leaves every finished case on disk and
at most one torn last line, which `load` detects and cuts off (the case it belonged
to is then simply run again).  A case's files are written before its line, so a
line never points at files that are not there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA = 1
MANIFEST = "campaign.json"
RESULTS = "results.jsonl"
CASES = "cases"


class StoreError(Exception):
    """A campaign folder that cannot be used: one line naming the folder or file."""


def folder_name(key: str) -> str:
    """A file-system-safe folder name for a case key."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", key).strip("-.")
    return name or "case"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CampaignStore:
    """One campaign folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None
        #: Lines cut off or skipped by the last `load` (a torn write, say), for the caller to tell.
        self.repaired: list[str] = []

    @property
    def results_path(self) -> Path:
        return self.folder / RESULTS

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def create(self, manifest: Mapping[str, Any]) -> None:
        """Start a new campaign here; refuse a folder that already holds one."""
        if self.exists() or self.results_path.exists():
            raise StoreError(
                f"{self.folder}: already holds a campaign (resume it with --resume {self.folder})"
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.write_manifest({"schema": SCHEMA, **manifest, "sessions": []})
        except OSError as exc:
            raise StoreError(f"{self.folder}: cannot create: {exc.strerror}") from None

    def manifest(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"{self.folder}: no campaign here ({MANIFEST} is missing)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{self.manifest_path}: unreadable: {exc}") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise StoreError(f"{self.manifest_path}: not a campaign manifest of schema {SCHEMA}")
        return doc

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        _atomic_write(self.manifest_path, json.dumps(manifest, indent=2, default=str) + "\n")

    def load(self) -> list[dict[str, Any]]:
        """The finished cases, repairing a torn last line; the first record of a key wins."""
        self.repaired = []
        path = self.results_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"{path}: unreadable: {exc.strerror}") from None
        good_end = data.rfind(b"\n") + 1
        if good_end < len(data):
            # A line without its newline was being written when the campaign died.
            self.repaired.append(data[good_end:].decode("utf-8", "replace")[:80])
            with path.open("r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
        records: list[dict[str, Any]] = []
        seen: set[str] = set()
        for n, raw in enumerate(data[:good_end].splitlines(), 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.repaired.append(f"line {n}: {raw[:60].decode('utf-8', 'replace')}")
                continue
            if not isinstance(rec, dict) or "key" not in rec:
                self.repaired.append(f"line {n}: not a case record")
                continue
            if rec["key"] in seen:
                continue
            seen.add(rec["key"])
            records.append(rec)
        return records

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one finished case, durably, before anything else happens."""
        if self._fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        line = (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode()
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def write_case_files(self, key: str, files: Mapping[str, str | bytes]) -> str:
        """Write a case's files under cases/; return the folder relative to the campaign."""
        rel = Path(CASES) / folder_name(key)
        target = self.folder / rel
        if target.exists():
            shutil.rmtree(target)  # a case run again after an interruption
        target.mkdir(parents=True)
        for name, content in files.items():
            dest = target / Path(name).name  # a case cannot write outside its folder
            if isinstance(content, bytes):
                dest.write_bytes(content)
            else:
                dest.write_text(content, encoding="utf-8")
        return rel.as_posix()

    def adopt_folder(self, key: str, source: Path) -> str | None:
        """Move what a dead worker's case left in `source` under cases/; None if nothing."""
        files = [p for p in source.rglob("*") if p.is_file()] if source.is_dir() else []
        if not files:
            return None
        rel = Path(CASES) / folder_name(key)
        target = self.folder / rel
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for p in files:
            shutil.move(str(p), target / p.name)
        return rel.as_posix()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
