"""A real Label Studio server for tests, and the export -> Label Studio -> JSON export loop.

Runs inside .venv-labelstudio (scripts/labelstudio-env.sh), which has ``label-studio`` and
``label-studio-sdk``. Nothing here is imported by the main test suite.

:class:`LabelStudioServer` starts ``label-studio start`` on 127.0.0.1 with its SQLite database,
media and ``HOME`` in a temporary folder: headless (``--no-browser``), offline (no version check,
no analytics, no Sentry, converter resources not downloaded), non-interactive (the admin user,
its password and a legacy API token are given on the command line, so nothing is asked).

:func:`round_trip` is the loop a user goes through, given the folder that ``harness human export
--format label-studio -o DIR`` (or the plugin's ``export``) wrote: create a project from
``labeling_config.xml``, import ``tasks.json``, let each annotator account submit its annotations
through the API, and download the JSON export(s). The store/report round trip calls it between
``harness human export`` and ``harness human import``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "harness-admin-pass-1"
ADMIN_TOKEN = "harness-test-admin-token-0001"
ANNOTATOR_PASSWORD = "harness-annotator-pass-1"

#: what an annotator does with one task: a value on the scale, CANCEL (Label Studio's "Skip",
#: stored as a cancelled annotation), or None (leaves it alone)
CANCEL = "cancel"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LabelStudioServer:
    """One ``label-studio start`` process; use as a context manager or call :meth:`start`/:meth:`stop`."""

    workdir: Path
    port: int = 0
    startup_timeout: float = 180.0
    url: str = ""
    startup_seconds: float = 0.0
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.log_path = self.workdir / "label-studio.log"

    def environment(self) -> dict[str, str]:
        data = self.workdir / "data"
        home = self.workdir / "home"
        data.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_"))}
        env.update(
            {
                "HOME": str(home),  # Label Studio writes ~/.local/share/label-studio otherwise
                "LABEL_STUDIO_BASE_DATA_DIR": str(data),
                "DJANGO_DB": "sqlite",
                "LATEST_VERSION_CHECK": "false",  # no call to PyPI at start
                "COLLECT_ANALYTICS": "false",
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "CONVERTER_DOWNLOAD_RESOURCES": "false",
                "LOG_LEVEL": "WARNING",
            }
        )
        return env

    def start(self) -> LabelStudioServer:
        port = self.port or _free_port()
        data = self.workdir / "data"
        command = [
            str(Path(sys.executable).with_name("label-studio")),
            "start",
            "--no-browser",
            "--internal-host", "127.0.0.1",
            "--port", str(port),
            "--data-dir", str(data),
            "--database", str(data / "label_studio.sqlite3"),
            "--username", ADMIN_EMAIL,
            "--password", ADMIN_PASSWORD,
            "--user-token", ADMIN_TOKEN,
            "--enable-legacy-api-token",
            "--log-level", "WARNING",
        ]
        env = self.environment()
        started = time.monotonic()
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        try:
            self.url = self._wait_until_up(port, started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_until_up(self, port: int, started: float) -> str:
        import httpx

        url = ""
        while time.monotonic() - started < self.startup_timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"label-studio exited with {self.process.returncode}:\n{self.log_tail()}")
            if not url:
                found = re.search(r"Starting development server at (http://127\.0\.0\.1:\d+)/", self.log_path.read_text(errors="replace"))
                if found:
                    url = found.group(1)  # Label Studio moves to the next port when the asked one is taken
            if url:
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        raise RuntimeError(f"label-studio did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own session: only the server and its children
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ accounts

    def client(self, token: str = ADMIN_TOKEN):
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=token)

    def sign_up(self, email: str, password: str = ANNOTATOR_PASSWORD) -> Annotator:
        """Create an annotator account through the organisation's invite link, as a person would; return its API token."""
        import httpx

        invite = httpx.get(self.url + "/api/invite", headers={"Authorization": f"Token {ADMIN_TOKEN}"}, timeout=30)
        invite.raise_for_status()
        link = invite.json()["invite_url"]
        with httpx.Client(base_url=self.url, timeout=30) as session:
            session.get(link).raise_for_status()
            response = session.post(
                link,
                data={"email": email, "password": password, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                headers={"Referer": self.url + link},
            )
            if response.status_code != 302:
                raise RuntimeError(f"sign-up of {email} failed: HTTP {response.status_code}")
            token = session.get("/api/current-user/token")
            token.raise_for_status()
        client = self.client(token.json()["token"])
        return Annotator(email=email, user_id=client.users.whoami().id, token=token.json()["token"])


@dataclass(frozen=True)
class Annotator:
    email: str
    user_id: int
    token: str


# ------------------------------------------------------------------ what annotators send


def result_for(scale: str, value: float, comment: str = "") -> list[dict[str, Any]]:
    """The ``result`` list Label Studio's editor writes for ``value`` under the harness's labeling config."""
    from harness_ratings.label_studio import BINARY_CHOICES, COMMENT_NAME, PAIR_CHOICES, RATING_NAME

    to_name = "output_left" if scale == "pairwise" else "output"
    if scale == "likert":
        result = [{"from_name": RATING_NAME, "to_name": to_name, "type": "rating", "value": {"rating": int(value)}}]
    else:
        choices = {v: alias for alias, _, v in (PAIR_CHOICES if scale == "pairwise" else BINARY_CHOICES)}
        result = [{"from_name": RATING_NAME, "to_name": to_name, "type": "choices", "value": {"choices": [choices[value]]}}]
    if comment:
        result.append({"from_name": COMMENT_NAME, "to_name": to_name, "type": "textarea", "value": {"text": [comment]}})
    return result


@dataclass
class RoundTrip:
    """What :func:`round_trip` did: the project, the annotators and the exports it downloaded."""

    project_id: int
    annotators: list[Annotator]
    task_ids: dict[str, int]  # item id -> Label Studio task id
    submitted: list[tuple[str, str, Any, str]]  # (item id, annotator email, value or CANCEL, comment)
    exports: dict[str, Path]  # "plain" (the Export button), "with_users" (a snapshot with user details)


def round_trip(
    server: LabelStudioServer,
    export_folder: str | Path,
    annotators: Sequence[Annotator],
    decide: Callable[[int, Annotator, dict[str, Any]], Any],
    out_dir: str | Path,
    *,
    title: str = "harness ratings",
    comment: Callable[[int, Annotator, dict[str, Any]], str] = lambda i, a, d: "",
) -> RoundTrip:
    """Rate the tasks of a harness export folder in a new Label Studio project and download the JSON exports.

    ``decide(task_index, annotator, task_data)`` returns the annotator's value on the export's scale
    (as :mod:`harness.api` defines it), :data:`CANCEL`, or None to leave the task alone;
    ``comment`` returns an optional comment. Every annotation is posted through the API with the
    annotator's own token. Writes ``out_dir/export-plain.json`` (what the Export button gives:
    ``GET /api/projects/ID/export?exportType=JSON``, users as numbers) and
    ``out_dir/export-with-users.json`` (an export snapshot with ``annotations__completed_by``
    expanded: users as objects with their email).
    """
    export_folder, out_dir = Path(export_folder), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    admin = server.client()
    config = (export_folder / "labeling_config.xml").read_text(encoding="utf-8")
    tasks = json.loads((export_folder / "tasks.json").read_text(encoding="utf-8"))
    scale = tasks[0]["data"]["harness_export"].split(" ")[1]
    project = admin.projects.create(title=title, label_config=config)
    admin.projects.import_tasks(id=project.id, request=tasks)
    created = {t.data["item_id"]: t.id for t in admin.tasks.list(project=project.id)}
    submitted = []
    for annotator in annotators:
        client = server.client(annotator.token)
        for index, task in enumerate(tasks):
            data = task["data"]
            value = decide(index, annotator, data)
            if value is None:
                continue
            task_id = created[data["item_id"]]
            if value == CANCEL:
                client.annotations.create(id=task_id, result=[], was_cancelled=True)
                submitted.append((data["item_id"], annotator.email, CANCEL, ""))
                continue
            text = comment(index, annotator, data)
            client.annotations.create(id=task_id, result=result_for(scale, value, text))
            submitted.append((data["item_id"], annotator.email, value, text))
    exports = {
        "plain": download_plain(server, project.id, out_dir / "export-plain.json"),
        "with_users": download_snapshot(server, project.id, out_dir / "export-with-users.json"),
    }
    return RoundTrip(project.id, list(annotators), created, submitted, exports)


def save_fixture(path: Path, name: str) -> None:
    """Copy a real export to $HARNESS_LS_FIXTURES/NAME when that variable is set (how tests/fixtures/label_studio is made)."""
    import shutil

    target = os.environ.get("HARNESS_LS_FIXTURES")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / name)


def download_plain(server: LabelStudioServer, project_id: int, path: Path) -> Path:
    """The JSON export the project's Export button downloads (every task, ``completed_by`` as the user's number)."""
    data = b"".join(server.client().projects.exports.download_sync(project_id, export_type="JSON", download_all_tasks=True))
    path.write_bytes(data)
    return path


def download_snapshot(server: LabelStudioServer, project_id: int, path: Path, timeout: float = 60.0) -> Path:
    """An export snapshot with ``completed_by`` expanded to ``{id, email, first_name, last_name}`` and cancelled annotations kept."""
    admin = server.client()
    export = admin.projects.exports.create(
        project_id,
        title="harness import",
        serialization_options={"annotations__completed_by": {"only_id": False}},
        annotation_filter_options={"usual": True, "skipped": True},
    )
    deadline = time.monotonic() + timeout
    while export.status != "completed":
        if export.status == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"export snapshot {export.id} of project {project_id}: {export.status}")
        time.sleep(0.2)
        export = admin.projects.exports.get(project_id, export.id)
    path.write_bytes(b"".join(admin.projects.exports.download(project_id, export.id, export_type="JSON")))
    return path
