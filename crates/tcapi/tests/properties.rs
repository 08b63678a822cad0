//! Properties over generated requests: what a client signs the server
//! accepts, in every scheme and transport; a single changed byte is never
//! accepted; flattened and JSON encodings decode to the same request; and no
//! input makes `decode` or `decode_action` panic.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Value as Json};
use tcapi::*;

fn alnum(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9]{{1,{max}}}")).unwrap()
}

/// Any text, including the characters that need escaping on the wire.
fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~\u{a0}-\u{3000}]{0,12}").unwrap()
}

fn v1_methods() -> impl Strategy<Value = SignatureMethod> {
    prop_oneof![
        Just(SignatureMethod::HmacSha1),
        Just(SignatureMethod::HmacSha256)
    ]
}

/// A DescribeImages request in JSON form, with an InstanceType to mutate.
fn describe_json() -> impl Strategy<Value = Json> {
    (
        alnum(16),
        proptest::option::of(0i64..1000),
        proptest::collection::vec(text(), 0..4),
    )
        .prop_map(|(it, limit, ids)| {
            let mut v = json!({ "InstanceType": it });
            if let Some(l) = limit {
                v["Limit"] = json!(l);
            }
            if !ids.is_empty() {
                v["ImageIds"] = json!(ids);
            }
            v
        })
}

/// Replace byte `at` of `s` with an alphanumeric different from it.
fn mutate_alnum(s: &mut [u8], at: usize, pick: u8) {
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut c = alphabet[pick as usize % alphabet.len()];
    if c == s[at] {
        c = if c == b'a' { b'b' } else { b'a' };
    }
    s[at] = c;
}

/// Range of the InstanceType value inside encoded bytes (JSON or form).
fn value_range(hay: &[u8], value: &str) -> std::ops::Range<usize> {
    for prefix in [
        format!("\"InstanceType\":\"{value}\""),
        format!("InstanceType={value}"),
    ] {
        let needle = prefix.as_bytes();
        if let Some(start) = hay.windows(needle.len()).position(|w| w == needle) {
            let begin = start + prefix.find(value).unwrap();
            return begin..begin + value.len();
        }
    }
    panic!("InstanceType not found in {}", String::from_utf8_lossy(hay));
}

fn instance_type(v: &Json) -> String {
    v["InstanceType"].as_str().unwrap().to_string()
}

