"""A run's settings from the command line: built-in defaults, then a `--config` JSON file,
then the flags."""

import dataclasses
import json
import os

from .._experiment.config import DATA_FIXED, CompareConfig

# settings the command line takes from other flags (or that the CLI fixes itself)
_SPECIAL = ("data",)


_config_texts: dict = {}  # a pipe (`--config <(echo ...)`) can be read only once


def read_config_file(path: str) -> dict:
    if os.path.isdir(path):
        raise ValueError(f"--config {path!r} is a directory; give a JSON file.")
    if path not in _config_texts:
        try:
            with open(path) as f:
                _config_texts[path] = f.read()
        except FileNotFoundError:
            raise ValueError(f"--config {path!r} does not exist.") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"--config {path!r} cannot be read ({error}).") from None
    try:
        values = json.loads(_config_texts[path])
    except json.JSONDecodeError as error:
        raise ValueError(f"--config {path!r} is not valid JSON ({error}).") from error
    if not isinstance(values, dict):
        raise ValueError(f'--config {path!r} must hold a JSON object of settings, e.g. {{"lr": 0.01}}.')
    values.pop("provenance", None)  # a run's config.json may be reused as --config
    return values


def resolve_config(args, defaults: dict | None = None) -> CompareConfig:
    """Built-in defaults (updated by `defaults`), then `--config` (relative paths from
    its folder), then flags."""
    values, base_dir = dict(defaults or {}), None
    if args.config is not None:
        values.update(read_config_file(args.config))
        values.pop("sweep", None)
        # relative paths from the file's folder (from the working directory for a pipe)
        folder = os.path.dirname(os.path.abspath(args.config))
        base_dir = folder if os.path.isfile(args.config) else os.getcwd()
        config = CompareConfig.from_dict(values, base_dir=base_dir)  # errors name the file's keys
        values = {k: v for k, v in config.to_dict().items() if k in values}
    elif values:
        values = CompareConfig.from_dict(values).to_dict()
    for field in dataclasses.fields(CompareConfig):
        given = getattr(args, field.name, None)
        if given is not None and field.name not in _SPECIAL:
            values[field.name] = given
    if args.data is not None:
        values["data"] = os.path.abspath(args.data)
    fixed = [name for name in DATA_FIXED if name in values and name not in (defaults or {})]
    if values.get("data") is not None and fixed:
        raise ValueError(
            f"--data fixes the dimension, point count and classes (read from the file); drop "
            f"{', '.join(f'--{name} (or the config key {name!r})' for name in fixed)}."
        )
    return CompareConfig.from_dict(values)
