"""The rating page: annotators rate blinded items in a browser, served from this machine.

:func:`serve` starts a small HTTP server (the standard library's ``ThreadingHTTPServer``) on
127.0.0.1 that serves one self-contained page (``rating_page.html``: inline CSS and JavaScript,
nothing fetched from anywhere else) and a JSON API over a :class:`RatingBackend`. The page
shows the instruction, input and reference and the blinded output (pairwise: the two outputs
side by side), with buttons and keyboard shortcuts for the rating (0/1, 1-5, or l/t/r for
left/tie/right), skip (s) and back (b), and the annotator's progress ("17 / 60").

Annotators: ``serve(..., annotator=NAME)`` fixes one; otherwise each types a name on the page
(it is kept in the page's address, so a reload keeps it) and several may rate at once. Each
sees the items in their own stable order (:func:`annotator_order`) and resumes after the last
item they rated. Every rating goes to the backend as it is given, so closing the page or
killing the server loses nothing. An item is rated at most once per annotator: the server
refuses a second rating and the page shows the one given.

The JSON API (every error is ``{"error": MESSAGE}``; ``annotator`` is a query parameter):

* ``GET /api/config``: ``{"scale", "values", "pairwise", "annotator"}`` (``annotator``: the
  fixed one, or null);
* ``GET /api/session?annotator=NAME``: the annotator's items in order, what they gave
  (``{item_id: {"value", "comment"}}``), ``done`` and ``total``;
* ``GET /api/items/ID?annotator=NAME``: one item and the rating given, or 404;
* ``POST /api/ratings`` with a JSON body ``{"annotator", "item_id", "value", "comment"}``:
  201 with the updated ``done``/``total``; 400 for a bad body, annotator or a value off the
  scale; 404 for an item the annotator does not have; 409 when the annotator already rated
  the item (the body then carries ``given``); 415 unless the body is ``application/json``
  (which a cross-site form cannot send).

Every request's body is limited to 64 KiB, whatever its method: a ``Content-Length`` that is
larger, negative or not a number, or a chunked body, is refused before a byte of the body is
read, and the connection is closed. A connection that stays silent for 30 seconds (an idle
keep-alive, a half-sent request) is closed, so no connection holds a thread for ever.

Requests whose ``Host`` is not this loopback address and port are refused (a web page cannot
reach the server through a DNS name it controls), and the page is sent with a
Content-Security-Policy that allows its own inline script and style (by hash) and fetches to
this server, and nothing else.

The backend is the seam to the store: :class:`MemoryBackend` keeps ratings in memory (tests,
demos); a store-backed one implements the same three methods and writes each rating durably
in ``submit``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from ..api import Rating, RatingItem, RatingScale
from ..errors import UserError

__all__ = [
    "RatingBackend",
    "MemoryBackend",
    "UnknownItem",
    "AlreadyRated",
    "RatingServer",
    "annotator_order",
    "check_annotator",
    "serve",
]

#: the longest annotator name and comment the page accepts
MAX_NAME = 80
MAX_COMMENT = 5000
MAX_BODY = 64 * 1024
#: seconds a connection may stay silent (an idle keep-alive, a half-sent request) before the server closes it
CONNECTION_TIMEOUT = 30.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")



def _content_security_policy(page: bytes) -> str:
    """Allow exactly the page's own inline script and style (by hash), fetches to this server, and nothing else."""
    import base64
    import re

    def hashes(tag: str) -> str:
        blocks = re.findall(rb"<" + tag.encode() + rb">(.*?)</" + tag.encode() + rb">", page, flags=re.S)
        if not blocks:
            raise ValueError(f"rating_page.html has no <{tag}> block")
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(b).digest()).decode() + "'" for b in blocks)

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


# --------------------------------------------------------------------------- the backend protocol


class UnknownItem(UserError):
    """The annotator has no item with this id (HTTP 404)."""


