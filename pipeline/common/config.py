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
        raise GovtuneError(where, f"invalid YAML: {problem}", "fix the YAML syntax (indentation, quotes, colons)") from exc
    return data, node


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


def validate(model: type[M], data: Any, path: str | Path, node: yaml.Node | None = None, prefix: tuple[Any, ...] = ()) -> M:
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
