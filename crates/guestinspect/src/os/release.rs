//! Release files: `/etc/os-release` and the older `redhat-release`,
//! `centos-release`, `SuSE-release`, `lsb-release`, `debian_version`, and
//! their mapping to Tencent's OsType names (as DescribeImportImageOs spells
//! them) and to an OsName written the way Tencent writes it
//! ("CentOS 7.9 64bit", "Ubuntu Server 22.04 LTS 64bit").

use std::collections::BTreeMap;

/// `KEY=value` lines (shell-style quoting) as in os-release and lsb-release.
pub fn parse_kv(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().take(1000) {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        out.insert(k.to_string(), v.replace("\\\"", "\"").replace("\\$", "$"));
    }
    out
}

/// What the release files say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    pub id: Option<String>,
    pub id_like: Vec<String>,
    pub name: Option<String>,
    pub pretty: Option<String>,
    pub version_id: Option<String>,
    /// A more precise version than VERSION_ID when an older file gives one
    /// (CentOS "7.9.2009" → "7.9"; Debian "12.5").
    pub precise_version: Option<String>,
    /// os-release VERSION ("22.04.3 LTS (Jammy Jellyfish)").
    pub version: Option<String>,
    /// Which file the facts came from.
    pub source: String,
}

pub fn from_os_release(text: &str, source: &str) -> Release {
    let kv = parse_kv(text);
    let get = |k: &str| kv.get(k).filter(|v| !v.is_empty()).cloned();
    Release {
        id: get("ID").map(|s| s.to_ascii_lowercase()),
        id_like: get("ID_LIKE")
            .map(|s| {
                s.split_whitespace()
                    .map(|w| w.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default(),
        name: get("NAME"),
        pretty: get("PRETTY_NAME"),
        version_id: get("VERSION_ID"),
        precise_version: None,
        version: get("VERSION"),
        source: source.to_string(),
    }
}

/// The first run of digits and dots in `s` ("release 7.9.2009 (Core)" → "7.9.2009").
pub fn first_version(s: &str) -> Option<String> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let rest = &s[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches('.').to_string())
}

/// "7.9.2009" → "7.9"; "12" → "12".
pub fn major_minor(v: &str) -> String {
    let mut parts = v.split('.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) if !b.is_empty() => format!("{a}.{b}"),
        (Some(a), _) => a.to_string(),
        _ => v.to_string(),
    }
}

/// "9.3" → "9"; Kylin's "V10" → "10"; None when there is no leading number.
pub fn major(v: &str) -> Option<String> {
    let v = v.strip_prefix(['V', 'v']).unwrap_or(v);
    let m = v.split('.').next()?;
    (!m.is_empty() && m.bytes().all(|b| b.is_ascii_digit())).then(|| m.to_string())
}

/// `redhat-release` / `centos-release` ("CentOS Linux release 7.9.2009 (Core)").
pub fn from_redhat_release(text: &str, source: &str) -> Release {
    let line = text.lines().next().unwrap_or("").trim();
    let lower = line.to_ascii_lowercase();
    // "CentOS Stream release 9" is told apart by its name, as os-release does.
    let id = if lower.starts_with("centos") {
        "centos"
    } else if lower.starts_with("red hat") {
        "rhel"
    } else if lower.starts_with("rocky") {
        "rocky"
    } else if lower.starts_with("almalinux") {
        "almalinux"
    } else if lower.starts_with("fedora") {
        "fedora"
    } else if lower.starts_with("tencentos") {
        "tencentos"
    } else {
        "other"
    };
    let name = line
        .split(" release")
        .next()
        .unwrap_or(line)
        .trim()
        .to_string();
    let v = first_version(line);
    Release {
        id: Some(id.to_string()),
        name: (!name.is_empty()).then_some(name),
        pretty: (!line.is_empty()).then(|| line.to_string()),
        version_id: v.as_deref().and_then(major),
        precise_version: v.as_deref().map(major_minor),
        source: source.to_string(),
        ..Release::default()
    }
}

/// `SuSE-release` ("openSUSE 13.2 (x86_64)\nVERSION = 13.2").
pub fn from_suse_release(text: &str, source: &str) -> Release {
    let first = text.lines().next().unwrap_or("").trim();
    let opensuse = first.to_ascii_lowercase().contains("opensuse");
    let mut version = None;
    let mut patch = None;
    for l in text.lines().take(50) {
        if let Some((k, v)) = l.split_once('=') {
            match k.trim() {
                "VERSION" => version = Some(v.trim().to_string()),
                "PATCHLEVEL" => patch = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let version = version.or_else(|| first_version(first));
    let precise = match (&version, &patch) {
        (Some(v), Some(p)) if !v.contains('.') => Some(format!("{v} SP{p}")),
        (Some(v), _) => Some(v.clone()),
        _ => None,
    };
    let name = first.split(" (").next().unwrap_or(first).to_string();
    Release {
        id: Some(if opensuse { "opensuse" } else { "sles" }.to_string()),
        name: Some(name),
        pretty: Some(first.to_string()),
        version_id: version,
        precise_version: precise,
        source: source.to_string(),
        ..Release::default()
    }
}

/// `lsb-release` (DISTRIB_ID, DISTRIB_RELEASE, DISTRIB_DESCRIPTION).
pub fn from_lsb_release(text: &str, source: &str) -> Release {
    let kv = parse_kv(text);
    Release {
        id: kv.get("DISTRIB_ID").map(|s| s.to_ascii_lowercase()),
        name: kv.get("DISTRIB_ID").cloned(),
        pretty: kv.get("DISTRIB_DESCRIPTION").cloned(),
        version_id: kv.get("DISTRIB_RELEASE").cloned(),
        version: kv.get("DISTRIB_DESCRIPTION").cloned(),
        source: source.to_string(),
        ..Release::default()
    }
}

/// Tencent's OsType for a release: the names of DescribeImportImageOs.
pub fn tencent_os_type(r: &Release) -> &'static str {
    let id = r.id.as_deref().unwrap_or("");
    let name = r.name.as_deref().unwrap_or("").to_ascii_lowercase();
    match id {
        "centos" if name.contains("stream") => "CentOS Stream",
        "centos" => "CentOS",
        "ubuntu" => "Ubuntu",
        "debian" => "Debian",
        "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" | "opensuse-microos" => "OpenSUSE",
        "sles" | "sled" | "sles_sap" | "suse" => "SUSE",
        "coreos" | "fedora-coreos" | "flatcar" | "rhcos" => "CoreOS",
        "freebsd" => "FreeBSD",
        "rhel" | "redhat" => "Redhat",
        "rocky" => "Rocky",
        "almalinux" => "AlmaLinux",
        "fedora" => "Fedora",
        "tencentos" | "tlinux" => "TencentOS",
        "kylin" => "Kylin",
        "uos" | "uniontech" => "UnionTech",
        _ => "Other Linux",
    }
}

/// The OsName Tencent would show, e.g. "CentOS 7.9 64bit".
pub fn tencent_os_name(r: &Release, os_type: &str, arch: Option<&str>) -> String {
    let bits = match arch {
        Some("i386") | Some("arm") => "32bit",
        _ => "64bit",
    };
    let version = r
        .precise_version
        .clone()
        .or_else(|| r.version_id.clone())
        .unwrap_or_default();
    let base = match os_type {
        "Ubuntu" => {
            let lts = r
                .version
                .as_deref()
                .or(r.pretty.as_deref())
                .is_some_and(|v| v.contains("LTS"));
            format!("Ubuntu Server {version}{}", if lts { " LTS" } else { "" })
        }
        "OpenSUSE" => {
            let flavour = r
                .name
                .as_deref()
                .and_then(|n| n.split_whitespace().nth(1))
                .map(|f| format!(" {f}"))
                .unwrap_or_default();
            format!("OpenSUSE{flavour} {version}")
        }
        "CentOS" | "Debian" | "Fedora" | "AlmaLinux" | "FreeBSD" | "CoreOS" => {
            format!("{os_type} {version}")
        }
        "CentOS Stream" => format!("CentOS Stream {version}"),
        "Rocky" => format!("Rocky Linux {version}"),
        // "SUSE Linux Enterprise Server 15 SP5": the service pack is only
        // in PRETTY_NAME.
        "SUSE" => r
            .pretty
            .clone()
            .unwrap_or_else(|| format!("SUSE Linux Enterprise Server {version}")),
        "Redhat" => format!("Red Hat Enterprise Linux {version}"),
        "TencentOS" => format!("TencentOS Server {version}"),
        _ => {
            let n = r.name.clone().unwrap_or_else(|| "Linux".to_string());
            format!("{n} {version}")
        }
    };
    format!(
        "{} {bits}",
        base.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centos7_names() {
        let mut r = from_os_release(
            "NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\n",
            "/etc/os-release",
        );
        let old = from_redhat_release("CentOS Linux release 7.9.2009 (Core)\n", "x");
        r.precise_version = old.precise_version;
        assert_eq!(tencent_os_type(&r), "CentOS");
        assert_eq!(
            tencent_os_name(&r, "CentOS", Some("x86_64")),
            "CentOS 7.9 64bit"
        );
        assert_eq!(r.id_like, vec!["rhel", "fedora"]);
    }

    #[test]
    fn suse_and_kylin() {
        let s = from_os_release(
            "NAME=\"SLES\"\nVERSION=\"15-SP5\"\nVERSION_ID=\"15.5\"\nPRETTY_NAME=\"SUSE Linux Enterprise Server 15 SP5\"\nID=\"sles\"\nID_LIKE=\"suse\"\n",
            "x",
        );
        assert_eq!(tencent_os_type(&s), "SUSE");
        assert_eq!(
            tencent_os_name(&s, "SUSE", Some("x86_64")),
            "SUSE Linux Enterprise Server 15 SP5 64bit"
        );
        let k = from_os_release("NAME=\"Kylin Linux Advanced Server\"\nVERSION=\"V10 (Lance)\"\nID=\"kylin\"\nVERSION_ID=\"V10\"\n", "x");
        assert_eq!(tencent_os_type(&k), "Kylin");
        assert_eq!(
            k.version_id.as_deref().and_then(major).as_deref(),
            Some("10")
        );
    }

    #[test]
    fn older_files() {
        let r = from_redhat_release(
            "Red Hat Enterprise Linux Server release 6.9 (Santiago)",
            "x",
        );
        assert_eq!(tencent_os_type(&r), "Redhat");
        assert_eq!(r.version_id.as_deref(), Some("6"));
        let s = from_suse_release(
            "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n",
            "x",
        );
        assert_eq!(tencent_os_type(&s), "SUSE");
        assert_eq!(s.precise_version.as_deref(), Some("11 SP4"));
        let u = from_lsb_release("DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=14.04\nDISTRIB_DESCRIPTION=\"Ubuntu 14.04.6 LTS\"\n", "x");
        assert_eq!(
            tencent_os_name(&u, tencent_os_type(&u), Some("i386")),
            "Ubuntu Server 14.04 LTS 32bit"
        );
    }
}
