"""deploy/docker-compose.yml: what matters, checked as data (no Docker engine here)."""

from __future__ import annotations

import yaml
from packaging.version import Version

from tests.helpers import REPO


def test_signal_cli_rest_api_compose_file() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    service = compose["services"]["signal-cli-rest-api"]
    image, _, tag = service["image"].partition(":")
    assert image == "bbernhard/signal-cli-rest-api"
    assert Version(tag) >= Version("0.101")  # what signalbot 2.2 accepts
    assert "MODE=json-rpc" in service["environment"]
    assert service["ports"] == ["127.0.0.1:8080:8080"]  # never on a public interface
    (volume,) = service["volumes"]
    name, _, target = volume.partition(":")
    assert name in compose["volumes"] and target == "/home/.local/share/signal-cli"
