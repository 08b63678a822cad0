//! Accounts: who may call the API, with which key, and what they own.
//!
//! Accounts come from the config file. When none is configured, `serve`
//! creates one in `<data_dir>/account.toml` (mode 0600) on the first start and
//! reuses it afterwards, so a newcomer can connect at once. The secret key is
//! printed once, by the CLI, at creation; nothing here ever logs it.

use crate::config::{default_image_quota, AccountConfig};
use rand::distr::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File, inside the data directory, that holds the generated account.
pub const ACCOUNT_FILE: &str = "account.toml";

/// One API account, as the request path sees it.
pub struct Account {
    /// Position in the registry; indexes per-account state such as rate limits.
    pub index: usize,
    pub secret_id: String,
    pub secret_key: String,
    pub app_id: u64,
    pub uin: String,
    pub image_quota: u32,
    /// Stored bytes allowed (`accounts.storage_quota_gib`); `None`: unlimited.
    pub storage_quota: Option<u64>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("secret_id", &self.secret_id)
            .field("uin", &self.uin)
            .field("app_id", &self.app_id)
            .field("image_quota", &self.image_quota)
            .finish_non_exhaustive()
    }
}

/// Every account, looked up by SecretId on each request.
#[derive(Debug, Default)]
pub struct Accounts {
    list: Vec<Arc<Account>>,
    by_secret_id: HashMap<String, usize>,
}

impl Accounts {
    pub fn new(configs: &[AccountConfig]) -> Accounts {
        let mut accounts = Accounts::default();
        for c in configs {
            if accounts.by_secret_id.contains_key(&c.secret_id) {
                // Config validation refuses duplicates; keep the first if not validated.
                continue;
            }
            let index = accounts.list.len();
            accounts.by_secret_id.insert(c.secret_id.clone(), index);
            accounts.list.push(Arc::new(Account {
                index,
                secret_id: c.secret_id.clone(),
                secret_key: c.secret_key.clone(),
                app_id: c.app_id,
                uin: c.uin.clone(),
                image_quota: c.image_quota,
                storage_quota: c
                    .storage_quota_gib
                    .map(|gib| (gib * (1u64 << 30) as f64) as u64),
            }));
        }
        accounts
    }

    pub fn get(&self, secret_id: &str) -> Option<&Arc<Account>> {
        self.by_secret_id.get(secret_id).map(|&i| &self.list[i])
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.list.iter()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid account file: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The on-disk shape of `account.toml`: one `[account]` table.
#[derive(Serialize, Deserialize)]
struct AccountFile {
    account: AccountConfig,
}

/// Outcome of [`ensure_default_account`].
#[derive(Debug)]
pub enum Bootstrap {
    /// Accounts are configured; nothing was done.
    Configured,
    /// The account stored in the data directory by an earlier start was loaded.
    Loaded(PathBuf),
    /// A new account was created and stored; the caller shows its key once.
    Created(PathBuf, AccountConfig),
}

/// With no account configured, loads `<data_dir>/account.toml` or creates it,
/// and appends that account to `accounts`.
pub fn ensure_default_account(
    data_dir: &Path,
    accounts: &mut Vec<AccountConfig>,
) -> Result<Bootstrap, AccountError> {
    if !accounts.is_empty() {
        return Ok(Bootstrap::Configured);
    }
    let path = data_dir.join(ACCOUNT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let file: AccountFile = toml::from_str(&text).map_err(|e| AccountError::Parse {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            accounts.push(file.account);
            return Ok(Bootstrap::Loaded(path));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(AccountError::Read { path, source }),
    }
    let account = generate_account();
    write_private(&path, &account)?;
    accounts.push(account.clone());
    Ok(Bootstrap::Created(path, account))
}

/// A fresh account shaped like Tencent's: `AKID` + 32 alphanumerics, a
/// 32-character key, a 10-digit AppId and a 12-digit uin.
pub fn generate_account() -> AccountConfig {
    let mut rng = rand::rng();
    let mut alnum = |n: usize| -> String {
        (&mut rng)
            .sample_iter(Alphanumeric)
            .take(n)
            .map(char::from)
            .collect()
    };
    let secret_id = format!("AKID{}", alnum(32));
    let secret_key = alnum(32);
    let mut rng = rand::rng();
    AccountConfig {
        secret_id,
        secret_key,
        app_id: rng.random_range(1_000_000_000u64..=1_999_999_999),
        uin: rng
            .random_range(100_000_000_000u64..=199_999_999_999)
            .to_string(),
        image_quota: default_image_quota(),
        storage_quota_gib: None,
    }
}

/// Writes the account file readable by its owner only. `create_new` so that
/// two processes starting at once cannot overwrite each other's key.
fn write_private(path: &Path, account: &AccountConfig) -> Result<(), AccountError> {
    let text = toml::to_string(&AccountFile {
        account: account.clone(),
    })
    .map_err(|e| AccountError::Parse {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let text = format!(
        "# Generated by `imagegate serve` because no account was configured.\n\
         # Keep it secret; copy it into the config's [[accounts]] to manage it there.\n{text}"
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let werr = |source| AccountError::Write {
        path: path.to_owned(),
        source,
    };
    let mut f = options.open(path).map_err(werr)?;
    f.write_all(text.as_bytes()).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_account_has_tencent_shapes() {
        let a = generate_account();
        assert!(a.secret_id.starts_with("AKID"));
        assert_eq!(a.secret_id.len(), 36);
        assert_eq!(a.secret_key.len(), 32);
        assert!(a.secret_key.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(a.app_id.to_string().len(), 10);
        assert_eq!(a.uin.len(), 12);
        assert_ne!(generate_account().secret_key, a.secret_key);
    }

    #[test]
    fn bootstrap_creates_then_reuses_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut accounts = Vec::new();
        let created = match ensure_default_account(dir.path(), &mut accounts).unwrap() {
            Bootstrap::Created(_, a) => a,
            other => panic!("expected Created, got {other:?}"),
        };
        let path = dir.path().join(ACCOUNT_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut again = Vec::new();
        assert!(matches!(
            ensure_default_account(dir.path(), &mut again).unwrap(),
            Bootstrap::Loaded(_)
        ));
        assert_eq!(again[0].secret_id, created.secret_id);
        assert_eq!(again[0].secret_key, created.secret_key);
        assert_eq!(again[0].uin, created.uin);

        // Configured accounts win; nothing is read or written.
        let mut configured = vec![generate_account()];
        assert!(matches!(
            ensure_default_account(dir.path(), &mut configured).unwrap(),
            Bootstrap::Configured
        ));
        assert_eq!(configured.len(), 1);
    }

    #[test]
    fn registry_finds_by_secret_id() {
        let a = generate_account();
        let b = generate_account();
        let reg = Accounts::new(&[a.clone(), b.clone()]);
        assert_eq!(reg.len(), 2);
        assert_eq!(reg.get(&b.secret_id).unwrap().uin, b.uin);
        assert_eq!(reg.get(&b.secret_id).unwrap().index, 1);
        assert!(reg.get("AKIDnope").is_none());
        assert!(!format!("{:?}", reg.get(&a.secret_id).unwrap()).contains(&a.secret_key));
    }
}
