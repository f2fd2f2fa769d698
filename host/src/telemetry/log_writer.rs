//! Where log lines go: a buffer that threads append finished lines to, and
//! one writer thread that empties it onto the output a batch at a time.
//!
//! A request thread formats its line and appends it under a short lock; it
//! never makes a system call and, while the writer is busy or sleeping,
//! never wakes it. The writer sleeps until the first line after a write,
//! lets a batch gather for [`BATCH_WINDOW`], then writes it with one call.
//! Nothing is dropped: when the output cannot keep up and the buffer is
//! full, appending waits until the writer has taken the batch.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer lets lines gather before writing them: the most a
/// line waits in the buffer while the output keeps up.
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);

/// Buffered bytes at which the writer takes the batch without waiting out
/// the window.
const EARLY_WRITE_BYTES: usize = 256 << 10;

/// Buffered bytes at which appending waits for the writer.
const DEFAULT_CAPACITY: usize = 4 << 20;

/// Longest the guard waits at shutdown for the last lines to be written;
/// an output that stopped reading (a full pipe) must not hang the exit.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// The handle threads log through ([`MakeWriter`]).
#[derive(Clone)]
pub struct LogBuffer {
    shared: Arc<Shared>,
}

/// Flushes what is buffered and stops the writer thread when dropped; keep
/// it alive until the process exits.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    shutdown_wait: Duration,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: the first line of a batch, a full buffer, or close.
    wake_writer: Condvar,
    /// Wakes appenders waiting for room.
    room: Condvar,
    capacity: usize,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// The writer is waiting for a first line and must be woken for it.
    writer_idle: bool,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked mid-append left at worst a partial line.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) {
        let mut state = self.lock();
        while state.pending.len() >= self.capacity && !state.closed {
            self.wake_writer.notify_one();
            state = self.room.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            return; // the writer is gone: nowhere to put the line
        }
        state.pending.extend_from_slice(line);
        if state.writer_idle || state.pending.len() >= EARLY_WRITE_BYTES.min(self.capacity) {
            state.writer_idle = false;
            self.wake_writer.notify_one();
        }
    }

    /// The writer thread: one write per batch until closed and drained.
    fn run(&self, mut out: impl Write) {
        let mut batch = Vec::new();
        loop {
            let mut state = self.lock();
            while state.pending.is_empty() && !state.closed {
                state.writer_idle = true;
                state = self.wake_writer.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            if state.pending.is_empty() {
                return; // closed, and everything written
            }
            // Let the batch gather, unless it is already large or closing.
            if !state.closed && state.pending.len() < EARLY_WRITE_BYTES {
                state = self.wake_writer.wait_timeout(state, BATCH_WINDOW).unwrap_or_else(PoisonError::into_inner).0;
            }
            std::mem::swap(&mut state.pending, &mut batch);
            drop(state);
            self.room.notify_all();
            // A failing output (a closed stderr) loses these lines but must
            // not stop logging callers; there is nowhere to report it.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
        }
    }
}

impl LogBuffer {
    /// Starts the writer thread, writing to `out`.
    pub fn start(out: impl Write + Send + 'static) -> std::io::Result<(LogBuffer, LogWriterGuard)> {
        LogBuffer::with_limits(out, DEFAULT_CAPACITY, SHUTDOWN_WAIT)
    }

    fn with_limits(
        out: impl Write + Send + 'static,
        capacity: usize,
        shutdown_wait: Duration,
    ) -> std::io::Result<(LogBuffer, LogWriterGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake_writer: Condvar::new(),
            room: Condvar::new(),
            capacity: capacity.max(1),
        });
        let thread = std::thread::Builder::new().name("switchyard-log".into()).spawn({
            let shared = shared.clone();
            move || shared.run(out)
        })?;
        Ok((LogBuffer { shared: shared.clone() }, LogWriterGuard { shared, thread: Some(thread), shutdown_wait }))
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake_writer.notify_one();
        self.shared.room.notify_all();
        let Some(thread) = self.thread.take() else { return };
        let deadline = Instant::now() + self.shutdown_wait;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

/// One event's writer. The formatter hands it the whole line in one call.
pub struct LineWriter<'a>(&'a Shared);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Captured;

    fn lines_after_close(capacity: usize, threads: usize, per_thread: usize) -> Vec<String> {
        let sink = Captured::default();
        let (buffer, guard) = LogBuffer::with_limits(sink.clone(), capacity, SHUTDOWN_WAIT).unwrap();
        std::thread::scope(|scope| {
            for t in 0..threads {
                let buffer = buffer.clone();
                scope.spawn(move || {
                    for i in 0..per_thread {
                        buffer.make_writer().write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(guard);
        sink.text().lines().map(str::to_owned).collect()
    }

    fn assert_every_line_once_in_order(lines: &[String], threads: usize, per_thread: usize) {
        assert_eq!(lines.len(), threads * per_thread);
        for t in 0..threads {
            let of_thread: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.split_once(' ').filter(|(who, _)| *who == t.to_string()))
                .map(|(_, i)| i.parse().unwrap())
                .collect();
            assert_eq!(of_thread, (0..per_thread).collect::<Vec<_>>(), "thread {t}");
        }
    }

    #[test]
    fn closing_writes_every_line_in_order() {
        let lines = lines_after_close(DEFAULT_CAPACITY, 4, 2_000);
        assert_every_line_once_in_order(&lines, 4, 2_000);
    }

    #[test]
    fn a_full_buffer_makes_writers_wait_instead_of_dropping() {
        // Room for a few lines only: appenders must wait for the writer.
        let lines = lines_after_close(32, 3, 1_000);
        assert_every_line_once_in_order(&lines, 3, 1_000);
    }

    /// An output that blocks every write until it is let go.
    struct Stuck(std::sync::mpsc::Receiver<()>);

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_does_not_hang_shutdown() {
        let (release, stuck) = std::sync::mpsc::channel();
        let (buffer, guard) =
            LogBuffer::with_limits(Stuck(stuck), DEFAULT_CAPACITY, Duration::from_millis(20)).unwrap();
        buffer.make_writer().write_all(b"never written\n").unwrap();
        let (dropped, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(guard);
            let _ = dropped.send(());
        });
        let returned = done.recv_timeout(Duration::from_secs(30));
        drop(release); // lets the writer thread go
        assert!(returned.is_ok(), "dropping the guard hung on a stuck output");
    }

    #[test]
    fn lines_are_written_without_closing() {
        let sink = Captured::default();
        let (buffer, _guard) = LogBuffer::start(sink.clone()).unwrap();
        buffer.make_writer().write_all(b"first\n").unwrap();
        // Bounded wait for the writer thread; the window is milliseconds.
        for _ in 0..500 {
            if !sink.text().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(sink.text(), "first\n");
    }
}
