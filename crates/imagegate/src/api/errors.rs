//! The service's Tencent error codes, each with an English and a Chinese
//! message that tell the caller what to fix. Codes are the reference's; the
//! wire protocol's own codes (signatures, decoding) live in tcapi.

use tcapi::ApiError;

fn e(code: &'static str, en: String, zh: String) -> ApiError {
    ApiError::new(code, en, zh)
}

pub fn unsupported_region(region: &str) -> ApiError {
    e(
        "UnsupportedRegion",
        format!("The region `{region}` is not supported by this endpoint."),
        format!("当前接入点不支持地域`{region}`。"),
    )
}

pub fn region_cannot_import(region: &str) -> ApiError {
    e(
        "RegionAbilityLimit.UnsupportedToImportImage",
        format!("The region `{region}` does not support importing images."),
        format!("地域`{region}`不支持导入镜像。"),
    )
}

pub fn request_limit_exceeded(action: &str, rate: u32) -> ApiError {
    e(
        "RequestLimitExceeded",
        format!("Your request rate for {action} exceeds the limit of {rate} requests per second. Please retry later."),
        format!("{action}接口请求频率超过限制（每秒{rate}次），请稍后重试。"),
    )
}

pub fn secret_id_not_found() -> ApiError {
    e(
        "AuthFailure.SecretIdNotFound",
        "The SecretId is not found, please ensure that your SecretId is correct.".into(),
        "SecretId不存在，请输入正确的密钥。".into(),
    )
}

pub fn signature_reused() -> ApiError {
    e(
        "AuthFailure.SignatureFailure",
        "The provided credentials could not be validated: this signature (or v1 Nonce) was already used for another request, action or region. Please sign each request anew.".into(),
        "请求签名验证失败：该签名（或v1的Nonce）已用于其他请求、接口或地域，请为每个请求重新签名。".into(),
    )
}

pub fn body_too_slow(secs: u64) -> ApiError {
    e(
        "InvalidRequest",
        format!("The request is invalid: its body did not arrive within {secs} s."),
        format!("请求不合法：请求包体未在{secs}秒内传完。"),
    )
}

pub fn token_failure() -> ApiError {
    e(
        "AuthFailure.TokenFailure",
        "Temporary credentials (Token) are not issued by this endpoint; sign with a permanent SecretId/SecretKey.".into(),
        "本服务不签发临时密钥（Token），请使用永久密钥签名。".into(),
    )
}

pub fn os_type_unsupported(os_type: &str) -> ApiError {
    e(
        "InvalidImageOsType.Unsupported",
        format!("The OsType `{os_type}` is not supported. Call DescribeImportImageOs for the supported types."),
        format!("不支持操作系统类型`{os_type}`，请通过DescribeImportImageOs查询支持的类型。"),
    )
}

pub fn os_version_unsupported(os_type: &str, version: &str) -> ApiError {
    e(
        "InvalidImageOsVersion.Unsupported",
        format!("The OsVersion `{version}` is not supported for {os_type}. Call DescribeImportImageOs for the supported versions."),
        format!("{os_type}不支持操作系统版本`{version}`，请通过DescribeImportImageOs查询支持的版本。"),
    )
}

pub fn invalid_architecture(arch: &str) -> ApiError {
    e(
        "InvalidParameterValue",
        format!("The Architecture `{arch}` is invalid; use x86_64, i386 or arm_64."),
        format!("Architecture参数值`{arch}`无效，取值为x86_64、i386或arm_64。"),
    )
}

pub fn architecture_unsupported_for_os(arch: &str, os_type: &str) -> ApiError {
    e(
        "InvalidParameterValue",
        format!("The Architecture `{arch}` is not supported for {os_type}. Call DescribeImportImageOs for the supported architectures."),
        format!("{os_type}不支持架构`{arch}`，请通过DescribeImportImageOs查询支持的架构。"),
    )
}

pub fn too_large(param: &str, max: usize, got: usize) -> ApiError {
    e(
        "InvalidParameterValue.TooLarge",
        format!(
            "The parameter `{param}` is too long: {got} characters, at most {max} are allowed."
        ),
        format!("参数`{param}`过长：{got}个字符，最多允许{max}个字符。"),
    )
}

pub fn invalid_license_type(v: &str) -> ApiError {
    e(
        "InvalidParameterValue.InvalidLicenseType",
        format!("The LicenseType `{v}` is invalid; use TencentCloud or BYOL."),
        format!("LicenseType参数值`{v}`无效，取值为TencentCloud或BYOL。"),
    )
}

