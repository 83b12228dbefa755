"""The real rtp_cluster daemon in a child process (see cluster_proc.ClusterProc).

`Daemon.command` returns the reply exactly as the control socket sent it (with its
newline); everything else is ClusterProc's.
"""
from __future__ import annotations

from tests.support.cluster_proc import ClusterProc, cluster_xml, member_xml
from tests.support.procs import control_command

__all__ = ['Daemon', 'cluster_xml', 'member_xml']


class Daemon(ClusterProc):
    def command(self, cmd: str, timeout: float = 3.0) -> str:
        return control_command(self.control, cmd, timeout)
