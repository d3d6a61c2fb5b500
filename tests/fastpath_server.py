"""aiohttp's ``TestServer`` with the production sites: connections start on the keystroke
fast path (``typeahead.http.fastpath``), as under ``typeahead serve``, or (``PlainTestServer``) go
straight to our aiohttp handler (``typeahead.http.connection``), as with the fast path off."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp.test_utils import TestServer
from yarl import URL

from typeahead.http.connection import Site
from typeahead.http.fastpath import KeystrokeSite


class FastPathTestServer(TestServer):
    site: KeystrokeSite
    site_class: type[Site] = KeystrokeSite

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None,
                           **kwargs: Any) -> None:
        if self.runner:
            return
        self._loop = loop
        self.runner = await self._make_runner(handler_cancellation=True, **kwargs)
        await self.runner.setup()
        sock = self.socket_factory(self.host, self.port or 0, socket.AF_INET)
        self.host, self.port = sock.getsockname()[:2]
        self.site = self.site_class(self.runner, sock, backlog=128)  # type: ignore[arg-type,assignment]
        await self.site.start()
        self.scheme = "http"
        self._root = URL(f"http://{self.host}:{self.port}")


class PlainTestServer(FastPathTestServer):
    site_class = Site
