"""``trainwell lab``: experiments on real data that check each technique's claim.

See :mod:`trainwell.lab.base`.
"""

from trainwell.lab.base import Experiment, MethodStats, RunContext, SeedResult, seed_everything

__all__ = ["Experiment", "MethodStats", "RunContext", "SeedResult", "seed_everything"]
