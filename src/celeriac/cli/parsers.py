"""The argparse parsers, generated from the settings dataclasses.

Each command is a :class:`Command`: its settings class (every field an option,
see :mod:`celeriac.options`), what runs it and its ``--help`` prose.
:class:`CommandLine` builds one argparse parser from them.  Every default is
suppressed, so the namespace holds only what the command line said:
:func:`celeriac.cli.config.parse` learns what was given from one parse and
fills the rest from the environment, the file and the dataclass defaults.
``--help`` still shows the defaults: the text is written here from the
declaration, as ``ArgumentDefaultsHelpFormatter`` wrote it from argparse's.

An option declared ``before_command`` (``-A``) is also an option of the
top-level parser, as Celery's global options are: ``celeriac -A proj worker``
and ``celeriac worker -A proj`` say the same; given in both places, a
repeatable option takes both (the first ones first), another the later one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from celeriac.cli.settings import Invocation
from celeriac.options import BadValue, CommonSettings, Declared, declared

#: Where the top-level parser puts an option given before the command (its field's name after).
_BEFORE = "before_command:"


@dataclass(frozen=True)
class Command:
    """One ``celeriac`` command.

    ``name``: what the command line calls it; ``settings``: its settings class;
    ``run``: called with the resolved settings and the :class:`Invocation`,
    returns the exit status; ``help``, ``description``, ``epilog``: its
    ``--help`` prose; ``section``: the config file section it reads (None:
    none); ``aliases``: other names; ``show_defaults``: ``--help`` shows every
    option's default (the daemons'); ``check``: it takes ``--check``.
    """

    name: str
    settings: type[CommonSettings]
    run: Callable[[Any, Invocation], int]
    help: str
    description: str
    section: str | None = None
    aliases: tuple[str, ...] = ()
    epilog: str | None = None
    show_defaults: bool = False
    check: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """The command's name and its aliases."""
        return (self.name, *self.aliases)


class CommandLine:
    """The ``celeriac`` parser built from ``commands``, and the commands by name.

    ``prog``, ``description``: the top-level ``--help``'s.
    """

    def __init__(self, commands: Sequence[Command], *, prog: str, description: str) -> None:
        self.commands = tuple(commands)
        self.by_name = {name: command for command in commands for name in command.names}
        self.parser = argparse.ArgumentParser(prog=prog, description=description)
        subparsers = self.parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        for command in commands:
            parser = subparsers.add_parser(
                command.name,
                aliases=list(command.aliases),
                help=command.help,
                description=command.description,
                epilog=command.epilog,
            )
            add_options(parser, options_of(command), show_defaults=command.show_defaults)
        self._add_before_command(commands)

    def parse_args(self, argv: Sequence[str]) -> tuple[Command, dict[str, Any]]:
        """The command ``argv`` names and what it set, by field; argparse exits on an error."""
        given = vars(self.parser.parse_args(argv))
        command = self.by_name[given.pop("command")]
        own = {d.name: d for d in options_of(command) if d.option.before_command}
        for dest in [dest for dest in given if dest.startswith(_BEFORE)]:
            value, name = given.pop(dest), dest[len(_BEFORE) :]
            if name not in own:
                flags = "/".join(self._before_flags[name])
                self.parser.error(
                    f"argument {flags}: `celeriac {command.name}` takes no {flags}; "
                    f"it is an option of {self._takers(name)}"
                )
            if own[name].kind == "repeat":
                given[name] = [*value, *given.get(name, [])]
            else:
                given.setdefault(name, value)  # after the command's name: the later one
        return command, given

    def _add_before_command(self, commands: Sequence[Command]) -> None:
        """The top-level arguments for the options declared ``before_command``, once each."""
        self._before_flags: dict[str, tuple[str, ...]] = {}
        for command in commands:
            for d in options_of(command):
                if not d.option.before_command or d.name in self._before_flags:
                    continue
                self._before_flags[d.name] = d.flags
                arguments = _arguments(d, show_defaults=False)
                arguments["dest"] = _BEFORE + d.name
                if arguments["help"] != argparse.SUPPRESS:  # the long text is the command's
                    arguments["help"] = f"{self._takers(d.name)}'s option, before it or after it"
                self.parser.add_argument(*d.flags, **arguments)

    def _takers(self, name: str) -> str:
        """The commands whose option ``name`` may come first: ```celeriac worker```."""
        takers = [
            f"`celeriac {c.name}`"
            for c in self.commands
            if any(d.name == name and d.option.before_command for d in options_of(c))
        ]
        return ", ".join(takers)


def options_of(command: Command) -> list[Declared]:
    """A command's options where ``--help`` has always listed them: the common ones,
    ``--config``, the command's own, ``--check`` last."""
    invocation = {d.name: d for d in declared(Invocation)}
    common = declared(CommonSettings)
    own = [d for d in declared(command.settings) if d.name not in {c.name for c in common}]
    found = [*common, invocation["config"], invocation["parent_pid"], *own]
    return [*found, invocation["check"]] if command.check else found


def add_options(
    parser: argparse.ArgumentParser, options: Sequence[Declared], *, show_defaults: bool
) -> None:
    """An argument on ``parser`` for each option, in order; every default suppressed."""
    groups: dict[str, Any] = {}  # by Option.exclusive
    for d in options:
        target: Any = parser
        if d.option.exclusive is not None:
            if d.option.exclusive not in groups:
                groups[d.option.exclusive] = parser.add_mutually_exclusive_group()
            target = groups[d.option.exclusive]
        target.add_argument(*_names(d), **_arguments(d, show_defaults))


def _names(d: Declared) -> tuple[str, ...]:
    return d.flags or (d.name,)


def _arguments(d: Declared, show_defaults: bool) -> dict[str, Any]:
    arguments: dict[str, Any] = {"default": argparse.SUPPRESS, "help": _help(d, show_defaults)}
    if d.flags:
        arguments["dest"] = d.name
    elif not d.required:
        arguments["nargs"] = "?"
    if d.kind == "flag":
        arguments["action"] = "store_true"
        return arguments
    if d.kind == "repeat":
        arguments["action"] = "append"
    if d.parse is not None:
        arguments["type"] = _argparse_type(d.parse)
    if d.option.metavar is not None:
        arguments["metavar"] = d.option.metavar
    if d.option.choices is not None:
        arguments["choices"] = d.option.choices
    return arguments


def _help(d: Declared, show_defaults: bool) -> str:
    if d.option.hidden:
        return argparse.SUPPRESS
    text = d.option.help
    # ArgumentDefaultsHelpFormatter's rule: every option and optional positional
    if show_defaults and "%(default)" not in text and not d.required:
        text += " (default: %(default)s)"
    return text.replace("%(default)s", _shown_default(d)).replace("%", "%%")


def _shown_default(d: Declared) -> str:
    """The default as argparse showed it: the text it was given (``default``, ``[]``)."""
    if d.kind == "repeat":
        return str(list(d.default))
    if isinstance(d.default, tuple):
        return ",".join(d.default)
    return str(d.default)


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as argparse calls it: its :class:`BadValue` message becomes argparse's."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except BadValue as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    # argparse names the type in its message for a plain ValueError ("invalid int value")
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert
