"""Many students at once: N concurrent sessions against one ``streamlit run``.

With ``--client protocol`` each student speaks Streamlit's websocket protocol instead
(``streamlit_client.py``, see :func:`protocol_student`): the same requests, uploads and
picture fetches, without drawing, so the server's capacity is measured without 50
browsers competing for its 2 cores. By default (``--client browser``) each session is a
real browser context (Playwright driving Debian's ``/usr/bin/chromium``,
one browser, one context per student). A session does what a student does in the first
minutes of the lecture:

1. ``open``: open the app and wait for the gallery's 20 photos;
2. ``pick_gallery``: choose a gallery photo (session ``i`` takes photo ``i % 20``) and wait
   for it to become the current image;
3. ``upload``: upload a photo made for this session (a PNG nobody else uploads) and wait
   for it to become the current image;
4. ``open_feature_map``: open the Feature map page and wait for its heatmap;
5. ``change_channel``: step the channel up and wait for the heatmap titled with it;
6. ``change_layer``: choose another layer and wait for its heatmap;
7. ``open_grid``: open the Layer grid and wait for all of that layer's tiles;

then steps 4-7 again for ``--rounds`` - 1 more rounds (other layers and channels).
Latency is the time from the action to the updated element being visible in the page.
Any timeout, exception element or page error counts as an error (there must be none).

The server's resident memory (RSS) is sampled every half second, during the sessions and
for ``--settle`` seconds after they close, to show whether memory levels off. The server
is started here on a free port of 127.0.0.1 (or given with ``--url``, then its RSS is not
sampled unless ``--server-pid`` is given). Nothing leaves 127.0.0.1.

    .venv/bin/python -m bench.load_test --sessions 1 10 25 50 --out bench/results/load.md

A heavy class (``--heavy``, protocol clients; issue 28): the same students, and besides,
every ``--heavy-every``-th (5) computes the Model page's occlusion map, saliency and
Grad-CAM after the first round, then one channel's optimised picture on the Feature map
(a channel of its own, so each computes one), the first of them also scans the split on
Cats vs dogs, and every ``--large-every``-th (10, from the third) uploads a large or
progressive JPEG made here with Pillow (:data:`LARGE_PICTURES`: the issue's 13,370 x 13,370
progressive one, which must be refused with a message, and 4-45 megapixel ones, which must be
shown). The report adds the memory when the last heavy action ended and a minute later, and
the issue's targets, met or not:

    .venv/bin/python -m bench.load_test --client protocol --heavy --sessions 50 --rounds 2 \
        --out bench/results/load_50_heavy.md

Several apps side by side in one run (for before/after comparisons): ``--app before=DIR
--app after=.`` starts one server per folder and runs every wave against each, in turn.
Streamlit options and environment variables may follow the folder, comma-separated:
``--app gc-on=.:--runner.postScriptGC=true`` or ``--app arenas=.:MALLOC_ARENA_MAX=2``.

Bounded: at most ``--max-sessions`` (60) sessions per wave, ``--wave-timeout`` seconds per
wave, ``--timeout`` seconds per interaction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from tests.helpers.browsing import (
    NO_BACKGROUND_THROTTLING,
    free_port,
    launch_chromium,
    start_streamlit,
    wait_for_health,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

EXCEPTION = '[data-testid="stException"]'
CHART = '[data-testid="stVegaLiteChart"]'
# A heatmap with thousands of hover cells is drawn on a canvas (Streamlit's rule for charts
# of more than 2,000 marks), a smaller one as SVG. On a canvas the title is not in the page's
# text, so a change is seen in the pixels: a hash of every pixel (a few ms in the browser,
# read only once drawing has paused; sampling every 7th pixel missed the title's few
# changed pixels when two channels are both constant, the same picture with a new title,
# and those sessions waited until they timed out); in SVG, a hash of the title and the map picture's data URL. None: no heatmap
# on the page (yet), or a canvas with nothing drawn on it.
CANVAS_SIGNATURE = """() => {
    const chart = document.querySelector('[data-testid="stVegaLiteChart"]');
    if (!chart) return null;
    let hash = 0;
    const mix = (value) => { hash = (hash * 31 + value) >>> 0; };
    const canvas = chart.querySelector('canvas');
    if (canvas) {
        if (!canvas.width) return null;
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let ink = 0;
        for (let i = 0; i < pixels.length; i += 4) {
            mix(pixels[i] + 3 * pixels[i + 1] + 7 * pixels[i + 2] + 11 * pixels[i + 3]);
            if (pixels[i + 3] > 0 && pixels[i] < 200) ink++;
        }
        return ink > 100 ? 'canvas:' + canvas.width + 'x' + canvas.height + ':' + hash : null;
    }
    const svg = chart.querySelector('svg');
    if (!svg) return null;
    const pictures = [...svg.querySelectorAll('image')].map(n => n.getAttribute('href') || n.getAttribute('xlink:href') || '');
    if (!pictures.some(url => url.length > 100)) return null;
    for (const text of [svg.textContent, ...pictures]) for (let i = 0; i < text.length; i++) mix(text.charCodeAt(i));
    return 'svg:' + hash;
}"""
# Injected into every page: counts drawing on canvases and changes inside charts, so the
# test can wait for a chart to be redrawn without polling its pixels (in-page checks every
# 50 ms cost next to nothing; reading the pixels costs 3-10 ms per look).
DRAW_COUNTER = """(() => {
    const counter = window.__featappDraws = {draws: 0, last: 0};
    const mark = () => { counter.draws++; counter.last = performance.now(); };
    const proto = CanvasRenderingContext2D.prototype;
    for (const name of ['drawImage', 'fillRect', 'fillText', 'fill', 'stroke', 'putImageData', 'clearRect']) {
        const original = proto[name];
        proto[name] = function (...args) { mark(); return original.apply(this, args); };
    }
    new MutationObserver((records) => {
        for (const record of records) {
            const node = record.target.nodeType === 1 ? record.target : record.target.parentElement;
            if (node && node.closest && node.closest('[data-testid="stVegaLiteChart"]')) { mark(); return; }
        }
    }).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
})();"""
QUIET_MS = 150
HEAVY_INTERACTIONS = (
    "upload_large",
    "open_model_page",
    "occlusion",
    "saliency_gradcam",
    "featurevis_channel",
    "open_classes",
    "scan",
)
"""The steps ``--heavy`` adds (see :class:`HeavyPlan`)."""
LIGHT_TARGETS_S = {"open": 5.0, "pick_gallery": 2.0, "change_layer": 2.0, "open_grid": 2.0}
"""Issue 28's p95 targets for the light actions, which the heavy class must still meet."""
PEAK_TARGET_MB = 1500.0
AFTER_TARGET_MB = 1000.0
AFTER_S = 60.0
"""Issue 28: resident memory at most PEAK_TARGET_MB, and under AFTER_TARGET_MB within AFTER_S
seconds of the last heavy action."""
"""A chart counts as drawn when nothing was drawn for this long (vega draws the map's
picture, an image mark, a moment after the axes)."""
INTERACTIONS = (
    "open",
    "pick_gallery",
    "open_upload_tab",
    "upload",
    "open_feature_map",
    "change_channel",
    "report_view",
    "change_layer",
    "open_grid",
    "browser_change_channel",
    "browser_change_colours",
    "browser_change_scale",
    *HEAVY_INTERACTIONS,
)
"""The steps each student takes. Since the gallery draws only its open tab (fourth session),
opening its upload tab is a step of its own (``open_upload_tab``), a rerun the student waits
for before choosing a file, as ``upload`` is the wait after choosing it (until this session
of 2026-12-02 the protocol client timed the two as one ``upload``). Where the
Feature map is drawn in the browser (the default), a protocol student's channel change is
the view its browser reports (``report_view``: the server's part, the strip and the rest),
and the change the student sees happens in the browser: ``--browsers N`` real Chromium
pages time it there while the protocol students load the server (``browser_*``; on the
server-drawn view they time the same clicks, which wait for a rerun)."""
BROWSER_PROBE_PAUSE_S = 0.5
"""Between a probe browser's changes: a student clicking through channels, not a benchmark loop."""
EXPLORER_FRAME = 'iframe[src*="map_explorer"]'
# One change in the browser-drawn view, timed inside its frame: from the click to the next
# painted frame (the map is redrawn synchronously in the click's handler).
EXPLORER_CHANGE_JS = """async (body, what) => {
  const state = window.featappExplorer, doc = body.ownerDocument, view = state.view;
  const before = state.draws, started = performance.now();
  if (what === "channel") doc.getElementById(view.channel % 2 ? "next" : "prev").click();
  if (what === "colours") doc.querySelector(`#colours input[value="${view.colours === "blues4" ? "viridis" : "blues4"}"]`).click();
  if (what === "scale") doc.querySelector(`#scaling input[value="${view.scaling === "per map" ? "per layer" : "per map"}"]`).click();
  await new Promise(resolve => requestAnimationFrame(() => setTimeout(resolve, 0)));
  return state.draws > before ? performance.now() - started : -1;
}"""
MAX_SESSIONS = 60


