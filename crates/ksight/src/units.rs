//! Units of the command line: durations.

use std::time::Duration;

/// The shortest: a zero interval would spin.
const MIN_DURATION: Duration = Duration::from_millis(1);
/// The longest duration any flag takes: longer is a typo, not a setting.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Durations as `250ms`, `30s`, `5m`, `1h` (a bare number is seconds): at least 1 ms and at most
/// a year, so no flag can spin or overflow.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (use e.g. 30s, 5m, 1h)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if d < MIN_DURATION => Err(format!("duration {text:?} is below 1ms")),
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!("duration {text:?} is too long (at most 366 days)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("8784h"), Ok(MAX_DURATION));
        for bad in [
            "5 parsecs",
            "x",
            "",
            "0",
            "0s",
            "0.0001ms",
            "8785h",
            "1e400",
            "-1s",
            "1..2s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let huge = "9".repeat(400);
        assert!(parse_duration(&huge).is_err());
    }
}
