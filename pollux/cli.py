"""The `pollux` command: serve, keys, projects."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import auth
from .config import Settings, default_data_dir, load_config, serve_model
from .store import Store, StoreError, StoreUnavailable
from .store.records import Project

if TYPE_CHECKING:
    from .files.uploads import UploadService


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings(data_dir=Path(args.data_dir) if args.data_dir else default_data_dir())
    if getattr(args, "host", None):
        settings.host = args.host
    if getattr(args, "port", None) is not None:
        settings.port = args.port
    if getattr(args, "fixtures", None):
        settings.fixtures = Path(args.fixtures)
    settings = load_config(Path(args.config) if getattr(args, "config", None) else None, settings)
    # The shared state's places: the flag, else the environment, else the config file.
    for name in ("database_url", "blob_url"):
        value = getattr(args, name, None) or os.environ.get(f"POLLUX_{name.upper()}")
        if value:
            setattr(settings, name, value)
    for spec in getattr(args, "model", None) or []:
        serve_model(settings, spec)
    return settings


def _print_key_exports(base_url: str, key: str | None) -> None:
    print("Point the Gemini SDKs at this server:")
    print(f"  export GOOGLE_GEMINI_BASE_URL={base_url}")
    if key:
        print(f"  export GEMINI_API_KEY={key}")
    else:  # only keys' hashes are stored: the first key cannot be shown again
        print("  and set GEMINI_API_KEY to one of its keys (the first was printed on the first start; "
              "`pollux keys create` makes another)")


def _check_sources(settings: Settings) -> None:
    """Every model's local directory or hub id, checked before anything loads: a wrong one is reported at once rather
    than after the models before it have loaded (minutes, for large ones)."""
    from .engines.loading import model_name

    for model in settings.models.values():
        source = model.engine_options.get("source")
        if model.engine != "emulator" and isinstance(source, str):
            model_name(source)


async def _prepare_state(settings: Settings) -> None:
    """The blob URL checked and the migrations run (once, whichever process gets there first)."""
    from .app import open_blob_store, open_store

    await open_blob_store(settings).close()  # a blob URL Pollux cannot use stops the start here
    await (await open_store(settings)).close()


async def _bootstrap(settings: Settings) -> auth.IssuedKey | None:
    """On an empty database (already migrated), the first project and key."""
    store = Store(settings.database_url, settings.data_dir)
    try:
        return await auth.bootstrap(store)
    finally:
        await store.close()


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # huggingface_hub gives its logger a handler of its own: propagated to ours as well, each line came twice.
    logging.getLogger("huggingface_hub").propagate = False


_WORKER_ARGV = "POLLUX_WORKER_ARGV"


def worker_app() -> Any:
    """The app factory of each `--workers` process: the parent's command line, parsed again here (uvicorn starts
    workers afresh), then this process's engines and app."""
    from . import server
    from .access_log import AccessLog
    from .app import build_app, build_engines

    args = parser().parse_args(json.loads(os.environ[_WORKER_ARGV]))
    _logging(args.log_level)
    settings = _settings(args)
    server.configure(settings)
    app = build_app(settings, build_engines(settings))
    gc.freeze()
    return AccessLog(app)


