//! A service binary (the relay, the control plane) run as a child process,
//! for the tests that crash it: started and waited for on its port, killed
//! with SIGKILL (no shutdown, no drain: its connections simply break),
//! started again with the same arguments.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestkitError;

/// How long a service gets to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One service binary; killed when dropped.
pub struct ServiceProcess {
    program: PathBuf,
    args: Vec<OsString>,
    addr: String,
    child: Option<Child>,
}

impl ServiceProcess {
    /// `program` with `args`, listening on `addr` (`host:port`) once up.
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
        addr: &str,
    ) -> ServiceProcess {
        ServiceProcess {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            addr: addr.to_owned(),
            child: None,
        }
    }

    /// The `host:port` it listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Starts it (its log goes to the test's stderr) and waits until its
    /// port accepts connections.
    pub async fn start(&mut self) -> Result<(), TestkitError> {
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(&self.addr).await.is_err() {
            if Instant::now() >= deadline {
                return Err(TestkitError::Stack(format!(
                    "{} did not open {} within {START_TIMEOUT:?}",
                    self.program.display(),
                    self.addr
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
