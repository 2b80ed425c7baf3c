"""The load test's protocol client (bench/streamlit_client.py) against a real ``streamlit run``:
one student's whole visit, checked step by step, with no errors. Keeps the benchmark from
rotting as the app changes; the timings themselves are in BENCHMARKS.md, not tested."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.browsing import server_env, streamlit_server

STEPS = (
    "open",
    "pick_gallery",
    "open_upload_tab",
    "upload",
    "open_feature_map",
    "CHANNEL",
    "change_layer",
    "open_grid",
)


@pytest.mark.parametrize(("map_view", "channel_step"), [("browser", "report_view"), ("server", "change_channel")])
def test_one_protocol_student_visits_every_page_without_errors(tmp_path, data_dir, map_view, channel_step):
    from bench.load_test import INTERACTIONS, Server, layer_plans, protocol_student

    env = server_env(
        FEATAPP_DATA_DIR=str(data_dir), FEATAPP_CACHE_DIR=str(tmp_path / "cache"), FEATAPP_MAP_VIEW=map_view
    )
    with streamlit_server(tmp_path / "server.log", env) as url:
        result = asyncio.run(protocol_student(Server("test", url), 1, 0, 120, layer_plans(2, 1)[0]))
    assert result.errors == []
    expected = tuple(channel_step if step == "CHANNEL" else step for step in STEPS)
    assert tuple(result.latencies) == expected  # every step ran, in order
    assert set(expected) <= set(INTERACTIONS)
    assert len(result.latencies[channel_step]) == 2  # two rounds


def test_the_protocol_client_resolves_references_to_messages_it_has(tmp_path, data_dir):
    # The browser view's component arguments (a layer's maps, over 10 kB) are sent once; a
    # rerun that sends them unchanged sends a reference, which the client must resolve.
    from bench.streamlit_client import AppClient

    async def visit(url: str) -> tuple[int, int]:
        client = AppClient(url, timeout=120)
        try:
            await client.open()
            first = await client.rerun(page="feature_map")
            cached = len(client.cached)
            again = await client.rerun(page="feature_map")
            assert [e.WhichOneof("type") for e, _ in again.elements] == [
                e.WhichOneof("type") for e, _ in first.elements
            ]
            assert client.references >= 1  # the component came as a reference the second time
            return cached, again.count("component_instance")
        finally:
            await client.close()

    env = server_env(FEATAPP_DATA_DIR=str(data_dir), FEATAPP_CACHE_DIR=str(tmp_path / "cache"))
    with streamlit_server(tmp_path / "server.log", env) as url:
        cached, components = asyncio.run(visit(url))
    assert cached >= 1 and components == 1


def test_the_protocol_client_reports_an_exception_element(tmp_path):
    from bench.streamlit_client import AppClient, AppError

    app = tmp_path / "app"
    app.mkdir()
    (app / "streamlit_app.py").write_text("import streamlit as st\nst.title('x')\nraise RuntimeError('boom')\n")

    async def visit(url: str) -> None:
        client = AppClient(url, timeout=60)
        try:
            await client.open()
        finally:
            await client.close()

    with streamlit_server(tmp_path / "server.log", server_env(), app_dir=app) as url:
        try:
            asyncio.run(visit(url))
        except AppError as error:
            assert "RuntimeError" in str(error) and "boom" in str(error)
        else:
            raise AssertionError("the exception element was not reported")


def progressive_jpeg_declaring(width: int, height: int) -> bytes:
    """A small 4:4:4 progressive JPEG whose frame header declares ``width`` x ``height``: the
    app counts a progressive JPEG's coefficient buffers from that header and refuses it before
    decoding, as it does the 13,370 x 13,370 one the heavy load test uploads (which takes a
    while to make)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64)).save(out, "JPEG", progressive=True, quality=10, subsampling=0)
    data = bytearray(out.getvalue())
    at = data.find(b"\xff\xc2")
    data[at + 5 : at + 7] = height.to_bytes(2, "big")
    data[at + 7 : at + 9] = width.to_bytes(2, "big")
    return bytes(data)


