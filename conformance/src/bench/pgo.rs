//! `cargo xtask pgo`: fcgi-proxy built with profile-guided optimisation.
//!
//! The release binary spends as many user-space instructions on a request as nginx but misses
//! the instruction cache about twice as often (docs/bench.md, "Where a request's CPU goes"). A
//! profile of where the request path actually runs lets the compiler lay the hot code out
//! together and inline by use rather than by guess. The steps:
//!
//! 1. build fcgi-proxy with `-Cprofile-generate`, added to the caller's own `RUSTFLAGS` (its
//!    own target directory, `--target` the host so that the flag reaches neither build
//!    scripts nor proc macros);
//! 2. train it: the bench's quick run of every workload against fcgi-proxy alone (the libfcgi
//!    responders, php-fpm, TLS and HTTP/2 when their programs are installed), which stops each
//!    proxy with SIGTERM so that it exits and writes its profile;
//! 3. merge the profiles with the toolchain's `llvm-profdata` (`rustup component add
//!    llvm-tools`);
//! 4. build again with `-Cprofile-use`, and copy the binary to `target/pgo/fcgi-proxy`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use super::report::failures;
use super::{Options, build_release, missing_prerequisites, run, workspace_root};
use crate::peers::PeerKind;

/// `cargo xtask pgo`: the command line.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(
    about = "fcgi-proxy built with profile-guided optimisation: target/pgo/fcgi-proxy",
    long_about = "fcgi-proxy built with profile-guided optimisation, trained on the bench's \
                  workloads (a quick run against fcgi-proxy alone; it needs what the bench \
                  needs, and `rustup component add llvm-tools`). The binary lands in \
                  target/pgo/fcgi-proxy; `cargo xtask bench --proxy-bin target/pgo/fcgi-proxy` \
                  measures it."
)]
pub struct PgoArgs {
    /// Seconds of each training run (default 2)
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Train on these workloads only (comma-separated; default all)
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = super::parse_workload)]
    pub workloads: Vec<String>,
}

/// `cargo xtask pgo ...`.
pub fn main(args: &PgoArgs) -> ExitCode {
    let mut train = Options::quick();
    train.duration = Duration::from_secs(args.duration.unwrap_or(2).max(1));
    if !args.workloads.is_empty() {
        train.workloads = Some(args.workloads.clone());
    }
    super::stop_children_on_signal();
    match build(&workspace_root(), &train) {
        Ok(bin) => {
            println!("pgo: {}", bin.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where everything goes, under the workspace's `target/`.
#[derive(Debug)]
pub struct Layout {
    pub root: PathBuf,
    /// The training's `.profraw` files.
    pub profiles: PathBuf,
    pub profdata: PathBuf,
    /// The optimised binary, at a path that does not depend on the host triple.
    pub binary: PathBuf,
}

impl Layout {
    pub fn new(workspace: &Path) -> Layout {
        let root = workspace.join("target").join("pgo");
        Layout {
            profiles: root.join("profiles"),
            profdata: root.join("fcgi-proxy.profdata"),
            binary: root.join("fcgi-proxy"),
            root,
        }
    }
}

/// Builds the profile-guided binary and returns its path. `train` is the bench run that
/// trains it (its targets, binary, environment and output directory are set here).
pub fn build(workspace: &Path, train: &Options) -> Result<PathBuf, String> {
    let missing = missing_prerequisites(&[PeerKind::FcgiProxy]);
    if !missing.is_empty() {
        return Err(format!(
            "the training runs the bench, which needs: {}",
            missing.join(", ")
        ));
    }
    let profdata_tool = llvm_profdata()?;
    let host = host_triple()?;
    let layout = Layout::new(workspace);
    if layout.profiles.exists() {
        std::fs::remove_dir_all(&layout.profiles)
            .map_err(|e| format!("{}: {e}", layout.profiles.display()))?;
    }
    std::fs::create_dir_all(&layout.profiles)
        .map_err(|e| format!("{}: {e}", layout.profiles.display()))?;

    let note = |what: &str| {
        if train.progress {
            eprintln!("pgo: {what}");
        }
    };
    note("building fcgi-proxy with -Cprofile-generate");
    let generate = format!("-Cprofile-generate={}", layout.profiles.display());
    let instrumented = build_release(workspace, &layout.root.join("generate"), &host, &generate)?;

    note("training: the bench's workloads against fcgi-proxy alone");
    let mut o = train.clone();
    o.targets = vec![PeerKind::FcgiProxy];
    o.proxy_bin = Some(instrumented);
    o.peer_env = vec![(
        "LLVM_PROFILE_FILE".to_owned(),
        layout
            .profiles
            .join("fcgi-proxy-%p-%m.profraw")
            .display()
            .to_string(),
    )];
    o.out_dir = layout.root.join("training");
    let report = run(&o)?;
    let failed = failures(&report.workloads);
    if !failed.is_empty() {
        return Err(format!("training runs failed: {}", failed.join(", ")));
    }

    let raw: Vec<PathBuf> = std::fs::read_dir(&layout.profiles)
        .map_err(|e| format!("{}: {e}", layout.profiles.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "profraw"))
        .collect();
    if raw.is_empty() {
        return Err(format!(
            "the training left no profile in {} (fcgi-proxy must exit on SIGTERM to write it)",
            layout.profiles.display()
        ));
    }
    note(&format!("merging {} profiles", raw.len()));
    let merged = Command::new(&profdata_tool)
        .arg("merge")
        .arg("-o")
        .arg(&layout.profdata)
        .args(&raw)
        .status()
        .map_err(|e| format!("{}: {e}", profdata_tool.display()))?;
    if !merged.success() {
        return Err(format!("{} merge failed", profdata_tool.display()));
    }

    note("building fcgi-proxy with -Cprofile-use");
    let useflag = format!("-Cprofile-use={}", layout.profdata.display());
    let optimised = build_release(workspace, &layout.root.join("use"), &host, &useflag)?;
    std::fs::copy(&optimised, &layout.binary).map_err(|e| {
        format!(
            "{} -> {}: {e}",
            optimised.display(),
            layout.binary.display()
        )
    })?;
    Ok(layout.binary)
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> Result<String, String> {
    let out = Command::new(rustc())
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_owned())
        .ok_or_else(|| "rustc -vV names no host".to_owned())
}

/// The `llvm-profdata` of the toolchain that builds (its profile format must match).
fn llvm_profdata() -> Result<PathBuf, String> {
    let out = Command::new(rustc())
        .args(["--print", "target-libdir"])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // <sysroot>/lib/rustlib/<host>/lib → <sysroot>/lib/rustlib/<host>/bin
    let tool = libdir
        .parent()
        .map(|d| d.join("bin").join("llvm-profdata"))
        .filter(|t| t.is_file());
    tool.ok_or_else(|| {
        "llvm-profdata not found beside the toolchain: rustup component add llvm-tools".to_owned()
    })
}

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_triple_these_tests_run_on() {
        let host = host_triple().expect("rustc -vV");
        assert!(host.starts_with(std::env::consts::ARCH), "{host}");
        assert!(host.contains(std::env::consts::OS), "{host}");
    }

    #[test]
    fn the_binary_lands_where_the_readme_says() {
        let l = Layout::new(Path::new("/w"));
        assert_eq!(l.binary, Path::new("/w/target/pgo/fcgi-proxy"));
        assert!(l.profiles.starts_with(&l.root) && l.profdata.starts_with(&l.root));
        let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
        assert!(
            readme.contains("`target/pgo/fcgi-proxy`"),
            "README names the path"
        );
    }
}
