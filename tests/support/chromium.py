"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

The pipe protocol is JSON messages ended by a NUL byte, Chromium reading fd 3 and writing
fd 4: no websocket library is needed.  The browser keeps running between calls, so a
test can watch a page that refreshes itself (meta refresh) without reloading it.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--hide-scrollbars']


class Chromium:
    def __init__(self, width: int = 1280, height: int = 600, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.size = (width, height)
        self.profile = tempfile.mkdtemp(prefix='rtpc-chromium-')
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:         # in the child: fds 3 and 4 are the protocol pipe
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)
        self.proc = subprocess.Popen(
            ['chromium'] + FLAGS + ['--user-data-dir=' + self.profile,
                                    '--window-size=%d,%d' % (width, height),
                                    '--remote-debugging-pipe', 'about:blank'],
            pass_fds=(3, 4), preexec_fn=wire_fds,     # kept open after wire_fds made them
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b''
        self._id = 0
        self.session: str | None = None

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        message = {'id': self._id, 'method': method, 'params': params or {}}
        if session:
            message['sessionId'] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b'\0')
        while True:
            reply = self._read()
            if reply.get('id') == self._id:
                if 'error' in reply:
                    raise RuntimeError('%s: %s' % (method, reply['error']))
                return reply['result']

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b'\0' not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError('no answer from chromium')
            data = os.read(self._from_chrome, 1 << 20)
            if not data:
                raise EOFError('chromium closed the pipe')
            self._buffer += data
        raw, self._buffer = self._buffer.split(b'\0', 1)
        return json.loads(raw)

    def open(self, url: str) -> None:
        target = self.call('Target.createTarget', {'url': url})['targetId']
        self.session = self.call('Target.attachToTarget',
                                 {'targetId': target, 'flatten': True})['sessionId']
        width, height = self.size      # the viewport itself (the window has browser chrome)
        self.call('Emulation.setDeviceMetricsOverride', {'width': width, 'height': height,
                                                         'deviceScaleFactor': 1, 'mobile': False},
                  self.session)

    def evaluate(self, expression: str):
        result = self.call('Runtime.evaluate', {'expression': expression, 'returnByValue': True},
                           self.session)
        return result['result'].get('value')

    def dom(self) -> str:
        return self.evaluate('document.documentElement.outerHTML') or ''

    def load_id(self) -> float:
        """Changes with every navigation, a self-refresh included."""
        return self.evaluate('performance.timeOrigin')

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call('Page.captureScreenshot', {'format': 'png'},
                                          self.session)['data'])

    def close(self) -> None:
        try:
            self.call('Browser.close')
            self.proc.wait(10)
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for fd in (self._to_chrome, self._from_chrome):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)
