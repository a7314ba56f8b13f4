"""Benchmarks: Ballast's rates beside raw nats-py measured in the same run (``make bench``)."""
