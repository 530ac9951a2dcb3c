"""The reference pages of ``params.yaml`` and every policy file, generated from their models.

``python -m pipeline.reference`` writes ``docs/reference/params.md``,
``docs/reference/policies.md`` and ``docs/reference/cli.md``: one row per key of the pydantic models in
``pipeline/common/params.py`` and ``pipeline/common/policy.py`` (its dotted path, type, default,
and the comment the shipped file gives it), so the reference cannot drift from the code;
``tests/test_reference.py`` fails when the committed pages are stale or a key has no row.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

OUT_DIR = Path("docs/reference")
_KEY = re.compile(r"^(?P<indent>\s*)(?P<dash>- )?(?P<key>[A-Za-z_][\w]*):(?P<rest>.*)$")


def yaml_comments(path: Path) -> dict[str, str]:
    """``{dotted.key: comment}`` from the end-of-line comments of a YAML file (``[]`` marks a
    list item: ``rules[].evidence``)."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _KEY.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m["indent"])
        if m["dash"]:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, "[]"))
            indent += 2
        while stack and stack[-1][0] >= indent and stack[-1][1] != "[]" or (stack and stack[-1][0] > indent):
            stack.pop()
        path_key = ".".join(k for _, k in stack) + ("." if stack else "") + m["key"]
        path_key = path_key.replace(".[]", "[]")
        rest = m["rest"]
        comment = (
            rest.split(" #", 1)[1].strip()
            if " #" in rest
            else (rest.strip()[1:].strip() if rest.strip().startswith("#") else "")
        )
        if comment and path_key not in out:
            out[path_key] = comment
        stack.append((indent, m["key"]))
    return out


def _models_in(annotation: Any) -> list[tuple[str, type[BaseModel]]]:
    """The models an annotation holds, with the path suffix to reach them (``[]``, ``.<key>``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple, set, frozenset):
        return [("[]" + s, m) for a in args for s, m in _models_in(a)]
    if origin is dict and len(args) == 2:
        return [(".<key>" + s, m) for s, m in _models_in(args[1])]
    if origin in (typing.Union, types.UnionType) or origin is typing.Annotated:
        return [x for a in args for x in _models_in(a)]
    return []


def _type_name(annotation: Any) -> str:
    """A short, readable name of a field's type (``float | None``, ``list[Rule]``, ``'a' | 'b'``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None) or annotation is None:
        return "None"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(dotted key, type, default, model docstring's first line)`` for every key of ``model``."""
    rows = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{info.alias or name}"
        default = (
            "required" if info.is_required() else ("" if info.default is PydanticUndefined else repr(info.default))
        )
        if info.default_factory is not None:
            default = repr(info.default_factory())
        rows.append((key, _type_name(info.annotation), default, ""))
        for suffix, sub in _models_in(info.annotation):
            rows.extend(fields(sub, f"{key}{suffix}."))
    return rows


def table(model: type[BaseModel], comments: dict[str, str]) -> str:
    out = ["| key | type | default | what it is |", "| --- | --- | --- | --- |"]
    seen = set()
    for key, type_name, default, _ in fields(model):
        if key in seen:
            continue
        seen.add(key)
        note = comments.get(key) or comments.get(re.sub(r"\.<key>", "", key), "")
        cells = [f"`{key}`", type_name.replace("|", "\\|"), default.replace("|", "\\|"), note.replace("|", "\\|")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def render_params(repo: Path = Path(".")) -> str:
    from pipeline.common.params import Params

    comments = yaml_comments(repo / "params.yaml")
    parts = ["# Reference: params.yaml", "",
             "Generated from `pipeline/common/params.py` by `python -m pipeline.reference`; the last column is the comment "
             "`params.yaml` gives each key. `dvc.yaml` lists which stage reads which section. Change one without editing: "
             "`dvc exp run -S section.key=value`.", ""]  # fmt: skip
    for name, info in Params.model_fields.items():
        section = info.alias or name
        parts += [
            f"## {section}",
            "",
            comments.get(section, ""),
            "",
            table(info.annotation, {k.removeprefix(section + "."): v for k, v in comments.items()}),
            "",
        ]
    return "\n".join(parts)


def render_policies(repo: Path = Path(".")) -> str:
    from pipeline.cli import _policy_models

    parts = ["# Reference: policy files", "",
             "Generated from `pipeline/common/policy.py` by `python -m pipeline.reference`. Every file is validated against its "
             "model (`govtune policy lint`; unknown or repeated keys and quoted numbers are refused); JSON Schemas for editors are "
             "in `policies/schemas/`. The last column is the comment the shipped file gives the key, where it has one.", ""]  # fmt: skip
    for name, model in _policy_models().items():
        path = repo / "policies" / name if name != "approval.yaml" else None
        title = f"policies/{name}" if path else "policies/approvals/*.yaml"
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        comments = yaml_comments(path) if path and path.is_file() else {}
        parts += [f"## {title}", "", f"Model `{model.__name__}`: {doc}", "", table(model, comments), ""]
    return "\n".join(parts)


def render_cli() -> str:
    """Every ``govtune`` command's ``--help``, as argparse prints it."""
    import argparse
    import os

    from pipeline.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix the width so the page is stable
    parts = [
        "# Reference: the `govtune` command",
        "",
        "Generated from `pipeline/cli.py` by `python -m pipeline.reference`.",
        "",
    ]

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        parts.extend([f"## `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""])
        for action in parser._actions:  # argparse has no public accessor for subparsers
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")

    walk(build_parser(), "govtune")
    return "\n".join(parts)


def pages(repo: Path = Path(".")) -> dict[Path, str]:
    return {
        OUT_DIR / "params.md": render_params(repo),
        OUT_DIR / "policies.md": render_policies(repo),
        OUT_DIR / "cli.md": render_cli(),
    }


def main() -> None:
    from pipeline.common.io import save_text

    for path, text in pages().items():
        save_text(path, text)
        print(path)


if __name__ == "__main__":
    main()
