"""How ONNX Runtime's intra-op threads wait for work, as session config entries.

- never (the default): they sleep until an operator hands them work; no core is burnt waiting;
- run: they spin inside a run and stop as soon as it returns (`session.force_spinning_stop`);
- always: ORT's own default; they also spin a while after each run.

On a small CPU spinning loses: the spinning threads take CPU that decoding and HTTP need
(docs/benchmarks.md, "How ONNX Runtime's threads wait"). With more cores than ORT threads, `run` may win
a batch's latency back.

Importable without ONNX Runtime: the settings check the mode where BentoML's arbiter reads them.
"""

from __future__ import annotations

SPIN_MODES = ("never", "run", "always")


def spin_config(mode: str) -> dict[str, str]:
    if mode not in SPIN_MODES:
        raise ValueError(f"spin mode must be one of {', '.join(SPIN_MODES)}, not {mode!r}")
    return {
        "session.intra_op.allow_spinning": "0" if mode == "never" else "1",
        "session.force_spinning_stop": "1" if mode == "run" else "0",
    }
