//! Tenant-visible failure messages name nothing of the server: no paths on
//! its disks, no internal endpoints (the COS stand-in, the blob store, the
//! catalog database), no host names. Applied where a failure is recorded, so
//! every producer of messages (fetch, convert, store) is covered at once.

use crate::config::Config;

/// What replaces a server path.
const PATH: &str = "<server path>";
/// What replaces an internal endpoint or a host name.
const INTERNAL: &str = "<internal>";

/// The strings of one deployment that must never reach a tenant, longest
/// first (so a path is replaced before a folder it starts with).
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<(String, &'static str)>,
}

impl Redactor {
    pub fn new(config: &Config) -> Redactor {
        let mut secrets: Vec<(String, &'static str)> = Vec::new();
        let mut add = |s: Option<String>, with: &'static str| {
            if let Some(s) = s.filter(|s| s.len() >= 3) {
                secrets.push((s, with));
            }
        };
        for dir in [Some(&config.data_dir), config.source.cos_root.as_ref()]
            .into_iter()
            .flatten()
        {
            add(Some(dir.display().to_string()), PATH);
            add(
                std::fs::canonicalize(dir)
                    .ok()
                    .map(|d| d.display().to_string()),
                PATH,
            );
        }
        add(config.source.cos_endpoint.clone(), INTERNAL);
        add(config.blobs.endpoint.clone(), INTERNAL);
        add(config.blobs.url.clone(), INTERNAL);
        add(config.catalog.url.clone(), INTERNAL);
        add(host_of(config.source.cos_endpoint.as_deref()), INTERNAL);
        add(host_of(config.blobs.endpoint.as_deref()), INTERNAL);
        add(host_of(config.catalog.url.as_deref()), INTERNAL);
        add(
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string()),
            INTERNAL,
        );
        secrets.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    /// `message` with every server path, internal endpoint and host name
    /// replaced.
    pub fn redact(&self, message: &str) -> String {
        let mut out = message.to_string();
        for (secret, with) in &self.secrets {
            if !out.contains(secret.as_str()) {
                continue;
            }
            out = if *with == PATH {
                replace_path(&out, secret)
            } else {
                out.replace(secret.as_str(), with)
            };
        }
        redact_absolute_paths(&out)
    }
}

/// Every `folder` in `message`, with the rest of the path it starts
/// (`folder/scratch/x`), replaced by one [`PATH`]: a path under a known
/// folder reveals the folder's layout too.
fn replace_path(message: &str, folder: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(folder) {
        // Inside a word (`metadata` for a folder `data`): not the folder.
        if rest[..at].ends_with(|c: char| c.is_alphanumeric() || "-_.".contains(c)) {
            let next = at + folder.len();
            out.push_str(&rest[..next]);
            rest = &rest[next..];
            continue;
        }
        out.push_str(&rest[..at]);
        out.push_str(PATH);
        let after = &rest[at + folder.len()..];
        let word = after
            .find(|c: char| c.is_whitespace() || "\"'`)]".contains(c))
            .unwrap_or(after.len());
        // Punctuation ending the word belongs to the sentence.
        let tail = after[..word].trim_end_matches([',', ';', ':', '.']).len();
        rest = &after[tail..];
    }
    out.push_str(rest);
    out
}

/// `host[:port]` of a URL such as `http://10.0.0.5:9000/x` or
/// `postgres://user:pw@db:5432/name`.
fn host_of(url: Option<&str>) -> Option<String> {
    let rest = url?.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(host.to_string()).filter(|h| !h.is_empty())
}

/// Any word that is an absolute file path (`/a/b`, `"/a/b"`, `(/a/b)`),
/// whoever put it into the message. URLs keep their paths: `/` inside a
/// word (after `host`) is not the start of a path.
fn redact_absolute_paths(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let lead = word.len() - word.trim_start_matches(['"', '\'', '(', '[', '`']).len();
        let (prefix, rest) = word.split_at(lead);
        let is_path =
            rest.starts_with('/') && rest[1..].contains('/') || rest.starts_with("file:/");
        if is_path {
            let trail = rest.len()
                - rest
                    .trim_end_matches(['"', '\'', ')', ']', '`', ',', ';', ':', '.'])
                    .len();
            out.push_str(prefix);
            out.push_str(PATH);
            out.push_str(&rest[rest.len() - trail..]);
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config {
            data_dir: "/srv/imagegate-data".into(),
            ..Config::default()
        };
        c.source.cos_endpoint = Some("http://10.1.2.3:9100".into());
        c.catalog.url = Some("postgres://ig:pw@db.internal:5432/ig".into());
        c
    }

    #[test]
    fn paths_endpoints_and_hosts_are_replaced() {
        let r = Redactor::new(&config());
        let m = r.redact(
            "cannot create the spool /srv/imagegate-data/scratch/img-1/disk0/spool: \
             No space left on device (os error 28)",
        );
        assert_eq!(
            m,
            "cannot create the spool <server path>: No space left on device (os error 28)"
        );
        let m = r.redact("GET http://10.1.2.3:9100/images-1/a.qcow2 answered 500");
        assert!(!m.contains("10.1.2.3"), "{m}");
        let m = r.redact("catalog: connection to db.internal:5432 refused");
        assert!(!m.contains("db.internal"), "{m}");
        let m = r.redact("stored in /srv/imagegate-data, spool at /srv/imagegate-data/s/1.");
        assert_eq!(m, "stored in <server path>, spool at <server path>.");
        let m = r.redact("reading \"/etc/passwd\", then (/var/lib/x).");
        assert_eq!(m, "reading \"<server path>\", then (<server path>).");
    }

    #[test]
    fn the_tenants_own_url_and_plain_words_stay() {
        let r = Redactor::new(&config());
        let m = "https://images-1251233127.cos.ap-guangzhou.myqcloud.com/a/b.qcow2 returned 404; \
                 use qcow2/raw images";
        assert_eq!(r.redact(m), m);
        let relative = Redactor::new(&Config {
            data_dir: "data".into(),
            ..Config::default()
        });
        let m = "the metadata of data/scratch/x is bad";
        assert_eq!(relative.redact(m), "the metadata of <server path> is bad");
        assert_eq!(
            host_of(Some("s3://bucket/prefix")).as_deref(),
            Some("bucket")
        );
    }
}