class AlreadyRated(UserError):
    """The annotator already rated this item (HTTP 409); ``given`` is their rating."""

    def __init__(self, given: Rating):
        self.given = given
        super().__init__(f"{given.annotator!r} already rated item {given.item_id!r} ({_num(given.value)}); an item is rated once per annotator")


class RatingBackend(Protocol):
    """Where the page's items come from and its ratings go.

    ``scale`` is the scale every item is rated on. ``items(annotator)`` returns the items
    that annotator rates, in the order they are shown; the order must be the same on every
    call for the same annotator (see :func:`annotator_order`). ``given(annotator)`` returns
    the ratings that annotator has given, by item id. ``submit(rating)`` stores one rating
    durably before it returns, and raises :class:`UnknownItem` for an item the annotator
    does not have, :class:`AlreadyRated` for an item they already rated (checked atomically:
    two concurrent submits of the same item store one), or :class:`UserError` for a value
    off the scale. Methods are called from several threads at once.
    """

    scale: RatingScale

    def items(self, annotator: str) -> Sequence[RatingItem]: ...

    def given(self, annotator: str) -> Mapping[str, Rating]: ...

    def submit(self, rating: Rating) -> None: ...


def annotator_order(items: Sequence[RatingItem], annotator: str) -> list[RatingItem]:
    """``items`` in an order of their own for each annotator, the same on every call.

    Sorted by sha256(annotator, item id): annotators do not all meet the same items first
    and last (order effects average out), and adding items leaves the others' order intact.
    """

    def key(item: RatingItem) -> bytes:
        return hashlib.sha256(f"{annotator}\0{item.item_id}".encode()).digest()

    return sorted(items, key=key)


def check_annotator(name: Any) -> str:
    """A valid annotator name (stripped) or :class:`UserError`: 1-80 characters, no control characters."""
    if not isinstance(name, str) or not name.strip():
        raise UserError("the annotator name is missing; type your name", key="annotator")
    name = unicodedata.normalize("NFC", name.strip())
    if len(name) > MAX_NAME:
        raise UserError(f"the annotator name is longer than {MAX_NAME} characters", key="annotator")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise UserError("the annotator name contains control characters", key="annotator")
    return name


class MemoryBackend:
    """Items and ratings in memory: for tests and for trying the page out. Nothing survives the process.

    ``shuffle`` gives each annotator their own order (:func:`annotator_order`); without it
    every annotator sees ``items`` as given.
    """

    def __init__(self, items: Sequence[RatingItem], scale: RatingScale, *, shuffle: bool = True):
        width = 2 if scale.pairwise else 1
        seen: set[str] = set()
        for item in items:
            if item.item_id in seen:
                raise ValueError(f"item id {item.item_id!r} is used twice")
            seen.add(item.item_id)
            if len(item.outputs) != width:
                raise ValueError(f"item {item.item_id!r} has {len(item.outputs)} outputs; the {scale.name} scale needs {width}")
        self.scale = scale
        self._items = list(items)
        self._by_id = {item.item_id: item for item in items}
        self._shuffle = shuffle
        self._lock = threading.Lock()
        self._ratings: dict[tuple[str, str], Rating] = {}
        #: every rating in the order it was stored
        self.log: list[Rating] = []

    def items(self, annotator: str) -> list[RatingItem]:
        return annotator_order(self._items, annotator) if self._shuffle else list(self._items)

    def given(self, annotator: str) -> dict[str, Rating]:
        with self._lock:
            return {item_id: r for (item_id, who), r in self._ratings.items() if who == annotator}

    def submit(self, rating: Rating) -> None:
        if rating.item_id not in self._by_id:
            raise UnknownItem(f"no item {rating.item_id!r}")
        if not self.scale.allows(rating.value):
            raise UserError(f"rating {_num(rating.value)} is off the {self.scale.name} scale; allowed: {_allowed(self.scale)}")
        with self._lock:
            earlier = self._ratings.get((rating.item_id, rating.annotator))
            if earlier is not None:
                raise AlreadyRated(earlier)
            self._ratings[(rating.item_id, rating.annotator)] = rating
            self.log.append(rating)

    def ratings(self) -> list[Rating]:
        """Every rating stored, in the order it was given."""
        with self._lock:
            return list(self.log)


