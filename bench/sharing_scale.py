"""Session sharing at scale (issue 18): three instances, a private Redis, scripted members.

Phases, in this order, on one private redis-server and two bench.fakemember members:

 1. propagation: new calls through A at --rate per second for --seconds; B's count of
    foreign sessions is polled, and each poll's lag is the time since A had answered as
    many offers as B knows (p50/p99/max of that lag);
 2. creation rate of --sessions sessions through a cluster without sharing (N), deleted
    again, then through A with sharing (kept): the ratio;
 3. B's catch-up after the creation, and the RSS per own session on A / foreign on B;
 4. a forced resync on A while a light load runs against A: the load's p99 and max with
    and without the resync;
 5. a fresh instance C: how long it takes to know every session, the resyncs its arrival
    caused on A and B, and its RSS per foreign session;
 6. C is SIGKILLed: how long until A shows it dead in `ls peers`;
 7. failover: A is SIGKILLed, and B is asked `L` for a sample of A's calls: how many are
    answered with a port and how many broadcasts B needed.

    python -m bench.sharing_scale --sessions 100000
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import sys
import threading
import time

from bench.loadgen import LoadGen, percentile
from bench.members import ROOT, Fleet, free_tcp_port, free_udp_port, rss_bytes, write_results

HOST = '127.0.0.1'
RESULTS = os.path.join(ROOT, 'bench', 'results', 'sharing-scale.json')


class Instance:
    """One rtp_cluster daemon of the benchmark, reached over UDP and its admin socket."""

    def __init__(self, fleet: Fleet, name: str, members, redis_url: str | None,
                 capacity: int) -> None:
        self.name = name
        self.port = free_udp_port(HOST)
        self.addr = (HOST, self.port)
        self.started = time.monotonic()
        self.child = fleet.cluster(self.port, members, HOST, capacity=capacity,
                                   redis_url=redis_url, name=name)
        self.admin_path = os.path.join(fleet.workdir, name + '-admin.sock')
        self.instance_id = 'bench-%d' % self.port

    def admin(self, line: str, timeout: float = 30.0) -> list[str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.admin_path)
            s.sendall(line.encode() + b'\n')
            data = b''
            while not (data.endswith(b'OK\n') or b'\nERROR' in data or data.startswith(b'ERROR')):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        return data.decode('utf-8', 'replace').splitlines()[:-1]

    def redis_status(self) -> dict[str, str]:
        return dict(line.split(': ', 1) for line in self.admin('ls redis') if ': ' in line)

    def counts(self) -> tuple[int, int]:
        status = self.redis_status()
        return int(status['own']), int(status['foreign'])

    def resyncs(self) -> int:
        return int(self.redis_status()['resyncs'])

    def rss(self) -> int:
        return rss_bytes(self.child.pid)

    def kill(self) -> None:
        os.kill(self.child.pid, signal.SIGKILL)
        self.child.proc.wait(10)


def resync_started(instance: Instance) -> float:
    """When the last finished resync started (unix time), 0 before the first."""
    text = instance.redis_status()['last resync']       # 'N s ago at T (D s, K keys, ...)'
    if ' at ' not in text:
        return 0.0
    finished = float(text.split(' at ')[1].split()[0])
    return finished - float(text.split(' (')[1].split(' s,')[0])


def wait_until(predicate, limit: float, interval: float = 0.05) -> float | None:
    """Seconds until `predicate()` held, or None after `limit` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if predicate():
            return round(time.monotonic() - start, 3)
        time.sleep(interval)
    return None


def paced_offers(addr: tuple[str, int], rate: float, seconds: float, prefix: str) -> list[float]:
    """`U`s at `rate` per second; the monotonic time each positive reply arrived, in order."""
    answered: list[float] = []
    total = int(rate * seconds)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.setblocking(False)
        start = time.monotonic()
        sent = 0
        while len(answered) < total and time.monotonic() - start < seconds + 5:
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                s.send(b'p%d U %s-%d 127.0.0.1 %d pf' % (sent, prefix.encode(), sent,
                                                         20000 + sent % 20000))
                sent += 1
            try:
                while True:
                    data = s.recv(2048)
                    if data.split(b' ', 2)[1][:1].isdigit():
                        answered.append(time.monotonic())
            except BlockingIOError:
                time.sleep(0.0005)
    answered.sort()
    return answered