pub fn invalid_boot_mode(v: &str) -> ApiError {
    e(
        "InvalidParameterValue.InvalidBootMode",
        format!("The BootMode `{v}` is invalid; use `Legacy BIOS` or `UEFI`."),
        format!("BootMode参数值`{v}`无效，取值为`Legacy BIOS`或`UEFI`。"),
    )
}

pub fn invalid_image_family(v: &str) -> ApiError {
    e(
        "InvalidParameterValue.InvalidImageFamily",
        format!("The ImageFamily `{v}` is invalid: it must be 1 to 60 characters of letters, digits, `-`, `_` or `.`, starting with a letter."),
        format!("ImageFamily参数值`{v}`无效：须为1至60个字母、数字、`-`、`_`或`.`，且以字母开头。"),
    )
}

pub fn invalid_parameter_value(en: String, zh: String) -> ApiError {
    e("InvalidParameterValue", en, zh)
}

pub fn invalid_parameter(en: String, zh: String) -> ApiError {
    e("InvalidParameter", en, zh)
}

pub fn tag_key_empty() -> ApiError {
    e(
        "InvalidParameterValue.TagKeyNotFound",
        "A tag Key must not be empty.".into(),
        "标签键不能为空。".into(),
    )
}

pub fn url_error(url_param: &str, reason: &str) -> ApiError {
    e(
        "InvalidParameter.InvalidParameterUrlError",
        format!("The `{url_param}` is invalid: {reason}."),
        format!("参数`{url_param}`的URL无效：{reason}。"),
    )
}

pub fn name_duplicate(name: &str) -> ApiError {
    e(
        "InvalidImageName.Duplicate",
        format!("An image named `{name}` already exists in this region."),
        format!("本地域已存在名为`{name}`的镜像。"),
    )
}

pub fn quota_exceeded(quota: u32) -> ApiError {
    e(
        "ImageQuotaLimitExceeded",
        format!("The image quota of this region ({quota}) is used up. Delete images you no longer need."),
        format!("本地域镜像配额（{quota}个）已用完，请删除不再需要的镜像。"),
    )
}

pub fn image_id_malformed(id: &str) -> ApiError {
    e(
        "InvalidImageId.Malformed",
        format!("The ImageId `{id}` is malformed: expected `img-` followed by 8 lower-case letters or digits."),
        format!("镜像ID`{id}`格式错误：应为`img-`加8位小写字母或数字。"),
    )
}

pub fn image_id_not_found(id: &str) -> ApiError {
    e(
        "InvalidImageId.NotFound",
        format!("The image `{id}` does not exist."),
        format!("镜像`{id}`不存在。"),
    )
}

pub fn image_id_incorrect_state(id: &str) -> ApiError {
    e(
        "InvalidImageId.IncorrectState",
        format!("The image `{id}` is in a state that does not allow this operation (for example, it is still importing)."),
        format!("镜像`{id}`当前状态不允许此操作（例如仍在导入中）。"),
    )
}

pub fn coexist_ids_filters() -> ApiError {
    e(
        "InvalidParameter.InvalidParameterCoexistImageIdsFilters",
        "ImageIds and Filters cannot be specified together.".into(),
        "ImageIds和Filters不能同时指定。".into(),
    )
}

pub fn invalid_filter(en: String, zh: String) -> ApiError {
    e("InvalidFilter", en, zh)
}

pub fn filter_value_limit(name: &str, max: usize) -> ApiError {
    e(
        "InvalidFilterValue.LimitExceeded",
        format!("The filter `{name}` has too many values; at most {max} are allowed."),
        format!("过滤条件`{name}`的值过多，最多允许{max}个。"),
    )
}

pub fn limit_exceeded(param: &str, max: usize) -> ApiError {
    e(
        "InvalidParameterValue.LimitExceeded",
        format!("The parameter `{param}` has too many values; at most {max} are allowed."),
        format!("参数`{param}`的取值个数超过上限{max}。"),
    )
}

pub fn not_implemented(action: &str) -> ApiError {
    e(
        "UnsupportedOperation",
        format!("{action} is not available on this server yet."),
        format!("本服务暂不支持{action}。"),
    )
}

pub fn internal(request_id: &str) -> ApiError {
    e(
        "InternalError",
        format!("An internal error occurred; the server log has the details under RequestId {request_id}."),
        format!("内部错误，详情见服务端日志（RequestId {request_id}）。"),
    )
}

/// The catalog's volume is full: the request changed nothing.
pub fn storage_full() -> ApiError {
    e(
        "ResourceInsufficient.StorageFull",
        "The service's storage is full, so nothing was changed. Try again later; the operator has to free or add space.".to_string(),
        "服务的存储空间已满，本次请求未做任何修改。请稍后重试；需由运维人员释放或增加空间。".to_string(),
    )
}

