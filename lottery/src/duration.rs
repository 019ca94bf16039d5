//! Durations in Go's syntax, both ways: `0s`, `150ms`, `5s`, `1m30s`, `1.5h`.
//!
//! The course's client is written in Go and its configuration files use
//! Go's `time.ParseDuration` syntax; [`GoDuration`] parses the same inputs
//! and prints like Go's `Duration.String`, so a configured `100ms` is logged
//! as `100ms`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A non-negative duration read and written in Go's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub Duration);

/// Why a text is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration like 50ms, 5s or 1m30s")]
pub struct ParseDurationError(String);

const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl FromStr for GoDuration {
    type Err = ParseDurationError;

    fn from_str(text: &str) -> Result<GoDuration, ParseDurationError> {
        let error = || ParseDurationError(text.to_owned());
        let mut rest = text.strip_prefix('+').unwrap_or(text);
        if rest == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        if rest.is_empty() {
            return Err(error());
        }
        let mut total_ns: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            let (int, after) = rest.split_at(int_len);
            let (frac, after) = match after.strip_prefix('.') {
                Some(f) => f.split_at(f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len())),
                None => ("", after),
            };
            if int.is_empty() && frac.is_empty() {
                return Err(error());
            }
            let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let scale = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(error)?.1;
            let whole: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| error())? };
            let mut part = whole.checked_mul(scale).ok_or_else(error)?;
            // Fractional digits beyond nanoseconds are dropped, as in Go.
            let mut divisor = 1u128;
            let mut fraction = 0u128;
            for d in frac.bytes().take(30) {
                divisor *= 10;
                fraction = fraction * 10 + u128::from(d - b'0');
            }
            part += fraction * scale / divisor;
            total_ns = total_ns.checked_add(part).ok_or_else(error)?;
            rest = after;
        }
        let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| error())?;
        Ok(GoDuration(Duration::new(secs, (total_ns % 1_000_000_000) as u32)))
    }
}

impl fmt::Display for GoDuration {
    /// Formats like Go: `0s`, `1.5µs`, `150ms`, `5s`, `1m30s`, `2h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        if ns == 0 {
            return f.write_str("0s");
        }
        if ns < 1_000_000_000 {
            let (scale, unit) = match ns {
                n if n < 1_000 => (1, "ns"),
                n if n < 1_000_000 => (1_000, "µs"),
                _ => (1_000_000, "ms"),
            };
            return write!(f, "{}{unit}", decimal(ns, scale));
        }
        let hours = ns / 3_600_000_000_000;
        let minutes = ns / 60_000_000_000 % 60;
        let seconds = decimal(ns % 60_000_000_000, 1_000_000_000);
        if hours > 0 {
            write!(f, "{hours}h{minutes}m{seconds}s")
        } else if minutes > 0 {
            write!(f, "{minutes}m{seconds}s")
        } else {
            write!(f, "{seconds}s")
        }
    }
}

/// `value / scale` with the fraction's trailing zeros removed.
fn decimal(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Duration {
        s.parse::<GoDuration>().unwrap().0
    }

    #[test]
    fn parses_go_syntax() {
        assert_eq!(parse("0s"), Duration::ZERO);
        assert_eq!(parse("0"), Duration::ZERO);
        assert_eq!(parse("50ms"), Duration::from_millis(50));
        assert_eq!(parse("5s"), Duration::from_secs(5));
        assert_eq!(parse("1m30s"), Duration::from_secs(90));
        assert_eq!(parse("1.5h"), Duration::from_secs(5400));
        assert_eq!(parse("2us"), Duration::from_micros(2));
        assert_eq!(parse("1h2m3.5s"), Duration::from_millis(3_723_500));
    }

    #[test]
    fn refuses_what_go_refuses() {
        for bad in ["", "5", "s", "5 s", "-5s", "5sec", "1..5s", ".s", "5s5"] {
            assert!(bad.parse::<GoDuration>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            ("0s", "0s"),
            ("100ms", "100ms"),
            ("150ms", "150ms"),
            ("5s", "5s"),
            ("90s", "1m30s"),
            ("1500ms", "1.5s"),
            ("2h", "2h0m0s"),
            ("1.5us", "1.5µs"),
            ("7ns", "7ns"),
        ];
        for (input, shown) in cases {
            assert_eq!(input.parse::<GoDuration>().unwrap().to_string(), shown, "{input}");
        }
    }

    proptest! {
        #[test]
        fn formatting_then_parsing_gives_the_same_duration(ns in 0u64..10_000_000_000_000) {
            let d = GoDuration(Duration::from_nanos(ns));
            prop_assert_eq!(d.to_string().parse::<GoDuration>().unwrap(), d);
        }
    }
}
