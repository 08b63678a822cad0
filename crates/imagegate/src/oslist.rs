//! The operating systems ImportImage accepts, and the DescribeImportImageOs
//! answer built from them.
//!
//! The default list is the reference's §6 data (Tencent's own example answer),
//! with `Redhat` also listed under Linux (the example gives it versions but
//! forgets it in the list), extended with:
//! - the families Tencent's import documentation names today: Kylin,
//!   UnionTech, TencentOS, Fedora, CentOS Stream, AlmaLinux, Rocky, and
//!   Windows Server 2019 / 2022;
//! - current major versions of the documented families (CentOS 8, Ubuntu
//!   18–24, Debian 10–12, Redhat 8–9, OpenSUSE 15, SUSE 15, FreeBSD 11–13);
//! - `arm_64` for the Linux families that ship arm64 builds (not CoreOS,
//!   FreeBSD or Windows, nor i386 for the families that never shipped it).
//!
//! Windows versions keep Tencent's placeholder `9`, which is what its example
//! answer carries and what scripts that loop over the answer will send back.
//! The `import_os` config key replaces the whole list.

use crate::config::ImportOsEntry;
use crate::domain::OsPlatform;
use serde_json::{json, Value};

/// (OsName, platform, versions, architectures).
type Row = (
    &'static str,
    OsPlatform,
    &'static [&'static str],
    &'static [&'static str],
);

const X86: &[&str] = &["x86_64", "i386"];
const X86_ARM: &[&str] = &["x86_64", "i386", "arm_64"];
const X64_ARM: &[&str] = &["x86_64", "arm_64"];

const DEFAULT: &[Row] = &[
    ("Windows Server 2008", OsPlatform::Windows, &["9"], X86),
    ("Windows Server 2012", OsPlatform::Windows, &["9"], X86),
    ("Windows Server 2016", OsPlatform::Windows, &["9"], X86),
    (
        "Windows Server 2019",
        OsPlatform::Windows,
        &["9"],
        &["x86_64"],
    ),
    (
        "Windows Server 2022",
        OsPlatform::Windows,
        &["9"],
        &["x86_64"],
    ),
    ("CentOS", OsPlatform::Linux, &["5", "6", "7", "8"], X86_ARM),
    (
        "Ubuntu",
        OsPlatform::Linux,
        &["10", "12", "14", "16", "18", "20", "22", "24"],
        X86_ARM,
    ),
    (
        "Debian",
        OsPlatform::Linux,
        &["6", "7", "8", "9", "10", "11", "12"],
        X86_ARM,
    ),
    ("OpenSUSE", OsPlatform::Linux, &["11", "12", "15"], X86_ARM),
    (
        "SUSE",
        OsPlatform::Linux,
        &["10", "11", "12", "13", "15"],
        X86_ARM,
    ),
    ("CoreOS", OsPlatform::Linux, &["7"], X86),
    ("FreeBSD", OsPlatform::Linux, &["10", "11", "12", "13"], X86),
    (
        "Redhat",
        OsPlatform::Linux,
        &["5", "6", "7", "8", "9"],
        X86_ARM,
    ),
    ("Kylin", OsPlatform::Linux, &["V10"], X64_ARM),
    ("UnionTech", OsPlatform::Linux, &["20"], X64_ARM),
    ("TencentOS", OsPlatform::Linux, &["2", "3", "4"], X64_ARM),
    (
        "Fedora",
        OsPlatform::Linux,
        &["37", "38", "39", "40", "41"],
        X64_ARM,
    ),
    ("CentOS Stream", OsPlatform::Linux, &["8", "9"], X64_ARM),
    ("AlmaLinux", OsPlatform::Linux, &["8", "9"], X64_ARM),
    ("Rocky", OsPlatform::Linux, &["8", "9"], X64_ARM),
    ("Other Linux", OsPlatform::Linux, &["8"], X86_ARM),
];

/// The built-in list, in the order DescribeImportImageOs reports it.
pub fn default_entries() -> Vec<ImportOsEntry> {
    DEFAULT
        .iter()
        .map(|(name, platform, versions, archs)| ImportOsEntry {
            os_name: (*name).into(),
            platform: *platform,
            os_versions: versions.iter().map(|v| (*v).into()).collect(),
            architectures: archs.iter().map(|a| (*a).into()).collect(),
        })
        .collect()
}

/// Why a declared OS is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OsRejection {
    UnknownType,
    UnknownVersion,
    UnsupportedArchitecture,
}

/// The accepted OS list plus its pre-rendered API answer.
#[derive(Debug, Clone)]
pub struct OsList {
    entries: Vec<ImportOsEntry>,
    /// Built once: the answer never changes while the process runs.
    answer: Value,
}

