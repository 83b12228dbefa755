"""rtp_cluster: an RTPproxy cluster proxy for Kamailio, OpenSIPS and B2BUAs."""

__version__ = "0.1.0"
