//! The descriptor embedded in a sparse extent: plain text whose syntax is
//! checked line by line, then judged. It decides what kind of VMDK the file
//! is, and any line that names another file (an extent, a parent) refuses
//! the image: no file name from the image is ever opened.

use crate::FormatError;

/// What the embedded descriptor says, after its syntax was checked.
pub(super) struct Descriptor {
    create_type: Option<String>,
    parent_cid: Option<String>,
    parent_hint: bool,
    extents: Vec<ExtentLine>,
}

struct ExtentLine {
    sectors: Option<u64>,
    kind: String,
    file_name: String,
}

impl Descriptor {
    pub(super) fn parse(raw: &[u8]) -> Result<Descriptor, FormatError> {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = std::str::from_utf8(&raw[..end])
            .map_err(|_| FormatError::Corrupt("VMDK descriptor is not UTF-8 text".into()))?;
        let mut d = Descriptor {
            create_type: None,
            parent_cid: None,
            parent_hint: false,
            extents: Vec::new(),
        };
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with("ddb.") {
                continue;
            }
            let word = line.split_whitespace().next().unwrap_or("");
            if matches!(word, "RW" | "RDONLY" | "NOACCESS") {
                d.extents.push(ExtentLine::parse(line, no + 1)?);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(FormatError::Corrupt(format!(
                    "invalid VMDK descriptor data on line {}",
                    no + 1
                )));
            };
            let key = key.trim();
            let value = value.trim().trim_matches('"').to_string();
            let slot = if key.eq_ignore_ascii_case("createType") {
                &mut d.create_type
            } else if key.eq_ignore_ascii_case("parentCID") {
                &mut d.parent_cid
            } else {
                if key.eq_ignore_ascii_case("parentFileNameHint") {
                    d.parent_hint = true;
                }
                continue;
            };
            if slot.replace(value).is_some() {
                return Err(FormatError::Corrupt(format!(
                    "VMDK descriptor sets {key} twice"
                )));
            }
        }
        Ok(d)
    }

    /// Applies the policy. Returns true for streamOptimized (false for
    /// monolithicSparse) and the extent's size in sectors.
    pub(super) fn check(&self) -> Result<(bool, Option<u64>), FormatError> {
        if self.parent_hint {
            return Err(FormatError::ExternalReference(
                "VMDK descriptor names a parent (parentFileNameHint), which is never opened".into(),
            ));
        }
        if let Some(cid) = &self.parent_cid {
            if !cid.eq_ignore_ascii_case("ffffffff") {
                return Err(FormatError::ExternalReference(format!(
                    "VMDK parentCID {} means a parent disk, which is never opened",
                    cid.escape_default()
                )));
            }
        }
        let create_type = self
            .create_type
            .as_deref()
            .ok_or_else(|| FormatError::Corrupt("VMDK descriptor has no createType".into()))?;
        let stream = if create_type.eq_ignore_ascii_case("streamOptimized") {
            true
        } else if create_type.eq_ignore_ascii_case("monolithicSparse") {
            false
        } else {
            return Err(FormatError::Unsupported(format!(
                "VMDK createType \"{}\" (only monolithicSparse and streamOptimized are imported)",
                create_type.escape_default()
            )));
        };
        let extent = match self.extents.as_slice() {
            [e] => e,
            [] => {
                return Err(FormatError::Corrupt(
                    "VMDK descriptor lists no extent".into(),
                ))
            }
            many => {
                return Err(FormatError::ExternalReference(format!(
                "VMDK descriptor lists {} extents: extents beyond the file itself are never opened",
                many.len()
            )))
            }
        };
        if !extent.kind.eq_ignore_ascii_case("SPARSE") {
            return Err(FormatError::ExternalReference(format!(
                "VMDK extent of type {} names a file (\"{}\") that is never opened",
                extent.kind.escape_default(),
                extent.file_name.escape_default()
            )));
        }
        // The name is never used: the extent is this file. A path in it is
        // still a sign of a crafted file (and what Glance refuses).
        if extent.file_name.contains(['/', '\\']) {
            return Err(FormatError::ExternalReference(format!(
                "VMDK extent names a path (\"{}\"); it is never opened",
                extent.file_name.escape_default()
            )));
        }
        Ok((stream, extent.sectors))
    }
}

impl ExtentLine {
    /// `ACCESS SECTORS TYPE "FILE" [OFFSET]`.
    fn parse(line: &str, no: usize) -> Result<ExtentLine, FormatError> {
        let bad = || FormatError::Corrupt(format!("invalid VMDK extent line {no}"));
        let mut rest = line;
        let mut words = [""; 3];
        for w in &mut words {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            *w = &rest[..end];
            rest = &rest[end..];
        }
        let rest = rest.trim();
        let file_name = rest
            .strip_prefix('"')
            .and_then(|r| r.split_once('"'))
            .map(|(name, _)| name.to_string())
            .ok_or_else(bad)?;
        if words[2].is_empty() {
            return Err(bad());
        }
        Ok(ExtentLine {
            sectors: words[1].parse().ok(),
            kind: words[2].to_string(),
            file_name,
        })
    }
}
