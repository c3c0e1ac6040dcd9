"""YAML files checked against a JSON schema, whose errors name the file, the key and the reason
(`<file>: <key path>: <reason>.`): the site catalogue and the hub's settings read theirs here, so
that a bad file stops the hub with one sentence an administrator can act on."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

TOP_LEVEL = "(top level)"


def load_yaml(path: Path, error: type[Exception], what: str = "the file"):
    """The data of the YAML file `path`; raises `error` when it cannot be read or is not YAML."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror}).") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise error(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}.") from None


def key_path(error: jsonschema.ValidationError) -> str:
    """Where in the file: `partitions.small-g.max_hours`, `demo_users.0`, or (top level)."""
    return ".".join(str(p) for p in error.absolute_path) or TOP_LEVEL


def reason(error: jsonschema.ValidationError) -> str:
    """What is wrong; for a value that fits none of a oneOf's shapes, what each of them wants."""
    if error.validator == "oneOf" and error.context:
        return "; or ".join(sorted({e.message for e in error.context}))[:300]
    return error.message


def check_schema(data, schema: dict, path, error: type[Exception]) -> None:
    """Raise `error` for the first mistake (in key order) of `data` against `schema`."""
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if errors:
        raise error(f"{path}: {key_path(errors[0])}: {reason(errors[0])}.")
