"""What a student reads first on every page: the page's own title, nothing above it.

A bare string in a script is drawn by Streamlit's "magic" (off in ``.streamlit/config.toml``);
a note under a constant once appeared above every page's title and no test saw it, because the
browser tests looked for exceptions, not for what a student reads. Checked on the lecture's
model and on another converted model (a small one written by ``tests/modelfactory.py``).
"""

from __future__ import annotations

import pytest

from tests import browsing
from tests.e2e.steps import SLOW, no_exception, wait_until
from tests.modelfactory import Conv, TinyNet, build

PAGES = {
    "Gallery": "🖼️ Gallery",
    "Feature map": "🔥 Feature map",
    "Layer grid": "🔲 Layer grid",
    "One neuron, many images": "🎯 One neuron, many images",
    "Cats vs dogs": "🐾 What tells a cat from a dog",
    "Model": "🧠 Model",
}
FIRST_TEXT = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    const style = getComputedStyle(node.parentElement);
    if (text && style.display !== 'none' && style.visibility !== 'hidden' && node.parentElement.offsetParent !== null) {
      return text;
    }
  }
  return '';
}"""


@pytest.mark.parametrize("which", ["lecture model", "another converted model"])
def test_every_page_opens_with_its_own_title_as_its_first_text(tmp_path, browser, data_dir, which):
    settings = {
        "FEATAPP_DATA_DIR": str(data_dir),
        "FEATAPP_CACHE_DIR": str(tmp_path / "cache"),
        "FEATAPP_SNAPSHOTS": str(tmp_path / "none"),
    }
    if which == "another converted model":
        net = TinyNet(height=64, width=64, channels=3, convs=(Conv(8), Conv(6, kernel=5)), seed=4)
        settings["FEATAPP_MODEL"] = str(build(net, tmp_path / "tiny.onnx"))
    with browsing.streamlit_server(tmp_path / "streamlit.log", browsing.server_env(**settings)) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(url)
        for link, title in PAGES.items():
            page.locator('[data-testid="stSidebarNavLink"]', has_text=link).first.click()
            page.get_by_role("heading", name=title).first.wait_for(timeout=SLOW)
            first = wait_until(lambda: page.evaluate(FIRST_TEXT), what=f"text on the {link} page")
            assert first == title, f"the {link} page opens with {first!r}, not its title"
            no_exception(page)
        context.close()
