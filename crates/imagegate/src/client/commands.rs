//! One function per `images` subcommand. Each prints text, or with
//! `--json` ([`Display::Json`]) the API's reply as JSON only.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::api::{ApiClient, CallError};
use super::render::{self, field};
use super::{export, lifecycle, request_id};
use super::{
    pretty, print_error, watch, Display, Failure, ImagesCommand, ImportArgs, Io, ListArgs,
};
use super::{EXIT_FAILED, EXIT_OK};

pub(super) async fn run(
    client: &ApiClient,
    cmd: ImagesCommand,
    io: &mut Io<'_>,
) -> Result<i32, Failure> {
    match cmd {
        ImagesCommand::Import(a) => import(client, a, io).await,
        ImagesCommand::List(a) => list(client, a, io).await,
        ImagesCommand::Show { id } => show(client, &id, io).await,
        ImagesCommand::Delete { ids, dry_run } => delete(client, &ids, dry_run, io).await,
        ImagesCommand::Cancel { id } => cancel(client, &id, io).await,
        ImagesCommand::Share(a) => lifecycle::share(client, &a, true, io).await,
        ImagesCommand::Unshare(a) => lifecycle::share(client, &a, false, io).await,
        ImagesCommand::Shares { id } => lifecycle::shares(client, &id, io).await,
        ImagesCommand::Sync(a) => lifecycle::sync(client, &a, io).await,
        ImagesCommand::Export(a) => match export::export(client, a, io).await {
            Ok(code) => Ok(code),
            Err(export::CallOrIo::Call(e)) => Err(Failure::Call(e)),
            Err(export::CallOrIo::Io(e)) => Err(Failure::Io(e)),
        },
        ImagesCommand::Watch { id, interval } => Ok(watch::watch(client, &id, interval, io).await?),
        ImagesCommand::Os => os(client, io).await,
        ImagesCommand::Quota => quota(client, io).await,
    }
}

async fn import(client: &ApiClient, a: ImportArgs, io: &mut Io<'_>) -> Result<i32, Failure> {
    let params = import_params(&a);
    let resp = client.call("ImportImage", &params).await?;
    let as_json = io.display == Display::Json;
    // With --wait, the one JSON document is the watch's, at the end.
    if as_json && !a.wait {
        writeln!(io.out, "{}", pretty(&resp))?;
    }
    if a.dry_run {
        if as_json && a.wait {
            writeln!(io.out, "{}", pretty(&resp))?;
        } else if !as_json {
            writeln!(
                io.out,
                "DryRun passed: the import would be accepted (RequestId {})",
                request_id(&resp)
            )?;
        }
        return Ok(EXIT_OK);
    }
    // Tencent's documented examples answer with the RequestId only; the
    // image is then found by its name, which is unique per region.
    let image_id = match resp.get("ImageId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => find_by_name(client, &a.name).await?.unwrap_or_default(),
    };
    if !as_json {
        if image_id.is_empty() {
            writeln!(
                io.out,
                "Import accepted (RequestId {}); the reply names no image yet.",
                request_id(&resp)
            )?;
        } else {
            writeln!(
                io.out,
                "Importing {image_id} \"{}\" (RequestId {})",
                a.name,
                request_id(&resp)
            )?;
        }
    }
    io.out.flush()?;
    if !a.wait {
        return Ok(EXIT_OK);
    }
    if image_id.is_empty() {
        let msg = format!("cannot --wait: the image `{}` is not listed", a.name);
        print_error(io, "InvalidImageId.NotFound", &msg, None)?;
        return Ok(EXIT_FAILED);
    }
    Ok(watch::watch(client, &image_id, a.interval, io).await?)
}

