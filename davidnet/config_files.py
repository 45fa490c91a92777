"""Experiment configuration from TOML, JSON or YAML files, checked against a dataclass.

Files are parsed with safe loaders only (tomllib, json, yaml.safe_load): a
config file is data, never code. Unknown keys and wrong types are `ConfigError`s
with one line naming the key, what was expected and what was got.
"""

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path


class ConfigError(ValueError):
    """A problem with a config file; str(e) is one line."""


def read_config_file(path):
    """Returns the mapping in a .toml, .json, .yaml or .yml file."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"config file {path}: expected a .toml, .json, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config file {path} is not valid {suffix[1:].upper()}: {str(e).splitlines()[0]}") from e
    except Exception as e:  # yaml.YAMLError, without importing yaml up front
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a table of settings at the top level, got {type(data).__name__}")
    return data


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
    checked = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key in extra_keys:
            checked[key] = value
            continue
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown setting {raw_key!r}; expected one of: {', '.join(sorted([*fields, *extra_keys]))}"
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
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")


def load_config(path, config_class, extra_keys=()):
    """Reads a config file and checks it against `config_class` (see `checked_values`)."""
    return checked_values(read_config_file(path), config_class, source=str(path), extra_keys=extra_keys)
