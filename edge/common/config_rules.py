"""The rule framework every config section is declared with (stdlib only, rank 0).

A section is a frozen dataclass whose fields are its keys: :func:`key` gives each field its
:class:`Rule` (type, limits, what the error says is allowed), its default (the dataclass
default) and, where the default depends on other keys or the host, a ``derive`` function.
:class:`KeySection` bundles such a dataclass with the rules across its keys;
:class:`OptionSection` wraps an options dataclass that checks itself (raising
:class:`~edge.common.options.OptionError`). Each stage declares its own sections beside the
code they configure (``edge/<stage>/settings.py``); the loader, :mod:`edge.config`, reads the
TOML file and hands each section its table.

Every problem is a :class:`ConfigError` whose text is one line naming the key, the bad value
(credentials in URLs redacted, passwords never shown) and what is allowed, e.g. ``config key
'mqtt.port': 70000 is not allowed (an integer 1-65535)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.common.files import NotARegularFile, open_regular_file, os_reason
from edge.common.options import OptionError
from edge.common.redact import redact_url

MAX_CONFIG_BYTES = 1024 * 1024  # a real config is a few KB; anything bigger is a mistake

_TOPIC_LEVEL = re.compile(r"[^/+#\s\x00-\x1f\x7f]+")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
UNKNOWN_KEY = object()  # an unknown key: there is a key but no allowed value for it
REQUIRED = object()  # a key that must be set in this configuration but is not
_SHOWN_VALUE_CHARS = 80


class ConfigError(ValueError):
    """A config value that is not allowed. ``str(error)`` is one line for the user."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(key, value, allowed)
        self.key, self.value, self.allowed = key, value, allowed

    def __str__(self) -> str:
        if self.value is UNKNOWN_KEY:
            text = f"config key {self.key!r} is not allowed ({self.allowed})"
        elif self.value is REQUIRED:
            text = f"config key {self.key!r} is missing ({self.allowed})"
        else:
            text = f"config key {self.key!r}: {_show(self.value)} is not allowed ({self.allowed})"
        return one_line(text)


class ConfigFileError(ConfigError):
    """The config file itself cannot be read or is not TOML."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__("", str(path), reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return one_line(f"config file '{quote_path(self.path)}': {self.reason}")


def one_line(text: str) -> str:
    """``text`` with any line break (incl. the Unicode ones) turned into a space."""
    return " ".join(text.splitlines())


def quote_path(path: str | os.PathLike[str]) -> str:
    """A path for a one-line message: control and other unprintable characters escaped."""
    text = os.fspath(path)
    text = text if isinstance(text, str) else os.fsdecode(text)
    return text if text.isprintable() else repr(text)[1:-1]


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML (strings quoted, booleans lower-case), credentials
    in URLs redacted, long values cut."""
    if isinstance(value, str):
        text = json.dumps(redact_url(value))
    elif isinstance(value, (bool, float)) or value is None:
        text = json.dumps(value)
    elif isinstance(value, int):
        text = str(value) if value.bit_length() < 256 else ("-" if value < 0 else "") + "a huge integer"
    elif isinstance(value, Path):
        text = json.dumps(redact_url(str(value)))
    else:
        try:
            text = redact_url(repr(value))
        except (RecursionError, ValueError):
            text = "a deeply nested value"
        kind = "an array " if isinstance(value, list) else "a table " if isinstance(value, dict) else ""
        text = kind + text
    if len(text) > _SHOWN_VALUE_CHARS:
        text = text[: _SHOWN_VALUE_CHARS - 3] + "..."
    return text


# --- rules: one per key, in the field metadata -------------------------------------------------


class Invalid(Exception):
    """Raised by a rule: the value is not allowed; ``allowed`` says what is."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


@dataclass(frozen=True)
class ConfigContext:
    """What rules need beyond the value: where relative paths start, the device id so far."""

    base_dir: Path
    environ: Mapping[str, str]
    hostname: str | None
    device_id: str = ""


class Rule:
    """How one key's TOML value is checked and converted. ``allowed`` is the error's text."""

    @property
    def allowed(self) -> str:
        return ""

    def parse(self, value: Any, context: ConfigContext) -> Any:
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is allowed as it is: the ranged rules, which CLI options mirror."""
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Boolean(Rule):
    allowed = "true or false"

    def parse(self, value: Any, context: ConfigContext) -> bool:
        if not isinstance(value, bool):
            raise Invalid(self.allowed)
        return value


