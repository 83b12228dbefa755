"""adapters/http.py: /metrics formatted on the reactor when small, in a thread when large."""
from __future__ import annotations

from twisted.web import server
from twisted.web.test.requesthelper import DummyRequest

from rtp_cluster.adapters import http, metrics
from rtp_cluster.core.config import HttpConfig
from tests.unit.test_observe_world import World


class InlineThreads:
    """A reactor whose thread pool runs work at once and records that it was asked."""

    def __init__(self) -> None:
        self.handed_over = 0

    def getThreadPool(self) -> 'InlineThreads':
        return self

    def callInThreadWithCallback(self, on_result, work, *args, **kwargs) -> None:
        self.handed_over += 1
        on_result(True, work(*args, **kwargs))

    def callFromThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)


def metrics_resource(world: World) -> tuple[http.HttpServer, InlineThreads]:
    server_ = http.HttpServer(world, HttpConfig('127.0.0.1', 9180))
    server_.reactor = InlineThreads()
    return server_, server_.reactor


def get_metrics(server_: http.HttpServer) -> tuple[object, DummyRequest]:
    request = DummyRequest([b'metrics'])
    return http._Metrics(server_).render_GET(request), request


def test_a_small_scrape_is_formatted_on_the_reactor():
    world = World({'a': ['m1', 'm2']})
    world.command_stats('a').observe('U', 0.002, '0')
    server_, threads = metrics_resource(world)
    body, request = get_metrics(server_)
    assert isinstance(body, bytes) and threads.handed_over == 0
    assert b'rtp_cluster_commands_total{cluster="a",command="U"} 1.0' in body
    assert request.responseHeaders.getRawHeaders(b'content-type') == [
        metrics.CONTENT_TYPE.encode()]


def test_a_large_scrape_is_formatted_in_a_thread(monkeypatch):
    world = World({'a': ['m%d' % i for i in range(20)]})
    world.command_stats('a').observe('U', 0.002, '0')
    families = metrics.MetricsPage(world).collect()
    assert metrics.sample_count(families) > metrics.INLINE_SAMPLES   # 20 members: large
    server_, threads = metrics_resource(world)
    body, request = get_metrics(server_)
    assert body is server.NOT_DONE_YET and threads.handed_over == 1
    assert request.finished == 1
    assert b'rtp_cluster_commands_total{cluster="a",command="U"} 1.0' in b''.join(request.written)


def test_sample_count_is_the_number_of_sample_lines_formatted():
    page = metrics.MetricsPage(World({'a': ['m1']}))
    families = page.collect()
    text = page.render(families).decode()
    ours = [line for line in text.splitlines() if line.startswith('rtp_cluster_')]
    assert metrics.sample_count(families) == len(ours) > 10
