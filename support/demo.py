"""`make demo`: the bot without a Signal account.

Starts the emulator, then `moltsched daemon` on the demo tasks (config/demo_tasks) with a
`signal:` section pointing at it, and gives you a prompt: each line you type reaches the bot
as a message from the admin's phone, and what the bot sends (answers and alerts) is printed.
State goes to a temporary folder. Ctrl-D or Ctrl-C ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from support.signal_service import ACCOUNT, ALICE, ALICE_UUID, SignalService, text_frame

REPO = Path(__file__).resolve().parents[1]
MOLTSCHED = str(Path(sys.executable).parent / "moltsched")


def config_text(service: str, state: Path) -> str:
    demo = (REPO / "config" / "moltsched.yaml").read_text()
    demo = demo.replace("state_dir: ../state", f"state_dir: {state}")
    demo = demo.replace("tasks_dir: demo_tasks", f"tasks_dir: {REPO / 'config' / 'demo_tasks'}")
    return demo + (
        f'signal:\n  service: {service}\n  account: "{ACCOUNT}"\n  admins: ["{ALICE}"]\n'
    )


def show(body: dict[str, Any]) -> None:
    to = body["recipients"][0]
    who = "you" if to in (ALICE, ALICE_UUID) else to
    lines = str(body.get("message", "")).splitlines() or [""]
    print(f"\n🤖 to {who}: {lines[0]}")
    for line in lines[1:]:
        print(f"   {line}")
    print("you> ", end="", flush=True)


async def main() -> None:
    service = SignalService()
    await service.start()
    with tempfile.TemporaryDirectory(prefix="moltsched-demo-") as td:
        config = Path(td) / "moltsched.yaml"
        config.write_text(config_text(service.service, Path(td) / "state"))
        daemon = await asyncio.create_subprocess_exec(
            MOLTSCHED,
            "--config",
            str(config),
            "daemon",
            stderr=asyncio.subprocess.DEVNULL,
            env=os.environ | {"MOLTSCHED_LOG_LEVEL": "WARNING"},
        )
        await service.wait_connected(30)
        print(
            "The bot is up. Type what you would send it from your phone "
            "(status, run:counter, pause:flaky, logs, help). Ctrl-D ends the demo."
        )
        print("you> ", end="", flush=True)
        # What the bot sent while it came up (a demo task's first alert), after the banner.
        for body in service.sent:
            show(body)
        service.on_send = show
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                if line.strip():
                    await service.push(text_frame(line.rstrip("\n")))
                else:
                    print("you> ", end="", flush=True)
        finally:
            daemon.terminate()
            await daemon.wait()
            await service.stop()
    print()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
