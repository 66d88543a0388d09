//! Units of the command line: durations and ring sizes.

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
    let invalid = || format!("invalid duration {text:?} (use e.g. 30s, 5m, 1h)");
    let unit_ns: u128 = match unit {
        "" | "s" => 1_000_000_000,
        "ms" => 1_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    // Exact decimal arithmetic in ns: floating point would make 8957084265ms a hair longer.
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(invalid());
    }
    let too_long = || format!("duration {text:?} is too long (at most 366 days)");
    let digits = |s: &str| -> Result<u128, String> {
        if s.is_empty() {
            return Ok(0);
        }
        s.parse::<u128>().map_err(|_| too_long())
    };
    let whole_ns = digits(whole)?.checked_mul(unit_ns).ok_or_else(too_long)?;
    // Digits past ns precision are dropped (rounded down).
    let fraction = &fraction[..fraction.len().min(20)];
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction_ns = digits(fraction)? * unit_ns / scale;
    let ns = whole_ns + fraction_ns;
    if ns < MIN_DURATION.as_nanos() {
        return Err(format!("duration {text:?} is below 1ms"));
    }
    if ns > MAX_DURATION.as_nanos() {
        return Err(too_long());
    }
    Ok(Duration::from_nanos(ns as u64))
}

/// `4096`, `64K`, `8M`: a power of two of at least one page (4 KiB on x86_64; 16 or 64 KiB
/// on some arm64 kernels) and at most 1 GiB.
pub fn parse_ring_size(text: &str) -> Result<u32, String> {
    let page = super::kernel::page_size();
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let scale: u64 = match unit {
        "" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "m" | "MiB" => 1 << 20,
        _ => return Err(format!("invalid size {t:?} (use e.g. 4096, 64K, 8M)")),
    };
    let n = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| n.is_power_of_two() && (page..=1 << 30).contains(n))
        .ok_or_else(|| format!("invalid size {t:?} (a power of two from {page} to 1G)"))?;
    Ok(n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn any_text_is_a_duration_in_bounds_or_an_error(text in ".{0,40}") {
            if let Ok(d) = parse_duration(&text) {
                proptest::prop_assert!((MIN_DURATION..=MAX_DURATION).contains(&d));
            }
        }

        #[test]
        fn milliseconds_round_trip(ms in 1u64..=MAX_DURATION.as_millis() as u64) {
            proptest::prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
        }
    }

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

    #[test]
    fn ring_sizes() {
        let page = crate::common::kernel::page_size() as u32;
        assert_eq!(parse_ring_size(&page.to_string()), Ok(page));
        assert!(parse_ring_size(&(page / 2).to_string()).is_err());
        assert_eq!(parse_ring_size("8M"), Ok(8 << 20));
        assert_eq!(parse_ring_size("64K"), Ok(65536));
        assert!(parse_ring_size("5000").is_err());
        assert!(parse_ring_size("1024").is_err());
        assert!(parse_ring_size("8X").is_err());
    }
}
