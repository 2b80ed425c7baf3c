"""Check deploy/nginx-featapp.conf for real: two Streamlit processes behind nginx, several browsers.

Starts two ``streamlit run`` processes and an nginx with ``deploy/nginx-featapp.conf`` (its
ports rewritten to free ones on 127.0.0.1), then opens ``--browsers`` Chromium contexts
through nginx. Each opens the app, uploads a photo carrying a random marker and opens the
Feature map page. It checks that

* every browser's requests all went to one Streamlit process (nginx's access log records
  the upstream of each request and the browser's routing cookie), and that both processes
  got browsers;
* every upload became the current image and its heatmap was drawn (no exception element);
* the marker is on no file written during the run: not in nginx's temporary folders
  (request bodies), not in the processes' temp or cache folders, not in /tmp.

    .venv/bin/python deploy/check_nginx.py --browsers 6

Needs nginx (``apt-get install nginx-light``) and Debian's chromium. Everything runs on
127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests"), str(REPO_ROOT / "bench")]

import imagefactory  # noqa: E402
import load_test  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from traces import Secret, default_roots, find_traces  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--browsers", type=int, default=6)
    parser.add_argument(
        "--no-sticky",
        action="store_true",
        help="the control: round robin instead of the routing cookie (expect failures)",
    )
    args = parser.parse_args()
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        sys.exit("nginx is missing: apt-get install nginx-light")
    since = time.time() - 1
    work = Path(tempfile.mkdtemp(prefix="featapp-nginx-"))
    os.environ["STREAMLIT_SERVER_COOKIE_SECRET"] = secrets.token_hex()  # the same for every process
    servers, nginx = [], None
    try:
        servers = [load_test.start_server(f"p{number}", REPO_ROOT, [], work) for number in range(2)]
        front = load_test.free_port()
        site = (REPO_ROOT / "deploy" / "nginx-featapp.conf").read_text()
        upstreams = "".join(f"    server {server.url.removeprefix('http://')};\n" for server in servers)
        site = re.sub(r"(    server 127\.0\.0\.1:850[1-4];\n)+", upstreams, site)
        site = site.replace("listen 80;", f"listen 127.0.0.1:{front};")
        if args.no_sticky:
            site = site.replace("    hash $featapp_route consistent;\n", "")
        (work / "nginx.conf").write_text(NGINX_WRAPPER.format(work=work, site=site))
        nginx = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)], stderr=subprocess.PIPE)
        time.sleep(1.5)
        if nginx.poll() is not None:
            sys.exit(f"nginx did not start: {nginx.stderr.read().decode()}")
        secrets_used, failures = run_browsers(f"http://127.0.0.1:{front}", args.browsers)
        time.sleep(1)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        for server in servers:
            load_test.stop_server(server)

    routes: dict[str, set[str]] = collections.defaultdict(set)
    for line in (work / "access.log").read_text().splitlines():
        route, upstream, *_ = line.split()
        if upstream != "-":
            routes[route].add(upstream)
    browsers = {route: ups for route, ups in routes.items() if len(route) == 32}
    problems = [f"browser {route[:8]} reached {sorted(ups)}" for route, ups in browsers.items() if len(ups) != 1]
    problems += failures
    used = {next(iter(ups)) for ups in browsers.values()}
    print(f"{len(browsers)} browsers, upstreams used: {sorted(used)}")
    if len(used) < 2:
        problems.append("only one process got browsers")
    needles = [n for secret in secrets_used for n in secret.needles]
    hits = find_traces(needles, since, default_roots(work), skip=load_test_browser_folders())
    if hits:
        problems.append(f"upload bytes on disk: {hits}")
    for problem in problems:
        print("PROBLEM:", problem)
    print("OK" if not problems else "FAILED")
    return 1 if problems else 0


def load_test_browser_folders() -> tuple[str, ...]:
    return ("playwright_chromiumdev_profile", "playwright-artifacts")


def run_browsers(url: str, count: int) -> tuple[list[Secret], list[str]]:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    used, failures = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=load_test.CHROMIUM, args=load_test.CHROMIUM_FLAGS)
        for number in range(count):
            secret = Secret.new(".png")
            used.append(secret)
            pixels = np.random.default_rng(number).integers(0, 256, (300, 400, 3), dtype=np.uint8)
            photo = imagefactory.with_marker(imagefactory.encode(Image.fromarray(pixels), "PNG"), secret.marker)
            context = browser.new_context()
            page = context.new_page()
            try:
                page.goto(url)
                page.get_by_role("heading", name="Gallery").wait_for(timeout=60_000)
                page.get_by_role("tab", name="Your photo or the camera").click()
                page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                    {"name": secret.filename, "mimeType": "image/png", "buffer": photo}
                )
                page.get_by_text(f"Current image: {secret.filename} (your upload)").wait_for(timeout=60_000)
                page.locator('[data-testid="stSidebarNavLink"]', has_text="Feature map").first.click()
                page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=60_000)
                if page.locator('[data-testid="stException"]').count():
                    raise RuntimeError(page.locator('[data-testid="stException"]').first.inner_text()[:200])
                print(f"browser {number}: upload and heatmap fine ({len(photo)} bytes)")
            except (PlaywrightError, RuntimeError) as error:
                failures.append(f"browser {number}: {str(error).splitlines()[0][:200]}")
                print(failures[-1])
            context.close()
        browser.close()
    return used, failures


if __name__ == "__main__":
    sys.exit(main())
