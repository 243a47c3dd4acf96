//! The JSON access log, written off the request path. Requests hand a
//! finished line to a bounded queue and never wait: a writer thread wakes
//! every 20 ms, drains the queue into a large buffer and writes it in one
//! go (a wake-up per line would cost a futex call per request). A full
//! queue drops the line and counts it in
//! `colorgate_access_log_dropped_total` rather than stall a request.
//! `reopen` (SIGUSR1, logrotate) and `flush` (shutdown, upgrade) go through
//! the same queue, so no line is lost or reordered around them.
//!
//! The writer thread is started on first use, not in `start`: `run -d`
//! daemonizes (forks) after the log is opened, and a thread does not survive
//! a fork — started early, it would stay behind in the parent and the daemon
//! would queue lines that nobody writes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const QUEUE: usize = 65_536;
const TICK: Duration = Duration::from_millis(20);

enum Msg {
    Line(String),
    Reopen,
    SetPath(String),
    Flush(SyncSender<()>),
}

/// Handle to the writer thread; cheap to share.
pub struct AccessLog {
    tx: SyncSender<Msg>,
    /// Control messages must not be dropped when the queue is full.
    control: Mutex<()>,
    /// What the writer thread needs, until the first use starts it.
    pending: Mutex<Option<(Receiver<Msg>, String, Out)>>,
    started: AtomicBool,
}

impl AccessLog {
    /// Open `path` ("-" = stdout). The writer thread starts on first use,
    /// in the process that serves (see the module doc).
    pub fn start(path: &str) -> io::Result<AccessLog> {
        let out = open(path)?;
        let (tx, rx) = sync_channel(QUEUE);
        Ok(AccessLog {
            tx,
            control: Mutex::new(()),
            pending: Mutex::new(Some((rx, path.to_string(), out))),
            started: AtomicBool::new(false),
        })
    }

    /// Start the writer thread unless it runs already.
    fn ensure_writer(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((rx, path, out)) = pending.take() {
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || writer(rx, path, out));
            if let Err(e) = spawned {
                // The receiver is gone with the closure: lines count as dropped.
                log::error!("access log: cannot start the writer thread: {e}");
            }
        }
        self.started.store(true, Ordering::Release);
    }

    /// Queue one line (without its newline); never blocks.
    pub fn write(&self, line: String) {
        self.ensure_writer();
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                crate::metrics::get().access_log_dropped.inc()
            }
        }
    }

    /// Reopen the file at the same path (after logrotate moved it).
    pub fn reopen(&self) {
        self.control(Msg::Reopen);
    }

    /// Write to a new path from now on (reload changed `access_log.path`).
    pub fn set_path(&self, path: &str) {
        self.control(Msg::SetPath(path.to_string()));
    }

    /// Wait (bounded) until every line queued so far is written.
    pub fn flush(&self) {
        let (done_tx, done_rx) = sync_channel(1);
        self.control(Msg::Flush(done_tx));
        let _ = done_rx.recv_timeout(Duration::from_secs(2));
    }

    /// Control messages wait for room (the writer drains the whole queue
    /// every tick) but never forever: a stuck writer must not wedge the
    /// signal loop that sends them.
    fn control(&self, mut msg: Msg) {
        self.ensure_writer();
        let _guard = self.control.lock();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(TICK / 4);
                }
                Err(_) => {
                    log::error!(
                        "access log: the writer does not keep up; a reopen/flush was skipped"
                    );
                    return;
                }
            }
        }
    }
}

enum Out {
    Stdout(io::Stdout),
    /// Unbuffered: the writer's batch is the buffer, so a `BufWriter` here
    /// would only copy every batch once more.
    File(File),
}

impl Out {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Out::Stdout(s) => s.lock().write_all(b),
            Out::File(f) => f.write_all(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Stdout(s) => s.lock().flush(),
            Out::File(f) => f.flush(),
        }
    }
}

