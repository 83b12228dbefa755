"""`I` and `G` for a cluster: the members' statistics added up.

Counters never decrease, also when a member goes offline, restarts or is removed: the
totals of removed members are kept here (`retire`), and each member keeps its own across
restarts (`core/monotonic.py`).  Gauges are the online members' current values.
"""
from __future__ import annotations

from typing import Callable, Mapping

from . import protocol
from .member import Member
from .monotonic import RetiredTotals
from .protocol import Command

Respond = Callable[[str], None]
STATS_DEADLINE = 1.0    # s; a silent member's last answer to the same question is used


class StatsAggregator:
    """Sums over one cluster's `members` (the cluster's own dict) and its removed members."""

    def __init__(self, members: Mapping[str, Member]) -> None:
        self.members = members
        self._retired_info = RetiredTotals()
        self._retired_stats = RetiredTotals()

    def retire(self, member: Member) -> None:
        """Keep the counters of a member that is being removed."""
        self._retired_info.retire(member.info_totals)
        self._retired_stats.retire(member.stats_totals)

    def info(self, with_load: bool = False) -> str:
        """`I`: counters over every member ever seen (never decrease), gauges of online ones."""
        totals = {name: self._retired_info.total(name) for name in protocol.INFO_COUNTERS}
        for name in protocol.INFO_GAUGES:
            totals[name] = 0
        for member in self.members.values():
            for name in protocol.INFO_COUNTERS:
                totals[name] += member.info_totals.total(name)
            if member.online and member.stats is not None:
                for name in protocol.INFO_GAUGES:
                    totals[name] += member.stats[name]
        return protocol.format_info(totals, with_load)

    def stats(self, cmd: Command, online: list[Member], respond: Respond) -> None:
        """`G name…`: ask every online member, answer with the sums."""
        names = tuple(cmd.args)
        if not names:
            respond('')
            return
        if not online:
            respond(protocol.E_NO_MEMBER_ONLINE)
            return
        verbose = 'v' in cmd.mods.lower()
        request = 'G ' + ' '.join(names)
        rows: list[list] = []
        errors: list[str] = []
        remaining = [len(online)]

        def collect(member: Member, reply: str | None) -> None:
            remaining[0] -= 1
            values = self._member_values(member, names, reply, errors)
            if values is not None:
                rows.append(values)
            if remaining[0] == 0:
                if rows:
                    respond(protocol.format_stats(names, self._totals(names, rows), verbose))
                else:
                    respond(errors[0] if errors else protocol.E_STATS_ALL_FAILED)

        for member in online:
            member.send(request, lambda r, m=member: collect(m, r), STATS_DEADLINE)

    @staticmethod
    def _member_values(member: Member, names: tuple[str, ...], reply: str | None,
                       errors: list[str]) -> list | None:
        """This member's row: its answer, else its last answer to the same question."""
        values = protocol.parse_stats_reply(names, reply, False) if reply else None
        if values is not None:
            member.stats_cache[names] = values
            for name, value in zip(names, values):
                if name not in protocol.STATS_GAUGES:
                    member.stats_totals.update(name, value)
            return values
        if reply is not None and protocol.is_error(reply):
            errors.append(reply)
            return None
        return member.stats_cache.get(names)

    def _totals(self, names: tuple[str, ...], rows: list[list]) -> list:
        """Rates summed over this round's rows; counters over every member ever seen."""
        totals = protocol.sum_stats(rows)
        for i, name in enumerate(names):
            if name in protocol.STATS_GAUGES:
                continue
            total = self._retired_stats.total(name)
            for member in self.members.values():
                total += member.stats_totals.total(name)
            # keep the members' number type (a double stays a double)
            totals[i] = float(total) if isinstance(totals[i], float) else total
        return totals
