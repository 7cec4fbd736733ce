//! Media anchored at the gateway: every call leg has an RTP port of its own, and the gateway
//! decides what each phone hears. A leg's packets go to the legs that listen to it (a two-party
//! bridge: each to the other), re-stamped with the listener's own SSRC, sequence and
//! timestamps, so a phone sees one continuous stream across re-bridges, hold and music.
//! PCMU and PCMA are converted sample by sample when the two sides differ; telephone-event is
//! passed through under the listener's payload type. The source address of a phone's packets
//! is latched (symmetric RTP), so phones behind NAT are reached where they really are.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audio_codec_algorithms::{
    convert_alaw_to_ulaw, convert_ulaw_to_alaw, decode_alaw, decode_ulaw, encode_alaw, encode_ulaw,
};
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::moh::Music;
use crate::sdp::{Codec, RemoteMedia};

/// The RTP ports of a gateway, handed out in turn (even ports, as RFC 3550 suggests).
pub struct Ports {
    first: u16,
    last: u16,
    next: AtomicU16,
}

impl Ports {
    /// `first-last`, e.g. `30000-30999`; `0` means ports chosen by the system.
    pub fn parse(spec: &str) -> Result<Self, String> {
        if spec.trim() == "0" {
            return Ok(Self {
                first: 0,
                last: 0,
                next: AtomicU16::new(0),
            });
        }
        let (a, b) = spec
            .split_once('-')
            .ok_or_else(|| format!("{spec:?} is not first-last"))?;
        let (first, last): (u16, u16) = (
            a.trim()
                .parse()
                .map_err(|_| format!("{a:?} is not a port"))?,
            b.trim()
                .parse()
                .map_err(|_| format!("{b:?} is not a port"))?,
        );
        if first < 1024 || last < first + 1 {
            return Err(format!(
                "{spec:?}: the range must be above 1023 and hold at least two ports"
            ));
        }
        let first = first + first % 2;
        Ok(Self {
            first,
            last,
            next: AtomicU16::new(first),
        })
    }

    async fn bind(&self, ip: IpAddr) -> std::io::Result<(UdpSocket, u16)> {
        if self.first == 0 {
            let s = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
            let p = s.local_addr()?.port();
            return Ok((s, p));
        }
        let span = (self.last - self.first) / 2 + 1;
        for _ in 0..span {
            let p = self.next.fetch_add(2, Ordering::Relaxed);
            let p = self.first + (p.wrapping_sub(self.first) / 2 % span) * 2;
            if let Ok(s) = UdpSocket::bind(SocketAddr::new(ip, p)).await {
                return Ok((s, p));
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "every RTP port of CC_RTP_PORTS is in use",
        ))
    }
}

/// Counters of one leg, for tests, metrics and the benchmark.
#[derive(Default)]
pub struct LegStats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
}

/// What goes out to one phone: its socket, where it is, and the stream it sees.
pub struct Output {
    socket: Arc<UdpSocket>,
    state: Mutex<OutState>,
    pub stats: LegStats,
}

struct OutState {
    remote: Option<SocketAddr>,
    latched: bool,
    codec: Codec,
    telephone_event: Option<u8>,
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// Who the last packet came from (0 = the music) and its timestamp, to keep ours continuous.
    source: u64,
    source_ts: u32,
    last_sent: Option<Instant>,
    music_pos: usize,
    music_ts: u32,
}

/// Where a packet comes from.
#[derive(Clone, Copy)]
struct Source {
    id: u64,
    ts: u32,
    marker: bool,
    payload_type: u8,
    codec: Codec,
    telephone_event: Option<u8>,
}

const MUSIC: u64 = 0;

