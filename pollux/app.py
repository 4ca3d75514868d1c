"""The ASGI app: routes under /v1, /v1beta and /v1alpha, auth on each, errors in Gemini's shape."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from . import admission, auth
from .admission import AdmitLargeBodies, OverBudget, over_budget_error
from .batches import router as batches_router
from .batches.service import BatchService
from .body_timeout import BodyIdleTimeout
from .caches import router as caches_router
from .caches.service import CacheService
from .compression import GzipJson
from .config import Settings
from .embeddings import openai as embed_openai
from .embeddings import router as embed_router
from .embeddings.engines import build_embedders, is_embedding
from .embeddings.service import EmbedService
from .engines import registry
from .engines.base import Engine
from .errors import ApiError, model_not_found, retry_info
from .files import router as files_router
from .files.service import FileService
from .files.uploads import UploadService
from .generate import router as generate_router
from .generate.service import GenerateService
from .generate.signatures import Signer, legacy_key
from .images import router as images_router
from .images.engines import build_image_engines, is_image_model
from .images.service import ImageService
from .jobs import JobRunner
from .models import router as models_router
from .models.service import ModelService
from .openai import batches as openai_batches
from .openai import chat as openai_chat_router
from .openai import images as openai_images
from .openai import models as openai_models
from .openai.errors import error_response as openai_error_response
from .store import Store, StoreUnavailable
from .store.blobs import BlobStore, BlobUnavailable, open_blobs
from .store.db import utcnow
from .store.records import Job
from .wire import JSONResponse, error_response, read_body

log = logging.getLogger("pollux")

VERSIONS = "{version:apiversion}"


@dataclass
class Engines:
    """What serves tokens, loaded before the server takes requests (minutes for large models)."""

    text: dict[str, Engine]
    embeddings: EmbedService
    images: dict[str, Any]


@dataclass
class Services:
    settings: Settings
    store: Store
    blobs: BlobStore
    jobs: JobRunner
    models: ModelService
    generate: GenerateService
    engines: dict[str, Engine]
    files: FileService
    uploads: UploadService
    embeddings: EmbedService
    images: ImageService
    batches: BatchService
    caches: CacheService


def build_engines(settings: Settings) -> Engines:
    # Generation engines, one per distinct (engine, options), from the registry; the emulator always runs (it
    # writes the text beside pictures painted by image engines, and serves every model not configured otherwise).
    engines: dict[str, Engine] = {"emulator": registry.create("emulator", "text", None, settings)}
    # Embedding models (their methods say so) get embedding engines, apart from the generation engines.
    embeddings = EmbedService(settings, build_embedders(settings))
    for model in list(settings.models.values()):
        if is_embedding(model) or is_image_model(model):
            continue
        if model.engine_key not in engines:
            engines[model.engine_key] = registry.build(model, "text", settings)
        context = engines[model.engine_key].capabilities.context_length
        if context is not None:  # the served limits are the loaded model's, not the catalogue's
            settings.models[model.id] = replace(model, input_token_limit=context,
                                                output_token_limit=min(model.output_token_limit, context))
    # One set of image engines: Imagen's (predict) and the image-output models' share loaded pipelines.
    return Engines(engines, embeddings, build_image_engines(settings, predict=True, generate=True))


async def open_store(settings: Settings) -> Store:
    """The shared database, its schema brought up to date."""
    return await Store.open(settings.database_url, settings.data_dir)


def open_blob_store(settings: Settings) -> BlobStore:
    # The data dir itself by default: files keep the places they had before the blob seam.
    return open_blobs(settings.blob_url or str(settings.data_dir), settings.data_dir)


async def open_services(settings: Settings, engines: Engines) -> Services:
    """The services on the shared state: each process of a deployment opens its own."""
    store = await open_store(settings)
    blobs = open_blob_store(settings)
    limits = settings.limits
    jobs = JobRunner(store, lease=limits.job_lease_seconds)
    files = FileService(store, blobs, limits, jobs, scratch=settings.data_dir / "local-copies")
    uploads = UploadService(files, limits.upload_ttl_seconds)

    async def housekeeping(_job: Job) -> None:
        gone_files, gone_uploads = await files.sweep(), await uploads.sweep()
        ended_batches, gone_caches = await batches.sweep(), await caches.sweep()
        await store.jobs.purge(utcnow() - timedelta(days=1))
        if gone_files or gone_uploads or ended_batches or gone_caches:
            log.info("expired: %d files, %d uploads, %d batches, %d caches", gone_files, gone_uploads, ended_batches,
                     gone_caches)

    jobs.handle("housekeeping", housekeeping, every=limits.housekeeping_seconds)
    signer = Signer(await store.secrets.get_or_create("thought-signatures", lambda: legacy_key(settings.data_dir)))
    caches = CacheService(store, blobs, files, limits)
    generate = GenerateService(settings, engines.text, signer, files, caches, engines.images)
    images = ImageService(settings, engines.images)
    batches = BatchService(store, blobs, limits, jobs, files, generate, engines.embeddings,
                           scratch=settings.data_dir / "batch-scratch")
    return Services(settings, store, blobs, jobs, ModelService(settings), generate, engines.text, files, uploads,
                    engines.embeddings, images, batches, caches)


def _services(request: Request) -> Services:
    return request.app.state.services


async def _request_body(request: Request, services: Services) -> bytes:
    """An API request's body, within the limits on its bytes and on its JSON values."""
    limits = services.settings.limits
    return await read_body(request, limits.max_request_bytes, limits.max_request_values)


