"""A progressive JPEG's real decoding cost (issue 28): libjpeg keeps coefficient buffers for
the whole full-size picture even at 1/8 draft scale, so the cost is counted from the header,
such a picture is queued behind other large decodes, and one whose buffers pass
MAX_COEFFICIENT_BYTES is refused before decoding. Memory only, never time."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from featapp.engine import images
from featapp.engine.images import MAX_COEFFICIENT_BYTES, ImageError, InputSpec, prepare_image
from tests.engine.test_images import _peak_rss_of

SPEC = InputSpec(150, 150, 3)


def jpeg(size: tuple[int, int], **options) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(out, "JPEG", quality=10, **options)
    return out.getvalue()


def with_declared_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` whose frame header (SOF) declares ``width`` x ``height``: what a decoder
    reads before any pixel, so a check made on the header meets the big picture at no cost."""
    out = bytearray(data)
    for marker in (0xC0, 0xC2):
        at = data.find(bytes([0xFF, marker]))
        if at != -1:
            out[at + 5 : at + 7] = height.to_bytes(2, "big")
            out[at + 7 : at + 9] = width.to_bytes(2, "big")
            return bytes(out)
    raise AssertionError("no frame header")


@pytest.mark.parametrize(
    "options, per_pixel",
    [
        ({}, 0),  # baseline: decoded a strip at a time
        ({"subsampling": 0}, 0),
        ({"progressive": True}, 3),  # 4:2:0: Y at full size, Cb and Cr at a quarter, 2 bytes each
        ({"progressive": True, "subsampling": 0}, 6),  # 4:4:4: three full-size components
    ],
)
def test_coefficient_buffers_are_counted_from_the_header(options, per_pixel):
    data = jpeg((800, 640), **options)
    image = Image.open(io.BytesIO(data))
    assert images._coefficient_bytes(image, data) == 800 * 640 * per_pixel


def test_an_exif_thumbnail_does_not_make_a_photo_multi_scan():
    thumbnail = jpeg((160, 120))
    out = io.BytesIO()
    Image.new("RGB", (800, 640)).save(out, "JPEG", exif=b"Exif\0\0II*\0" + thumbnail)
    assert images._jpeg_scans(out.getvalue(), enough=10) == (1, False)


def test_the_issues_progressive_jpeg_is_refused_before_decoding():
    # 13,370 x 13,370, 4:4:4, progressive: 1,073 MB of coefficients for a 2 MB file.
    small = jpeg((1671, 1671), progressive=True, subsampling=0)
    data = with_declared_size(small, 13370, 13370)
    with pytest.raises(ImageError, match="progressive JPEG of 13370 x 13370.*Make it smaller"):
        prepare_image(data, SPEC)
    # The same picture saved as an ordinary JPEG is drafted at 1/8 and read.
    baseline = with_declared_size(jpeg((1671, 1671), subsampling=0), 1671, 1671)
    assert prepare_image(baseline, SPEC).shape == (150, 150, 3)


def test_a_progressive_jpeg_within_the_budget_waits_its_turn(monkeypatch):
    data = jpeg((1700, 1700), progressive=True, subsampling=0)  # 17 MB of coefficients for 2.9 megapixels
    acquired = []

    class Recording:
        def __enter__(self):
            acquired.append(1)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(images, "_large_decodes", Recording())
    assert prepare_image(data, SPEC).shape == (150, 150, 3)
    assert acquired, "under 4 megapixels, but its buffers put it in the large-decode queue"
    acquired.clear()
    prepare_image(jpeg((1700, 1700)), SPEC)  # the same picture, baseline: no wait
    assert not acquired


# -- measured: peak memory of a real decode -------------------------------------------------------------------

# Largest 4:4:4 progressive square under the coefficient budget, to the nearest 8 pixels.
BIGGEST_SIDE = int((MAX_COEFFICIENT_BYTES / 6) ** 0.5) // 8 * 8


@pytest.fixture(scope="module")
def biggest_progressive(tmp_path_factory):
    """The largest progressive JPEG the app accepts, made in its own process (encoding it
    costs more than decoding it, and must not count)."""
    path = tmp_path_factory.mktemp("progressive") / "big.jpg"
    code = textwrap.dedent(f"""
        from PIL import Image
        Image.new("RGB", ({BIGGEST_SIDE}, {BIGGEST_SIDE})).save(
            {str(path)!r}, "JPEG", progressive=True, quality=10, subsampling=0)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    return path


_DECODE = """
    import threading
    data = open(sys.argv[1], "rb").read()
    threads = int(sys.argv[2])
    ---
    results = []
    workers = [
        threading.Thread(target=lambda: results.append(prepare_image(data, InputSpec(150, 150, 3))))
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    outcome = len(results)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="reads /proc")
def test_the_biggest_accepted_progressive_jpeg_stays_in_budget(biggest_progressive):
    """One decode at most +300 MB; five students uploading it at once at most +600 MB."""
    assert prepare_image(biggest_progressive.read_bytes(), SPEC).shape == (150, 150, 3)
    one = _peak_rss_of(_DECODE, str(biggest_progressive), "1")
    five = _peak_rss_of(_DECODE, str(biggest_progressive), "5")
    assert one["outcome"] == 1 and five["outcome"] == 5
    assert one["grew_mb"] > 150, one  # the decode is big: the buffers are really allocated
    assert one["grew_mb"] <= 300, one
    assert five["grew_mb"] <= 600, five


def test_a_transparent_picture_is_reduced_in_bands_exactly_as_reduce_does():
    import numpy as np

    rng = np.random.default_rng(28)
    for mode, shape in (("RGBA", (1203, 877, 4)), ("LA", (655, 1301, 2))):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        for factor in (2, 3, 7):
            assert np.array_equal(np.asarray(images._reduce_in_strips(image, factor)), np.asarray(image.reduce(factor)))


_PNG_40MP = """
    data = imagefactory.png_stream(6000, 6600, bands=4, row=[200, 100, 0, 128] * 6000)
    ---
    outcome = prepare_image(data, InputSpec(150, 150, 3)).shape[0]
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="reads /proc")
def test_the_largest_transparent_png_stays_in_budget():
    """40 megapixels of RGBA (a 165 KB file): its pixels, not a second premultiplied copy."""
    one = _peak_rss_of(_PNG_40MP)
    assert one["outcome"] == 150
    assert 150 < one["grew_mb"] <= 300, one
