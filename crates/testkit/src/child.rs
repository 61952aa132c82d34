//! Tearing down a harness child that runs in its own process group and stops
//! when its stdin (a pipe from the harness) closes: the OpenID provider and
//! the SMTP server. Shared so both wait, kill and clean up the same way.

use std::path::Path;
use std::process::{Child, ChildStdin};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::samba::keep_dirs;

/// How long a child may take to exit after its stdin closed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Closes `stdin` (the child's signal to exit), waits up to [`STOP_GRACE`],
/// then SIGKILLs its process group; then removes `dir` (kept with
/// `WRITEBACK_TESTKIT_KEEP=1`). `what` names the child in logs.
pub(crate) fn stop(
    what: &str,
    stdin: Option<ChildStdin>,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    dir_path: &Path,
) {
    drop(stdin);
    if let Some(mut child) = child {
        stop_child(what, &mut child);
    }
    if let Some(dir) = dir {
        if keep_dirs() {
            let kept = dir.keep();
            info!(dir = %kept.display(), "keeping the {what} directory");
        } else if let Err(e) = dir.close() {
            warn!(dir = %dir_path.display(), error = %e, "removing the {what} directory failed");
        }
    }
}

fn stop_child(what: &str, child: &mut Child) {
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => break,
        }
    }
    // Not reaped yet, so the group id is still ours to signal.
    warn!(
        pid = child.id(),
        "{what} did not stop on stdin EOF; killing its process group"
    );
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.wait();
}
