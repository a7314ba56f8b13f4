"""A small real HTTP server speaking the OpenAI chat-completions protocol, for tests.

What it answers depends on the requested model:

- ``tool-user``: to a conversation ending with a user turn (and tools offered) it
  answers with a call of the first tool, ``{"query": <the user's text>}``; to one
  ending with a tool turn it answers ``done: <the tool's content>``.
- ``status-<code>``: an error response with that HTTP status.

Every request body is kept in ``requests``, and its arrival time (``time.time``) in
``arrivals``, for assertions. The requests numbered in ``throttled`` (1-based) are
answered 429 with ``Retry-After: retry_after``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.throttled: set[int] = set()
        self.retry_after = "1"
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.requests.append(body)
                    fake.arrivals.append(time.time())
                    number = len(fake.requests)
                status, answer = fake.answer(body)
                if number in fake.throttled:
                    status, answer = 429, {"error": {"message": "slow down", "type": "rate"}}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", fake.retry_after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = body["model"]
        if model.startswith("status-"):
            code = int(model.removeprefix("status-"))
            return code, {"error": {"message": f"scripted {code}", "type": "test", "code": None}}
        last = body["messages"][-1]
        if last["role"] == "user" and body.get("tools"):
            tool = body["tools"][0]["function"]["name"]
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{len(self.requests)}",
                        "type": "function",
                        "function": {
                            "name": tool,
                            "arguments": json.dumps({"query": last["content"]}),
                        },
                    }
                ],
            }
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": f"done: {last['content']}"}
            finish = "stop"
        words = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
        return 200, {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": words, "completion_tokens": 7, "total_tokens": words + 7},
        }

    @contextmanager
    def running(self) -> Iterator[FakeOpenAI]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()
