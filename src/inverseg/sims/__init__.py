"""SIMS (Qi, Chen, Jia, Koltun, CVPR 2018) non-network parts: the memory bank, retrieval, canvases, ordering inputs.

The networks are in ``inverseg.models.sims`` and the training/sampling recipe in ``inverseg.methods.sims``;
docs/methods/sims.md describes the stages and options.
"""

from .bank import BankError, BankSettings, MemoryBank, build_bank
from .retrieval import Match, Query, RetrievalSettings, Retriever

__all__ = ["BankError", "BankSettings", "Match", "MemoryBank", "Query", "RetrievalSettings", "Retriever",
           "build_bank"]
