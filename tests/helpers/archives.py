"""Photo archives made in code, and a local HTTP server (127.0.0.1, with Range support) that serves them."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile

import numpy as np
from PIL import Image

__all__ = ["FILTERED_COUNTS", "ArchiveServer", "filtered_members", "jpeg", "zip_bytes"]

FILTERED_COUNTS = {"train/cats": 3, "train/dogs": 3, "validation/cats": 2, "validation/dogs": 2}


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def filtered_members(counts=FILTERED_COUNTS) -> dict[str, bytes]:
    members = {"cats_and_dogs_filtered/vectorize.py": b"print('not a photo')\n"}
    seed = 0
    for folder, count in counts.items():
        kind = folder.split("/")[1][:-1]
        for number in range(count):
            seed += 1
            members[f"cats_and_dogs_filtered/{folder}/{kind}.{number}.jpg"] = jpeg(seed)
    return members


class ArchiveServer:
    """A threaded HTTP server with Range support; ``cut_after`` drops the connection once, mid-body."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.ranges: list[str | None] = []
        self.advertise: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                server.ranges.append(wanted)
                start = 0
                if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
                    start = int(wanted[len("bytes=") : -1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(server.advertise.get(self.path, len(body))))
                self.end_headers()
                if server.cut_after is not None:
                    cut, server.cut_after = server.cut_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
