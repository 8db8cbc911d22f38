//! The error log: where the proxy's own messages (`tracing` events) go, and from which level
//! (`[error_log]`, Apache's `ErrorLog` and `LogLevel`). The file is reopened at SIGUSR1
//! (logrotate) and a reload may change the file and the level. The built-in access line
//! (target `access`) is not an error message: it stays on stderr at `info` whatever the
//! error log's level.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::log::ErrorLog;

/// The open error log file and its name; none: stderr.
static FILE: RwLock<Option<(PathBuf, Arc<File>)>> = RwLock::new(None);

type FilterHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// Set by [`init`]: changes the level at a reload. Unset when `RUST_LOG` decides.
static LEVEL: OnceLock<FilterHandle> = OnceLock::new();

/// Installs the subscriber: messages of `cfg`'s level and up to `cfg`'s file (stderr without
/// one); `RUST_LOG`, when set, decides the level instead. Colour only for a person at a terminal.
pub fn init(cfg: Option<&ErrorLog>) -> Result<(), String> {
    let default = ErrorLog::default();
    let cfg = cfg.unwrap_or(&default);
    open(cfg)?;
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) if from_env => f,
        _ => filter_for(cfg)?,
    };
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = cfg.path.is_none()
        && io::IsTerminal::is_terminal(&io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(Writer)
                .with_ansi(ansi),
        )
        .try_init()
        .map_err(|e| format!("logging: {e}"))?;
    if !from_env {
        let _ = LEVEL.set(handle);
    }
    Ok(())
}

/// The filter for `cfg`: its level, the access lines at `info`.
fn filter_for(cfg: &ErrorLog) -> Result<EnvFilter, String> {
    let level = cfg.filter_level()?;
    EnvFilter::try_new(format!("{level},access=info")).map_err(|e| e.to_string())
}

/// Opens `cfg`'s file (or goes back to stderr) before anything is written to it.
fn open(cfg: &ErrorLog) -> Result<(), String> {
    let file = match &cfg.path {
        Some(p) => Some((PathBuf::from(p), Arc::new(open_file(Path::new(p))?))),
        None => None,
    };
    *FILE.write().unwrap_or_else(|p| p.into_inner()) = file;
    Ok(())
}

fn open_file(p: &Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| format!("error log {}: {e}", p.display()))
}

/// Checks that a reload's error log can be opened, before the reload is made.
pub fn check(cfg: Option<&ErrorLog>) -> Result<(), String> {
    let Some(cfg) = cfg else { return Ok(()) };
    filter_for(cfg)?;
    match &cfg.path {
        Some(p) => open_file(Path::new(p)).map(drop),
        None => Ok(()),
    }
}

/// A reload: the new configuration's file and level (a `RUST_LOG` level stays).
pub fn apply(cfg: Option<&ErrorLog>) -> Result<(), String> {
    let default = ErrorLog::default();
    let cfg = cfg.unwrap_or(&default);
    let filter = filter_for(cfg)?;
    open(cfg)?;
    if let Some(h) = LEVEL.get() {
        h.reload(filter).map_err(|e| format!("logging: {e}"))?;
    }
    Ok(())
}

/// SIGUSR1: opens the file again under its name (after logrotate moved it).
pub fn reopen() -> Result<(), String> {
    let Some(path) = FILE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|(p, _)| p.clone())
    else {
        return Ok(());
    };
    let f = Arc::new(open_file(&path)?);
    *FILE.write().unwrap_or_else(|p| p.into_inner()) = Some((path, f));
    Ok(())
}

/// Where each message goes: the error log, or stderr for the built-in access line.
#[derive(Debug, Clone, Copy)]
struct Writer;

/// One message's destination.
#[derive(Debug)]
pub enum Out {
    Stderr(io::Stderr),
    File(Arc<File>),
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::Stderr(s) => s.write(buf),
            Out::File(f) => (&**f).write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // One write per message: lines of two threads never interleave in an O_APPEND file.
        match self {
            Out::Stderr(s) => s.write_all(buf),
            Out::File(f) => (&**f).write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Stderr(s) => s.flush(),
            Out::File(_) => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Out;

    fn make_writer(&'a self) -> Out {
        match FILE.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some((_, f)) => Out::File(Arc::clone(f)),
            None => Out::Stderr(io::stderr()),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Out {
        if meta.target() == "access" {
            Out::Stderr(io::stderr())
        } else {
            self.make_writer()
        }
    }
}
