"""Random edits of real images for the decoders' fuzzers (reliability/fuzz_decode.py, the hostile-input
tests): a Hypothesis strategy, so importing this module needs `hypothesis` (the test extra); nothing
that serves imports it.
"""

from __future__ import annotations

from hypothesis import strategies as st

from vitserve.harness.hostile import SEEDS


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    """A real image of an accepted format with random byte edits, cuts or splices: deep into the decoders."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "splice"]))
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            data[at:] = draw(st.binary(max_size=256))
        if not data:
            break
    return bytes(data)
