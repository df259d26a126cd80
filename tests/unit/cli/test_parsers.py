"""The argparse parsers built from settings dataclasses, and the layers filled through them."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from celeriac.cli.config import parse
from celeriac.cli.main import COMMANDS, command_line
from celeriac.cli.parsers import Command, CommandLine
from celeriac.cli.settings import Invocation
from celeriac.options import BadValue, CommonSettings, comma_list, declared, option, path


def _size(text: str) -> int:
    if not text.isdigit():
        raise BadValue(f"{text!r} is no size")
    return int(text)


@dataclass(frozen=True, kw_only=True)
class ToySettings(CommonSettings):
    target: str = option("here", positional=True, help="where to (default: %(default)s)")
    count: int = option(3, help="how many")
    ratio: float | None = option(None, metavar="R", help="a ratio")
    loud: bool = option(False, help="shout")
    tags: tuple[str, ...] = option(("a", "b"), help="comma-separated tags")
    extra: tuple[str, ...] = option((), flags=("-E", "--extra"), repeat=True, help="repeatable")
    size: int | None = option(None, parse=_size, help="a size")
    where: str | None = option(None, parse=path, exclusive="place", help="a path")
    nowhere: bool = option(False, exclusive="place", help="no path")
    secret: int | None = option(None, hidden=True, help="not shown")
    once: bool = option(False, configurable=False, help="about this run only")


def _run(settings: Any, invocation: Invocation) -> int:
    return 0


def toy_cli(show_defaults: bool = True) -> CommandLine:
    toy = Command(
        "toy", ToySettings, _run, help="a toy", description="A toy.", section="toy",
        show_defaults=show_defaults, check=True,
    )  # fmt: skip
    return CommandLine([toy], prog="celeriac", description="Toys.")


def help_text(cli: CommandLine, command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.parser.parse_args([command, "--help"])
    return out.getvalue()


def toy_help(show_defaults: bool = True) -> str:
    return help_text(toy_cli(show_defaults), "toy")


def test_each_field_becomes_an_argument_with_its_help_and_default() -> None:
    text = " ".join(toy_help().split())  # unwrapped
    for expected in (
        "[target]",
        "where to (default: here)",  # %(default)s, and no second default appended
        "--count COUNT how many (default: 3)",
        "--ratio R a ratio (default: None)",
        "--loud shout (default: False)",
        "--tags TAGS comma-separated tags (default: a,b)",  # as argparse showed "a,b"
        "-E EXTRA, --extra EXTRA repeatable (default: [])",
        "[--where WHERE | --nowhere]",
        "--config PATH",
        "--check",
    ):
        assert expected in text, expected
    assert "secret" not in text and "parent-pid" not in text  # hidden
    bare = " ".join(toy_help(show_defaults=False).split())
    assert "--count COUNT how many --ratio" in bare and "where to (default: here)" in bare


def test_help_lists_common_options_first_and_check_last() -> None:
    listed = toy_help().split("options:")[1].splitlines()
    flags = [line.split()[0].rstrip(",") for line in listed if line.startswith("  -")]
    assert flags[:3] == ["-h", "-l", "--config"]  # -l, --log-level, --loglevel
    assert flags[-1] == "--check"


def test_nothing_given_is_the_dataclass_defaults() -> None:
    resolved = parse(toy_cli(), ["toy"], environ={})
    assert resolved.settings == ToySettings()
    assert resolved.invocation == Invocation()
    assert set(resolved.sources.values()) == {"default"}
    assert "once" not in resolved.sources  # not configurable: never reported


def test_given_values_are_parsed_by_type() -> None:
    argv = ["toy", "there", "--count", "7", "--ratio", "0.5", "--loud", "--tags", "x, y"]
    argv += ["-E", "1", "--extra", "2", "--size", "10", "--where", "p", "--once", "--check"]
    resolved = parse(toy_cli(), argv, environ={})
    assert resolved.settings == ToySettings(
        target="there", count=7, ratio=0.5, loud=True, tags=("x", "y"), extra=("1", "2"),
        size=10, where="p", once=True,
    )  # fmt: skip
    assert resolved.invocation.check
    assert resolved.sources["count"] == resolved.sources["extra"] == "flag"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--count", "x"], "argument --count: invalid int value: 'x'"),
        (["--size", "big"], "argument --size: 'big' is no size"),  # BadValue's own words
        (["--where", "p", "--nowhere"], "argument --nowhere: not allowed with argument --where"),
        (["--log-level", "loud"], "argument -l/--log-level/--loglevel: invalid choice: 'LOUD'"),
    ],
)
def test_bad_flags_are_argparse_errors(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit):
        parse(toy_cli(), ["toy", *argv], environ={})
    assert message in capsys.readouterr().err


def test_precedence_flag_environment_file_default(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[toy]\ncount = 4\nratio = 1.5\ntags = ['f']\nextra = ['e']\nwhere = 'w'\n")
    env = {"CELERIAC_RATIO": "2.5", "CELERIAC_TAGS": "v", "CELERIAC_NOWHERE": "yes"}
    resolved = parse(toy_cli(), ["toy", "--config", str(config), "--tags", "t"], environ=env)
    s = resolved.settings
    assert (s.count, s.ratio, s.tags, s.extra, s.loud) == (4, 2.5, ("t",), ("e",), False)
    assert (s.where, s.nowhere) == (None, True)  # the variable's choice silences the file's
    assert resolved.sources == {
        **{name: "default" for name in ("log_level", "target", "loud", "size", "secret")},
        "count": f"{config} [toy] count",
        "ratio": "CELERIAC_RATIO",
        "tags": "flag",
        "extra": f"{config} [toy] extra",
        "where": "default",
        "nowhere": "CELERIAC_NOWHERE",
    }


def test_a_path_in_a_file_is_relative_to_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[toy]\nwhere = 'sub/x'\n")
    resolved = parse(toy_cli(), ["toy", "--config", str(config)], environ={})
    assert resolved.settings.where == str(tmp_path / "sub" / "x")


#: What each real command needs on its command line: its required positionals.
REQUIRED = {"periodic": ["list"], "keys": ["create", "DIR"], "journal": ["check", "PATH"]}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_field_of_every_command_is_an_argument(command: Command) -> None:
    """The real commands: each option is in --help, and unsaid is its dataclass default."""
    cli = command_line()
    text = help_text(cli, command.name)
    for d in declared(command.settings):
        assert all(flag in text for flag in d.flags), d.name
    resolved = parse(cli, [command.name, *REQUIRED.get(command.name, [])], environ={})
    defaults = {d.name: d.default for d in declared(command.settings) if not d.required}
    assert {name: getattr(resolved.settings, name) for name in defaults} == defaults
    assert type(resolved.settings) is command.settings


def test_settings_fields_are_typed_and_named_once() -> None:
    """The parse a field gets follows its type; the option strings follow its name."""
    by_name = {d.name: d for d in declared(ToySettings)}
    assert by_name["count"].parse is int and by_name["ratio"].parse is float
    assert by_name["tags"].parse is comma_list and by_name["loud"].kind == "flag"
    assert by_name["extra"].kind == "repeat" and by_name["extra"].label == "--extra"
    assert by_name["target"].flags == () and by_name["target"].label == "TARGET"
    assert dataclasses.fields(ToySettings)[0].name == "log_level"  # the common ones first


def test_the_worker_processes_read_the_settings_the_command_line_resolved() -> None:
    from celeriac.worker.settings import ChildSettings, child_command, read_child_command

    argv = ["worker", "ipc:///tmp/s.sock", "--nthreads", "2", "-A", "json", "--queues", "a,b"]
    env = {"CELERIAC_MAX_MEMORY_PER_CHILD": "1GB", "CELERIAC_NAME": "web"}
    settings = parse(command_line(), argv, environ=env).settings
    child = ChildSettings(b"id", 5, 0, 99)
    assert read_child_command(child_command(settings, child)[3:]) == (settings, child)
    assert (settings.max_memory_per_child, settings.imports) == (1 << 30, ("json",))
