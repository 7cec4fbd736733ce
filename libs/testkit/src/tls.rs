//! Certificates made at test time with the `openssl` command, and a PostgreSQL server of the
//! test's own that speaks only TLS.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A CA, a server certificate for `127.0.0.1` / `localhost` and a client certificate it signed,
/// and a second CA that signed none of them (the "wrong CA"). PEM files in a temporary
/// directory, removed on drop.
pub struct Certs {
    /// The directory of every file below.
    pub dir: PathBuf,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// The server's certificate (subject alternative names `127.0.0.1`, `localhost`) and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The client's certificate (extended key usage `clientAuth`) and key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA unrelated to the certificates above.
    pub other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (scripts/test installs it): {e}"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn self_signed_ca(dir: &Path, name: &str) {
    let (key, crt, subj) = (
        format!("{name}.key"),
        format!("{name}.crt"),
        format!("/CN=cc test {name}"),
    );
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(EC);
    args.extend([
        "-keyout",
        &key,
        "-out",
        &crt,
        "-subj",
        &subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
}

fn signed(dir: &Path, name: &str, cn: &str, extensions: &str) {
    let (key, csr, crt, ext, subj) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
        format!("/CN={cn}"),
    );
    std::fs::write(dir.join(&ext), extensions).unwrap();
    let mut args = vec!["req", "-nodes"];
    args.extend(EC);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
    openssl(dir, &args);
    let serial = format!("0x{}", uuid::Uuid::new_v4().simple());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
}

impl Certs {
    /// Generates the files; the client certificate's common name is `client_cn` (PostgreSQL's
    /// `cert` authentication takes it as the user name).
    pub fn generate(client_cn: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("cc-certs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        self_signed_ca(&dir, "ca");
        self_signed_ca(&dir, "other-ca");
        signed(
            &dir,
            "server",
            "localhost",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        signed(
            &dir,
            "client",
            client_cn,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        Certs {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.crt"),
            dir,
        }
    }

    /// The `tls` block of a nats-server configuration that requires a client certificate
    /// signed by the CA.
    pub fn nats_server_block(&self) -> String {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 2\n}}\n",
            self.server_cert.display(),
            self.server_key.display(),
            self.ca.display()
        )
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of the installed PostgreSQL binaries: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (as scripts/lib/deps.sh finds them).
pub fn postgres_bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|(_, d)| d)
        .expect("no PostgreSQL binaries (initdb) installed")
}

/// The uid and gid of the `postgres` user when the test runs as root (initdb refuses root).
fn unprivileged() -> Option<(u32, u32)> {
    let id = |flag: &str, user: Option<&str>| -> u32 {
        let out = Command::new("id").arg(flag).args(user).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u", None) == 0).then(|| (id("-u", Some("postgres")), id("-g", Some("postgres"))))
}

/// A PostgreSQL cluster of the test's own on a free loopback port, user `postgres`. Stopped
/// and removed on drop.
///
/// - [`PgServer::start_tls`]: TLS only (`hostssl ... cert`, so a client certificate whose
///   common name is the user; `hostnossl ... reject`), the server certificate of `certs`.
/// - [`PgServer::start_plain`]: plain TCP, `trust` (fault tests that restart it:
///   [`PgServer::restart`]).
pub struct PgServer {
    child: Option<Child>,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    data: PathBuf,
    tls: bool,
}

fn as_user(c: &mut Command) {
    if let Some((uid, gid)) = unprivileged() {
        c.uid(uid).gid(gid);
    }
}

fn chown(p: &Path) {
    if unprivileged().is_some() {
        assert!(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(p)
            .status()
            .unwrap()
            .success());
    }
}

impl PgServer {
    /// Creates the cluster (initdb) and starts it; returns once it accepts connections.
    pub fn start_tls(certs: &Certs) -> PgServer {
        let data = Self::initdb();
        for (from, to) in [
            (&certs.server_cert, "server.crt"),
            (&certs.server_key, "server.key"),
            (&certs.ca, "ca.crt"),
        ] {
            std::fs::copy(from, data.join(to)).unwrap();
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 cert\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        chown(&data);
        let key = data.join("server.key");
        assert!(Command::new("chmod")
            .arg("600")
            .arg(&key)
            .status()
            .unwrap()
            .success());
        Self::started(data, true)
    }

    /// A cluster without TLS: every loopback connection trusted as any user.
    pub fn start_plain() -> PgServer {
        let data = Self::initdb();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        chown(&data);
        Self::started(data, false)
    }

    /// The admin URL (database `postgres`) of a plain server.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn initdb() -> PathBuf {
        let data = std::env::temp_dir().join(format!("cc-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data).unwrap();
        chown(&data);
        let mut initdb = Command::new(postgres_bindir().join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-N"])
            .env("LC_ALL", "C");
        as_user(&mut initdb);
        let out = initdb.output().unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        data
    }

    fn started(data: PathBuf, tls: bool) -> PgServer {
        let mut s = PgServer {
            child: None,
            port: free_port(),
            data,
            tls,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let bin = postgres_bindir();
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.data)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ]);
        if self.tls {
            postgres.args([
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
                "-c",
                "ssl_ca_file=ca.crt",
            ]);
        }
        postgres.stdout(Stdio::null()).stderr(Stdio::null());
        as_user(&mut postgres);
        self.child = Some(postgres.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(&self.data)
                .args(["-p", &self.port.to_string()])
                .status()
                .unwrap();
            if ready.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (a fast shutdown: every connection is cut, nothing committed is lost).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A fast shutdown (SIGINT): the server's children stop with it.
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server and starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
