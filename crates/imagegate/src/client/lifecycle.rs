//! `imagegate images share | unshare | shares | sync`: sharing an image
//! with other accounts (ModifyImageSharePermission,
//! DescribeImageSharePermission) and copying it to other regions or into
//! one's own account (SyncImages).

use serde_json::{json, Value};

use super::api::ApiClient;
use super::render::field;
use super::{pretty, request_id, Display, Failure, Io, EXIT_OK};

#[derive(clap::Args, Debug, Clone)]
pub struct ShareArgs {
    /// Image ID (img-…).
    pub id: String,
    /// Main-account ids (uin) to share with, or to stop sharing with.
    #[arg(required = true, value_name = "ACCOUNT_ID")]
    pub accounts: Vec<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SyncArgs {
    /// Image ID (img-…).
    pub id: String,
    /// Destination regions (for an image shared with you: your own region).
    #[arg(long = "to", required = true, value_name = "REGION")]
    pub regions: Vec<String>,
    /// Name of the copies [default: the source's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Only check that the copy would be allowed.
    #[arg(long)]
    pub dry_run: bool,
}

/// SHARE (`share == true`) or CANCEL.
pub(super) async fn share(
    client: &ApiClient,
    a: &ShareArgs,
    share: bool,
    io: &mut Io<'_>,
) -> Result<i32, Failure> {
    let permission = if share { "SHARE" } else { "CANCEL" };
    let resp = client
        .call(
            "ModifyImageSharePermission",
            &json!({ "ImageId": a.id, "AccountIds": a.accounts, "Permission": permission }),
        )
        .await?;
    if io.display == Display::Json {
        writeln!(io.out, "{}", pretty(&resp))?;
        return Ok(EXIT_OK);
    }
    let verb = if share { "Shared" } else { "Stopped sharing" };
    writeln!(
        io.out,
        "{verb} {} with {} (RequestId {})",
        a.id,
        a.accounts.join(", "),
        request_id(&resp)
    )?;
    Ok(EXIT_OK)
}

/// The accounts an image is shared with, one per line: `<account>  <since>`.
pub(super) async fn shares(client: &ApiClient, id: &str, io: &mut Io<'_>) -> Result<i32, Failure> {
    let resp = client
        .call("DescribeImageSharePermission", &json!({ "ImageId": id }))
        .await?;
    if io.display == Display::Json {
        writeln!(io.out, "{}", pretty(&resp))?;
        return Ok(EXIT_OK);
    }
    let set = resp
        .get("SharePermissionSet")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if set.is_empty() {
        writeln!(io.out, "{id} is not shared")?;
        return Ok(EXIT_OK);
    }
    writeln!(io.out, "{:<20} SHARED SINCE", "ACCOUNT")?;
    for s in &set {
        writeln!(
            io.out,
            "{:<20} {}",
            field(s, "AccountId"),
            field(s, "CreatedTime")
        )?;
    }
    Ok(EXIT_OK)
}

/// SyncImages with the new ids printed, one `<region>  <image id>` a line.
pub(super) async fn sync(
    client: &ApiClient,
    a: &SyncArgs,
    io: &mut Io<'_>,
) -> Result<i32, Failure> {
    let mut params = json!({
        "ImageIds": [a.id],
        "DestinationRegions": a.regions,
        "ImageSetRequired": true,
    });
    if let Some(name) = &a.name {
        params["ImageName"] = json!(name);
    }
    if a.dry_run {
        params["DryRun"] = json!(true);
    }
    let resp = client.call("SyncImages", &params).await?;
    if io.display == Display::Json {
        writeln!(io.out, "{}", pretty(&resp))?;
        return Ok(EXIT_OK);
    }
    if a.dry_run {
        writeln!(
            io.out,
            "Would copy {} to {} (RequestId {})",
            a.id,
            a.regions.join(", "),
            request_id(&resp)
        )?;
        return Ok(EXIT_OK);
    }
    writeln!(io.out, "Copied {} (RequestId {}):", a.id, request_id(&resp))?;
    for copy in resp
        .get("ImageSet")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        writeln!(
            io.out,
            "  {:<16} {}",
            field(copy, "Region"),
            field(copy, "ImageId")
        )?;
    }
    Ok(EXIT_OK)
}
