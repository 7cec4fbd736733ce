//! Real SIP software as the phones and callers of the SIP tests: baresip (driven through its
//! ctrl_tcp interface, recording what it hears with sndfile) and SIPp. Nothing here speaks SIP
//! itself, except `raw_sip`, which sends hand-written bad input.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cc_testkit::free_port;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn need(binary: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {binary}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{binary} is not installed: scripts/test installs it (apt-get install {package})"
    );
}

/// How a baresip phone is set up.
pub struct PhoneSpec<'a> {
    pub user: &'a str,
    /// SIP password; `None`: the phone does not register (a caller on the trunk).
    pub password: Option<&'a str>,
    /// The tone it sends, in Hz.
    pub tone: u32,
    pub auto_answer: bool,
    pub codec: &'a str,
    /// The display name it sends (From).
    pub name: &'a str,
    /// SIP over TCP instead of UDP.
    pub tcp: bool,
}

/// A baresip process.
pub struct Phone {
    child: Child,
    pub dir: PathBuf,
    writer: tokio::net::tcp::OwnedWriteHalf,
    messages: mpsc::UnboundedReceiver<Value>,
    token: u64,
    pub user: String,
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Phone {
    pub async fn start(gateway: SocketAddr, domain: &str, spec: PhoneSpec<'_>) -> Phone {
        Self::start_on("127.0.0.1", gateway, domain, spec).await
    }

    /// A phone on another loopback address (not the tenant's trunk).
    // The child is kept in the Phone and waited for when it is dropped.
    #[allow(clippy::zombie_processes)]
    pub async fn start_on(
        ip: &str,
        gateway: SocketAddr,
        domain: &str,
        spec: PhoneSpec<'_>,
    ) -> Phone {
        need("baresip", "baresip");
        let dir = std::env::temp_dir().join(format!(
            "cc-phone-{}-{}",
            spec.user,
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("rec")).unwrap();
        // baresip binds SIP on UDP and TCP at the port and TLS at the port after it: a port
        // the system hands out may have a neighbour in use, so a start that fails to bind is
        // tried again on other ports.
        let mut attempt = 0;
        let (child, stream) = loop {
            attempt += 1;
            let (sip_port, ctrl_port) = (free_port(), free_port());
            let config = format!(
                "module_path /usr/lib/baresip/modules\nsip_listen {ip}:{sip_port}\naudio_source ausine,{tone}\nausrc_srate 48000\n\
                 ausrc_channels 2\nauplay_srate 48000\nauplay_channels 2\naudio_player aubridge,nil\nsnd_path {rec}\n\
                 ctrl_tcp_listen 127.0.0.1:{ctrl_port}\nmodule g711.so\nmodule ausine.so\nmodule aubridge.so\nmodule sndfile.so\n\
                 module ctrl_tcp.so\nmodule menu.so\nmodule account.so\n",
                tone = spec.tone,
                rec = dir.join("rec").display()
            );
            std::fs::write(dir.join("config"), config).unwrap();
            let auth = match spec.password {
                Some(p) => format!(";auth_pass={p};regint=600"),
                None => ";regint=0".to_string(),
            };
            let answer = if spec.auto_answer { "auto" } else { "manual" };
            let account = format!(
                "{display}<sip:{user}@{domain};transport={transport}>{auth};answermode={answer};outbound=\"sip:{gateway};transport={transport}\";audio_codecs={codec}\n",
                transport = if spec.tcp { "tcp" } else { "udp" },
                user = spec.user,
                codec = spec.codec,
                display = if spec.name.is_empty() { String::new() } else { format!("\"{}\" ", spec.name) }
            );
            std::fs::write(dir.join("accounts"), account).unwrap();
            std::fs::write(dir.join("contacts"), "").unwrap();
            let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
            let mut child = Command::new("baresip")
                .arg("-f")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let stream = loop {
                if let Ok(s) = TcpStream::connect(("127.0.0.1", ctrl_port)).await {
                    break Some(s);
                }
                let log = std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default();
                if log.contains("init failed") && attempt < 5 {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                if std::time::Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "baresip {} opened no ctrl_tcp on {ctrl_port} within 20 s: {log}",
                        spec.user
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            if let Some(stream) = stream {
                break (child, stream);
            }
        };
        let (mut reader, writer) = stream.into_split();
        let (tx, messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // netstrings: <length>:<json>,
            let mut buf: Vec<u8> = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let Ok(n) = reader.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(colon) = buf.iter().position(|b| *b == b':') {
                    let Ok(len) = std::str::from_utf8(&buf[..colon])
                        .unwrap_or("x")
                        .trim()
                        .parse::<usize>()
                    else {
                        return;
                    };
                    if buf.len() < colon + 1 + len + 1 {
                        break;
                    }
                    let msg = buf[colon + 1..colon + 1 + len].to_vec();
                    buf.drain(..colon + 1 + len + 1);
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg) {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        Phone {
            child,
            dir,
            writer,
            messages,
            token: 0,
            user: spec.user.to_string(),
        }
    }

    /// Sends a ctrl_tcp command (`dial`, `accept`, `hangup`, ...).
    pub async fn command(&mut self, command: &str, params: &str) {
        self.token += 1;
        let body =
            json!({"command": command, "params": params, "token": format!("t{}", self.token)})
                .to_string();
        let frame = format!("{}:{},", body.len(), body);
        self.writer.write_all(frame.as_bytes()).await.unwrap();
    }

    /// Waits for a baresip event of this type (REGISTER_OK, CALL_INCOMING, CALL_ESTABLISHED, ...).
    pub async fn event(&mut self, kind: &str, wait: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(v)) if v["event"] == true && v["type"] == kind => return v,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("phone {}: baresip stopped (log: {})", self.user, self.log()),
                Err(_) => panic!(
                    "phone {}: no {kind} within {wait:?} (log: {})",
                    self.user,
                    self.log()
                ),
            }
        }
    }

    /// Waits until baresip says how its REGISTER was answered (its status line, e.g.
    /// `200 OK` or `403 Forbidden`; ctrl_tcp's REGISTER_OK may come before we connect).
    /// baresip prints `...}} 200 OK` on success and `reg: <aor>: 403 Forbidden` on failure.
    pub async fn registration(&self, status: &str) {
        let what = format!("phone {} REGISTER answered {status}", self.user);
        cc_testkit::eventually(&what, Duration::from_secs(20), || async {
            std::fs::read_to_string(self.dir.join("baresip.log"))
                .unwrap_or_default()
                .contains(&format!(" {status} ("))
                .then_some(())
        })
        .await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log"))
            .unwrap_or_default()
            .chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }

    /// What the phone heard on its calls (sndfile's decoded stream), newest call last.
    pub fn heard(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.join("rec"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        v.sort();
        v
    }
}

/// 16-bit PCM samples of a WAV file (first channel) and its rate.
pub fn wav(path: &Path) -> (Vec<f64>, u32) {
    let b = std::fs::read(path).unwrap();
    assert!(
        b.len() > 44 && &b[0..4] == b"RIFF",
        "{} is no WAV",
        path.display()
    );
    let (mut pos, mut channels, mut rate) = (12, 1u16, 8000u32);
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            channels = u16::from_le_bytes([b[body + 2], b[body + 3]]);
            rate = u32::from_le_bytes(b[body + 4..body + 8].try_into().unwrap());
        } else if id == b"data" {
            // sndfile may leave the length open while writing: take what is there.
            let end = if len == 0 || body + len > b.len() {
                b.len()
            } else {
                body + len
            };
            let samples = b[body..end]
                .chunks_exact(2 * channels as usize)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f64)
                .collect();
            return (samples, rate);
        }
        pos = body + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// The power of one frequency in a window of samples (Goertzel).
pub fn goertzel(samples: &[f64], rate: u32, freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / rate as f64).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in samples {
        let s0 = x + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / samples.len().max(1) as f64
}

/// The music on hold's notes (see cc_sip_gateway::moh), summed.
pub fn music(samples: &[f64], rate: u32) -> f64 {
    [261.63, 329.63, 392.0, 523.25, 196.0]
        .iter()
        .map(|f| goertzel(samples, rate, *f))
        .sum()
}

/// Samples between two offsets (seconds) of a recording.
pub fn window(samples: &[f64], rate: u32, from: f64, to: f64) -> &[f64] {
    let a = ((from * rate as f64) as usize).min(samples.len());
    let b = ((to * rate as f64) as usize).min(samples.len());
    &samples[a..b.max(a)]
}

/// Asserts that `heard` holds tone `yes` far above tone `no` (at least 20 dB).
#[track_caller]
pub fn assert_hears(what: &str, samples: &[f64], rate: u32, yes: f64, no: f64) {
    assert!(
        samples.len() > rate as usize / 2,
        "{what}: too little audio ({} samples)",
        samples.len()
    );
    let (y, n) = (goertzel(samples, rate, yes), goertzel(samples, rate, no));
    assert!(
        y > 100.0 * n.max(1.0),
        "{what}: {yes} Hz at {y:.0} should be 100 times {no} Hz at {n:.0}"
    );
}

/// Asserts that a recording, from the first 100 ms in which tone `yes` is louder than `no` to
/// its end, holds `yes` far above `no` (as [`assert_hears`]) for at least `at_least_s`: the
/// switch is found in the audio, not on the test's clock (a busy machine delays the phone's
/// events the test reads, not what the phone heard). A switch that mixes the two for a while
/// fails, as does one heard too late or never.
#[track_caller]
pub fn assert_hears_from_the_switch(
    what: &str,
    samples: &[f64],
    rate: u32,
    yes: f64,
    no: f64,
    at_least_s: f64,
) {
    let frame = rate as usize / 10;
    let switch = samples
        .chunks(frame)
        .position(|f| f.len() == frame && goertzel(f, rate, yes) > goertzel(f, rate, no))
        .unwrap_or_else(|| panic!("{what}: {yes} Hz is never louder than {no} Hz"));
    let end = samples.len() as f64 / rate as f64;
    let from = (switch + 1) as f64 / 10.0;
    assert!(
        end - 0.2 - from >= at_least_s,
        "{what}: {yes} Hz heard from {from:.1} s to the end at {end:.1} s, not {at_least_s:.1} s"
    );
    assert_hears(what, window(samples, rate, from, end - 0.2), rate, yes, no);
}

/// A SIPp scenario run to its end (`-m 1`), from `source_ip`.
pub fn sipp(
    scenario_xml: &str,
    target: SocketAddr,
    source_ip: &str,
    extra: &[&str],
) -> std::process::Output {
    need("sipp", "sip-tester");
    let dir = std::env::temp_dir().join(format!("cc-sipp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("scenario.xml");
    std::fs::write(&file, scenario_xml).unwrap();
    Command::new("sipp")
        .current_dir(&dir)
        .arg(target.to_string())
        .args([
            "-sf",
            file.to_str().unwrap(),
            "-i",
            source_ip,
            "-p",
            &free_port().to_string(),
            "-m",
            "1",
            "-timeout",
            "30s",
            "-timeout_error",
            "-nostdin",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Sends one hand-written datagram and returns the status code of the answer, if any.
pub async fn raw_sip(target: SocketAddr, source_ip: &str, message: &str) -> Option<u16> {
    let s = tokio::net::UdpSocket::bind((source_ip, 0)).await.unwrap();
    let port = s.local_addr().unwrap().port();
    let message = message
        .replace("{port}", &port.to_string())
        .replace("{src}", source_ip);
    s.send_to(message.as_bytes(), target).await.unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), s.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
        if code >= 200 {
            return Some(code);
        }
    }
}

/// A SIPp scenario as a server on `port`, running until its one call ends.
pub fn sipp_spawn(scenario_xml: &str, port: u16) -> Child {
    need("sipp", "sip-tester");
    let dir = std::env::temp_dir().join(format!("cc-sipp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("scenario.xml");
    std::fs::write(&file, scenario_xml).unwrap();
    Command::new("sipp")
        .current_dir(&dir)
        .args([
            "-sf",
            file.to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-timeout",
            "60s",
            "-nostdin",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A linphonec process (Debian's linphone-cli): a second, independent SIP client, driven on its
/// console. It registers with digest (its registrar and proxy: the gateway's address, its
/// identity in the tenant's domain), answers by itself, places calls and transfers them
/// (blind, or attended: `transfer <id1> --to-call <id2>`, REFER with Replaces). It sends
/// silence.
pub struct Linphone {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    pub user: String,
    dir: PathBuf,
}

impl Linphone {
    /// The end of linphone's own log (SIP messages included).
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("linphone.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub async fn start(gateway: SocketAddr, domain: &str, user: &str, password: &str) -> Linphone {
        need("linphonec", "linphone-cli");
        let dir = std::env::temp_dir().join(format!(
            "cc-linphone-{user}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        // linphone keeps its databases under $HOME and does not start without that directory.
        std::fs::create_dir_all(dir.join(".local/share/linphone")).unwrap();
        let rc = format!(
            "[sip]\nsip_port={sip}\nsip_tcp_port=-1\nsip_tls_port=-1\ndefault_proxy=0\nguess_hostname=1\n\
             [rtp]\naudio_rtp_port={rtp}\n\
             [sound]\nechocancellation=0\n\
             [proxy_0]\nreg_proxy=<sip:{gateway};transport=udp>\nreg_route=<sip:{gateway};transport=udp;lr>\n\
             reg_identity=sip:{user}@{domain}\nreg_expires=600\nreg_sendregister=1\npublish=0\n\
             [auth_info_0]\nusername={user}\npasswd={password}\nrealm={domain}\ndomain={domain}\n",
            sip = free_port(),
            rtp = free_port() & !1,
        );
        std::fs::write(dir.join("linphonerc"), rc).unwrap();
        let mut child = tokio::process::Command::new("linphonec")
            .arg("-c")
            .arg(dir.join("linphonerc"))
            .arg("-a")
            .arg("-d")
            .arg("5")
            .arg("-l")
            .arg(dir.join("linphone.log"))
            .env("HOME", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("linphonec starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        let console = dir.join("console.log");
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line = String::from_utf8_lossy(&buf[..i]).to_string();
                    buf.drain(..=i);
                    use std::io::Write as _;
                    if let Ok(mut f) = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&console)
                    {
                        let _ = writeln!(f, "{line}");
                    }
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        });
        let mut p = Linphone {
            child,
            stdin,
            lines,
            seen: vec![],
            user: user.to_string(),
            dir,
        };
        p.send("soundcard use files").await;
        p.expect("wav files", Duration::from_secs(20)).await;
        p
    }

    /// Types a console command.
    pub async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Waits for a console line containing `text`, after those seen already. (Registration and
    /// calls are followed through the portal and the other phones, not linphonec's words.)
    pub async fn expect(&mut self, text: &str, wait: Duration) -> String {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.seen.push(l.clone());
                    if l.contains(text) {
                        return l;
                    }
                }
                Ok(None) => panic!(
                    "linphonec {} stopped; it said: {}",
                    self.user,
                    self.seen.join("\n")
                ),
                Err(_) => panic!(
                    "linphonec {}: no {text:?} within {wait:?}; it said: {}\nits log: {}",
                    self.user,
                    self.seen.join("\n"),
                    self.log()
                ),
            }
        }
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[cfg(test)]
mod audio_checks {
    use super::*;

    /// `parts` of (seconds, tones at full amplitude) one after the other, 8 kHz.
    fn tones(parts: &[(f64, &[f64])]) -> Vec<f64> {
        parts
            .iter()
            .flat_map(|(s, fs)| {
                (0..(s * 8000.0) as usize).map(move |i| {
                    let t = i as f64 / 8000.0;
                    fs.iter()
                        .map(|f| 8000.0 * (2.0 * std::f64::consts::PI * f * t).sin())
                        .sum::<f64>()
                })
            })
            .collect()
    }

    #[test]
    fn a_clean_switch_passes_and_a_mixed_late_or_missing_one_fails() {
        let clean = tones(&[(2.0, &[697.0]), (3.0, &[941.0])]);
        assert_hears_from_the_switch("clean", &clean, 8000, 941.0, 697.0, 2.5);
        for (name, parts) in [
            (
                "mixed",
                vec![
                    (2.0, &[697.0][..]),
                    (1.0, &[697.0, 941.0][..]),
                    (2.0, &[941.0][..]),
                ],
            ),
            ("late", vec![(4.0, &[697.0][..]), (1.0, &[941.0][..])]),
            ("never", vec![(5.0, &[697.0][..])]),
        ] {
            let s = tones(&parts);
            let failed = std::panic::catch_unwind(|| {
                assert_hears_from_the_switch(name, &s, 8000, 941.0, 697.0, 2.5)
            });
            assert!(failed.is_err(), "{name} passed");
        }
    }
}
