"""What every in-process engine (generation, embeddings, images) does the same way: reading its options, finding
its model (the hub through its cache, or a local directory), choosing device and dtype."""

from __future__ import annotations

import functools
import logging
import os
import shlex
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("pollux.engines.loading")


class EngineLoadError(ValueError):
    """A model that cannot be loaded: the server stops with this message rather than serve without it."""


def options_from(cls: type[T], options: dict[str, Any], engine: str) -> T:
    """A frozen options dataclass from a model's `engine_options`; unknown keys are an error, `source` is required."""
    unknown = set(options) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    if unknown:
        raise ValueError(f"unknown {engine} engine option(s) {sorted(unknown)}")
    if "source" not in options:
        raise ValueError(f"the {engine} engine needs a source: hf:ORG/NAME or a local directory")
    return cls(**options)


def model_name(source: str) -> str:
    """What `from_pretrained` takes: the hub id of `hf:ORG/NAME`, or an existing local directory. Either is checked
    first, so that a model that cannot load says why in one line: a directory that is not a model's (what it lacks),
    a hub id not in the cache while offline or while the hub cannot be reached (what to do instead)."""
    if source.startswith("hf:"):
        check_hub(source[3:])
        return source[3:]
    path = Path(source).expanduser()
    if path.is_file():
        raise EngineLoadError(f"{source} is a file, not a model directory (a directory with config.json, tokenizer "
                              "files and weights, as `hf download ORG/NAME --local-dir DIR` writes it)")
    if not path.is_dir():
        raise EngineLoadError(f"model directory {source!r} does not exist (use hf:ORG/NAME for a hub model)")
    check_model_dir(path)
    return str(path)


# What a model directory's files are called: weights in any of transformers' formats, a tokenizer in any of the
# forms AutoTokenizer reads (fast tokenizer.json, sentencepiece, BPE/WordPiece vocabularies, tiktoken, Mistral's).
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.gguf")
_TOKENIZER = ("tokenizer*", "vocab*", "*.model", "*.tiktoken", "tekken.json", "merges.txt")
_LAYOUT = "config.json, tokenizer files and weights, as `hf download ORG/NAME --local-dir DIR` writes them"


def check_model_dir(path: Path) -> None:
    """A local model directory holds what loading needs, or the error says what it lacks. A diffusers pipeline
    (model_index.json) is left to diffusers, which names a missing component itself."""
    if (path / "model_index.json").is_file():
        return
    if not any(path.iterdir()):
        raise EngineLoadError(f"{path} is empty: not a model directory (expected {_LAYOUT})")
    if not (path / "config.json").is_file():
        raise EngineLoadError(f"{path} has no config.json: not a transformers model directory (expected {_LAYOUT})")
    if not any(next(path.glob(pattern), None) for pattern in _WEIGHTS):
        raise EngineLoadError(f"{path} has no weights (model.safetensors, pytorch_model.bin or their shards): the "
                              "download may be incomplete")
    if not any(next(path.glob(pattern), None) for pattern in _TOKENIZER):
        raise EngineLoadError(f"{path} has no tokenizer files (tokenizer.json, tokenizer.model, vocab.json, ...): "
                              "copy them from the model's repository")


def _download_hint(repo: str) -> str:
    return (f"download it where the hub is reachable (`hf download {repo}`, or `huggingface-cli download {repo}` "
            "with an older huggingface_hub) and copy the Hugging Face cache here, or pass a local directory "
            "(--model ID=/path/to/dir)")


_hub_unreachable: str | None = None  # why the hub could not be reached, once it could not: then it is not tried again


