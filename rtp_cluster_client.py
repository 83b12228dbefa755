#!/usr/bin/env python3
"""rtp_cluster_client without installation: `./rtp_cluster_client.py -s unix:/path ls`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rtp_cluster.admin_client import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
