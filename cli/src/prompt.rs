//! Password prompts on the terminal that a Ctrl-C (or a kill) ends cleanly.

use std::ffi::c_int;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Result;

/// The signals that end a prompt: the user's ^C, a kill, a closed terminal.
const ENDING: [c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The signal caught while a prompt read, 0 for none.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(sig: c_int) {
    CAUGHT.store(sig, Ordering::SeqCst);
}

/// Reads a password on the terminal after `msg`.
///
/// rpassword turns the terminal's own signals off while it reads, reads a
/// ^C as a character and raises SIGINT itself before it puts the terminal
/// back. At the default action cairn died there with echo left off; under
/// a command's own handler it went on to fail with exit 1 (and told
/// `--on-failure` hooks). For the prompt's length these signals only end
/// the read: the terminal is put back, then cairn dies by the signal, as a
/// shell expects of a ^C. `instead` says how else to give the password,
/// for a terminal that cannot be read (no controlling terminal: `setsid`,
/// some service managers and containers).
pub fn password(msg: String, instead: &str) -> Result<Vec<u8>> {
    CAUGHT.store(0, Ordering::SeqCst);
    let held = Handlers::install();
    let read = rpassword::prompt_password(msg);
    drop(held);
    let caught = CAUGHT.load(Ordering::SeqCst);
    match read {
        Ok(p) if caught == 0 => Ok(p.into_bytes()),
        Err(e) if caught == 0 && e.kind() != std::io::ErrorKind::Interrupted => Err(
            anyhow::anyhow!("cannot ask for the password on the terminal ({e}): {instead}"),
        ),
        _ => {
            // The cursor is still on the prompt's line.
            if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
                let _ = std::io::Write::write_all(&mut tty, b"\n");
            }
            // A second password (copy's source) may come after a lock.
            cairn_engine::lock::release_held();
            crate::exit::die_by(if caught == 0 { libc::SIGINT } else { caught })
        }
    }
}

/// The actions [`ENDING`] had before a prompt, put back on drop.
struct Handlers(Vec<(c_int, libc::sigaction)>);

impl Handlers {
    fn install() -> Handlers {
        let mut old = Vec::new();
        for sig in ENDING {
            // One ignored at start (nohup, a script's background job) stays so.
            if crate::exit::ignored(sig) {
                continue;
            }
            // SAFETY: a plain sigaction; `note` only stores to an atomic.
            // No SA_RESTART, so that the read ends with EINTR.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = note as extern "C" fn(c_int) as usize;
                libc::sigemptyset(&mut act.sa_mask);
                let mut was: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &act, &mut was) == 0 {
                    old.push((sig, was));
                }
            }
        }
        Handlers(old)
    }
}

impl Drop for Handlers {
    fn drop(&mut self) {
        for (sig, was) in &self.0 {
            // SAFETY: puts back the action read from the kernel above.
            unsafe { libc::sigaction(*sig, was, std::ptr::null_mut()) };
        }
    }
}
