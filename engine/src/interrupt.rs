//! Ctrl-C handling: the first SIGINT (or SIGTERM) sets the cancel flag that every
//! running stage watches; stages stop their children and the run ends with a record
//! saying `interrupted`. A second SIGINT exits at once (status 130).

use std::sync::atomic::{AtomicBool, Ordering};

static CANCEL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only async-signal-safe operations here: an atomic swap and _exit.
    if CANCEL.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the handlers (once) and returns the flag they set.
pub fn install() -> &'static AtomicBool {
    // SAFETY: installing a handler that only touches an atomic and calls _exit.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
    &CANCEL
}

/// The flag without installing handlers (for library use and tests).
pub fn flag() -> &'static AtomicBool {
    &CANCEL
}
