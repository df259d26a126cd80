"""Configuration: TOML file, CELERIAC_* variables and flags, in that order of strength."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from celeriac.cli.config import ConfigError, Resolved, parse
from celeriac.cli.main import command_line

CELERIAC = [sys.executable, "-m", "celeriac"]


def resolve(argv: list[str], env: dict[str, str] | None = None) -> Resolved:
    return parse(command_line(), argv, environ=env or {})


def write(tmp_path: Path, text: str, name: str = "celeriac.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- precedence: flag > environment > file > default ------------------------------------------

FILE = "[scheduler]\nworker-timeout = 7.0\n"


@pytest.mark.parametrize(
    ("in_file", "in_env", "flag", "expected", "source"),
    [
        (False, False, False, 5.0, "default"),
        (True, False, False, 7.0, "[scheduler] worker-timeout"),
        (False, True, False, 8.0, "CELERIAC_WORKER_TIMEOUT"),
        (True, True, False, 8.0, "CELERIAC_WORKER_TIMEOUT"),
        (False, False, True, 9.0, "flag"),
        (True, False, True, 9.0, "flag"),
        (False, True, True, 9.0, "flag"),
        (True, True, True, 9.0, "flag"),
    ],
)
def test_precedence(
    tmp_path: Path, in_file: bool, in_env: bool, flag: bool, expected: float, source: str
) -> None:
    argv = ["scheduler"]
    if in_file:
        argv += ["--config", write(tmp_path, FILE)]
    if flag:
        argv += ["--worker-timeout", "9"]
    env = {"CELERIAC_WORKER_TIMEOUT": "8"} if in_env else {}
    resolved = resolve(argv, env)
    assert resolved.settings.worker_timeout == expected
    assert resolved.sources["worker_timeout"].endswith(source)
    assert resolved.settings.port == 8786 and resolved.sources["port"] == "default"


def test_config_path_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[worker]\nnprocs = 3\n")
    assert resolve(["worker"], {"CELERIAC_CONFIG": path}).settings.nprocs == 3
    other = write(tmp_path, "[worker]\nnprocs = 4\n", "other.toml")
    flagged = resolve(["worker", "--config", other], {"CELERIAC_CONFIG": path})
    assert flagged.settings.nprocs == 4  # --config beats $CELERIAC_CONFIG


def test_dashes_or_underscores_and_typed_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [worker]
        address = "127.0.0.1:9999"
        max_tasks_per_child = 100
        max-memory-per-child = "1GB"
        queues = ["default", "emails"]
        import = ["json", "os.path"]
        log-level = "debug"
        keys = "keys"
        """.replace("        ", ""),
    )
    args = resolve(["worker", "--config", path]).settings
    assert args.address == "127.0.0.1:9999"
    assert args.max_tasks_per_child == 100
    assert args.max_memory_per_child == 1 << 30
    assert args.queues == ("default", "emails")
    assert args.imports == ("json", "os.path")
    assert args.log_level == "DEBUG"
    assert args.keys == str(tmp_path / "keys")  # relative to the file


def test_environment_values_are_converted_like_flags() -> None:
    env = {
        "CELERIAC_ADDRESS": "tcp://127.0.0.1:9000",
        "CELERIAC_NPROCS": "2",
        "CELERIAC_QUEUES": "a, b",
        "CELERIAC_IMPORTS": "json,os",
        "CELERIAC_LOG_LEVEL": "warning",
    }
    args = resolve(["worker"], env).settings
    assert (args.address, args.nprocs, args.queues) == ("tcp://127.0.0.1:9000", 2, ("a", "b"))
    assert args.imports == ("json", "os") and args.log_level == "WARNING"
    assert resolve(["scheduler"], {"CELERIAC_NO_DASHBOARD": "yes"}).settings.no_dashboard is True
    assert resolve(["inspect"], env).settings.address == "tcp://127.0.0.1:9000"
    assert resolve(["periodic", "list"], env).settings.address == "tcp://127.0.0.1:9000"


def test_a_positional_address_beats_the_environment() -> None:
    env = {"CELERIAC_ADDRESS": "tcp://127.0.0.1:9000"}
    assert resolve(["worker", "tcp://127.0.0.1:9001"], env).settings.address.endswith(":9001")


