//! Who and where: the host and user names recorded with runs and written into locks.

/// This machine's host name ("unknown" if the system will not say).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".to_string()
    }
}

/// The user running tureen, from `USER` or `LOGNAME`.
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// What a process writes into a lock it holds: `pid N on HOST`.
pub fn lock_note() -> String {
    format!("pid {} on {}", std::process::id(), hostname())
}