/// ImportImage's parameters from the command line's.
fn import_params(a: &ImportArgs) -> Value {
    let mut params = json!({
        "Architecture": a.arch,
        "OsType": a.os_type,
        "OsVersion": a.os_version,
        "ImageUrl": a.url,
        "ImageName": a.name,
    });
    let p = params.as_object_mut().expect("built as an object above");
    if let Some(d) = &a.description {
        p.insert("ImageDescription".into(), json!(d));
    }
    if a.force {
        p.insert("Force".into(), json!(true));
    }
    if a.dry_run {
        p.insert("DryRun".into(), json!(true));
    }
    if let Some(b) = &a.boot_mode {
        p.insert("BootMode".into(), json!(b));
    }
    if let Some(l) = &a.license_type {
        p.insert("LicenseType".into(), json!(l));
    }
    if let Some(f) = &a.family {
        p.insert("ImageFamily".into(), json!(f));
    }
    if !a.tags.is_empty() {
        let tags: Vec<Value> = a
            .tags
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect();
        p.insert(
            "TagSpecification".into(),
            json!([{"ResourceType": "image", "Tags": tags}]),
        );
    }
    if !a.data_disks.is_empty() {
        let disks: Vec<Value> = a
            .data_disks
            .iter()
            .map(|u| json!({"ImageUrl": u}))
            .collect();
        p.insert("ImportImageDataDiskList".into(), Value::Array(disks));
    }
    params
}

async fn find_by_name(client: &ApiClient, name: &str) -> Result<Option<String>, CallError> {
    let resp = client
        .call(
            "DescribeImages",
            &json!({"Filters": [{"Name": "image-name", "Values": [name]}], "Limit": 100}),
        )
        .await?;
    Ok(resp
        .get("ImageSet")
        .and_then(Value::as_array)
        .and_then(|set| set.iter().find(|i| field(i, "ImageName") == name))
        .map(|i| field(i, "ImageId").to_string()))
}

/// Import tasks of `ids` by ImageId; empty when the server has no tasks
/// (the real cloud) or refuses: the caller's view is still right without
/// them, only less detailed.
async fn tasks_of(
    client: &ApiClient,
    ids: &[String],
    io: &mut Io<'_>,
) -> std::io::Result<HashMap<String, Value>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(100) {
        match client
            .call(
                "DescribeImportImageTasks",
                &json!({"ImageIds": chunk, "Limit": 100}),
            )
            .await
        {
            Ok(resp) => {
                for t in resp
                    .get("ImportImageTaskSet")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    out.insert(field(t, "ImageId").to_string(), t.clone());
                }
            }
            Err(e) if e.code() == Some("InvalidAction") => break,
            Err(e) => {
                if io.display != Display::Json {
                    writeln!(io.err, "(import progress unavailable: {e})")?;
                }
                break;
            }
        }
    }
    Ok(out)
}

async fn list(client: &ApiClient, a: ListArgs, io: &mut Io<'_>) -> Result<i32, Failure> {
    let mut filters = vec![json!({"Name": "image-type", "Values": ["PRIVATE_IMAGE"]})];
    if let Some(n) = &a.name {
        filters.push(json!({"Name": "image-name", "Values": [n]}));
    }
    let want = a.limit as usize;
    let mut images: Vec<Value> = Vec::new();
    let mut total: u64;
    // The API pages by at most 100.
    loop {
        let page = (want - images.len()).min(100);
        let resp = client
            .call(
                "DescribeImages",
                &json!({"Filters": filters, "Offset": a.offset as usize + images.len(), "Limit": page}),
            )
            .await?;
        total = render::number(&resp, "TotalCount").unwrap_or(0);
        let set = resp
            .get("ImageSet")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let got = set.len();
        images.extend(set);
        if got == 0 || images.len() >= want || (a.offset as u64 + images.len() as u64) >= total {
            break;
        }
    }
    images.truncate(want);
    if io.display == Display::Json {
        writeln!(
            io.out,
            "{}",
            pretty(&json!({"TotalCount": total, "ImageSet": images}))
        )?;
        return Ok(EXIT_OK);
    }
    if images.is_empty() {
        writeln!(io.out, "No images.")?;
        return Ok(EXIT_OK);
    }
    let unfinished: Vec<String> = images
        .iter()
        .filter(|i| matches!(field(i, "ImageState"), "IMPORTING" | "IMPORTFAILED"))
        .map(|i| field(i, "ImageId").to_string())
        .collect();
    let tasks = if unfinished.is_empty() {
        HashMap::new()
    } else {
        tasks_of(client, &unfinished, io).await?
    };
    write!(io.out, "{}", render::images_table(&images, &tasks))?;
    if (images.len() as u64) < total {
        writeln!(
            io.out,
            "{} of {total} images shown (--offset/--limit for more).",
            images.len()
        )?;
    }
    Ok(EXIT_OK)
}

