"""`kf-convert` argument parsing: `--beam-options VALUE` with a VALUE that
starts with `--` (issue 23), checked against argparse itself and, when Beam is
installed, against Beam's own reading of the option string."""

import re
import shlex

import pytest

from klassterfork.cli import convert as cli

BASE = ["--csv", "list.csv", "--out", "records", "--runner", "beam"]


def help_example():
    """The option string the --beam-options help shows, quotes removed."""
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if "--beam-options" in a.option_strings]
    match = re.search(r'\(e\.g\. "([^"]+)"\)', action.help)
    assert match, "the --beam-options help no longer shows an example"
    return match.group(1)


def test_help_form_is_refused_without_the_fix():
    """The reference: plain argparse takes the value for `--runner`."""
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(BASE + ["--beam-options", help_example()])
    assert e.value.code == 2


def test_help_form_parses():
    example = help_example()
    assert example.startswith("--runner=DataflowRunner --project=P")
    _, args = cli.parse_args(BASE + ["--beam-options", example])
    assert args.beam_options == example
    assert args.runner == "beam" and args.csv == "list.csv"


@pytest.mark.parametrize("argv", [
    # The module docstring's form, split by a shell.
    shlex.split('--csv l.csv --out r --runner beam --beam-options '
                '"--direct_num_workers=4 --direct_running_mode=multi_processing"'),
    # The `=` form keeps working, and so does an argparse abbreviation.
    ["--csv", "l.csv", "--out", "r", "--runner", "beam",
     "--beam-options=--direct_num_workers=4 --direct_running_mode=multi_processing"],
    ["--csv", "l.csv", "--beam-opt", "--direct_num_workers=4 "
     "--direct_running_mode=multi_processing", "--out", "r", "--runner", "beam"],
])
def test_beam_options_forms(argv):
    _, args = cli.parse_args(argv)
    assert args.beam_options == ("--direct_num_workers=4 "
                                 "--direct_running_mode=multi_processing")
    assert (args.csv, args.out, args.runner) == ("l.csv", "r", "beam")


def test_dangling_beam_options_is_still_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(BASE + ["--beam-options"])
    assert e.value.code == 2
    assert "--beam-options: expected one argument" in capsys.readouterr().err


def test_join_option_values_by_hand():
    join = cli.join_option_values
    assert join(["--beam-options", "--a=1", "--out", "x"]) == [
        "--beam-options=--a=1", "--out", "x"]
    assert join(["--beam-options=--a=1"]) == ["--beam-options=--a=1"]
    assert join(["--out", "--", "--beam-options", "v"]) == [
        "--out", "--", "--beam-options", "v"]
    assert join(["--b", "v"]) == ["--b", "v"]  # too short to be ours
    assert join(["--beam-options"]) == ["--beam-options"]


def test_beam_reads_the_parsed_options():
    pytest.importorskip("apache_beam")
    from klassterfork.data.conversion import beam_convert

    _, args = cli.parse_args(BASE + ["--beam-options",
                                     "--runner=DataflowRunner --project=P"])
    options = beam_convert.pipeline_options(args.beam_options, 2).get_all_options()
    assert (options["runner"], options["project"]) == ("DataflowRunner", "P")
