"""The ceiling of the stack: a raw ASGI app (no framework) that answers any POST with a fixed generateContent body.

It is served by uvicorn with the options `pollux serve` uses (one worker, default loop and HTTP parser, which with
uvicorn[standard] means uvloop and httptools; log_level="warning", access_log=False), so the only difference from
Pollux in `bench/run.sh` is the application itself. Like a real endpoint it reads the whole request body and parses
it as JSON (a 400 if it is not JSON) before answering.

    python bench/bare_app.py --host 127.0.0.1 --port 18081
"""

from __future__ import annotations

import argparse
import json

# Shaped like, and about the size of (~1 kB), the emulator's answer to the benchmark's request.
BODY = json.dumps({
    "candidates": [{
        "content": {
            "parts": [{
                "text": ("You asked: \"Explain how AI works in a few words\". Streaming splits this text into several "
                         "chunks. This answer comes from a fixed body, a stand-in for a real model. Each sentence "
                         "here is the same on every request."),
                "thoughtSignature": "A" * 412,
            }],
            "role": "model",
        },
        "finishReason": "STOP",
        "index": 0,
    }],
    "usageMetadata": {
        "promptTokenCount": 9, "candidatesTokenCount": 68, "totalTokenCount": 188, "thoughtsTokenCount": 111,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}],
    },
    "modelVersion": "gemini-2.5-flash (bare endpoint)",
    "responseId": "hDvUdD22P-zLBYgcQypPyw",
}, separators=(",", ":")).encode()

HEADERS = [(b"content-type", b"application/json; charset=UTF-8"), (b"content-length", str(len(BODY)).encode())]
BAD = b'{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}'
BAD_HEADERS = [(b"content-type", b"application/json; charset=UTF-8"), (b"content-length", str(len(BAD)).encode())]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body, headers, status = BODY, HEADERS, 200
    if scope["method"] == "POST":
        try:
            json.loads(b"".join(chunks))
        except ValueError:
            body, headers, status = BAD, BAD_HEADERS, 400
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve(asgi_app, description: str, default_port: int) -> None:
    """Serve an ASGI app from the command line with `pollux serve`'s uvicorn options."""
    import uvicorn

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    args = parser.parse_args()
    # The same call as `pollux serve` (pollux/cli.py), so the stacks differ only in the app.
    uvicorn.run(asgi_app, host=args.host, port=args.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    serve(app, __doc__.splitlines()[0], 18081)
