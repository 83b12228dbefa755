"""The control servers (what Kamailio/OpenSIPS talk to) and the member clients, by module:

- `udp_control.py`: the UDP/UDP6 control server and its reply cache;
- `stream_control.py`: the unix stream control server;
- `member_clients.py`: the UDP/UDP6 and unix member clients;
- `sockets.py`: what they share (StartupError, buffer sizes, resolution).

These classes only move bytes; every decision is made by the handler they are given
(`Handler(command, respond)`, normally `Cluster.handle`).  This module gathers their names
for the rest of the daemon.
"""
from __future__ import annotations

from .member_clients import (MEMBER_TIMEOUT, SWEEP_INTERVAL, Reply, RttEstimator,
                             UDPMemberClient, UnixMemberClient, make_member_client)
from .sockets import SOCKET_BUFFER, Handler, Respond, StartupError, grow_buffers, resolve
from .stream_control import (LINES, MAX_CONTROL_CONNECTIONS, ONE_SHOT, StreamControlFactory,
                             StreamControlProtocol, listen_unix, prepare_unix_path)
from .udp_control import (OWN_DATAGRAM_LOG_INTERVAL, REPLY_CACHE_GENERATION, ControlCounters,
                          UDPControlServer)

__all__ = ['MEMBER_TIMEOUT', 'SWEEP_INTERVAL', 'Reply', 'RttEstimator', 'UDPMemberClient',
           'UnixMemberClient', 'make_member_client', 'SOCKET_BUFFER', 'Handler', 'Respond',
           'StartupError', 'grow_buffers', 'resolve', 'LINES', 'MAX_CONTROL_CONNECTIONS',
           'ONE_SHOT', 'StreamControlFactory', 'StreamControlProtocol', 'listen_unix',
           'prepare_unix_path', 'OWN_DATAGRAM_LOG_INTERVAL', 'REPLY_CACHE_GENERATION',
           'ControlCounters', 'UDPControlServer']
