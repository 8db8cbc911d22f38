//! The `fcgi-conformance` command line: what a proxy project installs and runs in its CI. The
//! same argument structs and code serve `cargo xtask conformance` / `sim` / `new` / `explain`
//! in this repository; only where the suite's files come from differs ([`Home`]).

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::author::{ExplainArgs, NewArgs};
use crate::differ::DifferArgs;
use crate::home::Home;
use crate::real::cli::ConformanceArgs;
use crate::real::peers_cli::PeersArgs;
use crate::sim::suite::SimArgs;

const AFTER_HELP: &str = "\
Against a proxy you run yourself, in CI:
    fcgi-conformance run --target external --url http://127.0.0.1:8080 \\
        --backend 127.0.0.1:9001 --out reports
  exits 1 when a MUST or SHOULD check fails (COMPAT ones too with --strict), and writes
  reports/junit.xml, results.json and conformance.md, grouped by level.
The scenarios are built in; --scenarios DIR adds your own (`new` writes a template).";

/// The FastCGI proxy conformance suite.
#[derive(Debug, Parser)]
#[command(name = "fcgi-conformance", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The scenarios for real against proxies (`cargo xtask conformance`)
    Run(ConformanceArgs),
    Sim(SimArgs),
    New(NewArgs),
    Explain(ExplainArgs),
    Peers(PeersArgs),
    /// Generated requests through Apache (the oracle) and other targets, compared
    Differ(DifferArgs),
}

/// Runs `command` with the suite's files from `home`.
pub fn dispatch(home: &Home, command: &Command) -> ExitCode {
    match command {
        Command::Run(args) => crate::real::cli::cli(home, args),
        Command::Sim(args) => crate::sim::suite::cli(home, args),
        Command::New(args) => crate::author::new_cli(home, args),
        Command::Explain(args) => crate::author::explain_cli(home, args),
        Command::Peers(args) => crate::real::peers_cli::cli(args),
        Command::Differ(args) => crate::differ::cli(home, args),
    }
}

/// `fcgi-conformance ...`.
pub fn main(home: &Home) -> ExitCode {
    match Cli::parse().command {
        Some(c) => dispatch(home, &c),
        None => {
            let _ = Cli::command().print_help();
            ExitCode::SUCCESS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn documented_command_lines_parse() {
        for line in [
            "run --target external --url http://127.0.0.1:8080 --backend 127.0.0.1:9001 --out r",
            "run --target external --url http://127.0.0.1:8080 --backend 127.0.0.1:9001 --strict",
            "run --level must,should --target nginx security cgi/meta-variables",
            "run --scenarios checks local/mine --expected known.toml --proxy-bin /x/fcgi-proxy",
            "sim --scenarios checks local/mine --seeds 3",
            "sim --level compat",
            "new local/my-check --dir checks",
            "explain cgi/proxy-header-dropped",
            "explain",
            "peers",
            "differ --targets all --cases 5000 --seed 3 --area paths --proxy-bin x",
        ] {
            let words = std::iter::once("fcgi-conformance").chain(line.split_whitespace());
            if let Err(e) = Cli::try_parse_from(words) {
                panic!("fcgi-conformance {line}: {e}");
            }
        }
        for bad in ["run --level may", "new", "sim --seeds 0"] {
            let words = std::iter::once("fcgi-conformance").chain(bad.split_whitespace());
            assert!(Cli::try_parse_from(words).is_err(), "{bad}");
        }
    }
}
