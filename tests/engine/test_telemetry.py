"""ONNX Runtime's telemetry is off wherever featapp creates a session (issue 28): a school's
server sends nothing."""

from __future__ import annotations

import onnxruntime as ort

from featapp.engine.model import load_model, telemetry_off
from tests.helpers.appmodels import COMMITTED_MODEL


def test_every_model_load_turns_telemetry_off(monkeypatch):
    calls = []
    monkeypatch.setattr(ort, "disable_telemetry_events", lambda: calls.append(1), raising=False)
    load_model(COMMITTED_MODEL, provider="cpu")
    assert calls


def test_the_gradient_sessions_turn_it_off_too(monkeypatch):
    from featapp.explain.gradients import load_gradients

    model = load_model(COMMITTED_MODEL, provider="cpu")
    calls = []
    monkeypatch.setattr(ort, "disable_telemetry_events", lambda: calls.append(1), raising=False)
    grads = load_gradients(model)
    grads._session(model.layer_names[0])
    assert calls


def test_a_build_without_the_switch_still_loads(monkeypatch):
    monkeypatch.delattr(ort, "disable_telemetry_events", raising=False)
    assert telemetry_off() is False
    assert load_model(COMMITTED_MODEL, provider="cpu").layer_names


def test_the_real_switch_is_there_and_works():
    assert telemetry_off() is True


def test_the_converters_sessions_turn_it_off_too(monkeypatch):
    """convert export, gradients and the ONNX path check their output in ONNX Runtime sessions."""
    import ast
    from pathlib import Path

    from convert.common import cpu_session

    calls = []
    monkeypatch.setattr(ort, "disable_telemetry_events", lambda: calls.append(1), raising=False)
    assert cpu_session(Path(COMMITTED_MODEL).read_bytes()).get_inputs()
    assert calls
    # ... and every converter module makes its sessions through it.
    for path in (Path(__file__).resolve().parents[2] / "convert").glob("*.py"):
        calls_made = [
            node
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "InferenceSession"
        ]
        assert path.name == "common.py" or not calls_made, f"{path.name} makes its own ONNX Runtime session"
