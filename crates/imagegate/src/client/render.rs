//! Text a person reads: tables of images, an image's details, one-line
//! progress, and what to do about a failure. Pure functions of the API's JSON
//! (fields may be missing or null: a server of another version, or the real
//! cloud, which has no import tasks), so they are tested without a server.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

/// A string field, or "-" when absent, null or empty.
pub fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    match v.get(key).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => s,
        _ => "-",
    }
}

/// A non-negative integer field (the API sends sizes as numbers).
pub fn number(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Binary units, one decimal: what `ls -lh` users read.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Terminal columns taken by `s`. Image names are often Chinese, whose
/// characters take two columns; the East Asian wide ranges are enough here
/// (no combining marks or emoji sequences in image names worth a dependency).
pub fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| match c as u32 {
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

/// Left-aligned columns separated by two spaces, by display width.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| display_width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(display_width(cell));
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(display_width(cell));
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// The STATE column: the image state, with the import's percent while it
/// runs and the failure code when it failed.
fn state_cell(image: &Value, task: Option<&Value>) -> String {
    let state = field(image, "ImageState");
    match (state, task) {
        ("IMPORTING", Some(t)) => match number(t, "Percent") {
            Some(p) => format!("IMPORTING {p}% {}", field(t, "Phase")),
            None => "IMPORTING".to_string(),
        },
        ("IMPORTFAILED", Some(t)) if field(t, "FailureCode") != "-" => {
            format!("IMPORTFAILED ({})", field(t, "FailureCode"))
        }
        _ => state.to_string(),
    }
}

/// The `images list` table. `tasks` maps ImageId to its import task, for
/// the images that have one.
pub fn images_table(images: &[Value], tasks: &HashMap<String, Value>) -> String {
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|img| {
            let id = field(img, "ImageId");
            vec![
                id.to_string(),
                field(img, "ImageName").to_string(),
                state_cell(img, tasks.get(id)),
                field(img, "OsName").to_string(),
                field(img, "Architecture").to_string(),
                match number(img, "ImageSize") {
                    Some(g) => format!("{g} GiB"),
                    None => "-".to_string(),
                },
                field(img, "CreatedTime").to_string(),
            ]
        })
        .collect();
    table(
        &["IMAGE ID", "NAME", "STATE", "OS", "ARCH", "SIZE", "CREATED"],
        &rows,
    )
}

/// The `images os` table: one row per OS type of DescribeImportImageOs,
/// with the values `images import --os-type/--os-version/--arch` take.
pub fn os_table(resp: &Value) -> String {
    let join = |v: Option<&Value>| -> String {
        let items: Vec<&str> = v
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        items.join(", ")
    };
    let rows: Vec<Vec<String>> = resp
        .get("ImportImageOsVersionSet")
        .and_then(Value::as_array)
        .map(|set| {
            set.iter()
                .map(|os| {
                    vec![
                        field(os, "OsName").to_string(),
                        join(os.get("OsVersions")),
                        join(os.get("Architecture")),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["OS TYPE", "OS VERSIONS", "ARCHITECTURES"], &rows)
}

/// What the user can do about an import failure code. The server's message
/// says what was found; this says where to go from there.
pub fn advice(code: &str) -> Option<&'static str> {
    Some(match code {
        "InvalidUrl" => "Check that the URL names an existing object the service may read (COS: public-read, or a fresh pre-signed link), then import again.",
        "InvalidFormatSize" => "Use a raw, qcow2, VMDK or VHD(X) image within the size limits (500 GiB virtual, 50 GiB stored as qcow2).",
        "ExternalReferenceRefused" => "The image points at other files (backing file, data file or extents). Flatten it on a trusted machine, e.g. `qemu-img convert -O qcow2 in out`, and import the result.",
        "PartitionNotPresent" => "The disk has no partition table. Upload the whole system disk, not a single partition or an incomplete file.",
        "RootPartitionNotFound" => "No root file system was found: this looks like an installer, data disk or /boot image. Import the whole system disk; a data disk belongs in --data-disk.",
        "VirtioNotInstall" => "Install the virtio drivers in the guest (Linux: virtio_blk/virtio_net in the initramfs; Windows: Tencent's virtio package) and export again (--force does not skip this check).",
        "CloudInitNotInstalled" => "Install cloud-init (Windows: cloudbase-init) in the guest and export again, or import with --force.",
        "SourceUnreachable" => "The object store could not be reached. Check the URL's host and that the service's network may reach it, then import again.",
        "SourceStalled" => "The download stopped making progress. Check the object store's health and import again.",
        "SourceChanged" => "The object changed while it was being read. Import again once the upload has finished.",
        "SourceLengthMismatch" => "The object store sent a different number of bytes than it announced. Upload the file again, then import.",
        "SourceTooLarge" => "The file is larger than the service accepts. Shrink the image (zero free space, then convert to compressed qcow2) and import again.",
        "SourceAddressRefused" => "The URL's host resolves to an address the network policy refuses (private, loopback, metadata). Use a COS URL, or ask the operator to allow the host.",
        "ImageTruncated" => "The file ends early: the upload is probably incomplete. Upload the whole file again.",
        "CorruptImage" => "The image's tables are damaged. Run `qemu-img check` where it was made and export it again.",
        "UnsupportedImageFormat" => "Convert the image to raw, qcow2, VMDK (monolithicSparse/streamOptimized), VHD or VHDX first.",
        "EncryptedImageRefused" => "Encrypted images cannot be imported. Decrypt it (e.g. qemu-img convert without encryption) and import again.",
        "AmbiguousImageFormat" => "The file looks like several formats at once. Export it again in a single format.",
        "OsMismatch" => "The OS found in the image differs from the OS type/version given. Import again with the right --os-type/--os-version.",
        "ArchitectureMismatch" => "The image's architecture differs from the one given. Import again with the right --arch.",
        "ImportCancelled" => "The import was cancelled; start it again if that was not intended.",
        "InternalError" => "This is the service's fault, not the image's. Try again; if it persists, give the operator the image ID.",
        _ => return None,
    })
}

/// The failure block shown by `watch`, `show` and `import --wait`.
pub fn failure_text(code: &str, message: &str) -> String {
    let mut out = format!("Import failed: {code}: {message}\n");
    if let Some(a) = advice(code) {
        let _ = writeln!(out, "What to do: {a}");
    }
    out
}

/// One line per change of an import, for logs and pipes:
/// `img-1 RUNNING CONVERTING 42% 1.0 GiB/2.4 GiB fetched, 900.0 MiB converted`.
pub fn progress_line(task: &Value) -> String {
    let mut out = format!(
        "{} {} {}",
        field(task, "ImageId"),
        field(task, "TaskState"),
        field(task, "Phase")
    );
    if let Some(p) = number(task, "Percent") {
        let _ = write!(out, " {p}%");
    }
    let fetched = number(task, "BytesFetched");
    match (fetched, number(task, "BytesTotal")) {
        (Some(f), Some(t)) => {
            let _ = write!(out, " {}/{} fetched", human_bytes(f), human_bytes(t));
        }
        (Some(f), None) if f > 0 => {
            let _ = write!(out, " {} fetched", human_bytes(f));
        }
        _ => {}
    }
    if let Some(c) = number(task, "BytesConverted").filter(|c| *c > 0) {
        let _ = write!(out, ", {} converted", human_bytes(c));
    }
    if let Some(w) = number(task, "BytesWritten").filter(|w| *w > 0) {
        let _ = write!(out, ", {} written", human_bytes(w));
    }
    out
}

fn push_kv(out: &mut String, key: &str, value: &str) {
    if value != "-" && !value.is_empty() {
        let _ = writeln!(out, "{key:<16}{value}");
    }
}

/// Guest facts as `key=value` pairs on one line, nested objects flattened
/// with dots: they are whatever the inspector found, so no fixed layout.
fn facts_line(v: &Value) -> String {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, x, out);
                }
            }
            Value::Null => {}
            Value::String(s) => out.push(format!("{prefix}={s}")),
            other => out.push(format!("{prefix}={other}")),
        }
    }
    let mut parts = Vec::new();
    walk("", v, &mut parts);
    parts.join(" ")
}

