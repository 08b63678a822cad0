use super::*;

const APP: u64 = 1251233127;

fn parse(u: &str) -> Result<ImageSource, UrlError> {
    parse_image_url(u, APP, &SourceConfig::default())
}

#[test]
fn tencent_examples() {
    let s =
        parse("http://111-1251233127.cosd.myqcloud.com/Windows%20Server%202008%20R2%20x64a.vmdk")
            .unwrap();
    match s {
        ImageSource::Cos {
            bucket,
            app_id,
            region,
            key,
            ..
        } => {
            assert_eq!(bucket, "111");
            assert_eq!(app_id, APP);
            assert_eq!(region, None);
            assert_eq!(key, "Windows Server 2008 R2 x64a.vmdk");
        }
        other => panic!("{other:?}"),
    }
    let s = parse("https://user-test-1251233127.cos.ap-guangzhou.myqcloud.com/snap-xxxx.qcow2")
        .unwrap();
    assert_eq!(
        s,
        ImageSource::Cos {
            bucket: "user-test".into(),
            app_id: APP,
            region: Some("ap-guangzhou".into()),
            key: "snap-xxxx.qcow2".into(),
            url: "https://user-test-1251233127.cos.ap-guangzhou.myqcloud.com/snap-xxxx.qcow2"
                .into()
        }
    );
    // No appid: the caller's bucket.
    match parse("https://import-img.cos.ap-guangzhou.myqcloud.com/import-img.vpc").unwrap() {
        ImageSource::Cos { bucket, app_id, .. } => {
            assert_eq!(bucket, "import-img");
            assert_eq!(app_id, APP);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_cos_hosts() {
    for (u, region) in [
        (
            "https://b-1251233127.cos-internal.ap-shanghai.myqcloud.com/k",
            Some("ap-shanghai"),
        ),
        ("https://b-1251233127.cos.accelerate.myqcloud.com/k", None),
        (
            "HTTPS://B-1251233127.COS.AP-BEIJING.MYQCLOUD.COM/k",
            Some("ap-beijing"),
        ),
        (
            "https://b-1251233127.cos.ap-beijing.myqcloud.com:443/k?sign=abc",
            Some("ap-beijing"),
        ),
    ] {
        match parse(u) {
            Ok(ImageSource::Cos { region: r, key, .. }) => {
                assert_eq!(r.as_deref(), region, "{u}");
                assert_eq!(key, "k");
            }
            other => panic!("{u}: {other:?}"),
        }
    }
}

#[test]
fn keys_decode_once_and_refuse_escapes() {
    let key = |u: &str| match parse(u) {
        Ok(ImageSource::Cos { key, .. }) => Ok(key),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    let base = "https://b-1251233127.cos.ap-guangzhou.myqcloud.com";
    assert_eq!(key(&format!("{base}/dir/a%2520b")).unwrap(), "dir/a%20b");
    assert_eq!(
        key(&format!("{base}/%E9%95%9C%E5%83%8F.qcow2")).unwrap(),
        "镜像.qcow2"
    );
    assert_eq!(key(&format!("{base}/a+b")).unwrap(), "a+b");
    for bad in [
        "/",
        "",
        "/a/../b",
        "/a/%2e%2e/b",
        "/%2E%2E/x",
        "/./x",
        "/a/%2E/b",
        "/a//b",
        "/%2Fetc/passwd",
        "/a/",
        "/a%00b",
        "/a%zzb",
        "/a%4",
        "/%ff%fe",
    ] {
        assert!(
            matches!(key(&format!("{base}{bad}")), Err(UrlError::BadKey(_))),
            "{bad} must be refused"
        );
    }
}

#[test]
fn foreign_bucket() {
    assert_eq!(
        parse("https://b-1300000000.cos.ap-guangzhou.myqcloud.com/x"),
        Err(UrlError::ForeignBucket {
            bucket: "b".into(),
            app_id: 1300000000,
            account_app_id: APP
        })
    );
}

#[test]
fn not_cos() {
    for u in [
        "https://example.com/x.qcow2",
        "https://b-1251233127.cos.ap-guangzhou.myqcloud.com.evil.com/x",
        "https://evilmyqcloud.com/x",
        "https://b-1251233127.s3.amazonaws.com/x",
        "https://b-1251233127.cos.ap-guangzhou.example.com/x",
        "https://localhost/x",
        "http://8.8.8.8/x",
    ] {
        assert!(
            matches!(parse(u), Err(UrlError::NotCos(_))),
            "{u}: {:?}",
            parse(u)
        );
    }
}

#[test]
fn schemes_and_shapes() {
    for u in ["ftp://x/y", "file:///etc/passwd", "gopher://127.0.0.1/"] {
        assert!(matches!(parse(u), Err(UrlError::Scheme(_))), "{u}");
    }
    for u in [
        "",
        "cos.ap-guangzhou.myqcloud.com/x",
        "https:b-1251233127.cos.ap-guangzhou.myqcloud.com/x",
        "https:///x",
        "https://user@b-1251233127.cos.ap-guangzhou.myqcloud.com/x",
        "https://u:p@b-1251233127.cos.ap-guangzhou.myqcloud.com/x",
        "https://b-1251233127.cos.ap-guangzhou.myqcloud.com/x#frag",
        "https://b-1251233127.cos.ap-guangzhou.myqcloud.com\\@127.0.0.1/x",
        "https://b-1251233127.cos.ap-guangzhou.myqcloud.com/a b",
        "https://b-1251233127.cos.ap-guangzhou.myqcloud.com/a\tb",
        "https://b-1251233127.cos.ap-guangzhou.myqcloud.com/a\nb",
        "https://[::1/x",
    ] {
        assert!(
            matches!(parse(u), Err(UrlError::Malformed(_))),
            "{u}: {:?}",
            parse(u)
        );
    }
    let long = format!(
        "https://b-1251233127.cos.ap-guangzhou.myqcloud.com/{}",
        "a".repeat(MAX_URL_LEN)
    );
    assert!(matches!(parse(&long), Err(UrlError::Malformed(_))));
}

#[test]
fn non_canonical_ip_spellings_are_refused() {
    let cfg = SourceConfig {
        // Even an operator who opened private networks gets no
        // obfuscated spellings.
        allow_private_networks: true,
        ..SourceConfig::default()
    };
    for u in [
        "http://2130706433/x",
        "http://0177.0.0.1/x",
        "http://0x7f.1/x",
        "http://0x7f000001/x",
        "http://127.1/x",
        "http://127.0.1/x",
        "http://127.000.000.001/x",
        "http://127.0.0.1./x",
        "http://%31%32%37.0.0.1/x",
        "http://017700000001/x",
    ] {
        assert!(
            matches!(
                parse_image_url(u, APP, &cfg),
                Err(UrlError::AddressRefused(_))
            ),
            "{u}: {:?}",
            parse_image_url(u, APP, &cfg)
        );
    }
}

#[test]
fn refused_ip_literals() {
    for u in [
        "http://127.0.0.1/x",
        "http://10.1.2.3/x",
        "http://172.16.0.1/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/x",
        "http://0.0.0.0/x",
        "http://224.0.0.1/x",
        "http://255.255.255.255/x",
        "http://240.0.0.1/x",
        "http://192.0.0.1/x",
        "http://198.18.0.1/x",
        "http://192.0.2.1/x",
        "http://[::1]/x",
        "http://[::]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[::ffff:7f00:1]/x",
        "http://[::ffff:a9fe:a9fe]/x",
        "http://[64:ff9b::7f00:1]/x",
        "http://[fe80::1]/x",
        "http://[fd00::1]/x",
        "http://[ff02::1]/x",
    ] {
        assert!(
            matches!(parse(u), Err(UrlError::AddressRefused(_))),
            "{u}: {:?}",
            parse(u)
        );
    }
}

#[test]
fn allow_hosts_opens_hosts_and_private_literals() {
    let cfg = SourceConfig {
        allow_hosts: vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()],
        ..SourceConfig::default()
    };
    for u in [
        "http://localhost:8080/img.raw",
        "http://LOCALHOST/img.raw",
        "http://127.0.0.1:9/img.raw",
        "http://[::1]:9/img.raw",
    ] {
        assert!(
            matches!(parse_image_url(u, APP, &cfg), Ok(ImageSource::Http { .. })),
            "{u}"
        );
    }
    // Listing 127.0.0.1 does not open its other spellings.
    assert!(matches!(
        parse_image_url("http://127.1/x", APP, &cfg),
        Err(UrlError::AddressRefused(_))
    ));
    // A listed name is not a listed suffix.
    assert!(matches!(
        parse_image_url("http://localhost.evil.com/x", APP, &cfg),
        Err(UrlError::NotCos(_))
    ));
    // allow_private_networks alone does not make a host fetchable.
    let cfg = SourceConfig {
        allow_private_networks: true,
        ..SourceConfig::default()
    };
    assert!(matches!(
        parse_image_url("http://10.0.0.1/x", APP, &cfg),
        Err(UrlError::NotCos(_))
    ));
}

#[test]
fn messages_say_what_is_wrong() {
    let e = parse("https://b-1300000000.cos.ap-guangzhou.myqcloud.com/x").unwrap_err();
    assert!(e.to_string().contains("1300000000"), "{e}");
    assert_eq!(e.code(), "InvalidParameter.InvalidParameterUrlError");
    let e = parse("http://0x7f.1/x").unwrap_err();
    assert!(e.to_string().contains("non-canonical"), "{e}");
    let e = parse("http://169.254.169.254/").unwrap_err();
    assert!(e.to_string().contains("169.254.169.254"), "{e}");
}
