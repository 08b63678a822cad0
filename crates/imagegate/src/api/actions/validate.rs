//! Value rules shared by ImportImage and ModifyImageAttribute. Lengths are
//! counted in characters, not bytes: a 60-character Chinese name is allowed.
//!
//! ImageFamily (Tencent documents no format): 1 to 60 characters of ASCII
//! letters, digits, `-`, `_` and `.`, starting with a letter, the usual shape
//! of a family name such as `centos-7` or `ubuntu_22.04`.

use crate::api::errors;
use crate::catalog::is_image_id;
use tcapi::ApiError;

pub const MAX_NAME_CHARS: usize = 60;
pub const MAX_DESCRIPTION_CHARS: usize = 256;
pub const MAX_FAMILY_CHARS: usize = 60;

pub fn image_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(errors::invalid_parameter_value(
            "The ImageName must not be empty.".into(),
            "ImageName不能为空。".into(),
        ));
    }
    let n = name.chars().count();
    if n > MAX_NAME_CHARS {
        return Err(errors::too_large("ImageName", MAX_NAME_CHARS, n));
    }
    if name.chars().any(char::is_control) {
        return Err(errors::invalid_parameter_value(
            "The ImageName must not contain control characters.".into(),
            "ImageName不能包含控制字符。".into(),
        ));
    }
    Ok(())
}

pub fn description(d: &str) -> Result<(), ApiError> {
    let n = d.chars().count();
    if n > MAX_DESCRIPTION_CHARS {
        return Err(errors::too_large(
            "ImageDescription",
            MAX_DESCRIPTION_CHARS,
            n,
        ));
    }
    Ok(())
}

pub fn image_family(f: &str) -> Result<(), ApiError> {
    let ok = !f.is_empty()
        && f.chars().count() <= MAX_FAMILY_CHARS
        && f.starts_with(|c: char| c.is_ascii_alphabetic())
        && f.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(errors::invalid_image_family(&clip(f, 80)))
    }
}

pub fn image_id(id: &str) -> Result<(), ApiError> {
    if is_image_id(id) {
        Ok(())
    } else {
        Err(errors::image_id_malformed(&clip(id, 40)))
    }
}

/// Shortens a client-supplied value before echoing it in a message.
/// Offset and Limit of a paged Describe action, defaults applied: Offset
/// not negative, Limit within 0..=`max`.
pub fn page(
    offset: Option<i64>,
    limit: Option<i64>,
    default_limit: i64,
    max: i64,
) -> Result<(i64, i64), ApiError> {
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(errors::invalid_parameter_value(
            format!("Offset must not be negative (got {offset})."),
            format!("Offset不能为负数（当前为{offset}）。"),
        ));
    }
    let limit = limit.unwrap_or(default_limit);
    if !(0..=max).contains(&limit) {
        return Err(errors::invalid_parameter_value(
            format!("Limit must be between 0 and {max} (got {limit})."),
            format!("Limit取值范围为0到{max}（当前为{limit}）。"),
        ));
    }
    Ok((offset, limit))
}

pub fn clip(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<(), ApiError>) -> String {
        r.err().map(|e| e.code.to_string()).unwrap_or_default()
    }

    #[test]
    fn names_count_characters() {
        assert!(image_name(&"名".repeat(60)).is_ok());
        assert_eq!(
            code(image_name(&"名".repeat(61))),
            "InvalidParameterValue.TooLarge"
        );
        assert_eq!(code(image_name("")), "InvalidParameterValue");
        assert_eq!(code(image_name("a\nb")), "InvalidParameterValue");
        assert!(description(&"d".repeat(256)).is_ok());
        assert_eq!(
            code(description(&"é".repeat(257))),
            "InvalidParameterValue.TooLarge"
        );
    }

    #[test]
    fn families() {
        for ok in ["centos-7", "ubuntu_22.04", "a", &"f".repeat(60)] {
            assert!(image_family(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "7centos",
            "-x",
            "a b",
            "fam/ily",
            &"f".repeat(61),
            "名字",
        ] {
            assert_eq!(
                code(image_family(bad)),
                "InvalidParameterValue.InvalidImageFamily",
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_and_clipping() {
        assert!(image_id("img-abc12345").is_ok());
        assert_eq!(code(image_id("img-ABC12345")), "InvalidImageId.Malformed");
        assert_eq!(clip("abcdef", 3), "abc…");
    }
}
