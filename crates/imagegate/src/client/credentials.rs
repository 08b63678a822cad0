//! Where the client finds its key, region and endpoint: flags first, then the
//! environment variables every Tencent tool reads, then tccli's profile files.
//!
//! The rules follow tccli 3.1.189.1 (`tccli/action_caller.py`,
//! `parse_global_arg`), so that a user who already set up tccli needs nothing
//! more:
//! - the profile is `--profile`, else `TCCLI_PROFILE`, else `default`;
//! - `~/.tccli/<profile>.credential` is a JSON object with `secretId`,
//!   `secretKey` and optionally `token`;
//! - `~/.tccli/<profile>.configure` is a JSON object whose `_sys_param` holds
//!   `region` and `language` (files written before tccli 3.0.30 keep them as
//!   strings at the top level), and whose `cvm.endpoint` names the endpoint.
//!   Every other top-level member is a product's settings: `tccli configure
//!   set` writes `"region": {"endpoint": …, "version": …}` for the product
//!   called `region`, which is not the region;
//! - a profile named with `--profile` or `TCCLI_PROFILE` must exist (one of
//!   its two files), as in tccli;
//! - `TENCENTCLOUD_SECRET_ID` + `TENCENTCLOUD_SECRET_KEY` (+
//!   `TENCENTCLOUD_TOKEN`) and `TENCENTCLOUD_REGION` override the files, but
//!   only when no profile was named explicitly: naming a profile means "use
//!   that one".
//!
//! Everything is read through [`Sources`] so tests can give a temporary home
//! and a fake environment without touching the process's own.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The real cloud endpoint, used when neither a flag nor the profile names one.
pub const DEFAULT_ENDPOINT: &str = "https://cvm.tencentcloudapi.com";

/// What the user asked for on the command line (all optional).
#[derive(Debug, Clone, Default)]
pub struct Requested {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub secret_id: Option<String>,
    pub secret_key: Option<String>,
}

/// The environment and the home folder, injectable for tests.
pub struct Sources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// None when the home folder is unknown: profile files are then skipped.
    pub home: Option<PathBuf>,
}

impl Sources<'static> {
    /// The process environment and `$HOME`.
    pub fn process() -> Self {
        fn env(name: &str) -> Option<String> {
            std::env::var(name).ok()
        }
        Sources {
            env: &env,
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// A resolved key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub secret_id: String,
    pub secret_key: String,
    /// STS token, sent as `X-TC-Token` (not signed, as in the SDKs).
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // The key must never reach a log or an error message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"<redacted>")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Everything a request needs besides its action and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub endpoint: String,
    pub region: String,
    /// `en-US` unless the profile says otherwise.
    pub language: String,
    pub credentials: Credentials,
    /// The profile whose files were consulted (for messages).
    pub profile: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path} is not a JSON object: {reason}")]
    NotJson { path: String, reason: String },
    #[error("{path}: `{key}` must be a string")]
    WrongType { path: String, key: String },
    #[error(
        "no credentials: set TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY, \
         or run `tccli configure --profile {profile}` (writes {path}), \
         or pass --secret-id/--secret-key"
    )]
    Missing { profile: String, path: String },
    #[error("--secret-id and --secret-key must be given together")]
    HalfFlag,
    #[error(
        "no region: pass --region, set TENCENTCLOUD_REGION, \
         or run `tccli configure set region ap-guangzhou --profile {profile}`"
    )]
    NoRegion { profile: String },
    #[error("language `{0}` in the profile is not zh-CN or en-US")]
    BadLanguage(String),
    #[error(
        "the profile `{profile}` does not exist: there is no {dir}/{profile}.credential \
         nor {dir}/{profile}.configure (create it with `tccli configure --profile {profile}`)"
    )]
    NoSuchProfile { profile: String, dir: String },
    #[error(
        "--endpoint `{0}` has no scheme: write http://{0} for a plain-HTTP server \
         (such as a local imagegate) or https://{0}"
    )]
    EndpointWithoutScheme(String),
}

/// One tccli profile file: absent, or a JSON object.
fn read_profile_file(path: &Path) -> Result<Option<JsonObject>, CredentialError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialError::Unreadable {
                path: shown,
                reason: e.to_string(),
            })
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(CredentialError::NotJson {
            path: shown,
            reason: "the top level is not an object".into(),
        }),
        Err(e) => Err(CredentialError::NotJson {
            path: shown,
            reason: e.to_string(),
        }),
    }
}

/// A string member, `None` when absent, null or empty (tccli writes "" for
/// keys the user skipped in `tccli configure`).
fn string_at(
    obj: Option<&JsonObject>,
    key: &str,
    path: &Path,
) -> Result<Option<String>, CredentialError> {
    match obj.and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CredentialError::WrongType {
            path: path.display().to_string(),
            key: key.to_string(),
        }),
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// tccli stores bare host names (`cvm.tencentcloudapi.com`), which it calls
/// over HTTPS; a value with a scheme is taken as it is.
fn endpoint_url(raw: &str) -> String {
    let raw = raw.trim().trim_end_matches('/');
    if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    }
}

type JsonObject = serde_json::Map<String, Value>;

/// The tccli profile a run uses: its name and its two files, as read.
struct Profile {
    name: String,
    /// Named by `--profile` (then the environment's credentials and region
    /// do not apply).
    explicit: bool,
    cred_path: Option<PathBuf>,
    conf_path: Option<PathBuf>,
    cred_file: Option<JsonObject>,
    conf_file: Option<JsonObject>,
}