# --------------------------------------------------------------------------- the server


class RatingServer(ThreadingHTTPServer):
    """The HTTP server of one rating page. ``url`` is where to open it.

    Use :meth:`serve_forever` (a CLI) or :meth:`start` (a background thread, tests); both end
    with :meth:`stop`. Also a context manager that stops on exit.
    """

    daemon_threads = True
    allow_reuse_address = False

    def __init__(
        self,
        address: tuple[str, int],
        backend: RatingBackend,
        *,
        annotator: str | None = None,
        log: Callable[[str], None] | None = None,
        timeout: float = CONNECTION_TIMEOUT,
    ):
        self.backend = backend
        #: seconds a connection may stay silent before it is closed
        self.connection_timeout = timeout
        self.annotator = check_annotator(annotator) if annotator is not None else None
        self.log = log
        self.page = resources.files(__package__).joinpath("rating_page.html").read_bytes()
        self.csp = _content_security_policy(self.page)
        self._thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    @property
    def host(self) -> str:
        return self.server_address[0]

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def allowed_hosts(self) -> set[str]:
        names = {self.host, "localhost", "127.0.0.1", "[::1]"} if self.host in LOOPBACK else {self.host}
        return {f"{name}:{self.port}" for name in names}

    def start(self) -> RatingServer:
        """Serve in a daemon thread and return at once."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, name=f"rating-page:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (waits for the loop to end) and close the socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __enter__(self) -> RatingServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(
    backend: RatingBackend,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    annotator: str | None = None,
    announce: Callable[[str], None] | None = print,
    log: Callable[[str], None] | None = None,
    timeout: float = CONNECTION_TIMEOUT,
) -> RatingServer:
    """Bind the rating page for ``backend`` on ``host:port`` (port 0: a free one) and return the server, not yet serving.

    ``annotator`` fixes who rates (the page then asks no name). ``announce`` receives one
    line with the URL to open (None: say nothing); ``log`` receives one line per request
    (None: quiet); ``timeout`` is how long a connection may stay silent. Call ``serve_forever()``
    or ``start()`` on the result. Raises :class:`UserError` when the port is taken or the host
    cannot be bound.
    """
    try:
        server = RatingServer((host, port), backend, annotator=annotator, log=log, timeout=timeout)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", key="--port") from exc
    if announce is not None:
        who = f" as {server.annotator!r}" if server.annotator else ""
        announce(f"rating page{who}: open {server.url} (Ctrl-C to stop; every rating is saved as it is given)")
    return server


# --------------------------------------------------------------------------- requests


class _ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


class _Handler(BaseHTTPRequestHandler):
    server: RatingServer
    server_version = "harness-rating-page"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.timeout = self.server.connection_timeout  # StreamRequestHandler sets it on the socket: every recv waits at most this long
        super().setup()

    def parse_request(self) -> bool:
        # the headers too are held to MAX_BODY (the standard library alone allows 100 lines of 64 KiB): 431 beyond it
        rfile, self.rfile = self.rfile, _LimitedLines(self.rfile, MAX_BODY)
        try:
            return super().parse_request()
        finally:
            self.rfile = rfile

    # ------------------------------------------------------------------ dispatch

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            self._raw = self._read_body()
            self._check_host()
            parts = urlsplit(self.path)
            path, query = parts.path, parse_qs(parts.query)
            if path in ("/", "/index.html"):
                self._only(method, "GET", "HEAD")
                self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8", head=method == "HEAD")
            elif path == "/api/config":
                self._only(method, "GET")
                self._json(HTTPStatus.OK, self._config())
            elif path == "/api/session":
                self._only(method, "GET")
                self._json(HTTPStatus.OK, self._session(self._annotator(query)))
            elif path.startswith("/api/items/"):
                self._only(method, "GET")
                self._json(HTTPStatus.OK, self._item(self._annotator(query), unquote(path[len("/api/items/") :])))
            elif path == "/api/ratings":
                self._only(method, "POST")
                self._json(HTTPStatus.CREATED, self._rate(self._body()))
            else:
                raise _ApiError(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        except _ApiError as exc:
            self._json(exc.status, exc.body)
        except TimeoutError:  # the client stopped sending in the middle of its body
            self.close_connection = True
        except Exception as exc:  # a bug or a broken backend: say so, keep serving
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {type(exc).__name__}: {exc}"})

    def _only(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise _ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed here; use {' or '.join(allowed)}")

    def _check_host(self) -> None:
        host = self.headers.get("Host", "")
        if host not in self.server.allowed_hosts():
            raise _ApiError(HTTPStatus.BAD_REQUEST, f"unexpected Host header {host!r}; open {self.server.url}")

    def _annotator(self, query: Mapping[str, list[str]]) -> str:
        names = query.get("annotator") or ([self.server.annotator] if self.server.annotator else [])
        try:
            name = check_annotator(names[0] if names else None)
        except UserError as exc:
            raise _ApiError(HTTPStatus.BAD_REQUEST, exc.message) from exc
        if self.server.annotator and name != self.server.annotator:
            raise _ApiError(HTTPStatus.FORBIDDEN, f"this page rates as {self.server.annotator!r} only; start another for {name!r}")
        return name

    def _read_body(self) -> bytes | None:
        """The request's body (None: it declared none), at most :data:`MAX_BODY` bytes, whatever the method.

        A body of unknown length (chunked) or a ``Content-Length`` that is larger than the limit,
        negative or not a whole number is refused before a byte of it is read; the connection is
        then closed, since what follows on it cannot be framed.
        """
        if self.headers.get("Transfer-Encoding") is not None:
            self.close_connection = True
            raise _ApiError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length (a chunked body is not accepted)")
        declared = self.headers.get_all("Content-Length") or []
        if not declared:
            return None
        values = {value.strip() for value in declared}
        if len(values) > 1 or not next(iter(values)).isdigit():
            self.close_connection = True
            raise _ApiError(HTTPStatus.BAD_REQUEST, f"Content-Length must be one whole number of bytes, got {', '.join(sorted(values))[:40]!r}")
        length = int(next(iter(values)))
        if length > MAX_BODY:
            self.close_connection = True
            raise _ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the request is larger than {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        if len(raw) < length:  # the client closed the connection halfway
            self.close_connection = True
            raise _ApiError(HTTPStatus.BAD_REQUEST, "the request body ended before its Content-Length")
        return raw

    def _body(self) -> dict[str, Any]:
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise _ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the rating as application/json")
        if self._raw is None:
            raise _ApiError(HTTPStatus.LENGTH_REQUIRED, "the request has no Content-Length")
        try:
            body = json.loads(self._raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON, or a number too long to convert
            raise _ApiError(HTTPStatus.BAD_REQUEST, f"the request body is not JSON: {str(exc)[:200]}") from exc
        if not isinstance(body, dict):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
        return body

    # ------------------------------------------------------------------ endpoints

    def _config(self) -> dict[str, Any]:
        scale = self.server.backend.scale
        return {"scale": scale.name, "values": list(scale.values), "pairwise": scale.pairwise, "annotator": self.server.annotator}

    def _session(self, annotator: str) -> dict[str, Any]:
        backend = self.server.backend
        items = list(backend.items(annotator))
        given = backend.given(annotator)
        ids = {item.item_id for item in items}
        return {
            "annotator": annotator,
            "items": [_item_json(item) for item in items],
            "given": {item_id: _rating_json(r) for item_id, r in given.items() if item_id in ids},
            "done": sum(1 for item_id in given if item_id in ids),
            "total": len(items),
        }

    def _item(self, annotator: str, item_id: str) -> dict[str, Any]:
        item = next((i for i in self.server.backend.items(annotator) if i.item_id == item_id), None)
        if item is None:
            raise _ApiError(HTTPStatus.NOT_FOUND, f"no item {item_id!r} for annotator {annotator!r}")
        given = self.server.backend.given(annotator).get(item_id)
        return {"item": _item_json(item), "given": _rating_json(given) if given else None}

    def _rate(self, body: dict[str, Any]) -> dict[str, Any]:
        backend = self.server.backend
        if "annotator" in body and not isinstance(body["annotator"], str):
            raise _ApiError(HTTPStatus.BAD_REQUEST, f"'annotator' must be a string (a name), not {_json_type(body['annotator'])}")
        annotator = self._annotator({"annotator": [body["annotator"]]} if "annotator" in body else {})
        item_id, value, comment = body.get("item_id"), body.get("value"), body.get("comment", "")
        if item_id is None or item_id == "":
            raise _ApiError(HTTPStatus.BAD_REQUEST, "'item_id' is missing")
        if not isinstance(item_id, str):
            raise _ApiError(HTTPStatus.BAD_REQUEST, f"'item_id' must be a string (the item's id, as /api/session lists it), not {_json_type(item_id)}")
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
            raise _ApiError(HTTPStatus.BAD_REQUEST, f"'comment' must be text of at most {MAX_COMMENT} characters")
        items = {item.item_id for item in backend.items(annotator)}
        if item_id not in items:
            raise _ApiError(HTTPStatus.NOT_FOUND, f"no item {item_id!r} for annotator {annotator!r}")
        number = _number(value)
        if number is None or not backend.scale.allows(number):
            shown = repr(value) if len(repr(value)) <= 24 else repr(value)[:20] + "…"
            raise _ApiError(HTTPStatus.BAD_REQUEST, f"rating {shown} is off the {backend.scale.name} scale; allowed: {_allowed(backend.scale)}")
        earlier = backend.given(annotator).get(item_id)
        if earlier is not None:
            raise _ApiError(HTTPStatus.CONFLICT, AlreadyRated(earlier).message, given=_rating_json(earlier))
        rating = Rating(item_id, annotator, number, comment=comment.strip(), where="rating page")
        try:
            backend.submit(rating)
        except AlreadyRated as exc:  # another tab of the same annotator got there first
            raise _ApiError(HTTPStatus.CONFLICT, exc.message, given=_rating_json(exc.given)) from exc
        except UnknownItem as exc:
            raise _ApiError(HTTPStatus.NOT_FOUND, exc.message) from exc
        except UserError as exc:
            raise _ApiError(HTTPStatus.BAD_REQUEST, exc.message) from exc
        given = backend.given(annotator)
        return {"given": _rating_json(rating), "done": sum(1 for i in given if i in items), "total": len(items)}

    # ------------------------------------------------------------------ responses

    def _json(self, status: HTTPStatus, body: Any) -> None:
        self._send(status, json.dumps(body, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _send(self, status: HTTPStatus, data: bytes, kind: str, *, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", self.server.csp)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")


class _LimitedLines:
    """``readline`` over ``stream`` that raises once more than ``limit`` bytes were read (what parsing headers uses)."""

    def __init__(self, stream: Any, limit: int):
        self.stream = stream
        self.left = limit

    def readline(self, size: int = -1) -> bytes:
        line = self.stream.readline(size)
        self.left -= len(line)
        if self.left < 0:
            raise http.client.HTTPException(f"the request's headers are larger than {MAX_BODY} bytes")
        return line


def _item_json(item: RatingItem) -> dict[str, Any]:
    return {"id": item.item_id, "instruction": item.instruction, "input": item.input, "reference": item.reference, "outputs": list(item.outputs)}


def _rating_json(rating: Rating) -> dict[str, Any]:
    return {"value": rating.value, "comment": rating.comment}


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (not a number, a bool, or too large for a float: a 400-digit integer)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _json_type(value: Any) -> str:
    return {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _allowed(scale: RatingScale) -> str:
    if scale.pairwise:
        return "1 (left), 0.5 (tie) or 0 (right)"
    return ", ".join(_num(v) for v in scale.values)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"