/// Every way a client can send the same parameters, signed.
fn all_transports(v: &Json, m: SignatureMethod) -> Vec<(&'static str, Req)> {
    let flat = flatten(v);
    let refs: Vec<(&str, &str)> = flat.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vec![
        ("tc3-json", tc3_json("DescribeImages", &v.to_string())),
        ("tc3-get", tc3_get("DescribeImages", &form_urlencode(&flat))),
        (
            "tc3-form",
            tc3_form("DescribeImages", &form_urlencode(&flat)),
        ),
        (
            "v1-get",
            v1(false, m, v1_params("DescribeImages", m, &refs)),
        ),
        (
            "v1-form",
            v1(true, m, v1_params("DescribeImages", m, &refs)),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn signed_requests_verify_and_agree(v in describe_json(), m in v1_methods()) {
        let expected = decode_action("DescribeImages", &Params::from_json(v.to_string().as_bytes()).unwrap()).unwrap();
        for (name, r) in all_transports(&v, m) {
            let got = r.run();
            prop_assert_eq!(got.as_ref().ok(), Some(&expected), "{}: {:?}", name, got);
        }
    }

    #[test]
    fn changed_value_byte_fails_signature(v in describe_json(), m in v1_methods(), pos in any::<prop::sample::Index>(), pick in any::<u8>()) {
        let it = instance_type(&v);
        for (name, mut r) in all_transports(&v, m) {
            let edited = edit_carrier(&mut r, |bytes| {
                let range = value_range(bytes, &it);
                let at = range.start + pos.index(range.len());
                mutate_alnum(bytes, at, pick);
            });
            prop_assert!(edited, "an alphanumeric edit keeps UTF-8");
            let got = r.run();
            prop_assert_eq!(got.as_ref().err().map(|e| e.code.as_ref()), Some("AuthFailure.SignatureFailure"), "{}", name);
        }
    }

    #[test]
    fn changed_host_byte_fails_signature(v in describe_json(), m in v1_methods(), pos in any::<prop::sample::Index>(), byte in 0x21u8..0x7f) {
        for (name, mut r) in all_transports(&v, m) {
            let mut host = HOST.as_bytes().to_vec();
            let at = pos.index(host.len());
            host[at] = if host[at] == byte { b'~' ^ (byte & 1) } else { byte };
            r.set_header("Host", std::str::from_utf8(&host).unwrap());
            let got = r.run();
            prop_assert_eq!(got.as_ref().err().map(|e| e.code.as_ref()), Some("AuthFailure.SignatureFailure"), "{}", name);
        }
    }

    #[test]
    fn any_changed_byte_is_never_accepted(v in describe_json(), m in v1_methods(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        for (name, mut r) in all_transports(&v, m) {
            let mut changed = false;
            let utf8 = edit_carrier(&mut r, |bytes| {
                let at = pos.index(bytes.len());
                changed = bytes[at] != byte;
                bytes[at] = byte;
            });
            if !changed || !utf8 {
                continue;
            }
            // A v1 change that decodes to the same pairs (e.g. '+' for "%20")
            // is the same signed request: only TC3 signs bytes.
            let same_v1 = name.starts_with("v1") && same_pairs(&r, &all_transports(&v, m), name);
            let got = r.run();
            prop_assert!(got.is_err() || same_v1, "{}: accepted {:?}", name, got);
        }
    }

    #[test]
    fn flatten_then_decode_round_trips(v in action_json()) {
        let (action, body) = v;
        let from_json = decode_action(action, &Params::from_json(body.to_string().as_bytes()).unwrap());
        let pairs = flatten(&body);
        let encoded = form_urlencode(&pairs);
        let parsed = tcapi::params::parse_form(encoded.as_bytes()).unwrap();
        let from_flat = Params::from_pairs(parsed.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        prop_assert_eq!(&parsed, &pairs);
        let from_flat = decode_action(action, &from_flat);
        prop_assert!(from_json.is_ok(), "{:?}", from_json);
        prop_assert_eq!(from_json, from_flat);
    }

    #[test]
    fn decode_never_panics(
        method in prop_oneof![Just("GET".to_string()), Just("POST".to_string()), "[A-Za-z]{0,8}"],
        query in "\\PC{0,64}",
        headers in proptest::collection::vec((header_name(), "\\PC{0,80}"), 0..10),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        now in any::<i64>(),
    ) {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let raw = RawRequest { method: &method, raw_query: &query, headers: &hs, body: &body };
        if let Ok(req) = decode(&raw) {
            let _ = req.verify(&raw, KEY, now);
            let _ = decode_action(&req.action, &req.params);
        }
    }

    #[test]
    fn decode_action_never_panics_on_json(body in arbitrary_json(), action in prop::sample::select(ACTIONS)) {
        if let Ok(p) = Params::from_json(body.to_string().as_bytes()) {
            let _ = decode_action(action, &p);
        }
    }

    #[test]
    fn decode_action_never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..512), action in prop::sample::select(ACTIONS)) {
        if let Ok(p) = Params::from_json(&body) {
            let _ = decode_action(action, &p);
        }
        if let Ok(pairs) = tcapi::params::parse_form(&body) {
            if let Ok(p) = Params::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
                let _ = decode_action(action, &p);
            }
        }
    }

    #[test]
    fn decode_action_never_panics_on_flat_keys(
        pairs in proptest::collection::vec((flat_key(), "[a-zA-Z0-9 ]{0,6}"), 0..12),
        action in prop::sample::select(ACTIONS),
    ) {
        if let Ok(p) = Params::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            let _ = decode_action(action, &p);
        }
    }
}

/// Apply `edit` to the bytes that carry the parameters (body, else query).
/// Returns false when the edited query is not UTF-8: a `&str` cannot hold it,
/// and the HTTP layer never passes one.
fn edit_carrier(r: &mut Req, edit: impl FnOnce(&mut Vec<u8>)) -> bool {
    if !r.body.is_empty() {
        edit(&mut r.body);
        return true;
    }
    let mut bytes = std::mem::take(&mut r.query).into_bytes();
    edit(&mut bytes);
    match String::from_utf8(bytes) {
        Ok(q) => {
            r.query = q;
            true
        }
        Err(_) => false,
    }
}

fn same_pairs(r: &Req, originals: &[(&str, Req)], name: &str) -> bool {
    let Some((_, orig)) = originals.iter().find(|(n, _)| *n == name) else {
        return false;
    };
    let a = if r.body.is_empty() {
        r.query.as_bytes()
    } else {
        &r.body[..]
    };
    let b = if orig.body.is_empty() {
        orig.query.as_bytes()
    } else {
        &orig.body[..]
    };
    let (Ok(mut pa), Ok(mut pb)) = (tcapi::params::parse_form(a), tcapi::params::parse_form(b))
    else {
        return false;
    };
    pa.sort();
    pb.sort();
    pa == pb
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "Host",
            "Content-Type",
            "Authorization",
            "X-TC-Action",
            "X-TC-Version",
            "X-TC-Timestamp",
            "X-TC-Region",
            "X-TC-Language",
            "X-TC-Token",
            "X-TC-Content-SHA256",
            "content-type",
            "host",
        ])
        .prop_map(str::to_string),
        "[A-Za-z-]{1,12}",
    ]
}

fn flat_key() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "ImageIds",
                "Filters",
                "Name",
                "Values",
                "TagSpecification",
                "Tags",
                "Key",
                "Value",
                "ResourceType",
                "ImportImageDataDiskList",
                "ImageUrl",
                "Limit",
                "0",
                "1",
                "2",
                "",
                "01",
                "99999999999999999999",
            ])
            .prop_map(str::to_string),
            "[0-9]{1,3}",
        ],
        1..7,
    )
    .prop_map(|segs| segs.join("."))
}

