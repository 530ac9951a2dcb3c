"""HTML pages through Jinja2 with autoescape: every value a template shows is escaped by the engine.

The templates live in ``pipeline/templates/`` (``macros.html.j2`` holds the shared table, cell and
plot pieces). Undefined names fail the render (``StrictUndefined``) instead of printing nothing.

Use: ``render_page(<template file name>, **context)``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _is_plain_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(not isinstance(v, dict | list | tuple) for v in value)


def _is_list_of_parts(value: Any) -> bool:
    return isinstance(value, list | tuple) and not _is_plain_list(value)


def _listed(value: Any) -> str:
    """One item of a comma-separated list."""
    return "none" if value is None else str(value)


def _scalar(value: Any) -> str:
    """A scalar as text: strings as they are, numbers and booleans as JSON writes them."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@cache
def environment() -> Any:
    """The one Jinja2 environment: autoescape on, strict undefined, govtune's tests and filters."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.tests.update(plain_list=_is_plain_list, list_of_parts=_is_list_of_parts)
    env.filters.update(listed=_listed, scalar=_scalar)
    env.policies["json.dumps_kwargs"] = {
        "sort_keys": False,
        "ensure_ascii": False,
    }  # `tojson` keeps the evidence's key order
    return env


def render_page(template: str, **context: Any) -> str:
    """Renders one template of ``pipeline/templates/`` with ``context``."""
    return environment().get_template(template).render(**context)


def cell_html(value: Any) -> str:
    """A single value as the report tables show it (the ``cell`` macro)."""
    return environment().from_string('{% from "macros.html.j2" import cell %}{{ cell(value) }}').render(value=value)
