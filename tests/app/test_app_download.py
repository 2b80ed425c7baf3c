"""The Gallery's "Download the course photos" button, in a real Streamlit run (AppTest),
against a local 127.0.0.1 server serving a small archive made in the test."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from featapp.data.download import SOURCES
from tests.helpers.apptest import APP, TIMEOUT, assert_clean, captions, main_text
from tests.helpers.archives import FILTERED_COUNTS, ArchiveServer, filtered_members, zip_bytes


@pytest.fixture
def server():
    running = ArchiveServer()
    yield running
    running.close()


@pytest.fixture
def no_photos(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(tmp_path / "photos"))
    monkeypatch.setenv("FEATAPP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FEATAPP_SNAPSHOTS", str(tmp_path / "no-snapshots"))
    monkeypatch.setenv("FEATAPP_PROVIDER", "cpu")
    monkeypatch.delenv("FEATAPP_MODEL", raising=False)
    return tmp_path


def test_download_button_brings_the_gallery_without_a_restart(server, no_photos, monkeypatch):
    data = zip_bytes(filtered_members())
    url = server.serve("/cats_and_dogs_filtered.zip", data)
    monkeypatch.setitem(
        SOURCES, "tf-filtered", SOURCES["tf-filtered"].with_(url=url, size=len(data), counts=FILTERED_COUNTS)
    )
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert_clean(at)
    assert "No dataset folder" in main_text(at) and not captions(at)
    text = main_text(at)
    assert "Licence:" in text and url in text
    assert [b.label for b in at.button if b.key == "gallery.download"] == ["⬇️ Download the course photos"]
    at.button(key="gallery.download").click().run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert "10 photos downloaded into" in main_text(at)
    assert (no_photos / "photos" / "train" / "cats").is_dir()
    # the gallery is there in the same session: photos with the model's answers, and no download button
    assert len([c for c in captions(at) if "p(dog)" in c]) == 6  # the train split: 3 cats, 3 dogs
    assert not [b for b in at.button if b.key == "gallery.download"]


def test_download_failure_is_a_message_and_the_app_goes_on(server, no_photos, monkeypatch):
    data = zip_bytes(filtered_members())
    url = server.serve("/cats_and_dogs_filtered.zip", data)
    monkeypatch.setitem(SOURCES, "tf-filtered", SOURCES["tf-filtered"].with_(url=url, size=len(data) + 1))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.button(key="gallery.download").click().run()
    assert_clean(at)
    assert "could not be downloaded" in at.error[0].value and "not the expected" in at.error[0].value
    assert not (no_photos / "photos").exists()
    assert [b for b in at.button if b.key == "gallery.download"]  # one can try again


def test_a_destination_that_cannot_be_written_is_a_message(server, no_photos, monkeypatch):
    data = zip_bytes(filtered_members())
    url = server.serve("/cats_and_dogs_filtered.zip", data)
    monkeypatch.setitem(
        SOURCES, "tf-filtered", SOURCES["tf-filtered"].with_(url=url, size=len(data), counts=FILTERED_COUNTS)
    )
    blocker = no_photos / "not-a-folder"
    blocker.write_text("a file where the photos' parent folder should be")
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(blocker / "photos"))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.button(key="gallery.download").click().run()
    assert_clean(at)
    assert "could not be downloaded" in at.error[0].value
    assert [b for b in at.button if b.key == "gallery.download"]
