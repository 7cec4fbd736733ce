//! The SDP of a call leg: what the phone offered or answered (parsed with the `sdp` crate), and
//! the gateway's own offers and answers. Media is G.711 only (PCMU, PCMA) plus
//! telephone-event (RFC 4733); the gateway answers with one codec, the first of the offer's
//! that it speaks.

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

/// A G.711 law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

/// Which way media flows, as the SDP says it (RFC 3264).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction to answer an offer with (RFC 3264 section 6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the phone that sent this puts the call on hold.
    pub fn is_hold(self) -> bool {
        matches!(self, Direction::SendOnly | Direction::Inactive)
    }
}

/// The remote side of a leg's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Where to send RTP (the phone's address; replaced by the latched source once packets come).
    pub addr: SocketAddr,
    pub codec: Codec,
    /// The phone's payload type for telephone-event, if it offered one.
    pub telephone_event: Option<u8>,
    pub direction: Direction,
}

/// Why an SDP cannot be used; answered 488 (or 400 when it does not parse).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("the SDP does not parse: {0}")]
    Malformed(String),
    #[error("the SDP has no audio stream")]
    NoAudio,
    #[error("the SDP offers no codec the gateway speaks (PCMU or PCMA)")]
    NoCommonCodec,
}

/// Reads an offer or an answer. `prefer` picks the codec when both are offered (an answer to
/// our own offer has one anyway).
pub fn parse(body: &[u8]) -> Result<RemoteMedia, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::Malformed("not UTF-8".into()))?;
    let sd = sdp::SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes()))
        .map_err(|e| SdpError::Malformed(e.to_string()))?;
    let audio = sd
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media == "audio" && m.media_name.port.value > 0)
        .ok_or(SdpError::NoAudio)?;
    let conn = audio
        .connection_information
        .as_ref()
        .or(sd.connection_information.as_ref());
    let ip: IpAddr = conn
        .and_then(|c| c.address.as_ref())
        .and_then(|a| a.address.split('/').next()?.parse().ok())
        .ok_or_else(|| SdpError::Malformed("no usable c= address".into()))?;
    let port = u16::try_from(audio.media_name.port.value)
        .map_err(|_| SdpError::Malformed("bad port".into()))?;
    let rtpmap = |pt: &str| -> Option<String> {
        audio
            .attributes
            .iter()
            .filter(|a| a.key == "rtpmap")
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                let (p, enc) = v.split_once(' ')?;
                (p == pt).then(|| enc.to_ascii_lowercase())
            })
    };
    let mut codec = None;
    let mut telephone_event = None;
    for f in &audio.media_name.formats {
        let enc = rtpmap(f);
        let c = match (f.as_str(), enc.as_deref()) {
            ("0", None) => Some(Codec::Pcmu),
            ("8", None) => Some(Codec::Pcma),
            (_, Some(e)) if e.starts_with("pcmu/8000") => Some(Codec::Pcmu),
            (_, Some(e)) if e.starts_with("pcma/8000") => Some(Codec::Pcma),
            (_, Some(e)) if e.starts_with("telephone-event/8000") => {
                telephone_event = telephone_event.or(f.parse().ok());
                None
            }
            _ => None,
        };
        if codec.is_none() {
            codec = c;
        }
    }
    let codec = codec.ok_or(SdpError::NoCommonCodec)?;
    let attr = |k: &str| {
        audio.attributes.iter().any(|a| a.key == k) || sd.attributes.iter().any(|a| a.key == k)
    };
    let direction = if attr("inactive") {
        Direction::Inactive
    } else if attr("sendonly") {
        Direction::SendOnly
    } else if attr("recvonly") {
        Direction::RecvOnly
    } else {
        Direction::SendRecv
    };
    // An offer with c=0.0.0.0 is the old way of saying hold (RFC 2543).
    let direction = if ip.is_unspecified() && direction == Direction::SendRecv {
        Direction::SendOnly
    } else {
        direction
    };
    Ok(RemoteMedia {
        addr: SocketAddr::new(ip, port),
        codec,
        telephone_event,
        direction,
    })
}

/// The payload type the gateway uses for telephone-event in its own SDP.
pub const TELEPHONE_EVENT_PT: u8 = 101;

