//! The log lines of both programs.
//!
//! The course's test suite parses every line that contains `action:`: it
//! splits the line on `|`; the first field ends in `action: NAME`, the
//! second is `result: ...`, the rest are `key: value`. [`Action`] is the
//! only thing that writes such a line, so the format lives here alone.
//!
//! Lines go to stdout as `2024-08-21 22:11:15 INFO     action: ...`.

use std::fmt::{self, Display};
use std::str::FromStr;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The second field of an action line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Fail,
    InProgress,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Fail => "fail",
            Outcome::InProgress => "in_progress",
        }
    }
}

/// One `action: NAME | result: ... | key: value ...` line.
///
/// ```
/// use lottery::log::Action;
/// let line = Action::success("apuesta_recibida").field("cantidad", 64);
/// assert_eq!(line.to_string(), "action: apuesta_recibida | result: success | cantidad: 64");
/// ```
#[derive(Debug, Clone)]
#[must_use = "an action line does nothing until it is logged"]
pub struct Action {
    name: &'static str,
    outcome: Outcome,
    fields: Vec<(&'static str, String)>,
}

impl Action {
    pub fn new(name: &'static str, outcome: Outcome) -> Action {
        Action { name, outcome, fields: Vec::new() }
    }

    pub fn success(name: &'static str) -> Action {
        Action::new(name, Outcome::Success)
    }

    pub fn fail(name: &'static str) -> Action {
        Action::new(name, Outcome::Fail)
    }

    pub fn in_progress(name: &'static str) -> Action {
        Action::new(name, Outcome::InProgress)
    }

    /// Adds `key: value`. A `|` or line break in the value would split the
    /// line for its readers, so each becomes a `/` or a space.
    pub fn field(mut self, key: &'static str, value: impl Display) -> Action {
        let value = value
            .to_string()
            .chars()
            .map(|c| match c {
                '|' => '/',
                '\n' | '\r' => ' ',
                c => c,
            })
            .collect();
        self.fields.push((key, value));
        self
    }
}

impl Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "action: {} | result: {}", self.name, self.outcome.as_str())?;
        for (key, value) in &self.fields {
            write!(f, " | {key}: {value}")?;
        }
        Ok(())
    }
}

/// An action line taken apart the way the course's suite reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAction {
    pub name: String,
    pub result: String,
    pub fields: Vec<(String, String)>,
}

impl ParsedAction {
    /// The value of `key`, if the line has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses a log line that contains `action:`: split on `|`, the first
/// field ends in `action: NAME`, the second is `result: success`, `fail`
/// or `in_progress`, every further one is `key: value`.
pub fn parse_action(line: &str) -> Result<ParsedAction, String> {
    let mut parts = line.split('|').map(str::trim);
    let first = parts.next().unwrap_or_default();
    let name = first
        .rsplit_once("action: ")
        .map(|(_, name)| name.to_owned())
        .filter(|name| !name.is_empty() && !name.contains(' '))
        .ok_or_else(|| format!("first field does not end in `action: NAME`: {line}"))?;
    let result = parts
        .next()
        .and_then(|f| f.strip_prefix("result: "))
        .filter(|r| ["success", "fail", "in_progress"].contains(r))
        .ok_or_else(|| format!("second field is not `result: success|fail|in_progress`: {line}"))?
        .to_owned();
    let fields = parts
        .map(|f| {
            f.split_once(": ")
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("field {f:?} is not `key: value`: {line}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(ParsedAction { name, result, fields })
}

/// A configured log level: DEBUG, INFO, WARNING (or WARN), ERROR, CRITICAL,
/// in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Level, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "DEBUG" => Ok(Level::Debug),
            "INFO" => Ok(Level::Info),
            "WARNING" | "WARN" => Ok(Level::Warning),
            "ERROR" => Ok(Level::Error),
            "CRITICAL" => Ok(Level::Critical),
            _ => Err(format!("{s:?} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")),
        }
    }
}

impl Level {
    fn filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            Level::Debug => LevelFilter::DEBUG,
            Level::Info => LevelFilter::INFO,
            Level::Warning => LevelFilter::WARN,
            // tracing has no level above ERROR.
            Level::Error | Level::Critical => LevelFilter::ERROR,
        }
    }
}

/// Sends every log line at `level` or above to stdout.
///
/// Stdout is written line by line, unbuffered beyond the line, so lines
/// show in `docker logs` as they happen and in the order they were made.
pub fn init(level: Level) {
    // A second call (tests that start several servers) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level.filter())
        .event_format(LineFormat)
        .with_writer(std::io::stdout)
        .try_init();
}

/// `2024-08-21 22:11:15 INFO     message`
struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = jiff::ZonedDateTime::now();
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            tracing::Level::DEBUG => "DEBUG",
            tracing::Level::TRACE => "TRACE",
        };
        write!(writer, "{} {level:<8} ", now.strftime("%Y-%m-%d %H:%M:%S"))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_split_the_line() {
        let line = Action::fail("apuesta_recibida").field("reason", "a|b\nc").to_string();
        assert_eq!(line, "action: apuesta_recibida | result: fail | reason: a/b c");
        assert_eq!(line.split('|').count(), 3);
    }

    #[test]
    fn lines_parse_the_way_the_course_suite_reads_them() {
        let line = format!(
            "2024-08-21 22:11:15 INFO     {}",
            Action::success("apuesta_enviada").field("dni", "30904465").field("numero", 7574)
        );
        let parsed = parse_action(&line).unwrap();
        assert_eq!((parsed.name.as_str(), parsed.result.as_str()), ("apuesta_enviada", "success"));
        assert_eq!(parsed.get("dni"), Some("30904465"));
        assert!(parse_action("x action: a | result: maybe").is_err());
        assert!(parse_action("x action: a | result: fail | novalue").is_err());
    }

    #[test]
    fn levels_parse_in_any_case() {
        assert_eq!("warn".parse(), Ok(Level::Warning));
        assert_eq!("Warning".parse(), Ok(Level::Warning));
        assert_eq!("critical".parse(), Ok(Level::Critical));
        assert!("LOUD".parse::<Level>().is_err());
    }
}
