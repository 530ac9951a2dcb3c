"""Loads YAML files (params.yaml, policies/*.yaml) into typed pydantic models.

Every model forbids unknown keys. A file that does not parse or validate raises a
:class:`GovtuneError` naming the file, the line and the dotted key, so a typo in a policy
stops the run with a message a compliance officer can act on, never a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.common.errors import GovtuneError

M = TypeVar("M", bound=BaseModel)

# Pydantic error types of strict numbers and booleans (policies use them for thresholds: a
# quoted "0.99" is a typo that must not be read as a number).
_STRICT_TYPES = {"float_type", "int_type", "bool_type"}


class Strict(BaseModel):
    """Base for every config and policy model: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def load_yaml(path: str | Path) -> tuple[Any, yaml.Node | None]:
    """Parses a YAML file; returns the data and its node tree (for line numbers).

    Raises:
        GovtuneError: the file is missing, not UTF-8, or not valid YAML.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise GovtuneError(str(path), "file not found", "create it or fix the path in params.yaml") from exc
    except UnicodeDecodeError as exc:
        raise GovtuneError(str(path), f"not valid UTF-8 at byte {exc.start}", "save the file as UTF-8") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise GovtuneError(
            where, f"invalid YAML: {problem}", "fix the YAML syntax (indentation, quotes, colons)"
        ) from exc
    check_unique_keys(node, path)
    return data, node


def check_unique_keys(node: yaml.Node | None, path: str | Path, keys: tuple[str, ...] = ()) -> None:
    """Refuses a mapping that repeats a key: YAML keeps the last value silently, so one stray
    line could invert a rule (``threshold:`` twice) without any reader noticing.

    Raises:
        GovtuneError: naming the file, the dotted key and both lines.
    """
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join((*keys, key))
                raise GovtuneError(
                    f"{path}:{line}",
                    f"duplicate key {dotted!r} (lines {seen[key]} and {line}); YAML would keep the last one silently",
                    f"keep one of the two lines in {path}",
                )
            seen[key] = line
            check_unique_keys(value_node, path, (*keys, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            check_unique_keys(item, path, (*keys, str(i)))


def line_of(node: yaml.Node | None, keys: tuple[Any, ...]) -> int | None:
    """Returns the 1-based line of the deepest existing node along ``keys``."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(key)), None)
            if match is None:
                # An unknown key is reported at the key itself, if it is there.
                break
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def validate(
    model: type[M], data: Any, path: str | Path, node: yaml.Node | None = None, prefix: tuple[Any, ...] = ()
) -> M:
    """Validates parsed data into ``model``; errors name file, line and key.

    Raises:
        GovtuneError: listing every validation problem found.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        first_line = None
        for err in exc.errors():
            keys = prefix + tuple(err["loc"])
            line = line_of(node, keys)
            first_line = first_line or line
            dotted = ".".join(str(k) for k in keys) or "(top level)"
            message = "unknown key (not allowed here)" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] in _STRICT_TYPES and isinstance(err.get("input"), str):
                message += " (a quoted value is text, not a number or true/false: write it without quotes)"
            problems.append(f"line {line}: {dotted}: {message}")
        where = f"{path}:{first_line}" if first_line else str(path)
        raise GovtuneError(
            where,
            "invalid configuration:\n    " + "\n    ".join(problems),
            f"edit {path} as listed (see the comments in the file for allowed keys and values)",
        ) from exc


def load_model(model: type[M], path: str | Path) -> M:
    """Loads a YAML file and validates it into ``model``."""
    data, node = load_yaml(path)
    if data is None:
        raise GovtuneError(str(path), "file is empty", "restore the file from git")
    return validate(model, data, path, node)