fn session(
    ip: IpAddr,
    session_id: u64,
    version: u64,
    port: u16,
    formats: &str,
    rtpmaps: &str,
    direction: Direction,
) -> Vec<u8> {
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=cc-sip-gateway {session_id} {version} IN {family} {ip}\r\ns=call\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {formats}\r\n{rtpmaps}a=fmtp:{te} 0-16\r\na=ptime:20\r\na={dir}\r\n",
        te = TELEPHONE_EVENT_PT,
        dir = direction.attribute()
    )
    .into_bytes()
}

/// The gateway's offer for a leg it places: PCMU and PCMA, telephone-event.
pub fn offer(ip: IpAddr, port: u16, session_id: u64) -> Vec<u8> {
    let te = TELEPHONE_EVENT_PT;
    session(
        ip,
        session_id,
        1,
        port,
        &format!("0 8 {te}"),
        &format!("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:{te} telephone-event/8000\r\n"),
        Direction::SendRecv,
    )
}

/// The gateway's answer to a phone's offer: the chosen codec (and telephone-event when offered).
pub fn answer(
    ip: IpAddr,
    port: u16,
    session_id: u64,
    version: u64,
    remote: &RemoteMedia,
) -> Vec<u8> {
    let c = remote.codec;
    let (formats, maps) = match remote.telephone_event {
        Some(te) => (
            format!("{} {te}", c.payload_type()),
            format!(
                "a=rtpmap:{} {}/8000\r\na=rtpmap:{te} telephone-event/8000\r\n",
                c.payload_type(),
                c.name()
            ),
        ),
        None => (
            c.payload_type().to_string(),
            format!("a=rtpmap:{} {}/8000\r\n", c.payload_type(), c.name()),
        ),
    };
    let mut body = session(
        ip,
        session_id,
        version,
        port,
        &formats,
        &maps,
        remote.direction.answer(),
    );
    if let Some(te) = remote.telephone_event {
        // The fmtp line names the phone's telephone-event payload type.
        let text = String::from_utf8(body).expect("ascii").replace(
            &format!("a=fmtp:{TELEPHONE_EVENT_PT} "),
            &format!("a=fmtp:{te} "),
        );
        body = text.into_bytes();
    } else {
        let text = String::from_utf8(body)
            .expect("ascii")
            .replace(&format!("a=fmtp:{TELEPHONE_EVENT_PT} 0-16\r\n"), "");
        body = text.into_bytes();
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARESIP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=audio 10000 RTP/AVP 9 8 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

    #[test]
    fn an_offer_gives_the_first_g711_codec_and_telephone_event() {
        let m = parse(BARESIP.as_bytes()).unwrap();
        assert_eq!(m.codec, Codec::Pcma);
        assert_eq!(m.telephone_event, Some(101));
        assert_eq!(m.addr, "127.0.0.1:10000".parse().unwrap());
        assert_eq!(m.direction, Direction::SendRecv);
        let a = String::from_utf8(answer("127.0.0.1".parse().unwrap(), 30000, 7, 1, &m)).unwrap();
        assert!(a.contains("m=audio 30000 RTP/AVP 8 101\r\n"), "{a}");
        assert!(a.contains("a=sendrecv"));
        // Our own answer parses back.
        assert_eq!(parse(a.as_bytes()).unwrap().codec, Codec::Pcma);
    }

    #[test]
    fn hold_offers_are_answered_as_rfc_3264_says() {
        let held = BARESIP.replace("a=sendrecv", "a=sendonly");
        let m = parse(held.as_bytes()).unwrap();
        assert!(m.direction.is_hold());
        let a = String::from_utf8(answer("127.0.0.1".parse().unwrap(), 30000, 7, 2, &m)).unwrap();
        assert!(a.contains("a=recvonly"), "{a}");
        let inactive = BARESIP.replace("a=sendrecv", "a=inactive");
        assert_eq!(
            parse(inactive.as_bytes()).unwrap().direction.answer(),
            Direction::Inactive
        );
    }

    #[test]
    fn unusable_offers_are_refused_with_a_reason() {
        assert_eq!(
            parse(BARESIP.replace("9 8 0 101", "9 101").as_bytes()),
            Err(SdpError::NoCommonCodec)
        );
        assert!(matches!(
            parse(b"v=0\r\nthis is not sdp"),
            Err(SdpError::Malformed(_))
        ));
        assert_eq!(
            parse(BARESIP.replace("m=audio", "m=video").as_bytes()),
            Err(SdpError::NoAudio)
        );
        assert!(matches!(parse(&[0xff, 0xfe]), Err(SdpError::Malformed(_))));
    }
}