# -- the server ------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen | None = None
    pid: int | None = None
    log_path: Path | None = None
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (time, rss MB, cpu seconds)
    marks: list[tuple[float, str]] = field(default_factory=list)
    client_http: str = "browser"  # how this server's protocol students speak HTTP (streamlit_client.HTTP_MODES)

    def rss_mb(self) -> float | None:
        if self.pid is None:
            return None
        try:
            return psutil.Process(self.pid).memory_info().rss / 2**20
        except psutil.Error:
            return None

    def cpu_seconds(self) -> float | None:
        if self.pid is None:
            return None
        try:
            times = psutil.Process(self.pid).cpu_times()
            return times.user + times.system
        except psutil.Error:
            return None


def start_server(name: str, app_dir: Path, options: list[str], work: Path) -> Server:
    """``options``: streamlit flags (``--runner.postScriptGC=true``) and environment
    variables (``MALLOC_ARENA_MAX=2``) for this server."""
    flags = [option for option in options if option.startswith("--")]
    env_extra = dict(option.split("=", 1) for option in options if not option.startswith("--"))
    port = free_port()
    cache = work / f"cache-{name}"
    env = dict(os.environ)
    env.update(
        {
            "FEATAPP_PROVIDER": "cpu",
            "FEATAPP_CACHE_DIR": str(cache),
            "FEATAPP_DATA_DIR": os.environ.get("FEATAPP_DATA_DIR")
            or str(REPO_ROOT.parent / "shared/data/cats_vs_dogs"),
        }
    )
    env.update(env_extra)
    log_path = work / f"server-{name}.log"
    process = start_streamlit(
        port, env, ["--server.fileWatcherType", "none", *flags], app_dir=app_dir, log=log_path.open("w")
    )
    server = Server(name, f"http://127.0.0.1:{port}", process, process.pid, log_path)
    wait_for_health(server.url, process, log_path=log_path)
    wait_for_warm_up(log_path)
    return server


WARMED_UP = ("featapp: gradient model loaded", "featapp: gradient views unavailable", "featapp: no model")


def wait_for_warm_up(log_path: Path, timeout: float = 120.0) -> None:
    """Until the server has prepared itself (its log's warm-up lines, :mod:`featapp.app.server`):
    the model, the first gallery, then the gradient model and the atlas. A class meets a server
    that was started before the lesson; a wave that began during the warm-up would time the
    import of ONNX and the atlas's decoding instead of the students' clicks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if any(line in text for line in WARMED_UP):
            return
        time.sleep(0.2)
    print(f"the server at {log_path.name} did not finish its warm-up in {timeout:.0f} s; going on", file=sys.stderr)


CLIENT_HTTP_FLAG = "client-http="
"""A FLAG of ``--app`` for the students, not the server: ``client-http=per-request`` makes that
server's protocol students open a new connection per HTTP request (the client's way before it
spoke HTTP as a browser does), for a side-by-side run of the two."""


def start_app(name: str, spec: str, work: Path) -> Server:
    """A server for ``--app NAME=DIR[:FLAGS]`` (``spec`` is ``DIR[:FLAGS]``; FLAGS as in :func:`start_server`,
    plus :data:`CLIENT_HTTP_FLAG`)."""
    folder, _, flags = spec.partition(":")
    options = flags.split(",") if flags else []
    client_http = [option for option in options if option.startswith(CLIENT_HTTP_FLAG)]
    server = start_server(name, Path(folder).resolve(), [o for o in options if o not in client_http], work)
    if client_http:
        from bench.streamlit_client import HTTP_MODES

        server.client_http = client_http[-1].removeprefix(CLIENT_HTTP_FLAG)
        if server.client_http not in HTTP_MODES:
            stop_server(server)
            raise SystemExit(f"--app {name}: client-http must be one of {', '.join(HTTP_MODES)}")
    return server


def stop_server(server: Server) -> None:
    if server.process is None:
        return
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


class Sampler(threading.Thread):
    """Samples every server's RSS and CPU time every ``interval`` seconds, and adds up the
    CPU time of this script's other descendants (the browser), process by process, so
    that renderer processes that end with their context are still counted."""

    def __init__(self, servers: list[Server], started: float, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.servers, self.started, self.interval = servers, started, interval
        self.stopped = threading.Event()
        self.client_cpu = 0.0
        self._client_last: dict[int, float] = {}

    def _sample_client(self) -> None:
        servers = {server.pid for server in self.servers}
        for child in psutil.Process().children(recursive=True):
            if child.pid in servers:
                continue
            try:
                times = child.cpu_times()
            except psutil.Error:
                continue
            total = times.user + times.system
            self.client_cpu += max(0.0, total - self._client_last.get(child.pid, 0.0))
            self._client_last[child.pid] = total

    def run(self) -> None:
        while not self.stopped.is_set():
            now = time.monotonic() - self.started
            for server in self.servers:
                rss, cpu = server.rss_mb(), server.cpu_seconds()
                if rss is not None:
                    server.samples.append((now, rss, cpu or 0.0))
            self._sample_client()
            self.stopped.wait(self.interval)


# -- one student -------------------------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    wave: int
    session: int
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    heavy_done: float | None = None  # time.monotonic() when its heavy actions ended (--heavy)


def student_photo(session: int) -> bytes:
    """A 480 x 640 photo-like PNG that only this session uploads (so no cache can help it)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(session)
    rows, cols = np.mgrid[0:480, 0:640].astype(np.float32)
    centre = rng.uniform(100, 380), rng.uniform(100, 540)
    radius = np.hypot(rows - centre[0], cols - centre[1])
    red = 127 + 120 * np.sin(radius / rng.uniform(8, 40))
    green = cols / 640 * 255
    blue = 127 + 120 * np.cos(rows / rng.uniform(8, 40))
    pixels = np.stack([red, green, blue], axis=-1).round().clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def layer_plans(rounds: int, sessions: int) -> list[list[tuple[str, int, str]]]:
    """Per session, per round: (the layer's label to type, its channels, its name).

    Spatial layers other than layer 1, a different one each round and for neighbouring sessions."""
    from featapp.engine.model import load_model

    model = load_model(provider="cpu")
    spatial = [(number + 1, layer) for number, layer in enumerate(model.layers) if layer.is_spatial][1:]
    plans = []
    for session in range(sessions):
        plan = []
        for round_ in range(rounds):
            number, layer = spatial[(session + round_ * 3) % len(spatial)]
            plan.append((f"{number} · {layer.name}", layer.channels, layer.name))
        plans.append(plan)
    return plans


