"""The rating page's server and JSON API (harness.report.rating_page), over real HTTP on 127.0.0.1.

The page itself is driven in a real browser in tests/test_rating_page_browser.py.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading

import pytest

import rating_samples
from harness.api import PAIR_LEFT, Rating, RatingItem, RatingScale
from harness.errors import UserError
from harness.report.rating_page import AlreadyRated, MemoryBackend, UnknownItem, annotator_order, check_annotator, serve


@pytest.fixture
def page():
    """A likert page over six items, serving in a thread."""
    backend = MemoryBackend(rating_samples.items("likert"), RatingScale("likert"))
    server = serve(backend, announce=None).start()
    yield server
    server.stop()


def request(server, method, path, body=None, *, headers=None, raw=None):
    con = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        sent = {"Content-Type": "application/json"} if body is not None else {}
        sent.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        con.request(method, path, body=data, headers=sent)
        response = con.getresponse()
        payload = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, (json.loads(payload) if kind.startswith("application/json") else payload), response
    finally:
        con.close()


def rate(server, annotator, item_id, value, comment=""):
    return request(server, "POST", "/api/ratings", {"annotator": annotator, "item_id": item_id, "value": value, "comment": comment})


# --------------------------------------------------------------------------- backend


def test_memory_backend_contract():
    items = rating_samples.items("binary")
    backend = MemoryBackend(items, RatingScale("binary"))
    backend.submit(Rating(items[0].item_id, "ann", 1.0))
    with pytest.raises(AlreadyRated) as err:
        backend.submit(Rating(items[0].item_id, "ann", 0.0))
    assert err.value.given.value == 1.0 and isinstance(err.value, UserError)
    with pytest.raises(UnknownItem):
        backend.submit(Rating("nope", "ann", 1.0))
    with pytest.raises(UserError, match="off the binary scale"):
        backend.submit(Rating(items[1].item_id, "ann", 3.0))
    backend.submit(Rating(items[0].item_id, "other", 0.0))  # another annotator may rate it
    assert backend.given("ann") == {items[0].item_id: Rating(items[0].item_id, "ann", 1.0)}
    assert [r.annotator for r in backend.ratings()] == ["ann", "other"]


def test_memory_backend_refuses_items_that_do_not_fit():
    with pytest.raises(ValueError, match="needs 2"):
        MemoryBackend(rating_samples.items("likert"), RatingScale("pairwise"))
    with pytest.raises(ValueError, match="used twice"):
        MemoryBackend(rating_samples.items("likert")[:1] * 2, RatingScale("likert"))


def test_concurrent_submits_of_one_item_store_one():
    items = rating_samples.items("binary")
    backend = MemoryBackend(items, RatingScale("binary"))
    outcomes = []
    barrier = threading.Barrier(8)

    def submit(value):
        barrier.wait()
        try:
            backend.submit(Rating(items[0].item_id, "ann", value))
            outcomes.append("stored")
        except AlreadyRated:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit, args=(float(i % 2),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["stored"]
    assert len(backend.ratings()) == 1


def test_annotator_order_is_stable_and_personal():
    items = [RatingItem(f"h{i:03d}", "", "", "", ("x",)) for i in range(40)]
    one = annotator_order(items, "ann")
    assert one == annotator_order(list(reversed(items)), "ann")
    assert sorted(i.item_id for i in one) == [i.item_id for i in items]
    assert one != annotator_order(items, "bob")
    # adding items keeps the relative order of the others
    more = annotator_order([*items, RatingItem("h999", "", "", "", ("x",))], "ann")
    assert [i for i in more if i.item_id != "h999"] == one


@pytest.mark.parametrize("name", ["", "   ", None, "x" * 81, "tab\there", "line\nbreak", "zero\u200bwidth"])
def test_bad_annotator_names(name):
    with pytest.raises(UserError):
        check_annotator(name)


def test_good_annotator_names():
    assert check_annotator("  Ann Smith ") == "Ann Smith"
    assert check_annotator("Zoë") == "Zoë"
    assert check_annotator("Zoe\u0308") == "Zoë"  # one person, one name, however the keyboard composed it


# --------------------------------------------------------------------------- API


def test_page_is_self_contained(page):
    status, body, response = request(page, "GET", "/")
    assert status == 200 and response.getheader("Content-Type") == "text/html; charset=utf-8"
    html = body.decode("utf-8")
    assert "<script" in html and "<style" in html
    for external in ("http://", "https://", "//cdn", "src=", "@import", "url("):
        assert external not in html, external
    assert re.findall(r'href="([^"]*)"', html) == ["data:,"]  # the (empty) icon, so the browser asks for no favicon
    csp = response.getheader("Content-Security-Policy")
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
    assert csp.count("'sha256-") == 2  # the one script and the one style block


def test_config_and_session(page):
    status, config, _ = request(page, "GET", "/api/config")
    assert status == 200 and config == {"scale": "likert", "values": [1.0, 2.0, 3.0, 4.0, 5.0], "pairwise": False, "annotator": None}
    status, session, _ = request(page, "GET", "/api/session?annotator=Ann")
    assert status == 200 and session["annotator"] == "Ann" and session["done"] == 0 and session["total"] == 6
    expected = annotator_order(rating_samples.items("likert"), "Ann")
    assert [i["id"] for i in session["items"]] == [i.item_id for i in expected]
    assert session["items"][0] == {"id": expected[0].item_id, "instruction": expected[0].instruction, "input": expected[0].input, "reference": expected[0].reference, "outputs": list(expected[0].outputs)}


def test_rating_is_stored_at_once_and_never_twice(page):
    item = rating_samples.items("likert")[3]
    status, body, _ = rate(page, "Ann", item.item_id, 4, "fine")
    assert status == 201 and body == {"given": {"value": 4.0, "comment": "fine"}, "done": 1, "total": 6}
    assert page.backend.ratings() == [Rating(item.item_id, "Ann", 4.0, comment="fine", where="rating page")]

    status, body, _ = rate(page, "Ann", item.item_id, 2)
    assert status == 409 and "already rated" in body["error"] and body["given"] == {"value": 4.0, "comment": "fine"}
    status, body, _ = request(page, "GET", f"/api/items/{item.item_id}?annotator=Ann")
    assert status == 200 and body["given"] == {"value": 4.0, "comment": "fine"}
    assert len(page.backend.ratings()) == 1
    # another annotator is someone else
    assert rate(page, "Bob", item.item_id, 2)[0] == 201
    status, session, _ = request(page, "GET", "/api/session?annotator=Ann")
    assert session["done"] == 1 and session["given"] == {item.item_id: {"value": 4.0, "comment": "fine"}}


def test_unknown_item_is_404(page):
    status, body, _ = rate(page, "Ann", "h-no-such-item", 3)
    assert status == 404 and "no item 'h-no-such-item'" in body["error"]
    status, body, _ = request(page, "GET", "/api/items/h-no-such-item?annotator=Ann")
    assert status == 404 and "h-no-such-item" in body["error"]
    assert request(page, "GET", "/nothing-here")[0] == 404
    assert page.backend.ratings() == []


@pytest.mark.parametrize("value", [0, 6, 2.5, "3", None, True])
def test_value_off_the_scale_is_400(page, value):
    status, body, _ = rate(page, "Ann", rating_samples.items("likert")[0].item_id, value)
    assert status == 400 and "off the likert scale" in body["error"] and "allowed: 1, 2, 3, 4, 5" in body["error"]
    assert page.backend.ratings() == []


def test_bad_requests(page):
    item_id = rating_samples.items("likert")[0].item_id
    assert request(page, "GET", "/api/session")[0] == 400  # no annotator
    assert request(page, "GET", "/api/session?annotator=%20")[0] == 400
    status, body, _ = request(page, "POST", "/api/ratings", raw=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400 and "not JSON" in body["error"]
    assert request(page, "POST", "/api/ratings", [1, 2])[0] == 400
    assert request(page, "POST", "/api/ratings", {"annotator": "Ann", "value": 3})[0] == 400  # no item
    # a form post (what another web site could make a browser send) is refused
    form = f"annotator=Ann&item_id={item_id}&value=3".encode()
    assert request(page, "POST", "/api/ratings", raw=form, headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    assert request(page, "POST", "/api/ratings", raw=b"x" * 70000, headers={"Content-Type": "application/json"})[0] == 413
    assert request(page, "DELETE", "/api/ratings")[0] == 405
    assert request(page, "POST", "/")[0] == 405
    assert page.backend.ratings() == []


def test_foreign_host_header_is_refused(page):
    """DNS rebinding: a page served from evil.example resolving to 127.0.0.1 sends its own Host."""
    status, body, _ = request(page, "GET", "/api/session?annotator=Ann", headers={"Host": f"evil.example:{page.port}"})
    assert status == 400 and "unexpected Host" in body["error"]
    assert request(page, "GET", "/", headers={"Host": f"localhost:{page.port}"})[0] == 200


def test_fixed_annotator(tmp_path):
    backend = MemoryBackend(rating_samples.items("binary"), RatingScale("binary"))
    lines = []
    with serve(backend, annotator=" Ann ", announce=lines.append).start() as server:
        assert lines == [f"rating page as 'Ann': open {server.url} (Ctrl-C to stop; every rating is saved as it is given)"]
        assert request(server, "GET", "/api/config")[1]["annotator"] == "Ann"
        assert request(server, "GET", "/api/session")[1]["annotator"] == "Ann"
        status, body, _ = request(server, "GET", "/api/session?annotator=Bob")
        assert status == 403 and "rates as 'Ann' only" in body["error"]
        item_id = rating_samples.items("binary")[0].item_id
        assert request(server, "POST", "/api/ratings", {"item_id": item_id, "value": 1})[0] == 201
        assert request(server, "POST", "/api/ratings", {"annotator": "Bob", "item_id": item_id, "value": 1})[0] == 403
    assert [(r.annotator, r.value) for r in backend.ratings()] == [("Ann", 1.0)]


def test_pairwise_values(tmp_path):
    backend = MemoryBackend(rating_samples.items("pairwise"), RatingScale("pairwise"))
    with serve(backend, announce=None).start() as server:
        assert request(server, "GET", "/api/config")[1]["pairwise"] is True
        item_id = rating_samples.items("pairwise")[0].item_id
        status, body, _ = rate(server, "Ann", item_id, 2)
        assert status == 400 and "1 (left), 0.5 (tie) or 0 (right)" in body["error"]
        assert rate(server, "Ann", item_id, 1)[0] == 201
    assert backend.ratings()[0].value == PAIR_LEFT


def test_a_taken_port_is_a_user_error(page):
    with pytest.raises(UserError, match="cannot listen on 127.0.0.1"):
        serve(page.backend, port=page.port, announce=None)


def test_a_broken_backend_answers_500_and_keeps_serving(page, monkeypatch):
    def broken(annotator):
        raise RuntimeError("disk gone")

    monkeypatch.setattr(page.backend, "given", broken)
    status, body, _ = request(page, "GET", "/api/session?annotator=Ann")
    assert status == 500 and "disk gone" in body["error"]
    monkeypatch.undo()
    assert request(page, "GET", "/api/session?annotator=Ann")[0] == 200


# --------------------------------------------------------------------------- limits over a raw socket (issue 17, item 4)


def raw_request(server, head: str, body: bytes = b"", *, timeout: float = 10) -> tuple[int, socket.socket]:
    """Send ``head`` (request line and headers, no final blank line) and ``body`` as bytes; the status and the open socket."""
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    sock.sendall(head.encode() + b"\r\n\r\n" + body)
    return _status(sock), sock


def _status(sock: socket.socket) -> int:
    """Read one response off ``sock``; its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1)) if b"Content-Length" in head else 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(head.split(b" ")[1])


