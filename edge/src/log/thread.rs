//! The thread that writes the log to stdout, and the queue that feeds it.
//!
//! Whoever logs appends the whole line to one buffer under a lock and wakes
//! the thread only if it sleeps; the thread takes everything waiting at
//! once (swapping buffers, so no line is copied twice and nothing is
//! allocated per line) and writes it out together (see below). Lines keep the order
//! in which they were handed over. When none are left, the thread looks
//! again a few times, yielding in between, then sleeps on a condition
//! variable until there are more.
//!
//! At most [`BUFFERED_BYTES`] of lines wait; a line that does not fit is
//! dropped whole and counted, so a stdout that is slower than the lines
//! (a reader that stalls) costs lines, never a wait. The count is the
//! program's last line ([`LogGuard::warn_if_dropped`]), which always finds
//! room. Lines go out in writes of whole lines of at most [`PIPE_BUF`]
//! bytes, which a pipe takes whole or not at all: a program that exits
//! while its stdout is stuck leaves no line cut in the middle (the lines it
//! could not write are lost, and not counted).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::Action;

/// Bytes of lines waiting to be written to stdout, at most; more lines are
/// dropped (and counted) rather than make the program wait. The thread may
/// be writing as much again that it took before.
pub const BUFFERED_BYTES: usize = 512 * 1024;

/// Times the thread looks for more lines, letting the other threads run in
/// between, before it goes to sleep. Lines come in bursts (those of a group
/// of stored batches), and waking a sleeping thread for each line costs
/// more context switches and CPU (docs/BENCHMARKS.md: tried and left out).
const LOOKS_BEFORE_SLEEP: usize = 4;

/// How long a program that exits waits for its last lines to be written: a
/// stdout that nobody reads must not keep it from exiting (the server has
/// 2 s in all to stop, and gives its connections 1 s).
pub const LAST_WRITE: Duration = Duration::from_millis(500);

/// Bytes a pipe takes at once or not at all (POSIX's `PIPE_BUF` on Linux):
/// the most the thread writes at once.
pub const PIPE_BUF: usize = 4096;

/// Hands lines to the log thread: tracing's writer. Each `write` is one
/// whole line (tracing's formatter writes an event at once).
#[derive(Clone)]
pub struct LineQueue(Arc<Shared>);

struct Shared {
    pending: Mutex<Pending>,
    /// The thread waits on it for lines; the guard, for the thread's end.
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    dropped: usize,
    /// The thread sleeps until it is woken.
    asleep: bool,
    /// The next line is let in whatever the bound: the count of dropped lines.
    last_word: bool,
    /// The guard is gone: write what is left, then stop.
    closing: bool,
    /// The thread wrote its last line.
    done: bool,
    /// Bytes of lines let in, and written (or given up on), so far.
    queued: u64,
    written: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the thread that writes to `out`; lines go to it through the
/// queue until the guard is dropped.
pub fn spawn<W: Write + Send + 'static>(out: W) -> std::io::Result<(LineQueue, LogGuard)> {
    let shared = Arc::new(Shared { pending: Mutex::default(), wake: Condvar::new() });
    {
        let shared = shared.clone();
        std::thread::Builder::new().name("log".into()).spawn(move || write_lines(&shared, out))?;
    }
    Ok((LineQueue(shared.clone()), LogGuard { shared }))
}

