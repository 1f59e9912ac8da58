"""The HTML pages made from templates in ``resources/`` (versions page, reports): one Jinja2 set-up."""

from __future__ import annotations

from pathlib import Path

import jinja2


def page_templates(folder: Path) -> jinja2.Environment:
    """The templates in ``folder``, every value HTML-escaped: the pages show commit messages and file names."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(folder), autoescape=True)
