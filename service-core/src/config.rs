//! Small building blocks of both binaries' command lines.

use std::{fmt, time::Duration};

/// A secret string (token, key, URL with a password) that never appears in `Debug` output or
/// logs. Empty values are refused: an empty secret is a mistake, not a choice.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.is_empty() {
            return Err("the value must not be empty".into());
        }
        Ok(Self(value.to_owned()))
    }
}

/// Parses durations such as `500ms`, `8s`, `5m` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("`{text}`: {error}; write e.g. 500ms, 8s, 5m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_the_rest() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("8s"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("8").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn secrets_hide_in_debug_and_refuse_empty() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!("".parse::<Secret>().is_err());
    }
}
