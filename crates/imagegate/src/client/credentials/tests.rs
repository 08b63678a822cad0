use super::*;
use std::collections::HashMap;

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn write(&self, name: &str, text: &str) {
        let d = self.dir.path().join(".tccli");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), text).unwrap();
    }
    fn resolve(&self, req: &Requested, env: &[(&str, &str)]) -> Result<Settings, CredentialError> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = move |k: &str| map.get(k).cloned();
        resolve(
            req,
            &Sources {
                env: &get,
                home: Some(self.dir.path().to_path_buf()),
            },
        )
    }
}

// As `tccli configure` 3.1.189.1 writes them (abridged to the keys read).
const CRED: &str = r#"{"secretId": "AKIDfile", "secretKey": "filekey"}"#;
const CONF: &str = r#"{"_sys_param": {"region": "ap-shanghai", "output": "json", "language": "zh-CN"},
    "cvm": {"endpoint": "cvm.tencentcloudapi.com", "version": "2017-03-12"}}"#;

#[test]
fn default_profile_files() {
    let home = Home::new();
    home.write("default.credential", CRED);
    home.write("default.configure", CONF);
    let s = home.resolve(&Requested::default(), &[]).unwrap();
    assert_eq!(s.credentials.secret_id, "AKIDfile");
    assert_eq!(s.credentials.secret_key, "filekey");
    assert_eq!(s.credentials.token, None);
    assert_eq!(s.region, "ap-shanghai");
    assert_eq!(s.language, "zh-CN");
    assert_eq!(s.endpoint, "https://cvm.tencentcloudapi.com");
    assert_eq!(s.profile, "default");
}

#[test]
fn environment_beats_default_profile() {
    let home = Home::new();
    home.write("default.credential", CRED);
    home.write("default.configure", CONF);
    let s = home
        .resolve(
            &Requested::default(),
            &[
                ("TENCENTCLOUD_SECRET_ID", "AKIDenv"),
                ("TENCENTCLOUD_SECRET_KEY", "envkey"),
                ("TENCENTCLOUD_TOKEN", "tok"),
                ("TENCENTCLOUD_REGION", "ap-beijing"),
            ],
        )
        .unwrap();
    assert_eq!(s.credentials.secret_id, "AKIDenv");
    assert_eq!(s.credentials.token.as_deref(), Some("tok"));
    assert_eq!(s.region, "ap-beijing");
}

#[test]
fn half_environment_is_ignored() {
    // tccli needs both variables; one alone falls back to the file.
    let home = Home::new();
    home.write("default.credential", CRED);
    let s = home
        .resolve(
            &Requested {
                region: Some("ap-guangzhou".into()),
                ..Default::default()
            },
            &[("TENCENTCLOUD_SECRET_ID", "AKIDenv")],
        )
        .unwrap();
    assert_eq!(s.credentials.secret_id, "AKIDfile");
}

#[test]
fn named_profile_beats_environment() {
    let home = Home::new();
    home.write(
        "work.credential",
        r#"{"secretId": "AKIDwork", "secretKey": "k", "token": "t"}"#,
    );
    home.write(
        "work.configure",
        r#"{"_sys_param": {"region": "ap-tokyo"}, "cvm": {"endpoint": "http://127.0.0.1:9000/"}}"#,
    );
    let env = [
        ("TENCENTCLOUD_SECRET_ID", "AKIDenv"),
        ("TENCENTCLOUD_SECRET_KEY", "envkey"),
        ("TENCENTCLOUD_REGION", "ap-beijing"),
    ];
    let s = home
        .resolve(
            &Requested {
                profile: Some("work".into()),
                ..Default::default()
            },
            &env,
        )
        .unwrap();
    assert_eq!(s.credentials.secret_id, "AKIDwork");
    assert_eq!(s.credentials.token.as_deref(), Some("t"));
    assert_eq!(s.region, "ap-tokyo");
    assert_eq!(s.endpoint, "http://127.0.0.1:9000");
    assert_eq!(s.language, "en-US");

    // TCCLI_PROFILE chooses the files but is not "explicit": the
    // environment's key still wins, as in tccli.
    home.write("work.credential", CRED);
    let mut env2 = env.to_vec();
    env2.push(("TCCLI_PROFILE", "work"));
    let s = home.resolve(&Requested::default(), &env2).unwrap();
    assert_eq!(s.profile, "work");
    assert_eq!(s.credentials.secret_id, "AKIDenv");
    assert_eq!(s.region, "ap-beijing");
}

