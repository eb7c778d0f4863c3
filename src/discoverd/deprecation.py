"""Deprecated names that keep working for one release, with a :class:`DeprecationWarning`.

A module lists its former names in a :class:`Moved` table and delegates its module-level
``__getattr__`` (PEP 562) to :meth:`Moved.resolve`: each access of an old name imports the new home,
warns once per access site (Python's default filter) and returns the object. Nothing is imported until
an old name is used, so a table costs no import time.

The removal release is :data:`REMOVED_IN`; ``CHANGELOG.md`` lists every entry.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Final, NamedTuple

#: The release that removes the deprecated names.
REMOVED_IN: Final = "0.3"


class Target(NamedTuple):
    """Where an old name lives now: ``module.attr`` (``attr`` may be dotted), and what to write instead."""

    module: str
    attr: str
    instead: str


class Moved:
    """The former names of one module (``owner``), each mapped to its :class:`Target`."""

    def __init__(self, owner: str, names: Mapping[str, Target]) -> None:
        self.owner = owner
        self.names = dict(names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def resolve(self, name: str) -> object:
        """The object now behind ``owner.name``, after warning; :class:`AttributeError` if ``name``
        was never a name of ``owner`` (what a module ``__getattr__`` must raise)."""
        target = self.names.get(name)
        if target is None:
            raise AttributeError(f"module {self.owner!r} has no attribute {name!r}")
        warnings.warn(
            f"{self.owner}.{name} is deprecated and will be removed in {REMOVED_IN}: use {target.instead}",
            DeprecationWarning,
            stacklevel=3,
        )
        value: object = importlib.import_module(target.module)
        for part in target.attr.split("."):
            value = getattr(value, part)
        return value


def warn_module(old: str, new: str) -> None:
    """Warn that the module ``old`` moved to ``new`` (call it at the top of the old module)."""
    warnings.warn(
        f"module {old} is deprecated and will be removed in {REMOVED_IN}: import {new}",
        DeprecationWarning,
        stacklevel=3,
    )
