"""A Griffe extension for the API reference (mkdocs.yml loads it).

Griffe reads the source without running it, so it does two things the code does at import
or Sphinx would do when rendering:

- SyncCheckpoint's methods take the docstrings of AsyncCheckpoint's, as the loop at the end
  of ``_sync.py`` makes them do at run time;
- Sphinx roles (``:meth:`save```, ``:class:`~aiocheckpoint.Progress```) become links to
  the objects on the page, and a paragraph ending in ``::`` introduces a code block.

A role naming nothing public is a warning, which ``mkdocs build --strict`` turns into a
failure.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Alias, Class, Docstring, Extension, Module, Object, get_logger

logger = get_logger("griffe_extension")

_ROLE = re.compile(r":(?:py:)?(meth|func|class|exc|attr|data|obj|mod):`(~?)([\w.]+?)(\(\))?`")
# Where a private class's members are rendered: Admin's, inherited by AsyncCheckpoint.
_RENDERED_AS = {"aiocheckpoint._admin.Admin": "aiocheckpoint.AsyncCheckpoint"}


class SphinxDocs(Extension):
    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        if pkg.path != "aiocheckpoint":
            return
        bars = pkg["bars"]
        public = _public_paths(pkg) | _public_paths(bars)
        public.update(_RENDERED_AS)
        _copy_docstrings(pkg["_sync.SyncCheckpoint"], pkg["_checkpoint.AsyncCheckpoint"])
        names = {name: f"{mod.path}.{name}" for mod in (pkg, bars) for name in _exports(mod)}
        for path in sorted(set(public) - set(_RENDERED_AS)):
            obj = pkg.modules_collection[path]
            _rewrite(obj, public, names)
            for member in _members(obj):
                _rewrite(member, public, names)
        for member in _members(pkg["_admin.Admin"]):
            _rewrite(member, public, names)
        _rewrite(bars, public, names)


def _exports(module: Module) -> list[str]:
    return [str(name) for name in module.exports or () if not str(name).startswith("__")]


def _public_paths(module: Module) -> dict[str, str]:
    """The path where each public object is defined: the path it is rendered under."""
    paths = {}
    for name in _exports(module):
        obj = module[name]
        target = obj.final_target if isinstance(obj, Alias) else obj
        paths[target.path] = f"{module.path}.{name}"
    return paths


def _members(obj: Object) -> list[Object]:
    """The public members an object defines itself (inherited ones have their own owner)."""
    return [
        m
        for name, m in obj.members.items()
        if not isinstance(m, Alias) and (not name.startswith("_") or name.endswith("__"))
    ]


def _copy_docstrings(sync: Class, asynchronous: Class) -> None:
    for name, member in sync.members.items():
        if name.startswith("_") or member.docstring is not None:
            continue
        twin = asynchronous.all_members.get(name)
        if twin is not None and twin.docstring is not None:
            doc = twin.docstring
            member.docstring = Docstring(
                doc.value,
                lineno=doc.lineno,
                endlineno=doc.endlineno,
                parent=member,
                parser=doc.parser,
                parser_options=doc.parser_options,
            )


def _rewrite(obj: Object, public: dict[str, str], names: dict[str, str]) -> None:
    doc = obj.docstring
    if doc is None:
        return
    owner = obj if isinstance(obj, (Class, Module)) else obj.parent
    assert owner is not None

    def link(match: re.Match[str]) -> str:
        role, short, target, _ = match.groups()
        label = target.rsplit(".", 1)[-1] if short else target
        if role in ("meth", "func"):
            label += "()"
        first = target.split(".", 1)[0]
        if isinstance(owner, Class) and first in owner.all_members:
            identifier = f"{public.get(owner.path, owner.path)}.{target}"
        elif first in names:
            identifier = names[first] + target[len(first) :]
        elif target.startswith("aiocheckpoint."):
            identifier = target
        else:
            logger.warning(f"{obj.path}: {match.group(0)} names nothing public")
            return f"`{label}`"
        return f"[`{label}`][{identifier}]"

    value = _ROLE.sub(link, doc.value)
    value = re.sub(r"(?m)^::$\n?", "", value)
    value = re.sub(r"(?m)(\S)::$", r"\1:", value)
    doc.value = value
