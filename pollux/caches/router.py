"""POST/GET /{v}/cachedContents; GET, PATCH, DELETE /{v}/cachedContents/{id}."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..errors import ApiError
from ..generate.service import GenerateService
from ..wire import JSONResponse, page_params, parse
from .protocol import CachedContent, cache_json
from .service import CacheService


async def create(request: Request, caches: CacheService, generate: GenerateService, project_id: str,
                 body: bytes) -> Response:
    cached = parse(CachedContent, body)
    if not cached.model:
        raise ApiError.invalid("* CachedContent.model: model is required.\n")
    model = generate.resolve(cached.model, request.path_params["version"], "createCachedContent")
    return JSONResponse(cache_json(await caches.create(project_id, model, cached, generate)))


async def list_caches(request: Request, caches: CacheService, project_id: str) -> Response:
    records, token = await caches.list(project_id, *page_params(request))
    out: dict = {}
    if records:
        out["cachedContents"] = [cache_json(r) for r in records]
    if token:
        out["nextPageToken"] = token
    return JSONResponse(out)


async def cache(request: Request, caches: CacheService, project_id: str, name: str, body: bytes | None) -> Response:
    """GET, PATCH (the expiration; `updateMask` optional) and DELETE of one cache."""
    if request.method == "GET":
        return JSONResponse(cache_json(await caches.get(project_id, name)))
    if request.method == "DELETE":
        await caches.delete(project_id, name)
        return JSONResponse({})
    assert body is not None
    mask = request.query_params.get("updateMask") or request.query_params.get("update_mask")
    return JSONResponse(cache_json(await caches.update(project_id, name, parse(CachedContent, body), mask)))
