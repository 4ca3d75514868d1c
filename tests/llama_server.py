"""llama.cpp's own `llama-server`, run on tiny GGUF models, for tests against a real OpenAI-compatible server.

The binary is built from the llama.cpp sources vendored in llama-cpp-python's sdist (CI builds it once into pip's
cache dir; see `.ci/run`) and found through $POLLUX_LLAMA_SERVER, which names the `llama-server` executable. Next to
it lie llama.cpp's converter (`convert_hf_to_gguf.py`, `conversion/`, `gguf-py/`) of the same commit, which turns
the tiny Hugging Face models of tiny_models.py into GGUF files. Without $POLLUX_LLAMA_SERVER the newest build in pip's
cache dir is used if there is one; without either, `llama_server_binary()` is None and `require_llama_server()` skips
the test. When $POLLUX_LLAMA_SERVER is set but names no executable, that is an error, not a skip, so CI cannot pass
by skipping.

- ``tiny_gguf(root, model)``: a tiny model of tiny_models.py converted to an f32 GGUF (2.5 MB), cached like the
  tiny models: "scripted" (greedy decoding reproduces tiny_models.SCRIPTED_CHATS exactly: text, JSON, a tool call,
  thinking, UTF-8), "qwen3" (random weights, Qwen3's own template with tools and optional thinking) or
  "qwen3-thinking" (the same weights, the thinking-only template whose prompt ends in an open <think>).
- ``LlamaServer(gguf, ...)``: a context manager running `llama-server` on that file on a free port.

Run ``python tests/llama_server.py [MODEL]`` to build a GGUF and serve it in the foreground.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models  # noqa: E402

ENV_BINARY = "POLLUX_LLAMA_SERVER"
# Where .ci/run keeps its build: <pip cache dir>/pollux-llama-server/<llama-cpp-python version>-<recipe>/
CACHE_SUBDIR = "pollux-llama-server"

GGUF_SOURCES = {
    "scripted": tiny_models.build_scripted,
    "qwen3": tiny_models.build_qwen3,
    "qwen3-thinking": tiny_models.build_qwen3_thinking,
}


# --------------------------------------------------------------------------------------------------------------------
# Finding the binary


def _pip_cache_dir() -> Path:
    """pip's cache dir as pip itself resolves it on Linux, without running pip."""
    if os.environ.get("PIP_CACHE_DIR"):
        return Path(os.environ["PIP_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pip"


def llama_server_binary() -> Path | None:
    """The `llama-server` executable: $POLLUX_LLAMA_SERVER, else the newest build .ci/run left in pip's cache dir,
    else None. A $POLLUX_LLAMA_SERVER that names no executable raises, so that a broken CI setup fails loudly."""
    env = os.environ.get(ENV_BINARY)
    if env:
        path = Path(env)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RuntimeError(f"${ENV_BINARY}={env} is not an executable llama-server")
        return path
    found = [Path(p) for p in glob.glob(str(_pip_cache_dir() / CACHE_SUBDIR / "*" / "llama-server"))]
    found = [p for p in found if os.access(p, os.X_OK)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def require_llama_server() -> Path:
    """The binary, or skip the calling test (or fixture) saying how to get one."""
    import pytest

    binary = llama_server_binary()
    if binary is None:
        pytest.skip(f"no llama.cpp llama-server: set ${ENV_BINARY} to its path (.ci/run builds one into "
                    f"{_pip_cache_dir() / CACHE_SUBDIR})")
    return binary


def converter_dir(binary: Path | None = None) -> Path:
    """llama.cpp's source files for GGUF conversion (convert_hf_to_gguf.py, conversion/, gguf-py/): beside the
    binary, or $POLLUX_LLAMA_CONVERTER (a llama.cpp checkout)."""
    env = os.environ.get("POLLUX_LLAMA_CONVERTER")
    if env:
        return Path(env)
    binary = binary or llama_server_binary()
    if binary is None:
        raise RuntimeError(f"no llama-server (${ENV_BINARY}), so no converter beside it")
    return binary.parent


def llama_build_id(binary: Path | None = None) -> str:
    """The llama.cpp commit the binary was built from ("0c1e570"), from `llama-server --version`."""
    binary = binary or llama_server_binary()
    if binary is None:
        raise RuntimeError(f"no llama-server (${ENV_BINARY})")
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    # "version: 0.5.0-dev (build 1, commit 0c1e570)"
    marker = "commit "
    if marker in text:
        return text.split(marker, 1)[1].split(")", 1)[0].strip()
    return "unknown"


# --------------------------------------------------------------------------------------------------------------------
# GGUF conversion

# Runs llama.cpp's converter in a child process, with two adjustments for our tiny models: their byte-level BPE was
# trained here, so its pre-tokenizer hash is in no table (it is GPT-2's regex, llama.cpp's "gpt-2"), and Qwen2/3's
# vocab code imports sentencepiece before noticing there is no tokenizer.model (so sentencepiece need not be
# installed).
_CONVERT = r"""
import runpy, sys
from pathlib import Path
src = Path(sys.argv[1])
sys.argv = [str(src / "convert_hf_to_gguf.py")] + sys.argv[2:]
sys.path[:0] = [str(src / "gguf-py"), str(src)]
import conversion.base as base

_pre = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return _pre(self, tokenizer)
    except NotImplementedError:
        return "gpt-2"
base.TextModel.get_vocab_base_pre = get_vocab_base_pre

_sp = base.TextModel._create_vocab_sentencepiece
def _create_vocab_sentencepiece(self):
    if not (self.dir_model / "tokenizer.model").is_file():
        raise FileNotFoundError(self.dir_model / "tokenizer.model")
    return _sp(self)
base.TextModel._create_vocab_sentencepiece = _create_vocab_sentencepiece

runpy.run_path(sys.argv[0], run_name="__main__")
"""

GGUF_FILE = "model.gguf"


def convert_to_gguf(hf_dir: Path | str, out_file: Path | str, converter: Path | str | None = None) -> Path:
    """Convert a Hugging Face model directory to an f32 GGUF file with llama.cpp's converter."""
    converter = Path(converter) if converter else converter_dir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", _CONVERT, str(converter), str(hf_dir), "--outfile", str(out_file), "--outtype", "f32"],
        capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0 or not Path(out_file).is_file():
        raise RuntimeError(f"convert_hf_to_gguf.py failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return Path(out_file)


def tiny_gguf(root: Path | str, model: str = "scripted") -> Path:
    """The tiny model `model` (a key of GGUF_SOURCES) as a GGUF file, built under root (the Hugging Face model in
    root/<name>, the GGUF in root/<model>-gguf-<llama.cpp commit>/model.gguf) and cached like tiny_models' builds."""
    if model not in GGUF_SOURCES:
        raise ValueError(f"unknown tiny model {model!r}; one of {sorted(GGUF_SOURCES)}")
    binary = llama_server_binary()
    converter = converter_dir(binary)
    name = f"{model}-gguf-{llama_build_id(binary)}"

    def build(out: Path) -> None:
        hf_dir = GGUF_SOURCES[model](root)
        convert_to_gguf(hf_dir, out / GGUF_FILE, converter)

    return tiny_models._cached_build(root, name, build) / GGUF_FILE


# --------------------------------------------------------------------------------------------------------------------
# The server


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`llama-server` serving one GGUF on 127.0.0.1, as a context manager.

    Started with Jinja chat templates (tools, `chat_template_kwargs`), `--reasoning-format deepseek` (thoughts come
    back apart, as `reasoning_content`), `parallel` slots (an `n` above it is refused; a slot's context is
    ctx_size / parallel), one compute thread (the models are tiny; more threads only contend on a 2-core box) and,
    with `embeddings=True`, /v1/embeddings as well (mean pooling; chat keeps working in the same process).
    `base_url` is the OpenAI base ("http://127.0.0.1:PORT/v1"); `root` the server root, where llama.cpp's own
    endpoints live (/health, /props, /apply-template, /tokenize, /detokenize, /slots). The model id is `alias`
    (default: the GGUF's parent directory name). The server's output goes to `log_path` (`log()` reads it).
    """

    def __init__(self, gguf: Path | str, port: int | None = None, extra_args: Sequence[str] = (), *,
                 embeddings: bool = False, parallel: int = 2, ctx_size: int = 8192, alias: str | None = None,
                 binary: Path | str | None = None, log_path: Path | str | None = None,
                 startup_timeout: float = 60.0) -> None:
        self.gguf = Path(gguf)
        self.port = port or free_port()
        self.alias = alias or self.gguf.parent.name
        self.binary = Path(binary) if binary else llama_server_binary()
        if self.binary is None:
            raise RuntimeError(f"no llama-server: set ${ENV_BINARY}")
        self.args = [
            str(self.binary), "--model", str(self.gguf), "--alias", self.alias,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--jinja", "--reasoning-format", "deepseek",
            "--ctx-size", str(ctx_size), "--parallel", str(parallel),
            "--threads", "1", "--threads-batch", "1", "--no-webui",
        ]
        if embeddings:
            # --embeddings forces n_batch = n_ubatch (512 by default), which would refuse longer inputs.
            self.args += ["--embeddings", "--pooling", "mean", "--batch-size", "2048", "--ubatch-size", "2048"]
        self.args += list(extra_args)
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root}/v1"
        self.startup_timeout = startup_timeout
        self._own_log_dir: str | None = None
        if log_path is None:
            self._own_log_dir = tempfile.mkdtemp(prefix="pollux-llama-server-")
            log_path = Path(self._own_log_dir) / "llama-server.log"
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> LlamaServer:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=5) as client:
            while True:
                if self.process.poll() is not None:
                    message = f"llama-server exited with {self.process.returncode}:\n{self.log()[-4000:]}"
                    self.stop()
                    raise RuntimeError(message)
                try:
                    # 503 {"error": {"message": "Loading model", ...}} until the model is loaded, then 200.
                    if client.get(f"{self.root}/health").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    message = f"llama-server not healthy after {self.startup_timeout} s:\n{self.log()[-4000:]}"
                    self.stop()
                    raise RuntimeError(message)
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._own_log_dir:
            shutil.rmtree(self._own_log_dir, ignore_errors=True)
            self._own_log_dir = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    which = sys.argv[1] if len(sys.argv) > 1 else "scripted"
    path = tiny_gguf(tiny_models.models_root(), which)
    with LlamaServer(path, port=int(os.environ.get("PORT", "0")) or None, embeddings=True) as server:
        print(f"{which}: {path}\nserving on {server.base_url} (log {server.log_path}); Ctrl-C stops")
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass
