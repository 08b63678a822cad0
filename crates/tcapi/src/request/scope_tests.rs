use super::*;

#[test]
fn host_labels_as_the_sdks_sign_them() {
    assert_eq!(host_first_labels("127.0.0.1:9000"), ["127", "127"]);
    assert_eq!(host_first_labels("http://127.0.0.1:18083"), ["127", "127"]);
    assert_eq!(
        host_first_labels("localhost:9000"),
        ["localhost:9000", "localhost"]
    );
    assert_eq!(host_first_labels("cvm.tencentcloudapi.com"), ["cvm", "cvm"]);
    assert_eq!(host_first_labels("[::1]:9000"), ["[::1]:9000", "[::1]"]);
}

#[test]
fn host_candidates() {
    assert_eq!(
        tc3_host_candidates("127.0.0.1:9000"),
        ["127.0.0.1:9000", "127.0.0.1"]
    );
    assert_eq!(tc3_host_candidates("[::1]:9000"), ["[::1]:9000", "[::1]"]);
    assert_eq!(
        tc3_host_candidates("cvm.tencentcloudapi.com"),
        ["cvm.tencentcloudapi.com"]
    );
    // tccli's verbatim scheme: only as sent.
    assert_eq!(
        tc3_host_candidates("http://127.0.0.1:9000"),
        ["http://127.0.0.1:9000"]
    );
}

#[test]
fn scope_service_selects_the_product() {
    let p = |svc: &str, host: &str, action: &str| scope_product(svc, host, action);
    assert_eq!(
        p("cvm", "127.0.0.1:9", "DescribeImages").unwrap(),
        Product::Cvm
    );
    assert_eq!(
        p("cbs", "127.0.0.1:9", "DescribeSnapshots").unwrap(),
        Product::Cbs
    );
    // The scope names the product even when the action is another's:
    // check_version_action then answers InvalidAction.
    assert_eq!(
        p("cbs", "127.0.0.1:9", "DescribeImages").unwrap(),
        Product::Cbs
    );
    assert_eq!(
        p("127", "127.0.0.1:9", "DescribeImages").unwrap(),
        Product::Cvm
    );
    assert_eq!(
        p("127", "127.0.0.1:9", "DescribeSnapshots").unwrap(),
        Product::Cbs
    );
    assert_eq!(
        p("gate", "gate.local:9", "DescribeImages").unwrap(),
        Product::Cvm
    );
    for (svc, host) in [
        ("cos", "127.0.0.1:9"),
        ("128", "127.0.0.1:9"),
        ("", "127.0.0.1:9"),
        ("tencentcloudapi", "cvm.tencentcloudapi.com"),
        ("0", "127.0.0.1:9"),
    ] {
        let e = p(svc, host, "DescribeImages").unwrap_err();
        assert_eq!(e.code, "AuthFailure.InvalidAuthorization", "{svc} {host}");
    }
    assert!(check_version_action(VERSION, "DescribeImages", Product::Cbs).is_err());
    assert!(check_version_action(VERSION, "DescribeSnapshots", Product::Cvm).is_err());
    assert!(check_version_action(VERSION, "DescribeSnapshots", Product::Cbs).is_ok());
}