impl Profile {
    /// The profile named by `--profile`, else `TCCLI_PROFILE`, else
    /// `default`; a named profile must exist.
    fn load(req: &Requested, src: &Sources<'_>) -> Result<Profile, CredentialError> {
        let explicit = non_empty(req.profile.clone());
        let from_env = non_empty((src.env)("TCCLI_PROFILE"));
        let named = explicit.is_some() || from_env.is_some();
        let name = explicit
            .clone()
            .or(from_env)
            .unwrap_or_else(|| "default".to_string());
        let dir = src.home.as_ref().map(|h| h.join(".tccli"));
        let cred_path = dir.as_ref().map(|d| d.join(format!("{name}.credential")));
        let conf_path = dir.as_ref().map(|d| d.join(format!("{name}.configure")));
        let read = |p: &Option<PathBuf>| match p {
            Some(p) => read_profile_file(p),
            None => Ok(None),
        };
        let profile = Profile {
            cred_file: read(&cred_path)?,
            conf_file: read(&conf_path)?,
            name,
            explicit: explicit.is_some(),
            cred_path,
            conf_path,
        };
        if let (true, None, None, Some(dir)) = (named, &profile.cred_file, &profile.conf_file, &dir)
        {
            return Err(CredentialError::NoSuchProfile {
                profile: profile.name,
                dir: dir.display().to_string(),
            });
        }
        Ok(profile)
    }

    fn conf_shown(&self) -> &Path {
        self.conf_path.as_deref().unwrap_or(Path::new(""))
    }

    /// A setting of the `.configure` file: `_sys_param` first; a top-level
    /// string is the legacy layout, while a top-level object is a product's
    /// settings (`region` is a product too).
    fn conf_string(&self, key: &str) -> Result<Option<String>, CredentialError> {
        let conf = self.conf_file.as_ref();
        let sys = conf
            .and_then(|c| c.get("_sys_param"))
            .and_then(Value::as_object);
        if let Some(v) = string_at(sys, key, self.conf_shown())? {
            return Ok(Some(v));
        }
        match conf.and_then(|c| c.get(key)) {
            Some(Value::String(_)) => string_at(conf, key, self.conf_shown()),
            _ => Ok(None),
        }
    }

    /// The `.credential` file's keys.
    fn credentials(&self) -> Result<Credentials, CredentialError> {
        let file = self.cred_file.as_ref();
        let shown = self.cred_path.as_deref().unwrap_or(Path::new(""));
        match (
            string_at(file, "secretId", shown)?,
            string_at(file, "secretKey", shown)?,
        ) {
            (Some(secret_id), Some(secret_key)) => Ok(Credentials {
                secret_id,
                secret_key,
                token: string_at(file, "token", shown)?,
            }),
            _ => Err(CredentialError::Missing {
                path: self
                    .cred_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| format!("~/.tccli/{}.credential", self.name)),
                profile: self.name.clone(),
            }),
        }
    }

    /// The profile's `cvm.endpoint`, if any.
    fn endpoint(&self) -> Result<Option<String>, CredentialError> {
        let cvm = self
            .conf_file
            .as_ref()
            .and_then(|c| c.get("cvm"))
            .and_then(Value::as_object);
        string_at(cvm, "endpoint", self.conf_shown())
    }
}

/// Both flags, else the environment (unless a profile was named), else the
/// profile's file.
fn credentials(
    req: &Requested,
    env: &dyn Fn(&str) -> Option<String>,
    profile: &Profile,
) -> Result<Credentials, CredentialError> {
    let pair = |id, key| match (id, key) {
        (Some(secret_id), Some(secret_key)) => Some(Credentials {
            secret_id,
            secret_key,
            token: env("TENCENTCLOUD_TOKEN"),
        }),
        _ => None,
    };
    let flag_id = non_empty(req.secret_id.clone());
    let flag_key = non_empty(req.secret_key.clone());
    if flag_id.is_some() != flag_key.is_some() {
        return Err(CredentialError::HalfFlag);
    }
    if let Some(c) = pair(flag_id, flag_key) {
        return Ok(c);
    }
    if !profile.explicit {
        let from_env = pair(
            env("TENCENTCLOUD_SECRET_ID"),
            env("TENCENTCLOUD_SECRET_KEY"),
        );
        if let Some(c) = from_env {
            return Ok(c);
        }
    }
    profile.credentials()
}

/// Resolve the settings for one run.
pub fn resolve(req: &Requested, src: &Sources<'_>) -> Result<Settings, CredentialError> {
    let env = |k: &str| non_empty((src.env)(k));
    let profile = Profile::load(req, src)?;
    let credentials = credentials(req, &env, &profile)?;

    let region_env = if profile.explicit {
        None
    } else {
        env("TENCENTCLOUD_REGION")
    };
    let region = match non_empty(req.region.clone())
        .or(region_env)
        .or(profile.conf_string("region")?)
    {
        Some(r) => r,
        None => {
            return Err(CredentialError::NoRegion {
                profile: profile.name,
            })
        }
    };

    let language = match profile.conf_string("language")? {
        None => "en-US".to_string(),
        Some(l) if l == "en-US" || l == "zh-CN" => l,
        Some(other) => return Err(CredentialError::BadLanguage(other)),
    };

    // A flag must say http or https: guessing HTTPS for `127.0.0.1:9000`
    // (as tccli does) ends in a TLS error against a plain-HTTP server. The
    // profile's value is tccli's to interpret: a bare host means HTTPS.
    let endpoint = match non_empty(req.endpoint.clone()) {
        Some(e) if !e.contains("://") => {
            return Err(CredentialError::EndpointWithoutScheme(e.trim().to_string()))
        }
        Some(e) => endpoint_url(&e),
        None => match profile.endpoint()? {
            Some(e) => endpoint_url(&e),
            None => DEFAULT_ENDPOINT.to_string(),
        },
    };

    Ok(Settings {
        endpoint,
        region,
        language,
        credentials,
        profile: profile.name,
    })
}

#[cfg(test)]
mod tests;