// --- Sharing and copying (issue 14). A recipient of a shared image gets one
// refusal per action it may not take; see `access`.

pub fn shared_image_modify_unsupported(id: &str) -> ApiError {
    e(
        "UnsupportedOperation.SharedImageModifyUnsupported",
        format!(
            "The image `{id}` is shared with you by another account; only its owner can modify it."
        ),
        format!("镜像`{id}`是其他账号共享给您的镜像，仅其所有者可以修改。"),
    )
}

pub fn image_id_is_shared(id: &str) -> ApiError {
    e(
        "InvalidParameterValue.InvalidImageIdIsShared",
        format!(
            "The image `{id}` is shared with you by another account and cannot be deleted by you."
        ),
        format!("镜像`{id}`是其他账号共享给您的镜像，您不能删除。"),
    )
}

pub fn shared_image_export_unsupported(id: &str) -> ApiError {
    e(
        "UnsupportedOperation.SharedImageExportUnsupported",
        format!("The image `{id}` is shared with you by another account; shared images cannot be exported."),
        format!("镜像`{id}`是其他账号共享给您的镜像，共享镜像不支持导出。"),
    )
}

pub fn image_not_belong_to_account(id: &str) -> ApiError {
    e(
        "UnauthorizedOperation.ImageNotBelongToAccount",
        format!("The image `{id}` does not belong to your account; only its owner can manage its sharing."),
        format!("镜像`{id}`不属于您的账号，仅其所有者可以管理共享。"),
    )
}

pub fn image_in_shared(id: &str) -> ApiError {
    e(
        "InvalidImageId.InShared",
        format!("The image `{id}` is shared with other accounts; cancel every share before deleting it."),
        format!("镜像`{id}`正在共享中，请先取消所有共享再删除。"),
    )
}

pub fn invalid_image_state(id: &str) -> ApiError {
    e(
        "InvalidParameterValue.InvalidImageState",
        format!("The image `{id}` is not NORMAL; only NORMAL images can be shared."),
        format!("镜像`{id}`状态不是NORMAL，仅NORMAL状态的镜像可以共享。"),
    )
}

pub fn account_is_yourself(uin: &str) -> ApiError {
    e(
        "FailedOperation.AccountIsYourSelf",
        format!("The account `{uin}` is your own; an image cannot be shared with its owner."),
        format!("账号`{uin}`是您自己的账号，不能将镜像共享给自己。"),
    )
}

pub fn account_not_found(uin: &str) -> ApiError {
    e(
        "InvalidAccountId.NotFound",
        format!("The account `{uin}` does not exist (AccountIds are main-account ids)."),
        format!("账号`{uin}`不存在（AccountIds须为主账号ID）。"),
    )
}

pub fn account_already_exists(uin: &str) -> ApiError {
    e(
        "FailedOperation.AccountAlreadyExists",
        format!("The image is already shared with the account `{uin}`."),
        format!("镜像已共享给账号`{uin}`。"),
    )
}

pub fn share_over_quota(max: i64) -> ApiError {
    e(
        "OverQuota",
        format!("An image can be shared with at most {max} accounts."),
        format!("一个镜像最多可共享给{max}个账号。"),
    )
}

pub fn region_not_found(region: &str) -> ApiError {
    e(
        "InvalidRegion.NotFound",
        format!("The region `{region}` does not exist or is not served here."),
        format!("地域`{region}`不存在或本服务不提供。"),
    )
}

pub fn sync_region_invalid(en: String, zh: String) -> ApiError {
    e("InvalidParameterValue.InvalidRegion", en, zh)
}

pub fn encrypted_images_unsupported() -> ApiError {
    e(
        "UnsupportedOperation.EncryptedImagesNotSupported",
        "Encrypted image copies (Encrypt) are not supported by this server.".into(),
        "本服务不支持加密镜像复制（Encrypt）。".into(),
    )
}

pub fn invalid_kms_key_id() -> ApiError {
    e(
        "InvalidParameter.InvalidKmsKeyId",
        "KmsKeyId is not supported: this server keeps no KMS keys and makes no encrypted copies."
            .into(),
        "不支持KmsKeyId：本服务没有KMS密钥，也不制作加密镜像。".into(),
    )
}

// ExportImages and its task actions.

pub fn image_ids_snapshot_ids_must_one() -> ApiError {
    e(
        "InvalidParameter.ImageIdsSnapshotIdsMustOne",
        "Specify exactly one of ImageIds and SnapshotIds.".into(),
        "ImageIds和SnapshotIds必须且只能指定一个。".into(),
    )
}

