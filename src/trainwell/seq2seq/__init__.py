"""Seq2seq systems on one language model: decoding, UniLM seq2seq, TeaForN, math word problems, chat, QA.

- :func:`generate` (and :func:`greedy_search`, :func:`beam_search`, :func:`sample`): Hugging Face-style
  decoding for any ``ids -> logits`` callable or LM module, with a KV cache where the model offers one.
- :class:`UniLMSeq2Seq`, :class:`Seq2SeqCollator`: "BERT + UniLM" seq2seq (kexue.fm/archives/6933, /7809).
- :class:`TeaForNLoss`: N-step nested teacher forcing (kexue.fm/archives/7818; arXiv:2010.03494).
- :mod:`trainwell.seq2seq.mathwp`: Ape210K-style math word problems with a bounded AST evaluator (7809).
- :mod:`trainwell.seq2seq.dialog`: DialoGPT-style multi-turn chat LM (7718).
- :mod:`trainwell.seq2seq.qagen`: passage → answer → question generation (7630).
"""

from trainwell.seq2seq import dialog, mathwp, qagen
from trainwell.seq2seq.decoding import beam_search, generate, greedy_search, sample
from trainwell.seq2seq.dialog import DialogueLM, DialogueLMCollator
from trainwell.seq2seq.mathwp import MathSolver, MathWordProblemDataset, answers_match, safe_eval
from trainwell.seq2seq.qagen import QAGenerationCollator, QAPairGenerator
from trainwell.seq2seq.teaforn import TeaForNLoss, TeaForNOutput
from trainwell.seq2seq.unilm import LMOutput, Seq2SeqCollator, UniLMSeq2Seq, shifted_lm_loss, unilm_labels

__all__ = [
    "DialogueLM",
    "DialogueLMCollator",
    "LMOutput",
    "MathSolver",
    "MathWordProblemDataset",
    "QAGenerationCollator",
    "QAPairGenerator",
    "Seq2SeqCollator",
    "TeaForNLoss",
    "TeaForNOutput",
    "UniLMSeq2Seq",
    "answers_match",
    "beam_search",
    "dialog",
    "generate",
    "greedy_search",
    "mathwp",
    "qagen",
    "safe_eval",
    "sample",
    "shifted_lm_loss",
    "unilm_labels",
]
