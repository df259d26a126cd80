"""The worker's options as Celery users type them: ``celeriac -A proj worker -l INFO -Q a,b -c 4``,
and an option declared ``before_command`` given before the command's name, after it, or both."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from celeriac.cli.config import parse
from celeriac.cli.main import command_line
from celeriac.cli.parsers import Command, CommandLine
from celeriac.cli.settings import Invocation
from celeriac.options import CommonSettings, option


@pytest.mark.parametrize(
    "argv",
    [
        ["-A", "proj", "worker", "-l", "INFO", "-Q", "a,b", "-c", "4"],  # Celery's order
        ["worker", "-A", "proj", "--loglevel", "info", "-Q", "a,b", "--concurrency", "4"],
        ["--app", "proj", "worker", "--loglevel=info", "-Qa,b", "-c4"],
        ["--app=proj", "worker", "--log-level", "INFO", "--queues", "a,b", "--nprocs", "4"],
        ["-Aproj", "worker", "-linfo", "--queues=a,b", "--concurrency=4"],
    ],
)
def test_celerys_worker_spellings_are_the_same_settings(argv: list[str]) -> None:
    resolved = parse(command_line(), argv, environ={})
    settings = resolved.settings
    assert (settings.imports, settings.log_level) == (("proj",), "INFO")  # type: ignore[attr-defined]
    assert (settings.queues, settings.nprocs) == (("a", "b"), 4)  # type: ignore[attr-defined]
    assert {resolved.sources[name] for name in ("imports", "log_level", "queues", "nprocs")} == {
        "flag"
    }


@pytest.mark.parametrize(
    ("argv", "imports"),
    [
        (["-A", "a", "worker", "-A", "b"], ("a", "b")),  # before the command's name first
        (["-A", "a", "--app", "b", "worker", "--import", "c"], ("a", "b", "c")),
        (["worker", "-A", "a", "-A", "b"], ("a", "b")),
    ],
)
def test_a_repeatable_option_given_before_and_after_the_command_takes_both(
    argv: list[str], imports: tuple[str, ...]
) -> None:
    assert parse(command_line(), argv, environ={}).settings.imports == imports  # type: ignore[attr-defined]


@pytest.mark.parametrize("level", ["critical", "FATAL", "debug"])
def test_celerys_log_levels_are_accepted_in_any_case(level: str) -> None:
    settings = parse(command_line(), ["worker", "-l", level], environ={}).settings
    assert settings.log_level == level.upper()


@pytest.mark.parametrize("argv", [["inspect"], ["scheduler"], ["keys", "create", "dir"]])
def test_a_before_command_option_for_a_command_without_it_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    command = argv[0]
    with pytest.raises(SystemExit) as exited:
        parse(command_line(), ["-A", "proj", *argv], environ={})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"`celeriac {command}` takes no -A/--import/--app" in err
    assert "it is an option of `celeriac worker`" in err


def test_the_top_level_help_shows_the_option_and_whose_it_is() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        command_line().parser.parse_args(["--help"])
    text = " ".join(out.getvalue().split())
    assert "-A MODULE, --import MODULE, --app MODULE `celeriac worker`'s option" in text


def test_the_config_file_and_environment_take_the_same_options(tmp_path: Path) -> None:
    config = tmp_path / "celeriac.toml"
    config.write_text('[worker]\nconcurrency = 3\napp = ["proj"]\nloglevel = "debug"\n')
    resolved = parse(command_line(), ["worker", "--config", str(config)], environ={})
    settings = resolved.settings
    assert (settings.nprocs, settings.imports, settings.log_level) == (3, ("proj",), "DEBUG")  # type: ignore[attr-defined]
    environ = {"CELERIAC_NPROCS": "2", "CELERIAC_IMPORTS": "a,b"}
    settings = parse(command_line(), ["worker"], environ=environ).settings
    assert (settings.nprocs, settings.imports) == (2, ("a", "b"))  # type: ignore[attr-defined]


@dataclass(frozen=True, kw_only=True)
class EarlySettings(CommonSettings):
    target: str | None = option(None, flags=("-t", "--target"), before_command=True, help="t")


def _run(settings: Any, invocation: Invocation) -> int:
    return 0


def early_cli() -> CommandLine:
    commands = [
        Command("one", EarlySettings, _run, help="one", description="One."),
        Command("two", EarlySettings, _run, help="two", description="Two."),
    ]
    return CommandLine(commands, prog="toy", description="Toys.")


@pytest.mark.parametrize(
    ("argv", "target"),
    [
        (["one"], None),
        (["-t", "x", "one"], "x"),
        (["one", "-t", "y"], "y"),
        (["-t", "x", "two", "-t", "y"], "y"),  # a single value: the later one
    ],
)
def test_a_single_valued_option_before_the_command_is_overridden_after_it(
    argv: list[str], target: str | None
) -> None:
    assert parse(early_cli(), argv, environ={}).settings.target == target  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "size"),
    [("12000", 12000 << 10), ("12000B", 12000), ("500MB", 500 << 20), ("2G", 2 << 30)],
)
def test_max_memory_per_child_reads_a_bare_number_as_kib_as_celery_does(
    value: str, size: int, tmp_path: Path
) -> None:
    argv = ["worker", "--max-memory-per-child", value]
    assert parse(command_line(), argv, environ={}).settings.max_memory_per_child == size  # type: ignore[attr-defined]
    environ = {"CELERIAC_MAX_MEMORY_PER_CHILD": value}
    assert parse(command_line(), ["worker"], environ=environ).settings.max_memory_per_child == size  # type: ignore[attr-defined]
    config = tmp_path / "c.toml"
    config.write_text("[worker]\nmax-memory-per-child = 12000\n")  # a TOML number: KiB too
    settings = parse(command_line(), ["worker", "--config", str(config)], environ={}).settings
    assert settings.max_memory_per_child == 12000 << 10  # type: ignore[attr-defined]