@dataclass(frozen=True)
class Integer(Rule):
    minimum: int
    maximum: int

    @property
    def allowed(self) -> str:
        return f"an integer {self.minimum}-{self.maximum}"

    def contains(self, value: Any) -> bool:
        return _is_int(value) and self.minimum <= value <= self.maximum

    def parse(self, value: Any, context: ConfigContext) -> int:
        if not self.contains(value):
            raise Invalid(self.allowed)
        integer: int = value
        return integer


@dataclass(frozen=True)
class Number(Rule):
    """A finite number in a range (ints are accepted and returned as float); ``why`` explains
    a limit that is not obvious."""

    minimum: float
    maximum: float
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    why: str = ""

    @property
    def allowed(self) -> str:
        low = f"> {self.minimum:g}" if self.exclusive_minimum else f">= {self.minimum:g}"
        high = f"< {self.maximum:g}" if self.exclusive_maximum else f"<= {self.maximum:g}"
        return f"a number {low} and {high}" + (f": {self.why}" if self.why else "")

    def contains(self, value: Any) -> bool:
        if not (_is_number(value) and value == value):  # value == value rejects nan
            return False
        low_ok: bool = value > self.minimum if self.exclusive_minimum else value >= self.minimum
        high_ok: bool = value < self.maximum if self.exclusive_maximum else value <= self.maximum
        return low_ok and high_ok

    def parse(self, value: Any, context: ConfigContext) -> float:
        if not self.contains(value):
            raise Invalid(self.allowed)
        return float(value)


@dataclass(frozen=True)
class Choice(Rule):
    """One of ``choices``; ``aliases`` maps other spellings (e.g. the integer 5) to a choice."""

    choices: tuple[str, ...]
    aliases: tuple[tuple[Any, str], ...] = ()

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(json.dumps(c) for c in self.choices)

    def parse(self, value: Any, context: ConfigContext) -> str:
        if isinstance(value, str) and value in self.choices:
            return value
        for alias, choice in self.aliases:
            if type(value) is type(alias) and value == alias:
                return choice
        raise Invalid(self.allowed)


@dataclass(frozen=True)
class Text(Rule):
    """A non-empty string of printable characters, optionally matching ``pattern`` or passing
    ``check``."""

    allowed: str = "a non-empty string"
    pattern: re.Pattern[str] | None = None
    check: Callable[[str], bool] | None = None
    max_length: int = 1024

    def parse(self, value: Any, context: ConfigContext) -> str:
        if not (isinstance(value, str) and 0 < len(value) <= self.max_length and value.isprintable()):
            raise Invalid(self.allowed)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise Invalid(self.allowed)
        if self.check is not None and not self.check(value):
            raise Invalid(self.allowed)
        return value


TOPIC_ALLOWED = (
    "topic levels separated by '/', no '+', '#', spaces, control characters or empty levels, not starting with '$'"
)


# In mqtt.topic_prefix (and `edge-face fleet --topic-prefix`): where the device id goes.
DEVICE_ID_PLACEHOLDER = "{device_id}"


@dataclass(frozen=True)
class Topic(Rule):
    """An MQTT topic prefix we may publish under; with ``placeholder``, ``{device_id}`` is
    replaced by the device id and the result is what is stored."""

    placeholder: bool = False

    @property
    def allowed(self) -> str:
        return TOPIC_ALLOWED + (f"; {DEVICE_ID_PLACEHOLDER} is substituted" if self.placeholder else "")

    def parse(self, value: Any, context: ConfigContext) -> str:
        if not isinstance(value, str):
            raise Invalid(self.allowed)
        prefix = value
        if self.placeholder:
            if re.search(r"[{}]", value.replace(DEVICE_ID_PLACEHOLDER, "")):
                raise Invalid(f"only the placeholder {DEVICE_ID_PLACEHOLDER}")
            prefix = value.replace(DEVICE_ID_PLACEHOLDER, context.device_id)
        if not is_valid_topic_prefix(prefix):
            raise Invalid(self.allowed)
        return prefix