impl LineQueue {
    /// Waits until every line let in before the call is written out, at
    /// most `within`; whether they were.
    pub fn wait_written(&self, within: Duration) -> bool {
        let pending = self.0.lock();
        let target = pending.queued;
        let (pending, _) = self
            .0
            .wake
            .wait_timeout_while(pending, within, |p| p.written < target && !p.done)
            .unwrap_or_else(PoisonError::into_inner);
        pending.written >= target
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> usize {
        self.0.lock().dropped
    }

    fn push(&self, line: &[u8]) {
        debug_assert_eq!(line.last(), Some(&b'\n'), "tracing hands over whole lines");
        let mut pending = self.0.lock();
        if pending.lines.len() + line.len() > BUFFERED_BYTES {
            if !pending.last_word {
                pending.dropped += 1;
                return;
            }
            pending.last_word = false;
        }
        pending.lines.extend_from_slice(line);
        pending.queued += line.len() as u64;
        if pending.asleep {
            pending.asleep = false;
            self.0.wake.notify_all();
        }
    }
}

impl Write for &LineQueue {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineQueue {
    type Writer = &'a LineQueue;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// The thread's loop: everything waiting, together, until closing.
/// Errors are not reported: a line that cannot be written is lost.
fn write_lines<W: Write>(shared: &Shared, mut out: W) {
    let mut writing = Vec::new();
    loop {
        let closing = {
            let mut pending = shared.lock();
            let mut looks = 0;
            while pending.lines.is_empty() && !pending.closing {
                if looks < LOOKS_BEFORE_SLEEP {
                    looks += 1;
                    drop(pending);
                    std::thread::yield_now();
                    pending = shared.lock();
                } else {
                    pending.asleep = true;
                    pending = shared.wake.wait(pending).unwrap_or_else(PoisonError::into_inner);
                }
            }
            std::mem::swap(&mut pending.lines, &mut writing);
            pending.closing
        };
        if writing.is_empty() {
            debug_assert!(closing, "the thread wakes up to lines or to close");
            break;
        }
        for lines in whole_lines(&writing, PIPE_BUF) {
            debug_assert_eq!(lines.last(), Some(&b'\n'), "a write ends with a whole line");
            let _ = out.write_all(lines);
        }
        let _ = out.flush();
        let written = writing.len() as u64;
        writing.clear();
        shared.lock().written += written;
        shared.wake.notify_all();
    }
    shared.lock().done = true;
    shared.wake.notify_all();
}

/// `text` (whole lines) cut into runs of whole lines of at most `max`
/// bytes each; a line longer than that is a run of its own.
fn whole_lines(text: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = if rest.len() <= max {
            rest.len()
        } else if let Some(last) = rest[..max].iter().rposition(|&b| b == b'\n') {
            last + 1
        } else {
            rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |first| first + 1)
        };
        let (run, after) = rest.split_at(end);
        rest = after;
        Some(run)
    })
}

/// The log thread: dropping it writes out the lines waiting (waiting at
/// most `LAST_WRITE` for stdout to take them).
pub struct LogGuard {
    shared: Arc<Shared>,
}

impl LogGuard {
    /// Lines dropped so far because stdout could not keep up.
    pub fn dropped_lines(&self) -> usize {
        self.shared.lock().dropped
    }

