"""Configuration for the command line: a TOML file, ``CELERIAC_*`` variables, flags.

One file serves every daemon and tool::

    [scheduler]
    port = 8786
    worker-timeout = 10.0

    [worker]
    address = "tcp://127.0.0.1:8786"
    nprocs = 4
    queues = ["default", "emails"]

    [client]                      # read by the commands that connect: periodic, inspect
    address = "tcp://127.0.0.1:8786"

A key is an option of the command, spelt with dashes or underscores
(``worker-timeout`` or ``worker_timeout``).  Nothing here lists the options:
they are the fields of the command's settings class (:mod:`celeriac.options`),
so a new option is configurable at once.

Precedence, highest first: a flag on the command line, the environment
variable ``CELERIAC_<OPTION>`` (``CELERIAC_WORKER_TIMEOUT``), the section of
the file named by ``--config`` or ``$CELERIAC_CONFIG``, the built-in default.
"""

from __future__ import annotations

import difflib
import os
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celeriac.cli.parsers import Command, CommandLine
from celeriac.cli.settings import Invocation
from celeriac.options import (
    BadValue,
    CommonSettings,
    Declared,
    comma_list,
    configurable,
    declared,
    path,
)

ENV_PREFIX = "CELERIAC_"
CONFIG_ENV = "CELERIAC_CONFIG"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """A bad configuration: the message names the file, section and key, or the variable."""


def key_names(d: Declared) -> set[str]:
    """How a file may spell the option (normalized to underscores): its name and long flags."""
    names = {d.name}
    for flag in d.flags:
        if flag.startswith("--"):
            names.add(flag[2:].replace("-", "_"))
    return names


def env_name(name: str) -> str:
    """The variable that sets option ``name``: ``worker_timeout`` -> ``CELERIAC_WORKER_TIMEOUT``."""
    return ENV_PREFIX + name.upper()


# -- reading values --------------------------------------------------------------------------