def cmd_serve(args: argparse.Namespace) -> int:
    from . import server
    from .app import build_app, build_engines

    _logging(args.log_level)
    if args.workers < 1:
        print("pollux: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = _settings(args)
        sockets = server.listen(settings.host, settings.port)  # a port in use stops here, before any output
    except (OSError, ValueError) as exc:
        print(f"pollux: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, server.ListenError) else 2
    try:
        _check_sources(settings)
        asyncio.run(_prepare_state(settings))  # an unreachable database stops us before models load
        # With workers, each loads its own engines (the parent only supervises them).
        engines = build_engines(settings) if args.workers == 1 else None
        # The first key only once the server can start: a key made by a start that then failed would never be shown.
        issued = asyncio.run(_bootstrap(settings))
    except (OSError, ValueError, StoreError, StoreUnavailable) as exc:
        for sock in sockets:
            sock.close()
        print(f"pollux: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - e.g. a library failing on a model: one line, the traceback on demand
        for sock in sockets:
            sock.close()
        logging.getLogger("pollux").debug("start-up failed", exc_info=exc)
        print(f"pollux: cannot start: {type(exc).__name__}: {exc}"
              + ("" if args.log_level == "debug" else " (--log-level debug shows the traceback)"), file=sys.stderr)
        return 2
    # A wildcard listen address is not one a client can connect to; loopback is.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    port = sockets[0].getsockname()[1]  # the one bound, when --port 0 asked for any
    base_url = f"http://{f'[{host}]' if ':' in host and not host.startswith('[') else host}:{port}"
    if issued:
        print(f'Created the project "{auth.DEFAULT_PROJECT}" ({issued.project_id}) and its first API key.')
        print("The key is shown only this once; Pollux stores only its hash:")
        print(f"  {issued.key}")
    _print_key_exports(base_url, issued.key if issued else None)
    workers = f" with {args.workers} worker processes" if args.workers > 1 else ""
    print(f"Pollux serves the Gemini API at {base_url}{workers} (data in {settings.data_dir})", flush=True)
    if engines is None:
        os.environ[_WORKER_ARGV] = json.dumps(args.argv)
        server.serve_workers("pollux.cli:worker_app", args.workers, sockets)
        return 0
    app = build_app(settings, engines)
    gc.freeze()  # start-up objects live forever: keep them out of every collection under load
    server.serve(app, settings, sockets)
    return 0


async def _project(store: Store, name: str | None) -> Project:
    project = await store.projects.find(name or auth.DEFAULT_PROJECT)
    if project is None:
        raise SystemExit(f"pollux: no project {name or auth.DEFAULT_PROJECT!r} (see `pollux projects list`)")
    return project


def _uploads(settings: Settings, store: Store) -> UploadService:
    """The upload and file services, for the commands that delete bytes (imported here: the media probes are heavy)."""
    from .app import open_blob_store
    from .files.service import FileService
    from .files.uploads import UploadService

    files = FileService(store, open_blob_store(settings), settings.limits)
    return UploadService(files, settings.limits.upload_ttl_seconds)


def _with_store(command: Callable[[argparse.Namespace, Settings, Store], Awaitable[int]]
                ) -> Callable[[argparse.Namespace], int]:
    """A command that works on the shared state: the database opened (and migrated), then closed."""
    async def run(args: argparse.Namespace) -> int:
        from .app import open_store

        settings = _settings(args)
        store = await open_store(settings)
        try:
            return await command(args, settings, store)
        finally:
            await store.close()

    def main(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(run(args))
        except (StoreError, StoreUnavailable) as exc:
            print(f"pollux: {exc}", file=sys.stderr)
            return 2

    return main


async def _keys(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    if args.action == "create":
        project = await _project(store, args.project)
        issued = await auth.issue_key(store, project.id, args.name or "API key")
        print(f'Created key {issued.id} "{issued.name}" for project "{project.name}" ({project.id}).')
        print("The key is shown only this once:")
        print(issued.key)
    elif args.action == "list":
        print(f"{'ID':<10} {'NAME':<20} {'KEY':<12} {'PROJECT':<28} {'CREATED':<20} STATUS")
        for k in await store.keys.list():
            status = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
            print(f"{k.id:<10} {k.name[:20]:<20} {'...' + k.hint:<12} {k.project_name[:28]:<28} "
                  f"{k.created_at:%Y-%m-%d %H:%M:%S}  {status}")
    elif args.action == "revoke":
        if not await store.keys.revoke(args.id):
            print(f"pollux: no active key with id {args.id!r}", file=sys.stderr)
            return 1
        # Servers refuse the key within a second; its uploads' rows and bytes go now rather than at a sweep.
        uploads = _uploads(settings, store)
        closed = await store.uploads.delete_of_key(args.id)
        await uploads.discard_parts(closed)
        await uploads.blobs.close()
        print(f"Revoked key {args.id}" + (f" and closed the {len(closed)} upload(s) it had open." if closed else "."))
    return 0


async def _projects(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    if args.action == "create":
        try:
            project = await auth.create_project(store, args.name)
        except ValueError as exc:
            print(f"pollux: {exc}", file=sys.stderr)
            return 1
        print(f'Created project "{project.name}" ({project.id}).')
    elif args.action == "list":
        print(f"{'ID':<28} {'NAME':<32} CREATED")
        for p in await store.projects.list():
            print(f"{p.id:<28} {p.name[:32]:<32} {p.created_at:%Y-%m-%d %H:%M:%S}")
    elif args.action == "rename":
        project = await _project(store, args.project)
        if await store.projects.find(args.new_name):
            print(f"pollux: a project named {args.new_name!r} already exists", file=sys.stderr)
            return 1
        await store.projects.rename(project.id, args.new_name)
        print(f'Renamed project {project.id} to "{args.new_name}".')
    elif args.action == "delete":
        return await _delete_project(settings, store, args.project)
    return 0


cmd_keys = _with_store(_keys)
cmd_projects = _with_store(_projects)


async def _delete_project(settings: Settings, store: Store, id_or_name: str) -> int:
    """Delete a project with its keys (they stop working within a second), its files, open uploads, caches and
    batches. The default project is a project like any other: once it is gone, `keys create` needs --project; once no
    project is left, the next `serve` creates a new default project and key, as on a first start."""
    project = await _project(store, id_or_name)
    gone = await store.projects.delete(project.id)
    if gone is None:
        print(f"pollux: no project {id_or_name!r}", file=sys.stderr)
        return 1
    # The rows went in one transaction; the bytes follow (a crash in between leaves orphans the server's sweep deletes).
    uploads = _uploads(settings, store)
    await uploads.discard_parts(gone.uploads)
    await uploads.files.discard_project(project.id)
    await uploads.blobs.delete_prefix(f"batches/{project.id}")  # batch inputs (a running batch stops: its row is gone)
    await uploads.blobs.delete_prefix(f"caches/{project.id}")  # what its context caches held
    await uploads.blobs.close()
    print(f'Deleted project "{project.name}" ({project.id}): {len(gone.keys)} key(s), '
          f'{len(gone.files)} file(s), {len(gone.caches)} context cache(s) and {len(gone.uploads)} open upload(s).')
    if not await store.projects.count():
        print("No project is left: the next `pollux serve` creates a new default project and prints its key.")
    elif project.name == auth.DEFAULT_PROJECT:
        print("The default project is gone: `pollux keys create` now needs --project.")
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default: argparse's own "(default: X)" where the default is a value, the
    help's words where it is not (an option whose help already says "default")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" not in text and action.option_strings and action.default not in (None, argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _version() -> str:
    from . import __version__

    return f"pollux {__version__}"


def parser() -> argparse.ArgumentParser:
    fmt = {"formatter_class": _HelpFormatter}
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="state directory: database, files, keys (default: $POLLUX_DATA_DIR or "
                        "~/.pollux)")
    common.add_argument("--config", help="TOML config file: models, limits, store (default: none, the built-in "
                        "catalogue and limits)")
    common.add_argument("--database-url", help="the shared database: sqlite:///PATH or "
                        "postgresql+psycopg://USER@HOST/DB (default: $POLLUX_DATABASE_URL, else the config's [store] "
                        "database_url, else SQLite in the data dir)")
    common.add_argument("--blob-url", help="where file bytes live: a directory or s3://BUCKET/PREFIX (default: "
                        "$POLLUX_BLOB_URL, else the config's [store] blob_url, else the data dir)")

    p = argparse.ArgumentParser(prog="pollux", description="A self-hosted Gemini API.", **fmt)
    p.add_argument("--version", action="version", version=_version(), help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the API server", description="Run the API server. "
                           "The first start creates the default project and prints its API key.", **fmt)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on; 0 for any free port")
    serve.add_argument("--workers", type=int, default=1, help="processes serving the port, each with its own engines "
                       "and limits; they share the database and blob store, as replicas on other hosts do")
    serve.add_argument("--fixtures", help="YAML/JSON rules with scripted answers for the emulator (default: none)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="least severe messages logged; info logs one line per request")
    serve.add_argument("--model", action="append", metavar="ID=SOURCE",
                       help="serve ID (or every id a glob such as 'gemini-*' matches) with a Hugging Face model: "
                            "ID=hf:ORG/NAME or ID=/local/dir; or with an OpenAI-compatible server (vLLM, SGLang, "
                            "llama.cpp, Ollama): ID=openai:http://HOST:PORT/v1[#SERVED_MODEL]; repeatable "
                            "(default: none, the built-in emulator serves every catalogue model)")
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="API keys: create, list, revoke", description="Manage API keys.", **fmt)
    keys_sub = keys.add_subparsers(dest="action", required=True, title="commands", metavar="COMMAND")
    create = keys_sub.add_parser("create", parents=[common], help="issue a key (printed once, on the last line)",
                                 **fmt)
    create.add_argument("--project", help="project name or id (default: the default project)")
    create.add_argument("--name", default="API key", help="a label for the key")
    keys_sub.add_parser("list", parents=[common], help="list keys (never their secrets)", **fmt)
    revoke = keys_sub.add_parser("revoke", parents=[common], help="revoke a key at once", **fmt)
    revoke.add_argument("id", help="the key's id (see `pollux keys list`)")
    for action in ("create", "list", "revoke"):
        keys_sub.choices[action].set_defaults(func=cmd_keys)

    projects = sub.add_parser("projects", help="projects: create, list, rename, delete",
                              description="Manage projects (each has its own keys and files).", **fmt)
    projects_sub = projects.add_subparsers(dest="action", required=True, title="commands", metavar="COMMAND")
    pcreate = projects_sub.add_parser("create", parents=[common], help="create a project", **fmt)
    pcreate.add_argument("name", help="the new project's name")
    projects_sub.add_parser("list", parents=[common], help="list projects", **fmt)
    rename = projects_sub.add_parser("rename", parents=[common], help="rename a project", **fmt)
    rename.add_argument("project", help="project id or current name")
    rename.add_argument("new_name", help="the new name")
    pdelete = projects_sub.add_parser("delete", parents=[common], help="delete a project: its keys stop working, "
                                      "its files and uploads are deleted", **fmt)
    pdelete.add_argument("project", help="project id or name")
    for action in ("create", "list", "rename", "delete"):
        projects_sub.choices[action].set_defaults(func=cmd_projects)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    args.argv = argv
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
