"""The real rmapstress CLI for list / exec / hunt, run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.cli_support import rmapstress

BUG4 = """\
spawn P
mmap P 0x10000 1 rw
touch P 0x10000 1 w
fork P C
swapout all
touch C 0x10000 1 r
touch P 0x10000 1 r
exit C
referenced P 0x10000 1
"""


cli = rmapstress


@pytest.fixture()
def bug4(tmp_path: Path) -> Path:
    p = tmp_path / "bug4.rmap"
    p.write_text(BUG4)
    return p


def test_list_names_every_variant_and_marks_reconstructed() -> None:
    r = cli("list")
    assert r.returncode == 0, r.stderr
    for name in (
        "2.6.34-rc3",
        "reuse-singular",
        "adjust-exporter",
        "clone-order",
        "oldest-anon-vma",
        "rik-v2",
        "clone-sets-anon-vma",
        "hannes-merge",
        "rik-v2-dst",
        "2.6.34",
    ):
        assert name in r.stdout
    assert "[reconstructed]" in r.stdout
    assert "d0e9fe17" in r.stdout and "ea90002b" in r.stdout
    doc = json.loads(cli("list", "--json").stdout)
    assert [p["name"] for p in doc["patches"] if p["reconstructed"]] == ["rik-v2"]


def test_list_shows_the_later_kernels_with_sources_and_what_was_tested() -> None:
    r = cli("list")
    assert r.returncode == 0, r.stderr
    for name, source in (
        ("anon-vma-refcount", "3f6c8272"),
        ("root-anon-vma", "5c341ee1, 012f1800, 76545066"),
        ("root-rmap", "288468c3"),
        ("root-lock-recheck", "f18194275c39"),
        ("swapin-recheck", "4969c1192d15"),
    ):
        assert f"  {name} " in r.stdout and source in r.stdout
    doc = json.loads(cli("list", "--json").stdout)
    presets = {p["name"]: p for p in doc["presets"]}
    assert set(presets) >= {"2.6.35", "2.6.36"}
    assert presets["2.6.36"]["means"].endswith("+root-lock-recheck+swapin-recheck")
    assert "root-lock-recheck" not in presets["2.6.35"]["means"]
    assert "swapin-recheck" not in presets["2.6.34"]["means"]
    assert presets["rik-v2"]["provenance"].startswith("a guess")
    assert presets["rik-v2-dst"]["provenance"].startswith("tested")
    assert "released 2.6.35" in presets["2.6.35"]["provenance"]
    patches = {p["name"]: p for p in doc["patches"]}
    assert patches["root-lock-recheck"]["release"] == "2.6.36-rc3"
    assert patches["anon-vma-refcount"]["release"] == "2.6.35"
    for line in ("a guess at what was tested", "tested: what the thread says"):
        assert line in r.stdout


def test_exec_takes_the_single_page_table_lock_option(bug4: Path) -> None:
    r = cli("exec", str(bug4), "--variant", "2.6.34-rc3", "--no-split-ptlocks")
    assert r.returncode == 1
    assert "--no-split-ptlocks" in r.stdout.splitlines()[-1]  # the replay repeats it


def test_exec_json_defect_on_rc3_with_kasan_names_the_sites(bug4: Path) -> None:
    r = cli("exec", str(bug4), "--variant", "2.6.34-rc3", "--memory", "kasan", "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert (
        doc["outcome"] == "defect" and doc["variant"] == "2.6.34-rc3" and doc["memory"] == "kasan"
    )
    assert doc["ops"] == 9
    kinds = [(d["kind"], d["invariant"], d["line"]) for d in doc["defects"]]
    assert kinds == [("invariant", "I1", 7), ("invariant", "I2", 8), ("use-after-free", None, 9)]
    uaf = doc["defects"][2]
    assert uaf["op"] == "referenced P 0x10000 1"
    assert "anon_vma#8->lock in page_lock_anon_vma" in uaf["detail"]
    assert (
        "freed at line 8 (exit C)" in uaf["detail"]
        and "allocated at line 4 (fork P C)" in uaf["detail"]
    )


def test_exec_clean_on_final_exit_zero(bug4: Path) -> None:
    r = cli("exec", str(bug4), "--variant", "2.6.34", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outcome"] == "clean"


def test_exec_text_prints_defect_and_replay(bug4: Path) -> None:
    r = cli("exec", str(bug4), "--variant", "2.6.34-rc3")
    assert r.returncode == 1
    assert "line 7: touch P 0x10000 1 r" in r.stdout
    assert "invariant I1:" in r.stdout
    assert f"replay: rmapstress exec {bug4} --variant 2.6.34-rc3 --memory reuse" in r.stdout


def test_exec_all_variants_table(bug4: Path) -> None:
    r = cli("exec", str(bug4), "--variant", "all")
    assert r.returncode == 1
    table = r.stdout.rsplit("\n\n", 1)[-1].splitlines()
    assert table[0].split() == ["variant", "outcome", "first", "defect"]
    rows = {line.split()[0]: line.split()[1] for line in table[1:]}
    assert rows == {
        "2.6.34-rc3": "defect",
        "rik-v2": "defect",
        "rik-v2-dst": "defect",
        "hannes-merge": "defect",
        "2.6.34": "clean",
        "2.6.35": "clean",
        "2.6.36": "clean",
    }


def test_exec_reads_stdin() -> None:
    r = cli("exec", "-", "--variant", "2.6.34", "--json", stdin="spawn P\nmmap P 0x10000 1 rw\n")
    assert r.returncode == 0 and json.loads(r.stdout)["ops"] == 2


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["exec", "-"],
            "spawn P\nmmap P 0x10001 1 rw\n",
            "<stdin>:2: address 0x10001 is not page-aligned",
        ),
        (["exec", "/nonexistent/x.rmap"], None, "cannot read program /nonexistent/x.rmap"),
        (["exec", "-", "--variant", "2.6.34+bogus"], "", "unknown patch 'bogus'"),
        (["exec", "-", "--variant", "reuse-singular"], "", "must start with a base or preset"),
        (["exec", "-", "--memory", "leaky"], "", "invalid choice: 'leaky'"),
        (["exec"], None, "the following arguments are required: program"),
        (["hunt"], None, "the following arguments are required: --variant"),
        (["hunt", "--variant", "2.6.34", "--budget-s", "0"], None, "--budget-s: must be a"),
        (["hunt", "--variant", "2.6.34", "--budget-s", "nan"], None, "--budget-s: must be a"),
        (["hunt", "--variant", "2.6.34", "--budget-s", "inf"], None, "got inf"),
        (["hunt", "--variant", "2.6.34", "--budget-s", "-5"], None, "got -5"),
        (["hunt", "--variant", "2.6.34", "--budget-s", "1e9"], None, "at most 86400"),
        # Refused at once, not after a hunt of the whole budget on a kernel with no defect.
        (
            ["hunt", "--variant", "2.6.34", "--budget-s", "600", "-o", "/nonexistent/x.rmap"],
            None,
            "-o: cannot write /nonexistent/x.rmap: no folder /nonexistent",
        ),
        (["hunt", "--variant", "2.6.34", "-o", "/"], None, "-o: / is a folder"),
        (["hunt", "--variant", "2.6.34", "--threads", "-1"], None, "--threads: must be 0"),
        (["hunt", "--variant", "2.6.34", "--threads", "1"], None, "or from 2 to 8, got 1"),
        (["hunt", "--variant", "2.6.34", "--threads", "9"], None, "or from 2 to 8, got 9"),
        (
            ["exec", "-", "--slab-page-bytes", str(1 << 40)],
            "",
            "--slab-page-bytes: must be a multiple of 8 from 768 to 1048576, got 1099511627776",
        ),
        (["exec", "-", "--slab-page-bytes", "1001"], "", "--slab-page-bytes: must be"),
        (["exec", "-", "--slab-page-bytes", "767"], "", "--slab-page-bytes: must be"),
        (["exec", "-", "--min-partial", "-1"], "", "--min-partial: must be from 0 to 1000"),
        (["exec", "-", "--min-partial", "1001"], "", "--min-partial: must be from 0 to 1000"),
        (["frob"], None, "invalid choice: 'frob'"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], stdin: str | None, message: str) -> None:
    r = cli(*args, stdin=stdin, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.timeout(200)
def test_hunt_finds_and_shrinks_rik_v2_and_writes_a_replayable_program(tmp_path: Path) -> None:
    out = tmp_path / "found.rmap"
    r = cli(
        "hunt",
        "--variant",
        "rik-v2",
        "--budget-s",
        "60",
        "--seed",
        "3",
        "-o",
        str(out),
        timeout=190,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [line for line in out.read_text().splitlines() if line and not line.startswith("#")]
    assert 1 <= len(lines) <= 8
    again = cli("exec", str(out), "--variant", "rik-v2", "--json")
    assert again.returncode == 1
    assert json.loads(again.stdout)["defects"][0]["kind"] == "crash"


@pytest.mark.timeout(120)
def test_hunt_on_final_kernel_finds_nothing_in_a_short_budget() -> None:
    r = cli("hunt", "--variant", "2.6.34", "--budget-s", "8")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no defect in" in r.stdout


@pytest.mark.timeout(200)
@pytest.mark.parametrize("threads", [[], ["--threads", "2"]], ids=["sequential", "concurrent"])
def test_hunt_leaves_nothing_in_the_current_folder(tmp_path: Path, threads: list[str]) -> None:
    r = cli(
        "hunt", "--variant", "2.6.34-rc3", "--budget-s", "3", *threads, cwd=tmp_path, timeout=180
    )
    assert r.returncode in (0, 1), r.stderr
    assert list(tmp_path.iterdir()) == []  # no .hypothesis/


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (
            "exec",
            [
                "audit the reverse map's invariants I1-I9 after every line",
                "(default: 4096)",
                "(SLUB: 5; default: 5)",
                "(default: 2.6.34)",
                "(default: reuse)",
                "CONFIG_DEBUG_LIST",
            ],
        ),
        (
            "hunt",
            [
                "shrink it to a minimal program",
                "(default: 60)",
                "search seed",
                "(default: 0)",
                "(default: reuse)",
                "its folder must exist",
            ],
        ),
        ("run", ["--memory {reuse,kasan}", "'kasan' poisons them"]),
    ],
)
def test_help_describes_the_command_and_its_defaults(command: str, words: list[str]) -> None:
    r = cli(command, "--help", timeout=60)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # argparse wraps lines
    for word in words:
        assert word in text, (word, r.stdout)


@pytest.mark.timeout(150)
def test_exec_shows_a_progress_line_on_a_terminal_only(tmp_path: Path) -> None:
    import pty

    prog = tmp_path / "long.rmap"
    prog.write_text("".join(f"spawn P{i}\n" for i in range(12_000)))
    master, slave = pty.openpty()
    with open(tmp_path / "out.json", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stress", "exec", str(prog), "--json"],
            stdout=out,
            stderr=slave,
        )
    os.close(slave)
    seen = b""
    while True:  # until the child's end closes the terminal (EIO)
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(120) == 0
    text = seen.decode()
    assert "exec 2.6.34: line 1 of 12,000 (0%" in text, text
    assert text.endswith("\r\x1b[K")  # the line is cleared at the end
    assert json.loads((tmp_path / "out.json").read_text())["ops"] == 12_000
    r = cli("exec", str(prog), "--json", timeout=120)  # stderr a pipe: nothing on it
    assert r.returncode == 0 and r.stderr == ""
