"""End-to-end harness: Kamailio + SIPp calls with RTP through an RTPproxy-protocol relay."""
