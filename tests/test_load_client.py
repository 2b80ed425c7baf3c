"""The load test's protocol client (bench/streamlit_client.py) against a real ``streamlit run``:
one student's whole visit, checked step by step, with no errors. Keeps the benchmark from
rotting as the app changes; the timings themselves are in BENCHMARKS.md, not tested."""

from __future__ import annotations

import asyncio

from tests.browsing import server_env, streamlit_server


def test_one_protocol_student_visits_every_page_without_errors(tmp_path, data_dir):
    from bench.load_test import INTERACTIONS, Server, layer_plans, protocol_student

    env = server_env(FEATAPP_DATA_DIR=str(data_dir), FEATAPP_CACHE_DIR=str(tmp_path / "cache"))
    with streamlit_server(tmp_path / "server.log", env) as url:
        result = asyncio.run(protocol_student(Server("test", url), 1, 0, 120, layer_plans(2, 1)[0]))
    assert result.errors == []
    assert tuple(result.latencies) == INTERACTIONS  # every step ran, in order
    assert len(result.latencies["change_channel"]) == 2  # two rounds


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