Handler = Callable[[Request], Awaitable[Response]]
ModelVerb = Callable[[Request, Services, str, bytes], Awaitable[Response]]


def _on(service: Callable[[Services], Any], handler: Callable[[Request, Any, str, bytes], Awaitable[Response]]
        ) -> ModelVerb:
    """A verb handler of one resource, given the service it takes."""
    async def verb(request: Request, services: Services, model_name: str, body: bytes) -> Response:
        return await handler(request, service(services), model_name, body)
    return verb


async def _count_tokens(request: Request, services: Services, model_name: str, body: bytes) -> Response:
    # An embedding model on an engine of its own counts with that engine's tokenizer.
    if services.embeddings.counts_tokens(model_name):
        return await embed_router.count_tokens(request, services.embeddings, model_name, body)
    return await generate_router.count_tokens(request, services.generate, model_name, body)


# POST models/{model}:{verb} handlers, by verb.
MODEL_VERBS: dict[str, ModelVerb] = {
    **{verb: _on(lambda s: s.generate, h) for verb, h in generate_router.VERBS.items()},
    **{verb: _on(lambda s: s.embeddings, h) for verb, h in embed_router.VERBS.items()},
    "countTokens": _count_tokens,
    "predict": _on(lambda s: s.images, images_router.predict),
    **{verb: _on(lambda s: s.batches, h) for verb, h in batches_router.VERBS.items()},
}


