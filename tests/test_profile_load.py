"""bench/profile_load.py's reading of py-spy's raw output: each part's share of the samples."""

from __future__ import annotations

from bench.profile_load import PARTS, shares


def test_each_part_counts_the_samples_with_one_of_its_frames_on_the_stack(tmp_path):
    raw = tmp_path / "py-spy.txt"
    raw.write_text(
        # 3 samples in the Gallery page, one of them decoding an upload
        "Thread 1 (idle);_run_script (streamlit/runtime/scriptrunner/script_runner.py:600);"
        "<module> (/repo/featapp/app/pages/gallery.py:10) 2\n"
        "Thread 1;_run_script (streamlit/runtime/scriptrunner/script_runner.py:600);"
        "<module> (/repo/featapp/app/pages/gallery.py:10);prepare_image (/repo/featapp/engine/images.py:560) 1\n"
        # 1 sample in uvicorn, answering a script from memory
        "Thread 2;run (uvicorn/server.py:60);__call__ (/repo/featapp/app/asset_server.py:190) 1\n"
        # a function of the same name in another file is not caches.explorer
        "Thread 1;explorer (/repo/featapp/app/pages/feature_map.py:40) 1\n"
        "not a sample line\n"
    )
    total, rows = shares(raw)
    share = dict(rows)
    assert total == 5
    assert [row for row, _ in rows] == [row for row, _, _ in PARTS]
    assert share["every page script (Streamlit's script thread)"] == 3 / 5
    assert share["  Gallery page"] == 3 / 5
    assert share["    an upload decoded (`prepare_image`)"] == 1 / 5
    assert share["the ASGI server: HTTP, websocket, files (uvicorn, Starlette)"] == 1 / 5
    assert share["  Streamlit's frontend files and the picture shelf (`featapp.app.asset_server`)"] == 1 / 5
    assert share["  Feature map page"] == 1 / 5
    assert share["    the explorer's payload for a new (photo, layer) (`caches.explorer`)"] == 0


def test_an_empty_profile_gives_zero_shares_not_a_division_error(tmp_path):
    raw = tmp_path / "py-spy.txt"
    raw.write_text("")
    total, rows = shares(raw)
    assert total == 0 and all(value == 0 for _, value in rows)
