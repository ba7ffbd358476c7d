"""Model overrides small enough to build, run and train inside a test, shared by every folder.

The test folders have no ``__init__.py``; pytest puts ``tests/`` on ``sys.path`` for the root
conftest, so any test imports this module as ``from tinymodels import TINY_ANYIR``.
"""

from __future__ import annotations

#: anyir_t with 8 channels and one block per level: the released layout's shapes, ~100k params.
TINY_ANYIR = {"dim": 8, "blocks": (1, 1, 1, 1), "refinement_blocks": 1}

#: clusir_t with 8 channels and three experts per cluster: every part of ClusIR, ~70k params.
TINY_CLUSIR = {"dim": 8, "experts_per_cluster": 3, "prompt_dim": 32}

#: The tiny overrides by architecture.
TINY_BY_ARCH = {"anyir": TINY_ANYIR, "clusir": TINY_CLUSIR}
