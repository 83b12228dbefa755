"""`V`/`VF`: what the cluster promises, and when it answers (core/capabilities.py).

Real Member objects talk to in-memory RTPproxies (tests/support/cluster_harness.py);
time is a twisted Clock.
"""
from __future__ import annotations

from tests.support.cluster_harness import FakeRtpp, Harness, run, three
from rtp_cluster.core import protocol
from rtp_cluster.core import capabilities as capabilities_mod


# --- weighted pick ---------------------------------------------------------------------------------

def test_version_waits_for_the_first_probe_and_then_fails_like_a_relay_not_yet_up():
    """Issue 15: no `V`/`VF` answer before the members' capabilities are known.

    Clients ask once and keep the answers; an early `0` would stick for their lifetime.
    """
    h = three(start=False)
    version, capability = h.send('V'), h.send('VF 20081224')
    run(h.clock, capabilities_mod.CAPABILITY_WAIT - 0.05)
    assert version == [] and capability == []
    run(h.clock, 0.1)
    assert (version, capability) == ([protocol.E_NO_MEMBER_ONLINE], [protocol.E_NO_MEMBER_ONLINE])
    version, capability = h.send('V'), h.send('VF 20071116')
    h.member('m2').start()                      # the first probe completes during the wait
    run(h.clock, 0.1)
    assert (version, capability) == (['20040107'], ['1'])
    assert h.cmd('VF 20081224') == '0'          # remote member, no relay: see the notify tests
    assert h.cmd('VF 20050322') == '1'


def test_all_members_went_down():
    h = Harness([{}, {}])
    for name in h.fakes:
        h.take_offline(name)
    assert h.cmd('V') == '20040107'
    assert h.cmd('VF 20050322') == '1'          # from the capabilities read while online
    assert h.cmd('U c1 127.0.0.1 5000 ft') == protocol.E_NO_MEMBER_ONLINE
    assert h.cmd('L c1 127.0.0.1 6000 ft tt') == protocol.E_NO_MEMBER_ONLINE
    h.bring_online('m2')
    assert h.owner_of(h.cmd('U c1 127.0.0.1 5000 ft')) == 'm2'


# --- aggregation -------------------------------------------------------------------------------------

def test_capability_answer_requires_every_online_member():
    caps = FakeRtpp().capabilities
    h = Harness([{}, {'caps': caps - {'20191015'}}])
    assert h.cmd('VF 20191015') == '0'
    assert h.cmd('VF 20050322') == '1'
    assert h.cmd('VF 20040107') == '1'
    assert h.cmd('VF 20170313') == '0'
    assert h.cmd('VF 19990101') == '0'
    assert all(not any(t == 'VF 20191015' for t in f.received[-3:]) for f in h.fakes.values())
    h.take_offline('m2')
    # m2 gets sessions again when it is back: still not promised (issue 15; was '1')
    assert h.cmd('VF 20191015') == '0'
    h.cluster.drain_member('m2')                # removed: it will never get a session
    assert 'm2' not in h.cluster.members
    assert h.cmd('VF 20191015') == '1'
