"""Run Debian's Firefox ESR 140 under Playwright's WebDriver BiDi driver.

Playwright (1.57 and later) sends `network.addDataCollector` right after connecting; Firefox
ESR 140 does not know that command yet and Playwright gives up. This launcher stands in for
the browser executable: it starts `firefox-esr`, and between the two it relays the BiDi
WebSocket and turns `unknown command` errors into successes (the data collectors only let
Playwright read response bodies later, which these tests never do; download behaviour is
never used either). Everything else passes through unchanged.

Used as `firefox.launch(channel="moz-firefox", executable_path=<a script running this module>)`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import subprocess
import sys
from typing import Any

import websockets

FIREFOX = "/usr/bin/firefox-esr"
LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")
# Newer commands Firefox 140 answers with `unknown command`: the relay reports success instead.
RESULTS = {"network.addDataCollector": {"collector": "relay"}}


async def relay(client: Any, upstream_base: str) -> None:
    async with websockets.connect(upstream_base + client.request.path, max_size=None) as upstream:
        methods: dict[int, str] = {}

        async def to_browser() -> None:
            async for message in client:
                command = json.loads(message)
                methods[command.get("id")] = command.get("method", "")
                await upstream.send(message)

        async def to_client() -> None:
            async for message in upstream:
                reply = json.loads(message)
                method = methods.pop(reply.get("id"), "") if "id" in reply else ""
                if reply.get("type") == "error" and reply.get("error") == "unknown command":
                    message = json.dumps({"type": "success", "id": reply["id"], "result": RESULTS.get(method, {})})
                await client.send(message)

        done, pending = await asyncio.wait(
            [asyncio.create_task(to_browser()), asyncio.create_task(to_client())], return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()


async def main(args: list[str]) -> int:
    browser = await asyncio.create_subprocess_exec(FIREFOX, *args, stderr=subprocess.PIPE)
    assert browser.stderr is not None
    server = None
    while True:
        line = await browser.stderr.readline()
        if not line:
            break
        text = line.decode(errors="replace")
        found = LISTENING.search(text)
        if found and server is None:
            upstream = found.group(1)
            server = await websockets.serve(
                functools.partial(relay, upstream_base=upstream), "127.0.0.1", 0, max_size=None
            )
            port = server.sockets[0].getsockname()[1]
            text = f"WebDriver BiDi listening on ws://127.0.0.1:{port}\n"
        sys.stderr.write(text)
        sys.stderr.flush()
    code = await browser.wait()
    if server is not None:
        server.close()
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