def closed(sock: socket.socket, within: float = 5.0) -> bool:
    """The server closed the connection (the next recv ends or is reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _post_head(server, length: str, *, extra: str = "") -> str:
    return (f"POST /api/ratings HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}" + extra)


@pytest.mark.parametrize("length", ["-1", "-70000", "1e3", "0x10", "12, 12", "999999999999"])
def test_a_body_of_no_sensible_length_is_refused_before_it_is_read(page, length):
    """`Content-Length: -1` once made the server read until the client stopped (300 MB streamed: 51 -> 353 MB)."""
    status, sock = raw_request(page, _post_head(page, length))
    try:
        assert status in (400, 413)
        # the server answered without waiting for a body and closed the connection: nothing more is read
        assert closed(sock)
    finally:
        sock.close()
    assert page.backend.ratings() == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "POST"])
def test_the_body_limit_holds_for_every_request(page, method):
    head = f"{method} /api/config HTTP/1.1\r\nHost: {page.host}:{page.port}\r\nContent-Length: {10 * 1024 * 1024}"
    status, sock = raw_request(page, head, b"x" * 1024)
    try:
        assert status == 413 and closed(sock)
    finally:
        sock.close()
    chunked = f"POST /api/ratings HTTP/1.1\r\nHost: {page.host}:{page.port}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
    status, sock = raw_request(page, chunked, b"ffffff\r\n")
    try:
        assert status == 411 and closed(sock)
    finally:
        sock.close()
    # headers are held to the same limit
    many = "".join(f"\r\nX-Filler-{i}: {'y' * 1000}" for i in range(80))
    status, sock = raw_request(page, f"GET /api/config HTTP/1.1\r\nHost: {page.host}:{page.port}{many}")
    sock.close()
    assert status == 431


def test_a_small_body_on_a_get_is_read_and_the_connection_stays_usable(page):
    head = f"GET /api/config HTTP/1.1\r\nHost: {page.host}:{page.port}\r\nContent-Length: 5"
    status, sock = raw_request(page, head, b"hello")
    try:
        assert status == 200
        sock.sendall(f"GET /api/config HTTP/1.1\r\nHost: {page.host}:{page.port}\r\n\r\n".encode())
        assert _status(sock) == 200
    finally:
        sock.close()


def test_a_post_without_a_length_is_411(page):
    head = f"POST /api/ratings HTTP/1.1\r\nHost: {page.host}:{page.port}\r\nContent-Type: application/json\r\nConnection: close"
    status, sock = raw_request(page, head, b'{"annotator": "Ann"}')
    sock.close()
    assert status == 411


def test_an_idle_or_half_sent_connection_is_closed_after_the_timeout():
    backend = MemoryBackend(rating_samples.items("likert"), RatingScale("likert"))
    with serve(backend, announce=None, timeout=0.5).start() as server:
        silent = socket.create_connection((server.host, server.port), timeout=10)
        half = socket.create_connection((server.host, server.port), timeout=10)
        half.sendall(b"GET /api/config HTTP/1.1\r\nHost: ")  # and never the rest
        body = socket.create_connection((server.host, server.port), timeout=10)
        body.sendall(_post_head(server, "100").encode() + b"\r\n\r\n{\"annotator\"")  # a body that stops halfway
        try:
            for sock in (silent, half, body):
                assert closed(sock, within=5.0)
        finally:
            for sock in (silent, half, body):
                sock.close()
        assert request(server, "GET", "/api/config")[0] == 200  # and the server goes on serving
    assert backend.ratings() == []


@pytest.mark.parametrize("digits", [400, 5000])
def test_an_absurdly_long_number_is_off_the_scale_not_a_500(page, digits):
    item_id = rating_samples.items("likert")[0].item_id
    raw = ('{"annotator": "Ann", "item_id": "%s", "value": %s}' % (item_id, "9" * digits)).encode()
    status, body, _ = request(page, "POST", "/api/ratings", raw=raw, headers={"Content-Type": "application/json"})
    assert status == 400, body
    assert "off the likert scale" in body["error"] or "not JSON" in body["error"]
    assert page.backend.ratings() == []


@pytest.mark.parametrize("item_id", [12345, 1.5, ["h1"], {"id": "h1"}, True])
def test_an_item_id_that_is_not_a_string_says_so(page, item_id):
    status, body, _ = request(page, "POST", "/api/ratings", {"annotator": "Ann", "item_id": item_id, "value": 3})
    assert status == 400 and "'item_id' must be a string" in body["error"], body
    status, body, _ = request(page, "POST", "/api/ratings", {"annotator": 7, "item_id": "h1", "value": 3})
    assert status == 400 and "'annotator' must be a string" in body["error"], body
