"""One declaration per command: getopt tables, the original's help and typer's options all come
from the :class:`~etmem_core.cli.options.Option` rows of each noun (etmem_core/cli/options.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from etmem_core.cli import _load, engine, obj, project
from etmem_core.cli.common import EXIT_E2BIG, EXIT_EINVAL, UsageError
from etmem_core.cli.options import Option, getopt_table, options_block, scan_options
from etmem_core.gnu_getopt import LongOpt

NOUNS = (obj, project, engine)


def test_getopt_table_from_rows():
    rows = (
        Option("f", "file", "conf_file", "x", "X."),
        Option("j", "json", None, "y", "Y.", short=False),
        Option("v", "verbose", None, "z", "Z."),
    )
    assert getopt_table(rows) == (
        "f:v",
        (LongOpt("file", True, "f"), LongOpt("json", False, "j"), LongOpt("verbose", False, "v")),
    )


def test_options_block_layout():
    rows = (
        Option("f", "file", "conf_file", "Add configuration file", "X."),
        Option("j", "json", None, "as JSON", "Y.", short=False),
    )
    assert options_block(rows, 24) == (
        "    -f|--file <conf_file>    Add configuration file\n"
        "    --json                   as JSON\n"
    )


@pytest.mark.parametrize("noun", NOUNS, ids=lambda m: m.NAME)
def test_every_option_is_in_the_help_page_and_typer_help(noun):
    """A row is parsed, printed by 'etmem NOUN help' and shown by --help: no second list."""
    # engine is one command; obj's first command and project's (show) take every option
    args = (
        [noun.NAME, "--help"]
        if noun is engine
        else [noun.NAME, next(iter(noun.COMMANDS)), "--help"]
    )
    typer_help = CliRunner().invoke(_load(), args).output
    for row in noun.OPTIONS:
        assert f"--{row.long}" in noun.HELP and row.summary in noun.HELP
        if row.short:
            assert f"-{row.letter}|--{row.long}" in noun.HELP
        assert f"--{row.long}" in typer_help


def test_scan_options_applies_the_originals_rules():
    table = getopt_table(obj.OPTIONS)
    assert scan_options(
        ["--so=S", "-fF"], table, "obj add", error_status=EXIT_EINVAL, extra_status=EXIT_E2BIG
    ) == {"s": "S", "f": "F"}
    with pytest.raises(UsageError) as err:
        scan_options(["-x"], table, "obj add", error_status=EXIT_EINVAL, extra_status=EXIT_E2BIG)
    assert err.value.status == EXIT_EINVAL and "obj add: invalid option -- 'x'" in str(err.value)
    with pytest.raises(UsageError) as err:
        scan_options(
            ["-f", "F", "extra"],
            table,
            "obj add",
            error_status=EXIT_EINVAL,
            extra_status=EXIT_E2BIG,
        )
    assert err.value.status == EXIT_E2BIG and "extra" in str(err.value)


@pytest.mark.parametrize(
    ("noun", "args"),
    [
        (obj, ["add", "-f", "/a.conf", "-s", "S"]),
        (obj, ["del", "--file", "/a.conf", "--socket", "S"]),
        (project, ["show", "-s", "S", "--json"]),
        (project, ["stop", "-n", "p", "-s", "S"]),
        (engine, ["showstats", "-n", "p", "-s", "S", "-e", "cslide", "-t", "t1", "--json"]),
    ],
)
def test_typer_form_reaches_the_same_run(noun, args, monkeypatch):
    """typer's command bodies are not a second implementation: they call what getopt calls."""
    calls = []

    def record(*a, **kw):
        calls.append((a, kw))
        return 0

    monkeypatch.setattr(noun, "run", record)
    assert noun.compat_main(args) == 0
    typer_args = [noun.NAME, *args]
    result = CliRunner().invoke(_load(), typer_args)
    assert result.exit_code == 0, result.output
    assert len(calls) == 2 and calls[0] == calls[1]
