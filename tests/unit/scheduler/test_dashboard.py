"""The dashboard's pure parts: request heads, the token, what viewers see of failures, metrics.

No sockets: :class:`Site` answers a parsed :class:`Request`; the server itself
is tested in tests/integration/scheduler/test_webserver.py.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest

from celeriac.options import BadValue
from celeriac.scheduler.dashboard import (
    FAILURE_FIELDS,
    Site,
    exception_type,
    for_viewers,
    presented,
    prometheus,
)
from celeriac.scheduler.settings import SchedulerSettings, dashboard_token
from celeriac.scheduler.webserver import HttpError, Request, Response, encode, parse_head
from support.prometheus import samples

TOKEN = "s3cret-token-0123456789"
COOKIE = "celeriac-dashboard-8787"
BOOM = "boom: the password is hunter2"


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- request heads ----------------------------------------------------------------


def test_parse_head_reads_the_request_line_query_and_headers() -> None:
    request = parse_head(
        head("GET /api/status?token=abc&x=1&x=2 HTTP/1.1", "Host: 127.0.0.1:8787", "X-A:  b ")
    )
    assert (request.method, request.path, request.version) == ("GET", "/api/status", "HTTP/1.1")
    assert request.query == {"token": "abc", "x": "2"}
    assert request.headers == {"host": "127.0.0.1:8787", "x-a": "b"}
    assert request.keep_alive


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Close", False),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "keep-alive", True),
    ],
)
def test_keep_alive_follows_the_version_and_connection_header(
    version: str, connection: str | None, keep_alive: bool
) -> None:
    lines = [f"GET / {version}"] + ([f"Connection: {connection}"] if connection else [])
    assert parse_head(head(*lines)).keep_alive is keep_alive


def test_repeated_cookie_headers_join_as_one() -> None:
    request = parse_head(head("GET / HTTP/1.1", "Cookie: a=1", "Cookie: b=2"))
    assert request.headers["cookie"] == "a=1; b=2"


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        (["GET /"], 400),
        (["GET  / HTTP/1.1"], 400),
        (["GET / HTTP/2.0"], 505),
        (["GET http://evil.example/ HTTP/1.1"], 400),
        (["OPTIONS * HTTP/1.1"], 400),
        (["GET / HTTP/1.1", "no colon"], 400),
        (["GET / HTTP/1.1", "Host : x"], 400),
        (["GET / HTTP/1.1", "X-A: 1", " folded"], 400),
        (["GET / HTTP/1.1", "Host: a", "Host: b"], 400),
        (["POST / HTTP/1.1", "Content-Length: 5"], 413),
        (["POST / HTTP/1.1", "Transfer-Encoding: chunked"], 413),
    ],
)
def test_parse_head_refuses(lines: list[str], status: int) -> None:
    with pytest.raises(HttpError) as raised:
        parse_head(head(*lines))
    assert raised.value.status == status


def test_encode_sets_length_and_connection_and_leaves_the_body_out_of_head() -> None:
    response = Response(200, b"hello", "text/plain", {"X-A": "1"})
    full = encode(response, keep_alive=True)
    assert full.startswith(b"HTTP/1.1 200 OK\r\n") and full.endswith(b"\r\n\r\nhello")
    for line in (b"Content-Length: 5", b"Connection: keep-alive", b"X-A: 1", b"Cache-Control"):
        assert line in full
    only_head = encode(response, keep_alive=False, head_only=True)
    assert b"Content-Length: 5" in only_head and b"Connection: close" in only_head
    assert only_head.endswith(b"\r\n\r\n")


# -- the token --------------------------------------------------------------------


def site(token: str | None = TOKEN, *, check_host: bool = True, show: bool = False) -> Site:
    snapshot = {"time": 1.0, "info": {"counters": {}}, "failures": [failure()]}
    return Site(
        lambda: snapshot, token=token, cookie=COOKIE, check_host=check_host, show_errors=show
    )


def get(target: str, *headers: str, host: str = "127.0.0.1:8787") -> Request:
    return parse_head(head(f"GET {target} HTTP/1.1", f"Host: {host}", *headers))


@pytest.mark.parametrize("path", ["/", "/api/status", "/metrics", "/nowhere"])
def test_every_path_needs_the_token(path: str) -> None:
    response = site().respond(get(path))
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="celeriac dashboard"'
    assert TOKEN.encode() not in response.body


@pytest.mark.parametrize(
    "credential",
    [
        f"Authorization: Bearer {TOKEN}",
        f"Authorization: bearer  {TOKEN} ",
        f"Cookie: other=1; {COOKIE}={TOKEN}",
    ],
)
def test_a_bearer_header_or_the_cookie_admits(credential: str) -> None:
    assert site().respond(get("/api/status", credential)).status == 200
    assert site().respond(get("/metrics", credential)).status == 200
    assert site().respond(get("/", credential)).status == 200
    assert site().respond(get("/nowhere", credential)).status == 404


@pytest.mark.parametrize(
    "credential",
    [
        "Authorization: Bearer wrong-token-0123456789",
        f"Authorization: Basic {TOKEN}",
        f"Cookie: celeriac-dashboard-8788={TOKEN}",  # another port's dashboard
        f"Cookie: {COOKIE}={TOKEN[:-1]}",
        f"Cookie: {COOKIE}={TOKEN}x",
    ],
)
def test_anything_else_is_refused(credential: str) -> None:
    assert site().respond(get("/api/status", credential)).status == 401


def test_a_wrong_token_is_named_as_such() -> None:
    response = site().respond(get("/api/status?token=wrong-token-0123456789"))
    assert response.status == 401 and b"wrong token" in response.body
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_the_page_without_the_token_asks_for_it() -> None:
    response = site().respond(get("/"))
    assert response.status == 401 and response.content_type.startswith("text/html")
    assert b'<form method="get" action="/">' in response.body and b'name="token"' in response.body
    assert "form-action 'self'" in response.headers["Content-Security-Policy"]
    wrong = site().respond(get("/?token=wrong-token-0123456789"))
    assert wrong.status == 401 and b"not this dashboard&#x27;s" in wrong.body


def test_the_token_in_the_query_sets_the_cookie_and_leaves_the_address_bar() -> None:
    response = site().respond(get(f"/?token={TOKEN}"))
    assert response.status == 303 and response.headers["Location"] == "/"
    assert response.headers["Set-Cookie"] == (
        f"{COOKIE}={TOKEN}; Path=/; HttpOnly; SameSite=Strict"
    )
    assert site().respond(get(f"/api/status?token={TOKEN}")).status == 200  # no redirect


def test_presented_lists_every_credential() -> None:
    request = get("/?token=q", "Authorization: Bearer b", f"Cookie: {COOKIE}=c; x=y")
    assert presented(request, COOKIE) == ["b", "q", "c"]
    assert presented(get("/", "Authorization: Bearer "), COOKIE) == []


def test_no_auth_serves_everyone_but_still_checks_the_host() -> None:
    assert site(None).respond(get("/api/status")).status == 200
    assert site(None).respond(get("/api/status", host="evil.example:8787")).status == 403
    assert site(None, check_host=False).respond(get("/metrics", host="evil.example")).status == 200


def test_the_host_check_comes_before_the_token() -> None:
    """DNS rebinding: even with the token, a foreign Host is refused."""
    bearer = f"Authorization: Bearer {TOKEN}"
    assert site().respond(get("/api/status", bearer, host="evil.example:8787")).status == 403
    for host in ("localhost:8787", "[::1]:8787", "127.0.0.1"):
        assert site().respond(get("/api/status", bearer, host=host)).status == 200


@pytest.mark.parametrize(
    "text", ["", "short", "a" * 15, "a" * 257, "has space 0123456789", "é" * 20]
)
def test_a_given_token_must_be_long_and_url_safe(text: str) -> None:
    with pytest.raises(BadValue, match="16 to 256"):
        dashboard_token(text)


def test_token_options() -> None:
    assert dashboard_token("A-z0.9_~" * 2) == "A-z0.9_~" * 2
    settings = SchedulerSettings()
    assert settings.dashboard_token is None and not settings.dashboard_no_auth
    assert not settings.dashboard_show_errors


# -- what viewers see of failures -------------------------------------------------


def raised_text() -> str:
    try:
        try:
            {}["missing"]
        except KeyError as exc:
            raise ValueError(BOOM + "\n  indented: line\nSecond: line") from exc
    except ValueError as exc:
        return "".join(traceback.format_exception(exc))
    raise AssertionError


def failure(text: str | None = None) -> dict[str, Any]:
    text = raised_text() if text is None else text
    return {"key": "fail-0f", "name": "fail", "kind": "remote", "text": text, "time": 2.0}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (raised_text(), "ValueError"),  # the exception raised, not its cause
        ("Traceback (most recent call last):\n  File \"x\", line 1\nKeyError: 'a'\n", "KeyError"),
        ('Traceback (most recent call last):\n  File "x"\n    f()\n    ^^^\nmod.Err\n', "mod.Err"),
        ('Traceback (most recent call last):\n  File "x"\nnot an exception line\n', None),
        ('Traceback (most recent call last):\n  File "x"\n', None),
        ("soft time limit exceeded", None),
        ("task ran longer than its time limit of 2 s", None),
        ('... cut\n  File "x", line 1\nValueError: truncated head\n', None),
        ("", None),
    ],
)
def test_exception_type(text: str, expected: str | None) -> None:
    assert exception_type(text) == expected


def test_failure_texts_are_hidden_unless_shown() -> None:
    snapshot = {"time": 1.0, "info": {"failures": [failure()]}, "failures": [failure()]}
    hidden = for_viewers(snapshot, show_errors=False)
    assert hidden["errors_shown"] is False
    for shown in (hidden["failures"][0], hidden["info"]["failures"][0]):
        assert shown == {"key": "fail-0f", "name": "fail", "kind": "remote", "type": "ValueError",
                         "time": 2.0}  # fmt: skip
        assert set(shown) <= set(FAILURE_FIELDS)
    assert "hunter2" not in repr(hidden) and "missing" not in repr(hidden)
    assert snapshot["failures"][0]["text"] == failure()["text"]  # the snapshot is left alone

    visible = for_viewers(snapshot, show_errors=True)
    assert visible["errors_shown"] is True
    assert visible["failures"][0]["type"] == "ValueError"
    assert "hunter2" in visible["failures"][0]["text"]


def test_status_is_redacted_by_default_and_encoded_once_per_snapshot() -> None:
    bearer = f"Authorization: Bearer {TOKEN}"
    hidden = site().respond(get("/api/status", bearer))
    assert b'"errors_shown": false' in hidden.body and b"hunter2" not in hidden.body
    assert b"hunter2" in site(show=True).respond(get("/api/status", bearer)).body
    one = site()
    first = one.respond(get("/api/status", bearer)).body
    assert one.respond(get("/api/status", bearer)).body is first  # the same bytes object


# -- Prometheus ------------------------------------------------------------------


def test_metrics_escape_label_values() -> None:
    snapshot = {
        "time": 1.5,
        "info": {
            "counters": {"done": 1},
            "queues": {'we"ird\\queue\nname': 3},
            "workers": [],
            "periodic": [],
        },
    }
    text = prometheus(snapshot)
    assert 'celeriac_queue_depth{queue="we\\"ird\\\\queue\\nname"} 3' in text
    assert samples(text)["celeriac_snapshot_timestamp_seconds"] == 1.5
