//! `--keep DIR`: a run's files and a readable journal of what the clients got and every backend
//! saw, kept for reading after the run.

use std::path::Path;

use crate::sim::Run;

/// Copies the run's files to `to` and writes `journal.txt` there.
pub(super) fn keep_run(to: &Path, dir: &Path, run: &Result<Run, String>) {
    let _ = std::fs::remove_dir_all(to);
    if std::fs::create_dir_all(to).is_err() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_file() {
                let _ = std::fs::copy(e.path(), to.join(e.file_name()));
            }
            // A real backend program's files (its config, execution log, script source), and
            // those of proxy instances beyond the first (`proxy2/`, ...).
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir()
                && (name.starts_with("backend-") || name.starts_with("proxy"))
                && let Ok(files) = std::fs::read_dir(e.path())
            {
                for f in files.flatten().filter(|f| f.path().is_file()) {
                    let copy = format!("{name}.{}", f.file_name().to_string_lossy());
                    let _ = std::fs::copy(f.path(), to.join(copy));
                }
            }
        }
    }
    let text = match run {
        Ok(run) => journal_text(run),
        Err(e) => format!("error: {e}\n"),
    };
    let _ = std::fs::write(to.join("journal.txt"), text);
}

/// What the clients got and what every backend saw, for reading.
pub fn journal_text(run: &Run) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    if let Some(e) = &run.error {
        let _ = writeln!(o, "error: {e}");
    }
    for r in run.requests.iter().flatten() {
        let _ = writeln!(
            o,
            "client {} {} {}: {:?} status {} in {:.1}ms{}",
            r.label,
            r.method,
            r.target,
            r.outcome,
            r.status.map_or("none".into(), |s| s.to_string()),
            r.elapsed().as_secs_f64() * 1000.0,
            r.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    for b in &run.backends {
        for (i, inc) in b.incarnations.iter().enumerate() {
            let j = &inc.journal;
            let _ = writeln!(
                o,
                "backend {} incarnation {}: {} connections, {} requests, {} management records",
                b.name,
                i + 1,
                j.connections.len(),
                j.requests.len(),
                j.management.len()
            );
            for c in &j.connections {
                let _ = writeln!(
                    o,
                    "  connection {} opened +{}ms closed {} ({}) requests {:?}",
                    c.id,
                    c.opened_ms,
                    c.closed_ms.map_or("never".into(), |t| format!("+{t}ms")),
                    c.close_reason.as_deref().unwrap_or("-"),
                    c.requests
                );
            }
            for r in &j.requests {
                let _ = writeln!(
                    o,
                    "  request {} ({}) on connection {} id {} keep_conn {} begin +{}ms stdin {:?}",
                    r.seq,
                    r.param(crate::sim::client::TAG_PARAM).unwrap_or_default(),
                    r.connection,
                    r.request_id,
                    r.keep_conn,
                    r.begin_ms,
                    r.stdin_lossy()
                );
                for (n, v) in r.params_lossy() {
                    let _ = writeln!(o, "    {n}={v:?}");
                }
            }
        }
    }
    o
}
