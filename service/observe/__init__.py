"""Observability: vitserve's Prometheus metrics and its logs."""
