"""trainwell.nn (planned family; see README's feature table)."""

from trainwell.nn.pet import Pattern, PETClassifier, PETCollator, Verbalizer, mlm_loss, pet_log_scores
from trainwell.nn.theseus import (
    ConstantReplacement,
    LinearReplacement,
    ReplacementScheduler,
    TheseusModuleList,
    TheseusSwitch,
    compress,
    export_successor,
)

__all__ = [
    "ConstantReplacement",
    "LinearReplacement",
    "PETClassifier",
    "PETCollator",
    "Pattern",
    "ReplacementScheduler",
    "TheseusModuleList",
    "TheseusSwitch",
    "Verbalizer",
    "compress",
    "export_successor",
    "mlm_loss",
    "pet_log_scores",
]