# -- heavy mode (--heavy) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LargePicture:
    """A large upload made here at run time: its recipe and what the app must answer."""

    name: str
    size: tuple[int, int]
    progressive: bool
    subsampling: int  # Pillow's: 0 is 4:4:4, 2 is 4:2:0
    refused: str | None = None  # words the refusal must contain; None: accepted and shown


LARGE_PICTURES = (
    # The picture: 4:4:4 progressive, whose coefficient buffers (1 GB) are refused.
    LargePicture("progressive-13370x13370.jpg", (13370, 13370), True, 0, refused="progressive JPEG of 13370 x 13370"),
    LargePicture("progressive-6680x6680.jpg", (6680, 6680), True, 0),  # the largest accepted one
    LargePicture("baseline-8mp.jpg", (3264, 2448), False, 2),
    LargePicture("progressive-6mp.jpg", (3000, 2000), True, 2),
    LargePicture("progressive-4mp.jpg", (2448, 1632), True, 2),
)
"""What the large uploaders send, in turn. The refused one is the same file for everyone (it is
never decoded); the others are photo-like pictures of their own per student."""


def large_picture(picture: LargePicture, session: int) -> bytes:
    """``picture`` as JPEG bytes (under the app's 10 MB upload limit): for the refused one the
    issue's black square, else :func:`student_photo`'s pattern for ``session``, enlarged."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    if picture.refused:
        image = Image.new("RGB", picture.size)
        image.save(buffer, "JPEG", progressive=True, quality=10, subsampling=picture.subsampling)
    else:
        image = Image.open(io.BytesIO(student_photo(50_000 + session))).resize(picture.size, Image.Resampling.BILINEAR)
        image.save(buffer, "JPEG", progressive=picture.progressive, quality=80, subsampling=picture.subsampling)
    return buffer.getvalue()


@dataclass
class HeavyPlan:
    """What one student of the heavy class does besides the light steps (``--heavy``).

    ``views``: after the first round, the Model page's occlusion, saliency and Grad-CAM, and on
    the Feature map one channel's optimised picture ("what this channel looks for"); ``scan``:
    then scans the split on the Cats-vs-dogs page; ``upload``: after the first upload, a large
    picture (:data:`LARGE_PICTURES`): its file name, bytes and the refusal expected, if any."""

    views: bool = False
    scan: bool = False
    upload: tuple[str, bytes, str | None] | None = None


def heavy_plans(count: int, every: int, large_every: int) -> list[HeavyPlan]:
    """Per session: every ``every``-th (0, every, 2 * every, ...) runs the heavy views, session 0
    also the scan; sessions 2, 2 + large_every, ... upload :data:`LARGE_PICTURES` in turn (made
    here, which takes a while for the largest)."""
    plans = [HeavyPlan(views=session % every == 0, scan=session == 0) for session in range(count)]
    made: dict[str, bytes] = {}
    for turn, session in enumerate(range(2, count, large_every)):
        picture = LARGE_PICTURES[turn % len(LARGE_PICTURES)]
        if picture.refused:
            data = made.setdefault(picture.name, large_picture(picture, session))
        else:
            data = large_picture(picture, session)
        plans[session].upload = (f"{session}-{picture.name}", data, picture.refused)
    return plans


async def new_context(browser, timeout_s: float):
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(timeout_s * 1000)  # clicks and page loads too, not Playwright's 30 s
    context.set_default_navigation_timeout(timeout_s * 1000)
    await context.add_init_script(DRAW_COUNTER)
    return context


async def student(
    context, server: Server, wave: int, session: int, timeout_s: float, plan, shots: Path | None
) -> Result:
    """One student in its own tab of ``context``: a Streamlit session of its own (sessions
    belong to a tab's websocket, not to the browser's cookies)."""
    from playwright.async_api import Error as PlaywrightError

    result = Result(server.name, wave, session)
    timeout_ms = timeout_s * 1000
    page = await context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)[:200]))

    async def step(name: str, act, done) -> None:
        """Time ``act`` until ``done`` sees its result."""
        started = time.perf_counter()
        await act()
        await done()
        result.latencies.setdefault(name, []).append(time.perf_counter() - started)
        await check_page(name)

    async def check_page(name: str) -> None:
        if await page.locator(EXCEPTION).count():
            raise RuntimeError(
                f"exception element after {name}: {(await page.locator(EXCEPTION).first.inner_text())[:200]}"
            )
        if page_errors:
            raise RuntimeError(f"page error after {name}: {page_errors[0]}")

    async def wait_text(text: str) -> None:
        await page.get_by_text(text).first.wait_for(timeout=timeout_ms)

    async def signature() -> str | None:
        return await page.evaluate(CANVAS_SIGNATURE)

    async def heatmap_step(name: str, act, what: str) -> None:
        """Time ``act`` until the heatmap has been redrawn with a picture other than before:
        the time of its last drawing call, in the page's own clock."""
        before = await signature()
        draws, page_started = await page.evaluate("() => [window.__featappDraws.draws, performance.now()]")
        deadline = time.monotonic() + timeout_s
        await act()
        while True:
            remaining_ms = (deadline - time.monotonic()) * 1000
            if remaining_ms <= 0:
                raise TimeoutError(f"the heatmap did not show {what} within {timeout_s} s")
            await page.wait_for_function(
                f"n => window.__featappDraws.draws > n && performance.now() - window.__featappDraws.last > {QUIET_MS}",
                arg=draws,
                polling=50,
                timeout=remaining_ms,
            )
            # The count first, then the picture: a draw landing between the two reads is then
            # waited for again instead of being missed (reading the other way round, a
            # session could wait for a draw that had already happened, until it timed out).
            draws, last = await page.evaluate("() => [window.__featappDraws.draws, window.__featappDraws.last]")
            now = await signature()
            if now is not None and now != before:
                break
        result.latencies.setdefault(name, []).append((last - page_started) / 1000)
        await check_page(name)

    async def wait_tiles(count: int) -> None:
        await page.wait_for_function(
            """n => document.querySelectorAll('[data-testid="stVegaLiteChart"] svg image').length === n
                   && document.body.innerText.includes('One tile is one channel')""",
            arg=count,
            polling=50,
            timeout=timeout_ms,
        )

    async def nav(name: str) -> None:
        await page.locator('[data-testid="stSidebarNavLink"]', has_text=name).first.click()

    try:
        looks = page.get_by_role("button", name="Look inside")

        async def gallery_ready() -> None:
            await page.get_by_role("heading", name="Gallery").wait_for(timeout=timeout_ms)
            deadline = time.monotonic() + timeout_s
            while await looks.count() < 20:
                if time.monotonic() > deadline:
                    raise TimeoutError("the gallery's 20 photos did not appear")
                await asyncio.sleep(0.05)
            await wait_text("right; the ones it gets wrong are marked")

        await step("open", lambda: page.goto(server.url), gallery_ready)
        index = 1 + session % 19  # photo 0 is the current image when the app opens
        before = await page.get_by_text("Current image:").first.inner_text()

        async def gallery_photo_current() -> None:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                now = await page.get_by_text("Current image:").first.inner_text()
                if now != before and "(test)" in now:
                    return
                await asyncio.sleep(0.05)
            raise TimeoutError("the chosen gallery photo did not become the current image")

        await step("pick_gallery", lambda: looks.nth(index).click(), gallery_photo_current)
        current_before = await page.get_by_text("Current image:").first.inner_text()

        uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
        await step(
            "open_upload_tab",
            lambda: page.get_by_role("tab", name="Your photo or the camera").click(),
            lambda: uploader.wait_for(state="attached", timeout=timeout_ms),
        )
        filename = f"student-{wave}-{session}.png"
        photo = student_photo(session + 1000 * wave)
        await step(
            "upload",
            lambda: uploader.set_input_files({"name": filename, "mimeType": "image/png", "buffer": photo}),
            lambda: wait_text(f"Current image: {filename} (your upload)"),
        )
        if current_before.endswith(f"{filename} (your upload)."):
            raise RuntimeError("the upload did not change the current image")

        for label, channels, layer_name in plan:
            await heatmap_step("open_feature_map", lambda: nav("Feature map"), "the page")
            await heatmap_step(
                "change_channel", lambda: page.locator('[data-testid="stNumberInputStepUp"]').first.click(), "a channel"
            )

            async def choose(label=label) -> None:
                box = page.locator('[data-testid="stSelectbox"]', has=page.get_by_text("Layer", exact=True)).first
                await box.click()
                await page.keyboard.type(label)
                await page.keyboard.press("Enter")

            await heatmap_step("change_layer", choose, f"layer {layer_name}")
            await step("open_grid", lambda: nav("Layer grid"), lambda n=channels: wait_tiles(n))
    except (PlaywrightError, TimeoutError, RuntimeError, AssertionError) as error:
        result.errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:300]}")
        if shots is not None:
            with contextlib.suppress(PlaywrightError):
                shots.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(shots / f"error-{server.name}-wave{wave}-session{session}.png"))
    finally:
        await page.close()
    return result


