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
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message_en)
    }
}

impl std::error::Error for ApiError {}
