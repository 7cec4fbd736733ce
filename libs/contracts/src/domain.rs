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
    ($name:ident, $field:literal, $what:literal, $title:literal) => {
        #[doc = concat!($title, ": 1 to 15 digits.")]
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
                schemars::json_schema!({ "type": "string", "pattern": "^[0-9]{1,15}$", "description": concat!($title, ": 1 to 15 digits.") })
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

digits_newtype!(
    AgentNumber,
    "agent_number",
    "an agent number",
    "An agent number"
);
digits_newtype!(
    DeviceId,
    "device",
    "a device (extension number)",
    "A device (extension number)"
);
digits_newtype!(QueueNumber, "queue", "a queue number", "A queue number");

/// A name a person typed (an agent's or a user's display name, a queue's name, a pause
/// reason, a tenant's name): trimmed, 1 to `max` characters, without control characters (a NUL
/// cannot even be stored: PostgreSQL refuses it in text and in jsonb). `what` names it in the
/// message, `field` is the field at fault.
pub fn parse_name(field: &'static str, what: &str, s: &str, max: usize) -> Result<String, Invalid> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > max {
        return Err(Invalid {
            field,
            message: format!("{what} is 1 to {max} characters"),
        });
    }
    if t.chars().any(char::is_control) {
        return Err(Invalid {
            field,
            message: format!(
                "{what} must not contain control characters (such as NUL, tab or newline)"
            ),
        });
    }
    Ok(t.to_string())
}

/// Patterns (ECMA-262, as JSON Schema has them) of the names [`parse_name`] takes: the
/// whitespace `str::trim` removes (`ws`), then a first and a last character that are neither
/// whitespace nor control characters with no control character between them, `$inner + 2`
/// characters at most (`trimmed`).
macro_rules! name_pattern {
    (ws) => {
        "[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*"
    };
    (trimmed $inner:literal) => {
        concat!(
            "[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
            "(?:[^\\u0000-\\u001f\\u007f-\\u009f]{0,",
            $inner,
            "}[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000])?"
        )
    };
}

/// The pattern of a name of at most 40 characters (a pause reason's).
pub const NAME_40: &str = concat!(
    "^",
    name_pattern!(ws),
    name_pattern!(trimmed 38),
    name_pattern!(ws),
    "$"
);
/// The pattern of a name of at most 80 characters (a display name, a queue's name).
pub const NAME_80: &str = concat!(
    "^",
    name_pattern!(ws),
    name_pattern!(trimmed 78),
    name_pattern!(ws),
    "$"
);
/// The pattern of a code of at most 40 characters written without surrounding whitespace (a
/// disposition code).
pub const CODE_40: &str = concat!("^", name_pattern!(trimmed 38), "$");

/// A pause reason's name as the admin wrote it (1 to 40 characters, trimmed, no control
/// characters).
pub fn parse_reason_name(s: &str) -> Result<String, Invalid> {
    parse_name("reason", "a pause reason", s, 40)
}

/// The longest [`CallerNumber`], in characters.
pub const CALLER_NUMBER_MAX: usize = 32;
/// The longest [`CallerName`], in characters.
pub const CALLER_NAME_MAX: usize = 100;

/// A caller's number as the PBX presents it: digits with an optional leading `+`, 1 to 32
/// characters in all (surrounding spaces trimmed). Parse it where the number comes in (the PBX
/// adapter, the simulator's HTTP API) with [`CallerNumber::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CallerNumber(String);

