"""How the transformers engine holds a CPU model's memory: the weights copied out of the checkpoint's file mapping
into the process's own memory (`engines/loading.own_memory`; tied weights still one tensor), and glibc's malloc set to
keep the blocks of a few MB that every step allocates and frees instead of mapping each one fresh from the kernel
(`admission.keep_step_blocks`), whatever the app's own malloc policy set before or after."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import textwrap

import pytest
import tiny_models

from pollux.engines.hf import HFOptions, TransformersEngine


def file_mappings(name: str) -> list[tuple[int, int]]:
    """The address ranges of this process that map a file called `name`."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and os.path.basename(fields[5]) == name:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
def test_cpu_weights_live_in_the_processs_own_memory():
    root = tiny_models.models_root()
    for build in (tiny_models.build_llama, tiny_models.build_small_llama):  # untied, and tied embeddings
        engine = TransformersEngine(HFOptions(source=str(build(root)), threads=1))
        try:
            mapped = file_mappings("model.safetensors")
            for name, parameter in engine.model.named_parameters():
                at = parameter.data_ptr()
                assert not any(start <= at < end for start, end in mapped), name
            if engine.model.config.tie_word_embeddings:
                assert engine.model.lm_head.weight is engine.model.get_input_embeddings().weight
        finally:
            asyncio.run(engine.close())


# A thread allocating and freeing blocks of a few MB, growing as a step's keys do, as a fresh process: the page
# faults it takes under the server's malloc policy without a CPU model (`admission.configure` alone), and with one,
# whichever of `keep_step_blocks` (the engine's load) and `configure` (the app's build) comes first.
FAULTS = textwrap.dedent("""
    import resource, sys, threading
    import torch
    from pollux import admission
    if sys.argv[1] == "model":  # the server's order: engines load before the app is built
        assert admission.keep_step_blocks()
    admission.configure(4096 * admission.MB, 5.0)
    if sys.argv[1] == "model-late":
        assert admission.keep_step_blocks()
    source = torch.zeros(4096, 512)
    def work():
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for n in range(100):
            rows = torch.arange(1000 + 10 * n) % 4096
            keys, values = source.index_select(0, rows), source.index_select(0, rows)
            del keys, values
        print(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
""")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_with_a_cpu_model_freed_blocks_are_reused_instead_of_mapped_again():
    faults = {}
    for mode in ("no-model", "model", "model-late"):
        done = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        faults[mode] = int(done.stdout.split()[-1])
    # 100 x 2 blocks of 2-4 MB: ~75,000 faults here when each has its own mapping; ~2,000 when the heap keeps them
    assert faults["model"] * 10 < faults["no-model"], faults
    assert faults["model-late"] * 10 < faults["no-model"], faults
