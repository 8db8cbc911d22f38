//! Progress of a long run on stderr. On a terminal: one line, rewritten in place. Anywhere else
//! (a log file, CI): a plain line now and then, so a log shows the run is alive without a
//! carriage return or a line per step.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a log gets a progress line.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// Where a run's progress goes.
#[derive(Debug)]
pub struct Progress {
    terminal: bool,
    every: Duration,
    /// When the last line went to a log.
    last: Mutex<Instant>,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

impl Progress {
    /// In place when stderr is a terminal, else a line every [`LOG_EVERY`].
    pub fn new() -> Progress {
        Progress::with(std::io::stderr().is_terminal(), LOG_EVERY)
    }

    /// `terminal`: rewrite one line in place; otherwise a plain line at most every `every`.
    pub fn with(terminal: bool, every: Duration) -> Progress {
        Progress {
            terminal,
            every,
            last: Mutex::new(Instant::now()),
        }
    }

    /// What the run is at now.
    pub fn update(&self, line: &str) {
        if let Some(text) = self.update_text(line) {
            eprint!("{text}");
        }
    }

    /// The run is over: its summary line, on a line of its own.
    pub fn finish(&self, line: &str) {
        eprint!("{}", self.finish_text(line));
    }

    fn update_text(&self, line: &str) -> Option<String> {
        if self.terminal {
            return Some(format!("\r{line:<100}"));
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() < self.every {
            return None;
        }
        *last = Instant::now();
        Some(format!("{line}\n"))
    }

    fn finish_text(&self, line: &str) -> String {
        if self.terminal {
            format!("\r{line:<100}\n")
        } else {
            format!("{line}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_gets_plain_occasional_lines() {
        let p = Progress::with(false, Duration::from_secs(3600));
        assert_eq!(p.update_text("ours: 1/9"), None);
        assert_eq!(p.finish_text("ours: 9 in 1s"), "ours: 9 in 1s\n");
        let p = Progress::with(false, Duration::ZERO);
        assert_eq!(p.update_text("ours: 1/9").as_deref(), Some("ours: 1/9\n"));
    }

    #[test]
    fn a_terminal_gets_one_line_in_place() {
        let p = Progress::with(true, LOG_EVERY);
        let t = p.update_text("ours: 1/9 a").unwrap();
        assert!(t.starts_with("\rours: 1/9 a ") && !t.contains('\n'));
        assert!(
            p.finish_text("done").starts_with("\rdone") && p.finish_text("done").ends_with('\n')
        );
    }
}