pub fn snapshot_export_unsupported() -> ApiError {
    e(
        "UnsupportedOperation",
        "Exporting by SnapshotIds is not open (as on Tencent Cloud); export the image with ImageIds.".into(),
        "暂不支持通过SnapshotIds导出，请使用ImageIds导出镜像。".into(),
    )
}

pub fn invalid_export_format(v: &str) -> ApiError {
    e(
        "InvalidParameterValue",
        format!("The ExportFormat `{v}` is invalid; use RAW, QCOW2, VHD or VMDK."),
        format!("ExportFormat参数值`{v}`无效，取值为RAW、QCOW2、VHD或VMDK。"),
    )
}

pub fn bucket_not_found(bucket: &str) -> ApiError {
    e(
        "InvalidParameterValue.BucketNotFound",
        format!(
            "The bucket `{bucket}` does not exist; create it first (its name is `<name>-<appid>`)."
        ),
        format!("存储桶`{bucket}`不存在，请先创建（名称格式为`<name>-<appid>`）。"),
    )
}

pub fn bucket_app_id_format(bucket: &str) -> ApiError {
    e(
        "InvalidParameterValue.InvalidAppIdFormat",
        format!("The BucketName `{bucket}` does not end in `-<appid>` (for example `images-1250000000`)."),
        format!("BucketName`{bucket}`未以`-<appid>`结尾（例如`images-1250000000`）。"),
    )
}

pub fn bucket_permission(bucket: &str, app_id: u64) -> ApiError {
    e(
        "InvalidParameterValue.InvalidBucketPermissionForExport",
        format!("The bucket `{bucket}` belongs to appid {app_id}, not to your account: export to a bucket of your own."),
        format!("存储桶`{bucket}`属于appid {app_id}，不属于您的账号，请导出到您自己的存储桶。"),
    )
}

pub fn missing_cos_endpoint() -> ApiError {
    e(
        "InvalidParameterValue.MissingLocationCosEndpoint",
        "This server has no COS store to export to (configure source.cos_root or source.cos_endpoint).".into(),
        "本服务未配置可导出的COS存储（source.cos_root或source.cos_endpoint）。".into(),
    )
}

pub fn invalid_prefix_list(en: String, zh: String) -> ApiError {
    e("InvalidParameterValue.InvalidFileNamePrefixList", en, zh)
}

pub fn export_image_state(id: &str, state: &str) -> ApiError {
    e(
        "InvalidParameterValue.InvalidImageState",
        format!("The image `{id}` is {state}; only NORMAL images can be exported."),
        format!("镜像`{id}`当前状态为{state}，只有NORMAL状态的镜像可以导出。"),
    )
}

pub fn windows_export_unsupported(id: &str) -> ApiError {
    e(
        "UnsupportedOperation.WindowsImageExportUnsupported",
        format!("The image `{id}` is a Windows image; Windows images cannot be exported."),
        format!("镜像`{id}`为Windows镜像，不支持导出。"),
    )
}

pub fn export_too_large(id: &str, max_gib: u64) -> ApiError {
    e(
        "UnsupportedOperation.ImageTooLargeExportUnsupported",
        format!("A disk of the image `{id}` is larger than {max_gib} GiB, the largest that can be exported."),
        format!("镜像`{id}`的磁盘超过{max_gib} GiB，不支持导出。"),
    )
}

pub fn export_task_limit(max: u32) -> ApiError {
    e(
        "LimitExceeded.ExportImageTaskLimitExceeded",
        format!("You already have {max} export tasks that have not finished; wait for one to end or cancel it."),
        format!("未完成的导出任务已达上限（{max}个），请等待任务结束或取消任务。"),
    )
}

pub fn export_task_not_found(task_id: i64) -> ApiError {
    e(
        "ResourceNotFound",
        format!("The export task {task_id} does not exist."),
        format!("导出任务{task_id}不存在。"),
    )
}

pub fn export_task_finished(task_id: i64, state: &str) -> ApiError {
    e(
        "FailedOperation",
        format!(
            "The export task {task_id} has already finished ({state}); there is nothing to cancel."
        ),
        format!("导出任务{task_id}已结束（{state}），无法取消。"),
    )
}

pub fn export_running(id: &str) -> ApiError {
    e(
        "MutexOperation.TaskRunning",
        format!("The image `{id}` is being exported; wait for the export to finish or cancel it (CancelExportImageTask)."),
        format!("镜像`{id}`正在导出，请等待导出结束或取消导出任务（CancelExportImageTask）。"),
    )
}
