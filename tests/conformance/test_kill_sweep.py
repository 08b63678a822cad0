"""kill -9 in every phase of an import (issue 16). The server is SIGKILLed the moment its
log says the import entered a phase (FETCHING, INSPECTING_FORMAT, CONVERTING, STORING,
INSPECTING_GUEST); after a restart the job is taken up again (a second attempt: the kill
did interrupt it) and ends NORMAL and byte-exact (`qemu-img compare`, `qemu-img check`,
SHA-256 of the source), with one blob, and nothing else left in the data directory: no
scratch, spool, sidecar or partial file. Exports and copies have their own kill tests
(`test_export.py`, `test_lifecycle_share_sync.py`), as has a killed worker in a cluster
(`tests/cluster`).
"""

from __future__ import annotations

import re
import signal
import time

import pytest

import diskimages as di
from conftest import _start_deployment, unique
from test_pipeline import assert_stored_equals, blob_files, images, origin, start_import, task, wait_done  # noqa: F401

# The log's colours, stripped before matching.
ANSI = re.compile(r"\x1b\[[0-9;]*m")
PHASE_LINE = re.compile(r"import phase image_id=(img-[0-9a-z]+) phase=\"([A-Z_]+)\"")
# The phases that wait on the network; the trickling source holds them open.
NETWORK_PHASES = ("FETCHING", "INSPECTING_FORMAT", "CONVERTING")
# Phases after FETCHING can last milliseconds (STORING, INSPECTING_FORMAT): the debug build
# pauses in the phase meant (src/pipeline/phase_pause.rs), so that the kill lands inside it on
# a busy machine too. FETCHING, set before the download starts, needs no pause.
PAUSE_VAR = "IMAGEGATE_DEBUG_PAUSE_PHASE"
PAUSE_MS = 3000
# Files of a settled data directory besides its blobs.
CATALOG = {"catalog.db", "catalog.db-wal", "catalog.db-shm"}


def phases_logged(server, image_id: str) -> list[str]:
    """The phases the server's log (its stderr) has named for the image so far."""
    text = ANSI.sub("", server.log_path.read_text(errors="replace"))
    return [m.group(2) for m in PHASE_LINE.finditer(text) if m.group(1) == image_id]


def kill_at_phase(server, image_id: str, phase: str, timeout: float = 60) -> list[str]:
    """SIGKILL as soon as the log names `phase` for the image (the log is followed in a
    busy loop: STORING lasts a few milliseconds); the phases logged by then."""
    deadline = time.monotonic() + timeout
    with open(server.log_path, "rb") as log:
        pending = ""
        while True:
            chunk = log.read()
            if chunk:
                pending += ANSI.sub("", chunk.decode(errors="replace"))
                lines = pending.split("\n")
                pending = lines.pop()
                if any((m := PHASE_LINE.search(line)) and m.groups() == (image_id, phase) for line in lines):
                    break
            else:
                assert server.proc.poll() is None, "the server stopped by itself"
                assert time.monotonic() < deadline, f"{phase} never logged: {phases_logged(server, image_id)}"
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    return phases_logged(server, image_id)


def kill_and_recover(tmp_path, images, origin, phase: str) -> list[str]:
    """One import killed when it enters `phase`, then restarted and checked whole; the
    phases logged before the kill."""
    pause = {} if phase == "FETCHING" else {PAUSE_VAR: f"{phase}:{PAUSE_MS}"}
    dep = _start_deployment(tmp_path, rate_limits=False, workers="concurrency = 1\nlease_seconds = 2",
                            server_env=pause)
    try:
        path = images.get("qcow2-v3")
        name = f"sweep-{unique()}.qcow2"
        url = origin.serve(name, path, "slow" if phase in NETWORK_PHASES else "ok")
        image_id = start_import(dep, url)
        logged = kill_at_phase(dep.server, image_id, phase)
        origin.routes[name] = (path, "ok")
        dep.server.env.pop(PAUSE_VAR, None)
        dep.server.start()
        img = wait_done(dep, image_id)
        t = task(dep, image_id)
        assert img["ImageState"] == "NORMAL", t
        assert t["Attempts"] >= 2, f"the kill after {logged} came after the import was recorded: {t}"
        assert t["Sha256"] == di.sha256(path)
        assert_stored_equals(dep, image_id, images.source)
        assert blob_files(dep) == [f"{image_id}.qcow2"]
        data = dep.workdir / "data"
        left = sorted(str(p.relative_to(data)) for p in data.rglob("*")
                      if p.is_file() and p.name not in CATALOG and p.parent.name != "images")
        assert left == [], left
        return logged
    finally:
        dep.server.stop()


@pytest.mark.parametrize("phase", ["FETCHING", "INSPECTING_FORMAT", "CONVERTING", "STORING", "INSPECTING_GUEST"])
def test_kill_9_in_each_import_phase(tmp_path, images, origin, phase):
    """The kill lands in the phase meant, on the first try: the slow source holds FETCHING
    open, the debug build's pause every later phase (without it, a kill sent when a watcher
    of the log saw STORING came too late six times in a row on a loaded machine)."""
    logged = kill_and_recover(tmp_path, images, origin, phase)
    assert logged[-1] == phase, f"the kill meant for {phase} came after {logged}"
