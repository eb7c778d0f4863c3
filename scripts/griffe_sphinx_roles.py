"""A griffe extension for ``make docs``: discoverd's reST docstring markup, rendered by mkdocstrings.

The docstrings are prose written with Sphinx conventions; mkdocstrings renders Markdown. Once a
package is loaded, this extension rewrites every docstring of it:

* **Cross-reference roles** (``:class:``, ``:func:``, ``:meth:``, ``:attr:``, ``:data:``,
  ``:mod:``, ``:exc:``, ``:obj:``, ``:const:``, optionally ``:py:``-prefixed) become inline code
  that links to the target's entry when the site documents it. The target is resolved the way
  Sphinx does: a name (or the first part of a dotted name) in the scope of the documented object
  (its members, its enclosing classes' members, its module's names and imports); otherwise a dotted
  name as an absolute path (``discoverd.x.Y``, ``aiohttp.web.Application``); ``.name`` under the
  enclosing module and packages. ``~`` shows the last component only, ``!`` suppresses the link,
  ``title <target>`` sets the text, and functions and methods get ``()`` as in Sphinx.
* The link is an *optional* ``mkdocs-autorefs`` reference: a target that no page renders (a
  private helper, ``orjson.loads``) stays plain code with its full path as a tooltip.
* A reference inside the package that resolves to nothing (a renamed or removed object) is logged
  as a warning, so ``mkdocs build --strict`` fails on it. Built-in names, standard-library
  modules and installed third-party modules are left as code without a warning.
* ``text::`` before a literal block becomes ``text:`` (the indented block renders as code in
  Markdown as well).
* ``#:`` comments above an attribute (the autodoc convention for constants) become its
  docstring when it has none.

Enabled in ``mkdocs.yml`` with ``extensions: [scripts/griffe_sphinx_roles.py]``.
"""

from __future__ import annotations

import builtins
import html
import importlib.util
import re
import sys
from collections.abc import Iterator
from typing import Any

import griffe

#: ``:role:`content``` with the roles of the Python domain; the content may span lines.
ROLE = re.compile(r":(?:py:)?(?P<role>class|func|meth|attr|data|mod|exc|obj|const):`(?P<content>[^`]+)`")
#: ``title <target>`` inside a role.
EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)
#: A reST literal-block marker ending a line of text: ``text::`` means ``text:``.
LITERAL_MARKER = re.compile(r"(?<=\S)::$", re.MULTILINE)
#: A reST literal-block marker on its own, or after a space: dropped.
BARE_LITERAL_MARKER = re.compile(r"(?:^|[ \t]+)::$", re.MULTILINE)
#: The roles whose titles Sphinx writes with ``()``.
CALLABLE_ROLES = frozenset({"func", "meth"})


class SphinxRoles(griffe.Extension):
    """Rewrite the reST markup of a loaded package's docstrings into Markdown for mkdocstrings."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is None and obj.is_attribute:
                _docstring_from_comment(obj, loader)
            if obj.docstring is not None:
                obj.docstring.value = _markdown(obj.docstring.value, obj, pkg, loader)


def _markdown(value: str, obj: griffe.Object, pkg: griffe.Module, loader: griffe.GriffeLoader) -> str:
    """``obj``'s docstring ``value`` with its roles and literal-block markers in Markdown."""
    value = ROLE.sub(lambda match: _reference(match, obj, pkg, loader), value)
    value = LITERAL_MARKER.sub(":", value)
    return BARE_LITERAL_MARKER.sub("", value)


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    """``obj`` and every object defined in it (aliases are documented where their target lives)."""
    yield obj
    for member in obj.members.values():
        if isinstance(member, griffe.Object):
            yield from _walk(member)


