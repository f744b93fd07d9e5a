//! What a run shows while it goes: on a terminal, one live line per running stage
//! with its elapsed time and last log line (indicatif); otherwise plain log lines, one
//! per event, that read well in CI logs and files.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live lines when stderr is a terminal, else plain lines.
    Auto,
    /// One plain line per event on stderr, even on a terminal (`--plain`).
    Plain,
    /// Only failures (`-q`); stage starts, log lines and successes are not shown.
    Quiet,
}

/// The display of one run.
pub struct Progress {
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
    quiet: bool,
    held: Option<Held>,
}

/// Lines held back to be shown together (see [`Progress::hold`]).
struct Held {
    text: String,
    since: Instant,
}

/// Held lines are shown once they are this old (see [`Progress::release_if_due`]) or
/// this long.
const HOLD_AT_MOST: Duration = Duration::from_millis(100);
const HOLD_AT_MOST_BYTES: usize = 64 << 10;

impl Progress {
    /// A display in `mode`; `Auto` checks once, here, whether stderr is a terminal.
    pub fn new(mode: Mode) -> Progress {
        let live = mode == Mode::Auto && std::io::stderr().is_terminal();
        let bars = live.then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
                HashMap::new(),
            )
        });
        Progress {
            bars,
            quiet: mode == Mode::Quiet,
            held: None,
        }
    }

    /// Holds the lines that stay until [`Progress::release`], to show a burst of them at
    /// once: the 10,000 `cached` lines of a no-op run were 10,000 writes to stderr, or
    /// 10,000 redraws of the live display.
    pub fn hold(&mut self) {
        self.held.get_or_insert_with(|| Held {
            text: String::new(),
            since: Instant::now(),
        });
    }

    /// Shows the lines held since [`Progress::hold`], and holds no more.
    pub fn release(&mut self) {
        if let Some(held) = self.held.take().filter(|h| !h.text.is_empty()) {
            self.show(held.text.trim_end_matches('\n'));
        }
    }

    /// Shows the held lines once they have waited 100 ms, and goes on holding. The
    /// scheduler asks before each decision, so a line waits at most that plus the
    /// decision under way (which may hash a stage's inputs: the time is only known
    /// after).
    pub fn release_if_due(&mut self) {
        if self
            .held
            .as_ref()
            .is_some_and(|h| h.since.elapsed() >= HOLD_AT_MOST)
        {
            self.release();
            self.hold();
        }
    }

    /// A line that stays (stage finished, cached, failed...).
    pub fn println(&mut self, line: &str) {
        if !self.quiet {
            self.error(line);
        }
    }

    /// A message that is always shown, even with `-q` (failures).
    pub fn error(&mut self, line: &str) {
        let Some(held) = &mut self.held else {
            return self.show(line);
        };
        held.text.push_str(line);
        held.text.push('\n');
        if held.text.len() >= HOLD_AT_MOST_BYTES {
            self.release();
            self.hold();
        }
    }

    /// Shows `lines` (one or more, without the last newline) above the live lines.
    fn show(&self, lines: &str) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(lines);
            }
            None => write_line_to_stderr(lines),
        }
    }

    /// Stage `stage` began, doing `what` (e.g. `replaying`): a live line with a spinner
    /// and elapsed time, or a plain `stage: what` line.
    pub fn started(&mut self, stage: &str, what: &str) {
        if self.quiet {
            return;
        }
        match &mut self.bars {
            Some((multi, bars)) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {prefix:.bold} [{elapsed_precise}] {wide_msg}",
                    )
                    .expect("valid template"),
                );
                bar.set_prefix(stage.to_string());
                bar.set_message(what.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                bars.insert(stage.to_string(), bar);
            }
            None => write_line_to_stderr(&format!("{stage}: {what}")),
        }
    }

    /// The last log line of a running stage (live display only).
    pub fn message(&self, stage: &str, line: &str) {
        if let Some((_, bars)) = &self.bars {
            if let Some(bar) = bars.get(stage) {
                let line: String = line.chars().filter(|c| !c.is_control()).take(200).collect();
                bar.set_message(line);
            }
        }
    }

    /// A running stage reported `done` of `total` units of work: shown as
    /// `done/total (N%)` on its live line; ignored when `total` is 0 or not live.
    pub fn fraction(&self, stage: &str, done: u64, total: u64) {
        if let Some((_, bars)) = &self.bars {
            if let Some(bar) = bars.get(stage) {
                if total > 0 {
                    bar.set_message(format!(
                        "{done}/{total} ({:.0}%)",
                        100.0 * done as f64 / total as f64
                    ));
                }
            }
        }
    }

    /// Stage `stage` ended: removes its live line and prints `line` to stay, unless it
    /// is empty, or quiet mode is on and `line` does not report a failure (`FAILED`).
    pub fn finished(&mut self, stage: &str, line: &str) {
        if let Some((_, bars)) = &mut self.bars {
            if let Some(bar) = bars.remove(stage) {
                bar.finish_and_clear();
            }
        }
        if line.is_empty() {
            return;
        }
        if self.quiet && !line.contains("FAILED") {
            return;
        }
        self.error(line);
    }

    /// Shows what is held and removes every live line left, before the run's summary
    /// is printed.
    pub fn clear(&mut self) {
        self.release();
        if let Some((multi, bars)) = &mut self.bars {
            for (_, bar) in bars.drain() {
                bar.finish_and_clear();
            }
            let _ = multi.clear();
        }
    }
}

impl Drop for Progress {
    /// Held lines are shown even when a run ends on an error.
    fn drop(&mut self) {
        self.release();
    }
}

/// Writes `line` and a newline to stderr in one `write`, ignoring errors. `eprintln!`
/// issues two writes on the unbuffered stderr (20,000 system calls for a 10,000-stage
/// no-op run) and panics when stderr cannot be written (`2>/dev/full`); a message that
/// cannot be shown must not turn a finished run into a crash.
pub fn write_line_to_stderr(line: &str) {
    use std::io::Write;
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `eprintln!` that never panics: formats its arguments and writes them with
/// [`write_line_to_stderr`].
#[macro_export]
macro_rules! eprintln_lossy {
    ($($arg:tt)*) => {
        $crate::progress::write_line_to_stderr(&format!($($arg)*))
    };
}
