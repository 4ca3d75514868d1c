"""The framework's floor: `bench/bare_app.py`'s fixed answer, served through Starlette (the framework Pollux uses).

One route, no middleware of its own: it reads the body, parses it as JSON and answers the same fixed bytes as the
bare app, under the same `uvicorn.run` options. Set beside the bare app in `bench/run.sh`, it shows what the framework
alone costs before any of Pollux's work.

    python bench/starlette_app.py --host 127.0.0.1 --port 18083
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bare_app import BAD, BODY, serve


async def model_action(request: Request) -> Response:
    try:
        json.loads(await request.body())
    except ValueError:
        return Response(BAD, status_code=400, media_type="application/json; charset=UTF-8")
    return Response(BODY, media_type="application/json; charset=UTF-8")


app = Starlette(routes=[Route("/{version}/models/{name:path}", model_action, methods=["POST"])])


if __name__ == "__main__":
    serve(app, __doc__.splitlines()[0], 18083)
