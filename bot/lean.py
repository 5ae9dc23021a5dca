"""asyncio without OpenSSL, for a process that never speaks TLS through it.

asyncio imports `ssl` as it loads, in case a connection asks for TLS, and `ssl` loads
OpenSSL: about 4.5 MB of an idle daemon's 30 and 7 ms of each start on a small machine.
asyncio takes the module as absent when it cannot be imported (as in a Python built without
it), and then refuses only a connection that asks for TLS. The one part of moltsched that
makes its connections through asyncio and may ask for TLS is the Signal front end
(signalbot, aiohttp, websockets); it runs only in a daemon with a `signal:` section, and
adding that section takes a restart. Every other process imports asyncio through here.

What imports `ssl` afterwards gets the real module: urllib, for doctor's look at the Signal
service, or a daemon that cannot start telling the owner so.
"""

from __future__ import annotations

import importlib
import sys


def import_asyncio(tls: bool = False) -> None:
    """Import asyncio, with TLS only if `tls`: call it before anything imports asyncio."""
    if tls or "asyncio" in sys.modules or "ssl" in sys.modules:
        importlib.import_module("asyncio")
        return
    # A None entry makes `import ssl` raise ImportError; asyncio catches it.
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("asyncio")
    finally:
        del sys.modules["ssl"]