fn open(path: &str) -> io::Result<Out> {
    if path == "-" {
        return Ok(Out::Stdout(io::stdout()));
    }
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Out::File(f))
}

fn writer(rx: Receiver<Msg>, mut path: String, mut out: Out) {
    // The file actually open; differs from `path` while the configured one
    // cannot be opened (then a reopen still follows logrotate on this one).
    let mut current = path.clone();
    let mut batch = Vec::with_capacity(256 * 1024);
    loop {
        std::thread::sleep(TICK);
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    write_batch(&mut out, &mut batch);
                    return;
                }
            };
            match msg {
                Msg::Line(l) => {
                    batch.extend_from_slice(l.as_bytes());
                    batch.push(b'\n');
                    if batch.len() > 200 * 1024 {
                        write_batch(&mut out, &mut batch);
                    }
                }
                Msg::Flush(done) => {
                    write_batch(&mut out, &mut batch);
                    let _ = done.send(());
                }
                Msg::Reopen | Msg::SetPath(_) => {
                    write_batch(&mut out, &mut batch);
                    let reopen = matches!(msg, Msg::Reopen);
                    if let Msg::SetPath(p) = msg {
                        path = p;
                    }
                    match open(&path) {
                        Ok(o) => {
                            out = o;
                            current.clone_from(&path);
                        }
                        Err(e) if current != path => {
                            log::error!(
                                "access log: cannot open {path}: {e}; still writing to {current}"
                            );
                            // A reopen still follows the file logrotate moved.
                            if reopen {
                                match open(&current) {
                                    Ok(o) => out = o,
                                    Err(e) => {
                                        log::error!("access log: cannot reopen {current}: {e}")
                                    }
                                }
                            }
                        }
                        Err(e) => log::error!(
                            "access log: cannot open {path}: {e}; still writing to the old file"
                        ),
                    }
                }
            }
        }
        write_batch(&mut out, &mut batch);
    }
}

fn write_batch(out: &mut Out, batch: &mut Vec<u8>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = out.write_all(batch).and_then(|_| out.flush()) {
        log::error!("access log: write failed: {e}");
    }
    batch.clear();
}

/// `2026-11-26T20:01:02.123Z` without a date library.
pub fn push_rfc3339_millis(out: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    use crate::json::push_padded;
    push_padded(out, year.max(0) as u64, 4);
    for (sep, n) in [('-', month as u64), ('-', day as u64), ('T', rem / 3600)] {
        out.push(sep);
        push_padded(out, n, 2);
    }
    for (sep, n) in [(':', rem % 3600 / 60), (':', rem % 60)] {
        out.push(sep);
        push_padded(out, n, 2);
    }
    out.push('.');
    push_padded(out, d.subsec_millis().into(), 3);
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        let mut s = String::new();
        push_rfc3339_millis(
            &mut s,
            UNIX_EPOCH + Duration::from_millis(1_795_723_262_123),
        );
        assert_eq!(s, "2026-11-26T20:01:02.123Z");
        s.clear();
        push_rfc3339_millis(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400));
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn lines_are_written_in_order_and_reopen_moves_to_a_new_file() {
        let dir = std::env::temp_dir().join(format!("cg-al-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let log = AccessLog::start(path.to_str().unwrap()).unwrap();
        log.write("one".into());
        log.write("two".into());
        log.flush();
        std::fs::rename(&path, dir.join("a.log.1")).unwrap();
        log.reopen();
        log.write("three".into());
        log.flush();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_that_cannot_be_opened_leaves_reopen_on_the_file_in_use() {
        let dir = std::env::temp_dir().join(format!("cg-al-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let log = AccessLog::start(path.to_str().unwrap()).unwrap();
        log.set_path(dir.join("missing/b.log").to_str().unwrap());
        log.write("one".into());
        log.flush();
        std::fs::rename(&path, dir.join("a.log.1")).unwrap();
        log.reopen();
        log.write("two".into());
        log.flush();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log.1")).unwrap(),
            "one\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
