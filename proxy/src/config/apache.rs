//! Apache importer.
use super::{Config, ConfigError, Warning};
/// Parse.
pub fn parse(_text: &str, _origin: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
    Err(ConfigError::new("todo"))
}