fn arbitrary_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Json::String),
    ];
    let names = prop::sample::select(vec![
        "ImageIds",
        "Filters",
        "Name",
        "Values",
        "TagSpecification",
        "Tags",
        "Key",
        "Value",
        "ResourceType",
        "ImportImageDataDiskList",
        "ImageUrl",
        "Limit",
        "Offset",
        "DryRun",
        "ImageId",
        "Architecture",
        "OsType",
        "OsVersion",
        "ImageName",
        "Other",
    ]);
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            proptest::collection::btree_map(names.clone(), inner, 0..6).prop_map(|m| Json::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

/// A valid request body for a random action, in JSON form.
fn action_json() -> impl Strategy<Value = (&'static str, Json)> {
    let opt_text = || proptest::option::of(text());
    let opt_bool = || proptest::option::of(any::<bool>());
    let tags = proptest::collection::vec(
        (text(), proptest::collection::vec((text(), text()), 0..3)),
        0..3,
    );
    let import = (
        (text(), text(), text(), text(), text()),
        (opt_text(), opt_bool(), opt_bool(), opt_text(), opt_text(), opt_text()),
        tags,
        proptest::collection::vec(text(), 0..3),
    )
        .prop_map(|((a, t, v, u, n), (d, dry, force, lic, boot, fam), tags, disks)| {
            let mut o = json!({"Architecture": a, "OsType": t, "OsVersion": v, "ImageUrl": u, "ImageName": n});
            set(&mut o, "ImageDescription", d.map(Json::String));
            set(&mut o, "DryRun", dry.map(Json::Bool));
            set(&mut o, "Force", force.map(Json::Bool));
            set(&mut o, "LicenseType", lic.map(Json::String));
            set(&mut o, "BootMode", boot.map(Json::String));
            set(&mut o, "ImageFamily", fam.map(Json::String));
            if !tags.is_empty() {
                o["TagSpecification"] = Json::Array(
                    tags.into_iter()
                        .map(|(rt, kv)| {
                            let mut s = json!({"ResourceType": rt});
                            if !kv.is_empty() {
                                s["Tags"] = kv.into_iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect();
                            }
                            s
                        })
                        .collect(),
                );
            }
            if !disks.is_empty() {
                o["ImportImageDataDiskList"] = disks.into_iter().map(|u| json!({"ImageUrl": u})).collect();
            }
            ("ImportImage", o)
        });
    let describe = (
        proptest::collection::vec(text(), 0..4),
        proptest::collection::vec((text(), proptest::collection::vec(text(), 1..4)), 0..3),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i64>()),
        opt_text(),
    )
        .prop_map(|(ids, filters, off, lim, it)| {
            let mut o = json!({});
            if !ids.is_empty() {
                o["ImageIds"] = json!(ids);
            }
            if !filters.is_empty() {
                o["Filters"] = filters
                    .into_iter()
                    .map(|(n, v)| json!({"Name": n, "Values": v}))
                    .collect();
            }
            set(&mut o, "Offset", off.map(|n| json!(n)));
            set(&mut o, "Limit", lim.map(|n| json!(n)));
            set(&mut o, "InstanceType", it.map(Json::String));
            ("DescribeImages", o)
        });
    let delete = (
        proptest::collection::vec(text(), 1..4),
        opt_bool(),
        opt_bool(),
    )
        .prop_map(|(ids, s, d)| {
            let mut o = json!({"ImageIds": ids});
            set(&mut o, "DeleteBindedSnap", s.map(Json::Bool));
            set(&mut o, "DryRun", d.map(Json::Bool));
            ("DeleteImages", o)
        });
    let modify =
        (text(), opt_text(), opt_text(), opt_text(), opt_bool()).prop_map(|(id, n, d, f, dep)| {
            let mut o = json!({"ImageId": id});
            set(&mut o, "ImageName", n.map(Json::String));
            set(&mut o, "ImageDescription", d.map(Json::String));
            set(&mut o, "ImageFamily", f.map(Json::String));
            set(&mut o, "ImageDeprecated", dep.map(Json::Bool));
            ("ModifyImageAttribute", o)
        });
    let tasks = (
        proptest::collection::vec(text(), 0..3),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(ids, lim)| {
            let mut o = json!({});
            if !ids.is_empty() {
                o["ImageIds"] = json!(ids);
            }
            set(&mut o, "Limit", lim.map(|n| json!(n)));
            ("DescribeImportImageTasks", o)
        });
    let cancel = text().prop_map(|id| ("CancelImportImageTask", json!({"ImageId": id})));
    prop_oneof![
        import,
        describe,
        delete,
        modify,
        tasks,
        cancel,
        Just(("DescribeImageQuota", json!({}))),
        Just(("DescribeImportImageOs", json!({}))),
    ]
}

fn set(o: &mut Json, k: &str, v: Option<Json>) {
    if let Some(v) = v {
        o[k] = v;
    }
}
