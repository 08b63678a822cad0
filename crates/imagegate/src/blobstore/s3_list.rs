//! ListMultipartUploads, which object_store has no call for: one GET
//! signed with AWS SigV4 (HMAC from the `hmac` crate) on the blob store's
//! path-style endpoint.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::BlobError;
use crate::s3::S3Endpoint;

/// ListMultipartUploads on a path-style endpoint, signed with AWS SigV4
/// (object_store has no call for it). One page: up to 1,000 uploads per
/// prefix, far more than the uploads one job or one reaper pass can leave.
/// Also used by the export target (`export::target`) on its own endpoint.
pub(crate) struct UploadLister {
    http: reqwest::Client,
    /// `scheme://host[:port]`, no trailing slash.
    base: String,
    host: String,
    bucket: String,
    region: String,
    access_key: String,
    secret_key: String,
}

impl UploadLister {
    /// A lister of `bucket` on `service` (path-style), signed with its keys.
    pub(crate) fn new(
        service: &S3Endpoint,
        bucket: &str,
        ak: &str,
        sk: &str,
    ) -> Result<Self, BlobError> {
        let region = service.region.clone();
        let endpoint = service
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let url = reqwest::Url::parse(&endpoint)
            .map_err(|e| BlobError::Config(format!("blobs.endpoint {endpoint:?}: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => {
                return Err(BlobError::Config(format!(
                    "blobs.endpoint {endpoint:?} has no host"
                )))
            }
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| BlobError::Config(format!("S3 client: {e}")))?;
        Ok(UploadLister {
            http,
            base: format!("{}://{host}", url.scheme()),
            host,
            bucket: bucket.to_string(),
            region,
            access_key: ak.to_string(),
            secret_key: sk.to_string(),
        })
    }

    /// `(key, upload id)` of the incomplete uploads whose key starts with `prefix`.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, BlobError> {
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let day = &amz_date[..8];
        let path = format!("/{}/", sigv4_encode(&self.bucket));
        let query = format!("prefix={}&uploads=", sigv4_encode(prefix));
        let payload = hex::encode(Sha256::digest(b""));
        let signed_headers = "host;x-amz-content-sha256;x-amz-date";
        let canonical = format!(
            "GET\n{path}\n{query}\nhost:{}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{payload}",
            self.host
        );
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac_sha256(
            format!("AWS4{}", self.secret_key).as_bytes(),
            day.as_bytes(),
        );
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac_sha256(&key, to_sign.as_bytes()));
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        );
        let resp = self
            .http
            .get(format!("{}{path}?{query}", self.base))
            .header("x-amz-date", &amz_date)
            .header("x-amz-content-sha256", &payload)
            .header("authorization", auth)
            .send()
            .await
            .map_err(no_answer)?;
        let status = resp.status();
        let body = resp.text().await.map_err(no_answer)?;
        if !status.is_success() {
            return Err(BlobError::Listing {
                status: Some(status.as_u16()),
                message: format!(
                    "HTTP {status}: {}",
                    body.chars().take(300).collect::<String>()
                ),
            });
        }
        Ok(parse_uploads(&body))
    }
}

/// A request that got no (whole) answer: refused, reset, timed out.
fn no_answer(e: reqwest::Error) -> BlobError {
    BlobError::Listing {
        status: None,
        message: e.to_string(),
    }
}

/// SigV4 URI encoding: everything but unreserved characters, `/` included.
fn sigv4_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// `(Key, UploadId)` pairs of a ListMultipartUploadsResult document.
fn parse_uploads(xml: &str) -> Vec<(String, String)> {
    fn field<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
        let open = format!("<{tag}>");
        let start = s.find(&open)? + open.len();
        let end = s[start..].find(&format!("</{tag}>"))? + start;
        Some(&s[start..end])
    }
    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    }
    xml.split("<Upload>")
        .skip(1)
        .filter_map(|u| {
            let u = u.split("</Upload>").next()?;
            Some((unescape(field(u, "Key")?), unescape(field(u, "UploadId")?)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigv4_hmac_matches_rfc_4231() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn upload_listing_is_parsed() {
        let xml = "<ListMultipartUploadsResult><Bucket>b</Bucket><Upload><Key>p/img-a&amp;1.qcow2</Key>\
                   <UploadId>u1</UploadId></Upload><Upload><Key>p/img-b.qcow2</Key><UploadId>u2</UploadId>\
                   </Upload></ListMultipartUploadsResult>";
        assert_eq!(
            parse_uploads(xml),
            vec![
                ("p/img-a&1.qcow2".to_string(), "u1".to_string()),
                ("p/img-b.qcow2".to_string(), "u2".to_string())
            ]
        );
        assert_eq!(sigv4_encode("blobs/img-1 x"), "blobs%2Fimg-1%20x");
    }
}
