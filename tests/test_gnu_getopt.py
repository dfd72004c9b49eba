"""etmem_core.gnu_getopt: glibc getopt_long's scanning rules that the exit statuses rely on."""

from __future__ import annotations

import pytest

from etmem_core.gnu_getopt import Getopt, GetoptError, LongOpt

LONG = (
    LongOpt("socket", True, "s"),
    LongOpt("sock-extra", True, "x"),
    LongOpt("file", True, "f"),
    LongOpt("mode", False, "m"),
)


def scan(args):
    g = Getopt(args, "f:s:m", LONG)
    return list(g), g.positionals, g.count


def test_attached_separate_and_long_forms():
    assert scan(["-fA", "-s", "S", "--file=B", "--socket", "T", "-m"]) == (
        [("f", "A"), ("s", "S"), ("f", "B"), ("s", "T"), ("m", None)],
        [],
        5,
    )


def test_non_options_are_permuted_and_double_dash_ends_options():
    assert scan(["x", "-s", "S", "y", "--", "-f", "z"]) == ([("s", "S")], ["x", "y", "-f", "z"], 1)
    assert scan(["-"]) == ([], ["-"], 0)


def test_clustered_short_options_and_value_in_cluster():
    assert scan(["-mfA"]) == ([("m", None), ("f", "A")], [], 2)
    assert scan(["-mf", "A"]) == ([("m", None), ("f", "A")], [], 2)


def test_unique_prefix_and_ambiguity():
    assert scan(["--fi", "A"])[0] == [("f", "A")]
    assert scan(["--socket", "S"])[0] == [("s", "S")]  # exact match wins over longer names
    with pytest.raises(GetoptError, match="ambiguous"):
        scan(["--so", "S"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-z"], "invalid option -- 'z'"),
        (["-f"], "option requires an argument -- 'f'"),
        (["--file"], "option '--file' requires an argument"),
        (["--mode=1"], "doesn't allow an argument"),
        (["--nope"], "unrecognized option '--nope'"),
    ],
)
def test_errors(args, message):
    with pytest.raises(GetoptError, match=message):
        scan(args)


def test_options_before_an_error_are_returned_and_a_value_may_look_like_an_option():
    g = Getopt(["-s", "-f", "-z"], "f:s:", LONG)
    it = iter(g)
    assert next(it) == ("s", "-f")  # "-f" is -s's value, as in glibc
    with pytest.raises(GetoptError):
        next(it)
