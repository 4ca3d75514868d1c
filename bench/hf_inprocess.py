#!/usr/bin/env python
"""In-process companion of bench/hf_bench.py: the same model and prompts, no server, no HTTP.

    .venv/bin/python bench/hf_inprocess.py            # pinned to CPU 0, one torch thread

It times, per decode step, with the 28-token prompts of hf_bench.py left-padded into one batch:

- bare `model.generate` (greedy), batches of 1 and 16: the ceiling of static batching on this machine;
- `model.generate` with the engine's per-sequence logits processor, as `pollux/engines/hf.py` `_run` builds it (a loop
  of `decoding.Sequence.choose` / `accept` over the rows), unconstrained and with the JSON schema of hf_bench.py
  through `constrain.Matcher`: what constrained decoding costs the decode loop itself, apart from HTTP and batching.

Each configuration runs --repeats times, in turn; the figures are medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import hf_bench  # the model, prompts and schema of the HTTP benchmark


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", default="0", help="core to pin to ('' for none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    if args.cpu.strip():
        os.sched_setaffinity(0, {int(args.cpu)})

    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
        LogitsProcessor,
        LogitsProcessorList,
        StoppingCriteria,
        StoppingCriteriaList,
    )
    from transformers.utils import logging as hf_logging

    from pollux.engines.constrain import TokenizerGrammars, json_grammar
    from pollux.engines.decoding import Sequence, SequenceParams, SpecialTokens

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model_dir = hf_bench.tiny_models.build_small_llama(hf_bench.tiny_models.models_root())
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    pad = tok.pad_token_id
    eos = sorted({model.generation_config.eos_token_id, tok.eos_token_id}
                 if not isinstance(model.generation_config.eos_token_id, list)
                 else {*model.generation_config.eos_token_id, tok.eos_token_id})
    special = SpecialTokens(eos=frozenset(eos), think_open=tok.convert_tokens_to_ids("<think>"),
                            think_close=tok.convert_tokens_to_ids("</think>"))
    grammars = TokenizerGrammars(tok, model.config.vocab_size)
    grammar = json_grammar(hf_bench.SCHEMA)
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": hf_bench.PROMPT.format(i=i)}],
                                           add_generation_prompt=True, tokenize=False, enable_thinking=False),
                   add_special_tokens=False)["input_ids"] for i in hf_bench.PROMPT_INDICES[:16]]

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=False)

    def run(n: int, mode: str) -> tuple[float, float, int, float]:
        """(ms per decode step, ms of the logits processor per step, tokens, tokens/s) for one batch of n."""
        batch = prompts[:n]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        config = GenerationConfig(max_new_tokens=args.tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos)
        kwargs: dict = {}
        spent: list[float] = []
        seqs: list[Sequence] = []
        if mode != "bare":
            seqs = [Sequence(SequenceParams(temperature=0, max_new_tokens=args.tokens, thinking_budget=0), special,
                             decode, lambda event: None,
                             grammars.matcher(grammar) if mode == "constrained" else None) for _ in batch]

            class Choose(LogitsProcessor):  # as pollux/engines/hf.py builds it
                def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                    t = time.perf_counter()
                    chosen = torch.full_like(scores, float("-inf"))
                    for row, seq in enumerate(seqs):
                        token = seq.choose(scores[row]) if not seq.done else 0
                        chosen[row, token] = 0.0
                        seq.accept(token)
                    spent.append(time.perf_counter() - t)
                    return chosen

            class Stop(StoppingCriteria):
                def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kw) -> torch.Tensor:
                    return torch.tensor([s.done for s in seqs], dtype=torch.bool)

            kwargs = {"logits_processor": LogitsProcessorList([Choose()]),
                      "stopping_criteria": StoppingCriteriaList([Stop()])}
        else:
            config.min_new_tokens = args.tokens
        start = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **kwargs)
        wall = time.perf_counter() - start
        steps = out.shape[1] - width
        tokens = sum(s.generated for s in seqs) if seqs else n * steps
        return 1000 * wall / steps, 1000 * statistics.median(spent) if spent else 0.0, tokens, tokens / wall

    configs = [(n, mode) for n in (1, 16) for mode in ("bare", "processor", "constrained")]
    results: dict[tuple[int, str], list[tuple[float, float, int, float]]] = {c: [] for c in configs}
    run(16, "constrained")  # warm-up
    for _ in range(args.repeats):
        for c in configs:
            results[c].append(run(*c))
    print(f"model {model_dir.name}; {args.threads} torch thread(s), CPU {args.cpu or 'any'}; {args.repeats} repeats; "
          f"medians\n")
    print("| batch | decode loop | ms per step | logits processor ms per step | tokens | tok/s |")
    print("|---:|---|---:|---:|---:|---:|")
    for (n, mode), rs in results.items():
        step = statistics.median(r[0] for r in rs)
        proc = statistics.median(r[1] for r in rs)
        tokens = rs[0][2]
        label = {"bare": "bare `generate`", "processor": "engine's processor, unconstrained",
                 "constrained": "engine's processor, JSON schema"}[mode]
        print(f"| {n} | {label} | {step:.1f} | {proc:.2f} | {tokens} | {statistics.median(r[3] for r in rs):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
