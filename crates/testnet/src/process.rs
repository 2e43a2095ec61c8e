//! Starting and stopping the network's processes, always by PID.
//!
//! A PID is only signalled while its command line still names what we
//! started (the torrc path, the app's listen address), so a PID the kernel
//! reused for something else after a crash is never touched.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt as _;

use crate::error::Error;

/// How long a process gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What identifies a process we started, as written to the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// The node (or `<node>-app`) it belongs to.
    pub name: String,
    /// Its PID.
    pub pid: u32,
    /// A string its command line contains while it is still ours.
    pub marker: String,
}

/// A process this program started and still owns.
#[derive(Debug)]
pub struct Process {
    record: ProcessRecord,
    child: Child,
}

impl Process {
    /// Starts `command` in its own process group (so a Ctrl-C meant for us
    /// does not reach it) with output appended to `log`.
    pub fn spawn(
        name: &str,
        marker: &str,
        mut command: Command,
        log: &Path,
    ) -> Result<Self, Error> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io("opening log", log))?;
        let err = out.try_clone().map_err(Error::io("opening log", log))?;
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| Error::MissingProgram { program, source })?;
        Ok(Process {
            record: ProcessRecord {
                name: name.to_owned(),
                pid: child.id(),
                marker: marker.to_owned(),
            },
            child,
        })
    }

    /// What identifies it.
    pub fn record(&self) -> &ProcessRecord {
        &self.record
    }

    /// How it exited, if it has.
    pub fn exit_status(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Stops it: SIGTERM, then SIGKILL after `grace`; reaps it.
    pub fn stop(&mut self, grace: Duration) {
        if self.exit_status().is_some() {
            return;
        }
        let pid = pid(self.record.pid);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exit_status().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends it SIGSTOP (`paused`) or SIGCONT, as a hung or overloaded
    /// process would behave; does nothing once it has exited.
    pub fn pause(&mut self, paused: bool) {
        if self.exit_status().is_some() {
            return;
        }
        let signal = if paused {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        let _ = kill(pid(self.record.pid), signal);
    }

    /// Gives up ownership without stopping it, for a network that is to
    /// outlive this program; [`stop_recorded`] stops it later.
    pub fn detach(self) -> ProcessRecord {
        self.record
    }
}

/// What [`stop_recorded`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was running and has been stopped.
    Stopped,
    /// It was no longer running.
    AlreadyGone,
    /// Its PID now belongs to another program, which was left alone.
    NotOurs,
}

/// Stops a process started by an earlier run, if it is still the one.
pub fn stop_recorded(record: &ProcessRecord, grace: Duration) -> StopOutcome {
    match state(record) {
        RecordState::Gone => return StopOutcome::AlreadyGone,
        RecordState::Reused => return StopOutcome::NotOurs,
        RecordState::Running => {}
    }
    let pid = pid(record.pid);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if state(record) != RecordState::Running {
            return StopOutcome::Stopped;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if state(record) == RecordState::Running {
        let _ = kill(pid, Signal::SIGKILL);
    }
    StopOutcome::Stopped
}

/// Whether a recorded process still runs.
pub fn is_running(record: &ProcessRecord) -> bool {
    state(record) == RecordState::Running
}

#[derive(Debug, PartialEq, Eq)]
enum RecordState {
    Running,
    Gone,
    Reused,
}

fn state(record: &ProcessRecord) -> RecordState {
    let proc_dir = Path::new("/proc").join(record.pid.to_string());
    let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
        return RecordState::Gone;
    };
    // A zombie has an empty command line; it is gone for our purposes.
    if cmdline.is_empty() {
        return RecordState::Gone;
    }
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if cmdline.contains(&record.marker) {
        RecordState::Running
    } else {
        RecordState::Reused
    }
}

fn pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return format!("(no log at {})", path.display());
    };
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    format!(
        "--- last {} lines of {} ---\n{}",
        tail.len(),
        path.display(),
        tail.join("\n")
    )
}

#[cfg(test)]
mod test {
    use super::*;

    /// A `sleep` we own, once it has exec'd (before that its command line
    /// is still ours).
    fn sleeper(dir: &Path) -> Process {
        let mut command = Command::new("sleep");
        command.arg("300");
        let process = Process::spawn("sleeper", "sleep 300", command, &dir.join("log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_running(process.record()) {
            assert!(Instant::now() < deadline, "sleep never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        process
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("onionlb-process-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn owned_process_is_stopped_and_reaped() {
        let dir = tempdir("owned");
        let mut process = sleeper(&dir);
        assert!(is_running(process.record()));
        assert_eq!(process.exit_status(), None);
        process.stop(Duration::from_secs(5));
        assert!(process.exit_status().is_some());
        assert!(!is_running(process.record()));
    }

    #[test]
    fn recorded_process_is_stopped_only_if_ours() {
        let dir = tempdir("recorded");
        let mut process = sleeper(&dir);
        let mut impostor = process.record().clone();
        impostor.marker = "something-else-entirely".into();
        assert_eq!(stop_recorded(&impostor, STOP_GRACE), StopOutcome::NotOurs);
        assert!(is_running(process.record()));

        let record = process.record().clone();
        assert_eq!(stop_recorded(&record, STOP_GRACE), StopOutcome::Stopped);
        let _ = process.child.wait();
        assert_eq!(stop_recorded(&record, STOP_GRACE), StopOutcome::AlreadyGone);
    }

    #[test]
    fn log_tail_shows_the_end() {
        let dir = tempdir("tail");
        let log = dir.join("x.log");
        std::fs::write(&log, "1\n2\n3\n4\n").unwrap();
        assert!(log_tail(&log, 2).ends_with("\n3\n4"));
        assert!(log_tail(&dir.join("missing"), 2).contains("no log"));
    }
}
