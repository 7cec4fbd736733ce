//! What a PBX's NOTIFY says about one extension (trunk mode): an RFC 3680 registration
//! document (`application/reginfo+xml`, Event: reg) or an RFC 3863 presence document
//! (`application/pidf+xml`, Event: presence). Pure; the body is text from outside, so its size,
//! its XML (no DTD, a bounded number of nodes) and the text taken from it are bounded.

use cc_runtime::PresencePackage;

/// The largest NOTIFY body read (a reginfo of one extension is well under 2 KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// The longest contact URI kept (shown to admins).
const MAX_CONTACT: usize = 256;

/// One extension's registration as the PBX reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub registered: bool,
    /// Where the phone is registered (its Contact), when the PBX says.
    pub contact: Option<String>,
}

impl Registration {
    fn offline() -> Self {
        Registration {
            registered: false,
            contact: None,
        }
    }
}

/// A body the gateway cannot use; the NOTIFY is refused and nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is {0} bytes, more than {MAX_BODY}")]
    TooLarge(usize),
    #[error("the body is not XML: {0}")]
    NotXml(String),
    #[error("the body is not a {expected} document")]
    WrongDocument { expected: &'static str },
}

/// What the body says about `extension`. `Ok(None)`: nothing (a partial reginfo about other
/// addresses of record). An empty body (a PBX that has no state to report yet, as Kamailio's
/// first NOTIFY before any registration) means not registered.
pub fn parse(
    package: PresencePackage,
    body: &[u8],
    extension: &str,
) -> Result<Option<Registration>, BodyError> {
    if body.len() > MAX_BODY {
        return Err(BodyError::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotXml(e.to_string()))?;
    if text.trim().is_empty() {
        return Ok(Some(Registration::offline()));
    }
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 10_000,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts)
        .map_err(|e| BodyError::NotXml(e.to_string()))?;
    let root = doc.root_element();
    match package {
        PresencePackage::Reg => reginfo(root, extension),
        PresencePackage::Presence => pidf(root),
    }
}

fn children<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children()
        .filter(move |n| n.is_element() && n.tag_name().name() == name)
}

/// RFC 3680: the extension is registered while its registration is `active` with at least one
/// `active` contact.
fn reginfo(root: roxmltree::Node, extension: &str) -> Result<Option<Registration>, BodyError> {
    if root.tag_name().name() != "reginfo" {
        return Err(BodyError::WrongDocument {
            expected: "reginfo",
        });
    }
    let full = root.attribute("state") != Some("partial");
    let mine = children(root, "registration")
        .find(|r| r.attribute("aor").and_then(aor_user) == Some(extension));
    let Some(registration) = mine else {
        // A full state without this address of record: it has no registration.
        return Ok(full.then(Registration::offline));
    };
    let active = |n: &roxmltree::Node| n.attribute("state") == Some("active");
    let contact = children(registration, "contact").find(active);
    let registered = active(&registration) && contact.is_some();
    Ok(Some(Registration {
        registered,
        contact: contact
            .filter(|_| registered)
            .and_then(|c| children(c, "uri").next())
            .and_then(|u| u.text())
            .map(bounded),
    }))
}

/// RFC 3863: online while any tuple's basic status is `open`.
fn pidf(root: roxmltree::Node) -> Result<Option<Registration>, BodyError> {
    if root.tag_name().name() != "presence" {
        return Err(BodyError::WrongDocument {
            expected: "presence (PIDF)",
        });
    }
    let open = children(root, "tuple").find(|t| {
        children(*t, "status")
            .flat_map(|s| children(s, "basic"))
            .any(|b| b.text().map(str::trim) == Some("open"))
    });
    Ok(Some(Registration {
        registered: open.is_some(),
        contact: open
            .and_then(|t| children(t, "contact").next())
            .and_then(|c| c.text())
            .map(bounded),
    }))
}

/// The user part of an address of record (`sip:1001@office.example` -> `1001`).
fn aor_user(aor: &str) -> Option<&str> {
    let rest = aor
        .trim()
        .strip_prefix("sips:")
        .or_else(|| aor.trim().strip_prefix("sip:"))?;
    rest.split_once('@').map(|(user, _)| user)
}

