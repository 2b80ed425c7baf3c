"""Hostile and odd files through every path (issue 5): the command line and the app.

The corpus, with one expected outcome per case, is :mod:`uploadcorpus`. The library path
(``prepare_image``) is tested case by case in ``tests/engine/test_images.py`` with hand-worked
pixel values; here the same files go through

* ``python -m featapp predict`` in one subprocess, each followed by a good file: every
  refusal is one line on stderr that names the file, the exit status is 1, and every good
  file after a bad one is still predicted, with the library's numbers;
* the app, as an upload through AppTest: a refusal is one ``st.error`` naming the file,
  no exception element appears, and the session keeps working (a good upload after it
  becomes the current image and the feature-map page draws its heatmap);

and the peak memory of decoding the big cases is measured in a fresh process.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_images import _peak_rss_of

from featapp.app.appstate import CURRENT_KEY, UPLOAD_MAX_BYTES
from featapp.engine.images import prepare_image
from tests.helpers import imagefactory as factory
from tests.helpers.apptest import as_shown, go, heatmap_picture, main_text, open_app, upload
from tests.helpers.uploadcorpus import BY_NAME, CASES, cases_for

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")


def good_photo(seed: int) -> bytes:
    """A good upload: coloured stripes, different for every seed (so each is a new image)."""
    pixels = np.zeros((120, 160, 3), np.uint8)
    pixels[:, seed % 7 :: 9] = (255, 200, 0)
    pixels[seed % 5 :: 11, :] = (0, 90, 255)
    return factory.encode(Image.fromarray(pixels), "PNG")


def test_corpus_has_every_case_the_issue_lists():
    names = set(BY_NAME)
    wanted = {
        "zero-bytes",
        "text-as-jpg",
        "html-as-png",
        "png-declares-30000x30000",
        "png-9000x9000-small-file",
        "png-16-bit",
        "jpeg-cmyk",
        "png-palette-transparent",
        "png-rgba",
        "gif-animated",
        "webp-animated",
        "png-1x1",
        "png-10000x40",
        "png-40x10000",
        "jpeg-grayscale",
        "svg",
        "heic",
        "tiff",
        "over-the-upload-limit",
    }
    assert wanted <= names
    assert {f"phone-jpeg-orientation-{o}" for o in range(1, 9)} <= names
    assert len([n for n in names if n.startswith("jpeg-truncated-")]) >= 3
    # The library path of every case is tested: in test_images.py, or here.
    assert {case.name for case in CASES if "library" not in case.covered} == _LIBRARY_HERE


# Cases whose library path is checked here (test_images.py has no equal case).
_LIBRARY_HERE = {"jpeg-whole", "over-the-upload-limit"}


@pytest.mark.parametrize("name", sorted(_LIBRARY_HERE))
def test_library_cases_not_in_test_images(model, name):
    case = BY_NAME[name]
    array = prepare_image(case.data(), model)
    assert array.shape == (150, 150, 3) and array.dtype == np.uint8
    if name == "over-the-upload-limit":
        # Averaging noise gives its mean: 63.5 on the dark left half, 191.5 on the bright right.
        assert abs(float(array[:, :70].mean()) - 63.5) < 3 and abs(float(array[:, 80:].mean()) - 191.5) < 3


# -- the command line ------------------------------------------------------------------------------


def test_predict_on_the_whole_corpus_in_one_call(model, tmp_path):
    """One ``predict`` call over every case, each followed by a good photo."""
    args, cases, goods = [], {}, {}
    for number, case in enumerate(cases_for("cli")):
        path = tmp_path / f"{number:02d}-{case.name}{Path(case.filename).suffix}"
        if case.name == "over-every-limit":
            with path.open("wb") as handle:  # a sparse 21 MB file: big on paper, cheap to make
                handle.write(case.data()[:3])
                handle.truncate(len(case.data()))
        else:
            path.write_bytes(case.data())
        good = tmp_path / f"{number:02d}-good-after-{case.name}.png"
        good.write_bytes(good_photo(number))
        args += [str(path), str(good)]
        cases[str(path)] = case
        goods[str(good)] = number
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATAPP_")}
    env.update(FEATAPP_PROVIDER="cpu", FEATAPP_THREADS="2")
    result = subprocess.run(
        [sys.executable, "-m", "featapp", "predict", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "Traceback" not in result.stderr, result.stderr
    refused = [name for name, case in cases.items() if case.expected("cli") is not None]
    assert result.returncode == 1  # some files failed
    error_lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    by_file = {line.split(": error: ", 1)[0]: line.split(": error: ", 1)[1] for line in error_lines}
    assert sorted(by_file) == sorted(refused), "exactly the refused files have an error line"
    assert len(error_lines) == len(refused), "one line per refused file"
    for name in refused:
        message = by_file[name]
        for word in cases[name].expected("cli"):
            assert word.lower() in message.lower(), (cases[name].name, message)
        assert len(message) < 300
    assert f"{len(refused)} of {len(args)} files failed." in result.stderr

    # Everything else got a prediction line, with the library's numbers.
    lines = {line.split()[0]: line.split() for line in result.stdout.strip().splitlines()}
    accepted = [name for name in cases if name not in refused]
    assert sorted(lines) == sorted(accepted + list(goods))
    sources = {name: cases[name].data() for name in accepted} | {name: good_photo(n) for name, n in goods.items()}
    names = list(sources)
    expected = model.predict(np.stack([prepare_image(sources[name], model) for name in names]))
    for name, label, confidence in zip(names, expected.labels, expected.confidences, strict=True):
        assert lines[name][1] == label and float(lines[name][2]) == pytest.approx(float(confidence), abs=1.5e-3), name


# -- the app ----------------------------------------------------------------------------------------


def expected_heatmap(model, data: bytes) -> np.ndarray:
    from featapp import render

    values = model.activations(prepare_image(data, model))[model.layers[0].name][0, 0]
    return render.colourise(values, render.value_range(values, "per map"), render.LECTURE_BLUES)


@pytest.mark.slow
@pytest.mark.parametrize("name", [case.name for case in cases_for("app")])
def test_upload_through_the_app(app_env, model, name):
    case = BY_NAME[name]
    data = case.data()
    at = open_app()
    before = at.session_state[CURRENT_KEY]
    upload(at, (case.filename, data, case.mime))
    words = case.expected("app")
    errors = [as_shown(error.value) for error in at.error]
    current = at.session_state[CURRENT_KEY]
    if words is not None:
        assert len(errors) == 1, errors
        assert errors[0].startswith(f"'{case.filename}' cannot be used: "), errors[0]
        for word in words:
            assert word.lower() in errors[0].lower(), errors[0]
        assert "Traceback" not in errors[0] and len(errors[0]) < 400
        assert current.key == before.key  # the current image did not change
    else:
        assert not errors, errors
        assert current.source == "upload" and current.title == case.filename
        assert f"Current image: **{case.filename}** (your upload)" in main_text(at)
        np.testing.assert_array_equal(current.array, prepare_image(data, model, max_bytes=UPLOAD_MAX_BYTES))
        if case.upright:
            # The app shows the photo the right way up: as the upright original (JPEG noise aside).
            reference = prepare_image(BY_NAME["phone-jpeg-orientation-1"].data(), model)
            assert np.abs(current.array.astype(int) - reference).mean() < 4
    # The session goes on: a good upload becomes the current image, and a page draws its map.
    follow = good_photo(len(name))
    upload(at, ("next.png", follow, "image/png"))
    assert not at.error
    assert at.session_state[CURRENT_KEY].title == "next.png"
    go(at, "feature_map")
    assert np.array_equal(heatmap_picture(at), expected_heatmap(model, follow))


# -- memory ---------------------------------------------------------------------------------------------


def _file_snippet(path: Path, outcome_code: str) -> str:
    return f"""
        data = open({str(path)!r}, "rb").read()
        ---
        try:
            array = prepare_image(data, InputSpec(150, 150, 3))
            outcome = {outcome_code}
        except ImageError as err:
            outcome = str(err)
        """


BIG_CASES = {
    # name: (builder, bytes of its pixels at full size (0: never decoded at full size), bound on the peak's growth in MB)
    "png-declares-30000x30000": (lambda: factory.png_declaring(30000, 30000), 0, 15),
    "phone-jpeg-48mp-orientation-6": (
        lambda: factory.jpeg_with_orientation(factory.asymmetric(8000, 6000), 6, quality=80),
        0,  # libjpeg decodes it at 1/8 (1000 x 750): 2 MB
        30,
    ),
    "png-10000x40": (lambda: factory.png_stream(10000, 40, row=[30, 120, 210] * 10000), 10000 * 40 * 3, 30),
    "png-40x10000": (lambda: factory.png_stream(40, 10000, row=[30, 120, 210] * 40), 40 * 10000 * 3, 30),
    "png-16-bit-grey-6000x6000": (
        lambda: factory.png_stream(6000, 6000, bands=1, row=[257 * 77] * 6000, bit_depth=16),
        6000 * 6000 * 2,  # I;16 in memory: 72 MB, then its 8-bit copy (36 MB), made in strips
        72 + 36 + 30,  # the strips' float64 temporaries are a few 8 MB arrays
    ),
    "png-16-bit-rgb-5000x5000": (
        lambda: factory.png_stream(5000, 5000, bands=3, row=[257 * 10, 257 * 128, 65535] * 5000, bit_depth=16),
        5000 * 5000 * 3,  # Pillow reads 16-bit RGB as 8-bit RGB: 75 MB
        75 * 1.5,
    ),
    "gif-6000x6000-palette": (
        lambda: factory.encode(Image.new("P", (6000, 6000), 1), "GIF"),
        6000 * 6000,  # 36 MB of palette indices; RGB after conversion: 108 MB
        36 * 5.5,  # indices, the RGB copy, and Pillow's working copies (measured: about 4.8 bytes per pixel)
    ),
    "over-every-limit-21mb": (lambda: BY_NAME["over-every-limit"].data(), 0, 5),
}


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="reads /proc")
@pytest.mark.parametrize("name", list(BIG_CASES))
def test_peak_memory_of_big_decodes_is_bounded(tmp_path, name):
    """Each file is read into the measuring process before its baseline, so the growth
    is the decode alone; a naive decode's growth is tested in test_images.py (the control)."""
    build, _, bound_mb = BIG_CASES[name]
    path = tmp_path / "input.bin"
    path.write_bytes(build())
    result = _peak_rss_of(_file_snippet(path, "list(array.shape)"))
    refused = name in ("png-declares-30000x30000", "over-every-limit-21mb")
    assert (isinstance(result["outcome"], str)) == refused, result
    assert result["grew_mb"] < bound_mb, result
    print(f"{name}: peak grew {result['grew_mb']:.1f} MB (bound {bound_mb:.0f} MB): {result['outcome']}")


def test_big_cases_are_built_as_described():
    """The memory test's inputs are what their names say (read from their headers only)."""
    for name, (build, pixel_bytes, _) in BIG_CASES.items():
        data = build()
        if name == "over-every-limit-21mb":
            assert len(data) > 21 * 2**20
            continue
        if name.startswith("png-declares"):
            assert struct.unpack(">II", data[16:24]) == (30000, 30000)  # Pillow itself refuses to open it
            continue
        image = Image.open(io.BytesIO(data))
        if name.startswith("phone"):
            assert image.size == (6000, 8000) and image.getexif()[0x0112] == 6
        else:
            bytes_per_pixel = {"I;16": 2, "RGB": 3, "P": 1}[image.mode]
            assert image.size[0] * image.size[1] * bytes_per_pixel == pixel_bytes, (name, image.mode, image.size)
