//! The thread that writes the log to stdout, and the queue that feeds it.
//!
//! Whoever logs appends the whole line to one buffer under a lock and wakes
//! the thread only if it sleeps; the thread takes everything waiting at
//! once (swapping buffers, so no line is copied twice and nothing is
//! allocated per line) and writes it in one `write`. Lines keep the order
//! in which they were handed over. When none are left, the thread looks
//! again a few times, yielding in between, then sleeps on a condition
//! variable until there are more.
//!
//! At most [`BUFFERED_BYTES`] of lines wait; a line that does not fit is
//! dropped whole and counted, so a stdout that is slower than the lines
//! (a reader that stalls) costs lines, never a wait.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes of lines waiting to be written to stdout, at most; more lines are
/// dropped (and counted) rather than make the program wait. The thread may
/// be writing as much again that it took before.
pub const BUFFERED_BYTES: usize = 512 * 1024;

/// Times the thread looks for more lines, letting the other threads run in
/// between, before it goes to sleep. Lines come in bursts (those of a group
/// of stored batches), and waking a sleeping thread for each line costs
/// more: measured on the server, it doubles its context switches and adds
/// about a tenth to its CPU time.
const LOOKS_BEFORE_SLEEP: usize = 4;

/// How long a program that exits waits for its last lines to be written: a
/// stdout that nobody reads must not keep it from exiting.
pub const LAST_WRITE: Duration = Duration::from_secs(1);

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
    /// The guard is gone: write what is left, then stop.
    closing: bool,
    /// The thread wrote its last line.
    done: bool,
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
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new().name("log".into()).spawn(move || write_lines(&shared, out))?
    };
    Ok((LineQueue(shared.clone()), LogGuard { shared, thread: Some(thread) }))
}

impl LineQueue {
    fn push(&self, line: &[u8]) {
        let mut pending = self.0.lock();
        if pending.lines.len() + line.len() > BUFFERED_BYTES {
            pending.dropped += 1;
            return;
        }
        pending.lines.extend_from_slice(line);
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

/// The thread's loop: everything waiting, in one write, until closing.
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
        let _ = out.write_all(&writing);
        let _ = out.flush();
        writing.clear();
    }
    shared.lock().done = true;
    shared.wake.notify_all();
}

/// The log thread: dropping it writes out the lines waiting (waiting at
/// most [`LAST_WRITE`] for stdout to take them).
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogGuard {
    /// Lines dropped so far because stdout could not keep up.
    pub fn dropped_lines(&self) -> usize {
        self.shared.lock().dropped
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut pending = self.shared.lock();
        pending.closing = true;
        self.shared.wake.notify_all();
        let (pending, _) = self
            .shared
            .wake
            .wait_timeout_while(pending, LAST_WRITE, |p| !p.done)
            .unwrap_or_else(PoisonError::into_inner);
        let done = pending.done;
        drop(pending);
        // A thread stuck in a write is left behind; the process ends anyway.
        if let (true, Some(thread)) = (done, self.thread.take()) {
            let _ = thread.join();
        }
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
        // until all 500 lines are handed over: they go out in two writes
        // at most, and in one write per line if each were written alone.
        for i in 0..500 {
            (&queue).write_all(line(i).as_bytes()).unwrap();
        }
        drop(held);
        drop(guard);
        let writes = out.writes.lock().unwrap();
        let expected: String = (0..500).map(line).collect();
        assert_eq!(String::from_utf8_lossy(&writes.concat()), expected);
        assert!(writes.len() <= 2, "500 lines that waited went out in {} writes", writes.len());
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
