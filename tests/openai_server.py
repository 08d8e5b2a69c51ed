"""A small in-test OpenAI-compatible server for what a real one will not do on demand.

It answers ``GET /v1/models`` and ``POST /v1/chat/completions`` / ``/v1/completions`` on 127.0.0.1 (a free
port, a thread; stopped by the fixture). ``faults`` is a queue of what the next requests get instead of an
answer: ``("429", seconds)`` (Retry-After), ``("500", None)``, ``("hang", seconds)`` (no answer for that long),
``("malformed", None)`` (a 200 whose body is not JSON), ``("nologprobs", None)`` (an answer without its
``logprobs`` field), ``("400", message)``. With ``key`` set, a request without ``Bearer <key>`` gets a 401
whose message *echoes the header it got* (as careless servers do), to prove the harness redacts it.
``reply(body)`` makes the answer text (default: a verdict preferring the longer answer for judge prompts,
else a fixed sentence); answers carry top log-probabilities when asked, derived from the text's first token.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def prefer_longer(body: dict[str, Any]) -> str:
    """A scripted judge: prefers the longer of answers A and B ("C" when equal); grades by length; else echoes."""
    text = "\n".join(m.get("content", "") for m in body.get("messages", [])) if "messages" in body else body.get("prompt", "")
    a = re.search(r"\[Start of assistant A's answer\]\n(.*?)\n\[End of assistant A's answer\]", text, re.S)
    b = re.search(r"\[Start of assistant B's answer\]\n(.*?)\n\[End of assistant B's answer\]", text, re.S)
    primed = bool(body.get("messages")) and body["messages"][-1].get("role") == "assistant"
    if a and b:
        la, lb = len(a.group(1)), len(b.group(1))
        letter = "A" if la > lb else "B" if lb > la else "C"
        return f"{letter}]]" if primed else f"Assistant {letter} is more detailed. [[{letter}]]"
    out = re.search(r"\[Start of the assistant's answer\]\n(.*?)\n\[End of the assistant's answer\]", text, re.S)
    if out:
        grade = min(10, 1 + len(out.group(1).split()))
        return f"{grade}]]" if primed else f"Rating: [[{grade}]]"
    return "a served answer"


class Server:
    def __init__(self, *, models: tuple[str, ...] = ("judge-model",), owned_by: str = "test", key: str | None = None,
                 reply: Callable[[dict[str, Any]], str] = prefer_longer):
        self.models = models
        self.owned_by = owned_by
        self.key = key
        self.reply = reply
        self.faults: list[tuple[str, Any]] = []
        self.requests: list[dict[str, Any]] = []  # every POST body received
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _authorized(self) -> bool:
                if server.key is None:
                    return True
                got = self.headers.get("Authorization", "")
                if got == f"Bearer {server.key}":
                    return True
                self._send(401, {"error": {"message": f"invalid api key: got header {got!r}", "type": "invalid_request_error"}})
                return False

            def do_GET(self):  # noqa: N802
                if not self._authorized():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": server.owned_by} for m in server.models]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append(body)
                    fault = server.faults.pop(0) if server.faults else None
                if not self._authorized():
                    return
                kind, arg = fault if fault else ("", None)
                if kind == "429":
                    return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": str(arg)})
                if kind == "500":
                    return self._send(500, {"error": {"message": "internal error"}})
                if kind == "400":
                    return self._send(400, {"error": {"message": arg}})
                if kind == "hang":
                    time.sleep(arg)
                    return self._send(200, {"error": "too late"})
                if kind == "malformed":
                    return self._send(200, None, raw=b"{not json")
                if body.get("model") not in server.models:
                    return self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                text = server.reply(body)
                chat = self.path.rstrip("/").endswith("/chat/completions")
                choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
                tokens = re.findall(r"\s*\S+", text) or [text]
                if chat:
                    choice["message"] = {"role": "assistant", "content": text}
                    if body.get("logprobs") and kind != "nologprobs":
                        choice["logprobs"] = {"content": [
                            {"token": t, "logprob": -0.1, "top_logprobs": _alternatives(t, int(body.get("top_logprobs") or 1))} for t in tokens]}
                else:
                    choice["text"] = text
                    if body.get("logprobs") and kind != "nologprobs":
                        choice["logprobs"] = {"tokens": tokens, "token_logprobs": [-0.1] * len(tokens),
                                              "top_logprobs": [{a["token"]: a["logprob"] for a in _alternatives(t, int(body["logprobs"]))} for t in tokens]}
                self._send(200, {"id": "x", "object": "chat.completion" if chat else "text_completion", "choices": [choice],
                                 "usage": {"prompt_tokens": 11, "completion_tokens": len(tokens), "total_tokens": 11 + len(tokens)}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _alternatives(token: str, n: int) -> list[dict[str, Any]]:
    """The token itself most likely (p ~ 0.9), then the other verdict letters / grades."""
    out = [{"token": token, "logprob": -0.1}]
    core = token.strip().rstrip("]")
    others = [x for x in ("A", "B", "C") if x != core] if core in ("A", "B", "C") else ["x", "y"]
    out += [{"token": o + ("]]" if token.strip().endswith("]]") else ""), "logprob": -3.0 - i} for i, o in enumerate(others)]
    return out[:n]
