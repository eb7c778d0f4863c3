"""discoverd.integrations.django: a temporary Django project whose AppConfig.ready() runs the recipe,
served by ``runserver`` with its autoreloader (two processes), and a management command."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from discoverd import Client, Instance, Status
from discoverd.integrations import django as discoverd_django
from discoverd.testing import ServerProcess
from tests.integrations.support import ENV, FAST, ZONE, Child, wait_until

APPID, OTHER, OTHER_ADDR = "dj.web", "dj.other", "http://10.9.2.1:8000"

# Every process that loads the settings has its own hostname (dj-<pid>): a registration by the
# autoreloader's process would be a second instance, not an overwrite of the server process's.
PROJECT = {
    "settings.py": f"""
import os

from discoverd import ClientConfig

SECRET_KEY = "not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["shop.apps.ShopConfig"]
ROOT_URLCONF = "urls"
DATABASES = {{}}
USE_TZ = True
DISCOVERD = {{
    "appid": {APPID!r},
    "addrs": ["http://shop.example:8000"],
    "hostname": f"dj-{{os.getpid()}}",
    "metadata": {{"pid": str(os.getpid())}},
    "config": ClientConfig(renew_interval=0.2, request_timeout=2.0, start_timeout=5.0),
}}
""",
    "shop/__init__.py": "",
    "shop/apps.py": """
import os

from django.apps import AppConfig
from django.conf import settings

from discoverd.integrations import django as discoverd_django


class ShopConfig(AppConfig):
    name = "shop"
    registration = None

    def ready(self):
        ShopConfig.registration = discoverd_django.start(**settings.DISCOVERD)
        print(f"discoverd: pid={os.getpid()} registered={ShopConfig.registration is not None}", flush=True)
""",
    "urls.py": f"""
import os

from django.conf import settings
from django.http import JsonResponse
from django.urls import path

from discoverd.integrations import django as discoverd_django
from shop.apps import ShopConfig


def whoami(request):
    client = discoverd_django.get_client()
    return JsonResponse({{
        "pid": os.getpid(),
        "resolved": [i.addrs for i in client.fetch({OTHER!r})],
        "start_again_is_same": discoverd_django.start(**settings.DISCOVERD) is ShopConfig.registration,
    }})


urlpatterns = [path("whoami", whoami)]
""",
}


@pytest.fixture
def checker(registry: ServerProcess) -> Iterator[Client]:
    with Client([registry.addr], env=ENV, zone=ZONE, hostname="dj-other-1", config=FAST) as c:
        c.register(OTHER, [OTHER_ADDR])
        yield c


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name, text in PROJECT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def django(project: Path, registry: ServerProcess, *args: str) -> Child:
    """``python -m django ARGS`` in the project; the registry and identity come from the
    environment, as the client reads them (DISCOVERY_NODES, DEPLOY_ENV, ZONE)."""
    env = {
        "PYTHONPATH": str(project),
        "DJANGO_SETTINGS_MODULE": "settings",
        "DISCOVERY_NODES": registry.addr,
        "DEPLOY_ENV": ENV,
        "ZONE": ZONE,
        "PYTHONUNBUFFERED": "1",
        "DJANGO_RUNSERVER_HIDE_WARNING": "true",
    }
    return Child([sys.executable, "-m", "django", *args], cwd=project, env=env, log=project / "django.log")


def registered(checker: Client) -> list[Instance]:
    return checker.fetch(APPID, status=Status.ALL)


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def test_runserver_registers_in_the_server_process_only_and_cancels_at_exit(
    project: Path, registry: ServerProcess, checker: Client
) -> None:
    server = django(project, registry, "runserver", "127.0.0.1:0")  # with the autoreloader
    try:
        port_line = re.compile(r"Starting development server at (http://127\.0\.0\.1:\d+)/")
        wait_until(lambda: server.alive() and port_line.search(server.output()) is not None, "runserver")
        match = port_line.search(server.output())
        assert match is not None
        answer = get(f"{match.group(1)}/whoami")
        serving_pid = answer["pid"]
        assert serving_pid != server.pid  # the autoreloader's child serves
        assert answer["resolved"] == [[OTHER_ADDR]]
        assert answer["start_again_is_same"] is True  # a second start() changes nothing

        (mine,) = registered(checker)  # the autoreloader's process did not register
        assert (mine.hostname, mine.metadata) == (f"dj-{serving_pid}", {"pid": str(serving_pid)})
        out = server.output()
        assert f"discoverd: pid={server.pid} registered=False" in out
        assert f"discoverd: pid={serving_pid} registered=True" in out

        # the server process leaves gracefully (runserver's SIGTERM handler exits, atexit runs)
        os.kill(serving_pid, signal.SIGTERM)
        assert server.proc.wait(20) == 0, server.output()
        assert registered(checker) == []
    finally:
        server.close()


def test_management_commands_do_not_register(project: Path, registry: ServerProcess) -> None:
    command = django(project, registry, "check")
    try:
        assert command.proc.wait(30) == 0, command.output()
        assert f"discoverd: pid={command.pid} registered=False" in command.output()
    finally:
        command.close()


@pytest.mark.parametrize(
    ("argv", "run_main", "expected"),
    [
        (["manage.py", "runserver"], None, False),  # the autoreloader's process
        (["manage.py", "runserver"], "true", True),  # the server process it starts
        (["/srv/manage.py", "runserver", "--noreload"], None, True),
        (["/usr/lib/python3/site-packages/django/__main__.py", "runserver"], "true", True),
        (["manage.py", "migrate"], None, False),
        (["django-admin", "shell"], "true", False),
        (["manage.py"], None, False),
        (["/venv/bin/gunicorn", "shop.wsgi"], None, True),
        (["uvicorn", "shop.asgi:application"], None, True),
        ([], None, True),
    ],
)
def test_serving(
    argv: list[str], run_main: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if run_main is None:
        monkeypatch.delenv("RUN_MAIN", raising=False)
    else:
        monkeypatch.setenv("RUN_MAIN", run_main)
    assert discoverd_django.serving(argv) is expected
