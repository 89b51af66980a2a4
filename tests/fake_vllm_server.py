"""A small HTTP server that speaks the part of vLLM's OpenAI-compatible API that TRL's `VLLMClient` uses to score
sequences (`GET /health`, `GET /v1/models`, `POST /v1/completions` with `prompt_logprobs`), answering with a real
model's log-probs. The real vLLM server is tested too (tests/test_vllm_teacher_server.py); this stand-in starts in
milliseconds and can misbehave on demand (stall, answer 503, lose a token, send vLLM's stand-in for -inf), which a real
server cannot be made to do.

Response format, as vLLM's: `choices[i].prompt_logprobs` is a list over the prompt's positions, `None` at position 0,
then a dict `{"<token id>": {"logprob", "rank", "decoded_token"}}` holding the top-k tokens by rank (k =
`prompt_logprobs`, -1 for the whole vocabulary) plus the token actually at that position, with its true rank.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


class _JoiningHTTPServer(ThreadingHTTPServer):
    """Handler threads are joined when the server closes: one still computing log-probs when the interpreter exits
    (a request whose client timed out) would abort the process."""

    daemon_threads = False


class FakeVLLMServer:
    """Serves `model` under `model_name` on 127.0.0.1 (a free port); a context manager.

    Attributes a test may set: `error` = (status, body) to answer every completion request with; `drop` = a set of
    (sequence index within a request, prompt position) whose actual token is left out of the response (vLLM would
    always return it; TRL then reports -inf); `negative_infinity` = such a set whose actual token's log-prob is sent as
    -9999.0, which is what vLLM sends for -inf; `failures` = (status, count): answer the next `count` completion
    requests with that status; `stalls` = (seconds, count): sleep that long before answering the next `count`
    completion requests. Ids at or beyond the model's vocabulary are refused with HTTP 400, as vLLM does.
    `requests` records every completion request's JSON body.
    """

    def __init__(self, model, model_name: str):
        self.model, self.model_name = model.eval(), model_name
        self.requests: list[dict] = []
        self.error: tuple[int, str] | None = None
        self.drop: set[tuple[int, int]] = set()
        self.negative_infinity: set[tuple[int, int]] = set()
        self.failures: tuple[int, int] = (503, 0)
        self.stalls: tuple[float, int] = (0.0, 0)
        self.vocab_size = model.config.vocab_size
        self._closing = threading.Event()
        self._server = _JoiningHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._lock = threading.Lock()

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._closing.set()  # ends a stall at once
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads still answering

    @torch.no_grad()
    def prompt_logprobs(self, sequence: list[int], top_k: int) -> list[dict | None]:
        logps = torch.log_softmax(self.model(torch.tensor([sequence])).logits[0].float(), dim=-1)
        entries: list[dict | None] = [None]
        for position in range(1, len(sequence)):
            distribution, token = logps[position - 1], sequence[position]
            ranks = distribution.argsort(descending=True)
            keep = ranks if top_k == -1 else ranks[:top_k]
            entry = {
                str(int(t)): {"logprob": float(distribution[t]), "rank": rank + 1, "decoded_token": ""}
                for rank, t in enumerate(keep.tolist())
            }
            rank = int((distribution > distribution[token]).sum()) + 1
            entry[str(token)] = {"logprob": float(distribution[token]), "rank": rank, "decoded_token": ""}
            entries.append(entry)
        return entries

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, status: int, body: dict | str):
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/health":
                    self._reply(200, {})
                elif self.path == "/v1/models":
                    self._reply(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
                else:
                    self._reply(404, {"detail": "Not Found"})

            def do_POST(self):
                if self.path != "/v1/completions":
                    self._reply(404, {"detail": "Not Found"})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    (status, failures), (seconds, stalls) = server.failures, server.stalls
                    server.failures = (status, max(failures - 1, 0))
                    server.stalls = (seconds, max(stalls - 1, 0))
                if stalls:
                    server._closing.wait(seconds)
                if failures:
                    self._reply(status, {"error": {"message": "Service Unavailable", "code": status}})
                    return
                if server.error is not None:
                    self._reply(*server.error)
                    return
                unknown = [token for sequence in body["prompt"] for token in sequence if token >= server.vocab_size]
                if unknown:  # vLLM's answer, word for word
                    message = f"Token id {unknown[0]} is out of vocabulary"
                    self._reply(400, {"error": {"message": message, "type": "BadRequestError", "code": 400}})
                    return
                if body.get("model") != server.model_name or body.get("max_tokens") != 1:
                    self._reply(400, {"error": f"unexpected request {body}"})
                    return
                choices = []
                for index, sequence in enumerate(body["prompt"]):
                    entries = server.prompt_logprobs(sequence, body["prompt_logprobs"])
                    for dropped_index, position in server.drop:
                        if dropped_index == index:
                            entries[position].pop(str(sequence[position]))
                    for clamped_index, position in server.negative_infinity:
                        if clamped_index == index:
                            entries[position][str(sequence[position])]["logprob"] = -9999.0
                    choices.append({"index": index, "text": "", "finish_reason": "length", "prompt_logprobs": entries})
                self._reply(200, {"object": "text_completion", "model": server.model_name, "choices": choices})

        return Handler
