//! polkit's text agent for a person at a terminal, the way `systemctl` does it: before a
//! mutating call, a non-root user on a terminal gets `pkttyagent` registered for this process,
//! so that polkit's `auth_admin` answer becomes a password prompt instead of a refusal.
//!
//! The agent is registered for this process alone (`--process`), so a desktop agent keeps
//! serving everything else; the prompt of this command comes in its own terminal. Not
//! `--fallback` (what systemctl passes for its session-wide agent): polkit 122 never consults
//! a fallback agent registered for a process, so the call would be refused (tested in
//! tests/polkit-agent).

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::{Child, Command};

const PKTTYAGENT: &str = "/usr/bin/pkttyagent";

/// A running `pkttyagent`; dropping it stops the agent.
#[derive(Debug)]
pub struct TtyAgent {
    child: Child,
}

impl TtyAgent {
    /// Starts the agent when it can help: a terminal on stdin, not root (root is always
    /// authorized), and pkttyagent installed. Returns once the agent is registered (or gave
    /// up), so the call that follows can use it. Anything that fails here only means polkit
    /// will refuse with a message that says how to authenticate.
    pub fn start_if_useful() -> Option<TtyAgent> {
        if rustix::process::geteuid().is_root()
            || !std::io::stdin().is_terminal()
            || !Path::new(PKTTYAGENT).exists()
        {
            return None;
        }
        // pkttyagent closes its --notify-fd once registered. Its stdout serves as that fd (it
        // talks to the person through /dev/tty), so no file descriptor juggling is needed.
        let (mut registered, notify) = std::io::pipe().ok()?;
        let mut command = Command::new(PKTTYAGENT);
        command
            .args(["--notify-fd", "1", "--process"])
            .arg(std::process::id().to_string())
            .stdout(notify);
        let child = command.spawn().ok()?;
        // Our copy of the pipe's write end lives in `command`: without dropping it the read
        // below would never see the end.
        drop(command);
        let mut ignored = Vec::new();
        let _ = registered.read_to_end(&mut ignored);
        Some(TtyAgent { child })
    }
}

impl Drop for TtyAgent {
    /// SIGTERM first, as systemctl stops its agent: pkttyagent then restores the terminal it
    /// may have switched to no-echo for a prompt, which SIGKILL would leave off. SIGKILL only
    /// if it has not exited a second later.
    fn drop(&mut self) {
        let pid = i32::try_from(self.child.id()).ok().and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            for _ in 0..100 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
