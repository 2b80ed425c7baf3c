"""A small client of Streamlit's own websocket protocol: what the browser sends and fetches,
without drawing anything. The load test (``load_test.py --client protocol``) uses it to
put many students on one server without running a browser for each on the same 2 cores.

It does what Streamlit's frontend does for the actions a student takes:

* opening the app: ``GET /`` (the page) and the scripts and styles it names (a new
  browser's first visit; the chunks its JavaScript loads later, such as Vega's, are not
  fetched), ``GET /_stcore/health`` (which sets the XSRF cookie), the websocket
  ``/_stcore/stream``, and a ``rerun_script`` message;
* a widget: a ``rerun_script`` carrying every widget value set so far (buttons as a
  one-off trigger), with the fragment's id when the widget lives in an ``st.fragment``;
* another page: a ``rerun_script`` with that page's script hash (every other rerun
  names the page shown now, as the frontend does);
* an upload: ``file_urls_request``, a multipart ``PUT`` to the URL the server returns
  (with the XSRF header), then the uploader's new value in a rerun;
* the pictures: every ``/media/...`` and ``/app/static/...`` URL of the run's images that this client has not
  fetched before (the browser's cache);
* HTTP, as a browser speaks it to one host: over at most 6 connections, kept alive and
  reused (:class:`ConnectionPool`); the websocket is a connection of its own;
* large messages: like the frontend, it keeps every message the server marks cacheable and
  names them in each rerun (``cached_message_hashes``), so the server sends a reference
  instead of a message this client already has (a component's unchanged arguments, say).

A run ends with the server's ``script_finished``; an exception element in the run, a
compile error or a failed fetch raises :class:`AppError`. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import http.client
import http.cookies
import queue
import re
import urllib.parse
import uuid
from dataclasses import dataclass, field
from email.message import Message

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Block_pb2 import Block
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Common_pb2 import FileUploaderState, FileURLsRequest, UploadedFileInfo
from streamlit.proto.Element_pb2 import Element
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

GZIP = {"Accept-Encoding": "gzip"}
"""As a browser asks for the page and its scripts (the server then compresses them)."""
FINISHED = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY)


class AppError(RuntimeError):
    """The app misbehaved: an exception element, a failed script run, or a failed fetch."""


@dataclass
class Widget:
    kind: str  # the element's type: "button", "number_input", "selectbox", "file_uploader", ...
    id: str
    label: str
    fragment_id: str
    proto: object


@dataclass
class Run:
    """What one script run sent: its elements in order, with the fragment each belongs to."""

    elements: list[tuple[Element, str]] = field(default_factory=list)
    blocks: list[tuple[Block, str]] = field(default_factory=list)
    media_fetched: int = 0

    def widgets(self, kind: str, label: str | None = None) -> list[Widget]:
        """The widgets of ``kind`` whose label is ``label`` or starts with it and a space (the
        Gallery's buttons are "Look inside" and the photo's name)."""
        found = []
        for element, fragment_id in self.elements:
            if element.WhichOneof("type") != kind:
                continue
            proto = getattr(element, kind)
            text = getattr(proto, "label", None)
            if label is None or text == label or (text or "").startswith(label + " "):
                found.append(Widget(kind, proto.id, getattr(proto, "label", ""), fragment_id, proto))
        return found

    def widget(self, kind: str, label: str | None = None) -> Widget:
        found = self.widgets(kind, label)
        if not found:
            raise AppError(f"no {kind} labelled {label!r} in the page")
        return found[0]

    def tabs(self) -> tuple[Widget, list[str]]:
        """The first ``st.tabs`` that reruns on a tab change (a widget whose value is the open
        tab's label), and its labels in order."""
        for index, (block, fragment_id) in enumerate(self.blocks):
            if block.WhichOneof("type") == "tab_container" and block.tab_container.id:
                labels = []
                for following, _ in self.blocks[index + 1 :]:
                    if following.WhichOneof("type") != "tab":
                        break
                    labels.append(following.tab.label)
                return Widget("tabs", block.tab_container.id, "", fragment_id, block.tab_container), labels
        raise AppError("no tabs that rerun on a change in the page")

    def count(self, kind: str) -> int:
        return sum(1 for element, _ in self.elements if element.WhichOneof("type") == kind)

    def texts(self) -> str:
        """The run's markdown, in order (headings, captions and text)."""
        return "\n".join(
            element.markdown.body for element, _ in self.elements if element.WhichOneof("type") == "markdown"
        )

    def alerts(self) -> list[str]:
        """The bodies of the run's ``st.error``, ``st.warning``, ``st.info`` and ``st.success`` boxes."""
        return [element.alert.body for element, _ in self.elements if element.WhichOneof("type") == "alert"]

    def image_captions(self) -> list[str]:
        """The captions of the run's pictures (``st.image``), in order."""
        return [
            image.caption
            for element, _ in self.elements
            if element.WhichOneof("type") == "imgs"
            for image in element.imgs.imgs
        ]


BROWSER_CONNECTIONS = 6
"""The connections a browser opens to one host for HTTP/1.1 requests (Chromium's and Firefox's limit)."""


HTTP_MODES = ("browser", "per-request")
"""How an :class:`AppClient` speaks HTTP: as a browser does, or a new connection per request."""


class ConnectionPool:
    """HTTP to one ``host:port`` as a browser does it: at most :data:`BROWSER_CONNECTIONS`
    connections, each kept alive and reused. A new connection for every request (urllib's
    way) made the server accept and tear down 62 TCP connections for each student's first
    visit, about twice the server CPU of the same files over kept-alive connections.

    :meth:`request` blocks; call it from worker threads, at most ``BROWSER_CONNECTIONS`` at
    a time (:meth:`AppClient._request` does). A kept-alive connection the server closed
    while idle (uvicorn closes them after 5 s) is replaced and the request sent again, as a
    browser does."""

    def __init__(self, host: str, port: int, timeout: float, keep_alive: bool = True) -> None:
        self.host, self.port, self.timeout, self.keep_alive = host, port, timeout, keep_alive
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue()
        self.opened = 0  # connections made so far

    def _connect(self) -> http.client.HTTPConnection:
        self.opened += 1
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, Message, bytes]:
        try:
            connection, reused = self._idle.get_nowait(), True
        except queue.Empty:
            connection, reused = self._connect(), False
        try:
            response, data = self._exchange(connection, method, path, headers, body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
            connection = self._connect()  # the server had closed the idle connection
            response, data = self._exchange(connection, method, path, headers, body)
        if response.will_close or not self.keep_alive:
            connection.close()
        else:
            self._idle.put(connection)
        return response.status, response.headers, data

    @staticmethod
    def _exchange(
        connection: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request and its whole answer on ``connection``, which is closed if either fails."""
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response, response.read()
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class AppClient:
    """One student's connection to the app at ``url`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, url: str, timeout: float = 300, http: str = "browser") -> None:
        """``http``: ``"browser"`` (at most 6 kept-alive connections) or ``"per-request"`` (a new
        connection for every request, as many at once as asked: this client's way before)."""
        if not url.startswith(("http://127.0.0.1", "http://localhost")):
            raise ValueError("the protocol client only talks to 127.0.0.1")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.cookie = ""
        self.xsrf = ""
        self.session_id = ""
        self.pages: dict[str, str] = {}  # url path name -> page script hash
        self.page_hash = ""  # the page shown now: every rerun asks for it, as the frontend does
        self.values: dict[str, WidgetState] = {}  # widget values set so far, as the frontend keeps them
        self.fetched: set[str] = set()
        self.cached: dict[str, ForwardMsg] = {}  # cacheable messages by hash, as the frontend keeps them
        self.references = 0  # messages the server did not send again (references to cached ones)
        self._socket = None
        self._inbox: asyncio.Queue[ForwardMsg] = asyncio.Queue()
        self._reader: asyncio.Task | None = None
        address = urllib.parse.urlsplit(self.url)
        if http not in HTTP_MODES:
            raise ValueError(f"http must be one of {HTTP_MODES}, not {http!r}")
        browser = http == "browser"
        self.http = ConnectionPool(address.hostname or "127.0.0.1", address.port or 80, timeout, keep_alive=browser)
        self._slots = asyncio.Semaphore(BROWSER_CONNECTIONS if browser else 1_000)

    # -- connection ---------------------------------------------------------------------------------

    async def open(self) -> Run:
        import websockets

        _, _, page = await self._request("GET", self.url + "/", GZIP)
        assets = dict.fromkeys(re.findall(r'(?:src|href)="\./(static/[^"]+)"', page.decode("utf-8", "replace")))
        await asyncio.gather(*(self._request("GET", f"{self.url}/{asset}", GZIP) for asset in assets))
        # The frontend's health check is what sets the XSRF cookie that uploads must echo.
        _, headers, _ = await self._request("GET", self.url + "/_stcore/health", {})
        jar = http.cookies.SimpleCookie()
        for value in headers.get_all("Set-Cookie") or []:
            jar.load(value)
        self.cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in jar.items())
        self.xsrf = jar["_streamlit_xsrf"].value if "_streamlit_xsrf" in jar else ""
        self._socket = await websockets.connect(
            self.url.replace("http://", "ws://") + "/_stcore/stream",
            subprotocols=["streamlit", self.xsrf] if self.xsrf else ["streamlit"],
            additional_headers={"Cookie": self.cookie} if self.cookie else None,
            origin=self.url,
            max_size=None,
            open_timeout=self.timeout,
        )
        self._reader = asyncio.create_task(self._read())
        return await self.rerun()

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
        if self._socket is not None:
            await self._socket.close()
        self.http.close()

    async def _request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, Message, bytes]:
        """One HTTP request to ``url`` (on this client's server) over the client's connections;
        a status of 400 or more raises :class:`AppError`."""
        parts = urllib.parse.urlsplit(url)
        if (parts.hostname, parts.port or 80) != (self.http.host, self.http.port):
            raise AppError(f"{url} is not on the app's server {self.url}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        async with self._slots:
            status, headers_in, data = await asyncio.to_thread(self.http.request, method, path, headers, body)
        if status >= 400:
            raise AppError(f"{method} {url} answered {status}")
        return status, headers_in, data

    async def _read(self) -> None:
        async for data in self._socket:
            await self._inbox.put(ForwardMsg.FromString(data))

    async def _next(self, deadline: float) -> ForwardMsg:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError(f"no answer from the app within {self.timeout:.0f} s")
        try:
            return await asyncio.wait_for(self._inbox.get(), remaining)
        except TimeoutError:
            raise TimeoutError(f"no answer from the app within {self.timeout:.0f} s") from None

    async def _send(self, message: BackMsg) -> None:
        await self._socket.send(message.SerializeToString())

    # -- actions ------------------------------------------------------------------------------------

    async def rerun(
        self, *, page: str | None = None, trigger: Widget | None = None, changed: Widget | None = None
    ) -> Run:
        """A script run as the frontend asks for it; returns once it finished and its pictures are fetched.

        ``page``: the url path of another page. ``trigger``: a button pressed. ``changed``: the
        widget whose value was just set with :meth:`set_value` (its fragment reruns alone).
        """
        state = ClientState(query_string="", page_script_hash=self.pages[page] if page is not None else self.page_hash)
        state.widget_states.widgets.extend(self.values.values())
        state.cached_message_hashes.extend(self.cached)
        if trigger is not None:
            state.widget_states.widgets.append(WidgetState(id=trigger.id, trigger_value=True))
        source = trigger or changed
        if source is not None and page is None:
            state.fragment_id = source.fragment_id
        await self._send(BackMsg(rerun_script=state))
        return await self._collect()

    def set_value(self, widget: Widget, **value) -> None:
        """The widget's new value, as a ``WidgetState`` field: ``double_value=5``, ``string_value="x"``..."""
        self.values[widget.id] = WidgetState(id=widget.id, **value)

    async def upload(self, uploader: Widget, name: str, data: bytes, mime: str) -> Run:
        """Upload one file through ``uploader`` and rerun with it, as the frontend does."""
        request_id = uuid.uuid4().hex
        await self._send(
            BackMsg(
                file_urls_request=FileURLsRequest(request_id=request_id, file_names=[name], session_id=self.session_id)
            )
        )
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            message = await self._next(deadline)
            if message.WhichOneof("type") == "file_urls_response" and message.file_urls_response.response_id == (
                request_id
            ):
                break
        response = message.file_urls_response
        if response.error_msg:
            raise AppError(f"upload refused: {response.error_msg}")
        urls = response.file_urls[0]
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{urls.file_id}"; filename="{name}"\r\n'
                f"Content-Type: {mime}\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Cookie": self.cookie}
        if self.xsrf:
            headers["X-Xsrftoken"] = self.xsrf
        upload_url = urls.upload_url if urls.upload_url.startswith("http") else self.url + urls.upload_url
        status, _, _ = await self._request("PUT", upload_url, headers, body)
        if status >= 300:
            raise AppError(f"upload PUT answered {status}")
        self.values[uploader.id] = WidgetState(
            id=uploader.id,
            file_uploader_state_value=FileUploaderState(
                uploaded_file_info=[UploadedFileInfo(name=name, size=len(data), file_id=urls.file_id, file_urls=urls)]
            ),
        )
        return await self.rerun(changed=uploader)

    # -- a run's messages ---------------------------------------------------------------------------

    async def _collect(self) -> Run:
        run = Run()
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            message = await self._next(deadline)
            if message.WhichOneof("type") == "ref_hash":
                if message.ref_hash not in self.cached:
                    raise AppError("the server sent a reference to a message this client does not have")
                message = self.cached[message.ref_hash]
                self.references += 1
            elif message.metadata.cacheable and message.hash:
                self.cached[message.hash] = message
            kind = message.WhichOneof("type")
            if kind == "new_session":
                self.session_id = message.new_session.initialize.session_id or self.session_id
                self._learn_pages(message.new_session.app_pages)
            elif kind == "navigation":
                self._learn_pages(message.navigation.app_pages)
                self.page_hash = message.navigation.page_script_hash or self.page_hash
            elif kind == "delta":
                delta = message.delta
                if delta.WhichOneof("type") == "new_element":
                    element = delta.new_element
                    if element.WhichOneof("type") == "exception":
                        raise AppError(f"exception element: {element.exception.type}: {element.exception.message}")
                    run.elements.append((element, delta.fragment_id))
                elif delta.WhichOneof("type") == "add_block":
                    run.blocks.append((delta.add_block, delta.fragment_id))
            elif kind == "script_finished":
                if message.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    continue  # another rerun follows (the frontend waits for it too)
                if message.script_finished not in FINISHED:
                    raise AppError(f"the script did not finish: status {message.script_finished}")
                break
        await self._fetch_media(run)
        return run

    def _learn_pages(self, pages) -> None:
        for page in pages:
            self.pages[page.url_pathname] = page.page_script_hash

    async def _fetch_media(self, run: Run) -> None:
        urls = []
        for element, _ in run.elements:
            if element.WhichOneof("type") == "imgs":
                # /app/static/: the pictures every student shares (the gallery's), which the
                # browser fetches from there as it does /media/ (featapp.app.asset_server).
                urls.extend(
                    image.url for image in element.imgs.imgs if image.url.startswith(("/media/", "/app/static/"))
                )
        new = [url for url in dict.fromkeys(urls) if url not in self.fetched]
        results = await asyncio.gather(
            *(self._request("GET", self.url + url, {}) for url in new), return_exceptions=True
        )
        for url, result in zip(new, results, strict=True):
            if isinstance(result, BaseException):
                raise AppError(f"GET {url} failed: {result}")
            self.fetched.add(url)
        run.media_fetched = len(new)
