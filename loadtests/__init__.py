"""Load tests for vitserve: Locust scenarios, the runner that reports on them, and the SLO gate."""
