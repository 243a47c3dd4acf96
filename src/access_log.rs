//! The JSON access log, written off the request path. Each worker thread
//! formats its lines straight into its own buffer (a shard, behind a mutex
//! that only that thread takes between the writer's visits): no line is a
//! separate allocation, and nothing on the request path touches memory
//! that another thread writes. As nginx's `access_log … buffer=`, a shard
//! that reaches [`BATCH`] bytes is handed whole to the writer thread; the
//! writer also collects every shard every 20 ms, so a line reaches the file
//! within about that. A handed batch that finds the queue full is dropped
//! and its lines counted in `colorgate_access_log_dropped_total` rather than
//! stall a request. Lines from one thread keep their order; lines from two
//! threads are ordered within a tick. `reopen` (SIGUSR1, logrotate),
//! `set_path` (reload) and `flush` (shutdown, upgrade) collect every shard
//! first, so no line logged before them is lost or written after them, and
//! wait (bounded) for the writer, so no line logged after them goes before.
//!
//! (A line per queue message cost a quarter of colorgate's requests/s in
//! the load benchmark: the message, the string freed on another thread and
//! the queue's head and tail all moved between cores on every request.)
//!
//! The writer thread is started on first use, not in `start`: `run -d`
//! daemonizes (forks) after the log is opened, and a thread does not survive
//! a fork — started early, it would stay behind in the parent and the daemon
//! would queue lines that nobody writes.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A shard this full is handed to the writer without waiting for its tick.
pub const BATCH: usize = 64 * 1024;
/// Full batches waiting for the writer: at most this many × [`BATCH`] bytes.
const QUEUE: usize = 256;
const TICK: Duration = Duration::from_millis(20);

/// Lines not yet written: one thread's shard, or a full one (a batch) on
/// its way to the writer.
struct Shard {
    text: String,
    lines: u64,
}

impl Shard {
    fn empty() -> Shard {
        Shard {
            text: String::with_capacity(BATCH + 4096),
            lines: 0,
        }
    }
}

type Shards = Arc<Mutex<Vec<Arc<Mutex<Shard>>>>>;

enum Control {
    Reopen,
    SetPath(String),
    Flush(SyncSender<()>),
}

