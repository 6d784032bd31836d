"""How ONNX Runtime's intra-op threads wait for work, as session config entries.

- run (the default): they spin inside a run, where each operator hands them work within microseconds,
  and stop as soon as it returns (`session.force_spinning_stop`), so the cores that HTTP parsing and
  decoding need between batches are not burnt;
- always: ORT's default; they also spin a while after each run;
- never: they park between operators too. That was vitserve's setting until ViT-Ti/16 measured a fifth
  of its throughput lost to it (docs/benchmarks.md).

Importable without ONNX Runtime: the settings check the mode where BentoML's arbiter reads them.
"""

from __future__ import annotations

SPIN_MODES = ("run", "always", "never")


def spin_config(mode: str) -> dict[str, str]:
    if mode not in SPIN_MODES:
        raise ValueError(f"spin mode must be one of {', '.join(SPIN_MODES)}, not {mode!r}")
    return {
        "session.intra_op.allow_spinning": "0" if mode == "never" else "1",
        "session.force_spinning_stop": "1" if mode == "run" else "0",
    }
