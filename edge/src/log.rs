//! The log lines of both programs.
//!
//! The course's test suite parses every line that contains `action:`: it
//! splits the line on `|`; the first field ends in `action: NAME`, the
//! second is `result: ...`, the rest are `key: value`. [`Action`] is the
//! only thing that writes such a line, so the format lives here alone.
//!
//! Lines go to stdout as `2024-08-21 22:11:15 INFO     action: ...`.
//!
//! Values often carry what a peer sent (an echo, a reason quoting a bad
//! field), so every value is made safe before it is written: `|` becomes
//! `/`, control characters, Unicode line and paragraph separators and
//! bidirectional overrides are escaped (`\n`, `\u{2028}`), and a value is
//! cut at [`MAX_VALUE_LEN`] bytes. Whatever a value holds, a line stays one
//! line with the fields it was given.

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
/// use edge::log::Action;
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

    /// Adds `key: value`, made safe (see the module documentation).
    pub fn field(mut self, key: &'static str, value: impl Display) -> Action {
        self.fields.push((key, sanitize(&value.to_string(), MAX_VALUE_LEN)));
        self
    }

    /// Adds what a peer sent: `key: <its first MAX_QUOTE_LEN bytes>` and
    /// `bytes: <its length>`, so a line shows a prefix, never the whole.
    pub fn quote(mut self, key: &'static str, sent: &[u8]) -> Action {
        let text = String::from_utf8_lossy(&sent[..sent.len().min(MAX_QUOTE_LEN)]);
        self.fields.push((key, sanitize(text.trim_end(), MAX_QUOTE_LEN)));
        self.field("bytes", sent.len())
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

/// Longest value written, in bytes; a longer one is cut and ends in `…`.
pub const MAX_VALUE_LEN: usize = 512;

/// Longest prefix of what a peer sent that a line quotes, in bytes.
pub const MAX_QUOTE_LEN: usize = 64;

/// `value` safe for a log line: no `|`, no line break, no control or
/// bidirectional character (each escaped), at most `max` bytes plus `…`,
/// never empty (a blank value is written in quotes).
fn sanitize(value: &str, max: usize) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(value.len().min(max) + 4);
    for c in value.chars() {
        let before = out.len();
        match c {
            '|' => out.push('/'),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        if out.len() > max {
            out.truncate(before);
            out.push('…');
            break;
        }
    }
    // An empty (or blank) value would leave `key:` once a reader trims the
    // field: no longer `key: value`.
    if out.trim().is_empty() {
        out = format!("\"{out}\"");
    }
    // Nor may a value hold text a search for lines would take for a line
    // of its own.
    if out.contains("action:") {
        out = out.replace("action:", "action\\u{3a}");
    }
    assert!(!out.contains('|'), "a value never holds a field separator");
    assert!(!out.chars().any(needs_escape), "a value never breaks its line");
    out
}

/// `message` with every character that [`needs_escape`] escaped, and
/// nothing else changed: the last guard of every line, Action or not.
fn one_line(message: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write;
    if !message.chars().any(needs_escape) {
        return message.into();
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Characters that could break a line for some reader, or make a line read
/// differently than it is written: C0 and C1 controls (NEL among them),
/// Unicode line and paragraph separators, and the invisible format
/// characters (bidirectional marks, overrides and isolates, zero-width
/// ones, the byte order mark, interlinear annotations, tags).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{61c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
        )
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
pub fn parse_action(line: &str) -> Result<ParsedAction, NotAnAction> {
    let fault = |part: ActionPart| NotAnAction { part, line: line.to_owned() };
    let mut parts = line.split('|').map(str::trim);
    let first = parts.next().unwrap_or_default();
    let name = first
        .rsplit_once("action: ")
        .map(|(_, name)| name.to_owned())
        .filter(|name| !name.is_empty() && !name.contains(' '))
        .ok_or_else(|| fault(ActionPart::Name))?;
    let result = parts
        .next()
        .and_then(|f| f.strip_prefix("result: "))
        .filter(|r| ["success", "fail", "in_progress"].contains(r))
        .ok_or_else(|| fault(ActionPart::Result))?
        .to_owned();
    let fields = parts
        .enumerate()
        .map(|(i, f)| {
            f.split_once(": ")
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| fault(ActionPart::Field(i + 3)))
        })
        .collect::<Result<_, _>>()?;
    Ok(ParsedAction { name, result, fields })
}

/// A line that contains `action:` but is not an action line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {line}")]
pub struct NotAnAction {
    pub part: ActionPart,
    /// The line, as read.
    pub line: String,
}

/// The part of an action line that is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ActionPart {
    #[error("first field does not end in `action: NAME`")]
    Name,
    #[error("second field is not `result: success|fail|in_progress`")]
    Result,
    #[error("field {0} is not `key: value`")]
    Field(usize),
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

/// A log level that is none of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")]
pub struct UnknownLevel(String);

impl FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Level, UnknownLevel> {
        match s.trim().to_ascii_uppercase().as_str() {
            "DEBUG" => Ok(Level::Debug),
            "INFO" => Ok(Level::Info),
            "WARNING" | "WARN" => Ok(Level::Warning),
            "ERROR" => Ok(Level::Error),
            "CRITICAL" => Ok(Level::Critical),
            _ => Err(UnknownLevel(s.to_owned())),
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

mod thread;

pub use thread::{LogGuard, BUFFERED_BYTES};

/// The program's log queue, once [`init`] made it.
static QUEUE: std::sync::OnceLock<thread::LineQueue> = std::sync::OnceLock::new();

/// Lines dropped so far because stdout could not keep up (0 without a log
/// made by [`init`]).
pub fn dropped_lines() -> u64 {
    QUEUE.get().map_or(0, |queue| queue.dropped() as u64)
}

/// Waits, at most `within`, until every line logged so far is written to
/// stdout: a line that must come out before something else happens (the
/// draw's `sorteo`, before any agency gets its winners). Without a log
/// made by [`init`] (tests), there is nothing to wait for.
pub fn wait_written(within: std::time::Duration) -> bool {
    QUEUE.get().is_none_or(|queue| queue.wait_written(within))
}

/// Sends every log line at `level` or above to stdout; keep the guard for
/// as long as the program logs (dropping it writes out what is buffered).
///
/// Lines go to stdout through a thread of their own, in the order they were
/// made, so they show in `docker logs` as they happen: the thread writes
/// every line waiting at once, in writes of whole lines up to 4 KiB, never
/// holding one back for more to come. (Stdout alone would make one write
/// per line: a system call, and a wake-up of whoever reads the pipe, per
/// batch the server stores.) The program never waits for its log: if
/// stdout is slower than the lines come (a slow reader), up to
/// [`BUFFERED_BYTES`] of lines wait and more are dropped and counted
/// ([`LogGuard::dropped_lines`]). A line that cannot be written at all
/// (stdout on a full disk, a closed pipe) is lost, never a reason to stop,
/// and no error about it is printed anywhere (printing to stderr could
/// fail the same way, and `eprintln!` panics when it does).
pub fn init(level: Level) -> LogGuard {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let (queue, guard) = thread::spawn(std::io::stdout()).expect("the log's thread starts");
    let _ = QUEUE.set(queue.clone());
    let lines = tracing_subscriber::fmt::layer()
        .event_format(LineFormat)
        .with_writer(queue)
        .log_internal_errors(false)
        .with_filter(level.filter());
    // A second call (tests that start several servers) keeps the first.
    let _ = tracing_subscriber::registry().with(lines).try_init();
    guard
}

/// `2024-08-21 22:11:15 INFO     message`
struct LineFormat;

thread_local! {
    /// The local time of the current second, formatted once per second
    /// per thread: a busy server logs hundreds of lines a second.
    static TIMESTAMP: std::cell::RefCell<Timestamp> = const {
        std::cell::RefCell::new(Timestamp { second: i64::MIN, text: String::new() })
    };
}

/// `YYYY-MM-DD HH:MM:SS` of one second.
struct Timestamp {
    second: i64,
    text: String,
}

impl Timestamp {
    /// The text of the current second, made again only when it changed.
    fn now(&mut self) -> &str {
        let now = jiff::Timestamp::now();
        if now.as_second() != self.second {
            self.second = now.as_second();
            let local = now.to_zoned_datetime(local_zone().clone());
            self.text = local.strftime("%Y-%m-%d %H:%M:%S").to_string();
        }
        &self.text
    }
}

/// The local time zone, found once. `TimeZone::system()` names the zone
/// that `/etc/localtime` links to by listing the whole zoneinfo folder
/// (milliseconds at every start of every process); without `TZ`, the
/// file's own rules are all a timestamp needs.
fn local_zone() -> &'static jiff::tz::TimeZone {
    static ZONE: std::sync::OnceLock<jiff::tz::TimeZone> = std::sync::OnceLock::new();
    ZONE.get_or_init(|| {
        let localtime = || std::fs::read("/etc/localtime").ok();
        std::env::var_os("TZ")
            .is_none()
            .then(localtime)
            .flatten()
            .and_then(|rules| jiff::tz::TimeZone::tzif("Local", &rules).ok())
            .unwrap_or_else(jiff::tz::TimeZone::system)
    })
}

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
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            tracing::Level::DEBUG => "DEBUG",
            tracing::Level::TRACE => "TRACE",
        };
        TIMESTAMP.with_borrow_mut(|stamp| write!(writer, "{} {level:<8} ", stamp.now()))?;
        // Action lines are safe already; any other message is made safe
        // here too, so that no log call anywhere can break a line.
        let mut message = String::new();
        ctx.field_format().format_fields(Writer::new(&mut message), event)?;
        writeln!(writer, "{}", one_line(&message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_zone_is_the_systems() {
        let now = jiff::Timestamp::now();
        assert_eq!(local_zone().to_offset(now), jiff::tz::TimeZone::system().to_offset(now));
    }

    #[test]
    fn values_never_split_the_line() {
        let line = Action::fail("apuesta_recibida").field("reason", "a|b\nc\u{2028}d\0").to_string();
        assert_eq!(line, "action: apuesta_recibida | result: fail | reason: a/b\\nc\\u{2028}d\\u{0}");
        assert_eq!(line.split('|').count(), 3);
    }

    #[test]
    fn long_values_are_cut_and_quotes_are_a_prefix_and_a_length() {
        let line = Action::success("x").field("v", "ñ".repeat(1000)).to_string();
        assert!(line.len() < MAX_VALUE_LEN + 40 && line.ends_with('…'), "{line}");
        let sent = "validar-echo-server: hola\n".repeat(100);
        let line = Action::success("receive_message").quote("msg", sent.as_bytes()).to_string();
        let parsed = parse_action(&line).unwrap();
        assert!(parsed.get("msg").unwrap().starts_with("validar-echo-server: hola\\nvalidar"));
        assert_eq!(parsed.get("bytes"), Some("2600"));
        let short = Action::success("receive_message").quote("msg", b"hola, Loteria\n").to_string();
        assert!(short.ends_with("| msg: hola, Loteria | bytes: 14"), "{short}");
    }

    /// Every character a reader might take for a line break.
    const LINE_BREAKS: [char; 7] = ['\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}'];

    proptest::proptest! {
        #[test]
        fn no_value_makes_a_second_line_or_a_field_of_its_own(
            values in proptest::collection::vec(proptest::prelude::any::<String>(), 1..4),
            forged in "(\\|)?( result: success)?(\n)?( action: forged)?",
        ) {
            let mut action = Action::fail("apuesta_recibida");
            for value in &values {
                action = action.field("value", format!("{value}{forged}"));
            }
            let line = format!("2024-08-21 22:11:15 ERROR    {action}");
            proptest::prop_assert!(!line.contains(&LINE_BREAKS[..]), "{line:?}");
            proptest::prop_assert_eq!(line.matches("action:").count(), 1, "{}", line);
            proptest::prop_assert!(!line.chars().any(needs_escape), "{line:?}");
            let parsed = parse_action(&line).unwrap();
            proptest::prop_assert_eq!(parsed.name, "apuesta_recibida");
            proptest::prop_assert_eq!(parsed.fields.len(), values.len());
            proptest::prop_assert!(parsed.fields.iter().all(|(k, v)| k == "value" && v.len() <= MAX_VALUE_LEN + 3));
        }
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