impl OsList {
    pub fn new(entries: Vec<ImportOsEntry>) -> OsList {
        let names = |platform: OsPlatform| -> Vec<&str> {
            entries
                .iter()
                .filter(|e| e.platform == platform)
                .map(|e| e.os_name.as_str())
                .collect()
        };
        let version_set: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "OsName": e.os_name,
                    "OsVersions": e.os_versions,
                    "Architecture": e.architectures,
                })
            })
            .collect();
        let answer = json!({
            "ImportImageOsListSupported": {
                "Windows": names(OsPlatform::Windows),
                "Linux": names(OsPlatform::Linux),
            },
            "ImportImageOsVersionSet": version_set,
        });
        OsList { entries, answer }
    }

    /// `import_os` from the config, else the built-in list.
    pub fn from_config(import_os: Option<&[ImportOsEntry]>) -> OsList {
        OsList::new(import_os.map_or_else(default_entries, <[_]>::to_vec))
    }

    /// The DescribeImportImageOs fields (without RequestId).
    pub fn answer(&self) -> &Value {
        &self.answer
    }

    /// Finds the entry for an `OsType`; case-insensitive, because clients
    /// write `centos` as often as `CentOS`. Returns the canonical entry.
    pub fn find(&self, os_type: &str) -> Option<&ImportOsEntry> {
        let t = os_type.trim();
        self.entries
            .iter()
            .find(|e| e.os_name.eq_ignore_ascii_case(t))
    }

    /// Checks OsType, OsVersion and Architecture together; on success gives
    /// the canonical entry (its `os_name` and `platform` are stored).
    pub fn check(
        &self,
        os_type: &str,
        os_version: &str,
        architecture: &str,
    ) -> Result<&ImportOsEntry, OsRejection> {
        let entry = self.find(os_type).ok_or(OsRejection::UnknownType)?;
        let v = os_version.trim();
        if !entry.os_versions.iter().any(|x| x.eq_ignore_ascii_case(v)) {
            return Err(OsRejection::UnknownVersion);
        }
        if !entry.architectures.iter().any(|a| a == architecture) {
            return Err(OsRejection::UnsupportedArchitecture);
        }
        Ok(entry)
    }

    pub fn entries(&self) -> &[ImportOsEntry] {
        &self.entries
    }
}

/// The `OsName` Tencent shows for an image, e.g. `CentOS 7 64bit`, built
/// from the declared OS until guest inspection knows better.
pub fn display_os_name(os_name: &str, os_version: &str, architecture: &str) -> String {
    let bits = match architecture {
        "i386" => "32bit",
        "arm_64" => "64bit ARM",
        _ => "64bit",
    };
    if os_name.starts_with("Windows") || os_version == "-" {
        // Windows' "version" is a placeholder; its name already says it all.
        format!("{os_name} {bits}")
    } else {
        format!("{os_name} {os_version} {bits}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_answer_has_reference_entries_and_redhat_in_linux() {
        let list = OsList::from_config(None);
        let a = list.answer();
        let linux: Vec<&str> = a["ImportImageOsListSupported"]["Linux"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for name in [
            "CentOS",
            "Ubuntu",
            "Debian",
            "OpenSUSE",
            "SUSE",
            "CoreOS",
            "FreeBSD",
            "Other Linux",
            "Redhat",
            "Kylin",
            "UnionTech",
            "TencentOS",
            "Fedora",
            "CentOS Stream",
            "AlmaLinux",
            "Rocky",
        ] {
            assert!(linux.contains(&name), "{name} missing");
        }
        let windows = a["ImportImageOsListSupported"]["Windows"]
            .as_array()
            .unwrap();
        assert_eq!(windows.len(), 5);
        let set = a["ImportImageOsVersionSet"].as_array().unwrap();
        let centos = set.iter().find(|e| e["OsName"] == "CentOS").unwrap();
        for v in ["5", "6", "7"] {
            assert!(centos["OsVersions"].as_array().unwrap().contains(&json!(v)));
        }
        assert_eq!(set.len(), list.entries().len());
    }

    #[test]
    fn check_distinguishes_type_version_and_architecture() {
        let list = OsList::from_config(None);
        assert_eq!(
            list.check("centos", "7", "x86_64").unwrap().os_name,
            "CentOS"
        );
        assert_eq!(
            list.check("Gentoo", "1", "x86_64"),
            Err(OsRejection::UnknownType)
        );
        assert_eq!(
            list.check("CentOS", "4", "x86_64"),
            Err(OsRejection::UnknownVersion)
        );
        assert_eq!(
            list.check("Rocky", "9", "i386"),
            Err(OsRejection::UnsupportedArchitecture)
        );
        assert!(list.check("Rocky", "9", "arm_64").is_ok());
    }

    #[test]
    fn config_override_replaces_the_list() {
        let custom = vec![ImportOsEntry {
            os_name: "Gentoo".into(),
            platform: OsPlatform::Linux,
            os_versions: vec!["2024".into()],
            architectures: vec!["x86_64".into()],
        }];
        let list = OsList::from_config(Some(&custom));
        assert!(list.check("Gentoo", "2024", "x86_64").is_ok());
        assert_eq!(
            list.check("CentOS", "7", "x86_64"),
            Err(OsRejection::UnknownType)
        );
        assert_eq!(
            list.answer()["ImportImageOsListSupported"]["Windows"],
            json!([])
        );
    }

    #[test]
    fn display_names() {
        assert_eq!(display_os_name("CentOS", "7", "x86_64"), "CentOS 7 64bit");
        assert_eq!(
            display_os_name("Ubuntu", "22", "arm_64"),
            "Ubuntu 22 64bit ARM"
        );
        assert_eq!(display_os_name("Debian", "9", "i386"), "Debian 9 32bit");
        assert_eq!(
            display_os_name("Windows Server 2016", "9", "x86_64"),
            "Windows Server 2016 64bit"
        );
    }
}
