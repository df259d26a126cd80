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

A key is an option of the command's parser, spelt with dashes or underscores
(``worker-timeout`` or ``worker_timeout``).  Nothing here lists the options:
they come from the argparse actions, so a new option is configurable at once.

Precedence, highest first: a flag on the command line, the environment
variable ``CELERIAC_<OPTION>`` (``CELERIAC_WORKER_TIMEOUT``), the section of
the file named by ``--config`` or ``$CELERIAC_CONFIG``, the built-in default.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "CELERIAC_"
CONFIG_ENV = "CELERIAC_CONFIG"
#: Options that are about this one invocation, never read from a file or the environment.
NOT_CONFIGURABLE = frozenset({"help", "config", "check", "json", "parent_pid", "command"})
#: The one positional argument a file or the environment may supply.
CONFIGURABLE_POSITIONALS = frozenset({"address"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """A bad configuration: the message names the file, section and key, or the variable."""


# -- argument types that tell the loader how to read a value ------------------------------


def path_arg(text: str) -> str:
    """A file or directory.  Relative paths in a config file are relative to that file."""
    return text


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``; in a file, a TOML list works too."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


# -- what a parser accepts -------------------------------------------------------------------


def configurable(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's actions that a file or the environment may set, by ``dest``."""
    found = {}
    for action in parser._actions:
        if action.dest in NOT_CONFIGURABLE or action.dest == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if not action.option_strings and action.dest not in CONFIGURABLE_POSITIONALS:
            continue  # a positional like the periodic job's name: per invocation
        found[action.dest] = action
    return found


def key_names(action: argparse.Action) -> set[str]:
    """How a file may spell the action (normalized to underscores): dest and long flags."""
    names = {action.dest}
    for option in action.option_strings:
        if option.startswith("--"):
            names.add(option[2:].replace("-", "_"))
    return names


def env_name(dest: str) -> str:
    return ENV_PREFIX + dest.upper()


def option_name(action: argparse.Action) -> str:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return longs[0] if longs else action.dest.upper()


# -- reading values --------------------------------------------------------------------------


@dataclass
class Layer:
    """Values from one source, by dest, with where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


def load_file(path: str | Path) -> dict[str, Any]:
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
    sections: Mapping[str, Sequence[argparse.ArgumentParser]],
) -> dict[str, Layer]:
    """Every section of the file converted, or a :class:`ConfigError` naming the key.

    ``sections`` maps a section name to the parsers that read it (``client``:
    periodic and inspect); a key must belong to one of them.
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
        actions: dict[str, argparse.Action] = {}
        for parser in sections[section]:
            actions.update(configurable(parser))
        by_name = {name: action for action in actions.values() for name in key_names(action)}
        layer = Layer()
        for key, value in table.items():
            where = f"{path}: [{section}] {key}"
            action = by_name.get(key.replace("-", "_"))
            if action is None:
                known = sorted({option_name(a).lstrip("-").lower() for a in actions.values()})
                raise ConfigError(
                    f"{path}: unknown key {key!r} in section [{section}]"
                    f"{_suggest(key.replace('_', '-'), known)}; known keys: {', '.join(known)}"
                )
            if action.dest in layer.values:
                raise ConfigError(
                    f"{where}: set twice in [{section}] (as {layer.origins[action.dest]!r} too)"
                )
            value = convert(action, value, where, base=Path(path).parent)
            layer.values[action.dest] = value
            layer.origins[action.dest] = key
        _check_exclusive(layer, sections[section], f"{path}: [{section}]")
        layers[section] = layer
    return layers


def env_layer(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str],
    only: Iterable[str] | None = None,
) -> Layer:
    layer = Layer()
    for dest, action in configurable(parser).items():
        if only is not None and dest not in only:
            continue
        name = env_name(dest)
        if name in environ:
            layer.values[dest] = convert(action, environ[name], name, from_env=True)
            layer.origins[dest] = name
    _check_exclusive(layer, [parser], "the environment")
    return layer


def unknown_env(
    environ: Mapping[str, str], parsers: Iterable[argparse.ArgumentParser]
) -> list[str]:
    """``CELERIAC_*`` variables that no command reads: likely misspelt."""
    known = {CONFIG_ENV}
    for parser in parsers:
        known.update(env_name(dest) for dest in configurable(parser))
    return [
        f"ignoring unknown environment variable {name}{_suggest(name, known)}"
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX) and name not in known
    ]


def convert(
    action: argparse.Action,
    value: Any,
    where: str,
    *,
    base: Path | None = None,
    from_env: bool = False,
) -> Any:
    """A file or environment value as the parser would have produced it from a flag."""
    option = option_name(action)
    if action.nargs == 0:  # store_true, store_false, store_const
        flag = _boolean(value, where, option) if from_env else value
        if not isinstance(flag, bool):
            raise ConfigError(f"{where}: {option} takes true or false, not {value!r}")
        return action.const if flag else action.default
    if isinstance(action, argparse._AppendAction):
        items = comma_list(value) if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where}: {option} takes a list of strings, not {value!r}")
        return [_scalar(action, item, where, base) for item in items]
    if isinstance(value, list) and action.type is comma_list:
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where}: {option} takes a list of strings, not {value!r}")
        value = ",".join(value)
    return _scalar(action, value, where, base)


