"""What every consumer of an embedding model relies on: the one embedder protocol.

``Student`` (the packaged static model) has it, and so do the GPU-free ``HashingEmbedder``
of the summariser, the training-time teacher and the tests' tiny embedders. The intent
classifier, the answer re-ranker, the summariser and the semantic answer cache all take one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """Texts to L2-normalised float32 rows of width ``dim``.

    ``fingerprint`` names the model and its version; artefacts built from its vectors record it,
    and loading them refuses another model's.
    """

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...
