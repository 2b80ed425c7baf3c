"""The server's head start: ``chrome.warm_up`` fills the caches the first visit reads,
and ``streamlit run streamlit_app.py`` runs it before any browser connects."""

from __future__ import annotations

import time
import urllib.request

import pytest
import streamlit as st

from featapp import settings
from featapp.app import caches, chrome, view
from featapp.engine.model import FeatureModel
from tests.helpers import browsing


def _refuse_inference(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the model ran again: warm_up did not leave this in the cache")

    monkeypatch.setattr(FeatureModel, "predict", refuse)
    monkeypatch.setattr(FeatureModel, "activations", refuse)


@pytest.fixture
def empty_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def test_after_warm_up_the_first_visit_runs_no_inference(app_env, empty_caches, monkeypatch, dataset):
    report = chrome.warm_up()
    assert "first gallery ready" in report and "(CPU)" in report, report

    _refuse_inference(monkeypatch)
    model = caches.model_at(settings.model_path())
    items, pixels = caches.gallery(model, caches.dataset(), "test", 0)
    assert [item.name for item in items] == [item.name for item in dataset.sample("test", per_class=10, seed=0)]
    assert caches.gallery_prediction(model, pixels).probabilities.shape == (20, 2)
    image = view.default_image(model, seed=0)
    assert image.title == f"{items[0].name} (test)"
    assert caches.prediction(model, image) is not None
    assert list(caches.activations(model, image)) == list(model.layer_names)


def test_the_gradient_model_is_loaded_before_a_student_asks(app_env, empty_caches, monkeypatch):
    # Its first load imports onnx, most of a second holding the GIL: not on a student's click.
    from featapp.app import sections
    from featapp.explain.gradients import Gradients

    # The committed model ships its atlas: every conv channel's picture is read at warm-up too.
    assert chrome.warm_up_gradients() == "featapp: gradient model loaded; 352 pictures from cats_dogs_small.atlas.zip"
    monkeypatch.setattr(caches, "load_gradients", lambda *a, **k: pytest.fail("loaded again"))
    model = caches.model_at(settings.model_path())
    assert isinstance(sections.gradients_or_message(model), Gradients)


def test_without_a_dataset_warm_up_prepares_the_first_probe(app_env, empty_caches, monkeypatch, tmp_path):
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(tmp_path / "no-photos-here"))
    report = chrome.warm_up()
    assert report == "featapp: model loaded (CPU); no dataset, so no gallery to prepare", report

    _refuse_inference(monkeypatch)
    model = caches.model_at(settings.model_path())
    image = view.default_image(model, seed=0)
    assert image.title == caches.probes(model)[0].title
    assert caches.prediction(model, image) is not None


def test_warm_up_without_a_model_reports_it_and_leaves_the_message_to_the_page(app_env, empty_caches, monkeypatch):
    missing = app_env / "missing.onnx"
    monkeypatch.setenv("FEATAPP_MODEL", str(missing))
    report = chrome.warm_up()
    assert report.startswith("featapp: no model to load before the first visitor") and str(missing) in report


def _wait_for_line(log, text: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text()
        if text in content:
            return content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in the server's log:\n{log.read_text()}")


def test_the_server_prepares_before_anyone_visits(tmp_path, data_dir):
    env = browsing.server_env(FEATAPP_DATA_DIR=str(data_dir), FEATAPP_CACHE_DIR=str(tmp_path / "cache"))
    log = tmp_path / "streamlit.log"
    with browsing.streamlit_server(log, env):
        # Only the health check has been asked for: no browser, no session, no script run.
        content = _wait_for_line(log, "first gallery ready")
        # Then, a few seconds later (a first visitor has their gallery by then), the gradient model.
        later = _wait_for_line(log, "featapp: gradient model loaded")
    assert "featapp: model loaded (CPU) and the first gallery ready (" in content
    assert later.index("first gallery ready") < later.index("gradient model loaded")
    assert "Traceback" not in content


def test_a_server_without_its_model_still_starts_and_says_why(tmp_path):
    missing = tmp_path / "missing.onnx"
    env = browsing.server_env(FEATAPP_MODEL=str(missing), FEATAPP_CACHE_DIR=str(tmp_path / "cache"))
    log = tmp_path / "streamlit.log"
    with browsing.streamlit_server(log, env) as url:
        _wait_for_line(log, "featapp: no model to load before the first visitor")
        with urllib.request.urlopen(url + "/_stcore/health", timeout=10) as response:
            assert response.status == 200
    assert "Traceback" not in log.read_text()
