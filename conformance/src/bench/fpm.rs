//! php-fpm 8.2 for the `fpm-c16` workload: a hello-world PHP script in a temp document root,
//! one pool (`pm = static`, [`CHILDREN`] children) on a loopback port. Started and stopped by
//! its own PID with the conformance suite's php-fpm launcher
//! ([`crate::real::backend::start_php_fpm_pool`]).

use std::path::{Path, PathBuf};

use crate::peers::BackendAddr;
use crate::real::backend::{self as real, Plan, RealBackend, Reply};

use super::backend::fcgi_get;

/// The script every request runs.
pub const SCRIPT: &str = "<?php echo \"Hello, world\\n\";\n";
/// What it prints.
pub const OUTPUT: &str = "Hello, world\n";
/// The request path (the script is at this path under the document root).
pub const PATH: &str = "/bench/hello.php";
/// `pm.max_children`: a few per core on a 2-core machine.
pub const CHILDREN: u32 = 8;
/// The program.
pub use real::PHP_FPM;
/// The Debian package that ships it.
pub const PACKAGE: &str = "php8.2-fpm";

/// A running php-fpm and the document root it serves.
#[derive(Debug)]
pub struct Fpm {
    // Stopped before `dir` goes.
    backend: RealBackend,
    document_root: PathBuf,
    dir: tempfile::TempDir,
}

impl Fpm {
    /// Writes the script into a new temp dir and starts php-fpm on a free loopback port.
    pub fn start() -> Result<Fpm, String> {
        let dir = tempfile::Builder::new()
            .prefix("bench-fpm-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let document_root = dir.path().join("docroot");
        let script = script_path(&document_root);
        if let Some(parent) = script.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&script, SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
        let addr = crate::peers::free_loopback_port().map_err(|e| format!("free port: {e}"))?;
        let plan = Plan {
            name: "bench".to_owned(),
            workers: CHILDREN,
            ondemand: false,
            max_requests: None,
            reply: Reply::default(),
        };
        let backend = real::start_php_fpm_pool(
            &plan,
            &dir.path().join("fpm"),
            addr,
            crate::peers::Session::Own,
        )?;
        let fpm = Fpm {
            backend,
            document_root,
            dir,
        };
        fpm.check()?;
        Ok(fpm)
    }

    pub fn addr(&self) -> BackendAddr {
        BackendAddr::Tcp(self.backend.addr)
    }

    /// The document root every peer names (SCRIPT_FILENAME is under it).
    pub fn document_root(&self) -> String {
        self.document_root.display().to_string()
    }

    /// The master, then the children.
    pub fn pids(&self) -> Vec<u32> {
        self.backend.pids()
    }

    /// Where php-fpm's own files are (config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// One FastCGI request for the script straight to php-fpm.
    pub fn check(&self) -> Result<(), String> {
        let script = script_path(&self.document_root);
        match fcgi_get(&self.addr(), &script.display().to_string()) {
            Ok(out) if out.contains(OUTPUT) => Ok(()),
            Ok(out) => Err(format!("php-fpm answered {out:?}")),
            Err(e) => Err(format!(
                "php-fpm at {} not answering: {e}",
                self.backend.addr
            )),
        }
    }
}

/// The script's file under `document_root`.
pub fn script_path(document_root: &Path) -> PathBuf {
    document_root.join(PATH.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_sits_at_the_request_path() {
        assert_eq!(
            script_path(Path::new("/tmp/d/docroot")),
            PathBuf::from("/tmp/d/docroot/bench/hello.php")
        );
        assert!(SCRIPT.starts_with("<?php echo \"Hello, world\\n\";"));
        assert!(PATH.ends_with(".php"), "php-fpm runs only .php scripts");
    }
}
