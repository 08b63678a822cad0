//! The domain's closed vocabularies, typed: image and task states, import and
//! export phases, OS platforms, and the JSON details an import job keeps.
//!
//! Each vocabulary is an enum whose names are the wire and database text
//! (`NORMAL`, `RUNNING`, `FETCHING`, …). The text is written here once:
//! `as_str`, `FromStr`, `Display`, serde and sqlx (`Any`, as TEXT) all come
//! from the one [`names!`] table, so a value read back from the catalog is
//! either a known variant or a decoding error, never a stray string. The
//! catalog's SQL still names states and phases as literals (a statement is
//! easier to read whole); a test checks every such literal against these
//! tables.

mod failure_code;
mod job_details;
mod platform;
mod states;

pub use failure_code::FailureCode;
pub use job_details::{AttemptRecord, DiskRecord, JobDetails, PhaseTime, ProgressRecord};
pub use platform::OsPlatform;
pub use states::{ExportPhase, ImageState, ImportPhase, TaskState};

/// A name that is not in a vocabulary: `what` it should have been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a known {what}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
}

/// Declares a closed vocabulary: the enum, its text (`as_str`, `FromStr`,
/// `Display`), serde as that text, and sqlx's `Any` as TEXT.
macro_rules! names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every name, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The wire and database text.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::domain::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err($crate::domain::UnknownName { what: $what, value: s.to_owned() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl sqlx::Type<sqlx::Any> for $name {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <str as sqlx::Type<sqlx::Any>>::type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Any>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Any> for $name {
            fn decode(
                value: <sqlx::Any as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, sqlx::Any>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }
    };
}
pub(crate) use names;
