//! The access log's settings: `[access_log]` in TOML, `LogFormat` and `CustomLog` from Apache.

use serde::{Deserialize, Serialize};

/// `[access_log]`: without it (or without `format` and `json`), the built-in line on stderr.
///
/// ```toml
/// [access_log]
/// format = "combined"                     # common, combined, vhost_combined, referer, agent,
///                                         # or a LogFormat string: "%h %t \"%r\" %>s %D"
/// path = "/var/log/fcgi-proxy/access.log" # reopened at SIGUSR1; default stderr
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// A nickname Apache's Debian configuration defines, or an Apache `LogFormat` string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// One JSON object per line instead of a format.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub json: bool,
    /// The file lines are appended to; default stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The formats Debian's apache2.conf names (`LogFormat ... nickname`).
pub fn nickname(name: &str) -> Option<&'static str> {
    Some(match name {
        "common" => "%h %l %u %t \"%r\" %>s %O",
        "combined" => "%h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\"",
        "vhost_combined" => "%v:%p %h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\"",
        "referer" => "%{Referer}i -> %U",
        "agent" => "%{User-agent}i",
        _ => return None,
    })
}

/// `[error_log]`: where the proxy's own messages go, and from which level. Without it: stderr,
/// level `info`. `RUST_LOG`, when set, decides the level instead.
///
/// ```toml
/// [error_log]
/// path = "/var/log/fcgi-proxy/error.log" # reopened at SIGUSR1; default stderr
/// level = "warn"                         # Apache's LogLevel names: emerg .. warn, notice,
///                                        # info, debug, trace1 .. trace8
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorLog {
    /// The file messages are appended to; default stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The least severe level written (Apache's `LogLevel`); default `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

impl ErrorLog {
    /// The level as a `tracing` filter directive: Apache's eight severities and trace levels
    /// folded onto tracing's five (`notice` is `info`; `emerg`, `alert`, `crit` are `error`).
    pub fn filter_level(&self) -> Result<&'static str, String> {
        let Some(level) = &self.level else {
            return Ok("info");
        };
        Ok(match level.to_ascii_lowercase().as_str() {
            "emerg" | "alert" | "crit" | "error" => "error",
            "warn" | "warning" => "warn",
            "notice" | "info" => "info",
            "debug" => "debug",
            "trace" | "trace1" | "trace2" | "trace3" | "trace4" | "trace5" | "trace6"
            | "trace7" | "trace8" => "trace",
            other => {
                return Err(format!(
                    "error_log.level {other:?}: not a level (emerg, alert, crit, error, warn, \
                     notice, info, debug, trace1..trace8)"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_levels_map_onto_tracing_levels() {
        let level = |l: &str| {
            ErrorLog {
                path: None,
                level: Some(l.into()),
            }
            .filter_level()
        };
        assert_eq!(level("crit"), Ok("error"));
        assert_eq!(level("WARN"), Ok("warn"));
        assert_eq!(level("notice"), Ok("info"));
        assert_eq!(level("trace5"), Ok("trace"));
        assert!(level("loud").is_err());
        assert_eq!(ErrorLog::default().filter_level(), Ok("info"));
    }
}
