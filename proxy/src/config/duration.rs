//! Durations in configuration: `"5s"`, `"250ms"`, `"2m"`, `"1h"`, `"1.5s"`, or a bare number of
//! seconds (`5`, `0.25`), as Apache reads `timeout=5`.

use core::time::Duration;

/// Parse a duration; `default_unit` applies to a bare number (`"s"` or `"ms"`), which is how
/// Apache's `ap_timeout_parameter_parse` treats e.g. `acquire=` (ms) versus `timeout=` (s).
/// Units: `ms`, `s`, `m`/`mi`/`min`, `h`.
pub fn parse_duration(text: &str, default_unit: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let unit = if unit.is_empty() { default_unit } else { unit };
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(format!(
            "invalid duration '{text}' (expected e.g. \"5s\", \"250ms\" or 5)"
        ));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{text}'"))?;
    let millis = match unit.to_ascii_lowercase().as_str() {
        "ms" => value,
        "s" | "sec" => value * 1_000.0,
        "m" | "mi" | "min" => value * 60_000.0,
        "h" => value * 3_600_000.0,
        other => {
            return Err(format!(
                "invalid duration unit '{other}' in '{text}' (use ms, s, m or h)"
            ));
        }
    };
    if !(0.0..=1.0e13).contains(&millis) {
        return Err(format!("duration '{text}' is out of range"));
    }
    Ok(Duration::from_micros((millis * 1_000.0).round() as u64))
}

/// Format a duration the way [`parse_duration`] reads it back: `"5s"`, `"250ms"`, `"1500us"`.
pub fn format_duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros.is_multiple_of(1_000_000) {
        format!("{}s", micros / 1_000_000)
    } else if micros.is_multiple_of(1_000) {
        format!("{}ms", micros / 1_000)
    } else {
        format!("{}ms", micros as f64 / 1_000.0)
    }
}

struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("a duration such as \"5s\", \"250ms\", or a number of seconds")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
        if !(0.0..=1.0e10).contains(&v) {
            return Err(E::custom("a duration must be between 0 and 1e10 seconds"));
        }
        Ok(Duration::from_micros((v * 1_000_000.0).round() as u64))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v, "s").map_err(E::custom)
    }
}

/// serde helpers for `Duration` fields.
pub mod serde_duration {
    use core::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(super::DurationVisitor)
    }
}

/// serde helpers for `Option<Duration>` fields (use with `#[serde(default)]`).
pub mod serde_opt_duration {
    use core::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(super::DurationVisitor).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("5s", "s").unwrap(), Duration::from_secs(5));
        assert_eq!(
            parse_duration("250ms", "s").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("5", "s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("5", "ms").unwrap(), Duration::from_millis(5));
        assert_eq!(
            parse_duration("1.5s", "s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m", "s").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("2mi", "s").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            parse_duration("1h", "s").unwrap(),
            Duration::from_secs(3600)
        );
        assert!(parse_duration("", "s").is_err());
        assert!(parse_duration("s", "s").is_err());
        assert!(parse_duration("-1", "s").is_err());
        assert!(parse_duration("1.2.3", "s").is_err());
        assert!(parse_duration("5 parsecs", "s").is_err());
        assert!(parse_duration("99999999999999999999h", "s").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for d in [
            Duration::from_secs(5),
            Duration::from_millis(250),
            Duration::from_micros(1500),
            Duration::ZERO,
        ] {
            assert_eq!(parse_duration(&format_duration(d), "s").unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(60)), "60s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
