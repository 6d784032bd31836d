"""vitserve's loggers under BentoML's server logging, which leaves only its own loggers at INFO."""

from __future__ import annotations

import logging


def enable_vitserve_logging() -> None:
    """Call in a worker after BentoML configured logging: else start-up facts and the access log vanish.

    BentoML's server logging sets the root logger to WARNING and only `bentoml` to INFO.
    """
    logging.getLogger("vitserve").setLevel(logging.INFO)
