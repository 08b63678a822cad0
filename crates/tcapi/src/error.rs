//! The Tencent error value: a code plus a message in both languages the API
//! speaks. The language is chosen only when the envelope is rendered.

use std::borrow::Cow;

/// Message language, from `X-TC-Language` (v3) or `Language` (v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Language {
    /// Both official SDKs send `zh-CN` unless told otherwise.
    #[default]
    ZhCn,
    EnUs,
}

/// A Tencent API error: `{"Error":{"Code":…,"Message":…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Cow<'static, str>,
    pub message_en: String,
    pub message_zh: String,
}

impl ApiError {
    pub fn new(
        code: impl Into<Cow<'static, str>>,
        message_en: impl Into<String>,
        message_zh: impl Into<String>,
    ) -> Self {
        ApiError {
            code: code.into(),
            message_en: message_en.into(),
            message_zh: message_zh.into(),
        }
    }

    pub fn message(&self, lang: Language) -> &str {
        match lang {
            Language::EnUs => &self.message_en,
            Language::ZhCn => &self.message_zh,
        }
    }

    // Common codes used across the crate and the service.

    pub fn invalid_parameter(en: impl Into<String>, zh: impl Into<String>) -> Self {
        Self::new("InvalidParameter", en, zh)
    }

    pub fn invalid_parameter_value(en: impl Into<String>, zh: impl Into<String>) -> Self {
        Self::new("InvalidParameterValue", en, zh)
    }

    pub fn missing_parameter(name: &str) -> Self {
        Self::new(
            "MissingParameter",
            format!("The request is missing a required parameter `{name}`."),
            format!("缺少必需参数`{name}`。"),
        )
    }

    pub fn unknown_parameter(name: &str) -> Self {
        let name = clip(name);
        Self::new(
            "UnknownParameter",
            format!("The parameter `{name}` is not recognized."),
            format!("未定义的参数`{name}`。"),
        )
    }

    pub fn internal(en: impl Into<String>) -> Self {
        let en = en.into();
        Self::new("InternalError", en.clone(), format!("内部错误：{en}"))
    }

    /// `InvalidParameter` for a value of the wrong wire type (a string where a
    /// list is required, a fraction where an integer is, …).
    pub fn wrong_type(name: &str, expected: &str) -> Self {
        Self::invalid_parameter(
            format!("The parameter `{name}` has the wrong type: expected {expected}."),
            format!("参数`{name}`类型错误：应为{}。", type_zh(expected)),
        )
    }

    // Authentication. The first two messages are Tencent's own wording.

    pub fn signature_failure() -> Self {
        Self::new(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
            "请求签名验证失败，请检查您的签名计算是否正确。",
        )
    }

    /// A signature failure whose cause is known for sure (wrong credential
    /// date, undecodable signature): say it, so the user can fix the client.
    pub fn signature_failure_because(en: &str, zh: &str) -> Self {
        Self::new(
            "AuthFailure.SignatureFailure",
            format!(
                "The provided credentials could not be validated: {en}. Please check your signature is correct."
            ),
            format!("请求签名验证失败：{zh}。请检查您的签名计算是否正确。"),
        )
    }

    pub fn secret_id_not_found() -> Self {
        Self::new(
            "AuthFailure.SecretIdNotFound",
            "The SecretId is not found, please ensure that your SecretId is correct.",
            "SecretId不存在，请输入正确的密钥。",
        )
    }

    pub fn signature_expire(timestamp: i64, now: i64) -> Self {
        Self::new(
            "AuthFailure.SignatureExpire",
            format!(
                "Signature expired: the request Timestamp {timestamp} differs from the server time {now} by more than 300 seconds. Check that the client clock is synchronized."
            ),
            format!(
                "签名过期。请求的Timestamp {timestamp}与服务器时间{now}相差超过300秒，请检查本地时间是否与标准时间同步。"
            ),
        )
    }