def _scalar(action: argparse.Action, value: Any, where: str, base: Path | None) -> Any:
    option = option_name(action)
    kind = action.type
    textual = kind is None or kind in (path_arg, comma_list, str)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where}: {option} takes {_describe(kind)}, not {value!r}")
    original = value
    if not isinstance(value, str):
        if textual:
            raise ConfigError(f"{where}: {option} takes {_describe(kind)}, not {value!r}")
        value = str(value)
    try:
        converted = kind(value) if callable(kind) else value
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        detail = str(exc) if isinstance(exc, argparse.ArgumentTypeError) else _describe(kind)
        raise ConfigError(f"{where}: {option} takes {detail}, not {original!r}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {option} must be one of {choices}, not {value!r}")
    if kind is path_arg and base is not None and converted:
        converted = str(base / Path(str(converted)).expanduser())
    return converted


def _boolean(value: str, where: str, option: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{where}: {option} takes true or false (1/0, yes/no), not {value!r}")


def _describe(kind: Any) -> str:
    names = {int: "an integer", float: "a number", None: "a string", str: "a string"}
    if kind in names:
        return names[kind]
    if kind is path_arg:
        return "a path"
    if kind is comma_list:
        return "a list of strings"
    return "a valid value"


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _exclusive_groups(parsers: Sequence[argparse.ArgumentParser]) -> list[set[str]]:
    return [
        {a.dest for a in group._group_actions}
        for parser in parsers
        for group in parser._mutually_exclusive_groups
    ]


def _check_exclusive(layer: Layer, parsers: Sequence[argparse.ArgumentParser], where: str) -> None:
    for group in _exclusive_groups(parsers):
        clash = [layer.origins[d] for d in group if d in layer.values]
        if len(clash) > 1:
            raise ConfigError(f"{where}: {' and '.join(sorted(clash))} exclude each other")


# -- putting it together ---------------------------------------------------------------------


@dataclass
class Resolved:
    args: argparse.Namespace
    sources: dict[str, str]  # dest -> "flag", "$CELERIAC_X", "file:[section] key", "default"
    config_path: str | None = None
    warnings: list[str] = field(default_factory=list)


def parse(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """Parse ``argv`` and fill the options it leaves out from the environment and the file.

    Each subcommand names the section it reads with ``set_defaults(config_section=...)``.
    A subcommand started with ``--parent-pid`` (the embedded cluster) reads no file and,
    of the environment, only ``$CELERIAC_KEYS``: it is configured by its caller alone.
    Raises :class:`ConfigError`; argparse itself exits on a bad command line.
    """
    environ = os.environ if environ is None else environ
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    subparsers = _subparsers(parser)
    command_parser = subparsers[args.command]
    own_section = getattr(args, "config_section", None)
    embedded = getattr(args, "parent_pid", None) is not None
    config_path = None if embedded else (getattr(args, "config", None) or environ.get(CONFIG_ENV))

    file_layer = Layer()
    if config_path:
        sections: dict[str, list[argparse.ArgumentParser]] = {}
        for sub in _unique(subparsers.values()):
            section = sub.get_default("config_section")
            if section:
                sections.setdefault(section, []).append(sub)
        layers = check_file(load_file(config_path), config_path, sections)
        file_layer = layers.get(own_section, Layer()) if own_section else Layer()
        file_layer = _only(file_layer, configurable(command_parser))
        file_layer.origins = {
            d: f"{config_path} [{own_section}] {k}" for d, k in file_layer.origins.items()
        }
    env = env_layer(command_parser, environ, only={"keys"} if embedded else None)
    warnings = [] if embedded else unknown_env(environ, _unique(subparsers.values()))

    given = _given_on_command_line(command_parser, argv, args.command, parser)
    groups = _exclusive_groups([command_parser])
    sources = {dest: "default" for dest in configurable(command_parser)}
    for layer in (file_layer, env):
        for dest, value in layer.values.items():
            if dest in given or any(dest in g and g & given for g in groups):
                continue  # the command line said it, or chose a rival
            for group in groups:  # a higher layer's choice silences its rivals below
                if dest in group:
                    for rival in group - {dest} - given:
                        setattr(args, rival, command_parser.get_default(rival))
                        sources[rival] = "default"
            setattr(args, dest, value)
            sources[dest] = layer.origins[dest]
    for dest in given:
        sources[dest] = "flag"
    return Resolved(args, sources, config_path, warnings)


def _only(layer: Layer, actions: Mapping[str, argparse.Action]) -> Layer:
    """The part of a shared section this command has options for."""
    return Layer(
        {d: v for d, v in layer.values.items() if d in actions},
        {d: o for d, o in layer.origins.items() if d in actions},
    )


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise ValueError("the parser has no subcommands")


def _unique(parsers: Iterable[argparse.ArgumentParser]) -> list[argparse.ArgumentParser]:
    seen: dict[int, argparse.ArgumentParser] = {}
    for parser in parsers:  # aliases map several names to one parser
        seen.setdefault(id(parser), parser)
    return list(seen.values())


def _given_on_command_line(
    command_parser: argparse.ArgumentParser,
    argv: Sequence[str],
    command: str,
    parser: argparse.ArgumentParser,
) -> set[str]:
    """The dests the command line set: parse again with every default suppressed."""
    actions = configurable(command_parser)
    saved = {dest: action.default for dest, action in actions.items()}
    saved_defaults = dict(command_parser._defaults)
    try:
        for action in actions.values():
            action.default = argparse.SUPPRESS
        for dest in actions:
            command_parser._defaults.pop(dest, None)
        namespace = parser.parse_args(argv)
    finally:
        for dest, action in actions.items():
            action.default = saved[dest]
        command_parser._defaults.clear()
        command_parser._defaults.update(saved_defaults)
    return {dest for dest in actions if hasattr(namespace, dest)}


def describe(resolved: Resolved, parser: argparse.ArgumentParser) -> str:
    """The effective settings as TOML, each with its source: what ``--check`` prints."""
    section = getattr(resolved.args, "config_section", None) or "settings"
    actions = configurable(parser)
    lines = [f"[{section}]"]
    width = max((len(option_name(a).lstrip("-")) for a in actions.values()), default=0)

    def sort_key(item: tuple[str, argparse.Action]) -> str:
        return option_name(item[1]).lstrip("-").lower()

    for dest, action in sorted(actions.items(), key=sort_key):
        value = getattr(resolved.args, dest, None)
        key = option_name(action).lstrip("-").lower()
        source = resolved.sources.get(dest)
        if value is None:
            lines.append(f"# {key} is unset ({source})")
        else:
            lines.append(f"{key:<{width}} = {_toml(value):<30} # {source}")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