def test_client_section_is_shared_by_periodic_and_inspect(tmp_path: Path) -> None:
    path = write(tmp_path, '[client]\naddress = "tcp://127.0.0.1:9002"\ntimeout = 1.5\n')
    for argv in (["inspect"], ["status"], ["periodic", "list"]):
        args = resolve([*argv, "--config", path]).settings
        assert (args.address, args.timeout) == ("tcp://127.0.0.1:9002", 1.5)


def test_exclusive_options_follow_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, '[scheduler]\njournal = "/tmp/j.sqlite3"\n')
    args = resolve(["scheduler", "--config", path, "--no-journal"]).settings
    assert args.no_journal and args.journal is None
    args = resolve(["scheduler", "--config", path], {"CELERIAC_NO_JOURNAL": "1"}).settings
    assert args.no_journal and args.journal is None
    path = write(tmp_path, "[scheduler]\nno-dashboard = true\n")
    args = resolve(["scheduler", "--config", path, "--dashboard-port", "9999"]).settings
    assert args.dashboard_port == 9999 and not args.no_dashboard
    both = write(tmp_path, "[scheduler]\nno-journal = true\njournal = 'x'\n", "both.toml")
    with pytest.raises(ConfigError, match="exclude each other"):
        resolve(["scheduler", "--config", both])


def test_the_embedded_cluster_ignores_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[worker]\nqueues = ['emails']\n")
    env = {"CELERIAC_CONFIG": path, "CELERIAC_NPROCS": "7", "CELERIAC_KEYS": "/k"}
    args = resolve(["worker", "tcp://127.0.0.1:9000", "--parent-pid", "1"], env).settings
    assert (args.queues, args.nprocs, args.keys) == (("default",), 1, "/k")


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[worker]\nnproc = 2\n",
            "unknown key 'nproc' in section [worker] (did you mean 'nprocs'?)",
        ),
        ("[scheduler]\nnprocs = 2\n", "unknown key 'nprocs' in section [scheduler]"),
        ("[client]\njson = true\n", "unknown key 'json' in section [client]"),
        ("[workers]\nnprocs = 2\n", "unknown section 'workers' (did you mean 'worker'?)"),
        ("port = 1\n", "unknown key 'port'"),
    ],
)
def test_unknown_keys_are_errors_naming_key_and_section(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match="unknown") as info:
        resolve(["scheduler", "--config", write(tmp_path, text)])
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[scheduler]\nport = "http"\n', "[scheduler] port: --port takes an integer, not 'http'"),
        ("[scheduler]\nport = 1.5\n", "--port takes an integer, not 1.5"),
        ("[scheduler]\nworker-timeout = true\n", "--worker-timeout takes a number, not True"),
        ("[scheduler]\ninsecure = 'yes'\n", "--insecure takes true or false, not 'yes'"),
        ('[scheduler]\nfsync = "sometimes"\n', "--fsync must be one of always, batch, never"),
        ("[scheduler]\nhost = 127\n", "--host takes a string, not 127"),
        ("[worker]\nqueues = [1, 2]\n", "--queues takes a list of strings"),
        ('[worker]\nmax-memory-per-child = "lots"\n', "'lots' is not a size like 500MB"),
        ("[worker]\nnprocs = 2\nnprocs = 3\n", "not valid TOML"),
        ("[worker]\nnprocs = 2\n[worker.x]\n", "unknown key 'x' in section [worker]"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(["worker", "--config", write(tmp_path, text)])
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value)  # names the file


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="CELERIAC_NPROCS: --nprocs takes an integer"):
        resolve(["worker"], {"CELERIAC_NPROCS": "many"})
    with pytest.raises(ConfigError, match="CELERIAC_NO_JOURNAL: --no-journal takes true or"):
        resolve(["scheduler"], {"CELERIAC_NO_JOURNAL": "perhaps"})


def test_misspelt_environment_variable_is_a_warning() -> None:
    resolved = resolve(["worker"], {"CELERIAC_NPROC": "2"})
    assert resolved.warnings == [
        "ignoring unknown environment variable CELERIAC_NPROC (did you mean 'CELERIAC_NPROCS'?)"
    ]


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve(["worker", "--config", str(tmp_path / "nope.toml")])
