"""Scale-out behind nginx, for real: ``deploy/check_nginx.py`` as part of the test suite.

Two ``streamlit run`` processes on 127.0.0.1 behind Debian's nginx running
``deploy/nginx-featapp.conf`` (ports rewritten), and real Chromium students who upload a
photo and open the Feature map through it. The sticky configuration must keep every
browser on one process, use both processes, draw every heatmap and leave no upload on
disk; the control (round robin, the hashing line removed) must be caught by the same
check, so the check can fail.

Needs ``apt-get install -y nginx chromium`` (``.ci/run`` does both; in CI a missing nginx
is a failure, not a skip).
"""

from __future__ import annotations

import os

import pytest

from deploy import check_nginx
from tests.helpers.browsing import CHROMIUM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _needs_nginx_and_chromium(monkeypatch, data_dir):
    missing = [
        name for name, there in (("nginx", check_nginx.find_nginx()), ("chromium", CHROMIUM.exists())) if not there
    ]
    if missing:
        message = f"{' and '.join(missing)} missing: apt-get install -y nginx chromium (.ci/run does)"
        if os.environ.get("FEATAPP_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(data_dir))


def test_two_processes_behind_nginx_keep_each_student_on_one(tmp_path):
    result = check_nginx.check(3, work=tmp_path)
    assert result.ok, result.problems
    assert len(result.routes) == 3
    assert all(len(upstreams) == 1 for upstreams in result.routes.values())
    assert len({next(iter(upstreams)) for upstreams in result.routes.values()}) == 2


def test_round_robin_is_caught_by_the_same_check(tmp_path):
    """Without ``hash $featapp_route``, a browser's requests are spread over both processes."""
    result = check_nginx.check(1, sticky=False, work=tmp_path)
    assert not result.ok
    assert any("reached" in problem for problem in result.problems), result.problems