@dataclass(frozen=True)
class FilePath(Rule):
    """A path resolved against the config's folder that the daemon must be able to read:
    ``kind`` "file" (a readable regular file) or "file-or-folder" (that, or a listable
    folder). A missing default is checked too: a default model that is not there is as
    fatal as a typo."""

    kind: str = "file"

    @property
    def allowed(self) -> str:
        return "a non-empty path string"

    def parse(self, value: Any, context: ConfigContext) -> Path:
        if not isinstance(value, str) or value == "" or "\x00" in value:
            raise Invalid(self.allowed)
        try:
            resolved = context.base_dir / Path(value).expanduser()
        except RuntimeError:  # "~nosuchuser/..."
            resolved = context.base_dir / value
        subject = "it" if str(resolved) == value else f"'{quote_path(resolved)}'"
        problem = path_problem(resolved, self.kind)
        if problem is not None:
            expected = "an existing file" if self.kind == "file" else "an existing file or folder"
            if not problem.startswith(("does not exist", "is a folder")):
                expected = "a readable file" if self.kind == "file" else "a readable file or folder"
            raise Invalid(f"{expected}; {subject} {problem}")
        return resolved


@dataclass(frozen=True)
class FolderPath(Rule):
    """A folder the daemon writes to, resolved against the config's folder; it need not exist
    yet (the daemon creates it, and reports a failure to when it writes)."""

    allowed = "a non-empty path string"

    def parse(self, value: Any, context: ConfigContext) -> Path:
        if not isinstance(value, str) or value == "" or "\x00" in value:
            raise Invalid(self.allowed)
        try:
            return context.base_dir / Path(value).expanduser()
        except RuntimeError:  # "~nosuchuser/..."
            return context.base_dir / value


def path_problem(path: Path, kind: str = "file") -> str | None:
    """Why the daemon could not read ``path`` (None: it can): "does not exist", "is a
    folder", "cannot be read (permission denied)", ... ``kind`` "file-or-folder" accepts a
    folder the process can list and enter."""
    try:
        with open_regular_file(path):
            return None
    except FileNotFoundError:
        return "does not exist"
    except NotARegularFile as exc:
        if kind == "file-or-folder" and Path(path).is_dir():
            return _folder_problem(path)
        return str(exc.strerror)
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == 20:  # ENOTDIR: a file used as a folder
            return "does not exist (a parent is a file)"
        return f"cannot be read ({os_reason(exc)})"


def _folder_problem(path: Path) -> str | None:
    try:
        os.listdir(path)
    except OSError as exc:
        return f"cannot be listed ({os_reason(exc)})"
    if not os.access(path, os.X_OK):
        return "cannot be entered (permission denied)"
    return None


def key(
    rule: Rule,
    default: Any = dataclasses.MISSING,
    *,
    derive: Callable[[dict[str, Any], ConfigContext], Any] | None = None,
) -> Any:
    """A config key: its rule, its default (the dataclass default), and ``derive`` for a
    default that depends on other keys or the host (computed when the key is absent)."""
    return field(default=default, metadata={"rule": rule, "derive": derive})


# --- validators shared with the runtime ---------------------------------------------------------


def is_valid_topic_prefix(prefix: str) -> bool:
    """A literal topic we may publish under: no wildcards (a subscriber's '+'/'#' would match
    other devices' topics), no empty levels ('a//b' and a leading or trailing '/' are
    different topics from what users mean), no whitespace or control characters, not
    starting with '$' (reserved for the broker, e.g. $SYS), at most 1024 bytes."""
    return (
        isinstance(prefix, str)
        and not prefix.startswith("$")
        and len(prefix.encode("utf-8", "surrogatepass")) <= 1024
        and all(_TOPIC_LEVEL.fullmatch(level) for level in prefix.split("/"))
    )


def validate_topic_prefix(prefix: Any, key: str) -> str:
    """``prefix`` if :func:`is_valid_topic_prefix`, else ConfigError naming ``key``."""
    if not is_valid_topic_prefix(prefix):
        raise ConfigError(key, prefix, TOPIC_ALLOWED)
    valid: str = prefix
    return valid


