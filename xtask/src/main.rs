//! `cargo xtask <command>`: thin entry points; the logic and each command's arguments live in
//! the `conformance` crate.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use conformance::author::{ExplainArgs, NewArgs};
use conformance::bench::BenchArgs;
use conformance::bench::pgo::PgoArgs;
use conformance::differ::DifferArgs;
use conformance::home::Home;
use conformance::load::LoadArgs;
use conformance::real::cli::ConformanceArgs;
use conformance::real::peers_cli::PeersArgs;
use conformance::sim::suite::SimArgs;

/// The workspace's commands: the conformance suite (the same code and arguments as the
/// installed `fcgi-conformance`, reading the checkout's files), the bench and the load test.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask")]
struct Xtask {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    Peers(PeersArgs),
    Conformance(ConformanceArgs),
    Sim(SimArgs),
    New(NewArgs),
    Explain(ExplainArgs),
    Bench(BenchArgs),
    Pgo(PgoArgs),
    Load(LoadArgs),
    /// Generated requests through Apache (the oracle) and other targets, compared
    Differ(DifferArgs),
}

fn main() -> ExitCode {
    let Some(command) = Xtask::parse().command else {
        let _ = Xtask::command().print_help();
        return ExitCode::SUCCESS;
    };
    match command {
        Command::Bench(args) => conformance::bench::main(&args),
        Command::Pgo(args) => conformance::bench::pgo::main(&args),
        Command::Peers(args) => conformance::real::peers_cli::cli(&args),
        Command::Conformance(args) => {
            if !build_proxy("conformance") {
                return ExitCode::FAILURE;
            }
            conformance::real::cli::cli(&home(), &args)
        }
        Command::Differ(args) => {
            if args.proxy_bin.is_none() && !build_proxy("differ") {
                return ExitCode::FAILURE;
            }
            conformance::differ::cli(&home(), &args)
        }
        Command::Load(args) => conformance::load::main(&args),
        Command::Sim(args) => conformance::sim::suite::cli(&home(), &args),
        Command::New(args) => conformance::author::new_cli(&home(), &args),
        Command::Explain(args) => conformance::author::explain_cli(&home(), &args),
    }
}

/// The suite runs our proxy as a process: build it first.
fn build_proxy(command: &str) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "-q", "-p", "fcgi-proxy", "--bin", "fcgi-proxy"])
        .status();
    if !built.is_ok_and(|s| s.success()) {
        eprintln!("xtask {command}: building fcgi-proxy failed");
        return false;
    }
    true
}

/// The checkout's files: scenarios, expected deviations, reference documents.
fn home() -> Home {
    Home::Repo(workspace_root().to_path_buf())
}

/// The workspace root: scenario paths and reports are relative to it.
fn workspace_root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(std::path::Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Xtask::command().debug_assert();
    }

    #[test]
    fn documented_command_lines_parse() {
        for line in [
            "peers",
            "peers list",
            "peers install",
            "conformance",
            "conformance --target all --require-targets",
            "conformance --target ours,apache,nginx scenarios/security",
            "conformance --target apache --target nginx scenarios/pathinfo scenarios/balance",
            "conformance --backend php-fpm --target all --markdown docs/conformance.md",
            "conformance --target external --url http://127.0.0.1:8080 --backend 127.0.0.1:9001",
            "conformance --threads 4 --keep target/keep",
            "conformance --level must,should --strict --out target/x scenarios/cgi",
            "new local/x --dir target/x",
            "explain cgi/meta-variables",
            "sim",
            "sim scenarios/security --seeds 20",
            "sim --seed 7 --trace",
            "sim --mutants scenarios/security",
            "bench --quick",
            "bench --duration 7 --warmup 0 --rounds 5 --idle 100 --targets fcgi-proxy,nginx",
            "bench --workloads get-c4,idle --proxy-bin target/release/fcgi-proxy --out x",
            "pgo",
            "pgo --duration 1 --workloads get-c4,post64k-c16",
            "load",
            "load --connections 3000 --requests 30 --delay-ms 5",
            "load --backends 3 --max 8 --deadline 60 --proxy-bin x",
            "differ",
            "differ --against apache --targets ours,nginx --cases 200 --seed 7 --area headers",
            "differ --targets all --cases 5000",
        ] {
            let words = std::iter::once("xtask").chain(line.split_whitespace());
            if let Err(e) = Xtask::try_parse_from(words) {
                panic!("cargo xtask {line}: {e}");
            }
        }
    }

    #[test]
    fn usage_errors() {
        for line in [
            "nope",
            "peers remove",
            "conformance --target lighttpd2",
            "conformance --backend fpm",
            "conformance --threads 0",
            "conformance --bogus",
            "sim --seed 1 --seeds 2",
            "sim --seeds 0",
            "bench --rounds 0",
            "pgo --workloads nope",
            "load --max 0",
            "differ --cases 0",
            "differ --against iis",
            "differ --area cookies",
        ] {
            let words = std::iter::once("xtask").chain(line.split_whitespace());
            let e = Xtask::try_parse_from(words).expect_err(line);
            assert_eq!(e.exit_code(), 2, "cargo xtask {line}: {e}");
        }
    }

    #[test]
    fn the_report_names_the_command_as_given() {
        let words =
            "xtask conformance --backend php-fpm --target all --markdown docs/conformance.md";
        let Some(Command::Conformance(args)) = Xtask::try_parse_from(words.split_whitespace())
            .unwrap()
            .command
        else {
            panic!("not conformance");
        };
        assert_eq!(
            args.command_line(),
            "--backend php-fpm --target all --markdown docs/conformance.md"
        );
    }
}