/// The `images show` text: the image, then its import task if any.
pub fn image_details(image: &Value, task: Option<&Value>) -> String {
    let mut out = String::new();
    for key in [
        "ImageId",
        "ImageName",
        "ImageState",
        "ImageDescription",
        "OsName",
        "Platform",
        "Architecture",
        "CreatedTime",
        "ImageSource",
        "ImageCreator",
        "LicenseType",
        "ImageFamily",
    ] {
        push_kv(&mut out, key, field(image, key));
    }
    if let Some(g) = number(image, "ImageSize") {
        push_kv(&mut out, "ImageSize", &format!("{g} GiB"));
    }
    if let Some(b) = image.get("IsSupportCloudinit").and_then(Value::as_bool) {
        push_kv(&mut out, "CloudInit", if b { "yes" } else { "no" });
    }
    if let Some(tags) = image
        .get("Tags")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let text: Vec<String> = tags
            .iter()
            .map(|t| format!("{}={}", field(t, "Key"), field(t, "Value")))
            .collect();
        push_kv(&mut out, "Tags", &text.join(", "));
    }
    if let Some(snaps) = image.get("SnapshotSet").and_then(Value::as_array) {
        for s in snaps {
            let size = number(s, "DiskSize")
                .map(|g| format!(" {g} GiB"))
                .unwrap_or_default();
            push_kv(
                &mut out,
                "Disk",
                &format!("{}{size} {}", field(s, "DiskUsage"), field(s, "SnapshotId")),
            );
        }
    }
    if let Some(t) = task {
        push_task(&mut out, t);
    }
    out
}