impl Output {
    /// Sends one packet to the phone under this leg's stream.
    fn send(&self, from: Source, payload: &[u8]) {
        let mut st = self.state.lock().expect("output lock");
        let Some(remote) = st.remote else { return };
        let is_event =
            from.telephone_event.is_some() && Some(from.payload_type) == from.telephone_event;
        let mut buf = [0u8; 1500];
        let mut converted = [0u8; 1200];
        let (pt, body): (u8, &[u8]) = if is_event {
            match st.telephone_event {
                Some(pt) => (pt, payload),
                None => return, // the phone did not take telephone-event
            }
        } else if from.codec == st.codec {
            (st.codec.payload_type(), payload)
        } else {
            let n = payload.len().min(converted.len());
            for (o, i) in converted[..n].iter_mut().zip(&payload[..n]) {
                *o = match from.codec {
                    Codec::Pcmu => convert_ulaw_to_alaw(*i),
                    Codec::Pcma => convert_alaw_to_ulaw(*i),
                };
            }
            (st.codec.payload_type(), &converted[..n])
        };
        let now = Instant::now();
        let mut marker = from.marker;
        if st.source != from.id || st.last_sent.is_none() {
            // A new source: go on from where our stream was, as far on as the time since.
            let gap = st
                .last_sent
                .map(|t| (now - t).as_millis() as u32 * 8)
                .unwrap_or(0)
                .max(160);
            st.ts = st.ts.wrapping_add(gap);
            st.source = from.id;
            marker = true;
        } else {
            st.ts = st.ts.wrapping_add(from.ts.wrapping_sub(st.source_ts));
        }
        st.source_ts = from.ts;
        st.seq = st.seq.wrapping_add(1);
        st.last_sent = Some(now);
        let packet = RtpPacketBuilder::new()
            .payload_type(pt)
            .ssrc(st.ssrc)
            .sequence(Seq::from(st.seq))
            .timestamp(st.ts)
            .marked(marker)
            .payload(body);
        if let Ok(n) = packet.build_into(&mut buf) {
            if self.socket.try_send_to(&buf[..n], remote).is_ok() {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends a mixed frame (linear sum, saturated here) encoded in this phone's codec.
    fn send_linear(&self, mixer: u64, ts: u32, sum: &[i32; 160]) {
        let codec = self.state.lock().expect("output lock").codec;
        let mut frame = [0u8; 160];
        for (o, v) in frame.iter_mut().zip(sum) {
            let v = (*v).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
            *o = match codec {
                Codec::Pcmu => encode_ulaw(v),
                Codec::Pcma => encode_alaw(v),
            };
        }
        self.send(
            Source {
                id: mixer,
                ts,
                marker: false,
                payload_type: codec.payload_type(),
                codec,
                telephone_event: None,
            },
            &frame,
        );
    }

    fn send_music(&self, music: &Music) {
        let (codec, pos, ts) = {
            let mut st = self.state.lock().expect("output lock");
            let pos = st.music_pos;
            st.music_pos = (pos + 160) % music.len();
            st.music_ts = st.music_ts.wrapping_add(160);
            (st.codec, pos, st.music_ts)
        };
        let frame = music.frame(codec, pos);
        self.send(
            Source {
                id: MUSIC,
                ts,
                marker: false,
                payload_type: codec.payload_type(),
                codec,
                telephone_event: None,
            },
            &frame,
        );
    }
}

/// What a leg is told to do with its media; set by the bridge logic in [`crate::calls`].
#[derive(Clone, Default)]
pub struct Plan {
    /// The outputs that hear this leg alone (its packets are relayed to them).
    pub listeners: Vec<Arc<Output>>,
    /// Whether this leg hears the music on hold.
    pub music: bool,
    /// The mixer of this leg's bridge, when some party hears more than one other: this leg's
    /// audio goes there too.
    pub mixer: Option<Arc<Mixer>>,
}

/// What the mixers did, for the benchmark (`MixStats::record` turns the latency samples on).
#[derive(Default)]
pub struct MixStats {
    /// Frames a party sent faster than they could be mixed (the oldest waiting one dropped).
    pub dropped: AtomicU64,
    /// Rounds mixed (one per bridge every 20 ms, unless the machine fell behind).
    pub rounds: AtomicU64,
    record: std::sync::atomic::AtomicBool,
    waits: Mutex<Vec<Duration>>,
}

impl MixStats {
    /// Starts (or stops) keeping how long each frame waited for its round.
    pub fn record(&self, on: bool) {
        self.record.store(on, Ordering::Relaxed);
    }

    fn waited(&self, d: Duration) {
        if self.record.load(Ordering::Relaxed) {
            self.waits.lock().expect("waits").push(d);
        }
    }

    /// The waits kept so far (taken: the list starts again empty).
    pub fn take_waits(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.waits.lock().expect("waits"))
    }
}

/// The mixers' statistics of this process.
pub static MIX_STATS: std::sync::LazyLock<MixStats> = std::sync::LazyLock::new(MixStats::default);

/// One 20 ms frame, 8 kHz linear.
pub type Frame = [i16; 160];

/// A bridge's mixer. Every 20 ms each listener that hears more than one party gets the sum
/// of the latest frame of each party it hears (decoded from G.711, summed with saturation,
/// encoded in the listener's codec), never its own voice. A party whose frame is late is left
/// out of that round; at most three frames wait per party, so a burst cannot build up delay.
pub struct Mixer {
    id: u64,
    frames: Mutex<std::collections::HashMap<u64, std::collections::VecDeque<(Instant, Frame)>>>,
    mixes: Mutex<Vec<(Arc<Output>, Vec<u64>)>>,
    cancel: CancellationToken,
    ts: AtomicU64,
}

impl Drop for Mixer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Mixer {
    /// A mixer, ticking every 20 ms until it is dropped.
    pub fn start() -> Arc<Mixer> {
        let m = Arc::new(Mixer {
            id: NEXT_LEG.fetch_add(1, Ordering::Relaxed),
            frames: Mutex::default(),
            mixes: Mutex::default(),
            cancel: CancellationToken::new(),
            ts: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&m);
        let cancel = m.cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(m) = weak.upgrade() else { return };
                m.round();
            }
        });
        m
    }

