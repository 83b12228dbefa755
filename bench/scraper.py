"""A Prometheus stand-in for the benchmark: GET a URL every INTERVAL seconds until stopped.

    python -m bench.scraper --url http://127.0.0.1:9180/metrics [--interval 1]

Prints READY on stdout after the first successful scrape, then one line per scrape on
stderr (the benchmark's log of this child).  It runs in its own process so that scraping
costs the load generator nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
import urllib.request


def scrape(url: str, timeout: float) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return len(reply.read())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--url', required=True)
    ap.add_argument('--interval', type=float, default=1.0)
    args = ap.parse_args(argv)
    size = scrape(args.url, 5.0)
    print('READY %d bytes' % size, flush=True)
    next_at = time.monotonic() + args.interval
    while True:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += args.interval
        try:
            print('scraped %d bytes' % scrape(args.url, args.interval), file=sys.stderr, flush=True)
        except OSError as exc:
            print('scrape failed: %s' % exc, file=sys.stderr, flush=True)


if __name__ == '__main__':
    sys.exit(main())