def authorized(handler: Handler) -> Handler:
    """Every API route goes through this: the key resolves to a project (`request.state.project_id`) or the request
    gets the real API's error."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        request.state.project_id = await auth.authenticate(_services(request).store, request)
        return await handler(request)

    return wrapper


@authorized
async def list_models(request: Request) -> Response:
    return await models_router.list_models(request, _services(request).models)


@authorized
async def get_model(request: Request) -> Response:
    return await models_router.get_model(request, _services(request).models, request.path_params["name"])


@authorized
async def list_tuned_models(request: Request) -> Response:
    return JSONResponse({})


@authorized
async def tuned_model(request: Request) -> Response:
    """Tuning is not offered, so no tuned model exists."""
    name = request.path_params["name"].partition(":")[0]
    raise ApiError.not_found(f"tunedModels/{name} is not found.")


@authorized
async def model_action(request: Request) -> Response:
    services = _services(request)
    name, _, verb = request.path_params["name"].rpartition(":")
    handler = MODEL_VERBS.get(verb)
    if not name or handler is None:
        raise model_not_found(name or verb, request.path_params["version"], verb or "this method")
    body = await _request_body(request, services)
    return await handler(request, services, name, body)


async def upload(request: Request) -> Response:
    """Chunks of a resumable upload are authorized by the capability in their URL; a key, when sent (the JS SDK
    sends one), must be the upload's project's."""
    services = _services(request)
    try:
        project_id = await auth.authenticate(services.store, request) if auth.request_key(request) else None
        return await files_router.upload(request, services.uploads, project_id)
    except ApiError as err:
        # Every upload response carries a status, or the SDKs retry the chunk before they report the error.
        response = error_response(err)
        response.headers["X-Goog-Upload-Status"] = "final" if err.code == 404 else "active"
        return response


@authorized
async def list_files(request: Request) -> Response:
    return await files_router.list_files(request, _services(request).files, request.state.project_id)


@authorized
async def get_file(request: Request) -> Response:
    return await files_router.get_file(request, _services(request).files, request.state.project_id,
                                       request.path_params["name"])


@authorized
async def delete_file(request: Request) -> Response:
    return await files_router.delete_file(request, _services(request).files, request.state.project_id,
                                          request.path_params["name"])


@authorized
async def download_file(request: Request) -> Response:
    return await files_router.download(request, _services(request).files, request.state.project_id,
                                       request.path_params["name"].removesuffix(":download"))


@authorized
async def list_batches(request: Request) -> Response:
    return await batches_router.list_batches(request, _services(request).batches, request.state.project_id)


@authorized
async def batch(request: Request) -> Response:
    return await batches_router.batch(request, _services(request).batches, request.state.project_id,
                                      request.path_params["name"])


@authorized
async def create_cache(request: Request) -> Response:
    services = _services(request)
    body = await _request_body(request, services)
    return await caches_router.create(request, services.caches, services.generate, request.state.project_id, body)


@authorized
async def list_caches(request: Request) -> Response:
    return await caches_router.list_caches(request, _services(request).caches, request.state.project_id)


@authorized
async def cache(request: Request) -> Response:
    services = _services(request)
    body = await _request_body(request, services) if request.method == "PATCH" else None
    return await caches_router.cache(request, services.caches, request.state.project_id, request.path_params["name"],
                                     body)


@authorized
async def openai_create_batch(request: Request) -> Response:
    services = _services(request)
    body = await _request_body(request, services)
    return await openai_batches.create(request, services.batches, request.state.project_id, body)


@authorized
async def openai_list_batches(request: Request) -> Response:
    return await openai_batches.list_batches(request, _services(request).batches, request.state.project_id)


@authorized
async def openai_batch(request: Request) -> Response:
    return await openai_batches.batch(request, _services(request).batches, request.state.project_id,
                                      request.path_params["name"])


@authorized
async def openai_embeddings(request: Request) -> Response:
    services = _services(request)
    return await embed_openai.embeddings(request, services.embeddings, await _request_body(request, services))


@authorized
async def openai_chat(request: Request) -> Response:
    services = _services(request)
    body = await _request_body(request, services)
    return await openai_chat_router.chat_completions(request, services.generate, request.state.project_id, body)


@authorized
async def openai_images_generations(request: Request) -> Response:
    services = _services(request)
    body = await _request_body(request, services)
    return await openai_images.generations(request, services.images, body)


@authorized
async def openai_list_models(request: Request) -> Response:
    return JSONResponse(openai_models.list_models(_services(request).settings))


@authorized
async def openai_get_model(request: Request) -> Response:
    return JSONResponse(openai_models.get_model(_services(request).settings, request.path_params["name"],
                                                request.path_params["version"]))


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _render(request, exc)


def _render(request: Request, err: ApiError) -> Response:
    """Gemini's error object, or on the OpenAI-compatible surface the compat layer's array around it (auth errors
    and unknown paths included)."""
    path = request.url.path
    if "/openai/" in path or path.endswith("/chat/completions"):
        return openai_error_response(err)
    return error_response(err)


async def _over_budget(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OverBudget)
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return _render(request, over_budget_error(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # A known path with the wrong method is, to Google's front end, a path that does not exist.
    return _render(request, ApiError.not_found(f"The requested URL {request.url.path} was not found on this server."))


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client closed the connection before its body was complete, or its body stalled (BodyIdleTimeout): nothing
    # was done. The status is nginx's "client closed request"; a stalled client still connected gets it.
    log.info("%s %s: the request body did not arrive whole", request.method, request.url.path)
    return Response(status_code=499, headers={"connection": "close"})  # the rest of the body may never come


async def _state_unavailable(request: Request, exc: Exception) -> Response:
    # The database or the blob store cannot be reached: nothing was acknowledged, the client retries.
    log.warning("%s %s: shared state unavailable: %s", request.method, request.url.path, exc)
    return _render(request, ApiError("UNAVAILABLE", "The service is currently unavailable.",
                                     details=[retry_info(2)]))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _render(request, ApiError("INTERNAL", "An internal error has occurred. Please retry or report in "
                                     "https://developers.generativeai.google/guide/troubleshooting"))


def _routes() -> list[Route]:
    # The generation route first: it carries nearly all the traffic.
    routes = [Route(f"/{VERSIONS}/models/{{name:path}}", model_action, methods=["POST"])]
    routes += [
        Route("/healthz", health),
        Route(f"/{VERSIONS}/models", list_models, methods=["GET"]),
        Route(f"/{VERSIONS}/models/{{name:path}}", get_model, methods=["GET"]),
        Route(f"/{VERSIONS}/tunedModels", list_tuned_models, methods=["GET"]),
        Route(f"/{VERSIONS}/tunedModels/{{name:path}}", tuned_model, methods=["GET", "POST"]),
        Route(f"/upload/{VERSIONS}/files", upload, methods=["POST"]),
        Route(f"/{VERSIONS}/files", list_files, methods=["GET"]),
        Route(f"/{VERSIONS}/files/{{name:path}}", get_file, methods=["GET"]),
        Route(f"/{VERSIONS}/files/{{name:path}}", delete_file, methods=["DELETE"]),
        Route(f"/download/{VERSIONS}/files/{{name:path}}", download_file, methods=["GET"]),
        Route(f"/{VERSIONS}/batches", list_batches, methods=["GET"]),
        Route(f"/{VERSIONS}/batches/{{name:path}}", batch, methods=["GET", "POST", "DELETE"]),
        Route(f"/{VERSIONS}/cachedContents", create_cache, methods=["POST"]),
        Route(f"/{VERSIONS}/cachedContents", list_caches, methods=["GET"]),
        Route(f"/{VERSIONS}/cachedContents/{{name:path}}", cache, methods=["GET", "PATCH", "DELETE"]),
        Route(f"/{VERSIONS}/openai/embeddings", openai_embeddings, methods=["POST"]),
        Route(f"/{VERSIONS}/openai/chat/completions", openai_chat, methods=["POST"]),
        Route(f"/{VERSIONS}/chat/completions", openai_chat, methods=["POST"]),  # the docs' cached_content base URL
        Route(f"/{VERSIONS}/openai/images/generations", openai_images_generations, methods=["POST"]),
        Route(f"/{VERSIONS}/openai/models", openai_list_models, methods=["GET"]),
        Route(f"/{VERSIONS}/openai/batches", openai_create_batch, methods=["POST"]),
        Route(f"/{VERSIONS}/openai/batches", openai_list_batches, methods=["GET"]),
        Route(f"/{VERSIONS}/openai/batches/{{name:path}}", openai_batch, methods=["GET", "POST"]),
        Route(f"/{VERSIONS}/openai/models/{{name:path}}", openai_get_model, methods=["GET"]),
    ]
    return routes


def build_app(settings: Settings, engines: Engines) -> Starlette:
    """The app of one process. Its lifespan opens the shared state (a database that cannot be reached fails the
    start-up) and runs this process's share of the leased jobs."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = await open_services(settings, engines)
        app.state.services = services
        await services.jobs.start()
        services.caches.start()
        try:
            yield
        finally:
            await services.caches.stop()
            await services.jobs.stop()
            for engine in services.engines.values():
                await engine.close()
            await services.embeddings.close()
            await services.images.close()
            await services.blobs.close()
            await services.store.close()

    limits = settings.limits
    budget = admission.configure(limits.memory_budget_mb * admission.MB, limits.admission_wait_seconds)
    app = Starlette(routes=_routes(), lifespan=lifespan, exception_handlers={
        ApiError: _api_error, OverBudget: _over_budget, StoreUnavailable: _state_unavailable,
        BlobUnavailable: _state_unavailable, HTTPException: _http_error, ClientDisconnect: _client_gone,
        Exception: _internal_error},
        middleware=[Middleware(GzipJson),  # JSON bodies of 1 KiB or more, when the client accepts gzip
                    Middleware(BodyIdleTimeout, idle=limits.body_idle_seconds, total=limits.body_timeout_seconds),
                    Middleware(AdmitLargeBodies, budget=budget)])
    return app


def _register_convertors() -> None:
    from starlette.convertors import Convertor, register_url_convertor

    class ApiVersion(Convertor[str]):
        regex = "v1|v1beta|v1alpha"

        def convert(self, value: str) -> str:
            return value

        def to_string(self, value: str) -> str:
            return value

    register_url_convertor("apiversion", ApiVersion())


_register_convertors()
