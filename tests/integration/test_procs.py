"""The test harness itself: real rtp-io members start, answer and stop."""


def test_udp_member_answers_and_stops(procs):
    m = procs.member('udp')
    assert m.command('V') == '20040107\n'
    m.kill()
    assert not m.alive()


def test_unix_and_udp6_members(procs):
    u = procs.member('unix')
    assert u.command('VF 20081224') == '1\n'
    v6 = procs.member('udp6')
    assert v6.command('U6 c1 ::1 5000 f1').endswith(' ::1 6\n')
