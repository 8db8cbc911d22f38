//! `cargo xtask peers [install]`: which FastCGI proxies (and helpers) are on this machine, with
//! their versions; `install` gets the missing ones from Debian's packages.

use std::process::{Command, ExitCode};

use tabled::builder::Builder;
use tabled::settings::Style;

/// (name, Debian package, binary)
const PEERS: [(&str, &str, &str); 8] = [
    ("nginx", "nginx", "nginx"),
    ("apache", "apache2", "apache2"),
    ("caddy", "caddy", "caddy"),
    ("haproxy", "haproxy", "haproxy"),
    ("lighttpd", "lighttpd", "lighttpd"),
    ("h2o", "h2o", "h2o"),
    ("php-fpm", "php8.2-fpm", "php-fpm8.2"),
    ("cgi-fcgi", "libfcgi-bin", "cgi-fcgi"),
];

/// The package's version as dpkg knows it, and where the binary is.
fn version(package: &str, binary: &str) -> Option<String> {
    let path = crate::peers::find_program(binary)?;
    let v = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "version unknown".into());
    Some(format!("{v} ({})", path.display()))
}

/// `cargo xtask peers`: the command line.
#[derive(Debug, Clone, clap::Args)]
#[command(about = "Which peer proxies and helpers are installed; install them")]
pub struct PeersArgs {
    #[command(subcommand)]
    pub command: Option<PeersCommand>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum PeersCommand {
    /// The peers, their packages and installed versions (the default)
    List,
    /// Install the missing ones from Debian's packages
    Install,
}

/// `cargo xtask peers [list | install]`.
pub fn cli(args: &PeersArgs) -> ExitCode {
    match args.command.unwrap_or(PeersCommand::List) {
        PeersCommand::List => {
            let mut b = Builder::default();
            b.push_record(["peer", "package", "installed"]);
            for (name, package, binary) in PEERS {
                let v = version(package, binary)
                    .unwrap_or_else(|| format!("no (apt-get install {package})"));
                b.push_record([name.to_string(), package.to_string(), v]);
            }
            let mut t = b.build();
            t.with(Style::rounded());
            println!("{t}");
            ExitCode::SUCCESS
        }
        PeersCommand::Install => {
            let missing: Vec<&str> = PEERS
                .iter()
                .filter(|(_, _, binary)| crate::peers::find_program(binary).is_none())
                .map(|(_, package, _)| *package)
                .collect();
            if missing.is_empty() {
                println!("every peer is installed");
                return ExitCode::SUCCESS;
            }
            // Package scripts must not start daemons on this machine's real ports.
            let guard = std::path::Path::new("/usr/sbin/policy-rc.d");
            if !guard.exists() {
                let _ = std::fs::write(guard, "#!/bin/sh\nexit 101\n");
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(guard, std::fs::Permissions::from_mode(0o755));
                }
            }
            println!("apt-get install {}", missing.join(" "));
            let ok = Command::new("apt-get")
                .arg("update")
                .status()
                .is_ok_and(|s| s.success())
                && Command::new("apt-get")
                    .args(["install", "-y", "--no-install-recommends"])
                    .args(&missing)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status()
                    .is_ok_and(|s| s.success());
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
