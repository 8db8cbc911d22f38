//! The TOML front end. Unknown keys are rejected; errors name `file:line:col`.

use serde::Deserialize;

use super::{Config, ConfigError, Origin};

/// Byte offset → (line, column), both 1-based (column in characters).
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[derive(Deserialize)]
struct Spans {
    #[serde(default)]
    route: Vec<::toml::Spanned<::toml::Value>>,
    #[serde(default)]
    balancer: Vec<::toml::Spanned<::toml::Value>>,
    #[serde(default)]
    site: Vec<::toml::Spanned<::toml::Value>>,
}

/// Parse and validate a TOML configuration.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let cfg = parse_unvalidated(text, origin)?;
    cfg.validate()?;
    Ok(cfg)
}

/// Parse a TOML configuration without validating it (the caller may change it first).
pub fn parse_unvalidated(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let mut cfg: Config = ::toml::from_str(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError {
            file: Some(origin.to_owned()),
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })?;
    cfg.origin = Some(origin.to_owned());
    if let Ok(spans) = ::toml::from_str::<Spans>(text) {
        for (r, s) in cfg.routes.iter_mut().zip(spans.route.iter()) {
            r.origin = Some(Origin {
                file: origin.to_owned(),
                line: table_line(text, s.span().start),
            });
        }
        for (b, s) in cfg.balancers.iter_mut().zip(spans.balancer.iter()) {
            b.origin = Some(Origin {
                file: origin.to_owned(),
                line: table_line(text, s.span().start),
            });
        }
    }
    for b in &mut cfg.balancers {
        b.name = b.name.to_ascii_lowercase();
    }
    let site_lines: Vec<usize> = ::toml::from_str::<Spans>(text)
        .map(|s| {
            s.site
                .iter()
                .map(|x| table_line(text, x.span().start))
                .collect()
        })
        .unwrap_or_default();
    super::site_toml::apply(&mut cfg, &site_lines)?;
    Ok(cfg)
}

/// The line of a table: the span of an array-of-tables element may start at its first key;
/// walk back to the `[[...]]` header when there is one just above.
fn table_line(text: &str, offset: usize) -> usize {
    let (line, _) = line_col(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let mut l = line;
    while l > 1 {
        let t = lines.get(l - 1).map_or("", |s| s.trim());
        if t.starts_with("[[") {
            return l;
        }
        if t.starts_with('[') && !t.starts_with("[[") {
            break;
        }
        l -= 1;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts() {
        let t = "a\nbc\ndef";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 2));
        assert_eq!(line_col(t, 5), (3, 1));
    }
}