@dataclass
class Layer:
    """Values from one source, by field name, with where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


def load_file(path: str | Path) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict; :class:`ConfigError` naming it if unreadable."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return data


def check_file(
    data: Mapping[str, Any],
    path: str | Path,
    sections: Mapping[str, Sequence[type]],
) -> dict[str, Layer]:
    """Every section of the file converted, or a :class:`ConfigError` naming the key.

    ``sections`` maps a section name to the settings classes that read it
    (``client``: periodic's and inspect's); a key must belong to one of them.
    """
    layers = {}
    for section, table in data.items():
        if section not in sections:
            raise ConfigError(
                f"{path}: unknown {'section' if isinstance(table, dict) else 'key'} "
                f"{section!r}{_suggest(section, sections)}; expected sections: "
                + ", ".join(f"[{s}]" for s in sections)
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section!r} must be a [{section}] section")
        options: dict[str, Declared] = {}
        for settings in sections[section]:
            options.update(configurable(settings))
        layer = _section_layer(table, options, path, section)
        _check_exclusive(layer, options.values(), f"{path}: [{section}]")
        layers[section] = layer
    return layers


def _section_layer(
    table: Mapping[str, Any], options: Mapping[str, Declared], path: str | Path, section: str
) -> Layer:
    by_key = {key: d for d in options.values() for key in key_names(d)}
    layer = Layer()
    for key, value in table.items():
        where = f"{path}: [{section}] {key}"
        d = by_key.get(key.replace("-", "_"))
        if d is None:
            known = sorted({o.key for o in options.values()})
            raise ConfigError(
                f"{path}: unknown key {key!r} in section [{section}]"
                f"{_suggest(key.replace('_', '-'), known)}; known keys: {', '.join(known)}"
            )
        if d.name in layer.values:
            raise ConfigError(
                f"{where}: set twice in [{section}] (as {layer.origins[d.name]!r} too)"
            )
        layer.values[d.name] = convert(d, value, where, base=Path(path).parent)
        layer.origins[d.name] = key
    return layer


def env_layer(
    options: Mapping[str, Declared],
    environ: Mapping[str, str],
    only: Iterable[str] | None = None,
) -> Layer:
    """The ``CELERIAC_*`` variables of ``options`` (of those named in ``only``, if given)."""
    layer = Layer()
    for name, d in options.items():
        if only is not None and name not in only:
            continue
        variable = env_name(name)
        if variable in environ:
            layer.values[name] = convert(d, environ[variable], variable, from_env=True)
            layer.origins[name] = variable
    _check_exclusive(layer, options.values(), "the environment")
    return layer


def unknown_env(environ: Mapping[str, str], commands: Iterable[Command]) -> list[str]:
    """``CELERIAC_*`` variables that no command reads: likely misspelt."""
    known = {CONFIG_ENV}
    for command in commands:
        known.update(env_name(name) for name in configurable(command.settings))
    return [
        f"ignoring unknown environment variable {name}{_suggest(name, known)}"
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX) and name not in known
    ]


def convert(
    d: Declared,
    value: Any,
    where: str,
    *,
    base: Path | None = None,
    from_env: bool = False,
) -> Any:
    """A file or environment value as the option would have been from a flag."""
    if d.kind == "flag":
        flag = _boolean(value, where, d.label) if from_env else value
        if not isinstance(flag, bool):
            raise ConfigError(f"{where}: {d.label} takes true or false, not {value!r}")
        return flag
    if d.kind == "repeat":
        items = comma_list(value) if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where}: {d.label} takes a list of strings, not {value!r}")
        return tuple(_scalar(d, item, where, base) for item in items)
    if isinstance(value, list) and d.parse is comma_list:
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where}: {d.label} takes a list of strings, not {value!r}")
        value = ",".join(value)
    return _scalar(d, value, where, base)


def _scalar(d: Declared, value: Any, where: str, base: Path | None) -> Any:
    parse = d.parse
    textual = parse in (None, path, comma_list)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where}: {d.label} takes {_describe(parse)}, not {value!r}")
    original = value
    if not isinstance(value, str):
        if textual:
            raise ConfigError(f"{where}: {d.label} takes {_describe(parse)}, not {value!r}")
        value = str(value)
    try:
        converted = value if parse is None else parse(value)
    except (ValueError, TypeError) as exc:  # BadValue is a ValueError that says why
        detail = str(exc) if isinstance(exc, BadValue) else _describe(parse)
        shown = "<secret>" if d.option.secret else repr(original)
        raise ConfigError(f"{where}: {d.label} takes {detail}, not {shown}") from None
    if d.option.choices is not None and converted not in d.option.choices:
        choices = ", ".join(d.option.choices)
        raise ConfigError(f"{where}: {d.label} must be one of {choices}, not {value!r}")
    if parse is path and base is not None and converted:
        converted = str(base / Path(str(converted)).expanduser())
    return converted


def _boolean(value: str, where: str, option: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{where}: {option} takes true or false (1/0, yes/no), not {value!r}")


def _describe(parse: Any) -> str:
    names = {int: "an integer", float: "a number", None: "a string", str: "a string"}
    if parse in names:
        return names[parse]
    if parse is path:
        return "a path"
    if parse is comma_list:
        return "a list of strings"
    return "a valid value"


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _exclusive_groups(options: Iterable[Declared]) -> list[set[str]]:
    groups: dict[str, set[str]] = {}
    for d in options:
        if d.option.exclusive is not None:
            groups.setdefault(d.option.exclusive, set()).add(d.name)
    return list(groups.values())


def _check_exclusive(layer: Layer, options: Iterable[Declared], where: str) -> None:
    for group in _exclusive_groups(options):
        clash = [layer.origins[name] for name in group if name in layer.values]
        if len(clash) > 1:
            raise ConfigError(f"{where}: {' and '.join(sorted(clash))} exclude each other")


# -- putting it together ---------------------------------------------------------------------


@dataclass
class Resolved:
    """What a command line, the environment and the file amount to.

    ``command``: the command run; ``settings``: its settings object;
    ``invocation``: ``--config``, ``--check``, ``--parent-pid``; ``sources``:
    where each configurable option came from (``"flag"``, ``"CELERIAC_X"``,
    ``"PATH [section] key"``, ``"default"``); ``config_path``: the file read,
    if any; ``warnings``: to log (misspelt variables).
    """

    command: Command
    settings: CommonSettings
    invocation: Invocation
    sources: dict[str, str]
    config_path: str | None = None
    warnings: list[str] = field(default_factory=list)


def parse(
    cli: CommandLine,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """Parse ``argv`` and fill the options it leaves out from the environment and the file.

    Each command reads the section its :class:`Command` names.  A command started
    with ``--parent-pid`` (the embedded cluster) reads no file and, of the
    environment, only ``$CELERIAC_KEYS``: it is configured by its caller alone.
    Raises :class:`ConfigError`; argparse itself exits on a bad command line.
    """
    environ = os.environ if environ is None else environ
    command, given = cli.parse_args(list(sys.argv[1:] if argv is None else argv))
    ours = [d.name for d in declared(Invocation) if d.name in given]
    invocation = Invocation(**{name: given.pop(name) for name in ours})
    embedded = invocation.parent_pid is not None
    config_path = None if embedded else (invocation.config or environ.get(CONFIG_ENV))
    options = configurable(command.settings)

    file_layer = Layer()
    if config_path:
        sections: dict[str, list[type]] = {}
        for other in cli.commands:
            if other.section:
                sections.setdefault(other.section, []).append(other.settings)
        layers = check_file(load_file(config_path), config_path, sections)
        own = layers.get(command.section, Layer()) if command.section else Layer()
        for name, value in own.values.items():
            if name not in options:
                continue  # a shared section: another command's option
            file_layer.values[name] = value
            file_layer.origins[name] = f"{config_path} [{command.section}] {own.origins[name]}"
    env = env_layer(options, environ, only={"keys"} if embedded else None)
    warnings = [] if embedded else unknown_env(environ, cli.commands)
    values, sources = _layered(options, given, [file_layer, env])
    settings = command.settings(**values)
    return Resolved(command, settings, invocation, sources, config_path, warnings)


def _layered(
    options: Mapping[str, Declared], given: Mapping[str, Any], layers: Sequence[Layer]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings' values and where each came from: the layers, lowest first, then flags."""
    values = {name: d.default for name, d in options.items()}
    sources = {name: "default" for name in options}
    groups = _exclusive_groups(options.values())
    for layer in layers:
        for name, value in layer.values.items():
            if name in given or any(name in g and g & given.keys() for g in groups):
                continue  # the command line said it, or chose a rival
            for group in groups:  # a higher layer's choice silences its rivals below
                if name in group:
                    for rival in group - {name} - given.keys():
                        values[rival] = options[rival].default
                        sources[rival] = "default"
            values[name] = value
            sources[name] = layer.origins[name]
    for name, value in given.items():  # non-configurable ones too (--json, a job's name)
        values[name] = tuple(value) if isinstance(value, list) else value  # -A a -A b
        if name in options:
            sources[name] = "flag"
    return values, sources


def describe(resolved: Resolved) -> str:
    """The effective settings as TOML, each with its source: what ``--check`` prints."""
    lines = [f"[{resolved.command.section or 'settings'}]"]
    options = sorted(configurable(resolved.command.settings).values(), key=lambda d: d.key)
    width = max((len(d.key) for d in options), default=0)
    for d in options:
        value = getattr(resolved.settings, d.name)
        source = resolved.sources.get(d.name)
        if value is None:
            lines.append(f"# {d.key} is unset ({source})")
        else:
            shown = '"<secret>"' if d.option.secret else _toml(value)
            lines.append(f"{d.key:<{width}} = {shown:<30} # {source}")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
