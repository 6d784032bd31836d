"""The bentoml release vitserve's patches were written against; each patch checks it before applying."""

from __future__ import annotations

import bentoml

BENTOML_VERSION = "1.4.40"  # pyproject.toml pins the same release


class UnpinnedBentoML(RuntimeError):
    """A patch of a BentoML internal met a release it was not checked against."""


def require_bentoml(patch: str) -> None:
    if bentoml.__version__ != BENTOML_VERSION:
        raise UnpinnedBentoML(
            f"{patch} patches bentoml {BENTOML_VERSION} internals, but bentoml {bentoml.__version__} is "
            "installed; re-check the patch against the new release, then update service/bento/pinned.py"
        )
