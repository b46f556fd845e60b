"""A stand-in for an OpenAI-compatible chat-completions server (a real model cannot run here).

It is NOT a model: it streams a scripted reply as server-sent events, with the latency and failures
a test or a benchmark asks for, and records every request, so the `openai` generator, the answer
workers and `manage.py bench_ask` are exercised over real HTTP. Tests and the benchmark share it.

    with StandinLLM(answer_seconds=2).running() as llm:    # in a background thread
        settings.KB_LLM_URL = llm.url                      # http://127.0.0.1:<port>/v1

    python -m bench.standin_llm --port 8090 --answer-seconds 2   # standalone, for `make up`

Behaviour knobs (attributes; change them while it runs):

- `answer_seconds`: the whole reply takes this long, spread evenly over its tokens
- `first_token_seconds`: silence before the first byte of the response (headers included)
- `fail_next`: status codes answered to the next requests, one each (e.g. [429] then success)
- `hang`: accept requests and never answer (until `stop()`)
- `reply`: fixed reply text, or None for the default: a sentence citing source [1] when the
  prompt carries sources, "Not in the knowledge base." otherwise

Every request is recorded in `requests` (request id from the X-Request-Id header, status, tokens
sent, whether the client went away before the end).
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NOT_FOUND = "Not in the knowledge base."
SOURCE_LINE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)
TOKEN = re.compile(r"\S+\s*")


@dataclass
class RecordedRequest:
    request_id: str
    body: dict
    status: int = 0
    tokens_sent: int = 0
    completed: bool = False
    disconnected: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None


def default_reply(messages: list[dict]) -> str:
    prompt = "\n".join(str(message.get("content", "")) for message in messages if message.get("role") == "user")
    sources = SOURCE_LINE.findall(prompt)
    if not sources:
        return NOT_FOUND
    number, title = sources[0]
    return f"According to {title.strip() or 'the first source'}, the knowledge base answers this [{number}]."


class StandinLLM:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, answer_seconds: float = 0.0,
                 first_token_seconds: float = 0.0, reply: str | None = None):
        self.answer_seconds = answer_seconds
        self.first_token_seconds = first_token_seconds
        self.reply = reply
        self.fail_next: list[int] = []
        self.hang = False
        self.requests: list[RecordedRequest] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> StandinLLM:
        self.thread = threading.Thread(target=self.server.serve_forever, name="standin-llm", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    @contextmanager
    def running(self) -> Iterator[StandinLLM]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    # -- what happened -----------------------------------------------------------------------
    def completed_by_request(self) -> Counter[str]:
        """Completed (fully streamed) replies per request id."""
        with self.lock:
            return Counter(r.request_id for r in self.requests if r.completed)

    def requests_for(self, request_id: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.request_id == request_id]

    # -- the server --------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # quiet: tests and benchmarks read `requests`
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                record = RecordedRequest(self.headers.get("X-Request-Id", ""), body)
                with standin.lock:
                    standin.requests.append(record)
                    failure = standin.fail_next.pop(0) if standin.fail_next else None
                try:
                    standin._serve(self, record, failure)
                except (BrokenPipeError, ConnectionResetError):
                    record.disconnected = True
                finally:
                    record.finished = time.monotonic()

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler, record: RecordedRequest, failure: int | None) -> None:
        if not handler.path.rstrip("/").endswith("/chat/completions"):
            return self._send_json(handler, record, 404, {"error": {"message": "not found"}})
        if self.hang:
            self.stopping.wait(600)
            return None
        if failure is not None:
            headers = {"Retry-After": "0"} if failure == 429 else {}
            return self._send_json(handler, record, failure, {"error": {"message": f"stand-in failure {failure}"}},
                                   headers)
        if self.first_token_seconds:
            time.sleep(self.first_token_seconds)
        body = record.body
        text = self.reply if self.reply is not None else default_reply(body.get("messages", []))
        tokens = TOKEN.findall(text) or [text]
        if not body.get("stream"):
            time.sleep(self.answer_seconds)
            record.tokens_sent = len(tokens)
            record.completed = True
            return self._send_json(handler, record, 200, {
                "id": "standin", "object": "chat.completion", "model": body.get("model", ""),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(tokens), "total_tokens": len(tokens)},
            })
        record.status = 200
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        pause = self.answer_seconds / len(tokens)
        model = body.get("model", "")

        def event(payload: dict) -> None:
            handler.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())

        chunk = {"id": "standin", "object": "chat.completion.chunk", "model": model}
        event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        for token in tokens:
            if pause:
                time.sleep(pause)
            event({**chunk, "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": None}]})
            record.tokens_sent += 1
        event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt = sum(len(str(m.get("content", ""))) // 4 for m in body.get("messages", []))
            event({**chunk, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": len(tokens),
                                                     "total_tokens": prompt + len(tokens)}})
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()
        record.completed = True
        return None

    @staticmethod
    def _send_json(handler, record: RecordedRequest, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        record.status = status
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description="Stand-in OpenAI-compatible chat server (not a model).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--answer-seconds", type=float, default=2.0)
    args = parser.parse_args()
    standin = StandinLLM(host=args.host, port=args.port, answer_seconds=args.answer_seconds)
    print(f"stand-in model at {standin.url} (KB_LLM_URL)", flush=True)
    try:
        standin.server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
