use std::fmt;

/// Why a tenant, category or stream id cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {reason}")]
pub struct NameError {
    pub field: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// The name of a stream: the tenant it belongs to, its category (`agent`, `call`, ...) and the
/// id of the thing inside the category. Every part is safe as a NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct StreamName {
    tenant: String,
    category: String,
    id: String,
}

fn check(field: &'static str, value: &str, allowed: fn(char) -> bool) -> Result<(), NameError> {
    let err = |reason| NameError {
        field,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(err("must not be empty"));
    }
    if value.len() > 100 {
        return Err(err("must be at most 100 characters"));
    }
    if !value.chars().all(allowed) {
        return Err(err(
            "may only contain the characters a-z, 0-9, '-' and '_' (ids may also use A-Z)",
        ));
    }
    Ok(())
}

/// Checks a tenant slug: lower-case letters, digits and '-'.
pub fn check_tenant(tenant: &str) -> Result<(), NameError> {
    check("tenant", tenant, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })
}

impl StreamName {
    pub fn new(tenant: &str, category: &str, id: &str) -> Result<Self, NameError> {
        check_tenant(tenant)?;
        check("category", category, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
        })?;
        check("stream id", id, |c| {
            c.is_ascii_alphanumeric() || c == '-' || c == '_'
        })?;
        Ok(Self {
            tenant: tenant.into(),
            category: category.into(),
            id: id.into(),
        })
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    pub fn category(&self) -> &str {
        &self.category
    }
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The stored key: `<tenant>/<category>-<id>`.
    pub fn key(&self) -> String {
        format!("{}/{}-{}", self.tenant, self.category, self.id)
    }

    /// A name read back from the store, whose parts were checked when it was written.
    #[doc(hidden)]
    pub fn from_parts_unchecked(tenant: String, category: String, id: String) -> Self {
        Self {
            tenant,
            category,
            id,
        }
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_subject_safe() {
        assert!(StreamName::new("acme", "agent", "1001").is_ok());
        assert_eq!(
            StreamName::new("acme", "agent", "1001").unwrap().key(),
            "acme/agent-1001"
        );
        assert_eq!(
            StreamName::new("Acme", "agent", "1").unwrap_err().field,
            "tenant"
        );
        assert_eq!(
            StreamName::new("acme", "ag.ent", "1").unwrap_err().field,
            "category"
        );
        assert_eq!(
            StreamName::new("acme", "agent", "1.2").unwrap_err().field,
            "stream id"
        );
        assert_eq!(
            StreamName::new("acme", "agent", "").unwrap_err().reason,
            "must not be empty"
        );
        assert!(StreamName::new("acme", "agent", "a*b").is_err());
    }
}
