"""deploy/docker-compose.yml: what matters, checked as data (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path

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


def test_the_example_configuration_is_valid_and_shows_every_key(tmp_path: Path) -> None:
    import dataclasses
    import grp
    import os

    from config.loader import load_config
    from config.schema import (
        AlertsModel,
        ConfigModel,
        ControlModel,
        MetricsModel,
        RetentionModel,
        SignalModel,
        TaskModel,
    )

    example = REPO / "deploy" / "moltsched.example.yaml"
    text = example.read_text()
    models = (ConfigModel, TaskModel, SignalModel, AlertsModel, ControlModel, RetentionModel)
    for model in (*models, MetricsModel):
        for key in (f.name for f in dataclasses.fields(model)):
            if key != "description":  # the seed's, ignored
                assert f"{key}:" in text, f"{model.__name__}.{key} is not in the example"
    # As installed: its paths and group made to exist here.
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "check-calendar.sh").write_text("true\n")
    local = (
        text.replace("/var/lib/moltsched", str(tmp_path / "state"))
        .replace("/etc/moltsched/tasks", str(tasks))
        .replace("group: moltbot", f"group: {grp.getgrgid(os.getgid()).gr_name}")
    )
    path = tmp_path / "moltsched.yaml"
    path.write_text(local)
    config = load_config(path)
    assert [t.id for t in config.tasks] == ["check-calendar", "scrape-prices"]
    assert config.signal is not None and config.metrics is not None
    assert config.settings.retention.output_bytes == 64 * 1000**2
