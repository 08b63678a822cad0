//! The report as an aligned table for people. Every string that comes from
//! the image is escaped (`clean`): a crafted label or OS name cannot move
//! the cursor or clear the terminal.

use std::fmt::Write as _;

use guestinspect::part::TableKind;
use guestinspect::{GuestReport, Location};

use super::{Container, InspectReport};

/// "64 MiB (67108864 bytes)"; exact byte counts stay visible.
fn size(n: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {} ({n} bytes)", UNITS[u])
    } else {
        format!("{v:.1} {} ({n} bytes)", UNITS[u])
    }
}

fn location(l: &Location) -> String {
    match l {
        Location::Disk => "whole disk".to_string(),
        Location::Partition { index } => format!("partition {index}"),
        Location::Lv { vg, lv } => format!("LV {vg}/{lv}"),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Column-aligned rows, two spaces apart, indented by two.
fn grid(s: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|v| v.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::from("  ");
        for (c, v) in r.iter().enumerate() {
            line.push_str(v);
            if c + 1 < r.len() {
                let pad = widths[c] - v.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
}

/// A "Key   value" line; the key column is 18 wide.
fn kv(s: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = writeln!(s, "{key:<18}{value}");
}

/// The table for people. Strings that come from the image (labels, names,
/// messages) are printed with control characters escaped, so a hostile
/// label cannot rewrite the terminal.
pub fn render_table(r: &InspectReport) -> String {
    let mut s = String::new();
    kv(&mut s, "File", clean(&r.file));
    render_container(&mut s, &r.container);
    let v = &r.verdict;
    if v.accepted {
        kv(&mut s, "Verdict", "accepted");
    } else {
        kv(
            &mut s,
            "Verdict",
            format!("refused: {}", v.code.as_deref().unwrap_or("?")),
        );
        if let Some(m) = &v.message {
            kv(&mut s, "", clean(m));
        }
    }

    if let Some(g) = &r.guest {
        let _ = writeln!(s, "\nGuest");
        render_guest(&mut s, g);
    }

    if v.accepted {
        let _ = writeln!(
            s,
            "\nImport checks (non-forced ImportImage declaring the detected OS, BootMode=Legacy BIOS)"
        );
        if r.import_checks.is_empty() {
            let _ = writeln!(s, "  all pass");
        } else {
            let rows: Vec<Vec<String>> = r
                .import_checks
                .iter()
                .map(|c| vec![c.code.to_string(), clean(&c.message)])
                .collect();
            grid(&mut s, &rows);
        }
    }
    let _ = writeln!(s);
    kv(
        &mut s,
        "Read",
        format!(
            "{} of the file in {:.1} ms",
            size(r.stats.file_bytes_read),
            r.stats.elapsed_ms
        ),
    );
    s
}

fn render_container(s: &mut String, c: &Container) {
    kv(
        s,
        "Format",
        match (&c.format, &c.subformat) {
            (Some(f), Some(sub)) => format!("{} ({})", f.name(), clean(sub)),
            (Some(f), None) => f.name().to_string(),
            (None, _) => "-".to_string(),
        },
    );
    if c.formats_matched.len() > 1 {
        let names: Vec<&str> = c.formats_matched.iter().map(|f| f.name()).collect();
        kv(s, "Signatures", names.join(", "));
    }
    if let Some(v) = c.virtual_size {
        kv(s, "Virtual size", size(v));
    }
    if let Some(v) = c.file_size {
        kv(s, "File size", size(v));
    }
    if let Some(v) = c.allocated_size {
        let bound = if c.allocated_size_complete {
            ""
        } else {
            " at least (walk stopped at its bound)"
        };
        kv(s, "Allocated size", format!("{}{bound}", size(v)));
    }
    if let Some(v) = c.cluster_size {
        kv(s, "Cluster size", size(v));
    }
    if c.format.is_some() && c.virtual_size.is_some() {
        kv(
            s,
            "Compression",
            clean(c.compression.as_deref().unwrap_or("none")),
        );
    }
    for (i, n) in c.notes.iter().enumerate() {
        kv(s, if i == 0 { "Notes" } else { "" }, clean(n));
    }
}

fn render_guest(s: &mut String, g: &GuestReport) {
    render_partitions(s, &g.partition_table);
    render_lvm(s, &g.lvm);
    render_filesystems(s, &g.filesystems);
    kv(
        s,
        "Root",
        g.root
            .as_ref()
            .map(location)
            .unwrap_or_else(|| "not found".into()),
    );
    match &g.os {
        Some(os) => render_os(s, os, &g.virtio),
        None => kv(s, "OS", "not recognised"),
    }
    kv(s, "Cloud-init", yes(g.cloud_init));
    kv(
        s,
        "Virtio",
        format!("block {}, net {}", yes(g.virtio.block), yes(g.virtio.net)),
    );
    for (i, w) in g.warnings.iter().enumerate() {
        kv(s, if i == 0 { "Warnings" } else { "" }, clean(w));
    }
    kv(
        s,
        "Guest read",
        format!(
            "{} in {} calls, {:.1} ms",
            size(g.stats.bytes_read),
            g.stats.read_calls,
            g.stats.elapsed_ms
        ),
    );
}

fn render_partitions(s: &mut String, t: &guestinspect::part::PartitionTable) {
    let kind = match t.kind {
        TableKind::Mbr => "MBR",
        TableKind::Gpt => "GPT",
        TableKind::None => "none",
    };
    let mut table = kind.to_string();
    if t.kind != TableKind::None {
        let _ = write!(table, ", {}-byte sectors", t.sector_size);
        if let Some(id) = &t.disk_id {
            let _ = write!(table, ", disk id {}", clean(id));
        }
        if let Some(h) = t.gpt_header {
            let _ = write!(table, ", {h:?} header");
        }
    }
    kv(s, "Partition table", table);
    if !t.partitions.is_empty() {
        let mut rows = vec![vec![
            "#".to_string(),
            "start".to_string(),
            "size".to_string(),
            "type".to_string(),
            "boot".to_string(),
            "name".to_string(),
        ]];
        for p in &t.partitions {
            let ty = match p.type_name {
                Some(n) => format!("{n} ({})", clean(&p.type_id)),
                None => clean(&p.type_id),
            };
            let mut kind = ty;
            if p.logical {
                kind.push_str(" logical");
            }
            rows.push(vec![
                p.index.to_string(),
                p.start.to_string(),
                size(p.size),
                kind,
                if p.bootable { "*" } else { "" }.to_string(),
                p.name.as_deref().map(clean).unwrap_or_default(),
            ]);
        }
        grid(s, &rows);
    }
}

fn render_lvm(s: &mut String, lvm: &[guestinspect::lvm::LogicalVolume]) {
    if !lvm.is_empty() {
        kv(s, "LVM", format!("{} logical volume(s)", lvm.len()));
        let mut rows = vec![vec![
            "volume".to_string(),
            "size".to_string(),
            "type".to_string(),
            "readable".to_string(),
        ]];
        for lv in lvm {
            rows.push(vec![
                format!("{}/{}", clean(&lv.vg), clean(&lv.lv)),
                size(lv.size),
                clean(&lv.segment_type),
                match &lv.reason {
                    Some(why) if !lv.readable => format!("no: {}", clean(why)),
                    _ => yes(lv.readable).to_string(),
                },
            ]);
        }
        grid(s, &rows);
    }
}

fn render_filesystems(s: &mut String, filesystems: &[guestinspect::FilesystemReport]) {
    if filesystems.is_empty() {
        kv(s, "Filesystems", "none found");
    } else {
        kv(s, "Filesystems", filesystems.len());
        let mut rows = vec![vec![
            "where".to_string(),
            "type".to_string(),
            "label".to_string(),
            "uuid".to_string(),
            "size".to_string(),
            "mountpoint".to_string(),
        ]];
        for f in filesystems {
            rows.push(vec![
                location(&f.location),
                clean(&f.kind),
                f.label.as_deref().map(clean).unwrap_or_else(|| "-".into()),
                f.uuid.as_deref().map(clean).unwrap_or_else(|| "-".into()),
                size(f.size),
                f.mountpoint
                    .as_deref()
                    .map(clean)
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        grid(s, &rows);
    }
}

fn render_os(s: &mut String, os: &guestinspect::OsReport, virtio: &guestinspect::os::Virtio) {
    kv(s, "OS", clean(&os.os_name));
    kv(
        s,
        "OS type",
        format!(
            "{} (platform {}, version {}, major {})",
            clean(&os.os_type),
            clean(&os.platform),
            os.version
                .as_deref()
                .map(clean)
                .unwrap_or_else(|| "-".into()),
            os.major.as_deref().map(clean).unwrap_or_else(|| "-".into()),
        ),
    );
    if let Some(p) = os.pretty.as_ref().or(os.name.as_ref()) {
        kv(s, "OS name", clean(p));
    }
    if let Some(f) = &os.release_file {
        kv(s, "Release file", clean(f));
    }
    kv(
        s,
        "Architecture",
        match (&os.architecture, &os.architecture_from) {
            (Some(a), Some(from)) => format!("{} (from {})", clean(a), clean(from)),
            (Some(a), None) => clean(a),
            (None, _) => "unknown".to_string(),
        },
    );
    render_kernels(s, os, virtio);
}

fn render_kernels(s: &mut String, os: &guestinspect::OsReport, virtio: &guestinspect::os::Virtio) {
    if os.kernels.is_empty() {
        kv(s, "Kernels", "none found");
    } else {
        kv(s, "Kernels", os.kernels.len());
        let mut rows = vec![vec![
            "version".to_string(),
            "image".to_string(),
            "modules".to_string(),
            "virtio_blk".to_string(),
            "virtio_net".to_string(),
        ]];
        for k in &os.kernels {
            let per = virtio.kernels.iter().find(|v| v.kernel == k.version);
            let drv = |d: Option<guestinspect::os::DriverPresence>| match d {
                Some(guestinspect::os::DriverPresence::Module) => "module".to_string(),
                Some(guestinspect::os::DriverPresence::Builtin) => "built-in".to_string(),
                None => "no".to_string(),
            };
            rows.push(vec![
                clean(&k.version),
                k.image.as_deref().map(clean).unwrap_or_else(|| "-".into()),
                yes(k.modules).to_string(),
                drv(per.and_then(|p| p.block)),
                drv(per.and_then(|p| p.net)),
            ]);
        }
        grid(s, &rows);
    }
}

/// Escape control characters (terminal escapes, newlines) in text that came
/// from the image.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well_and_keep_the_byte_count() {
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(64 << 20), "64 MiB (67108864 bytes)");
        assert_eq!(size(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(size(1 << 50), "1 PiB (1125899906842624 bytes)");
    }

    #[test]
    fn control_characters_from_the_image_are_escaped() {
        assert_eq!(clean("ok\x1b[2Jx\n"), "ok\\u{1b}[2Jx\\n");
        assert_eq!(clean("plain é"), "plain é");
    }

    #[test]
    fn grid_aligns_columns() {
        let mut s = String::new();
        grid(
            &mut s,
            &[
                vec!["a".into(), "bb".into(), "c".into()],
                vec!["aaa".into(), "b".into(), "".into()],
            ],
        );
        assert_eq!(s, "  a    bb  c\n  aaa  b\n");
    }
}