thread_local! {
    /// This thread's shard of each access log it wrote to (one, but for tests).
    static LOCAL: RefCell<Vec<(u64, Arc<Mutex<Shard>>)>> = const { RefCell::new(Vec::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while formatting a line leaves at worst a partial line.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Handle to the writer thread; cheap to share.
pub struct AccessLog {
    id: u64,
    batches: SyncSender<Shard>,
    control: SyncSender<Control>,
    /// Control messages must not be dropped when their queue is full.
    control_lock: Mutex<()>,
    shards: Shards,
    /// What the writer thread needs, until the first use starts it.
    pending: Mutex<Option<Writer>>,
    started: AtomicBool,
}

impl AccessLog {
    /// Open `path` ("-" = stdout). The writer thread starts on first use,
    /// in the process that serves (see the module doc).
    pub fn start(path: &str) -> io::Result<AccessLog> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let out = open(path)?;
        let (batches, batch_rx) = sync_channel(QUEUE);
        let (control, control_rx) = sync_channel(16);
        let shards = Shards::default();
        Ok(AccessLog {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            batches,
            control,
            control_lock: Mutex::new(()),
            shards: shards.clone(),
            pending: Mutex::new(Some(Writer {
                batches: batch_rx,
                control: control_rx,
                shards,
                current: path.to_string(),
                path: path.to_string(),
                out,
                taken: Vec::new(),
                spare: Vec::new(),
            })),
            started: AtomicBool::new(false),
        })
    }

    /// Start the writer thread unless it runs already.
    fn ensure_writer(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let mut pending = lock(&self.pending);
        if let Some(w) = pending.take() {
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || {
                    // Started by the first request's thread, whose CPU
                    // pinning (`server.cpu_affinity`) it would inherit.
                    pingora_runtime::unpin_current_thread();
                    w.run()
                });
            if let Err(e) = spawned {
                // The receivers are gone with the closure: lines count as dropped.
                log::error!("access log: cannot start the writer thread: {e}");
            }
        }
        self.started.store(true, Ordering::Release);
    }

    /// Queue one line (without its newline); never blocks.
    pub fn write(&self, line: &str) {
        self.write_with(|o| o.push_str(line));
    }

    /// Append one line, formatted by `line` into this thread's shard
    /// (without its newline); never blocks on I/O.
    pub fn write_with(&self, line: impl FnOnce(&mut String)) {
        self.ensure_writer();
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            let shard = match local.iter().position(|(id, _)| *id == self.id) {
                Some(i) => &local[i].1,
                None => {
                    let s = Arc::new(Mutex::new(Shard::empty()));
                    lock(&self.shards).push(s.clone());
                    local.push((self.id, s));
                    &local[local.len() - 1].1
                }
            };
            let mut sh = lock(shard);
            line(&mut sh.text);
            sh.text.push('\n');
            sh.lines += 1;
            if sh.text.len() >= BATCH {
                let batch = std::mem::replace(&mut *sh, Shard::empty());
                // Sent under the shard's lock: the writer, collecting this
                // shard, finds every earlier batch of it already queued.
                if let Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) =
                    self.batches.try_send(batch)
                {
                    crate::metrics::get().access_log_dropped.inc_by(b.lines);
                }
            }
        });
    }

    /// Reopen the file at the same path (after logrotate moved it). Lines
    /// logged before go to the old file; returns once lines logged after go
    /// to the new one (bounded, as `flush`).
    pub fn reopen(&self) {
        self.send_control(Control::Reopen);
        self.flush();
    }

    /// Write to a new path from now on (reload changed `access_log.path`),
    /// with the same order as `reopen`.
    pub fn set_path(&self, path: &str) {
        self.send_control(Control::SetPath(path.to_string()));
        self.flush();
    }

    /// Wait (bounded) until every line logged so far is written.
    pub fn flush(&self) {
        let (done_tx, done_rx) = sync_channel(1);
        self.send_control(Control::Flush(done_tx));
        let _ = done_rx.recv_timeout(Duration::from_secs(2));
    }

    /// Control messages wait for room (the writer takes them every tick)
    /// but never forever: a stuck writer must not wedge the signal loop
    /// that sends them.
    fn send_control(&self, mut msg: Control) {
        self.ensure_writer();
        let _guard = lock(&self.control_lock);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            match self.control.try_send(msg) {
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

/// The writer thread's state.
struct Writer {
    batches: Receiver<Shard>,
    control: Receiver<Control>,
    shards: Shards,
    /// The configured path.
    path: String,
    /// The file actually open; differs from `path` while the configured one
    /// cannot be opened (then a reopen still follows logrotate on this one).
    current: String,
    out: Out,
    /// Taken batches and shard buffers, in order, for the next write.
    taken: Vec<String>,
    /// Written buffers, given back to shards as they are taken.
    spare: Vec<String>,
}

impl Writer {
    fn run(mut self) {
        loop {
            std::thread::sleep(TICK);
            if !self.collect() {
                self.write();
                return;
            }
            self.write();
            loop {
                let c = match self.control.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                };
                // Lines logged before the message was sent go before it.
                self.collect();
                self.write();
                match c {
                    Control::Flush(done) => {
                        let _ = done.send(());
                    }
                    c => self.reopen(c),
                }
            }
        }
    }

    /// Take every queued batch and every shard's lines (buffers swapped,
    /// not copied); false once the log is gone (nothing can queue more).
    fn collect(&mut self) -> bool {
        let mut alive = self.drain_batches();
        let shards = lock(&self.shards).clone();
        for shard in shards {
            let mut sh = lock(&shard);
            // Earlier batches of this shard were queued under this lock.
            alive &= self.drain_batches();
            if sh.text.is_empty() {
                continue;
            }
            let empty = self
                .spare
                .pop()
                .unwrap_or_else(|| String::with_capacity(BATCH + 4096));
            self.taken.push(std::mem::replace(&mut sh.text, empty));
            sh.lines = 0;
        }
        alive
    }

    fn drain_batches(&mut self) -> bool {
        loop {
            match self.batches.try_recv() {
                Ok(b) => self.taken.push(b.text),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn write(&mut self) {
        for mut text in self.taken.drain(..) {
            if let Err(e) = self.out.write_all(text.as_bytes()) {
                log::error!("access log: write failed: {e}");
            }
            if self.spare.len() < 8 {
                text.clear();
                self.spare.push(text);
            }
        }
        if let Err(e) = self.out.flush() {
            log::error!("access log: write failed: {e}");
        }
    }

    fn reopen(&mut self, c: Control) {
        let reopen = matches!(c, Control::Reopen);
        if let Control::SetPath(p) = c {
            self.path = p;
        }
        let path = &self.path;
        match open(path) {
            Ok(o) => {
                self.out = o;
                self.current.clone_from(path);
            }
            Err(e) if self.current != *path => {
                let current = &self.current;
                log::error!("access log: cannot open {path}: {e}; still writing to {current}");
                // A reopen still follows the file logrotate moved.
                if reopen {
                    match open(current) {
                        Ok(o) => self.out = o,
                        Err(e) => log::error!("access log: cannot reopen {current}: {e}"),
                    }
                }
            }
            Err(e) => {
                log::error!("access log: cannot open {path}: {e}; still writing to the old file")
            }
        }
    }
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
        log.write("one");
        log.write("two");
        log.flush();
        std::fs::rename(&path, dir.join("a.log.1")).unwrap();
        log.reopen();
        log.write("three");
        log.flush();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_threads_lines_are_written_each_in_its_order() {
        let dir = std::env::temp_dir().join(format!("cg-al-mt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let log = Arc::new(AccessLog::start(path.to_str().unwrap()).unwrap());
        // Enough per thread to fill several batches before any tick.
        let (threads, lines) = (4, 3 * BATCH / 40);
        let writers: Vec<_> = (0..threads)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..lines {
                        log.write_with(|o| {
                            o.push_str(&format!("thread {t} line {i:08}"));
                        });
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut next = vec![0; threads];
        for l in text.lines() {
            let (t, i) = l
                .strip_prefix("thread ")
                .and_then(|r| r.split_once(" line "))
                .unwrap_or_else(|| panic!("not a whole line: {l:?}"));
            let t: usize = t.parse().unwrap();
            assert_eq!(
                i.parse::<usize>().unwrap(),
                next[t],
                "thread {t} out of order"
            );
            next[t] += 1;
        }
        assert_eq!(next, vec![lines; threads]);
        assert_eq!(crate::metrics::get().access_log_dropped.get(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_that_cannot_be_opened_leaves_reopen_on_the_file_in_use() {
        let dir = std::env::temp_dir().join(format!("cg-al-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let log = AccessLog::start(path.to_str().unwrap()).unwrap();
        log.set_path(dir.join("missing/b.log").to_str().unwrap());
        log.write("one");
        log.flush();
        std::fs::rename(&path, dir.join("a.log.1")).unwrap();
        log.reopen();
        log.write("two");
        log.flush();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log.1")).unwrap(),
            "one\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
