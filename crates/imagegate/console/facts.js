// The guest inspection (a task's GuestFacts, the inspector's report) as a
// summary a person reads (OS, kernel, root filesystem, partitions,
// cloud-init, virtio) and, folded, every raw detail.

import { formatSize } from "./format.js";

const yesNo = (b) => (b ? "yes" : "no");

function where(loc) {
  if (!loc) return "";
  if (loc.kind === "partition") return "partition " + loc.index;
  if (loc.kind === "lv") return "LVM " + loc.vg + "/" + loc.lv;
  return "whole disk";
}

const sameLocation = (a, b) => a && b && a.kind === b.kind && a.index === b.index && a.vg === b.vg && a.lv === b.lv;

function rootFilesystem(g) {
  if (!g.root) return "none found";
  const fs = (g.filesystems || []).find((f) => sameLocation(f.where, g.root));
  if (!fs) return where(g.root);
  return [fs.kind, formatSize(fs.size), "on " + where(g.root)].join(", ");
}

function partitions(g) {
  const t = g.partition_table;
  if (!t || !Array.isArray(t.partitions)) return null;
  if (t.kind === "none") return "no partition table (a filesystem on the whole disk)";
  if (!t.partitions.length) return String(t.kind || "no table").toUpperCase() + ", no partitions";
  const parts = t.partitions.map((p) => "#" + p.index + " " + formatSize(p.size) + (p.type_name ? " " + p.type_name : "") +
    (p.bootable ? " (boot)" : ""));
  return String(t.kind).toUpperCase() + ": " + parts.join("; ");
}

function virtio(v) {
  if (!v) return null;
  return "block " + yesNo(v.block) + ", network " + yesNo(v.net);
}

// [label, text] pairs; only what the inspection established.
export function guestSummary(g) {
  if (!g || typeof g !== "object") return [];
  const os = g.os || {};
  const kernels = (os.kernels || []).map((k) => k.version).filter(Boolean);
  return [
    ["OS", os.pretty || os.os_name || (g.os ? os.os_type : "not recognised")],
    ["Architecture", os.architecture],
    ["Kernel", kernels.length ? kernels.join(", ") : (g.os && os.platform === "Linux" ? "none found" : null)],
    ["Root filesystem", rootFilesystem(g)],
    ["Partitions", partitions(g)],
    ["Cloud-init", typeof g.cloud_init === "boolean" ? yesNo(g.cloud_init) : null],
    ["Virtio drivers", virtio(g.virtio)],
    ["Warnings", Array.isArray(g.warnings) && g.warnings.length ? g.warnings.join("; ") : null],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
}

// Every raw fact: nested objects become dotted names; a list of objects one
// row per item. The inspector's own timing ("stats") is not about the guest.
export function rawFacts(v, prefix, out) {
  if (v === null || v === undefined || prefix === "stats") return out;
  const scalar = (x) => (x !== null && typeof x === "object" ? JSON.stringify(x) : String(x));
  if (Array.isArray(v)) {
    if (v.every((x) => x === null || typeof x !== "object")) {
      out.push([prefix, v.map(scalar).join(", ")]);
    } else {
      v.forEach((item, i) => {
        const text = item !== null && typeof item === "object" && !Array.isArray(item)
          ? Object.entries(item).filter(([, x]) => x !== null).map(([k, x]) => k + "=" + scalar(x)).join(", ")
          : scalar(item);
        out.push([prefix + "[" + i + "]", text]);
      });
    }
  } else if (typeof v === "object") {
    for (const [k, x] of Object.entries(v)) rawFacts(x, prefix ? prefix + "." + k : k, out);
  } else {
    out.push([prefix, String(v)]);
  }
  return out;
}