def is_host(text: str) -> bool:
    """An IP address or a DNS name of ASCII labels (underscores allowed, as container names
    use them). Unicode names are refused: getaddrinfo's IDNA encoding would fail at connect
    time, in paho's thread."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


def validate_readable_file(path: Path | None, key: str) -> Path | None:
    """``path`` (or None) if this process can open it as a regular file, else ConfigError."""
    if path is None:
        return None
    problem = path_problem(Path(path))
    if problem is not None:
        raise ConfigError(key, str(path), f"a readable file; it {problem}")
    return Path(path)


# --- sections: a dataclass of keys, or options that check themselves ------------------------------


class Section:
    """How one ``[name]`` table becomes a typed value, and that value when the table is absent."""

    def parse(self, name: str, table: dict[str, Any], context: ConfigContext) -> Any:
        raise NotImplementedError

    def default(self) -> Any:
        raise NotImplementedError


CheckKeys = Callable[[Any, dict[str, Any], ConfigContext], Any]


@dataclass(frozen=True)
class KeySection(Section):
    """A section declared as a dataclass of :func:`key` fields; ``check`` holds the rules across
    its keys (it gets the parsed section, the table as written and the context, and returns the
    section, possibly completed)."""

    keys: type
    check: CheckKeys | None = None

    def parse(self, name: str, table: dict[str, Any], context: ConfigContext) -> Any:
        section = parse_keys(name, self.keys, table, context)
        return self.check(section, table, context) if self.check else section

    def default(self) -> Any:
        return self.keys()


@dataclass(frozen=True)
class OptionSection(Section):
    """A section whose ``options`` dataclass checks itself: ``read(table, name)`` raises
    :class:`OptionError`, which carries the same key, value and allowed text as ConfigError.
    ``with_base_dir``: ``read(table, name, base_dir)``, for a section with paths, which start
    at the config file's folder like every path of the config."""

    options: type
    read: Callable[..., Any]
    with_base_dir: bool = False

    def parse(self, name: str, table: dict[str, Any], context: ConfigContext) -> Any:
        try:
            if self.with_base_dir:
                return self.read(table, name, context.base_dir)
            return self.read(table, name)
        except OptionError as exc:
            raise ConfigError(exc.key, exc.value, exc.allowed) from None

    def default(self) -> Any:
        return self.options()


def section(declaration: Section, *, required: bool = False) -> Any:
    """A field of the whole configuration: the section ``declaration`` parses; its default is
    the section's defaults unless ``required``."""
    if required:
        return field(metadata={"section": declaration})
    return field(default_factory=declaration.default, metadata={"section": declaration})


def parse_keys(name: str, section_class: type, table: dict[str, Any], context: ConfigContext) -> Any:
    """``table`` checked key by key against the rules of ``section_class``'s fields."""
    fields = dataclasses.fields(section_class)
    known = [item.name for item in fields]
    for key_name in table:
        if key_name not in known:
            raise ConfigError(
                f"{name}.{key_name}", UNKNOWN_KEY, f"unknown key in [{name}]" + did_you_mean(key_name, known)
            )
    values: dict[str, Any] = {}
    for item in fields:
        rule: Rule = item.metadata["rule"]
        if item.name in table:
            written = table[item.name]
        elif item.default not in (None, dataclasses.MISSING):
            # Defaults go through the rule too: the default model must exist like a written
            # one, and the default topic prefix gets its {device_id}.
            written = str(item.default) if isinstance(item.default, Path) else item.default
        else:
            continue
        try:
            values[item.name] = rule.parse(written, context)
        except Invalid as exc:
            raise ConfigError(f"{name}.{item.name}", written, exc.allowed) from None
    for item in fields:  # absent keys without a default: None, or a derived default
        derive = item.metadata["derive"]
        if item.name not in table and derive is not None:
            values[item.name] = derive(values, context)
        values.setdefault(item.name, None)
    return section_class(**values)


def key_rule(section: type, name: str) -> Rule:
    """The rule of key ``name`` of ``section`` (e.g. a CLI option that mirrors the key)."""
    rule: Rule = _field(section, name).metadata["rule"]
    return rule


def key_default(section: type, name: str) -> Any:
    return _field(section, name).default


def _field(section: type, name: str) -> dataclasses.Field[Any]:
    return next(item for item in dataclasses.fields(section) if item.name == name)


def did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; known: " + ", ".join(sorted(candidates))
