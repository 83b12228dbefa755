"""Benchmarks for rtp_cluster: load generator, A/B runner, memory benchmark.

    python -m bench.loadgen --target 127.0.0.1:22222 -c 16 -d 10
    python -m bench.runner --rounds 3 --duration 10
    python -m bench.memory --sessions 100000
"""
