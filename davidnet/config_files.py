"""Experiment configuration from TOML, JSON or YAML files, checked against a dataclass.

Files are parsed with safe loaders only (tomllib, json, yaml's SafeLoader): a
config file is data, never code. Unknown keys and wrong types are `ConfigError`s
with one line naming the key, what was expected and what was got.

A config file is a few dozen settings, so what a file may hold is bounded
before and while it is parsed, and anything else is a `ConfigError` within a
fraction of a second rather than a traceback or a machine out of memory: a
regular file of UTF-8 text of at most `MAX_BYTES`, at most `MAX_VALUES` values
nested at most `MAX_DEPTH` deep, each key once; in YAML no anchors or aliases
(the "billion laughs"), no tags (`!!python/object`) and one document.
"""

import dataclasses
import json
import os
import stat
import sys
import tomllib
import types
import typing
from pathlib import Path

from davidnet.config import shown

MAX_BYTES = 64 * 1024  # the recipes are about 2 KB; every parser reads this in well under a second
MAX_DEPTH = 32  # levels of nested lists and tables
MAX_VALUES = 2000  # values (and YAML nodes) in a file


class ConfigError(ValueError):
    """A problem with a config file; str(e) is one line."""


def _kind(value):
    return "null" if value is None else type(value).__name__