/// The import task's section of `image_details`.
fn push_task(out: &mut String, t: &Value) {
    out.push_str("\nImport task\n");
    push_kv(out, "TaskState", field(t, "TaskState"));
    push_kv(out, "Phase", field(t, "Phase"));
    if let Some(p) = number(t, "Percent") {
        push_kv(out, "Percent", &format!("{p}%"));
    }
    push_kv(out, "SourceFormat", field(t, "SourceFormat"));
    if let Some(v) = number(t, "VirtualSize") {
        push_kv(
            out,
            "VirtualSize",
            &format!("{} ({v} bytes)", human_bytes(v)),
        );
    }
    if let Some(b) = number(t, "BytesTotal") {
        push_kv(
            out,
            "SourceSize",
            &format!("{} ({b} bytes)", human_bytes(b)),
        );
    }
    push_kv(out, "Sha256", field(t, "Sha256"));
    for key in ["CreatedTime", "StartTime", "FinishTime"] {
        push_kv(out, key, field(t, key));
    }
    if let Some(attempts) = t.get("AttemptSet").and_then(Value::as_array) {
        for a in attempts {
            let n = a.get("Attempt").map(|x| x.to_string()).unwrap_or_default();
            push_kv(
                out,
                "Attempt",
                &format!("#{n} on {} at {}", field(a, "Node"), field(a, "StartTime")),
            );
        }
    }
    if let Some(facts) = t.get("GuestFacts").filter(|g| !g.is_null()) {
        push_kv(out, "GuestFacts", &facts_line(facts));
    }
    let code = field(t, "FailureCode");
    if code != "-" {
        out.push('\n');
        out.push_str(&failure_text(code, field(t, "FailureMessage")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn list_table_aligns_columns_and_shows_progress_and_failures() {
        let images = vec![
            json!({"ImageId": "img-aaaa1111", "ImageName": "web", "ImageState": "NORMAL",
                   "OsName": "CentOS 7", "Architecture": "x86_64", "ImageSize": 20,
                   "CreatedTime": "2026-01-01T00:00:00Z"}),
            json!({"ImageId": "img-bbbb2222", "ImageName": "a much longer name", "ImageState": "IMPORTING",
                   "OsName": "Ubuntu 22.04", "Architecture": "arm", "ImageSize": null,
                   "CreatedTime": "2026-01-02T00:00:00Z"}),
            json!({"ImageId": "img-cccc3333", "ImageName": "bad", "ImageState": "IMPORTFAILED"}),
        ];
        let mut tasks = HashMap::new();
        tasks.insert(
            "img-bbbb2222".to_string(),
            json!({"Percent": 42, "Phase": "CONVERTING"}),
        );
        tasks.insert(
            "img-cccc3333".to_string(),
            json!({"FailureCode": "ExternalReferenceRefused"}),
        );
        let text = images_table(&images, &tasks);
        let expected = "\
IMAGE ID      NAME                STATE                                    OS            ARCH    SIZE    CREATED
img-aaaa1111  web                 NORMAL                                   CentOS 7      x86_64  20 GiB  2026-01-01T00:00:00Z
img-bbbb2222  a much longer name  IMPORTING 42% CONVERTING                 Ubuntu 22.04  arm     -       2026-01-02T00:00:00Z
img-cccc3333  bad                 IMPORTFAILED (ExternalReferenceRefused)  -             -       -       -
";
        assert_eq!(text, expected);
    }

    #[test]
    fn table_aligns_by_display_width() {
        assert_eq!(display_width("ab"), 2);
        assert_eq!(display_width("镜像"), 4);
        assert_eq!(display_width("ｗ"), 2);
        let t = table(
            &["A", "B"],
            &[
                vec!["镜像".into(), "x".into()],
                vec!["ab".into(), "y".into()],
            ],
        );
        assert_eq!(t, "A     B\n镜像  x\nab    y\n");
    }

    #[test]
    fn progress_lines() {
        let t = json!({"ImageId": "img-1", "TaskState": "RUNNING", "Phase": "CONVERTING",
                       "Percent": 42, "BytesFetched": 1073741824u64, "BytesTotal": 2576980378u64,
                       "BytesConverted": 943718400u64, "BytesWritten": 0});
        assert_eq!(
            progress_line(&t),
            "img-1 RUNNING CONVERTING 42% 1.0 GiB/2.4 GiB fetched, 900.0 MiB converted"
        );
        let queued = json!({"ImageId": "img-2", "TaskState": "QUEUED", "Phase": null,
                            "Percent": 0, "BytesFetched": 0, "BytesTotal": null});
        assert_eq!(progress_line(&queued), "img-2 QUEUED - 0%");
    }

    #[test]
    fn details_show_task_facts_and_failure_advice() {
        let image = json!({"ImageId": "img-1", "ImageName": "n", "ImageState": "IMPORTFAILED",
                           "Tags": [{"Key": "env", "Value": "prod"}], "ImageSize": 1,
                           "SnapshotSet": [{"SnapshotId": "snap-1", "DiskUsage": "SYSTEM_DISK", "DiskSize": 1}]});
        let task = json!({"TaskState": "FAILED", "Phase": "INSPECTING_FORMAT", "SourceFormat": "qcow2",
                          "VirtualSize": 16777216, "Sha256": "ab12",
                          "AttemptSet": [{"Attempt": 1, "Node": "n1", "StartTime": "2026-01-01T00:00:00Z"}],
                          "GuestFacts": {"os": {"family": "linux"}, "virtio": true},
                          "FailureCode": "ExternalReferenceRefused",
                          "FailureMessage": "qcow2 names a backing file"});
        let text = image_details(&image, Some(&task));
        for want in [
            "ImageId         img-1\n",
            "Tags            env=prod\n",
            "Disk            SYSTEM_DISK 1 GiB snap-1\n",
            "VirtualSize     16.0 MiB (16777216 bytes)\n",
            "Sha256          ab12\n",
            "Attempt         #1 on n1 at 2026-01-01T00:00:00Z\n",
            "GuestFacts      os.family=linux virtio=true\n",
            "Import failed: ExternalReferenceRefused: qcow2 names a backing file\n",
            "What to do: The image points at other files",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        // Absent fields are left out, not printed as "-".
        assert!(!text.contains("ImageFamily"), "{text}");
    }

    #[test]
    fn unknown_failure_codes_have_no_invented_advice() {
        assert_eq!(advice("SomethingNew"), None);
        assert_eq!(
            failure_text("SomethingNew", "m"),
            "Import failed: SomethingNew: m\n"
        );
    }
}
