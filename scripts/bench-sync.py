#!/usr/bin/env python3
"""SyncImages on the local store against copying the stored blob with `cp`.

Imports a sparse raw disk (default 8 GiB virtual: a small Linux disk followed by
1 GiB of random data spread over the rest) into a server whose data folder is in --workdir, then measures in the same run:
  (a) SyncImages of it to another region, until the copy is NORMAL: wall time and
      the data folder's disk usage before and after (du, allocated blocks);
  (b) the baseline: `cp --sparse=always` of the stored blob inside the same folder,
      with its time and disk usage delta.
Prints the figures and the ratio a/b. Asserts nothing; not part of the test suite.

Usage: tests/.venv/bin/python scripts/bench-sync.py [--virtual-gib 8] [--data-mib 1024]
       [--workdir DIR] [--repeat 3]
Environment: IMAGEGATE_BIN (default: target/release/imagegate, else target/debug).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "conformance"))

from conftest import Server, make_accounts, write_config  # noqa: E402
from tencentcloud.common import credential  # noqa: E402
from tencentcloud.common.common_client import CommonClient  # noqa: E402
from tencentcloud.common.profile.client_profile import ClientProfile  # noqa: E402
from tencentcloud.common.profile.http_profile import HttpProfile  # noqa: E402


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def sparse_disk(path: Path, virtual_gib: int, data_mib: int) -> None:
    """A small bootable Linux disk (the conformance fixture, so that the guest checks
    pass) grown to the virtual size, with random 4 MiB chunks spread evenly over the
    space after it."""
    import diskimages as di
    di.linux_disk(path)
    base = 128 << 20
    chunk = 4 << 20
    chunks = max(1, data_mib // 4)
    stride = ((virtual_gib << 30) - base) // chunks
    with open(path, "r+b") as f:
        f.truncate(virtual_gib << 30)
        for n in range(chunks):
            f.seek(base + n * stride)
            f.write(os.urandom(chunk))


def client(server: Server, acc, region: str) -> CommonClient:
    cred = credential.Credential(acc.secret_id, acc.secret_key)
    http = HttpProfile(protocol="http", endpoint=server.endpoint, reqTimeout=600)
    return CommonClient("cvm", "2017-03-12", cred, region, ClientProfile(httpProfile=http))


def state(c: CommonClient, image_id: str) -> str:
    r = c.call_json("DescribeImages", {"ImageIds": [image_id]})["Response"]
    return r["ImageSet"][0]["ImageState"] if r["ImageSet"] else "ABSENT"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--virtual-gib", type=int, default=8)
    ap.add_argument("--data-mib", type=int, default=1024)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if "IMAGEGATE_BIN" not in os.environ:
        for kind in ("release", "debug"):
            b = ROOT / "target" / kind / "imagegate"
            if b.exists():
                os.environ["IMAGEGATE_BIN"] = str(b)
                break
    work = Path(tempfile.mkdtemp(prefix="bench-sync-", dir=args.workdir))
    server = None
    try:
        accounts = make_accounts()
        acc = accounts["a"]
        data, cos = work / "data", work / "cos"
        (cos / f"images-{acc.app_id}").mkdir(parents=True)
        disk = cos / f"images-{acc.app_id}" / "big.raw"
        print(f"fixture: {args.virtual_gib} GiB virtual, {args.data_mib} MiB data: {disk}")
        sparse_disk(disk, args.virtual_gib, args.data_mib)
        config = work / "imagegate.toml"
        write_config(config, data, accounts.values(), rate_limits=False, cos_root=cos)
        server = Server(config, work / "server.log").start()
        gz = client(server, acc, "ap-guangzhou")
        sh = client(server, acc, "ap-shanghai")
        url = f"https://images-{acc.app_id}.cos.ap-guangzhou.myqcloud.com/big.raw"
        image_id = gz.call_json("ImportImage", {
            "Architecture": "x86_64", "OsType": "CentOS", "OsVersion": "7", "ImageUrl": url,
            "ImageName": "bench-source"})["Response"]["ImageId"]
        while state(gz, image_id) == "IMPORTING":
            time.sleep(0.5)
        if state(gz, image_id) != "NORMAL":
            print(gz.call_json("DescribeImportImageTasks", {"ImageIds": [image_id]}), file=sys.stderr)
            return 1
        blob = data / "images" / f"{image_id}.qcow2"
        print(f"stored blob: {du_bytes(blob) / 2**20:.1f} MiB allocated")

        sync_s, sync_du, cp_s, cp_du = [], [], [], []
        for n in range(args.repeat):
            before = du_bytes(data)
            t0 = time.monotonic()
            r = gz.call_json("SyncImages", {"ImageIds": [image_id], "DestinationRegions": ["ap-shanghai"],
                                            "ImageName": f"copy-{n}", "ImageSetRequired": True})["Response"]
            copy = r["ImageSet"][0]["ImageId"]
            while state(sh, copy) != "NORMAL":
                time.sleep(0.01)
            sync_s.append(time.monotonic() - t0)
            subprocess.run(["sync"], check=True)
            sync_du.append(du_bytes(data) - before)

            before = du_bytes(data)
            t0 = time.monotonic()
            dest = data / f"cp-{n}.qcow2"
            subprocess.run(["cp", "--sparse=always", str(blob), str(dest)], check=True)
            subprocess.run(["sync", str(dest)], check=True)
            cp_s.append(time.monotonic() - t0)
            cp_du.append(du_bytes(data) - before)
            dest.unlink()
            sh.call_json("DeleteImages", {"ImageIds": [copy]})

        a, b = statistics.median(sync_s), statistics.median(cp_s)
        print(json.dumps({
            "virtual_gib": args.virtual_gib, "data_mib": args.data_mib, "repeat": args.repeat,
            "sync_to_normal_s": [round(x, 4) for x in sync_s],
            "sync_disk_delta_bytes": sync_du,
            "cp_s": [round(x, 4) for x in cp_s],
            "cp_disk_delta_bytes": cp_du,
        }, indent=1))
        print(f"(a) SyncImages to NORMAL: median {a * 1000:.1f} ms, disk usage delta median "
              f"{statistics.median(sync_du) / 2**20:.2f} MiB")
        print(f"(b) cp --sparse=always + sync of the blob: median {b * 1000:.1f} ms, disk usage delta "
              f"median {statistics.median(cp_du) / 2**20:.1f} MiB")
        print(f"a/b = {a / b:.4f}")
        return 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