async def protocol_student(
    server: Server, wave: int, session: int, timeout_s: float, plan, heavy: HeavyPlan | None = None
) -> Result:
    """The same student as :func:`student`, speaking Streamlit's websocket protocol
    (:mod:`streamlit_client`) instead of driving a browser: the server does all the same
    work and serves the same pictures, but nothing is drawn, so 50 students cost the
    load generator little CPU. Latency: from the request to the run's last message, plus
    fetching the run's new pictures. Each step checks what a student would see.

    ``heavy`` (``--heavy``): what this student does besides (:class:`HeavyPlan`)."""
    from bench.streamlit_client import AppClient, AppError, Widget

    result = Result(server.name, wave, session)
    client = AppClient(server.url, timeout=timeout_s, http=server.client_http)

    async def step(name: str, act):
        started = time.perf_counter()
        run = await act()
        result.latencies.setdefault(name, []).append(time.perf_counter() - started)
        return run

    def sidebar_caption(run) -> str:
        captions = [image.caption for element, _ in run.elements if element.WhichOneof("type") == "imgs"
                    for image in element.imgs.imgs]  # fmt: skip
        # The app escapes Markdown in titles (a file may be called "cat_[1].png"); read it plainly.
        return re.sub(r"\\(.)", r"\1", captions[0]) if captions else ""

    def expect(condition: bool, message: str) -> None:
        if not condition:
            raise AppError(message)

    def server_channel(run) -> int | None:
        """The channel the Feature map's server-drawn parts are about: the button that optimises
        its picture, or the picture itself (from the atlas or computed before)."""
        for button in run.widgets("button", "Optimise a picture for channel"):
            found = re.search(r"channel (\d+)", button.label)
            if found:
                return int(found.group(1))
        for caption in run.image_captions():
            found = re.match(r"Channel (\d+):", caption)
            if found:
                return int(found.group(1))
        return None

    def shown_map(run) -> tuple[str, int, Widget | None]:
        """The layer and channel the Feature map shows, and the browser view's component
        (``None`` in the server-drawn view, where the heatmap's title says what is shown)."""
        explorer = [w for w in run.widgets("component_instance") if w.proto.component_name.endswith("map_explorer")]
        if explorer:
            args = json.loads(explorer[0].proto.json_args)
            # The component's state is what the server last sent it; after a report the browser
            # draws the view itself and the server's parts below the map follow it.
            channel = server_channel(run)
            return args["layer_name"], channel or int(args["state"]["channel"]), explorer[0]
        expect(run.count("vega_lite_chart") >= 1, "no heatmap on the Feature map page")
        titles = [line for line in run.texts().splitlines() if line.startswith("**Layer ")]
        expect(bool(titles), "no heatmap title")
        found = re.match(r"\*\*Layer \d+ \((.+)\), channel (\d+)", titles[0])
        expect(found is not None, f"an unexpected heatmap title {titles[0]!r}")
        return found.group(1), int(found.group(2)), None

    async def show_channel(run, channel: int):
        """The Feature map on ``channel`` (1-based), as the student would choose it."""
        _, shown_channel, explorer = shown_map(run)
        if shown_channel == channel:
            return run
        if explorer is None:
            box = next(w for w in run.widgets("number_input") if w.label.startswith("Channel"))
            client.set_value(box, double_value=channel)
            run = await step("change_channel", lambda: client.rerun(changed=box))
        else:
            args = json.loads(explorer.proto.json_args)
            client.set_value(explorer, json_value=json.dumps({**args["state"], "channel": channel}))
            run = await step("report_view", lambda: client.rerun(changed=explorer))
        expect(shown_map(run)[1] == channel, f"channel {channel} not shown")
        return run

    async def large_upload(run) -> None:
        assert heavy is not None and heavy.upload is not None
        name, data, refused = heavy.upload
        uploader = run.widget("file_uploader")
        run = await step("upload_large", lambda: client.upload(uploader, name, data, "image/jpeg"))
        if refused:
            alerts = run.alerts()
            expect(any(refused in alert for alert in alerts), f"{name} was not refused as expected: {alerts[:1]!r}")
        else:
            expect(sidebar_caption(run).startswith(name), f"{name} is not current: {sidebar_caption(run)!r}")

    async def heavy_views(channels: int) -> None:
        """The Model page's occlusion, saliency and Grad-CAM, then one channel's optimised picture."""
        run = await step("open_model_page", lambda: client.rerun(page="model"))
        button = run.widget("button", "Compute the occlusion map (a few seconds)")
        run = await step("occlusion", lambda: client.rerun(trigger=button))
        expect("when each area is covered" in run.texts(), "no occlusion map after its button")
        button = run.widget("button", "Compute saliency and Grad-CAM (about a second)")
        run = await step("saliency_gradcam", lambda: client.rerun(trigger=button))
        shown = run.image_captions()
        expect(
            any(c.startswith("Saliency of") for c in shown) and any(c.startswith("Grad-CAM of") for c in shown),
            "no saliency or Grad-CAM picture after their button",
        )
        run = await step("open_feature_map", lambda: client.rerun(page="feature_map"))
        channel = 1 + session % channels  # the heavy students' channels differ: each computes its own
        run = await show_channel(run, channel)
        optimise = run.widgets("button", "Optimise a picture for channel")
        if optimise:  # none: someone already computed this channel's picture, which is shown
            run = await step("featurevis_channel", lambda: client.rerun(trigger=optimise[0]))
        expect(
            any(c.startswith(f"Channel {channel}:") for c in run.image_captions()),
            f"no optimised picture of channel {channel}",
        )

    async def scan() -> None:
        run = await step("open_classes", lambda: client.rerun(page="classes"))
        start = run.widgets("button", "Scan the")
        if start:  # none: the split was scanned in an earlier wave
            client.timeout = 3 * timeout_s  # the whole split, while the class goes on clicking
            try:
                run = await step("scan", lambda: client.rerun(trigger=start[0]))
            finally:
                client.timeout = timeout_s
        expect("scanned photos of the" in run.texts(), "the scan's results are not shown")

    try:
        run = await step("open", client.open)
        looks = run.widgets("button", "Look inside")
        expect(len(looks) >= 20, f"the gallery shows {len(looks)} photos, not 20")
        expect("right; the ones it gets wrong are marked" in run.texts(), "the gallery's verdict line is missing")
        before = sidebar_caption(run)
        run = await step("pick_gallery", lambda: client.rerun(trigger=looks[1 + session % 19]))
        now = sidebar_caption(run)
        expect(now != before and "(test)" in now, f"the gallery photo did not become current: {now!r}")

        filename = f"student-{wave}-{session}.png"
        photo = student_photo(session + 1000 * wave)

        # The gallery draws only its open tab: open the uploader's first, as a click does.
        tabs, labels = run.tabs()
        client.set_value(tabs, string_value=next(label for label in labels if "Your photo" in label))
        run = await step("open_upload_tab", lambda: client.rerun(changed=tabs))
        uploader = run.widget("file_uploader")
        run = await step("upload", lambda: client.upload(uploader, filename, photo, "image/png"))
        expect(sidebar_caption(run).startswith(filename), f"the upload is not current: {sidebar_caption(run)!r}")
        if heavy is not None and heavy.upload is not None:
            await large_upload(run)
            result.heavy_done = time.monotonic()

        for round_, (label, channels, layer_name) in enumerate(plan):
            run = await step("open_feature_map", lambda: client.rerun(page="feature_map"))
            shown_layer, shown_channel, explorer = shown_map(run)
            if explorer is None:
                box = next(w for w in run.widgets("number_input") if w.label.startswith("Channel"))
                channel = shown_channel + 1 if shown_channel + 1 <= box.proto.max else 1
                client.set_value(box, double_value=channel)
                run = await step("change_channel", lambda box=box: client.rerun(changed=box))
            else:
                # The browser draws the new channel itself; what reaches the server is the
                # settled view it reports (then the server draws the strip and the rest).
                args = json.loads(explorer.proto.json_args)
                channel = shown_channel + 1 if shown_channel + 1 <= args["shape"][0] else 1
                client.set_value(explorer, json_value=json.dumps({**args["state"], "channel": channel}))
                run = await step("report_view", lambda explorer=explorer: client.rerun(changed=explorer))
            expect(shown_map(run)[1] == channel, f"channel {channel} not shown")
            layers = run.widget("selectbox", "Layer")
            option = next(o for o in layers.proto.options if o.startswith(label))
            client.set_value(layers, string_value=option)
            run = await step("change_layer", lambda layers=layers: client.rerun(changed=layers))
            expect(shown_map(run)[0] == layer_name, f"layer {layer_name} not shown")
            run = await step("open_grid", lambda: client.rerun(page="layer_grid"))
            tiles = tile_count(run)
            expect(tiles == channels, f"the grid shows {tiles} tiles, not {channels}")
            if round_ == 0 and heavy is not None and (heavy.views or heavy.scan):
                if heavy.views:
                    await heavy_views(channels)
                if heavy.scan:
                    await scan()
                result.heavy_done = time.monotonic()
    except (AppError, TimeoutError, OSError, StopIteration) as error:
        result.errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}")
    finally:
        await client.close()
    return result


