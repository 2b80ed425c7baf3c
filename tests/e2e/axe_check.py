"""axe-core in the browser tests: injected into a page and into each of its frames (never
loaded by the app), run with the WCAG 2.0 and 2.1 A and AA rules; what it finds, per frame.

axe-core comes from npm at the version pinned in ``tests/e2e/axe/package-lock.json``
(``.ci/run`` fetches it: ``cd tests/e2e/axe && npm ci``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

AXE_JS = Path(__file__).resolve().parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = ("serious", "critical")

_RUN = """async (tags) => {
  const result = await axe.run(document, { runOnly: { type: "tag", values: tags }, iframes: false,
                                           resultTypes: ["violations"] });
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => ({ target: n.target.join(" "), summary: (n.failureSummary || "").slice(0, 300),
                                 html: n.html.slice(0, 200) })),
  }));
}"""


def axe_or_skip() -> Path:
    """The pinned axe-core, or a skip (a failure in CI) when it was not fetched."""
    if not AXE_JS.exists():
        message = f"axe-core is missing ({AXE_JS}): cd tests/e2e/axe && npm ci (.ci/run does)"
        if os.environ.get("FEATAPP_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return AXE_JS


def violations(page) -> list[dict]:
    """axe's WCAG A/AA violations in the page and in every frame it holds, each with the
    frame's URL (``""`` for the page itself)."""
    found = []
    source = axe_or_skip().read_text()
    for frame in page.frames:
        if frame.url in ("about:blank", "") and frame is not page.main_frame:
            continue
        if not frame.evaluate("() => typeof axe !== 'undefined'"):
            frame.evaluate(source)
        for violation in frame.evaluate(_RUN, WCAG_AA):
            violation["frame"] = "" if frame is page.main_frame else frame.url
            found.append(violation)
    return found


def blocking(found: list[dict]) -> list[dict]:
    """The serious and critical ones: what a page may not have."""
    return [v for v in found if v["impact"] in BLOCKING]


def report(found: list[dict]) -> str:
    """One line per violation and its first nodes, for an assertion message."""
    lines = []
    for v in found:
        where = f" [frame {v['frame'].split('?')[0]}]" if v["frame"] else ""
        lines.append(f"{v['impact']} {v['id']} ({len(v['nodes'])} nodes){where}: {v['help']}")
        lines += [f"    {n['target']}: {n['summary']} :: {n['html']}" for n in v["nodes"][:3]]
    return "\n".join(lines)
