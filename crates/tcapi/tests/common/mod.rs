//! Builders for signed requests, shared by the integration tests. They sign
//! with the crate's client half, whose output the vector tests pin.
#![allow(dead_code)]

use tcapi::*;

pub const ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
pub const KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
pub const TS: i64 = 1_700_000_000;
pub const HOST: &str = "http://127.0.0.1:18083";

/// An owned request; `with` lends it out as a [`RawRequest`].
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn with<R>(&self, f: impl FnOnce(&RawRequest) -> R) -> R {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let raw = RawRequest {
            method: &self.method,
            raw_query: &self.query,
            headers: &headers,
            body: &self.body,
        };
        f(&raw)
    }

    /// decode + verify(KEY, TS) + decode_action; the first error's code.
    pub fn run(&self) -> Result<ActionRequest, ApiError> {
        self.run_at(KEY, TS)
    }

    pub fn run_at(&self, key: &str, now: i64) -> Result<ActionRequest, ApiError> {
        self.with(|raw| {
            let req = decode(raw).map_err(|e| e.0)?;
            req.verify(raw, key, now)?;
            decode_action(&req.action, &req.params)
        })
    }

    pub fn decode(&self) -> Result<SignedRequest, (ApiError, Language)> {
        self.with(decode)
    }

    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
    }

    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// Re-sign a TC3 request after its parts were changed on purpose.
    pub fn resign_tc3(&mut self) {
        let host = header(&self.headers, "host").unwrap_or_default();
        let ct = header(&self.headers, "content-type").unwrap_or_default();
        let ts: i64 = header(&self.headers, "x-tc-timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or(TS);
        let authz = sign_tc3(
            ID,
            KEY,
            &Tc3Request {
                host: &host,
                content_type: &ct,
                payload: &self.body,
                raw_query: &self.query,
                method: &self.method,
                timestamp: ts,
                service: "cvm",
                extra_signed: &[],
            },
        );
        self.set_header("Authorization", &authz);
    }
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

fn tc3_headers(action: &str, ct: &str, ts: i64) -> Vec<(String, String)> {
    vec![
        ("Host".into(), HOST.into()),
        ("Content-Type".into(), ct.into()),
        ("X-TC-Action".into(), action.into()),
        ("X-TC-Version".into(), "2017-03-12".into()),
        ("X-TC-Timestamp".into(), ts.to_string()),
        ("X-TC-Region".into(), "ap-guangzhou".into()),
        ("X-TC-Language".into(), "en-US".into()),
    ]
}

/// TC3 POST with a JSON body, as tccli sends it.
pub fn tc3_json(action: &str, body: &str) -> Req {
    let mut r = Req {
        method: "POST".into(),
        query: String::new(),
        headers: tc3_headers(action, "application/json", TS),
        body: body.as_bytes().to_vec(),
    };
    r.resign_tc3();
    r
}

/// TC3 GET with the parameters in the query.
pub fn tc3_get(action: &str, query: &str) -> Req {
    let mut r = Req {
        method: "GET".into(),
        query: query.into(),
        headers: tc3_headers(action, "application/x-www-form-urlencoded", TS),
        body: Vec::new(),
    };
    r.resign_tc3();
    r
}

/// TC3 POST with the parameters in a form body.
pub fn tc3_form(action: &str, body: &str) -> Req {
    let mut r = Req {
        method: "POST".into(),
        query: String::new(),
        headers: tc3_headers(action, "application/x-www-form-urlencoded", TS),
        body: body.as_bytes().to_vec(),
    };
    r.resign_tc3();
    r
}

/// The legacy common parameters, followed by the action's own.
pub fn v1_params(
    action: &str,
    method: SignatureMethod,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = vec![
        ("Action".into(), action.into()),
        ("Version".into(), "2017-03-12".into()),
        ("Region".into(), "ap-guangzhou".into()),
        ("Timestamp".into(), TS.to_string()),
        ("Nonce".into(), "4242".into()),
        ("SecretId".into(), ID.into()),
        ("Language".into(), "en-US".into()),
        ("RequestClient".into(), "SDK_PYTHON_3.1.195".into()),
    ];
    if method == SignatureMethod::HmacSha256 {
        p.push(("SignatureMethod".into(), "HmacSHA256".into()));
    }
    p.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    p
}

/// Legacy-signed GET (`post` false) or form POST (`post` true).
pub fn v1(post: bool, method: SignatureMethod, mut params: Vec<(String, String)>) -> Req {
    let http = if post { "POST" } else { "GET" };
    let sig = sign_v1(http, HOST, "/", &params, KEY, method);
    params.push(("Signature".into(), sig));
    let encoded = form_urlencode(&params);
    let mut headers = vec![("Host".to_string(), HOST.to_string())];
    if post {
        headers.push((
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
        Req {
            method: http.into(),
            query: String::new(),
            headers,
            body: encoded.into_bytes(),
        }
    } else {
        Req {
            method: http.into(),
            query: encoded,
            headers,
            body: Vec::new(),
        }
    }
}

pub fn code(r: Result<ActionRequest, ApiError>) -> String {
    match r {
        Ok(a) => format!("Ok({})", a.action_name()),
        Err(e) => e.code.to_string(),
    }
}
