//! Domain values that parse at the edge, so an invalid one cannot exist further in.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a value was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for Invalid {}

macro_rules! digits_newtype {
    ($name:ident, $field:literal, $what:literal) => {
        #[doc = concat!("A ", $what, ": 1 to 15 digits.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, Invalid> {
                let s = s.trim();
                if s.is_empty() || s.len() > 15 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Invalid {
                        field: $field,
                        message: format!(concat!($what, " must be 1 to 15 digits, got {:?}"), s),
                    });
                }
                Ok(Self(s.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "pattern": "^[0-9]{1,15}$", "description": concat!("A ", $what, ": 1 to 15 digits.") })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
            }
        }
    };
}

digits_newtype!(AgentNumber, "agent_number", "an agent number");
digits_newtype!(DeviceId, "device", "a device (extension number)");
digits_newtype!(QueueNumber, "queue", "a queue number");

/// A pause reason's name as the admin wrote it (1 to 40 characters, trimmed).
pub fn parse_reason_name(s: &str) -> Result<String, Invalid> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > 40 {
        return Err(Invalid { field: "reason", message: "a pause reason is 1 to 40 characters".into() });
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_numbers_are_digits() {
        assert!(AgentNumber::parse("1001").is_ok());
        assert_eq!(AgentNumber::parse(" 1001 ").unwrap().as_str(), "1001");
        let e = AgentNumber::parse("10a1").unwrap_err();
        assert_eq!(e.field, "agent_number");
        assert!(AgentNumber::parse("").is_err());
        assert!(AgentNumber::parse("1234567890123456").is_err());
        assert!(serde_json::from_str::<AgentNumber>("\"12x\"").is_err());
        assert!(parse_reason_name("  ").is_err());
    }
}
