"""trainwell.explain: attribution (integrated gradients, token heat maps) and density estimation.

* :func:`integrated_gradients` / :class:`IntegratedGradients` — straight-line path IG for any
  differentiable tensor input, captum's argument names (kexue.fm/archives/7533).
* :func:`token_attributions` / :func:`render_tokens` — IG over the token-embedding output of Hugging
  Face sequence classifiers (any model with ``get_input_embeddings()``) and HTML/PNG heat maps.
* :func:`iw_log_likelihood`, :func:`iwae_loss`, :func:`bits_per_dim` — importance-sampled log p(x)
  of latent-variable models (kexue.fm/archives/8791), and :func:`residual_normal_kl` — NVAE's
  residual-posterior KL (kexue.fm/archives/7574). Their home is :mod:`trainwell.explain.likelihood`.
"""

from __future__ import annotations

from trainwell.explain.integrated_gradients import (
    METHODS,
    IntegratedGradients,
    integrated_gradients,
    quadrature,
)
from trainwell.explain.likelihood import bits_per_dim, iw_log_likelihood, iwae_loss, residual_normal_kl
from trainwell.explain.tokens import TokenAttributions, render_tokens, token_attributions

__all__ = [
    "METHODS",
    "IntegratedGradients",
    "TokenAttributions",
    "bits_per_dim",
    "integrated_gradients",
    "iw_log_likelihood",
    "iwae_loss",
    "quadrature",
    "render_tokens",
    "residual_normal_kl",
    "token_attributions",
]
