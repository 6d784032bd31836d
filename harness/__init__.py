"""What vitserve's load tests, reliability scripts, benchmarks and tests share: a server on a loopback
port, load and flood generators, the drain and hostile-input experiments, and one reader of /metrics.

Ships in the wheel (`vitserve.harness`) with the serving dependencies only; `harness.mutations`, the
fuzzers' strategy, needs `hypothesis` from the test extra.
"""
