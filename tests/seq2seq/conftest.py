"""Shared fixtures: a char-level BERT tokenizer built offline and tiny random models (no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

CHARS = (
    list("0123456789+-*/().%^=x")
    + list("abcdefghijklmnopqrstuvwxyz?,")
    + list("加减乘除等于是多少问答你好吗我很天气今")
)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: Path, chars: list[str] = CHARS) -> Path:
    toks = SPECIALS + chars + ["##" + c for c in chars if c.isalnum()]
    path.write_text("\n".join(dict.fromkeys(toks)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tokenizer")
    write_vocab(folder / "vocab.txt")
    return transformers.BertTokenizerFast.from_pretrained(str(folder))


def tiny_bert(vocab_size: int, seed: int = 0, layers: int = 2, hidden: int = 32) -> Any:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForMaskedLM(cfg).eval()


def tiny_gpt2(vocab_size: int = 40, seed: int = 0, eos: int = 1) -> Any:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


class TinyEncoder(nn.Module):
    """A pure-torch bidirectional encoder with an LM head; takes a bool may-attend mask [B, T, T]."""

    def __init__(self, vocab: int = 40, d: int = 16, heads: int = 2, length: int = 64) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(length, d)
        self.typ = nn.Embedding(2, d)
        self.heads = heads
        self.layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True)
        self.head = nn.Linear(d, vocab)

    def get_input_embeddings(self) -> nn.Module:
        return self.tok

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
    ) -> Tensor:
        x = self.tok(input_ids) if inputs_embeds is None else inputs_embeds
        t = x.shape[1]
        x = x + self.pos(torch.arange(t, device=x.device)) + self.typ(token_type_ids)
        mask = None
        if attention_mask is not None:
            # nn.Transformer wants True = NOT allowed; fully blocked rows get their own position
            blocked = ~attention_mask
            blocked = blocked & ~torch.eye(t, dtype=torch.bool, device=x.device)
            mask = blocked.repeat_interleave(self.heads, dim=0)
        return self.head(self.layer(x, src_mask=mask))
