//! Durations and sizes as the config writes them: `30s`, `5m`, `250ms`;
//! `65536`, `64KiB`, `10MiB`. Shared by every table that takes one
//! (`[limits]`, `[secrets.*]`, routes), so this module depends on nothing
//! else in the crate.

use std::time::Duration;

use serde::Deserialize;

/// A duration or size that cannot be read. Holds the text as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidUnit {
    /// Not a duration like `30s`, `5m` or `2h` (or too long to represent).
    #[error("'{0}' is not a duration like 30s, 5m or 2h")]
    Duration(String),
    /// Not a size like `65536`, `64KiB` or `10MiB` (or too large to
    /// represent).
    #[error("'{0}' is not a size like 65536, 64KiB or 10MiB")]
    Size(String),
}

/// Parses durations like `30s`, `5m`, `2h`, `1d`, `250ms`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, InvalidUnit> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let bad = || InvalidUnit::Duration(text.to_owned());
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    }
    .ok_or_else(bad)
}

/// A size in bytes, written as a number or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    /// The size in bytes.
    pub(crate) fn bytes(&self) -> Result<u64, InvalidUnit> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(t) => parse_size(t),
        }
    }
}

/// Parses `512`, `64KiB`, `10MiB`, `1GiB` (also `KB`/`MB`/`GB`, as powers of
/// 1000).
pub(crate) fn parse_size(text: &str) -> Result<u64, InvalidUnit> {
    let bad = || InvalidUnit::Size(text.to_owned());
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("m"), Err(InvalidUnit::Duration("m".into())));
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("5 minutes").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("10 parsecs"), Err(InvalidUnit::Size("10 parsecs".into())));
        assert!(parse_size("99999999999999GiB").is_err());
        assert!(parse_size("").is_err());
    }
}