/// Text from outside kept for display: control characters out, at most [`MAX_CONTACT`].
fn bounded(text: &str) -> String {
    text.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CONTACT)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KAMAILIO_ACTIVE: &str = r#"<?xml version="1.0"?>
<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="0" state="full">
  <registration aor="sip:1001@office.localhost" id="0x7fa19b5143a0" state="active">
    <contact id="0x7fa19b5144b8" state="active" event="created" expires="60" callid="reg1001@x" cseq="1" received="" path="" user_agent="n/a">
      <uri>sip:1001@127.0.0.1:43201</uri>
    </contact>
  </registration>
</reginfo>"#;

    fn reg(body: &str, ext: &str) -> Result<Option<Registration>, BodyError> {
        parse(PresencePackage::Reg, body.as_bytes(), ext)
    }

    #[test]
    fn a_kamailio_reginfo_says_registered_then_terminated() {
        assert_eq!(
            reg(KAMAILIO_ACTIVE, "1001").unwrap(),
            Some(Registration {
                registered: true,
                contact: Some("sip:1001@127.0.0.1:43201".into())
            })
        );
        let gone = KAMAILIO_ACTIVE
            .replace("state=\"active\"", "state=\"terminated\"")
            .replace("event=\"created\"", "event=\"unregistered\"");
        assert_eq!(reg(&gone, "1001").unwrap(), Some(Registration::offline()));
    }

    #[test]
    fn an_empty_body_or_a_full_state_without_the_extension_is_offline_a_partial_one_says_nothing() {
        assert_eq!(reg("", "1001").unwrap(), Some(Registration::offline()));
        assert_eq!(
            reg(KAMAILIO_ACTIVE, "1002").unwrap(),
            Some(Registration::offline())
        );
        let partial = KAMAILIO_ACTIVE.replace("state=\"full\"", "state=\"partial\"");
        assert_eq!(reg(&partial, "1002").unwrap(), None);
        // An active registration whose contacts all ended is not registered.
        let no_contact = KAMAILIO_ACTIVE.replace(
            "<contact id=\"0x7fa19b5144b8\" state=\"active\"",
            "<contact id=\"0x7fa19b5144b8\" state=\"terminated\"",
        );
        assert_eq!(
            reg(&no_contact, "1001").unwrap(),
            Some(Registration::offline())
        );
    }

    #[test]
    fn pidf_open_is_online_and_closed_offline() {
        let doc = |basic: &str| {
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:1001@pbx">
 <tuple id="1001"><status><basic>{basic}</basic></status><contact priority="1">sip:1001@10.0.0.7:5062</contact></tuple>
</presence>"#
            )
        };
        let p = |b: &str| parse(PresencePackage::Presence, b.as_bytes(), "1001");
        assert_eq!(
            p(&doc("open")).unwrap(),
            Some(Registration {
                registered: true,
                contact: Some("sip:1001@10.0.0.7:5062".into())
            })
        );
        assert_eq!(p(&doc("closed")).unwrap(), Some(Registration::offline()));
        assert_eq!(
            p(KAMAILIO_ACTIVE).unwrap_err(),
            BodyError::WrongDocument {
                expected: "presence (PIDF)"
            }
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        assert!(matches!(reg("<reginfo", "1001"), Err(BodyError::NotXml(_))));
        assert_eq!(
            reg(&"x".repeat(MAX_BODY + 1), "1001").unwrap_err(),
            BodyError::TooLarge(MAX_BODY + 1)
        );
        let dtd = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaa\">]><reginfo state=\"full\">&a;</reginfo>";
        assert!(matches!(reg(dtd, "1001"), Err(BodyError::NotXml(_))));
        assert_eq!(
            reg("<presence/>", "1001").unwrap_err(),
            BodyError::WrongDocument {
                expected: "reginfo"
            }
        );
        // A contact URI from outside is cleaned and bounded.
        let long = KAMAILIO_ACTIVE.replace(
            "sip:1001@127.0.0.1:43201",
            &format!("sip:1001@\t{}", "h".repeat(1000)),
        );
        let c = reg(&long, "1001").unwrap().unwrap().contact.unwrap();
        assert_eq!(c.chars().count(), MAX_CONTACT);
        assert!(!c.contains('\t'));
    }
}
