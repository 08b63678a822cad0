// Formatting shared by every view: one size format, one time format, and
// what to do about each import failure code.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

// The one size format of the console: binary units, at most three
// significant digits, trailing zeros dropped ("8.25 GiB", "9 GiB", "512 B").
export function formatSize(bytes) {
  if (typeof bytes !== "number" || !isFinite(bytes) || bytes < 0) return "-";
  let v = bytes, u = 0;
  while (v >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
  const digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return String(Number(v.toFixed(u === 0 ? 0 : digits))) + " " + UNITS[u];
}

// ImageSize is whole GiB in the API.
export const GIB = 1024 * 1024 * 1024;

export function formatTime(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  if (isNaN(d.getTime())) return String(iso);
  return d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

// What to do about an import failure code (the server's message says what
// was found). Mirrors the CLI's advice.
export const ADVICE = {
  InvalidUrl: "Check that the URL names an existing object the service may read (COS: public-read, or a fresh pre-signed link), then import again.",
  InvalidFormatSize: "Use a raw, qcow2, VMDK or VHD(X) image within the size limits (500 GiB virtual, 50 GiB stored as qcow2).",
  ExternalReferenceRefused: "The image points at other files (backing file, data file or extents). Flatten it on a trusted machine, e.g. qemu-img convert -O qcow2 in out, and import the result.",
  PartitionNotPresent: "The disk has no partition table. Upload the whole system disk, not a single partition or an incomplete file.",
  RootPartitionNotFound: "No root file system was found: this looks like an installer, data disk or /boot image. Import the whole system disk instead.",
  VirtioNotInstall: "Install the virtio drivers in the guest (a kernel with virtio_blk and virtio_net; Windows: the virtio package) and export again. Force does not skip this check.",
  CloudInitNotInstalled: "Install cloud-init (Windows: cloudbase-init) in the guest and export again, or import with Force (it skips only this check; the guest is then not initialised on first boot).",
  SourceUnreachable: "The object store could not be reached. Check the URL's host and that the service's network may reach it, then import again.",
  SourceStalled: "The download stopped making progress. Check the object store's health and import again.",
  SourceChanged: "The object changed while it was being read. Import again once the upload has finished.",
  SourceLengthMismatch: "The object store sent a different number of bytes than it announced. Upload the file again, then import.",
  SourceTooLarge: "The file is larger than the service accepts. Shrink the image (zero free space, then convert to compressed qcow2) and import again.",
  SourceAddressRefused: "The URL's host resolves to an address the network policy refuses (private, loopback, metadata). Use a COS URL, or ask the operator to allow the host.",
  ImageTruncated: "The file ends early: the upload is probably incomplete. Upload the whole file again.",
  CorruptImage: "The image's tables are damaged. Run qemu-img check where it was made and export it again.",
  UnsupportedImageFormat: "Convert the image to raw, qcow2, VMDK (monolithicSparse/streamOptimized), VHD or VHDX first.",
  EncryptedImageRefused: "Encrypted images cannot be imported. Decrypt it (e.g. qemu-img convert without encryption) and import again.",
  AmbiguousImageFormat: "The file looks like several formats at once. Export it again in a single format.",
  OsMismatch: "The OS found in the image differs from the OS type/version given. Import again with the right OS type/version.",
  ArchitectureMismatch: "The image's architecture differs from the one given. Import again with the right architecture.",
  ImportCancelled: "The import was cancelled; start it again if that was not intended.",
  InternalError: "This is the service's fault, not the image's. Try again; if it persists, give the operator the image ID.",
};