def propagation(a: Instance, b: Instance, rate: float, seconds: float) -> dict:
    """How far B's view of A's new calls lags behind A's replies."""
    base_foreign = b.counts()[1]
    polls: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            polls.append((time.monotonic(), b.counts()[1] - base_foreign))
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        answered = paced_offers(a.addr, rate, seconds, 'prop%d' % os.getpid())
        time.sleep(2.0)
    finally:
        stop.set()
        poller.join()
    lags = []
    for at, known in polls:
        # the first call B does not know yet was answered by A at answered[known]
        if known < len(answered) and answered[known] <= at:
            lags.append(at - answered[known])
        elif known < len(answered):
            lags.append(0.0)
    lags.sort()
    return {'rate': rate, 'seconds': seconds, 'answered': len(answered),
            'known_by_b': polls[-1][1] if polls else 0, 'polls': len(lags),
            'lag_p50_s': round(percentile(lags, 50), 3) if lags else None,
            'lag_p99_s': round(percentile(lags, 99), 3) if lags else None,
            'lag_max_s': round(lags[-1], 3) if lags else None}


def create(addr: tuple[str, int], sessions: int) -> tuple[LoadGen, dict]:
    gen = LoadGen(addr, 1, live_concurrency=128)
    stats = gen.create_live(sessions).summary()
    return gen, {'sessions': len(gen.live), 'commands_per_s': stats['commands_per_s'],
                 'errors': stats['error_count'], 'timeouts': stats['timeout_count']}


def light_load(addr: tuple[str, int], seconds: float, during=None) -> dict:
    """Call cycles at 100/s for `seconds`; `during()` runs in a thread meanwhile."""
    gen = LoadGen(addr, 8, rate=100.0)
    worker = threading.Thread(target=during) if during else None
    try:
        if worker:
            worker.start()
        summary = gen.run(seconds).summary()
    finally:
        if worker:
            worker.join()
        gen.close()
    return {'cycles_per_s': summary['cycles_per_s'], 'latency_ms': summary['latency_ms'],
            'errors': summary['error_count'], 'timeouts': summary['timeout_count']}


