"""``etmem sysinfo`` text: lists of node and kdamond ids read as ids, not as counts."""

from __future__ import annotations

from etmem_scan.probe import Capabilities, probe

from etmem_core.cli.sysinfo import format_text


def caps(**facts: object) -> Capabilities:
    real = probe()  # this machine's verdicts; only the facts under test are replaced
    return Capabilities(trackers=real.trackers, actuators=real.actuators, facts=facts)


def fact_line(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(key + " "))


def test_node_ids_and_running_kdamonds_are_named():
    text = format_text(caps(numa_nodes=[0], damon_running=["0"], damon_kdamonds=1))
    assert fact_line(text, "numa_nodes").split(None, 1)[1] == "node 0"
    assert fact_line(text, "damon_running").split(None, 1)[1] == "kdamond 0 running"
    assert fact_line(text, "damon_kdamonds").split(None, 1)[1] == "1"  # a count stays a count


def test_several_nodes_and_no_running_kdamond():
    text = format_text(caps(numa_nodes=[0, 1], damon_running=[]))
    assert fact_line(text, "numa_nodes").split(None, 1)[1] == "node 0, node 1 (2 in all)"
    assert fact_line(text, "damon_running").split(None, 1)[1] == "none"