@functools.cache
def check_hub(repo: str) -> None:
    """Fails at once, in one line, when `repo` cannot be fetched: not in the cache and either HF_HUB_OFFLINE is set
    or the hub cannot be reached. Left alone, huggingface_hub would retry each file for about 25 s, logging each try,
    and transformers would then explain the failure again. A cached repo with the hub unreachable is loaded as with
    HF_HUB_OFFLINE=1 (else every file of it would be retried first: minutes); with the hub there, `from_pretrained`
    does as it always does (downloads, or checks the cache is current)."""
    global _hub_unreachable
    try:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError
        from huggingface_hub.utils import validate_repo_id
    except ImportError:  # no transformers extra: the engine's import says so
        return
    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise EngineLoadError(f"hf:{repo} is not a Hugging Face hub id (hf:ORG/NAME)") from None
    cache = Path(constants.HF_HUB_CACHE)
    snapshots = cache / f"models--{repo.replace('/', '--')}" / "snapshots"
    cached = snapshots.is_dir() and any(snapshots.iterdir())
    offline = constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE
    if offline or _hub_unreachable:
        if cached:
            return
        why = "HF_HUB_OFFLINE is set" if _hub_unreachable is None else \
            f"the hub cannot be reached ({_hub_unreachable})"
        raise EngineLoadError(f"cannot load model {repo!r}: {why} and it is not in the Hugging Face cache ({cache}): "
                              f"{_download_hint(repo)}")
    try:  # one request, no retries: is the hub there, and does it have the repository?
        get_hf_file_metadata(hf_hub_url(repo, "config.json"), timeout=10)
    except GatedRepoError:
        if cached:
            return
        raise EngineLoadError(f"cannot load model {repo!r}: it is gated; accept its terms at "
                              f"https://huggingface.co/{repo} and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        if cached:
            return
        raise EngineLoadError(f"cannot load model {repo!r}: the Hugging Face hub has no such model (or it is "
                              "private: log in with `hf auth login`)") from None
    except HfHubHTTPError:  # any other answer (no config.json in a diffusers repo, a 5xx): from_pretrained decides
        return
    except Exception as exc:  # noqa: BLE001 - no answer at all: DNS, connection, TLS, timeout
        if not cached:
            raise EngineLoadError(f"cannot load model {repo!r}: it is not in the Hugging Face cache ({cache}) and the "
                                  f"hub cannot be reached ({exc}); {_download_hint(repo)}. Set HF_HUB_OFFLINE=1 to "
                                  "never try the network") from None
        _hub_unreachable = str(exc)
        # What HF_HUB_OFFLINE=1 does, for this process: huggingface_hub reads the constant at each request.
        constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"
        log.warning("the Hugging Face hub cannot be reached (%s): models load from its cache only, as with "
                    "HF_HUB_OFFLINE=1 (set it to skip this check)", exc)


def device_and_dtype(device: str, dtype: str, gpu_dtype: str) -> tuple[str, str]:
    """`auto` means CUDA when present, and `gpu_dtype` there (float32 on the CPU)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = gpu_dtype if device.startswith("cuda") else "float32"
    return device, dtype


def own_memory(model: Any) -> None:
    """Copy a CPU model's parameters into the process's own memory. `from_pretrained` maps a safetensors checkpoint and,
    when the dtype needs no conversion, keeps the file mapping's pages as the tensors; on this project's CPU machine a
    27 M-parameter Llama's decode steps ran 2-6 % faster from copies (BENCHMARKS.md, issue 14; the same tokens). Costs
    one copy of the weights at start-up; tied weights stay tied (one parameter)."""
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.device.type == "cpu":
                parameter.data = parameter.data.clone()


def load_failed(name: str, exc: Exception) -> EngineLoadError:
    return EngineLoadError(
        f"cannot load model {name!r}: {exc}\nIf this machine is offline, set HF_HUB_OFFLINE=1, download the model "
        f"where the hub is reachable (`hf download {name}`, or `huggingface-cli download {name}`) and copy the Hugging "
        "Face cache (~/.cache/huggingface) here, or give a local directory instead.")


def install_hint(extra: str) -> str:
    """The command that installs the optional dependencies `extra` for the Pollux that is running. `pip install
    'pollux[EXTRA]'` would fetch an unrelated project from PyPI, so the command names where this one came from: its
    checkout (editable or not), its VCS URL or archive; failing that, the extra's own requirements."""
    from .. import direct_url, distribution, source_dir

    dist = distribution()
    if dist is None:  # run from a tree never installed: install that tree
        root = Path(__file__).resolve().parents[2]
        return f"pip install -e {shlex.quote(f'{root}[{extra}]')}"
    info = direct_url(dist) or {}
    source = source_dir(dist)
    if source is not None:
        editable = "-e " if info.get("dir_info", {}).get("editable") else ""
        return f"pip install {editable}{shlex.quote(f'{source}[{extra}]')}"
    if "vcs_info" in info:
        vcs = info["vcs_info"]
        ref = vcs.get("requested_revision") or vcs.get("commit_id")
        url = f"{vcs.get('vcs', 'git')}+{info['url']}" + (f"@{ref}" if ref else "")
        return f"pip install {shlex.quote(f'pollux[{extra}] @ {url}')}"
    if "archive_info" in info:  # a wheel or sdist, by path or URL
        url = info["url"]
        return f"pip install {shlex.quote(f'pollux[{extra}] @ {url}')}"
    # From a package index (one's own: the Pollux on PyPI is another project): the extra's requirements themselves.
    marker = f'extra=="{extra}"'
    needs = [req.partition(";")[0].strip() for req in dist.requires or []
             if marker in req.partition(";")[2].replace("'", '"').replace(" ", "")]
    return "pip install " + (" ".join(shlex.quote(req) for req in needs) if needs else f"'pollux[{extra}]'")

