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

/// Fraction digits read; the rest are below a nanosecond in every unit.
const MAX_FRACTION_DIGITS: usize = 20;

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
            // Fractional digits below a nanosecond are dropped, as in Go.
            // The largest unit is 3.6e12 ns, so 13 digits reach below a
            // nanosecond; 20 keep the product far inside u128.
            let mut divisor = 1u128;
            let mut fraction = 0u128;
            for d in frac.bytes().take(MAX_FRACTION_DIGITS) {
                divisor *= 10;
                fraction = fraction * 10 + u128::from(d - b'0');
            }
            part += fraction.checked_mul(scale).ok_or_else(error)? / divisor;
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

    #[test]
    fn a_fraction_longer_than_nanoseconds_is_cut_not_misread() {
        assert_eq!(parse("0.999999999999999999999999999999s"), Duration::from_nanos(999_999_999));
        assert_eq!(parse("1.99999999999999999999h"), Duration::from_nanos(7_199_999_999_999));
    }

    /// `int.frac` of a unit of `unit_ns` nanoseconds, truncated to whole
    /// nanoseconds: `int × unit + frac × unit / 10^digits`, exact in u128
    /// for up to 20 fraction digits.
    fn reference_ns(int: &str, frac: &str, unit_ns: u128) -> Option<u128> {
        let whole = if int.is_empty() { 0 } else { int.parse::<u128>().ok()?.checked_mul(unit_ns)? };
        let part = frac.parse::<u128>().unwrap() * unit_ns / 10u128.pow(frac.len() as u32);
        whole.checked_add(part)
    }

    fn unit() -> impl Strategy<Value = (&'static str, u128)> {
        prop::sample::select(vec![
            ("ns", 1u128),
            ("us", 1_000),
            ("ms", 1_000_000),
            ("s", 1_000_000_000),
            ("m", 60_000_000_000),
            ("h", 3_600_000_000_000),
        ])
    }

    proptest! {
        #[test]
        fn formatting_then_parsing_gives_the_same_duration(ns in 0u64..10_000_000_000_000) {
            let d = GoDuration(Duration::from_nanos(ns));
            prop_assert_eq!(d.to_string().parse::<GoDuration>().unwrap(), d);
        }

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,40}") {
            let _ = text.parse::<GoDuration>();
        }

        #[test]
        fn decimal_durations_are_read_exactly(int in "[0-9]{0,12}", frac in "[0-9]{1,20}", unit in unit()) {
            let text = format!("{int}.{frac}{}", unit.0);
            let expected = reference_ns(&int, &frac, unit.1).filter(|ns| *ns <= u128::from(u64::MAX) * 1_000_000_000);
            let parsed = text.parse::<GoDuration>().ok().map(|d| d.0.as_nanos());
            prop_assert_eq!(parsed, expected, "{}", text);
        }

        #[test]
        fn fraction_digits_past_the_twentieth_are_dropped(int in "[0-9]{0,6}", frac in "[0-9]{21,60}", unit in unit()) {
            let long = format!("{int}.{frac}{}", unit.0);
            let cut = format!("{int}.{}{}", &frac[..20], unit.0);
            prop_assert_eq!(long.parse::<GoDuration>(), cut.parse::<GoDuration>());
        }
    }
}
