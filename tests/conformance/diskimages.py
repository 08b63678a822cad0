"""Test disks made from scratch with Debian's tools and qemu-img.

`linux_disk()` is a small but realistic system disk: an MBR, a bootable ext4
root holding a CentOS 7 tree (os-release, cloud-init, virtio modules, a real
ELF /usr/bin/sh), and random and text data scattered after it.
`convert()` turns it into every format and subformat qemu-img can write.
The hostile builders make the images the CVEs in import-anchors.md are about.
qemu-img only ever reads files this module made in the test's own folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

MiB = 1 << 20

# (name, qemu-img -O format, options): every format/subformat the importer takes.
FORMATS = [
    ("raw", "raw", []),
    ("qcow2-v2", "qcow2", ["-o", "compat=0.10"]),
    ("qcow2-v3", "qcow2", ["-o", "compat=1.1"]),
    ("qcow2-zlib", "qcow2", ["-c"]),
    ("qcow2-zstd", "qcow2", ["-c", "-o", "compression_type=zstd"]),
    ("qcow2-extl2", "qcow2", ["-o", "extended_l2=on,cluster_size=128k"]),
    ("qcow2-4k", "qcow2", ["-o", "cluster_size=4096"]),
    ("vmdk-sparse", "vmdk", ["-o", "subformat=monolithicSparse"]),
    ("vmdk-stream", "vmdk", ["-o", "subformat=streamOptimized"]),
    ("vhd-fixed", "vpc", ["-o", "subformat=fixed,force_size=on"]),
    ("vhd-dynamic", "vpc", ["-o", "subformat=dynamic,force_size=on"]),
    ("vhdx-fixed", "vhdx", ["-o", "subformat=fixed"]),
    ("vhdx-dynamic", "vhdx", ["-o", "subformat=dynamic"]),
]

QEMU_FMT = {name: fmt for name, fmt, _ in FORMATS}


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, **kw)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def centos7_tree(root: Path, *, cloud_init: bool = True, virtio: bool = True) -> Path:
    kver = "3.10.0-1160.el7.x86_64"
    for d in ["etc/cloud", "usr/bin", "usr/sbin", "boot", f"lib/modules/{kver}/kernel/drivers/block",
              f"lib/modules/{kver}/kernel/drivers/net"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text(
        'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n'
        'PRETTY_NAME="CentOS Linux 7 (Core)"\nANSI_COLOR="0;31"\nCPE_NAME="cpe:/o:centos:centos:7"\n')
    (root / "etc/centos-release").write_text("CentOS Linux release 7.9.2009 (Core)\n")
    (root / "etc/redhat-release").symlink_to("centos-release")
    (root / "etc/fstab").write_text("UUID=0 / ext4 defaults 1 1\n")
    shutil.copy("/bin/sh", root / "usr/bin/sh")
    (root / "bin").symlink_to("usr/bin")
    (root / "sbin").symlink_to("usr/sbin")
    (root / f"boot/vmlinuz-{kver}").write_bytes(b"\0" * 4096)
    if cloud_init:
        (root / "etc/cloud/cloud.cfg").write_text("datasource_list: [ ConfigDrive, TencentCloud ]\n")
        (root / "usr/bin/cloud-init").write_text("#!/usr/bin/python\n")
    if virtio:
        (root / f"lib/modules/{kver}/kernel/drivers/block/virtio_blk.ko.xz").write_bytes(b"")
        (root / f"lib/modules/{kver}/kernel/drivers/net/virtio_net.ko.xz").write_bytes(b"")
    return root


def linux_disk(path: Path, *, size_mib: int = 96, data_mib: int = 24, seed: int = 1,
               cloud_init: bool = True, virtio: bool = True) -> Path:
    """MBR + 32 MiB ext4 root at 1 MiB + scattered data; size not a multiple of 64 KiB."""
    tree = path.parent / (path.name + ".tree")
    if tree.exists():
        shutil.rmtree(tree)
    centos7_tree(tree, cloud_init=cloud_init, virtio=virtio)
    size = size_mib * MiB + 7 * 512  # odd size: the last cluster is partial
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["sfdisk", "--quiet", str(path)], input=b"label: dos\nstart=2048, size=65536, type=83, bootable\n",
                   check=True, capture_output=True)
    run("mkfs.ext4", "-q", "-F", "-d", tree, "-E", "offset=1048576", path, "32768k")
    shutil.rmtree(tree)
    # Data after the root: 1 MiB chunks, alternately random and text, spread out.
    import random
    rng = random.Random(seed)
    chunks = max(1, data_mib)
    space = size_mib * MiB - 40 * MiB
    with open(path, "r+b") as f:
        for i in range(chunks):
            off = 40 * MiB + (i * space // chunks // (64 * 1024)) * 64 * 1024 + rng.randrange(0, 16) * 4096
            f.seek(off)
            if i % 2 == 0:
                f.write(rng.randbytes(MiB))
            else:
                line = f"{i:05} the quick brown fox jumps over the lazy dog\n".encode()
                f.write((line * (MiB // len(line) + 1))[:MiB])
    return path


def convert(src: Path, dst: Path, name: str) -> Path:
    fmt = QEMU_FMT[name]
    opts = next(o for n, _, o in FORMATS if n == name)
    if name == "raw":
        shutil.copy(src, dst)
    else:
        run("qemu-img", "convert", "-f", "raw", "-O", fmt, *opts, src, dst)
    return dst


def compare(source_raw: Path, stored_qcow2: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(source_raw), str(stored_qcow2)],
                          capture_output=True, text=True)


def check(stored_qcow2: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", "check", "-f", "qcow2", str(stored_qcow2)], capture_output=True, text=True)


# --------------------------------------------------------------------------- hostile images

def qcow2_with_backing(path: Path, host_file: Path) -> Path:
    run("qemu-img", "create", "-f", "qcow2", "-b", host_file, "-F", "raw", path, "64M")
    return path


def qcow2_with_data_file(path: Path, host_file: Path) -> Path:
    # data_file_raw=on makes qemu-img treat the host file as the guest disk.
    run("qemu-img", "create", "-f", "qcow2", "-o", f"data_file={host_file},data_file_raw=on", path, "1M")
    return path


def vmdk_flat_descriptor(path: Path, host_file: Path) -> Path:
    path.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\n# Extent description\n'
        f'RW 2048 FLAT "{host_file}" 0\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = "4"\n')
    return path


def vmdk_sparse_with_flat_extent(path: Path, host_file: Path, work: Path) -> Path:
    """A real monolithicSparse KDMV file whose embedded descriptor names a host file."""
    raw = work / "tiny.raw"
    with open(raw, "wb") as f:
        f.truncate(MiB)
    run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicSparse", raw, path)
    data = bytearray(path.read_bytes())
    desc_off = struct.unpack_from("<Q", data, 28)[0] * 512
    desc_len = struct.unpack_from("<Q", data, 36)[0] * 512
    desc = bytes(data[desc_off:desc_off + desc_len]).rstrip(b"\0").decode()
    lines = []
    for line in desc.splitlines():
        if line.startswith("createType="):
            line = 'createType="monolithicFlat"'
        if line.startswith("RW "):
            line = f'RW 2048 FLAT "{host_file}" 0'
        lines.append(line)
    new = ("\n".join(lines) + "\n").encode()
    assert len(new) <= desc_len
    data[desc_off:desc_off + desc_len] = new + b"\0" * (desc_len - len(new))
    path.write_bytes(bytes(data))
    return path


def vhd_differencing(path: Path, work: Path) -> Path:
    """A dynamic VHD turned into a differencing disk (type 4) with a valid checksum."""
    raw = work / "tiny-vhd.raw"
    with open(raw, "wb") as f:
        f.truncate(4 * MiB)
    run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", raw, path)
    data = bytearray(path.read_bytes())

    def fix(off: int):
        struct.pack_into(">I", data, off + 60, 4)  # disk type: differencing
        struct.pack_into(">I", data, off + 64, 0)
        csum = (~sum(data[off:off + 512]) & 0xFFFFFFFF)
        struct.pack_into(">I", data, off + 64, csum)

    fix(0)
    fix(len(data) - 512)
    path.write_bytes(bytes(data))
    return path


def qcow2_claiming(path: Path, size: str = "1P") -> Path:
    run("qemu-img", "create", "-f", "qcow2", path, size)
    return path


def qcow2_compression_bomb(path: Path) -> Path:
    """A qcow2 whose one compressed cluster inflates to far more than a cluster."""
    import zlib
    raw = path.parent / "bomb.raw"
    with open(raw, "wb") as f:
        f.truncate(MiB)
        f.seek(0)
        f.write(b"A" * 65536)  # compressible: qemu-img stores it compressed
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, path)
    data = bytearray(path.read_bytes())
    cluster_bits = struct.unpack_from(">I", data, 20)[0]
    l1_off = struct.unpack_from(">Q", data, 40)[0]
    l2_off = struct.unpack_from(">Q", data, l1_off)[0] & 0x00FFFFFFFFFFFE00
    entry = struct.unpack_from(">Q", data, l2_off)[0]
    assert entry & (1 << 62), "first cluster not compressed"
    x = 62 - (cluster_bits - 8)
    host_off = entry & ((1 << x) - 1)
    nb_sectors = ((entry >> x) & ((1 << (cluster_bits - 8)) - 1)) + 1
    room = nb_sectors * 512 - (host_off % 512)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = comp.compress(b"\0" * (64 * MiB)) + comp.flush()
    bomb = bomb[:room]
    data[host_off:host_off + len(bomb)] = bomb
    path.write_bytes(bytes(data))
    return path


def truncated(src: Path, dst: Path, keep: int) -> Path:
    data = src.read_bytes()[:keep]
    dst.write_bytes(data)
    return dst


def bit_flipped(src: Path, dst: Path, offset: int, mask: int = 0x80) -> Path:
    data = bytearray(src.read_bytes())
    data[offset] ^= mask
    dst.write_bytes(bytes(data))
    return dst


def iso_image(path: Path) -> Path:
    """A minimal ISO 9660 primary volume descriptor at 32 KiB (enough to be recognised)."""
    data = bytearray(64 * 1024 * 4)
    pvd = 16 * 2048
    data[pvd] = 1
    data[pvd + 1:pvd + 6] = b"CD001"
    data[pvd + 6] = 1
    term = 17 * 2048
    data[term] = 255
    data[term + 1:term + 6] = b"CD001"
    data[term + 6] = 1
    path.write_bytes(bytes(data))
    return path