def tile_count(run) -> int:
    """The tiles the browser would draw: the channels the browser-drawn grid is sent to show
    (its range of the layer's maps), or the rows of the server-drawn grid chart's ``tiles``."""
    import pyarrow as pa

    for element, _ in run.elements:
        if element.WhichOneof("type") == "component_instance" and element.component_instance.component_name.endswith(
            "map_explorer"
        ):
            args = json.loads(element.component_instance.json_args)
            if args.get("mode") == "grid":
                first, last = sorted((args["state"]["first"], args["state"]["last"]))
                return min(last, args["shape"][0]) - first + 1
    for element, _ in run.elements:
        if element.WhichOneof("type") != "vega_lite_chart":
            continue
        for dataset in element.vega_lite_chart.datasets:
            if dataset.name == "tiles":
                return pa.ipc.open_stream(dataset.data.data).read_all().num_rows
    return 0


# -- probe browsers ----------------------------------------------------------------------------------------


async def browser_probe(
    browser, server: Server, wave: int, index: int, stop: asyncio.Event, timeout_s: float
) -> Result:
    """A real Chromium page on the Feature map, changing channel, colours and scale while the
    wave runs, timing each change as the student sees it."""
    result = Result(server.name, wave, 1000 + index)
    context = await new_context(browser, timeout_s)
    try:
        page = await context.new_page()
        await page.goto(server.url + "/feature_map", timeout=timeout_s * 1000)
        await page.get_by_role("heading", name="Feature map").wait_for(timeout=timeout_s * 1000)
        frame_element = page.locator(EXPLORER_FRAME)
        browser_drawn = False
        for _ in range(int(timeout_s * 5)):
            if await frame_element.count():
                browser_drawn = True
                break
            if await page.locator('[data-testid="stVegaLiteChart"]').count():
                break
            await asyncio.sleep(0.2)
        if browser_drawn:
            body = page.frame_locator(EXPLORER_FRAME).locator("body")
            await body.locator("#map").wait_for(timeout=timeout_s * 1000)
            while await body.get_attribute("data-draws") in (None, "0"):
                await asyncio.sleep(0.1)
        kinds = ("channel", "colours", "scale")
        turn = 0
        while not stop.is_set():
            what = kinds[turn % 3]
            turn += 1
            if browser_drawn:
                ms = await body.evaluate(EXPLORER_CHANGE_JS, what)
                if ms < 0:
                    result.errors.append(f"probe {index}: the {what} change drew nothing")
                    break
                seconds = ms / 1000
            else:
                seconds = await server_view_change(page, what, turn, timeout_s)
            result.latencies.setdefault(f"browser_change_{what}", []).append(seconds)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), BROWSER_PROBE_PAUSE_S)
    except Exception as error:  # a probe's failure is reported, not raised: the wave goes on
        result.errors.append(f"probe {index}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
    finally:
        await context.close()
    return result


async def server_view_change(page, what: str, turn: int, timeout_s: float) -> float:
    """The same change on the server-drawn view: click, then wait for the rerun's result."""
    started = time.perf_counter()
    if what == "channel":
        up = (turn // 3) % 2 == 0
        box = page.get_by_label(re.compile(r"Channel \(1 to \d+\)"))
        before = int(await box.input_value())
        test_id = "stNumberInputStepUp" if up or before == 1 else "stNumberInputStepDown"
        await page.locator(f'[data-testid="{test_id}"]').first.click()
        after = before + 1 if test_id == "stNumberInputStepUp" else before - 1
        await page.get_by_text(re.compile(rf"Layer \d+ \(.+\), channel {after}$")).first.wait_for(
            timeout=timeout_s * 1000
        )
    else:
        group = "Colours" if what == "colours" else "Scale"
        labels = (
            ("Viridis, continuous", "Blues, 4 levels (the lecture's)")
            if what == "colours"
            else ("per layer (all channels, this image)", "per map (its own min to max)")
        )
        radio = page.get_by_role("radiogroup", name=group)
        target = labels[0] if not await radio.get_by_label(labels[0]).is_checked() else labels[1]
        caption = page.get_by_text(re.compile("^Colours span|^Constant map")).first
        before = await caption.inner_text()
        await radio.get_by_text(target, exact=True).click()
        deadline = time.perf_counter() + timeout_s
        while await caption.inner_text() == before and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
    return time.perf_counter() - started


# -- waves -------------------------------------------------------------------------------------------------


async def run_wave(
    browser, server: Server, wave: int, count: int, args, plans, probe_browser=None, heavy=None
) -> list[Result]:
    """One wave of ``count`` students; ``browser`` is None with ``--client protocol``, where
    ``probe_browser`` (with ``--browsers N``) runs N probe pages while the wave lasts and
    ``heavy`` (with ``--heavy``) is each session's :class:`HeavyPlan`."""
    per_context = max(1, args.sessions_per_context)
    contexts = (
        [] if browser is None else [await new_context(browser, args.timeout) for _ in range(0, count, per_context)]
    )
    stop_probes = asyncio.Event()
    probes = (
        [
            asyncio.create_task(browser_probe(probe_browser, server, wave, k, stop_probes, args.timeout))
            for k in range(args.browsers)
        ]
        if probe_browser is not None and wave > 0
        else []
    )

    async def one(session: int) -> Result:
        await asyncio.sleep(random.Random(session).uniform(0, args.ramp))
        if browser is None:
            return await protocol_student(
                server, wave, session, args.timeout, plans[session], heavy[session] if heavy else None
            )
        context = contexts[session // per_context]
        return await student(context, server, wave, session, args.timeout, plans[session], args.screenshots)

    tasks = [asyncio.create_task(one(session)) for session in range(count)]
    done, pending = await asyncio.wait(tasks, timeout=args.wave_timeout)
    stop_probes.set()
    probe_results = [await probe for probe in probes]
    for context in contexts:
        await context.close()
    results = [task.result() for task in done] + probe_results
    for task in pending:
        task.cancel()
        results.append(Result(server.name, wave, -1, errors=[f"wave timeout after {args.wave_timeout} s"]))
    return results


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarise(results: list[Result]) -> dict:
    by_step: dict[str, list[float]] = {}
    for result in results:
        for name, values in result.latencies.items():
            by_step.setdefault(name, []).extend(values)
    return {
        "sessions": len(results),
        "errors": [error for result in results for error in result.errors],
        "raw": by_step,
        "interactions": sum(len(values) for values in by_step.values()),
        "steps": {
            name: {
                "count": len(by_step[name]),
                "p50": percentile(by_step[name], 50),
                "p95": percentile(by_step[name], 95),
                "max": max(by_step[name]),
            }
            for name in INTERACTIONS
            if name in by_step
        },
    }


def own_cpu() -> float:
    """This process's CPU seconds (the protocol client's work; the browser's is in :class:`Sampler`)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


def rss_summary(server: Server, start: float, end: float, settle_end: float) -> dict:
    during = [rss for t, rss, _ in server.samples if start <= t <= end]
    after = [rss for t, rss, _ in server.samples if end < t <= settle_end]
    before = [rss for t, rss, _ in server.samples if t < start]
    cpu = [c for t, _, c in server.samples if start <= t <= end]
    return {
        "start_mb": before[-1] if before else (during[0] if during else float("nan")),
        "peak_mb": max(during) if during else float("nan"),
        "end_mb": after[-1] if after else (during[-1] if during else float("nan")),
        "server_cpu_s": (cpu[-1] - cpu[0]) if len(cpu) > 1 else float("nan"),
        "wall_s": end - start,
    }


def heavy_memory(server: Server, results: list[Result], started: float, settle_end: float) -> dict | None:
    """With ``--heavy``: when the wave's last heavy action ended (seconds since the start), the
    resident memory then, at the first sample :data:`AFTER_S` seconds later (``None`` when the
    sampling ended before), and the most after that."""
    ends = [result.heavy_done for result in results if result.heavy_done is not None]
    if not ends:
        return None
    end = max(ends) - started
    at_end = [rss for t, rss, _ in server.samples if t >= end]
    later = [(t, rss) for t, rss, _ in server.samples if end + AFTER_S <= t <= settle_end]
    return {
        "end_s": end,
        "rss_at_end_mb": at_end[0] if at_end else float("nan"),
        "rss_after_mb": later[0][1] if later else None,
        "max_after_mb": max(rss for _, rss in later) if later else None,
    }


async def main_async(args) -> dict:
    from playwright.async_api import async_playwright

    work = Path(tempfile.mkdtemp(prefix="featapp-load-"))
    servers: list[Server] = []
    started = time.monotonic()
    report: dict = {"waves": [], "machine": machine(), "args": vars(args) | {"out": str(args.out)}}
    # The large pictures are made before any server starts (the largest takes a while).
    heavy = heavy_plans(max(args.sessions), args.heavy_every, args.large_every) if args.heavy else None
    if heavy:
        report["heavy_plans"] = [
            {"session": i, "views": h.views, "scan": h.scan, "upload": h.upload[0] if h.upload else None,
             "upload_mb": len(h.upload[1]) / 1e6 if h.upload else None, "refused": bool(h.upload and h.upload[2])}
            for i, h in enumerate(heavy)
        ]  # fmt: skip
    try:
        if args.url:
            servers.append(Server("given", args.url.rstrip("/"), pid=args.server_pid))
        for spec in args.app or [f"current={REPO_ROOT}"]:
            if args.url:
                break
            name, _, rest = spec.partition("=")
            servers.append(start_app(name, rest, work))
        report["servers"] = {s.name: {"url": s.url, "log": str(s.log_path)} for s in servers}
        sampler = Sampler(servers, started)
        sampler.start()
        plans = layer_plans(args.rounds, max(args.sessions))

        async def run_waves(browser, probe_browser=None) -> None:
            for server in servers:  # warm-up: one session per server, not measured
                warm = await run_wave(browser, server, 0, 1, args, plans)
                report["warmup_errors"] = [e for r in warm for e in r.errors]
            for wave, count in enumerate(args.sessions, start=1):
                for server in servers if wave % 2 else list(reversed(servers)):
                    begin = time.monotonic() - started
                    server.marks.append((begin, f"{count} sessions"))
                    client_before = sampler.client_cpu + own_cpu()
                    results = await run_wave(browser, server, wave, count, args, plans, probe_browser, heavy)
                    end = time.monotonic() - started
                    client_cpu = sampler.client_cpu + own_cpu() - client_before
                    await asyncio.sleep(args.settle)
                    settle_end = time.monotonic() - started
                    summary = summarise(results)
                    summary.update(
                        server=server.name,
                        wave=wave,
                        count=count,
                        rss=rss_summary(server, begin, end, settle_end),
                        client_cpu_s=client_cpu,
                        window=(begin, end, settle_end),
                        heavy=heavy_memory(server, results, started, settle_end),
                    )
                    report["waves"].append(summary)
                    print(format_wave(summary), flush=True)

        if args.client == "protocol":
            # Uploads and picture fetches run in threads; the default pool has 6 on 2 cores.
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=4 * MAX_SESSIONS))
            if args.browsers:
                async with async_playwright() as playwright:
                    probe_browser = await launch_chromium(playwright, NO_BACKGROUND_THROTTLING)
                    try:
                        await run_waves(None, probe_browser)
                    finally:
                        await probe_browser.close()
            else:
                await run_waves(None)
        else:
            async with async_playwright() as playwright:
                browser = await launch_chromium(playwright, NO_BACKGROUND_THROTTLING)
                try:
                    await run_waves(browser)
                finally:
                    await browser.close()
        sampler.stopped.set()
        sampler.join()
        report["samples"] = {s.name: s.samples for s in servers}
        report["marks"] = {s.name: s.marks for s in servers}
        for server in servers:
            if server.log_path:
                text = server.log_path.read_text(errors="replace")
                report.setdefault("server_log_problems", {})[server.name] = [
                    line for line in text.splitlines() if "Traceback" in line or "Error" in line or "Exception" in line
                ][:20]
    finally:
        for server in servers:
            stop_server(server)
    return report


def format_wave(summary: dict) -> str:
    rss = summary["rss"]
    parts = [
        f"[{summary['server']}] {summary['count']} sessions: errors {len(summary['errors'])}",
        f"RSS start {rss['start_mb']:.0f} / peak {rss['peak_mb']:.0f} / end {rss['end_mb']:.0f} MB",
        f"server CPU {rss['server_cpu_s']:.0f} s, client CPU {summary['client_cpu_s']:.0f} s in {rss['wall_s']:.0f} s",
    ]
    for name, step in summary["steps"].items():
        parts.append(f"  {name:<17} n={step['count']:<4} p50 {step['p50']:.2f} s  p95 {step['p95']:.2f} s")
    for error in summary["errors"][:5]:
        parts.append(f"  error: {error}")
    for what, target, measured, met in heavy_targets(summary):
        parts.append(f"  target {what}: {target}; measured {measured}: {'met' if met else 'NOT MET'}")
    return "\n".join(parts)


def heavy_targets(summary: dict) -> list[tuple[str, str, str, bool]]:
    """Issue 28's targets for a heavy wave (none for a light one): (what, target, measured, met)."""
    heavy = summary.get("heavy")
    if heavy is None:
        return []
    peak = summary["rss"]["peak_mb"]
    after = heavy["max_after_mb"]
    rows = [
        ("errors", "0", str(len(summary["errors"])), not summary["errors"]),
        ("resident memory at its peak", f"at most {PEAK_TARGET_MB:,.0f} MB", f"{peak:,.0f} MB", peak <= PEAK_TARGET_MB),
        (
            f"resident memory from {AFTER_S:.0f} s after the last heavy action",
            f"under {AFTER_TARGET_MB:,.0f} MB",
            "not sampled" if after is None else f"at most {after:,.0f} MB",
            after is not None and after < AFTER_TARGET_MB,
        ),
    ]
    for name, limit in LIGHT_TARGETS_S.items():
        step = summary["steps"].get(name)
        p95 = step["p95"] if step else float("nan")
        rows.append((f"{name} p95", f"at most {limit:g} s", f"{p95:.2f} s", step is not None and p95 <= limit))
    return rows


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
    }


def _merged(report: dict) -> dict[tuple[int, str], dict[str, list[float]]]:
    """Latencies per (sessions, server) and interaction, repeated waves together."""
    merged: dict[tuple[int, str], dict[str, list[float]]] = {}
    for wave in report["waves"]:
        steps = merged.setdefault((wave["count"], wave["server"]), {})
        for name, values in wave["raw"].items():
            steps.setdefault(name, []).extend(values)
    return merged


def markdown(report: dict) -> str:
    servers = list(dict.fromkeys(wave["server"] for wave in report["waves"]))
    counts = list(dict.fromkeys(wave["count"] for wave in report["waves"]))
    merged = _merged(report)
    protocol = report["args"].get("client") == "protocol"
    machine_line = (
        f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['memory_gb']} GB, Python "
        f"{report['machine']['python']}; load average at start "
        f"{', '.join(f'{v:.1f}' for v in report['machine']['load_average_at_start'])}. "
    )
    if protocol:
        how = [
            "# Load test: concurrent sessions on Streamlit's websocket protocol against one `streamlit run`",
            "",
            machine_line + "Each student is a client of Streamlit's own websocket protocol "
            "(`bench/streamlit_client.py`): it sends what the browser sends, uploads through the same HTTP "
            "route, and fetches the page, its scripts and every new picture, but draws nothing. So the "
            "server does a classroom's work while the load generator uses little of the 2 cores (its CPU "
            "is in the *client CPU* column); in a classroom each student's browser runs on their own machine.",
            "",
            "Each session: open, pick_gallery, upload, open_feature_map, a channel change, change_layer, "
            "open_grid; then feature map, channel, layer and grid again "
            f"({report['args']['rounds']} rounds in all). Latency: from the request to the run's last "
            "message, plus fetching the run's new pictures; each step checks the result (the chosen photo "
            "or upload is current, the map shows the chosen layer and channel, the grid has one tile "
            f"per channel). Sessions start within {report['args']['ramp']:.0f} s of each other.",
            "",
            "Where the Feature map is drawn on the server (`FEATAPP_MAP_VIEW=server`) the channel change is "
            "a rerun (`change_channel`). Where it is drawn in the browser (the default) the browser draws the "
            "new channel itself and then reports the settled view, one rerun for the strip and the rest "
            "(`report_view`)."
            + (
                f" {report['args']['browsers']} real Chromium pages on the Feature map changed channel, colours "
                "and scale in turn during each wave, timing what a student sees (`browser_*`: from the click "
                "to the next painted frame in the browser view; to the rerun's result shown in the server "
                "view); they run on the same 2 cores as the server."
                if report["args"].get("browsers")
                else ""
            ),
        ]
    else:
        how = [
            "# Load test: concurrent browser sessions against one `streamlit run`",
            "",
            machine_line + "The browser (one Chromium, one context per session) runs on the same machine as "
            "the server, so its CPU time is listed next to the server's: on 2 cores the two compete, and the "
            "latencies include the browser's own work (drawing, and a fresh page load per context).",
            "",
            f"Each session: {', '.join(INTERACTIONS)}; then feature map, channel, layer and grid again "
            f"({report['args']['rounds']} rounds in all). Latency: from the action to the updated element "
            "visible in the page (for a heatmap: its last drawing call, once the picture differs from before "
            f"and nothing was drawn for {QUIET_MS} ms). Sessions start within "
            f"{report['args']['ramp']:.0f} s of each other.",
        ]
    lines = [
        *how,
        "",
        "## Latency per interaction (seconds)",
        "",
        "| sessions | interaction | n | " + " | ".join(f"{s} p50 | {s} p95" for s in servers) + " |",
        "|---|---|---|" + "---|---|" * len(servers),
    ]
    for count in counts:
        for name in INTERACTIONS:
            cells, n = [], 0
            for server in servers:
                values = merged.get((count, server), {}).get(name, [])
                n = max(n, len(values))
                cells += [f"{percentile(values, 50):.2f}", f"{percentile(values, 95):.2f}"] if values else ["-", "-"]
            if n:
                lines.append(f"| {count} | {name} | {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Errors, memory and CPU per wave",
        "",
        "| server | sessions | errors | RSS start (MB) | RSS peak (MB) | RSS after settling (MB) | server CPU (s) "
        f"| server CPU per interaction (ms) | {'client' if protocol else 'browser'} CPU (s) | wave wall time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for wave in report["waves"]:
        rss = wave["rss"]
        per = 1000 * rss["server_cpu_s"] / max(wave["interactions"], 1)
        lines.append(
            f"| {wave['server']} | {wave['count']} | {len(wave['errors'])} | {rss['start_mb']:.0f} | "
            f"{rss['peak_mb']:.0f} | {rss['end_mb']:.0f} | {rss['server_cpu_s']:.1f} | {per:.0f} | "
            f"{wave['client_cpu_s']:.0f} | {rss['wall_s']:.0f} |"
        )
    lines.append(
        f"\nRSS after settling: the last sample, {report['args']['settle']:.0f} s after the wave's sessions closed "
        "(Streamlit keeps a closed session for `server.disconnectedSessionTTL`, 120 s by default)."
    )
    if len(servers) > 1:
        base = servers[0]
        lines += [
            "",
            f"## Side by side: each server against {base}",
            "",
            "| sessions | server | server CPU per interaction (ms) | ratio | median of the p50 ratios over interactions |",
            "|---|---|---|---|---|",
        ]
        for count in counts:
            cpu = {}
            for server in servers:
                waves = [w for w in report["waves"] if w["server"] == server and w["count"] == count]
                cpu[server] = (
                    1000 * sum(w["rss"]["server_cpu_s"] for w in waves) / max(sum(w["interactions"] for w in waves), 1)
                )
            for server in servers:
                ratios = [
                    percentile(merged[(count, server)][name], 50) / percentile(merged[(count, base)][name], 50)
                    for name in INTERACTIONS
                    if merged.get((count, server), {}).get(name) and merged.get((count, base), {}).get(name)
                ]
                lines.append(
                    f"| {count} | {server} | {cpu[server]:.0f} | {cpu[server] / cpu[base]:.2f} | "
                    f"{np.median(ratios):.2f} |"
                )
    if any(wave.get("heavy") for wave in report["waves"]):
        lines += heavy_markdown(report)
    errors = [(wave["server"], wave["count"], error) for wave in report["waves"] for error in wave["errors"]]
    if errors:
        lines += ["", "Errors:", ""] + [f"- [{s}] {n} sessions: {e}" for s, n, e in errors[:30]]
    problems = {name: found for name, found in report.get("server_log_problems", {}).items() if found}
    if problems:
        lines += ["", "Server log lines mentioning errors:", ""]
        for name, found in problems.items():
            lines += [f"- [{name}] `{line[:200]}`" for line in found]
    return "\n".join(lines) + "\n"


def heavy_markdown(report: dict) -> list[str]:
    """The heavy class's section: who did what, the memory after the heavy work, the targets."""
    plans = report.get("heavy_plans", [])
    args = report["args"]
    views = [p["session"] for p in plans if p["views"]]
    uploads = [p for p in plans if p["upload"]]
    lines = [
        "",
        "## The heavy class (`--heavy`)",
        "",
        f"Besides the steps above, {len(views)} of {len(plans)} students (every {args['heavy_every']}th) opened "
        "the Model page after their first round and computed the occlusion map (`occlusion`), then saliency and "
        "Grad-CAM (`saliency_gradcam`), then on the Feature map chose a channel of their own and optimised its "
        'picture (`featurevis_channel`, "what this channel looks for"); the first of them then opened Cats vs dogs '
        "and scanned the split (`open_classes`, `scan`). After their first upload, "
        f"{len(uploads)} students uploaded a large JPEG made by the script (`upload_large`): "
        + ", ".join(
            f"{p['upload'].split('-', 1)[1]} ({p['upload_mb']:.1f} MB, {'refused as expected' if p['refused'] else 'shown'})"
            for p in uploads
        )
        + ". Each heavy step checks what the student sees (the occlusion map, both pictures, the channel's "
        "picture, the scanned split's results, the upload shown or its refusal).",
        "",
        "| server | sessions | last heavy action (s since start) | RSS then (MB) | RSS peak of the wave (MB) "
        f"| RSS {AFTER_S:.0f} s later (MB) | most RSS from then on (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for wave in report["waves"]:
        heavy = wave.get("heavy")
        if not heavy:
            continue
        after = "-" if heavy["rss_after_mb"] is None else f"{heavy['rss_after_mb']:,.0f}"
        most = "-" if heavy["max_after_mb"] is None else f"{heavy['max_after_mb']:,.0f}"
        lines.append(
            f"| {wave['server']} | {wave['count']} | {heavy['end_s']:.0f} | {heavy['rss_at_end_mb']:,.0f} | "
            f"{wave['rss']['peak_mb']:,.0f} | {after} | {most} |"
        )
    lines += [
        "",
        "### Targets (issue 28)",
        "",
        "| server | sessions | target | measured | met |",
        "|---|---|---|---|---|",
    ]
    for wave in report["waves"]:
        for what, target, measured, met in heavy_targets(wave):
            lines.append(
                f"| {wave['server']} | {wave['count']} | {what}: {target} | {measured} | {'yes' if met else '**no**'} |"
            )
    return lines


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    for name, samples in report["samples"].items():
        if samples:
            times, rss, _ = zip(*samples, strict=True)
            ax.plot(times, rss, label=f"server RSS ({name})")
    colours = {}
    for wave in report["waves"]:
        begin, end, _ = wave["window"]
        colour = colours.setdefault(wave["server"], f"C{len(colours)}")
        ax.axvspan(begin, end, alpha=0.12, color=colour)
        ax.text(begin, 0.02, str(wave["count"]), transform=ax.get_xaxis_transform(), fontsize=8)
        heavy = wave.get("heavy")
        if heavy:
            ax.axvline(heavy["end_s"], color=colour, linestyle="--", linewidth=1)
            ax.axvline(heavy["end_s"] + AFTER_S, color=colour, linestyle=":", linewidth=1)
    if any(wave.get("heavy") for wave in report["waves"]):
        ax.axhline(PEAK_TARGET_MB, color="firebrick", linewidth=0.8, label=f"peak target ({PEAK_TARGET_MB:,.0f} MB)")
        ax.axhline(AFTER_TARGET_MB, color="darkorange", linewidth=0.8, label=f"target {AFTER_S:.0f} s after (dotted)")
        ax.plot([], [], color="grey", linestyle="--", label="last heavy action")
    ax.set_ylim(bottom=0)
    ax.set(
        xlabel="seconds since start",
        ylabel="RSS (MB)",
        title="Server memory (shaded: a wave of sessions; its size below)",
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1], help="sessions per wave, e.g. 1 10 25 50")
    parser.add_argument("--rounds", type=int, default=2, help="feature map / channel / layer / grid rounds per session")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one interaction may take")
    parser.add_argument("--wave-timeout", type=float, default=1200.0, help="seconds one wave may take")
    parser.add_argument(
        "--ramp", type=float, default=5.0, help="sessions start at random times within this many seconds"
    )
    parser.add_argument(
        "--settle", type=float, default=30.0, help="seconds of RSS sampling after a wave's sessions closed"
    )
    parser.add_argument(
        "--sessions-per-context",
        type=int,
        default=1,
        help="students sharing one browser context, each in a tab of its own (default 1: a context each, as "
        "separate browsers; more share the page's code cache, which saves browser CPU on a small machine)",
    )
    parser.add_argument(
        "--client",
        choices=("browser", "protocol"),
        default="browser",
        help="browser: a Chromium context per student (draws everything, on this machine's cores too); "
        "protocol: Streamlit's websocket protocol, as the browser speaks it, without drawing "
        "(streamlit_client.py)",
    )
    parser.add_argument(
        "--browsers",
        type=int,
        default=0,
        help="with --client protocol: this many real Chromium pages change channel, colours and scale on the "
        "Feature map while each wave runs, timing what a student sees (browser_* rows)",
    )
    parser.add_argument(
        "--heavy",
        action="store_true",
        help="with --client protocol: a heavy class (issue 28): every --heavy-every-th student also runs "
        "occlusion, saliency and Grad-CAM and one channel's optimised picture after the first round, the "
        "first one also a scan, and every --large-every-th (from the third) uploads a large or progressive "
        "JPEG made here; reports the memory after the heavy work and the targets",
    )
    parser.add_argument(
        "--heavy-every", type=int, default=5, help="with --heavy: one student in this many runs the heavy views"
    )
    parser.add_argument(
        "--large-every", type=int, default=10, help="with --heavy: one student in this many uploads a large JPEG"
    )
    parser.add_argument("--url", help="an app already running (on 127.0.0.1) instead of starting one")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's process id, to sample its RSS")
    parser.add_argument(
        "--app",
        action="append",
        metavar="NAME=DIR[:FLAGS]",
        help="start a server from DIR, with FLAGS: comma-separated streamlit options (--x.y=z), environment "
        "variables (NAME=VALUE) and client-http=per-request (its students open a connection per HTTP request); "
        "repeatable",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/load.md")
    parser.add_argument("--screenshots", type=Path, help="save a screenshot of every session that fails here")
    parser.add_argument("--plot", type=Path, default=None, help="RSS plot (default: next to --out, load_rss.png)")
    args = parser.parse_args(argv)
    if max(args.sessions) > MAX_SESSIONS:
        parser.error(f"at most {MAX_SESSIONS} sessions per wave")
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("--url must be on 127.0.0.1 (this script never loads another machine)")
    if args.heavy and args.client != "protocol":
        parser.error("--heavy needs --client protocol")
    if args.heavy_every < 1 or args.large_every < 1:
        parser.error("--heavy-every and --large-every must be at least 1")
    if args.heavy:
        args.settle = max(args.settle, AFTER_S + 15)  # the memory a minute after the heavy work is sampled
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    report = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(report))
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    plot(report, args.plot or args.out.with_name(f"{args.out.stem}_rss.png"))
    print(f"Wrote {args.out}, {args.out.with_suffix('.json')} and the RSS plot.")
    errors = sum(len(w["errors"]) for w in report["waves"])
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
