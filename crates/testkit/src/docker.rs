//! Containers for the tests that need a machine of their own: the fresh-machine
//! test (scripts/install-deps.sh in a clean Debian container) and the
//! docker-compose test.
//!
//! [`Container`] is one container started with `docker run -d`, removed with
//! `docker rm -f` when dropped. Every container carries the label
//! `writeback.test.pid` with the test process's id, and [`Container::run`]
//! first removes containers whose process is gone, so a killed test leaves
//! nothing behind for long. [`base_image`] calls `scripts/base-image.sh`, which
//! builds the Debian bookworm base image locally when no registry can be reached.
//!
//! These call the `docker` command line (as the README's own commands do) rather
//! than the engine's API: what a test proves is then exactly what a user runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{TestkitError, tail_lines};

/// Label that marks a test container with the id of the process that owns it.
const PID_LABEL: &str = "writeback.test.pid";

/// The checkout this testkit was built from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Caches that live outside the checkout (`$WRITEBACK_CACHE_DIR`, default
/// `~/.cache/writeback`), e.g. the base root file system and apt's downloads.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WRITEBACK_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/writeback")
}

/// Runs `program args…`, returning its output whatever its exit status; an
/// error only when it could not be started.
pub fn output(program: &str, args: &[&str]) -> Result<Output, TestkitError> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(program, e))
}

/// Runs `program args…` and returns its stdout; a non-zero exit is an error
/// carrying its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, TestkitError> {
    let out = output(program, args)?;
    checked(&format!("{program} {}", args.join(" ")), out)
}

/// Runs `program args…` with `input` on stdin (how secrets reach a command),
/// returning its output whatever its exit status.
pub fn output_with_input(
    program: &str,
    args: &[&str],
    input: &[u8],
) -> Result<Output, TestkitError> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(program, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| TestkitError::io(format!("write to {program}'s stdin"), e))?;
    }
    child
        .wait_with_output()
        .map_err(|e| TestkitError::io(format!("wait for {program}"), e))
}

fn checked(what: &str, out: Output) -> Result<String, TestkitError> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(TestkitError::Command {
        command: what.to_owned(),
        status: out.status.to_string(),
        stderr: tail_lines(&String::from_utf8_lossy(&out.stderr), 40),
    })
}

fn spawn_error(program: &str, e: std::io::Error) -> TestkitError {
    TestkitError::io(
        format!("run {program} (a Docker engine and scripts/install-deps.sh are required)"),
        e,
    )
}

/// The Debian bookworm base image of the project's images, from
/// `scripts/base-image.sh`; `clean` asks for the locally built root file system
/// (never a pulled image).
pub fn base_image(clean: bool) -> Result<String, TestkitError> {
    let script = repo_root().join("scripts/base-image.sh");
    let script = script.to_string_lossy();
    let args: &[&str] = if clean {
        &[&script, "--clean"]
    } else {
        &[&script]
    };
    Ok(run("bash", args)?.trim().to_owned())
}

/// One running container, removed when dropped.
#[derive(Debug)]
pub struct Container {
    id: String,
}

impl Container {
    /// `docker run -d <options> <image> <command>`, labelled with this process's id.
    pub fn run(options: &[&str], image: &str, command: &[&str]) -> Result<Container, TestkitError> {
        remove_orphans();
        let label = format!("{PID_LABEL}={}", std::process::id());
        let mut args = vec!["run", "-d", "--label", &label];
        args.extend_from_slice(options);
        args.push(image);
        args.extend_from_slice(command);
        let id = run("docker", &args)?.trim().to_owned();
        Ok(Container { id })
    }

    /// `docker exec` of `command`, with its output whatever its exit status.
    pub fn exec(&self, command: &[&str]) -> Result<Output, TestkitError> {
        let mut args = vec!["exec", self.id.as_str()];
        args.extend_from_slice(command);
        output("docker", &args)
    }

    /// `docker exec` of `command`; a non-zero exit is an error.
    pub fn exec_ok(&self, command: &[&str]) -> Result<String, TestkitError> {
        let mut args = vec!["exec", self.id.as_str()];
        args.extend_from_slice(command);
        run("docker", &args)
    }

    /// `docker exec -d` of `command`: started in the background.
    pub fn spawn(&self, command: &[&str]) -> Result<(), TestkitError> {
        let mut args = vec!["exec", "-d", self.id.as_str()];
        args.extend_from_slice(command);
        run("docker", &args).map(drop)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = output("docker", &["rm", "-f", "-v", &self.id]);
    }
}

/// Removes test containers whose owning process no longer runs.
fn remove_orphans() {
    let filter = format!("label={PID_LABEL}");
    let format = format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}");
    let Ok(list) = run(
        "docker",
        &["ps", "-a", "--filter", &filter, "--format", &format],
    ) else {
        return;
    };
    for line in list.lines() {
        let mut parts = line.split_whitespace();
        let (Some(id), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = output("docker", &["rm", "-f", "-v", id]);
        }
    }
}
