"""A scriptable fake of the OpenAI chat-completions endpoint, on 127.0.0.1 with an ephemeral port.

It lets the API judge's tests exercise every way a real endpoint misbehaves (slow replies,
rate limits, server errors, broken bodies, replies without a verdict) without a network or a
model. Each request takes the next :data:`Action` from a queue (:meth:`FakeOpenAIServer.push`),
or the default action when the queue is empty; the default answers with the scripted judge
function (messages -> reply text).

Everything received is recorded (path, Authorization header, JSON body), and the number of
requests being handled at once is tracked so a test can check the client's concurrency bound.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

JudgeFn = Callable[[list[dict[str, Any]]], str]


@dataclass
class Reply:
    """Answer with the judge function (``text=None``) or with a fixed text."""

    text: str | None = None
    #: Seconds to hold the request before answering (longer than the client timeout: a timeout).
    delay: float = 0.0


@dataclass
class Status:
    """An HTTP error status, e.g. 429 with ``Retry-After: 0`` or 500."""

    code: int
    retry_after: str | None = None
    body: str = '{"error": {"message": "scripted failure"}}'
    #: Put the received Authorization header into the error body (servers do echo keys).
    echo_auth: bool = False


@dataclass
class Malformed:
    """A 200 whose body is not valid JSON, or valid JSON without ``choices[0].message.content``."""

    body: str = '{"choices": [ {"message": '


Action = Reply | Status | Malformed


@dataclass
class Received:
    """One request as the server saw it."""

    path: str
    authorization: str | None
    body: dict[str, Any] | None


@dataclass
class FakeOpenAIServer:
    """The server's script and records; use :func:`serve` to run it."""

    judge: JudgeFn = field(default=lambda messages: "No verdict here.")
    default: Action = field(default_factory=Reply)
    requests: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    _queue: deque[Action] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *actions: Action) -> None:
        """Script the next requests, in order of arrival."""
        with self._lock:
            self._queue.extend(actions)

    def fail_first(self, n: int, action: Action) -> None:
        """The first ``n`` requests (from now) get ``action``."""
        self.push(*([action] * n))

    def _next(self) -> Action:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    # Called by the handler.
    def _enter(self, rec: Received) -> None:
        with self._lock:
            self.requests.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


def completion_body(text: str, model: str = "fake") -> dict[str, Any]:
    """A minimal valid chat-completions response."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _handler(state: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep test output clean

        def _send(self, code: int, body: str, headers: dict[str, str] | None = None) -> None:
            # Leave before the client can read the answer: it sends its next request as soon as
            # it has this one, and leaving afterwards made max_in_flight overcount by one under
            # load (a flaky concurrency test).
            self._leave_once()
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _leave_once(self) -> None:
            if not self._left:
                self._left = True
                state._leave()

        def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
            self._left = False  # one handler serves every request of a kept-alive connection
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            auth = self.headers.get("Authorization")
            state._enter(Received(self.path, auth, body))
            try:
                action = state._next()
                if not self.path.endswith("/chat/completions"):
                    self._send(404, '{"error": {"message": "not found"}}')
                elif isinstance(action, Status):
                    text = action.body
                    if action.echo_auth:
                        text = json.dumps({"error": {"message": f"invalid key in {auth}"}})
                    headers = {"Retry-After": action.retry_after} if action.retry_after else {}
                    self._send(action.code, text, headers)
                elif isinstance(action, Malformed):
                    self._send(200, action.body)
                else:
                    if action.delay and state._stopping.wait(action.delay):
                        return
                    messages = (body or {}).get("messages", [])
                    text = action.text if action.text is not None else state.judge(messages)
                    self._send(200, json.dumps(completion_body(text, (body or {}).get("model"))))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to answer
            finally:
                self._leave_once()

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out close their sockets; that is expected here


@contextmanager
def serve(judge: JudgeFn | None = None) -> Iterator[FakeOpenAIServer]:
    """Run a fake server in a daemon thread for the duration of the ``with`` block."""
    state = FakeOpenAIServer() if judge is None else FakeOpenAIServer(judge=judge)
    server = _Server(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        state._stopping.set()  # release handlers that are sleeping through a scripted delay
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
