use super::*;

#[test]
fn issue_example_parses_and_validates() {
    let text = r#"
listen = "127.0.0.1:9000"
data_dir = "imagegate-data"
regions = ["ap-guangzhou"]
import_regions = ["ap-guangzhou"]
[rate_limits]
enabled = true
[[accounts]]
secret_id = "AKIDexample"
secret_key = "secret"
app_id = 1251233127
uin = "100000000001"
image_quota = 500
[source]
cos_root = "/srv/buckets"
cos_endpoint = "http://127.0.0.1:9100"
allow_hosts = ["127.0.0.1"]
allow_private_networks = false
"#;
    let c = Config::from_toml(text).unwrap();
    c.validate().unwrap();
    assert_eq!(c.accounts[0].app_id, 1251233127);
    assert_eq!(c.effective_import_regions(), ["ap-guangzhou".to_string()]);
    // The secret never shows in Debug output.
    assert!(!format!("{c:?}").contains("\"secret\""));
}

#[test]
fn uin_and_app_id_are_unique_across_accounts() {
    let account = |id: &str, app_id: u64, uin: &str| AccountConfig {
        secret_id: id.into(),
        secret_key: "k".into(),
        app_id,
        uin: uin.into(),
        image_quota: 1,
        storage_quota_gib: None,
    };
    let mut c = Config {
        accounts: vec![account("AKID1", 1, "10"), account("AKID2", 2, "10")],
        ..Config::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("accounts[1].uin") && e.contains("accounts[0]"),
        "{e}"
    );
    c.accounts[1].uin = "11".into();
    c.accounts[1].app_id = 1;
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("accounts[1].app_id") && e.contains("accounts[0]"),
        "{e}"
    );
    c.accounts[1].app_id = 2;
    c.validate().unwrap();
}

#[test]
fn rate_limit_scope_defaults_to_cluster() {
    let c = Config::from_toml("[rate_limits]\nenabled = true\n").unwrap();
    assert_eq!(c.rate_limits.scope, RateLimitScope::Cluster);
    let c = Config::from_toml("[rate_limits]\nscope = \"node\"\n").unwrap();
    assert_eq!(c.rate_limits.scope, RateLimitScope::Node);
    assert!(Config::from_toml("[rate_limits]\nscope = \"region\"\n").is_err());
}

#[test]
fn unknown_keys_are_refused() {
    assert!(Config::from_toml("lissten = \"x\"").is_err());
}

#[test]
fn env_overrides_apply() {
    let mut c = Config::default();
    let env = |k: &str| match k {
        "IMAGEGATE_LISTEN" => Some("127.0.0.1:0".to_string()),
        "IMAGEGATE_REGIONS" => Some("ap-guangzhou, ap-beijing".to_string()),
        "IMAGEGATE_RATE_LIMITS_ENABLED" => Some("false".to_string()),
        _ => None,
    };
    c.apply_env(env).unwrap();
    assert_eq!(c.listen, "127.0.0.1:0");
    assert_eq!(c.regions, ["ap-guangzhou", "ap-beijing"]);
    assert!(!c.rate_limits.enabled);
    c.validate().unwrap();
    let bad = |k: &str| (k == "IMAGEGATE_RATE_LIMITS_ENABLED").then(|| "maybe".to_string());
    assert!(Config::default().apply_env(bad).is_err());
}

#[test]
fn validation_names_the_bad_key() {
    let mut c = Config {
        import_regions: Some(vec!["ap-tokyo".into()]),
        ..Config::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("import_regions"), "{e}");
    c.import_regions = None;
    c.regions = vec!["Guangzhou".into()];
    assert!(c.validate().unwrap_err().to_string().contains("regions"));
    c.regions = vec!["ap-guangzhou".into()];
    c.listen = "localhost".into();
    assert!(c.validate().unwrap_err().to_string().contains("listen"));
}

#[test]
fn the_blob_retry_deadline_defaults_to_five_minutes_and_must_be_positive() {
    let c = Config::from_toml("[blobs]\nurl = \"s3://b/p\"\n").unwrap();
    assert_eq!(c.blobs.retry_deadline_secs, 300.0);
    let c = Config::from_toml("[blobs]\nretry_deadline_secs = 2.5\n").unwrap();
    assert_eq!(c.blobs.retry_deadline_secs, 2.5);
    for bad in ["0", "-1", "100000"] {
        let mut c = Config::default();
        c.blobs.retry_deadline_secs = bad.parse().unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("blobs.retry_deadline_secs"), "{e}");
    }
}

#[test]
fn an_unknown_os_platform_is_refused_with_its_name() {
    let text = r#"
[[import_os]]
os_name = "Gentoo"
platform = "Linus"
os_versions = ["2024"]
architectures = ["x86_64"]
"#;
    let e = Config::from_toml(text).unwrap_err();
    assert!(
        e.to_string().contains("`Linus` is not a known OS platform"),
        "{e}"
    );
    let ok = Config::from_toml(&text.replace("Linus", "Linux")).unwrap();
    assert_eq!(
        ok.import_os.unwrap()[0].platform,
        crate::domain::OsPlatform::Linux
    );
}