    /// `detail` names what is wrong with the Authorization header.
    pub fn invalid_authorization(en: &str, zh: &str) -> Self {
        Self::new(
            "AuthFailure.InvalidAuthorization",
            format!(
                "The Authorization header is not in the Tencent Cloud format ({en}). Expected `TC3-HMAC-SHA256 Credential=<SecretId>/<YYYY-MM-DD>/cvm/tc3_request, SignedHeaders=content-type;host, Signature=<64 hex>` or the legacy Signature parameter."
            ),
            format!(
                "请求头部的Authorization不符合腾讯云标准（{zh}）。应为`TC3-HMAC-SHA256 Credential=<SecretId>/<YYYY-MM-DD>/cvm/tc3_request, SignedHeaders=content-type;host, Signature=<64位十六进制>`或旧版Signature参数。"
            ),
        )
    }

    pub fn invalid_secret_id() -> Self {
        Self::new(
            "AuthFailure.InvalidSecretId",
            "The SecretId is not a cloud API key. Use a SecretId/SecretKey pair issued for API access.",
            "密钥非云API密钥类型，请使用云API密钥（SecretId/SecretKey）。",
        )
    }

    pub fn token_failure() -> Self {
        Self::new(
            "AuthFailure.TokenFailure",
            "The temporary credential Token is invalid or expired. Request a new Token or omit it for a permanent key.",
            "临时证书Token错误或已过期，请重新获取Token，永久密钥请不要传Token。",
        )
    }

    // Action, version, request shape.

    pub fn invalid_action(action: &str) -> Self {
        Self::invalid_action_in(action, crate::actions::Product::Cvm)
    }

    /// InvalidAction for an action that is not one of `product`'s.
    pub fn invalid_action_in(action: &str, product: crate::actions::Product) -> Self {
        let service = product.service();
        let list = product.actions().join(", ");
        Self::new(
            "InvalidAction",
            format!("The action `{action}` does not exist for service {service} version 2017-03-12. Supported actions: {list}."),
            format!("接口`{action}`不存在。{service} 2017-03-12 支持的接口：{list}。"),
        )
    }

    pub fn no_such_version(version: &str) -> Self {
        Self::new(
            "NoSuchVersion",
            format!(
                "The API version `{version}` does not exist for service cvm. Use `2017-03-12`."
            ),
            format!("接口版本`{version}`不存在，请使用`2017-03-12`。"),
        )
    }

    pub fn unsupported_region(region: &str) -> Self {
        Self::new(
            "UnsupportedRegion",
            format!("The region `{region}` is not supported by this endpoint."),
            format!("接口不支持所传地域`{region}`。"),
        )
    }

    pub fn unsupported_protocol(method: &str) -> Self {
        Self::new(
            "UnsupportedProtocol",
            format!("The HTTP method `{method}` is not supported. Only GET and POST are accepted."),
            format!("HTTP请求方法`{method}`不支持，只支持GET和POST请求。"),
        )
    }

    /// `kind` names the rule that applied, e.g. "GET query" and its `limit` in bytes.
    pub fn request_size_limit_exceeded(kind: &str, size: usize, limit: usize) -> Self {
        Self::new(
            "RequestSizeLimitExceeded",
            format!(
                "The request is too large: the {kind} is {size} bytes, the limit is {limit} bytes."
            ),
            format!("请求包超过限制大小：{kind}为{size}字节，上限为{limit}字节。"),
        )
    }

    pub fn request_limit_exceeded(action: &str, per_second: u32) -> Self {
        Self::new(
            "RequestLimitExceeded",
            format!(
                "The request rate exceeds the limit of {per_second} requests per second for `{action}`. Retry later."
            ),
            format!("请求的次数超过了频率限制：`{action}`每秒最多{per_second}次，请稍后重试。"),
        )
    }

    pub fn invalid_request(en: &str, zh: &str) -> Self {
        Self::new(
            "InvalidRequest",
            format!("The request is invalid: {en}."),
            format!("请求不合法：{zh}。"),
        )
    }
}

/// A client-supplied name or value as quoted in a message: at most 100
/// characters, so that a hostile request cannot make a huge response.
pub(crate) fn clip(s: &str) -> Cow<'_, str> {
    const MAX: usize = 100;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => Cow::Owned(format!("{}…", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

/// Chinese wording of the expected types named in [`ApiError::wrong_type`].
fn type_zh(expected: &str) -> &str {
    match expected {
        "String" => "字符串（String）",
        "Integer" => "整数（Integer）",
        "Boolean" => "布尔值（Boolean）",
        "a list" => "数组",
        "an object" => "对象",
        other => other,
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message_en)
    }
}

impl std::error::Error for ApiError {}