def test_a_heavy_student_computes_every_heavy_view_and_a_large_upload_is_refused(tmp_path, dataset):
    """--heavy's student (bench/load_test.py) on a real server: occlusion, saliency and
    Grad-CAM, one channel's picture, a scan of the split, and the issue's progressive JPEG
    refused with its message; every step checks what the student sees."""
    from bench.load_test import (
        HEAVY_INTERACTIONS,
        INTERACTIONS,
        LARGE_PICTURES,
        HeavyPlan,
        Server,
        layer_plans,
        protocol_student,
    )

    root = tmp_path / "photos"  # 20 test photos: the gallery's, and a scan of seconds
    for item in dataset.sample("test", per_class=10, seed=2):
        target = root / "test" / item.class_name / item.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(item.path)
    refused = LARGE_PICTURES[0].refused
    assert refused is not None
    heavy = HeavyPlan(views=True, scan=True, upload=("huge.jpg", progressive_jpeg_declaring(13370, 13370), refused))
    env = server_env(FEATAPP_DATA_DIR=str(root), FEATAPP_CACHE_DIR=str(tmp_path / "cache"), FEATAPP_VIS_STEPS="4")
    with streamlit_server(tmp_path / "server.log", env) as url:
        result = asyncio.run(protocol_student(Server("test", url), 1, 0, 180, layer_plans(1, 1)[0], heavy))
    assert result.errors == []
    assert set(HEAVY_INTERACTIONS) <= set(result.latencies) <= set(INTERACTIONS)
    assert result.heavy_done is not None


def test_the_large_pictures_are_what_the_heavy_test_says(tmp_path):
    import io

    from PIL import Image

    from bench.load_test import LARGE_PICTURES, large_picture

    for picture in LARGE_PICTURES:
        if picture.size[0] * picture.size[1] > 20_000_000:
            continue  # the two largest take a while to make; their recipe is the same code
        data = large_picture(picture, session=3)
        assert len(data) < 10_000_000  # the app's upload limit
        image = Image.open(io.BytesIO(data))
        assert image.size == picture.size
        assert bool(image.info.get("progressive")) == picture.progressive
        assert large_picture(picture, session=4) != data  # a picture of each student's own


class _RecordingHandler:
    """Factory of an HTTP/1.1 handler that answers each path with itself and records the
    client port of every request; ``/drop`` answers, then closes the connection without
    saying so (as a server does to an idle kept-alive connection); ``/missing`` is a 404."""

    @staticmethod
    def make(ports: list[int]):
        from http.server import BaseHTTPRequestHandler

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's name)
                ports.append(self.client_address[1])
                body = self.path.encode()
                self.send_response(404 if self.path == "/missing" else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if self.path == "/drop":
                    self.close_connection = True

            def log_message(self, *args):
                pass

        return Handler


def test_the_client_speaks_http_over_six_kept_alive_connections_as_a_browser_does():
    import threading
    from http.server import ThreadingHTTPServer

    from bench.streamlit_client import BROWSER_CONNECTIONS, AppClient, AppError

    ports: list[int] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler.make(ports))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = AppClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=30)

    async def visit() -> list[bytes]:
        answers = await asyncio.gather(*(client._request("GET", f"{client.url}/file{i}", {}) for i in range(60)))
        return [body for _, _, body in answers]

    try:
        assert asyncio.run(visit()) == [f"/file{i}".encode() for i in range(60)]
        # 60 files over at most 6 connections, each used again and again (urllib made 60).
        assert client.http.opened <= BROWSER_CONNECTIONS and len(set(ports)) == client.http.opened
        # A connection the server closed while idle is replaced, and the request goes through.
        client.http.close()
        opened = client.http.opened
        asyncio.run(client._request("GET", f"{client.url}/drop", {}))
        assert asyncio.run(client._request("GET", f"{client.url}/after", {}))[2] == b"/after"
        assert client.http.opened == opened + 2
        with pytest.raises(AppError, match="answered 404"):
            asyncio.run(client._request("GET", f"{client.url}/missing", {}))
        with pytest.raises(AppError, match="not on the app's server"):
            asyncio.run(client._request("GET", "http://127.0.0.1:1/elsewhere", {}))
        # The client's way before, kept for side-by-side runs: a new connection for every request.
        per_request = AppClient(client.url, timeout=30, http="per-request")
        asyncio.run(per_request._request("GET", f"{client.url}/one", {}))
        asyncio.run(per_request._request("GET", f"{client.url}/two", {}))
        assert per_request.http.opened == 2
    finally:
        client.http.close()
        server.shutdown()
