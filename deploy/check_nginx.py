"""Check deploy/nginx-featapp.conf for real: two Streamlit processes behind nginx, several browsers.

Starts two ``streamlit run`` processes and an nginx with ``deploy/nginx-featapp.conf`` (its
ports rewritten to free ones on 127.0.0.1), then opens ``--browsers`` Chromium contexts
through nginx. Each opens the app, uploads a photo carrying a random marker and opens the
Feature map page. It checks that

* every browser's requests all went to one Streamlit process (nginx's access log records
  the upstream of each request and the browser's routing cookie), and that both processes
  got browsers (if the random keys of the first browsers all hashed to one process, the
  next browser is given a key that nginx sends to the other one, found by asking nginx);
* every upload became the current image and its map was drawn by the browser view (the
  component's page, ``/component/...``, came through nginx too), with no exception element;
* the marker is on no file written during the run: not in nginx's temporary folders
  (request bodies), not in the processes' temp or cache folders, not in /tmp.

    .venv/bin/python -m deploy.check_nginx --browsers 6
    .venv/bin/python -m deploy.check_nginx --no-sticky   # the control: expect FAILED

``tests/e2e/test_nginx.py`` runs both as part of the test suite. Needs nginx
(``apt-get install nginx``, ``.ci/run`` does) and Debian's chromium. Everything runs on
127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench import load_test
from tests.helpers import browsing, imagefactory
from tests.helpers.traces import Secret, default_roots, find_traces

REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["CheckResult", "check", "find_nginx", "main", "nginx_front"]

NGINX_WRAPPER = """
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format routing '$featapp_route $upstream_addr $status $request_method $uri';
    access_log {work}/access.log routing;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
{site}
}}
"""
SLOW_MS = 90_000


@dataclass
class CheckResult:
    """What one run through nginx saw: the upstream(s) each browser's key reached, and problems."""

    routes: dict[str, set[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_nginx() -> str | None:
    """nginx's path (``/usr/sbin`` is not on a normal user's PATH), or None."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None


def site_config(upstreams: list[str], port: int, *, sticky: bool = True) -> str:
    """deploy/nginx-featapp.conf with its upstream servers and its listen port replaced."""
    site = (REPO_ROOT / "deploy" / "nginx-featapp.conf").read_text()
    servers = "".join(f"    server {address};\n" for address in upstreams)
    site, replaced = re.subn(r"(    server 127\.0\.0\.1:850[1-4];\n)+", servers, site)
    if replaced != 1 or "listen 80;" not in site:
        raise ValueError("deploy/nginx-featapp.conf changed shape: update deploy/check_nginx.py")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    if not sticky:
        site = site.replace("    hash $featapp_route consistent;\n", "")
    return site


@contextlib.contextmanager
def nginx_front(work: Path, upstreams: list[str], *, sticky: bool = True) -> Iterator[str]:
    """nginx in front of ``upstreams`` (host:port) for the ``with`` block; yields its URL."""
    nginx = find_nginx()
    if nginx is None:
        raise FileNotFoundError("nginx is missing: apt-get install nginx")
    work.mkdir(parents=True, exist_ok=True)
    port = browsing.free_port()
    (work / "nginx.conf").write_text(NGINX_WRAPPER.format(work=work, site=site_config(upstreams, port, sticky=sticky)))
    process = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-p", str(work)], stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx did not start: {process.stderr.read().decode()}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        browsing.stop(process, timeout=10)


def read_routes(access_log: Path) -> dict[str, set[str]]:
    """Routing key -> the upstreams its requests went to, from the ``routing`` log format."""
    routes: dict[str, set[str]] = collections.defaultdict(set)
    if access_log.exists():
        for line in access_log.read_text().splitlines():
            route, upstream, *_ = line.split()
            if upstream != "-":
                routes[route].add(upstream)
    return routes


def key_for(url: str, access_log: Path, upstream: str, tries: int = 64) -> str | None:
    """A routing key that nginx sends to ``upstream``: asked of nginx itself, one health
    request per candidate key (the hash is nginx's, not ours to recompute)."""
    for _ in range(tries):
        key = secrets.token_hex(16)
        request = urllib.request.Request(url + "/_stcore/health", headers={"Cookie": f"featapp_route={key}"})
        with urllib.request.urlopen(request, timeout=5):
            pass
        if read_routes(access_log).get(key) == {upstream}:
            return key
    return None


def browse(browser, url: str, number: int, key: str | None) -> tuple[Secret, str | None, str | None]:
    """One student: open the app, upload a photo with a marker, open the Feature map.
    Returns the photo's secret, the failure if any, and the routing key nginx gave it."""
    from playwright.sync_api import Error as PlaywrightError

    secret = Secret.new(".png")
    pixels = np.random.default_rng(number).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    photo = imagefactory.with_marker(imagefactory.encode(Image.fromarray(pixels), "PNG"), secret.marker)
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    if key is not None:
        context.add_cookies([{"name": "featapp_route", "value": key, "url": url}])
    page = context.new_page()
    try:
        page.goto(url)
        page.get_by_role("heading", name="Gallery").wait_for(timeout=SLOW_MS)
        page.get_by_role("tab", name="Your photo or the camera").click()
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
            {"name": secret.filename, "mimeType": "image/png", "buffer": photo}
        )
        page.get_by_text(f"Current image: {secret.filename} (your upload)").wait_for(timeout=SLOW_MS)
        page.locator('[data-testid="stSidebarNavLink"]', has_text="Feature map").first.click()
        frame = page.frame_locator(load_test.EXPLORER_FRAME)
        frame.locator("#map").wait_for(timeout=SLOW_MS)
        deadline = time.monotonic() + SLOW_MS / 1000
        while frame.locator("body").get_attribute("data-draws") in (None, "0"):
            if time.monotonic() > deadline:
                raise RuntimeError("the Feature map's browser view drew no map")
            time.sleep(0.1)
        if page.locator('[data-testid="stException"]').count():
            raise RuntimeError(page.locator('[data-testid="stException"]').first.inner_text()[:200])
        failure = None
    except (PlaywrightError, RuntimeError) as error:
        failure = f"browser {number}: {str(error).splitlines()[0][:200]}"
    route = next((cookie["value"] for cookie in context.cookies() if cookie["name"] == "featapp_route"), None)
    context.close()
    return secret, failure, route


def check(browsers: int = 4, *, sticky: bool = True, work: Path | None = None, log=print) -> CheckResult:
    """Two processes behind nginx, ``browsers`` students through it; see the module's docstring."""
    from playwright.sync_api import sync_playwright

    since = time.time() - 1
    work = work or Path(tempfile.mkdtemp(prefix="featapp-nginx-"))
    saved = os.environ.get("STREAMLIT_SERVER_COOKIE_SECRET")
    os.environ["STREAMLIT_SERVER_COOKIE_SECRET"] = secrets.token_hex()  # the same for every process
    result = CheckResult()
    access_log = work / "access.log"
    secrets_used: list[Secret] = []
    browser_keys: list[str] = []
    servers: list[load_test.Server] = []
    try:
        servers = [load_test.start_server(f"p{number}", REPO_ROOT, [], work) for number in range(2)]
        upstreams = [server.url.removeprefix("http://") for server in servers]
        with nginx_front(work, upstreams, sticky=sticky) as url, sync_playwright() as playwright:
            chromium = browsing.launch_chromium(playwright)
            try:
                for number in range(browsers):
                    key = None
                    routes = read_routes(access_log)
                    used = {upstream for route in browser_keys for upstream in routes.get(route, ())}
                    missing = [upstream for upstream in upstreams if upstream not in used]
                    if sticky and number == browsers - 1 and missing:
                        key = key_for(url, access_log, missing[0])  # the last browser goes where none went
                    secret, failure, route = browse(chromium, url, number, key)
                    secrets_used.append(secret)
                    if route is None:
                        failure = failure or f"browser {number}: nginx set no featapp_route cookie"
                    else:
                        browser_keys.append(route)
                    if failure:
                        result.problems.append(failure)
                    log(failure or f"browser {number}: upload and map fine")
            finally:
                chromium.close()
            time.sleep(1)
    finally:
        for server in servers:
            load_test.stop_server(server)
        if saved is None:
            os.environ.pop("STREAMLIT_SERVER_COOKIE_SECRET", None)
        else:
            os.environ["STREAMLIT_SERVER_COOKIE_SECRET"] = saved

    routes = read_routes(access_log)
    result.routes = {route: routes.get(route, set()) for route in browser_keys}
    result.problems += [
        f"browser {route[:8]} reached {sorted(ups)}" for route, ups in result.routes.items() if len(ups) != 1
    ]
    used = {next(iter(ups)) for ups in result.routes.values() if len(ups) == 1}
    log(f"{len(result.routes)} browsers, upstreams used: {sorted(used)}")
    if sticky and len(used) < 2:
        result.problems.append("only one process got browsers")
    needles = [needle for secret in secrets_used for needle in secret.needles]
    hits = find_traces(needles, since, default_roots(work), skip=BROWSER_FOLDERS)
    if hits:
        result.problems.append(f"upload bytes on disk: {hits}")
    return result


# Playwright's Chromium profile and artifact folders: the student's machine, not the server's.
BROWSER_FOLDERS = ("playwright_chromiumdev_profile", "playwright-artifacts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--browsers", type=int, default=6)
    parser.add_argument(
        "--no-sticky",
        action="store_true",
        help="the control: round robin instead of the routing cookie (expect failures)",
    )
    args = parser.parse_args(argv)
    if find_nginx() is None:
        sys.exit("nginx is missing: apt-get install nginx")
    result = check(args.browsers, sticky=not args.no_sticky)
    for problem in result.problems:
        print("PROBLEM:", problem)
    print("OK" if result.ok else "FAILED")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
