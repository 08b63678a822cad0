//! A signed TC3 client for the benchmarks, using the project's own tcapi.

use anyhow::{bail, Context};
use serde_json::Value;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    host: String,
    secret_id: String,
    secret_key: String,
}

impl Client {
    pub fn new(addr: &str, secret_id: &str, secret_key: &str) -> Client {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .build()
            .expect("reqwest client");
        Client {
            http,
            url: format!("http://{addr}/"),
            host: addr.to_string(),
            secret_id: secret_id.into(),
            secret_key: secret_key.into(),
        }
    }

    /// The same connections, signing as another account.
    pub fn as_account(&self, secret_id: &str, secret_key: &str) -> Client {
        Client {
            secret_id: secret_id.into(),
            secret_key: secret_key.into(),
            ..self.clone()
        }
    }

    /// Calls an action; `Ok(None)` on success, `Ok(Some(code))` for a
    /// Tencent error (a refusal is a measured outcome, not a failure).
    pub async fn call_code(&self, action: &str, params: &Value) -> anyhow::Result<Option<String>> {
        let body = self.send(action, params).await?;
        let v: Envelope = serde_json::from_slice(&body).context("response JSON")?;
        match (v.response.error, v.response.request_id) {
            (None, Some(_)) => Ok(None),
            (Some(e), _) => Ok(Some(
                e.get("Code")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
            )),
            (None, None) => bail!("{action}: reply without RequestId"),
        }
    }

    /// Call an action; returns `Response` or the Tencent error as an error.
    pub async fn call(&self, action: &str, params: &Value) -> anyhow::Result<Value> {
        let body = self.send(action, params).await?;
        let v: Value = serde_json::from_slice(&body).context("response JSON")?;
        let r = v.get("Response").cloned().unwrap_or(Value::Null);
        if let Some(e) = r.get("Error") {
            bail!("{action} failed: {e}");
        }
        Ok(r)
    }

    /// Call an action and only check that it succeeded: the load loops use
    /// this, so that the load generator (sharing the cores with the server)
    /// spends as little as it can per reply.
    pub async fn call_ok(&self, action: &str, params: &Value) -> anyhow::Result<()> {
        let body = self.send(action, params).await?;
        let v: Envelope = serde_json::from_slice(&body).context("response JSON")?;
        match (v.response.error, v.response.request_id) {
            (None, Some(_)) => Ok(()),
            (Some(e), _) => bail!("{action} failed: {e}"),
            (None, None) => bail!("{action}: reply without RequestId"),
        }
    }

    /// Sends a signed TC3 request; returns the reply body.
    async fn send(&self, action: &str, params: &Value) -> anyhow::Result<bytes::Bytes> {
        let body = serde_json::to_vec(params)?;
        let ts = chrono_now();
        // Action and region signed too (as the console does): the server binds
        // a signature to what it was accepted for, and a Describe and a
        // Delete of the same body in one second must not share one.
        let auth = tcapi::sign_tc3(
            &self.secret_id,
            &self.secret_key,
            &tcapi::Tc3Request {
                host: &self.host,
                content_type: "application/json",
                payload: &body,
                raw_query: "",
                method: "POST",
                timestamp: ts,
                service: "cvm",
                extra_signed: &[("x-tc-action", action), ("x-tc-region", "ap-guangzhou")],
            },
        );
        let resp = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Authorization", auth)
            .header("X-TC-Action", action)
            .header("X-TC-Version", "2017-03-12")
            .header("X-TC-Region", "ap-guangzhou")
            .header("X-TC-Timestamp", ts.to_string())
            .body(body)
            .send()
            .await
            .context("request")?;
        resp.bytes().await.context("response body")
    }
}

/// Just enough of a reply to tell success from failure.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "Response")]
    response: EnvelopeInner,
}

#[derive(serde::Deserialize)]
struct EnvelopeInner {
    #[serde(rename = "Error")]
    error: Option<serde_json::Value>,
    #[serde(rename = "RequestId")]
    request_id: Option<serde::de::IgnoredAny>,
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
