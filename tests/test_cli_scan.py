"""``etmem scan --decode``: page list and cold list of captured streams vs the golden output."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from etmem_core.cli import main

# C's list is unsorted with a duplicate node here; ours is folded (see test_idle_pages)
SKIP = {"set_hva_backward"}
FAILING = {"record_before_address", "set_hva_zero", "error_in_second_pass"}


def cases(golden: Path) -> list[dict]:
    return json.loads((golden / "idle_pages" / "manifest.json").read_text())["cases"]


def pass_files(golden: Path, case: dict, tmp_path: Path) -> list[str]:
    """One file per pass: the reads of that pass, concatenated (each starts with SET_HVA)."""
    files = []
    for k in range(1, case["loop"] + 1):
        data = b"".join(
            (golden / "idle_pages" / case["name"] / r["file"]).read_bytes()
            for r in case["reads"]
            if r["pass"] == k
        )
        f = tmp_path / f"{case['name']}.pass{k}"
        f.write_bytes(data)
        files.append(str(f))
    return files


def run(capsysbinary, argv: list[str]) -> tuple[int, bytes, bytes]:
    rc = main(argv)
    out, err = capsysbinary.readouterr()
    return rc, out, err


def test_decode_every_golden_case(golden: Path, tmp_path: Path, capsysbinary) -> None:
    checked = 0
    for case in cases(golden):
        if case["name"] in SKIP | FAILING:
            continue
        d = golden / "idle_pages" / case["name"]
        files = pass_files(golden, case, tmp_path)
        rc, out, _ = run(capsysbinary, ["scan", "--decode", *files])
        assert rc == 0 and out == (d / "c_refs.txt").read_bytes(), case["name"]
        rc, out, _ = run(capsysbinary, ["scan", "--decode", *files, "--cold", str(case["T"])])
        assert rc == 0 and out == (d / "c_swap_pages.txt").read_bytes(), case["name"]
        checked += 1
    assert checked >= 14


@pytest.mark.parametrize("name", sorted(FAILING))
def test_rejected_stream_exits_non_zero(golden: Path, tmp_path: Path, capsysbinary, name) -> None:
    case = next(c for c in cases(golden) if c["name"] == name)
    files = pass_files(golden, case, tmp_path)
    rc, out, err = run(capsysbinary, ["scan", "--decode", *files, "--cold", "1"])
    assert rc == 1 and out == b""
    bad = files[-1]  # error_in_second_pass: the second file is the bad one
    assert re.search(rb": idle_pages record at byte \d+ before any address", err)
    assert err.count(bad.encode()) == 1


def test_usage_errors(tmp_path: Path, capsysbinary) -> None:
    rc, _, err = run(capsysbinary, ["scan", "--decode"])
    assert rc == 2 and b"at least one stream" in err
    rc, _, err = run(capsysbinary, ["scan", "--decode", str(tmp_path / "nope")])
    assert rc == 1 and b"No such file" in err
    rc, _, err = run(capsysbinary, ["scan", "--decode", "--page-size", "5000", "x"])
    assert rc == 2
    rc, _, err = run(capsysbinary, ["scan"])
    assert rc == 2


def test_page_size_option(tmp_path: Path, capsysbinary) -> None:
    f = tmp_path / "p1"
    f.write_bytes(b"\xa0" + struct.pack(">Q", 0x7F0000000000) + bytes([0x71]))
    rc, out, _ = run(capsysbinary, ["scan", "--decode", str(f), "--page-size", "65536"])
    assert rc == 0 and len(out.splitlines()) == 8192  # a 512 MiB PMD of 64 KiB pages
    rc, out, _ = run(capsysbinary, ["scan", "--decode", str(f)])
    assert len(out.splitlines()) == 512
