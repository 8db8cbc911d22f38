//! The trace: every event of a run, stamped with virtual time, in the order the simulation
//! produced it. Client requests and responses, backend connection attempts made by the proxy,
//! faults, the mock's journal lines and the proxy's own log lines all land here, so that two
//! runs with the same seed can be compared byte for byte.

use std::fmt::Write as _;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// A shared, append-only list of trace lines.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    lines: Arc<Mutex<Vec<String>>>,
    /// Set when the run is over: what happens while the simulation is torn down (tasks dropped
    /// in whatever order the runtimes drop them) is not part of the run.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

/// Virtual time as the trace prints it: milliseconds with microseconds.
pub fn stamp(t: Option<Duration>) -> String {
    match t {
        Some(t) => format!("{:>11.3}", t.as_secs_f64() * 1000.0),
        None => format!("{:>11}", "-"),
    }
}

impl Trace {
    /// Appends `who: what`, stamped with the current host's virtual time (the simulation's
    /// clock outside hosts: pass it in `at`).
    pub fn log_at(&self, at: Option<Duration>, who: &str, what: &str) {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let line = format!("{} {who:<8} {what}", stamp(at));
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// Appends a line stamped with the calling host's virtual time.
    pub fn log(&self, who: &str, what: &str) {
        self.log_at(turmoil::sim_elapsed(), who, what);
    }

    /// Ends the trace: later lines are dropped.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A writer for a mock's journal: each JSON line becomes a trace line from `who`.
    pub fn sink(&self, who: &str) -> Box<dyn io::Write + Send> {
        Box::new(Sink {
            trace: self.clone(),
            who: who.to_string(),
            buf: Vec::new(),
        })
    }
}

struct Sink {
    trace: Trace,
    who: String,
    buf: Vec<u8>,
}

impl io::Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.trace.log(&self.who, &text);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A tracing layer that copies the proxy's log events into the trace.
#[derive(Debug, Clone)]
pub struct TraceLayer {
    pub trace: Trace,
}

#[derive(Default)]
struct Fields {
    text: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.push_str(value);
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for TraceLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        self.trace.log(
            "proxy",
            &format!("{} {}: {}", meta.level(), meta.target(), f.text),
        );
    }
}