def failover(a: Instance, b: Instance, calls: list[str], sample: int) -> dict:
    broadcasts_before = int(b.redis_status()['broadcasts'])
    a.kill()
    step = max(1, len(calls) // sample)
    chosen = calls[::step][:sample]
    ok = 0
    latencies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(b.addr)
        s.settimeout(2.0)
        for i, cid in enumerate(chosen):
            t0 = time.monotonic()
            s.send(b'f%d L %s 127.0.0.1 6000 lf tf' % (i, cid.encode()))
            while True:
                cookie, _, body = s.recv(2048).partition(b' ')
                if cookie == b'f%d' % i:
                    break
            latencies.append(time.monotonic() - t0)
            ok += body[:1].isdigit() and body.split()[0] != b'0'
    latencies.sort()
    return {'sample': len(chosen), 'answered_with_port': ok,
            'broadcasts': int(b.redis_status()['broadcasts']) - broadcasts_before,
            'l_p99_ms': round(percentile(latencies, 99) * 1000, 2)}


def per_session(after: int, before: int, sessions: int) -> float | None:
    return round((after - before) / sessions, 1) if sessions else None


def run(args) -> dict:
    result: dict = {'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                    'machine': {'cpus': os.cpu_count(), 'kernel': platform.release(),
                                'python': platform.python_version()},
                    'sessions': args.sessions}
    with Fleet() as fleet:
        redis_port = free_tcp_port(HOST)
        fleet.redis(redis_port)
        url = 'redis://127.0.0.1:%d/0' % redis_port
        ports = [free_udp_port(HOST) for _ in range(2)]
        members = [('fake%d' % i, (HOST, port)) for i, port in enumerate(ports, 1)]
        for name, (_, port) in members:
            fleet.fake_member(name, port)
        capacity = args.sessions * 2
        plain = Instance(fleet, 'plain', members, None, capacity)
        a = Instance(fleet, 'a', members, url, capacity)
        b = Instance(fleet, 'b', members, url, capacity)
        wait_until(lambda: b.counts() == (0, 0) and a.resyncs() > 0, 30)

        result['propagation'] = propagation(a, b, args.rate, args.seconds)
        print('propagation', result['propagation'], flush=True)

        for target in (plain, a):           # warm both processes up the same way first
            warm, _ = create(target.addr, min(2000, args.sessions))
            warm.delete_live()
            warm.close()
        gen, result['create_without_sharing'] = create(plain.addr, args.sessions)
        gen.delete_live()
        gen.close()
        rss_a, rss_b = a.rss(), b.rss()
        redis_before = fleet_redis_memory(redis_port)
        own_before, foreign_before = a.counts()[0], b.counts()[1]
        gen, result['create_with_sharing'] = create(a.addr, args.sessions)
        created_at = time.monotonic()
        result['create_ratio'] = round(result['create_with_sharing']['commands_per_s']
                                       / result['create_without_sharing']['commands_per_s'], 3)
        print('create', result['create_without_sharing'], result['create_with_sharing'],
              flush=True)
        total = foreign_before + len(gen.live)
        wait_until(lambda: b.counts()[1] >= total, 300, 0.5)
        result['b_caught_up_after_s'] = round(time.monotonic() - created_at, 2)
        time.sleep(2.0)
        result['rss_per_own_session_a'] = per_session(a.rss(), rss_a, a.counts()[0] - own_before)
        result['rss_per_foreign_session_b'] = per_session(b.rss(), rss_b, len(gen.live))
        result['redis_bytes_per_session'] = per_session(fleet_redis_memory(redis_port),
                                                        redis_before, len(gen.live))
        print('rss', result['rss_per_own_session_a'], result['rss_per_foreign_session_b'],
              flush=True)

        result['load_baseline'] = light_load(a.addr, args.load_seconds)
        resync_took: list[float] = []

        def forced_resync() -> None:
            asked = time.time()
            a.admin('resync')
            if wait_until(lambda: resync_started(a) >= asked, 120, 0.2) is not None:
                resync_took.append(float(a.redis_status()['last resync'].split(' (')[1]
                                         .split(' s,')[0]))

        result['load_during_resync'] = light_load(a.addr, args.load_seconds, forced_resync)
        result['forced_resync_s'] = round(resync_took[0], 2) if resync_took else None
        print('resync', result['load_baseline'], result['load_during_resync'], flush=True)

        resyncs_before = (a.resyncs(), b.resyncs())
        c = Instance(fleet, 'c', members, url, capacity)
        rss_c = c.rss()
        learned = wait_until(lambda: c.counts()[1] >= total, 300, 0.2)
        result['fresh_instance_learns_s'] = (round(time.monotonic() - c.started, 2)
                                             if learned is not None else None)
        result['fresh_instance_learns_after_start_s'] = learned
        time.sleep(1.0)
        result['resyncs_caused_by_arrival'] = {'a': a.resyncs() - resyncs_before[0],
                                               'b': b.resyncs() - resyncs_before[1]}
        result['rss_per_foreign_session_c'] = per_session(c.rss(), rss_c, total)
        print('fresh', result['fresh_instance_learns_s'], result['resyncs_caused_by_arrival'],
              flush=True)

        c.kill()
        result['dead_peer_shown_after_s'] = wait_until(
            lambda: any(line.startswith(c.instance_id + ' ') and ' alive=no ' in line
                        for line in a.admin('ls peers')), 120, 0.2)
        result['failover'] = failover(a, b, gen.live, args.sample)
        print('dead peer', result['dead_peer_shown_after_s'], 'failover', result['failover'],
              flush=True)
        gen.close()
    return result


def fleet_redis_memory(port: int) -> int:
    import redis
    return int(redis.Redis(host=HOST, port=port).info('memory')['used_memory'])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sessions', type=int, default=100000)
    ap.add_argument('--rate', type=float, default=1000.0, help='new calls/s (propagation)')
    ap.add_argument('--seconds', type=float, default=10.0, help='propagation phase length')
    ap.add_argument('--load-seconds', type=float, default=20.0, help='light load phase length')
    ap.add_argument('--sample', type=int, default=2000, help='failover sample')
    ap.add_argument('--out', default=RESULTS)
    args = ap.parse_args(argv)
    result = run(args)
    write_results(args.out, result)
    print('wrote', args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