    /// Logs at WARNING how many lines were dropped, if any: a program's
    /// last word before it exits, let in even when the buffer is full.
    pub fn warn_if_dropped(&self) {
        let dropped = {
            let mut pending = self.shared.lock();
            pending.last_word = pending.dropped > 0;
            pending.dropped
        };
        if dropped > 0 {
            let line =
                Action::fail("log").field("dropped_lines", dropped).field("why", "stdout could not keep up");
            tracing::warn!("{line}");
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut pending = self.shared.lock();
        pending.closing = true;
        self.shared.wake.notify_all();
        // Not joined: once it has written its last line, what is left of the
        // thread is its own teardown, which costs an exiting program a
        // wake-up for nothing; a thread stuck in a write is left
        // behind the same way. The process ends either way.
        let _ = self
            .shared
            .wake
            .wait_timeout_while(pending, LAST_WRITE, |p| !p.done)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Stdout as a test sees it: every write, and a gate that holds writes
    /// back while the test holds it.
    #[derive(Clone, Default)]
    struct Recorded {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        held: Arc<Mutex<()>>,
    }

    impl Write for Recorded {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _wait = self.held.lock().unwrap();
            self.writes.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(i: usize) -> String {
        format!("line {i}\n")
    }

    #[test]
    fn lines_waiting_go_out_together_all_of_them_in_order() {
        let out = Recorded::default();
        let (queue, guard) = spawn(out.clone()).unwrap();
        let held = out.held.lock().unwrap();
        // Whenever the thread writes first, that write waits at the gate
        // until all 500 lines are handed over: they go out in three writes
        // at most, and in one write per line if each were written alone.
        for i in 0..500 {
            (&queue).write_all(line(i).as_bytes()).unwrap();
        }
        drop(held);
        drop(guard);
        let writes = out.writes.lock().unwrap();
        let expected: String = (0..500).map(line).collect();
        assert_eq!(String::from_utf8_lossy(&writes.concat()), expected);
        // 4.4 KB of lines: the first one alone, then two runs of whole lines.
        assert!(writes.len() <= 3, "500 lines that waited went out in {} writes", writes.len());
        assert!(writes.iter().all(|w| w.len() <= PIPE_BUF && w.ends_with(b"\n")));
    }

    #[test]
    fn writes_are_runs_of_whole_lines_that_a_pipe_takes_at_once() {
        let text: String = (0..3000).map(|i| "x".repeat(i % 97) + "\n").collect();
        let long = format!("{}\n", "y".repeat(5000));
        let text = format!("{text}{long}{text}");
        let runs: Vec<&[u8]> = whole_lines(text.as_bytes(), PIPE_BUF).collect();
        assert_eq!(runs.concat(), text.as_bytes());
        for run in &runs {
            assert!(run.ends_with(b"\n"));
            assert!(run.len() <= PIPE_BUF || *run == long.as_bytes(), "a run of {} bytes", run.len());
        }
        assert!(runs.len() < 2 * text.len() / PIPE_BUF, "{} runs: too many", runs.len());
    }

    #[test]
    fn the_count_of_dropped_lines_finds_room_in_a_full_buffer() {
        use tracing_subscriber::layer::SubscriberExt;
        let out = Recorded::default();
        let (queue, guard) = spawn(out.clone()).unwrap();
        let held = out.held.lock().unwrap();
        for i in 0..3 * BUFFERED_BYTES / line(0).len() {
            (&queue).write_all(line(i).as_bytes()).unwrap();
        }
        let dropped = guard.dropped_lines();
        assert!(dropped > 0);
        let lines =
            tracing_subscriber::fmt::layer().event_format(super::super::LineFormat).with_writer(queue);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(lines), || {
            guard.warn_if_dropped();
        });
        drop(held);
        drop(guard);
        let text = String::from_utf8(out.writes.lock().unwrap().concat()).unwrap();
        let last = text.lines().last().unwrap();
        assert!(
            last.ends_with(&format!(
                "action: log | result: fail | dropped_lines: {dropped} | why: stdout could not keep up"
            )),
            "{last}"
        );
    }

    #[test]
    fn lines_past_the_buffer_are_dropped_whole_and_counted_the_rest_kept_in_order() {
        let out = Recorded::default();
        let (queue, guard) = spawn(out.clone()).unwrap();
        let held = out.held.lock().unwrap();
        // The thread takes at most one buffer's worth before the gate stops
        // it, so some of three buffers' worth of lines must be dropped.
        let lines = 3 * BUFFERED_BYTES / line(0).len();
        for i in 0..lines {
            (&queue).write_all(line(i).as_bytes()).unwrap();
        }
        let dropped = guard.dropped_lines();
        drop(held);
        drop(guard);
        let text = String::from_utf8(out.writes.lock().unwrap().concat()).unwrap();
        let kept: Vec<usize> =
            text.lines().map(|l| l.strip_prefix("line ").unwrap().parse().unwrap()).collect();
        assert!(dropped > 0, "{lines} lines never waited");
        assert_eq!(kept.len() + dropped, lines, "every line is kept whole or counted");
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "the lines kept are in order");
        assert_eq!(kept[0], 0);
    }

    #[test]
    fn a_stdout_nobody_reads_keeps_the_program_from_exiting_no_longer_than_the_last_write() {
        let out = Recorded::default();
        let (queue, guard) = spawn(out.clone()).unwrap();
        let held = out.held.lock().unwrap();
        (&queue).write_all(b"stuck\n").unwrap();
        let started = Instant::now();
        drop(guard);
        let took = started.elapsed();
        assert!(took >= LAST_WRITE && took < LAST_WRITE * 5, "the guard took {took:?}");
        drop(held);
    }
}
