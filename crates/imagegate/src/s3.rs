//! Every S3 client of the service is built here (object_store's
//! `AmazonS3`): the blob store (`[blobs]`) and the COS stand-in
//! (`source.cos_endpoint`), which imports read from and exports write to.
//!
//! One place decides what all of them share: path-style addressing (one
//! endpoint, the bucket in the path, as moto, MinIO and Ceph serve it),
//! plain HTTP only for an `http://` endpoint, and how requests are signed.
//! What differs between the uses is how a failure is retried and timed out
//! ([`Tuning`]). The secret key never reaches a log: [`Credentials`]'
//! `Debug` leaves it out.

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::config::{BlobConfig, SourceConfig};

/// The region requests are signed for when the configuration names none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// How requests are signed.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Static keys: (access key, secret key).
    Keys(String, String),
    /// Unsigned requests: a public bucket (a COS stand-in without keys).
    Anonymous,
    /// object_store's own chain (the environment, the instance's role): a
    /// blob store on AWS itself needs no keys in the file.
    Ambient,
}

/// Where an S3 service is and how to sign for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Endpoint {
    /// `http(s)://host:port`; `None`: AWS's own endpoints.
    pub endpoint: Option<String>,
    pub region: String,
    pub credentials: Credentials,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Keys(access, _) => write!(f, "Keys({access}, <secret not shown>)"),
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Ambient => f.write_str("Ambient"),
        }
    }
}

/// How one use of S3 retries and times out.
#[derive(Debug, Clone)]
pub enum Tuning {
    /// One try per call: the caller retries, signing each try afresh (the
    /// blob store waits out outages itself, `blobs.retry_deadline_secs`).
    CallerRetries,
    /// A download that may take hours: no whole-request timeout, a read
    /// timeout instead, and object_store's backoff between tries.
    Download {
        stall: Duration,
        connect: Duration,
        backoff_initial: Duration,
        backoff_max: Duration,
        max_retries: usize,
    },
    /// Export uploads: object_store's retries (each part, the completion),
    /// with a whole-request timeout of [`UPLOAD_REQUEST_TIMEOUT`] instead of
    /// its 30 s. A store may take minutes to assemble a large object before
    /// it answers the completion (S3 documents it; moto_server took over
    /// 30 s for 4 GiB), and a completion timed out and retried finds no
    /// upload.
    Upload,
}

/// The longest one request of an export upload may take.
pub const UPLOAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

fn keys(access: &Option<String>, secret: &Option<String>, otherwise: Credentials) -> Credentials {
    match (access, secret) {
        (Some(a), Some(s)) => Credentials::Keys(a.clone(), s.clone()),
        _ => otherwise,
    }
}

impl S3Endpoint {
    /// The blob store's S3 service (`blobs.endpoint`, `region`, keys).
    pub fn for_blobs(cfg: &BlobConfig) -> S3Endpoint {
        S3Endpoint {
            endpoint: cfg.endpoint.clone(),
            region: cfg.region.clone().unwrap_or_else(|| DEFAULT_REGION.into()),
            credentials: keys(&cfg.access_key, &cfg.secret_key, Credentials::Ambient),
        }
    }

    /// The COS stand-in (`source.cos_endpoint`), if one is configured.
    pub fn for_cos(cfg: &SourceConfig) -> Option<S3Endpoint> {
        Some(S3Endpoint {
            endpoint: Some(cfg.cos_endpoint.clone()?),
            region: cfg
                .cos_region
                .clone()
                .unwrap_or_else(|| DEFAULT_REGION.into()),
            credentials: keys(
                &cfg.cos_access_key,
                &cfg.cos_secret_key,
                Credentials::Anonymous,
            ),
        })
    }

    /// A client of `bucket` on this service.
    pub fn client(&self, bucket: &str, tuning: &Tuning) -> Result<AmazonS3, object_store::Error> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region);
        if let Some(endpoint) = &self.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        b = match &self.credentials {
            Credentials::Keys(a, s) => b.with_access_key_id(a).with_secret_access_key(s),
            Credentials::Anonymous => b.with_skip_signature(true),
            Credentials::Ambient => b,
        };
        b = match tuning {
            Tuning::CallerRetries => b.with_retry(RetryConfig {
                max_retries: 0,
                ..Default::default()
            }),
            Tuning::Download {
                stall,
                connect,
                backoff_initial,
                backoff_max,
                max_retries,
            } => b
                .with_client_options(
                    ClientOptions::new()
                        .with_allow_http(self.is_plain_http())
                        .with_timeout_disabled()
                        .with_read_timeout(*stall)
                        .with_connect_timeout(*connect),
                )
                .with_retry(RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: *backoff_initial,
                        max_backoff: *backoff_max,
                        base: 2.0,
                    },
                    max_retries: *max_retries,
                    retry_timeout: *stall * 2,
                }),
            Tuning::Upload => b.with_client_options(
                ClientOptions::new()
                    .with_allow_http(self.is_plain_http())
                    .with_timeout(UPLOAD_REQUEST_TIMEOUT),
            ),
        };
        b.build()
    }

    fn is_plain_http(&self) -> bool {
        self.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let e = S3Endpoint {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: DEFAULT_REGION.into(),
            credentials: Credentials::Keys("AKID".into(), "very-secret".into()),
        };
        let shown = format!("{e:?}");
        assert!(
            shown.contains("AKID") && !shown.contains("very-secret"),
            "{shown}"
        );
    }

    #[test]
    fn the_cos_stand_in_is_anonymous_without_keys_and_the_blob_store_ambient() {
        let mut source = SourceConfig::default();
        assert_eq!(S3Endpoint::for_cos(&source), None);
        source.cos_endpoint = Some("http://127.0.0.1:9".into());
        let cos = S3Endpoint::for_cos(&source).unwrap();
        assert_eq!(cos.credentials, Credentials::Anonymous);
        assert_eq!(cos.region, DEFAULT_REGION);
        source.cos_access_key = Some("a".into());
        source.cos_secret_key = Some("s".into());
        let cos = S3Endpoint::for_cos(&source).unwrap();
        assert_eq!(cos.credentials, Credentials::Keys("a".into(), "s".into()));
        let blobs = S3Endpoint::for_blobs(&BlobConfig::default());
        assert_eq!(blobs.credentials, Credentials::Ambient);
        assert_eq!(blobs.endpoint, None);
    }

    #[test]
    fn every_tuning_builds_a_client() {
        let e = S3Endpoint {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: DEFAULT_REGION.into(),
            credentials: Credentials::Anonymous,
        };
        let download = Tuning::Download {
            stall: Duration::from_secs(30),
            connect: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_retries: 3,
        };
        for t in [Tuning::CallerRetries, download, Tuning::Upload] {
            e.client("bucket-1250000000", &t).unwrap();
        }
    }
}
