"""Small file systems that fill up during an import, an export or a sync (issue 16).

Each volume is a tmpfs mounted here (the suite runs as root).
- Import: the data directory is a 40 MiB tmpfs. An import larger than it fails with
  StorageFull, whether the spool or the stored image hit ENOSPC; it leaves no partial
  file, the catalog stays sound, and the next import on the same volume succeeds.
- Export: the bucket folder (`cos_root`) fills up, on a volume of its own or on the
  data volume (then `limits.min_free_space` applies too). The task fails with
  ExportTargetFull (or StorageReserveReached), leaves nothing in the bucket or its
  temporary folder, the image stays NORMAL, and once there is room the same export
  succeeds and matches the source (`qemu-img compare`).
- Sync: the data volume (catalog included) is full. A copy shares the stored blob, so
  only the catalog needs room: with room in the catalog's WAL the copy is made at no
  cost in bytes; without, SyncImages (and ExportImages) answer
  ResourceInsufficient.StorageFull with nothing changed. The catalog stays sound (no
  image without its blob, no blob without an image) and the next sync runs normally.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import diskimages as di
from conftest import Backend, Deployment, Server, make_accounts, next_second, unique, write_config
from origin import Origin
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from test_export import EXPORTS, EXT, QEMU, export, export_task, wait_task
from test_tenancy import start_import, wait_done

MiB = 1 << 20


@pytest.fixture(scope="module")
def origin():
    o = Origin()
    yield o
    o.close()


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    work = tmp_path_factory.mktemp("full-disk")
    big = di.convert(di.linux_disk(work / "big.raw", size_mib=128, data_mib=56, seed=3),
                     work / "big.qcow2", "qcow2-v3")
    small_raw = di.linux_disk(work / "small.raw", size_mib=48, data_mib=4, seed=4)
    small = di.convert(small_raw, work / "small.qcow2", "qcow2-v3")
    assert big.stat().st_size > 48 * MiB, big.stat().st_size
    return big, small, small_raw


@pytest.fixture
def small_fs(tmp_path):
    with tmpfs(tmp_path / "small-fs", 40) as mnt:
        yield mnt


@contextlib.contextmanager
def tmpfs(mnt: Path, size_mib: int):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(mnt: Path, leave: int) -> Path:
    """A file that takes the volume's free space but `leave` bytes (all of it for 0:
    written until ENOSPC, so nothing is left at all)."""
    filler = mnt / f"filler-{unique()}"
    with open(filler, "wb", buffering=0) as f:
        if leave > 0:
            os.posix_fallocate(f.fileno(), 0, free_bytes(mnt) - leave)
            return filler
        for chunk in (MiB, 4096):
            try:
                while True:
                    f.write(b"\xff" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    assert free_bytes(mnt) < 4096, free_bytes(mnt)
    return filler


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("spool", ["disk", "memory"])
def test_enospc_fails_one_import_cleanly_and_the_next_runs(tmp_path, small_fs, disks, origin, spool):
    big, small, small_raw = disks
    data = small_fs / "data"
    (tmp_path / "cos").mkdir()
    config = tmp_path / "imagegate.toml"
    accounts = make_accounts()
    write_config(config, data, accounts.values(), rate_limits=False, cos_root=tmp_path / "cos",
                 extra="[limits]\nmin_free_space = 0\n", workers="concurrency = 1",
                 source_extra=f'spool = "{spool}"\n', backend=Backend())
    server = Server(config, tmp_path / "server.log").start()
    dep = Deployment(server, accounts, tmp_path)
    try:
        image_id = start_import(dep, "a", origin.serve(f"full-{spool}-{unique()}.qcow2", big))
        t = wait_done(dep, "a", image_id)
        assert t["TaskState"] == "FAILED" and t["FailureCode"] == "StorageFull", t
        assert str(small_fs) not in t["FailureMessage"] and "/" not in t["FailureMessage"], t
        # Nothing of it is left: no stored image, no partial upload, no spool.
        leftovers = [f for f in files_under(data) if image_id in f]
        assert leftovers == [], leftovers
        db = data / "catalog.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # The volume has room again, and the next import runs normally.
        ok_id = start_import(dep, "a", origin.serve(f"after-full-{spool}-{unique()}.qcow2", small))
        t = wait_done(dep, "a", ok_id)
        assert t["TaskState"] == "SUCCEEDED", t
        stored = data / "images" / f"{ok_id}.qcow2"
        cmp = di.compare(small_raw, stored)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    finally:
        server.stop()



# --------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def export_disk(tmp_path_factory):
    """64 MiB virtual, ~26 MiB of it data: every export format takes ~26 MiB or more."""
    work = tmp_path_factory.mktemp("full-export")
    raw = di.linux_disk(work / "export.raw", size_mib=64, data_mib=24, seed=5)
    return raw, di.convert(raw, work / "export.qcow2", "qcow2-v3")


def start_server(tmp_path: Path, data: Path, cos: Path, reserve: int) -> Deployment:
    config = tmp_path / "imagegate.toml"
    accounts = make_accounts()
    write_config(config, data, accounts.values(), rate_limits=False, cos_root=cos,
                 extra=f"[limits]\nmin_free_space = {reserve}\n",
                 workers="concurrency = 1\nexport_concurrency = 1", backend=Backend())
    server = Server(config, tmp_path / "server.log").start()
    return Deployment(server, accounts, tmp_path)


def import_normal(dep: Deployment, origin: Origin, qcow2: Path) -> str:
    image_id = start_import(dep, "a", origin.serve(f"full-{unique()}.qcow2", qcow2))
    t = wait_done(dep, "a", image_id)
    assert t["TaskState"] == "SUCCEEDED", t
    return image_id


def image_state(dep: Deployment, image_id: str, region: str = "ap-guangzhou") -> str | None:
    resp = dep.common("a", region=region).call_json("DescribeImages", {"ImageIds": [image_id]})["Response"]
    return resp["ImageSet"][0]["ImageState"] if resp["ImageSet"] else None


def catalog_sound(data: Path):
    """integrity_check passes, every NORMAL image's blob is stored, every stored blob is
    named by an image (and registered)."""
    db = data / "catalog.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        named = {r[0] for r in conn.execute(
            "SELECT d.blob_key FROM image_disks d JOIN images i ON i.image_id = d.image_id "
            "WHERE i.state = 'NORMAL'")}
        registered = {r[0] for r in conn.execute("SELECT blob_key FROM blobs")}
    stored = {p.name for p in (data / "images").iterdir() if p.is_file()}
    assert named <= stored, f"images without blobs: {named - stored}"
    assert stored <= named, f"blobs without images: {stored - named}"
    assert named <= registered, f"blobs not registered: {named - registered}"


def assert_export_failed_cleanly(dep: Deployment, cos: Path, task_id: int, code: str, image_id: str,
                                 server_dirs: list[Path]):
    t = wait_task(dep, task_id, timeout=120)
    assert t["TaskState"] == "FAILED" and t["FailureCode"] == code, t
    message = t["FailureMessage"]
    assert message and "/" not in message, t
    assert not any(str(d) in message for d in server_dirs), t
    # Nothing in the bucket, nothing left in the temporary folder.
    assert files_under(cos / EXPORTS) == []
    partial_dir = cos / ".imagegate-exports"
    assert not partial_dir.exists() or files_under(partial_dir) == []
    assert image_state(dep, image_id) == "NORMAL"


def export_round_trips(dep: Deployment, cos: Path, image_id: str, fmt: str, source_raw: Path):
    next_second()
    resp = export(dep, image_id, fmt)
    t = wait_task(dep, resp["TaskId"], timeout=120)
    assert t["TaskState"] == "SUCCEEDED", t
    (path,) = resp["CosPaths"]
    obj = cos / EXPORTS / path.lstrip("/")
    assert obj.suffix == f".{EXT[fmt]}"
    cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", QEMU[fmt], str(source_raw), str(obj)],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    obj.unlink()  # room for the next format


def test_export_to_a_full_bucket_fails_cleanly_and_the_next_export_runs(tmp_path, export_disk, origin):
    """The bucket folder is a 48 MiB tmpfs of its own; the data volume has room."""
    source_raw, source = export_disk
    data = tmp_path / "data"
    with tmpfs(tmp_path / "cos", 48) as cos:
        (cos / EXPORTS).mkdir()
        dep = start_server(tmp_path, data, cos, reserve=0)
        try:
            image_id = import_normal(dep, origin, source)
            # Full from the first byte (RAW), and midway for every format.
            for fmt, leave in [("RAW", 0), ("RAW", 4 * MiB), ("QCOW2", 4 * MiB), ("VHD", 4 * MiB),
                               ("VMDK", 4 * MiB)]:
                filler = fill(cos, leave)
                next_second()
                task_id = export(dep, image_id, fmt)["TaskId"]
                assert_export_failed_cleanly(dep, cos, task_id, "ExportTargetFull", image_id, [cos, data])
                catalog_sound(data)
                filler.unlink()
                export_round_trips(dep, cos, image_id, fmt, source_raw)
            catalog_sound(data)
        finally:
            dep.server.stop()


@pytest.mark.parametrize("reserve, leave, code", [
    (0, 8 * MiB, "ExportTargetFull"),
    # 24 MiB free passes the check before the export; the one after 16 MiB written
    # finds 8 MiB, below the 16 MiB reserve.
    (16 * MiB, 24 * MiB, "StorageReserveReached"),
])
def test_export_into_the_data_volume_keeps_its_catalog_and_reserve(tmp_path, export_disk, origin,
                                                                   reserve, leave, code):
    """`cos_root` on the data volume (a 96 MiB tmpfs): the export's bytes compete with
    the catalog's. ENOSPC midway fails the export, not the catalog; with a reserve the
    export stops before the volume is full."""
    source_raw, source = export_disk
    with tmpfs(tmp_path / "vol", 96) as vol:
        data, cos = vol / "data", vol / "cos"
        (cos / EXPORTS).mkdir(parents=True)
        dep = start_server(tmp_path, data, cos, reserve=reserve)
        try:
            image_id = import_normal(dep, origin, source)
            filler = fill(vol, leave)
            next_second()
            task_id = export(dep, image_id, "RAW")["TaskId"]
            assert_export_failed_cleanly(dep, cos, task_id, code, image_id, [vol])
            catalog_sound(data)
            assert free_bytes(vol) >= leave - MiB, "the failed export left bytes behind"
            filler.unlink()
            export_round_trips(dep, cos, image_id, "RAW", source_raw)
            catalog_sound(data)
        finally:
            dep.server.stop()


# --------------------------------------------------------------------------- sync


def checkpoint(data: Path, mode: str):
    """Checkpoint the catalog's WAL into the database. RESTART: the next write reuses
    the WAL file from its start (no new room needed); TRUNCATE: the file is cut to zero
    bytes, so the next write needs new room on the volume."""
    deadline = time.monotonic() + 10
    with contextlib.closing(sqlite3.connect(data / "catalog.db")) as conn:
        while conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0] != 0:
            assert time.monotonic() < deadline, "the catalog stayed busy"
            time.sleep(0.05)


def sync_copy(dep: Deployment, image_id: str, region: str = "ap-shanghai") -> tuple[str | None, str | None]:
    """(new image id, None) or (None, error code)."""
    next_second()
    params = {"ImageIds": [image_id], "DestinationRegions": [region], "ImageName": unique("copy"),
              "ImageSetRequired": True}
    try:
        resp = dep.common("a").call_json("SyncImages", params)["Response"]
    except TencentCloudSDKException as e:
        return None, e.code
    (copy,) = resp["ImageSet"]
    return copy["ImageId"], None


def blocks_under(root: Path) -> int:
    return sum(p.stat().st_blocks for p in root.rglob("*") if p.is_file())


def test_sync_on_a_full_data_volume_copies_no_bytes_or_changes_nothing(tmp_path, disks, origin):
    """The data volume (catalog and blobs) is a 40 MiB tmpfs, filled to the last page."""
    _, small, small_raw = disks
    with tmpfs(tmp_path / "vol", 40) as vol:
        data = vol / "data"
        (tmp_path / "cos" / EXPORTS).mkdir(parents=True)
        dep = start_server(tmp_path, data, tmp_path / "cos", reserve=0)
        try:
            image_id = import_normal(dep, origin, small)
            images = data / "images"
            blocks = blocks_under(images)

            # Full, but the catalog's WAL has room it wrote before (the import's
            # progress): the copy is made, and costs no byte of the volume.
            checkpoint(data, "RESTART")
            assert (data / "catalog.db-wal").stat().st_size >= 64 << 10
            filler = fill(vol, 0)
            copy, code = sync_copy(dep, image_id)
            assert code is None and copy, code
            assert image_state(dep, copy, "ap-shanghai") == "NORMAL"
            assert free_bytes(vol) < 4096
            filler.unlink()
            catalog_sound(data)

            # Full, and the catalog needs new room for any write: refused, nothing made.
            checkpoint(data, "TRUNCATE")
            assert (data / "catalog.db-wal").stat().st_size == 0
            filler = fill(vol, 0)
            before = dep.common("a", region="ap-shanghai").call_json("DescribeImages", {})["Response"]
            copy, code = sync_copy(dep, image_id)
            assert (copy, code) == (None, "ResourceInsufficient.StorageFull")
            next_second()
            with pytest.raises(TencentCloudSDKException) as e:
                export(dep, image_id, "RAW")
            assert e.value.code == "ResourceInsufficient.StorageFull"
            assert "/" not in e.value.message
            after = dep.common("a", region="ap-shanghai").call_json("DescribeImages", {})["Response"]
            assert after["TotalCount"] == before["TotalCount"], after
            assert image_state(dep, image_id) == "NORMAL"
            filler.unlink()
            catalog_sound(data)

            # Room again: the next sync runs, shares the blob and adds no bytes.
            copy, code = sync_copy(dep, image_id)
            assert code is None and copy
            assert image_state(dep, copy, "ap-shanghai") == "NORMAL"
            catalog_sound(data)
            assert blocks_under(images) == blocks
            cmp = di.compare(small_raw, images / f"{image_id}.qcow2")
            assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        finally:
            dep.server.stop()


# --------------------------------------------------------------------------- an outcome on a full volume


def checkpoint_while_stopped(pid: int, data: Path):
    """TRUNCATE-checkpoint the catalog with the server stopped (SIGSTOP), so that its
    next write needs new room. A server stopped inside a transaction holds the WAL:
    let it run a moment and stop it again until the checkpoint goes through."""
    deadline = time.monotonic() + 20
    with contextlib.closing(sqlite3.connect(data / "catalog.db", timeout=0.05)) as conn:
        while True:
            os.kill(pid, signal.SIGSTOP)
            try:
                if conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                    return
            except sqlite3.OperationalError:
                pass  # locked
            os.kill(pid, signal.SIGCONT)
            assert time.monotonic() < deadline, "the catalog stayed busy"
            time.sleep(0.02)


def export_row(data: Path, task_id: int) -> tuple[str, int]:
    """(state, attempts) of an export task, read straight from the catalog (the volume
    may be full)."""
    with contextlib.closing(sqlite3.connect(f"file:{data / 'catalog.db'}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT state, attempts FROM export_tasks WHERE task_id = ?",
                            (task_id,)).fetchone()


def test_an_outcome_waits_for_room_on_a_full_catalog_volume(tmp_path, origin):
    """The data volume (catalog and blobs) fills up while an export runs; the bucket
    is elsewhere, so the export itself completes, but its SUCCEEDED cannot be written.
    The task stays RUNNING, past its lease, and is not run again; once there is room
    it is recorded within seconds (not a lease later, not by a second attempt), and
    its object matches the source."""
    work = tmp_path / "src"
    work.mkdir()
    # Large enough that the export (written past the page cache, so quickly) is still
    # running when the server is stopped to fill the volume.
    raw = di.linux_disk(work / "slow.raw", size_mib=512, data_mib=256, seed=7)
    source = di.convert(raw, work / "slow.qcow2", "qcow2-v3")
    lease = 3
    with tmpfs(tmp_path / "vol", 384) as vol:
        data, cos = vol / "data", tmp_path / "cos"
        (cos / EXPORTS).mkdir(parents=True)
        config = tmp_path / "imagegate.toml"
        accounts = make_accounts()
        write_config(config, data, accounts.values(), rate_limits=False, cos_root=cos,
                     extra="[limits]\nmin_free_space = 0\n",
                     workers=f"concurrency = 1\nexport_concurrency = 1\nlease_seconds = {lease}",
                     backend=Backend())
        server = Server(config, tmp_path / "server.log").start()
        dep = Deployment(server, accounts, tmp_path)
        pid = server.proc.pid
        filler = None
        try:
            image_id = import_normal(dep, origin, source)
            next_second()
            task_id = export(dep, image_id, "VMDK")["TaskId"]  # the slowest writer
            # Stopped once it writes its object (its temporary file exists): its
            # catalog writes before that (sizes, the object marked) are done.
            deadline = time.monotonic() + 60
            while not files_under(cos / ".imagegate-exports"):
                assert time.monotonic() < deadline, export_task(dep, task_id)
                time.sleep(0.01)
            checkpoint_while_stopped(pid, data)  # returns with the server stopped
            assert export_row(data, task_id)[0] == "RUNNING", \
                "the export finished before the volume could be filled: make it bigger"
            filler = fill(vol, 0)
            os.kill(pid, signal.SIGCONT)

            # The object is written and published; the outcome waits.
            deadline = time.monotonic() + 120
            while not files_under(cos / EXPORTS):
                assert time.monotonic() < deadline, "the export never published its object"
                time.sleep(0.1)
            time.sleep(2 * lease)
            assert export_row(data, task_id) == ("RUNNING", 1)
            assert "waits for room" in (tmp_path / "server.log").read_text()

            filler.unlink()
            filler = None
            freed = time.monotonic()
            t = wait_task(dep, task_id, timeout=60)
            recorded_after = time.monotonic() - freed
            assert t["TaskState"] == "SUCCEEDED", t
            assert recorded_after < 10, f"recorded {recorded_after:.1f}s after room came back"
            assert export_row(data, task_id) == ("SUCCEEDED", 1), "the export ran again"
            (path,) = files_under(cos / EXPORTS)
            cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", str(raw),
                                  str(cos / EXPORTS / path)], capture_output=True, text=True)
            assert cmp.returncode == 0, cmp.stdout + cmp.stderr
            catalog_sound(data)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            if filler is not None:
                filler.unlink()
            server.stop()