#[test]
fn flags_beat_everything() {
    let home = Home::new();
    home.write("default.credential", CRED);
    home.write("default.configure", CONF);
    let s = home
        .resolve(
            &Requested {
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("ap-guangzhou".into()),
                secret_id: Some("AKIDflag".into()),
                secret_key: Some("flagkey".into()),
                profile: None,
            },
            &[
                ("TENCENTCLOUD_SECRET_ID", "AKIDenv"),
                ("TENCENTCLOUD_SECRET_KEY", "envkey"),
            ],
        )
        .unwrap();
    assert_eq!(s.credentials.secret_id, "AKIDflag");
    assert_eq!(s.region, "ap-guangzhou");
    assert_eq!(s.endpoint, "http://127.0.0.1:9000");
    // A flag without a scheme is refused with what to write instead.
    let req = Requested {
        endpoint: Some("127.0.0.1:9000".into()),
        ..Default::default()
    };
    let err = home.resolve(&req, &[]).unwrap_err();
    assert_eq!(
        err,
        CredentialError::EndpointWithoutScheme("127.0.0.1:9000".into())
    );
    assert!(
        err.to_string().contains("write http://127.0.0.1:9000"),
        "{err}"
    );
}

#[test]
fn legacy_top_level_region() {
    let home = Home::new();
    home.write("default.credential", CRED);
    home.write(
        "default.configure",
        r#"{"region": "ap-seoul", "output": "json"}"#,
    );
    let s = home.resolve(&Requested::default(), &[]).unwrap();
    assert_eq!(s.region, "ap-seoul");
}

#[test]
fn product_settings_named_region_are_not_the_region() {
    // As `tccli configure set region.endpoint … ` leaves it beside _sys_param.
    let home = Home::new();
    home.write("default.credential", CRED);
    home.write(
        "default.configure",
        r#"{"_sys_param": {"region": "ap-chengdu"}, "region": {"endpoint": "region.tencentcloudapi.com", "version": "2022-06-27"}}"#,
    );
    let s = home.resolve(&Requested::default(), &[]).unwrap();
    assert_eq!(s.region, "ap-chengdu");
    home.write(
        "default.configure",
        r#"{"region": {"endpoint": "region.tencentcloudapi.com"}}"#,
    );
    let err = home.resolve(&Requested::default(), &[]).unwrap_err();
    assert!(matches!(err, CredentialError::NoRegion { .. }), "{err}");
}

#[test]
fn a_named_profile_must_exist() {
    let home = Home::new();
    home.write("default.credential", CRED);
    home.write("default.configure", CONF);
    let req = Requested {
        profile: Some("nope".into()),
        ..Default::default()
    };
    let err = home.resolve(&req, &[]).unwrap_err();
    assert!(
        matches!(err, CredentialError::NoSuchProfile { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("`nope` does not exist"), "{msg}");
    assert!(msg.contains("nope.credential"), "{msg}");
    let err = home
        .resolve(&Requested::default(), &[("TCCLI_PROFILE", "nope")])
        .unwrap_err();
    assert!(
        matches!(err, CredentialError::NoSuchProfile { .. }),
        "{err}"
    );
}

#[test]
fn clear_errors() {
    let home = Home::new();
    let err = home.resolve(&Requested::default(), &[]).unwrap_err();
    assert!(matches!(err, CredentialError::Missing { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("TENCENTCLOUD_SECRET_ID"), "{msg}");
    assert!(msg.contains("default.credential"), "{msg}");

    home.write("default.credential", CRED);
    let err = home.resolve(&Requested::default(), &[]).unwrap_err();
    assert!(matches!(err, CredentialError::NoRegion { .. }), "{err}");

    home.write("default.credential", "{not json");
    let err = home.resolve(&Requested::default(), &[]).unwrap_err();
    assert!(matches!(err, CredentialError::NotJson { .. }), "{err}");

    home.write("default.credential", r#"["a"]"#);
    let err = home.resolve(&Requested::default(), &[]).unwrap_err();
    assert!(matches!(err, CredentialError::NotJson { .. }), "{err}");

    home.write(
        "default.credential",
        r#"{"secretId": 12, "secretKey": "k"}"#,
    );
    let err = home.resolve(&Requested::default(), &[]).unwrap_err();
    assert_eq!(
        err,
        CredentialError::WrongType {
            path: home
                .dir
                .path()
                .join(".tccli/default.credential")
                .display()
                .to_string(),
            key: "secretId".into()
        }
    );

    let err = home
        .resolve(
            &Requested {
                secret_id: Some("AKID".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err();
    assert_eq!(err, CredentialError::HalfFlag);

    home.write("default.credential", CRED);
    home.write(
        "default.configure",
        r#"{"_sys_param": {"region": "r", "language": "fr-FR"}}"#,
    );
    let err = home.resolve(&Requested::default(), &[]).unwrap_err();
    assert_eq!(err, CredentialError::BadLanguage("fr-FR".into()));
}

#[test]
fn debug_hides_the_key() {
    let c = Credentials {
        secret_id: "AKIDx".into(),
        secret_key: "very-secret".into(),
        token: Some("tok-secret".into()),
    };
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("very-secret") && !shown.contains("tok-secret"),
        "{shown}"
    );
    assert!(shown.contains("AKIDx"));
}