def _docstring_from_comment(attr: griffe.Object, loader: griffe.GriffeLoader) -> None:
    """Give ``attr`` the ``#:`` comment lines right above its assignment as its docstring."""
    filepath = attr.filepath
    if attr.lineno is None or isinstance(filepath, list) or filepath not in loader.lines_collection:
        return
    lines = loader.lines_collection[filepath]
    comment: list[str] = []
    index = attr.lineno - 2
    while index >= 0 and lines[index].lstrip().startswith("#:"):
        comment.insert(0, lines[index].lstrip()[2:].strip())
        index -= 1
    if comment:
        attr.docstring = griffe.Docstring(
            "\n".join(comment), lineno=index + 2, endlineno=attr.lineno - 1, parent=attr
        )


def _reference(
    match: re.Match[str], obj: griffe.Object, pkg: griffe.Module, loader: griffe.GriffeLoader
) -> str:
    """The Markdown for one role: an optional autoref around inline code, or the code alone."""
    role = match["role"]
    content = " ".join(match["content"].split())
    explicit = EXPLICIT.match(content)
    if explicit:
        title, target = explicit["title"], explicit["target"].strip()
    else:
        title, target = "", content
    link = not target.startswith("!")
    target = target.lstrip("!")
    short = target.startswith("~")
    target = target.lstrip("~")
    if not title:
        title = target.rpartition(".")[2] if short else target.lstrip(".")
        if role in CALLABLE_ROLES:
            title += "()"
    code = f"`{title}`"
    if not link:
        return code
    path = _resolve(target, obj, loader)
    if path is None and role == "attr" and "." not in target and (owner := _class_of(obj)) is not None:
        # An attribute its class sets outside ``__init__``: real, but invisible to static analysis.
        return _autoref(f"{owner.path}.{target}", code)
    inside = path is not None and (path == pkg.path or path.startswith(pkg.path + "."))
    if path is None or (inside and not _exists(path, loader)):
        if path is not None or not _external(target):
            where = _location(obj, match.string.count("\n", 0, match.start()))
            griffe.logger.warning(f"{where}: :{role}:`{content}` in {obj.path} refers to nothing")
        return code
    return _autoref(path, code)


def _autoref(identifier: str, code: str) -> str:
    """An optional autorefs link around ``code``: a link where the site renders ``identifier``."""
    return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'


def _resolve(target: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str | None:
    """The full path ``target`` names from ``obj``'s scope, or ``None`` for a bare name not in scope."""
    if target.startswith("."):
        package: griffe.Object | None = obj.module
        while package is not None:
            if _exists(package.path + target, loader):
                return package.path + target
            package = package.parent
        return None
    head, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:  # Python's scoping: the object, its enclosing classes, its module
        if head in scope.members:
            member = scope.members[head]
            path = member.target_path if isinstance(member, griffe.Alias) else member.path
            return f"{path}.{rest}" if rest else path
        if scope.is_module:
            break
        scope = scope.parent
        if scope is not None and head == scope.name and not scope.is_module:
            return f"{scope.path}.{rest}" if rest else scope.path
    return target if rest else None  # an absolute path: ``discoverd.x.Y``, ``aiohttp.web.Application``


def _class_of(obj: griffe.Object) -> griffe.Object | None:
    """The class ``obj`` is, or is defined in, if any."""
    scope: griffe.Object | None = obj
    while scope is not None and not scope.is_module:
        if scope.is_class:
            return scope
        scope = scope.parent
    return None


def _exists(path: str, loader: griffe.GriffeLoader) -> bool:
    """Whether the loaded packages hold an object at ``path`` (through aliases too)."""
    try:
        loader.modules_collection[path]
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True


def _external(target: str) -> bool:
    """Whether ``target`` is a built-in name, or lives in the standard library or an installed module."""
    head = target.lstrip(".").partition(".")[0]
    if hasattr(builtins, head) or head in sys.stdlib_module_names:
        return True
    try:
        return importlib.util.find_spec(head) is not None
    except (ImportError, ValueError):
        return False


def _location(obj: griffe.Object, line: int) -> str:
    """``file:line`` of the ``line``-th line (from 0) of ``obj``'s docstring, for messages."""
    lineno = (obj.docstring.lineno if obj.docstring is not None else None) or obj.lineno or 1
    try:
        return f"{obj.relative_filepath}:{lineno + line}"
    except ValueError:
        return obj.path