    /// Who hears whom: each output with the legs it hears (two or more).
    pub fn set_mixes(&self, mixes: Vec<(Arc<Output>, Vec<u64>)>) {
        let keep: std::collections::HashSet<u64> =
            mixes.iter().flat_map(|(_, s)| s.iter().copied()).collect();
        self.frames
            .lock()
            .expect("frames")
            .retain(|k, _| keep.contains(k));
        *self.mixes.lock().expect("mixes") = mixes;
    }

    /// A frame from a party.
    fn push(&self, source: u64, codec: Codec, payload: &[u8]) {
        let mut f: Frame = [0; 160];
        for (o, b) in f.iter_mut().zip(payload) {
            *o = match codec {
                Codec::Pcmu => decode_ulaw(*b),
                Codec::Pcma => decode_alaw(*b),
            };
        }
        let mut frames = self.frames.lock().expect("frames");
        let q = frames.entry(source).or_default();
        if q.len() >= 3 {
            q.pop_front();
            MIX_STATS.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back((Instant::now(), f));
    }

    /// One round: a frame out to each mixed listener.
    fn round(&self) {
        let now = Instant::now();
        MIX_STATS.rounds.fetch_add(1, Ordering::Relaxed);
        let current: std::collections::HashMap<u64, Frame> = {
            let mut frames = self.frames.lock().expect("frames");
            frames
                .iter_mut()
                .filter_map(|(k, q)| {
                    q.pop_front().map(|(at, f)| {
                        MIX_STATS.waited(now - at);
                        (*k, f)
                    })
                })
                .collect()
        };
        let ts = (self.ts.fetch_add(160, Ordering::Relaxed) & 0xffff_ffff) as u32;
        let mixes = self.mixes.lock().expect("mixes").clone();
        for (out, sources) in mixes {
            let mut sum = [0i32; 160];
            let mut any = false;
            for s in &sources {
                if let Some(f) = current.get(s) {
                    any = true;
                    for (a, b) in sum.iter_mut().zip(f.iter()) {
                        *a += *b as i32;
                    }
                }
            }
            if !any {
                continue;
            }
            out.send_linear(self.id, ts, &sum);
        }
    }
}

/// One call leg's media: its port and the task that relays what it receives.
pub struct Leg {
    pub id: u64,
    pub port: u16,
    pub output: Arc<Output>,
    plan: watch::Sender<Plan>,
    cancel: CancellationToken,
}

impl Drop for Leg {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

static NEXT_LEG: AtomicU64 = AtomicU64::new(1);

/// The gateway's media: where RTP is bound and the music.
pub struct Media {
    bind: IpAddr,
    /// The address written into SDP.
    pub ip: IpAddr,
    ports: Ports,
    music: Arc<Music>,
}

impl Media {
    pub fn new(bind: IpAddr, ip: IpAddr, ports: Ports) -> Self {
        Self {
            bind,
            ip,
            ports,
            music: Arc::new(Music::generate()),
        }
    }