impl CallerNumber {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let t = s.trim();
        let digits = t.strip_prefix('+').unwrap_or(t);
        if digits.is_empty()
            || t.chars().count() > CALLER_NUMBER_MAX
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Invalid {
                field: "caller_number",
                message: format!("a caller number is digits with an optional leading +, 1 to {CALLER_NUMBER_MAX} characters, got {t:?}"),
            });
        }
        Ok(Self(t.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for CallerNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl fmt::Display for CallerNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an agent dials from the portal: an extension of the tenant or an outside number, as
/// a phone's keypad has it: 1 to 32 of `0-9 + * #` (surrounding spaces trimmed; spaces,
/// dashes, dots and brackets inside, as people write numbers, left out). Refused naming
/// `number`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct DialString(String);

/// The longest [`DialString`], in characters.
pub const DIAL_STRING_MAX: usize = 32;

impl DialString {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.chars().count() > 2 * DIAL_STRING_MAX {
            return Err(Invalid {
                field: "number",
                message: format!(
                    "a number to dial is at most {} characters as written",
                    2 * DIAL_STRING_MAX
                ),
            });
        }
        let t: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        if t.is_empty() {
            return Err(Invalid {
                field: "number",
                message: "the number to dial is required".into(),
            });
        }
        if t.chars().count() > DIAL_STRING_MAX {
            return Err(Invalid {
                field: "number",
                message: format!("a number to dial is at most {DIAL_STRING_MAX} characters"),
            });
        }
        if let Some(bad) = t
            .chars()
            .find(|c| !(c.is_ascii_digit() || matches!(c, '+' | '*' | '#')))
        {
            return Err(Invalid {
                field: "number",
                message: format!(
                    "{bad:?} cannot be dialled: a number is digits and + * # only, got {:?}",
                    s.trim()
                ),
            });
        }
        Ok(Self(t))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DialString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl fmt::Display for DialString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A caller's display name: control characters (NUL among them) removed, surrounding spaces
/// trimmed, at most 100 characters; may be empty. [`CallerName::parse`] refuses a longer one
/// (for an edge that can answer "bad request", such as the simulator's HTTP API);
/// [`CallerName::lossy`] shortens it (for a fact reported by a PBX, which cannot be refused).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct CallerName(String);

impl CallerName {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let clean = strip_controls(s);
        if clean.chars().count() > CALLER_NAME_MAX {
            return Err(Invalid {
                field: "caller_name",
                message: format!("a caller name is at most {CALLER_NAME_MAX} characters"),
            });
        }
        Ok(Self(clean))
    }
    pub fn lossy(s: &str) -> Self {
        Self(
            strip_controls(s)
                .chars()
                .take(CALLER_NAME_MAX)
                .collect::<String>()
                .trim_end()
                .to_string(),
        )
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for CallerName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(|e| serde::de::Error::custom(e.message))
    }
}

impl fmt::Display for CallerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `s` without control characters, trimmed.
pub fn strip_controls(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
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

    #[test]
    fn a_dialled_number_is_what_a_keypad_has_and_bounded() {
        assert_eq!(
            DialString::parse(" +49 (30) 123-45.6 ").unwrap().as_str(),
            "+4930123456"
        );
        assert_eq!(DialString::parse("*72#").unwrap().as_str(), "*72#");
        assert_eq!(DialString::parse("1002").unwrap().as_str(), "1002");
        for bad in ["", "  ", "555a", "5551;drop", "55\u{0}5", &"1".repeat(33)] {
            let e = DialString::parse(bad).unwrap_err();
            assert_eq!(e.field, "number", "{bad:?}");
        }
        assert!(DialString::parse(&"1".repeat(32)).is_ok());
        assert!(serde_json::from_str::<DialString>("\"12x\"").is_err());
    }

    #[test]
    fn names_people_type_refuse_control_characters_naming_the_field() {
        assert_eq!(
            parse_name("name", "a queue name", "  Sales ", 80).unwrap(),
            "Sales"
        );
        let e = parse_name("name", "a queue name", "Sa\u{0}les", 80).unwrap_err();
        assert_eq!(e.field, "name");
        assert!(e.message.contains("control characters"), "{e}");
        assert!(parse_name("display_name", "a display name", &"x".repeat(81), 80).is_err());
        assert_eq!(parse_reason_name("Lun\u{0}ch").unwrap_err().field, "reason");
        assert!(parse_reason_name("Lunch\nbreak").is_err());
    }

    #[test]
    fn caller_numbers_are_digits_with_an_optional_plus() {
        for ok in [
            "5551234",
            "+4930123456",
            " 0800 ".trim(),
            &"1".repeat(32),
            &format!("+{}", "1".repeat(31)),
        ] {
            assert!(CallerNumber::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "+",
            "555-1234",
            "++1",
            "1+2",
            "555\u{0}1",
            "anonymous",
            &"1".repeat(33),
            &format!("+{}", "1".repeat(32)),
        ] {
            let e = CallerNumber::parse(bad).unwrap_err();
            assert_eq!(e.field, "caller_number", "{bad}");
        }
        assert_eq!(CallerNumber::parse(" +491 ").unwrap().as_str(), "+491");
        assert!(serde_json::from_str::<CallerNumber>("\"12x\"").is_err());
    }

    #[test]
    fn caller_names_lose_control_characters_and_are_at_most_100_characters() {
        assert_eq!(CallerName::parse("a\u{0}b").unwrap().as_str(), "ab");
        assert_eq!(
            CallerName::parse(" Jane\tCaller\r\n").unwrap().as_str(),
            "JaneCaller"
        );
        assert_eq!(CallerName::parse("").unwrap().as_str(), "");
        assert_eq!(
            CallerName::parse(&"é".repeat(100))
                .unwrap()
                .as_str()
                .chars()
                .count(),
            100
        );
        let e = CallerName::parse(&"é".repeat(101)).unwrap_err();
        assert_eq!(e.field, "caller_name");
        // Controls do not count towards the limit.
        assert!(CallerName::parse(&format!("{}\u{0}", "x".repeat(100))).is_ok());
        assert_eq!(
            CallerName::lossy(&format!("\u{0}{}", "y".repeat(150))).as_str(),
            "y".repeat(100)
        );
        assert_eq!(
            serde_json::from_str::<CallerName>("\"a\\u0000b\"")
                .unwrap()
                .as_str(),
            "ab"
        );
    }
}
