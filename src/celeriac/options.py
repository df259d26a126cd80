"""Declaring settings: one dataclass field per option, with what a command line needs.

A settings class (:class:`~celeriac.worker.settings.WorkerSettings`,
:class:`~celeriac.scheduler.settings.SchedulerSettings`, the CLI's own) is a
frozen, keyword-only dataclass whose fields are declared with :func:`option`.
The field's name, type and default are the option's; the :class:`Option` in its
metadata holds the rest (help text, flags, metavar, how text becomes a value).
:mod:`celeriac.cli.parsers` builds the argparse parsers from these declarations
and :mod:`celeriac.cli.config` reads the TOML file, the ``CELERIAC_*`` variables
and writes the ``--check`` report through them: an option is written down once.

Shared vocabulary, like :mod:`celeriac.errors`: it imports nothing of celeriac,
so the scheduler, the worker and the CLI can all declare their settings with it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

#: The logging thresholds every command accepts (Celery's ``-l`` takes the same; ``FATAL`` is
#: ``CRITICAL``, as in :mod:`logging`).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")


class BadValue(ValueError):
    """Raised by a parse function for text that is no valid value; the message says why.

    The command line shows the message as argparse shows its own (``argument
    --busy-poll: must be 0 to 0.01 s, not inf``); a config file or variable
    names itself before it.
    """


def path(text: str) -> str:
    """A file or directory.  Relative paths in a config file are relative to that file."""
    return text


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``; in a file, a TOML list works too."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


@dataclass(frozen=True)
class Option:
    """How one settings field is given on a command line, in a file, in the environment.

    ``help``: the ``--help`` text; ``%(default)s`` in it stands for the default.
    ``flags``: the option strings (default: the field's name with dashes, ``--max-tasks``).
    ``metavar``: the placeholder ``--help`` shows for the value.
    ``parse``: text (a flag's, a variable's, a file's string) to value; raise
    :class:`BadValue` or ``ValueError``.  Default: from the field's type (``int``,
    ``float``, a ``tuple[str, ...]`` as a comma-separated list; ``str`` as it is).
    ``choices``: the values allowed (after ``parse``).
    ``positional``: given without a flag (``celeriac worker ADDRESS``); required
    when the field has no default.
    ``repeat``: the flag may be given again for each item of a tuple (``-A a -A b``).
    ``exclusive``: a group name; at most one option of a group may be set in one place.
    ``configurable``: False for what is about one invocation (``--config``,
    ``--json``, a job's name): never read from a file or the environment, not in
    the ``--check`` report.
    ``hidden``: left out of ``--help`` (what only Celeriac itself passes).
    ``secret``: its value is never shown: ``--check`` and error messages say
    ``<secret>`` (a token would otherwise land in logs and terminals).
    ``before_command``: the flags may also come before the command's name, as
    Celery's global ``-A`` does (``celeriac -A proj worker``); both places count.
    """

    help: str
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    positional: bool = False
    repeat: bool = False
    exclusive: str | None = None
    configurable: bool = True
    hidden: bool = False
    secret: bool = False
    before_command: bool = False


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flags: tuple[str, ...] = (),
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    positional: bool = False,
    repeat: bool = False,
    exclusive: str | None = None,
    configurable: bool = True,
    hidden: bool = False,
    secret: bool = False,
    before_command: bool = False,
) -> Any:
    """A settings field that is an option (see :class:`Option` for the parameters).

    ``default`` is the field's default; leave it out for a required positional.
    """
    how = Option(
        help,
        flags,
        metavar,
        parse,
        choices,
        positional,
        repeat,
        exclusive,
        configurable,
        hidden,
        secret,
        before_command,
    )
    return field(default=default, metadata={"option": how})


@dataclass(frozen=True)
class Declared:
    """One option of a settings class as the builders see it.

    ``name``: the field (also the ``CELERIAC_*`` variable and a file key);
    ``option``: its :class:`Option`; ``default``: the field's default
    (``dataclasses.MISSING`` when required); ``kind``: ``"flag"`` (a bool, set by
    its flag alone), ``"repeat"`` (a flag given once per item) or ``"value"``;
    ``parse``: text to value, or None for text kept as it is.
    """

    name: str
    option: Option
    default: Any
    kind: str
    parse: Callable[[str], Any] | None

    @property
    def required(self) -> bool:
        """Whether the field has no default (a positional argument)."""
        return self.default is dataclasses.MISSING

    @property
    def flags(self) -> tuple[str, ...]:
        """The option strings; none for a positional."""
        if self.option.positional:
            return ()
        return self.option.flags or ("--" + self.name.replace("_", "-"),)

    @property
    def label(self) -> str:
        """How messages name it: its first long flag (``--import``), or ``ADDRESS``."""
        longs = [flag for flag in self.flags if flag.startswith("--")]
        return longs[0] if longs else self.name.upper()

    @property
    def key(self) -> str:
        """How the ``--check`` report spells it: ``import``, ``max-tasks-per-child``."""
        return self.label.lstrip("-").lower()


#: Settings classes never change once defined: each is read once (the parser is built
#: per run, the checks and the file loading ask again).
_DECLARED: dict[type, tuple[Declared, ...]] = {}


def declared(cls: type) -> tuple[Declared, ...]:
    """Every option of the settings class ``cls``, in the order of its fields."""
    if cls not in _DECLARED:
        _DECLARED[cls] = _declare(cls)
    return _DECLARED[cls]


def _declare(cls: type) -> tuple[Declared, ...]:
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        how = f.metadata.get("option")
        if not isinstance(how, Option):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with option()")
        kind, parse = _kind(hints[f.name], how)
        found.append(Declared(f.name, how, f.default, kind, parse))
    return tuple(found)


def _kind(hint: Any, how: Option) -> tuple[str, Callable[[str], Any] | None]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) and len(args) == 1:
        hint = args[0]  # `int | None`: an int, or unset
    if hint is bool:
        return "flag", None
    if how.repeat:
        return "repeat", how.parse
    if how.parse is not None:
        return "value", how.parse
    if typing.get_origin(hint) is tuple:
        return "value", comma_list
    if hint in (int, float):
        return "value", hint
    return "value", None


def configurable(cls: type) -> dict[str, Declared]:
    """The options of ``cls`` a file or the environment may set, by name."""
    return {d.name: d for d in declared(cls) if d.option.configurable}


def to_json(settings: Any) -> str:
    """A settings object as JSON (tuples as lists), for :func:`from_json`."""
    return json.dumps(dataclasses.asdict(settings))


def from_json(cls: type[T], text: str) -> T:
    """The settings object :func:`to_json` wrote; ``TypeError`` for a field ``cls`` lacks."""
    values = json.loads(text)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True, kw_only=True)
class CommonSettings:
    """What every command takes, first on its ``--help``.

    ``log_level``: the logging threshold, one of :data:`LOG_LEVELS` (any case
    when given; upper case here).  ``-l`` and ``--loglevel`` are Celery's spellings.
    """

    log_level: str = option(
        "INFO",
        flags=("-l", "--log-level", "--loglevel"),
        metavar="LEVEL",
        help="logging threshold: " + ", ".join(LOG_LEVELS[:-1]) + " (default: %(default)s)",
        parse=str.upper,
        choices=LOG_LEVELS,
    )
