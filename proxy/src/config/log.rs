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