def _printable(path):
    """A path as one printable line (a file name may hold a newline)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def read_config_file(path):
    """Returns the mapping in a .toml, .json, .yaml or .yml file."""
    path = Path(path)
    name = _printable(path)
    suffix = path.suffix.lower()
    kind = {".toml": "TOML", ".json": "JSON", ".yaml": "YAML", ".yml": "YAML"}.get(suffix)
    if kind is None:
        raise ConfigError(f"config file {name}: expected a .toml, .json, .yaml or .yml file")
    text = _read_text(path, name)
    try:
        if kind == "TOML":
            data = tomllib.loads(text)
        elif kind == "JSON":
            data = json.loads(text, object_pairs_hook=_json_object(name))
        else:
            data = _yaml_loads(text, name)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(f"config file {name} is not valid {kind}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    except MemoryError:
        raise ConfigError(f"config file {name} is not valid {kind}: too large to read") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as e:
        raise ConfigError(f"config file {name} is not valid {kind}: {_first_line(e)}") from None
    except Exception as e:  # yaml.YAMLError, without importing yaml up front
        raise ConfigError(f"config file {name} is not valid {kind}: {_yaml_problem(e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {name}: expected a table of settings at the top level, got {type(data).__name__}")
    _check_shape(data, name)
    return data


def _read_text(path, name):
    """The file's text: a regular file of at most MAX_BYTES of UTF-8 (read no
    further, so that /dev/zero or a huge file costs nothing)."""
    try:
        info = os.stat(path)  # before opening: opening a FIFO would wait for a writer
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"config file {name} is not a regular file")
        if info.st_size > MAX_BYTES:
            raise ConfigError(f"config file {name} is {info.st_size} bytes: a config file may have at most {MAX_BYTES // 1024} KiB")
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read config file {name}: {e.strerror or _first_line(e)}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"config file {name} is larger than {MAX_BYTES // 1024} KiB, the most a config file may have")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {name} is not UTF-8 text (a binary file?): byte {e.start} is {raw[e.start]:#04x}") from None
    if "\x00" in text:
        raise ConfigError(f"config file {name} is not a text file: it holds NUL characters")
    return text


def _first_line(error):
    lines = str(error).splitlines()
    if lines and lines[0].startswith("Exceeds the limit") and "digits" in lines[0]:  # Python's int parsing limit
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return _printable(lines[0]) if lines else type(error).__name__


def _json_object(name):
    def pairs(items):
        keys = [key for key, _ in items]
        for key in keys:
            if keys.count(key) > 1:
                raise ConfigError(f"config file {name}: the key {shown(key)} is given twice")
        return dict(items)

    return pairs


def _yaml_loads(text, name):
    """YAML's safe loader, after a pass over the parser's events (C, where
    PyYAML has libyaml) that refuses what could make it build without bound."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def refuse(what, event):
        line = f" (line {event.start_mark.line + 1})" if getattr(event, "start_mark", None) else ""
        raise ConfigError(f"config file {name} is not valid YAML for a config file: {what}{line}")

    frames = []  # per open collection: [is a mapping, next node is a key, the keys so far]
    documents = count = 0
    for event in yaml.parse(text, Loader=loader):
        count += 1
        if count > MAX_VALUES:
            refuse(f"more than {MAX_VALUES} values", event)
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                refuse("more than one document (---)", event)
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            refuse("anchors and aliases (&name, *name) are not allowed", event)
        if getattr(event, "tag", None) is not None:
            refuse(f"tags such as {shown(event.tag)} are not allowed", event)
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            frames.pop()
            continue
        if not isinstance(event, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            continue
        if frames and frames[-1][0]:
            frame = frames[-1]
            if frame[1]:
                if not isinstance(event, yaml.ScalarEvent):
                    refuse("a key must be a name, not a list or a table", event)
                if event.value in frame[2]:
                    refuse(f"the key {shown(event.value)} is given twice", event)
                frame[2].add(event.value)
            frame[1] = not frame[1]
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            frames.append([isinstance(event, yaml.MappingStartEvent), True, set()])
            if len(frames) > MAX_DEPTH:
                refuse(f"nested more than {MAX_DEPTH} levels deep", event)
    return yaml.load(text, Loader=loader)


def _yaml_problem(error):
    """A YAML error in one line: its problem and where."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem:
        return _printable(problem) + (f" (line {mark.line + 1})" if mark is not None else "")
    return _first_line(error)


def _check_shape(data, name):
    """At most MAX_VALUES values nested at most MAX_DEPTH deep, and text keys at the top."""
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"config file {name}: setting names must be text, got {_kind(key)} {shown(key)}")
    stack, count = [(data, 1)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"config file {name}: more than {MAX_VALUES} values")
        if depth > MAX_DEPTH:
            raise ConfigError(f"config file {name}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def checked_values(values, config_class, source="config", extra_keys=()):
    """Checks `values` (a mapping) against the fields of `config_class`.

    Args:
        values: setting name -> value; names may use '-' or '_'.
        config_class: a dataclass whose fields (and their annotations) are the schema.
        source: where the values came from, for messages.
        extra_keys: further accepted names that are not fields (e.g. data_dir).

    Returns:
        A dict with '_' names and values converted where that is lossless
        (an int where a float is expected).
    """
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    checked, given_as = {}, {}
    for raw_key, value in values.items():
        if not isinstance(raw_key, str):
            raise ConfigError(f"{source}: setting names must be text, got {_kind(raw_key)} {shown(raw_key)}")
        key = raw_key.replace("-", "_")
        if key in given_as:
            raise ConfigError(f"{source}: the setting {key!r} is given twice (as {given_as[key]!r} and {raw_key!r})")
        given_as[key] = raw_key
        if key in extra_keys:
            checked[key] = value
            continue
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown setting {shown(raw_key)}; expected one of: {', '.join(sorted([*fields, *extra_keys]))}"
            )
        checked[key] = _converted(value, _annotation(config_class, key), f"{source}: {key}")
    return checked


def _annotation(config_class, name):
    return typing.get_type_hints(config_class)[name]


def _converted(value, annotation, where):
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(f"{where}: expected float, got {shown(value)}, too large for one") from None
        if kind is str and isinstance(value, str):
            return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise ConfigError(f"{where}: expected {names}, got {_kind(value)} {shown(value)}")


def load_config(path, config_class, extra_keys=()):
    """Reads a config file and checks it against `config_class` (see `checked_values`)."""
    return checked_values(read_config_file(path), config_class, source=_printable(path), extra_keys=extra_keys)