async fn show(client: &ApiClient, id: &str, io: &mut Io<'_>) -> Result<i32, Failure> {
    let resp = client
        .call("DescribeImages", &json!({"ImageIds": [id]}))
        .await?;
    let Some(image) = resp
        .get("ImageSet")
        .and_then(Value::as_array)
        .and_then(|s| s.iter().find(|i| field(i, "ImageId") == id))
        .cloned()
    else {
        print_error(
            io,
            "InvalidImageId.NotFound",
            &format!("{id}: no such image"),
            None,
        )?;
        return Ok(EXIT_FAILED);
    };
    let tasks = tasks_of(client, &[id.to_string()], io).await?;
    let task = tasks.get(id);
    if io.display == Display::Json {
        writeln!(
            io.out,
            "{}",
            pretty(&json!({"Image": image, "ImportTask": task}))
        )?;
    } else {
        write!(io.out, "{}", render::image_details(&image, task))?;
    }
    Ok(EXIT_OK)
}

async fn delete(
    client: &ApiClient,
    ids: &[String],
    dry_run: bool,
    io: &mut Io<'_>,
) -> Result<i32, Failure> {
    let mut params = json!({ "ImageIds": ids });
    if dry_run {
        params["DryRun"] = json!(true);
    }
    let resp = client.call("DeleteImages", &params).await?;
    if io.display == Display::Json {
        writeln!(io.out, "{}", pretty(&resp))?;
        return Ok(EXIT_OK);
    }
    let verb = if dry_run { "Would delete" } else { "Deleted" };
    writeln!(
        io.out,
        "{verb} {} (RequestId {})",
        ids.join(", "),
        request_id(&resp)
    )?;
    Ok(EXIT_OK)
}

async fn cancel(client: &ApiClient, id: &str, io: &mut Io<'_>) -> Result<i32, Failure> {
    let resp = client
        .call("CancelImportImageTask", &json!({ "ImageId": id }))
        .await?;
    if io.display == Display::Json {
        writeln!(io.out, "{}", pretty(&resp))?;
        return Ok(EXIT_OK);
    }
    writeln!(
        io.out,
        "Cancelling the import of {id} (RequestId {}); `imagegate images watch {id}` \
         follows it to the end",
        request_id(&resp)
    )?;
    Ok(EXIT_OK)
}

/// DescribeImportImageOs: one line per OS type with its versions and
/// architectures.
async fn os(client: &ApiClient, io: &mut Io<'_>) -> Result<i32, Failure> {
    let resp = client.call("DescribeImportImageOs", &json!({})).await?;
    if io.display == Display::Json {
        writeln!(io.out, "{}", pretty(&resp))?;
        return Ok(EXIT_OK);
    }
    write!(io.out, "{}", render::os_table(&resp))?;
    Ok(EXIT_OK)
}

/// DescribeImageQuota, with the images counted against it (DescribeImages'
/// TotalCount of the account's own images in the region).
async fn quota(client: &ApiClient, io: &mut Io<'_>) -> Result<i32, Failure> {
    let resp = client.call("DescribeImageQuota", &json!({})).await?;
    if io.display == Display::Json {
        writeln!(io.out, "{}", pretty(&resp))?;
        return Ok(EXIT_OK);
    }
    let quota = render::number(&resp, "ImageNumQuota");
    let used = client
        .call(
            "DescribeImages",
            &json!({"Filters": [{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}], "Limit": 1}),
        )
        .await?;
    let used = render::number(&used, "TotalCount").unwrap_or(0);
    let region = &client.settings().region;
    match quota {
        Some(q) => writeln!(io.out, "{used} of {q} images used in {region}")?,
        None => writeln!(
            io.out,
            "{used} images in {region}; the reply names no quota"
        )?,
    }
    Ok(EXIT_OK)
}
