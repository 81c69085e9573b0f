"""The documentation: the MkDocs site builds strictly (a broken link or anchor fails it), every page is built,
the README stays short and its links resolve, and the site's index page works in a real browser."""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import test_report

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_LIMIT = 12 * 1024  # bytes
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
EXTERNAL = ("http://", "https://", "mailto:")

browser_page = test_report.browser_page  # the headless-Chromium fixture of the leaderboard page's tests
DevTools = test_report.DevTools


def build_site(config: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build_site(ROOT / "mkdocs.yml", out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def built_page(site: Path, page: Path) -> Path:
    """Where MkDocs (directory URLs) writes the page of ``docs/<page>.md``."""
    rel = page.relative_to(DOCS).with_suffix("")
    return site / (rel.parent if rel.name == "index" else rel) / "index.html"


def nav_pages(nav: list) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_site_builds_every_page_and_writes_nothing_into_the_repository(site: Path) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["site_dir"].startswith("build/") and config["strict"] is True
    pages = sorted(DOCS.rglob("*.md"))
    assert len(pages) >= 17
    for page in pages:
        assert built_page(site, page).is_file(), page
    in_nav = nav_pages(config["nav"])
    assert sorted(in_nav) == sorted(str(p.relative_to(DOCS)) for p in pages), "every page is in the nav, once"
    for method in ("hydra", "harp", "magnitude", "random", "s2ap"):
        assert f"methods/{method}.md" in in_nav
    assert (site / "load_pruned_model.py").is_file() and (site / "examples" / "my_pruner.py").is_file()
    assert not (ROOT / "site").exists()


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs" / "reliability.md"
    page.write_text(page.read_text() + "\nSee [the pipeline](pipeline.md#no-such-heading).\n")
    done = build_site(tmp_path / "mkdocs.yml", tmp_path / "out")
    assert done.returncode != 0 and "no-such-heading" in done.stdout + done.stderr


def test_the_readme_is_short() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail into docs/"


def test_every_relative_link_in_the_readme_resolves(site: Path) -> None:
    targets = [t for t in LINK.findall(README.read_text()) if not t.startswith(EXTERNAL)]
    assert len(targets) >= 10
    for target in targets:
        path, _, anchor = target.partition("#")
        file = (ROOT / path).resolve()
        assert file.is_file(), f"README links to {target}, which is not a file"
        if anchor and file.is_relative_to(DOCS) and file.suffix == ".md":
            html = built_page(site, file).read_text()
            assert f'id="{anchor}"' in html, f"README links to {target}: no such anchor on the page"
    assert "docs/adding-a-pruner.md" in targets and "docs/changelog.md#what-moved" in targets


def test_the_readme_quick_start_is_two_commands_and_ci_runs_its_test_command() -> None:
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make smoke", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M) and re.search(r"^make docs\b", ci, re.M)


def generated_table(suite: str) -> str:
    """The first leaderboard of a committed suite as ``s2ap-bench table`` wrote it: protocol, legend, table."""
    text = (ROOT / "results" / suite / "leaderboard.md").read_text()
    found = re.search(r"^Protocol: .*?\n\n.*?\n\n(?:\|.*\n)+", text, re.M)
    assert found, f"results/{suite}/leaderboard.md has no leaderboard table"
    return found.group(0)


SHOWN = {"README": (README, "digits-smoke"), "digits-smoke page": (DOCS / "suites" / "digits-smoke.md", "digits-smoke"),
         "fmnist page": (DOCS / "suites" / "fmnist.md", "fmnist")}


@pytest.mark.parametrize("page, suite", list(SHOWN.values()), ids=list(SHOWN))
def test_the_leaderboards_shown_are_the_committed_ones(page: Path, suite: str) -> None:
    """Each leaderboard the README and the suite pages show is, to the byte, the one generated from the
    committed results: recomputed results make this fail until the page (and its reading) is updated."""
    assert generated_table(suite) in page.read_text(), f"{page.name}: copy the table of results/{suite}/leaderboard.md"


@pytest.fixture
def served(site: Path) -> Iterator[str]:
    """The built site over HTTP on a free local port (as a reader's browser gets it from a web server)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.slow
def test_the_index_page_shows_its_title_and_navigation_in_a_real_browser(served: str, browser_page: DevTools) -> None:
    page = browser_page
    for domain in ("Runtime", "Log", "Page"):
        page.call(f"{domain}.enable")
    page.call("Page.navigate", url=served)
    page.wait_for("Page.loadEventFired")
    assert page.js("document.title") == "s2ap-bench"
    assert page.js("document.querySelector('article h1').firstChild.textContent").strip() == "s2ap-bench"
    links = page.js("Array.from(document.querySelectorAll('nav.md-nav--primary a.md-nav__link'))"
                    ".map(a => [a.textContent.trim(), a.href])")
    titles = {title for title, _ in links}
    for title in ("Getting started", "Suites and configuration", "HYDRA", "HARP", "Magnitude (LWM)", "Random",
                  "S2AP (plug-in)", "Add your pruner", "digits-smoke", "Reliability", "Performance", "Changelog"):
        assert title in titles, (title, sorted(titles))
    for _, href in links:
        with urllib.request.urlopen(href, timeout=30) as resp:
            assert resp.status == 200, href
    visible = page.js("(() => { const r = document.querySelector('nav.md-nav--primary').getBoundingClientRect(); "
                      "return r.width > 100 && r.height > 100; })()")
    assert visible  # the navigation is laid out on a desktop-wide window
    time.sleep(1.0)  # the search index loads in a worker after the load event: let its errors, if any, arrive
    page.js("1")
    assert page.errors() == []
