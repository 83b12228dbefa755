"""The optional HTTP listener (`<http><address>` in the config), served by twisted.web.

    GET /metrics       Prometheus text format (adapters/metrics.py)
    GET /health        200 {"status": "ok"} or 503 {"status": "unhealthy", "reasons": [...]}
    GET /status.json   the status snapshot (core/status.py)
    GET /              the live status page (HTML and CSS, refreshes itself)

Every answer is computed when asked, on the reactor, from the state in memory; nothing
here blocks or waits on a member or on Redis.  There is no authentication: the listener
belongs on loopback or a management network.
"""
from __future__ import annotations

import json
from typing import Any

from twisted.internet import threads
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web import resource, server

from .. import __version__
from ..core import status
from ..core.config import HttpConfig
from . import metrics
from .transports import StartupError

JSON = b'application/json'


class HttpServer:
    log = Logger()

    def __init__(self, runtime: Any, config: HttpConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.metrics = metrics.MetricsPage(runtime)
        self.port = None
        self.reactor = None

    def listen(self, reactor) -> None:
        self.reactor = reactor
        site = _QuietSite(_Root(self))
        try:
            self.port = reactor.listenTCP(self.config.port, site, interface=self.config.host)
        except CannotListenError as exc:
            raise StartupError('http listener cannot listen on %s: %s'
                               % (self.config.address, exc.socketError)) from None
        self.log.info('http listener on {address}', address=self.config.address)

    def stop(self):
        if self.port is None:
            return None
        port, self.port = self.port, None
        return port.stopListening()

    # --- what the resources serve ---------------------------------------------------------

    def snapshot(self) -> status.Snapshot:
        runtime = self.runtime
        return status.snapshot(runtime.clusters.values(), runtime.reactor.seconds(),
                               runtime.started, _sharing_status(runtime.sharing))

    def health(self) -> tuple[int, bytes]:
        sharing = self.runtime.sharing
        duplicate = sharing is not None and sharing.state.duplicate_active
        healthy, reasons = status.health_of(self.runtime.clusters.values(), duplicate)
        body = {'status': 'ok'} if healthy else {'status': 'unhealthy', 'reasons': reasons}
        return (200 if healthy else 503), _json(body)


def _sharing_status(sharing: Any) -> dict[str, Any] | None:
    if sharing is None:
        return None
    peers = {name: 'alive' if info.get('alive') else 'dead'
             for name, info in sharing.peers.items()}
    return dict(sharing.status(), peers=peers)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(',', ':'), sort_keys=True).encode() + b'\n'


class _QuietSite(server.Site):
    """No access log: a scrape every second would flood the daemon's log."""

    noisy = False

    def log(self, request) -> None:
        pass


class _Leaf(resource.Resource):
    isLeaf = True

    def __init__(self, http: HttpServer) -> None:
        super().__init__()
        self.http = http

    def render_HEAD(self, request):
        return self.render_GET(request)


class _Metrics(_Leaf):
    """Collected on the reactor; formatted there too when small, else in a thread (see
    adapters/metrics.py)."""

    def render_GET(self, request):
        page = self.http.metrics
        families = page.collect()
        if metrics.sample_count(families) <= metrics.INLINE_SAMPLES:
            # a few milliseconds at most: cheaper than two thread hand-overs
            request.setHeader(b'content-type', metrics.CONTENT_TYPE.encode())
            return page.render(families)
        gone = []
        request.notifyFinish().addErrback(gone.append)     # the scraper hung up

        def send(body: bytes) -> None:
            if not gone:
                request.setHeader(b'content-type', metrics.CONTENT_TYPE.encode())
                request.write(body)
                request.finish()

        def failed(failure) -> None:
            self.http.log.failure('formatting /metrics failed', failure)
            if not gone:
                request.setResponseCode(500)
                request.finish()
        threads.deferToThreadPool(self.http.reactor, self.http.reactor.getThreadPool(),
                                  page.render, families).addCallbacks(send, failed)
        return server.NOT_DONE_YET

    def render_HEAD(self, request):
        request.setHeader(b'content-type', metrics.CONTENT_TYPE.encode())
        return b''


class _Health(_Leaf):
    def render_GET(self, request) -> bytes:
        code, body = self.http.health()
        request.setResponseCode(code)
        request.setHeader(b'content-type', JSON)
        request.setHeader(b'cache-control', b'no-store')
        return body


class _StatusJson(_Leaf):
    def render_GET(self, request) -> bytes:
        request.setHeader(b'content-type', JSON)
        request.setHeader(b'cache-control', b'no-store')
        return _json(self.http.snapshot())


class _Page(_Leaf):
    def render_GET(self, request) -> bytes:
        request.setHeader(b'content-type', b'text/html; charset=utf-8')
        request.setHeader(b'cache-control', b'no-store')
        return status.render_html(self.http.snapshot(), __version__).encode('utf-8')


class _Root(resource.Resource):
    def __init__(self, http: HttpServer) -> None:
        super().__init__()
        self.children_by_path = {b'': _Page(http), b'metrics': _Metrics(http),
                                 b'health': _Health(http), b'status.json': _StatusJson(http)}

    def getChild(self, path: bytes, request):
        if request.postpath:            # nothing below the top level
            return resource.NoResource()
        return self.children_by_path.get(path) or resource.NoResource()


__all__ = ['HttpServer']
