use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use cc_testkit::free_port;

/// A running `callcenter` process on free ports with its own subject prefix.
pub struct Callcenter {
    child: Option<Child>,
    pub admin_port: u16,
}

impl Callcenter {
    pub fn command(database_url: &str, nats_url: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_callcenter"));
        c.args(args)
            .env_clear()
            .env("CC_DATABASE_URL", database_url)
            .env("CC_NATS_URL", nats_url)
            .env(
                "CC_SUBJECT_PREFIX",
                format!("t{}", uuid::Uuid::new_v4().simple()),
            )
            .env("CC_LOG", "info");
        c
    }

    pub fn output(database_url: &str, nats_url: &str, args: &[&str]) -> Output {
        Self::command(database_url, nats_url, args)
            .output()
            .unwrap()
    }

    pub fn spawn(database_url: &str, nats_url: &str, args: &[&str]) -> Callcenter {
        Self::spawn_with(database_url, nats_url, args, |_| {})
    }

    pub fn spawn_with(
        database_url: &str,
        nats_url: &str,
        args: &[&str],
        more: impl FnOnce(&mut Command),
    ) -> Callcenter {
        let admin_port = free_port();
        let mut c = Self::command(database_url, nats_url, args);
        c.env("CC_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("CC_PORTAL_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("CC_PBX_SIM_ADDR", format!("127.0.0.1:{}", free_port()))
            // CC_TEST_LOGS=1 shows the services' logs (with `--no-capture`).
            .stdout(if std::env::var_os("CC_TEST_LOGS").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            });
        more(&mut c);
        let child = c.spawn().unwrap();
        Callcenter {
            child: Some(child),
            admin_port,
        }
    }

    /// Not a process yet.
    pub fn placeholder() -> Callcenter {
        Callcenter {
            child: None,
            admin_port: 0,
        }
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process has exited (a crash, a failure at start).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The process's `/metrics` text, or `None` while it does not answer.
    pub async fn metrics(&self, http: &reqwest::Client) -> Option<String> {
        http.get(self.admin("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "did not stop within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Callcenter {
    fn drop(&mut self) {
        self.kill();
    }
}
