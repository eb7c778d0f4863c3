"""The documentation site: ``mkdocs build --strict`` succeeds without a warning, the API reference
documents every public name, and scripts/griffe_sphinx_roles.py turns reST roles into links."""

from __future__ import annotations

import html
import importlib.util
import inspect
import logging
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import griffe
import pytest

import discoverd

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = Path(sys.executable).with_name("mkdocs")
EXTENSION = ROOT / "scripts" / "griffe_sphinx_roles.py"


def _load_extension() -> ModuleType:
    spec = importlib.util.spec_from_file_location("griffe_sphinx_roles", EXTENSION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The site built from this tree (strict mode), and everything mkdocs printed."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return out, output


def test_strict_build_has_no_warning(site: tuple[Path, str]) -> None:
    _, output = site
    assert "WARNING" not in output, output


def test_every_public_name_is_documented_on_the_package_page(site: tuple[Path, str]) -> None:
    out, _ = site
    page = (out / "api" / "discoverd" / "index.html").read_text(encoding="utf-8")
    names = [name for name in discoverd.__all__ if name != "__version__"]
    assert len(names) == 27
    for name in names:
        anchor = f'id="discoverd.{name}"'
        assert anchor in page, name
        # the entry runs to the next top-level name's heading; it shows the docstring's first words
        entry = page.split(anchor, 1)[1]
        entry = _text(re.split(r'id="discoverd\.[A-Za-z_]+"', entry, maxsplit=1)[0])
        doc = inspect.getdoc(getattr(discoverd, name))
        assert doc, name
        # the longest run of plain words in the first paragraph (roles and literals are rendered apart)
        plain = re.split(r":\w+:`[^`]*`|``[^`]*``|[`*]", doc.split("\n\n", 1)[0])
        words = " ".join(max(plain, key=lambda part: len(part.split())).split()[:4])
        assert len(words) > 3, (name, words)
        assert words in entry, (name, words, entry[:300])


def test_no_rest_role_is_left_in_the_api_reference(site: tuple[Path, str]) -> None:
    out, _ = site
    pages = sorted((out / "api").rglob("*.html"))
    assert len(pages) >= 15
    for page in pages:
        text = _text(page.read_text(encoding="utf-8"))
        assert not re.search(r":(class|func|meth|attr|data|mod|exc):`?\w", text), page
    clients = (out / "api" / "clients" / "index.html").read_text(encoding="utf-8")
    # :class:`~discoverd.errors.Unavailable` in the client's module docstring, a link to the Errors page
    assert re.search(
        r'<a [^>]*href="\.\./errors/#discoverd\.errors\.Unavailable"[^>]*><code>Unavailable</code>', clients
    )


def test_the_extension_rewrites_roles(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pkg = tmp_path / "demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""The demo package: :mod:`.mod`."""\n')
    (pkg / "mod.py").write_text(
        '"""See :class:`~demo.mod.Thing`, :meth:`Thing.run`, :func:`!helper`, :exc:`ValueError`,\n'
        ":attr:`the size <Thing.size>` and :class:`Gone`. Tree::\n\n    a\n    b\n"
        '"""\n\n'
        "#: How many there are.\n"
        "COUNT = 3\n\n\n"
        "class Thing:\n"
        '    """Runs with :meth:`run`; :attr:`late` is set later."""\n\n'
        "    size = 1\n\n"
        "    def run(self) -> None:\n"
        '        """Run."""\n'
    )
    loader = griffe.GriffeLoader(search_paths=[tmp_path], extensions=griffe.load_extensions(str(EXTENSION)))
    with caplog.at_level(logging.WARNING):
        demo = loader.load("demo")
    assert isinstance(demo, griffe.Module)
    mod = demo["mod"]

    def ref(path: str, title: str) -> str:
        return f'<autoref identifier="{path}" optional>`{title}`</autoref>'

    assert demo.docstring is not None
    assert demo.docstring.value == f"The demo package: {ref('demo.mod', 'mod')}."
    assert mod.docstring is not None
    assert mod.docstring.value == (
        f"See {ref('demo.mod.Thing', 'Thing')}, {ref('demo.mod.Thing.run', 'Thing.run()')}, `helper()`,"
        f" `ValueError`,\n{ref('demo.mod.Thing.size', 'the size')} and `Gone`. Tree:\n\n    a\n    b"
    )
    assert mod["Thing"].docstring.value == (
        f"Runs with {ref('demo.mod.Thing.run', 'run()')}; {ref('demo.mod.Thing.late', 'late')} is set later."
    )
    assert mod["COUNT"].docstring.value == "How many there are."
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert ":class:`Gone` in demo.mod refers to nothing" in warnings[0]
    assert "mod.py:2:" in warnings[0]

    # the module is importable on its own too (mkdocs loads it from its path)
    assert hasattr(_load_extension(), "SphinxRoles")
