"""Griffe extension for the docs build: treat ``Example:`` sections as doctest examples.

scitensor's docstrings head their doctests ``Example:``, which Google-style parsing in griffe
reads as an admonition (plain Markdown), so doctest output such as ``[[0, 1], [2, 3]]`` looks
like a Markdown reference link and fails ``mkdocs build --strict``. Renaming the heading to
``Examples:`` before parsing (a parenthetical ``Example (...):`` is kept as a sentence) makes
griffe render those lines as code. The source is unchanged.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

# "Example:" or "Example (what it shows):" on a line of its own
_EXAMPLE = re.compile(r"^([ \t]*)Example(?: \(([^)\n]*)\))?:[ \t]*$", re.M)


def _examples(m: re.Match) -> str:
    indent, what = m.group(1), m.group(2)
    head = f"{indent}Example: {what}.\n\n" if what else ""
    return f"{head}{indent}Examples:"


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        doc = obj.docstring
        if doc is not None and "Example" in doc.value:
            doc.value = _EXAMPLE.sub(_examples, doc.value)