    /// Opens a leg's RTP port and starts relaying.
    pub async fn open(&self) -> std::io::Result<Arc<Leg>> {
        let (socket, port) = self.ports.bind(self.bind).await?;
        let socket = Arc::new(socket);
        let output = Arc::new(Output {
            socket: socket.clone(),
            state: Mutex::new(OutState {
                remote: None,
                latched: false,
                codec: Codec::Pcmu,
                telephone_event: None,
                ssrc: rand::random(),
                seq: rand::random(),
                ts: rand::random(),
                source: u64::MAX,
                source_ts: 0,
                last_sent: None,
                music_pos: 0,
                music_ts: 0,
            }),
            stats: LegStats::default(),
        });
        let (plan, plan_rx) = watch::channel(Plan::default());
        let leg = Arc::new(Leg {
            id: NEXT_LEG.fetch_add(1, Ordering::Relaxed),
            port,
            output,
            plan,
            cancel: CancellationToken::new(),
        });
        tokio::spawn(relay(
            leg.id,
            socket,
            leg.output.clone(),
            plan_rx,
            self.music.clone(),
            leg.cancel.clone(),
        ));
        Ok(leg)
    }
}

impl Leg {
    /// The phone's side as its SDP says (address until packets latch it, codec, events).
    pub fn set_remote(&self, m: &RemoteMedia) {
        let mut st = self.output.state.lock().expect("output lock");
        if !st.latched {
            st.remote = Some(m.addr);
        }
        st.codec = m.codec;
        st.telephone_event = m.telephone_event;
    }

    pub fn set_plan(&self, plan: Plan) {
        self.plan.send_replace(plan);
    }
}

async fn relay(
    id: u64,
    socket: Arc<UdpSocket>,
    output: Arc<Output>,
    mut plan: watch::Receiver<Plan>,
    music: Arc<Music>,
    cancel: CancellationToken,
) {
    let mut buf = [0u8; 2048];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut current = plan.borrow_and_update().clone();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = plan.changed() => {
                if changed.is_err() { break }
                current = plan.borrow_and_update().clone();
            }
            _ = tick.tick(), if current.music => output.send_music(&music),
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let Ok(packet) = RtpReader::new(&buf[..n]) else { continue };
                output.stats.received.fetch_add(1, Ordering::Relaxed);
                let (codec, telephone_event) = {
                    let mut st = output.state.lock().expect("output lock");
                    st.remote = Some(from);
                    st.latched = true;
                    (st.codec, st.telephone_event)
                };
                if current.listeners.is_empty() && current.mixer.is_none() { continue }
                let pt = packet.payload_type();
                let codec = match pt {
                    0 => Codec::Pcmu,
                    8 => Codec::Pcma,
                    _ if Some(pt) == telephone_event => codec,
                    _ => continue, // comfort noise or a codec never negotiated
                };
                let source = Source { id, ts: packet.timestamp(), marker: packet.mark(), payload_type: pt, codec, telephone_event };
                for l in &current.listeners {
                    l.send(source, packet.payload());
                }
                if let Some(m) = &current.mixer {
                    if Some(pt) != telephone_event {
                        m.push(id, codec, packet.payload());
                    }
                }
            }
        }
    }
}
