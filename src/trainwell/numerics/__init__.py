"""Numerics: Mitchell's logarithmic arithmetic, the embedding-dimension rule, Taylor-exp positivity.

- :func:`mitchell_multiply`, :func:`mitchell_divide` — products/quotients by integer addition of bit
  patterns (kexue.fm/archives/7991).
- :func:`min_embedding_dim`, :func:`entropy_h`, :func:`entropy_dim`, :func:`head_dim_lower_bound` —
  ``n > 8.33 log N`` (kexue.fm/archives/7695, 8711).
- :func:`taylor_exp`, :func:`taylor_exp_minimizer` — even-order Taylor polynomials of exp are positive
  (kexue.fm/archives/7919).
"""

from __future__ import annotations

from trainwell.numerics.dimension import entropy_dim, entropy_h, head_dim_lower_bound, min_embedding_dim
from trainwell.numerics.mitchell import mitchell_divide, mitchell_multiply
from trainwell.numerics.taylor_positivity import taylor_exp, taylor_exp_minimizer

__all__ = [
    "entropy_dim",
    "entropy_h",
    "head_dim_lower_bound",
    "min_embedding_dim",
    "mitchell_divide",
    "mitchell_multiply",
    "taylor_exp",
    "taylor_exp_minimizer",
]
