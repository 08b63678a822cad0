"""A data directory on a small file system that fills up mid-import (issue 16).

The data directory is a 40 MiB tmpfs (mounted here; the suite runs as root). An
import larger than it fails with StorageFull, whether the spool or the stored image
hit ENOSPC; it leaves no partial file, the catalog stays sound, and the next import
on the same volume succeeds.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

import diskimages as di
from conftest import Backend, Deployment, Server, make_accounts, unique, write_config
from origin import Origin
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
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m,mode=0700", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


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

