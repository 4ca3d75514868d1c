"""Pollux: a self-hosted Gemini API. `pollux.__version__` is the installed version (read on first use)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib import metadata

_HERE = Path(__file__).resolve().parent


def distribution() -> metadata.Distribution | None:
    """The installed distribution this package came from, or None when it runs from a tree that was never installed.

    `importlib.metadata.distribution("pollux")` is not enough: an unrelated project is called `pollux` on PyPI, and
    `python -m pollux.cli` run in a checkout finds the checkout's own `pollux.egg-info` (possibly stale) first.
    Preferred: the one whose install record (direct_url.json) names the directory this package is in."""
    from importlib import metadata

    ours = [d for d in metadata.distributions(name="pollux")
            if any(ep.value == "pollux.cli:main" for ep in d.entry_points)]
    for dist in ours:
        source = source_dir(dist)
        if source is not None and (source / "pollux").resolve() == _HERE:
            return dist
    for dist in ours:
        try:
            if Path(str(dist.locate_file("pollux/__init__.py"))).resolve() == _HERE / "__init__.py":
                return dist
        except OSError:
            continue
    return ours[0] if ours else None


def direct_url(dist: metadata.Distribution) -> dict[str, Any] | None:
    """PEP 610's record of where pip installed `dist` from (a directory, a VCS or an archive), if any."""
    import json

    try:
        text = dist.read_text("direct_url.json")
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def source_dir(dist: metadata.Distribution) -> Path | None:
    """The local directory `dist` was installed from (`pip install [-e] DIR`), if it was."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    info = direct_url(dist)
    if not info or "dir_info" not in info or not str(info.get("url", "")).startswith("file:"):
        return None
    return Path(url2pathname(urlparse(info["url"]).path))


def __getattr__(name: str) -> Any:
    if name == "__version__":
        dist = distribution()
        version = dist.version if dist is not None else "0+unknown"
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
