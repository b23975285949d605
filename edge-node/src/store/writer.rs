//! The single writer: one thread owns the only read-write connection and commits in
//! groups.
//!
//! Callers (HTTP handlers, jobs, CLI commands) send a closure over a bounded queue.
//! The thread takes whatever is queued (up to `group_max`), opens one transaction, runs
//! each closure inside its own savepoint (a failing closure rolls back only its own
//! changes), commits once, and only then publishes the effects (projections, event
//! stream) and answers every caller. So a caller hears "ok" only after the commit that
//! holds its change is durable, and many orders share one fsync.

use super::db::StoreError;
use crate::core::clock::Clock;
use chrono::{DateTime, Utc};
use rusqlite::Connection;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Receives the effects of each committed group, in commit order, on the writer thread.
pub trait Publisher<E>: Send + Sync + 'static {
    fn publish(&self, effects: Vec<E>);
    /// A group's commit failed and was rolled back: state kept in memory beside the
    /// database (the documents) must be reloaded from `conn`.
    fn rolled_back(&self, conn: &Connection);
}

/// What a write closure sees: the connection (inside a transaction and savepoint), the
/// time the group started, and a list to record effects in.
pub struct WriteCtx<'a, E> {
    pub conn: &'a Connection,
    pub now: DateTime<Utc>,
    effects: Vec<E>,
}

impl<E> WriteCtx<'_, E> {
    pub fn effect(&mut self, effect: E) {
        self.effects.push(effect);
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the box is busy; try again shortly")]
    Overloaded,
    #[error("the box is shutting down")]
    ShuttingDown,
    #[error("could not commit: {0}")]
    Commit(String),
}

struct JobOutcome {
    keep: bool,
    complete: Box<dyn FnOnce(Result<(), WriteError>) + Send>,
}

type Job<E> = Box<dyn FnOnce(&mut WriteCtx<'_, E>) -> JobOutcome + Send>;

enum Msg<E> {
    Job(Job<E>),
    Stop,
}

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Bounded queue: when full, writes are refused with `Overloaded` (HTTP 503).
    pub queue_max: usize,
    /// How many queued writes at most share one transaction.
    pub group_max: usize,
}

pub struct Writer<E> {
    tx: mpsc::Sender<Msg<E>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl<E: Send + 'static> Writer<E> {
    pub fn spawn(
        conn: Connection,
        clock: Arc<dyn Clock>,
        publisher: Arc<dyn Publisher<E>>,
        config: WriterConfig,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_max.max(1));
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, clock, publisher, config.group_max.max(1)))
            .expect("spawning the writer thread");
        Self {
            tx,
            thread: std::sync::Mutex::new(Some(thread)),
        }
    }

    /// Runs `f` in the next group commit and returns its result once that group is
    /// durable. An `Err` from `f` rolls back only `f`'s changes.
    pub async fn write<R, Er, F>(&self, f: F) -> Result<R, Er>
    where
        R: Send + 'static,
        Er: From<WriteError> + From<StoreError> + Send + 'static,
        F: FnOnce(&mut WriteCtx<'_, E>) -> Result<R, Er> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<R, Er>>();
        let job: Job<E> = Box::new(move |ctx| match f(ctx) {
            Ok(value) => JobOutcome {
                keep: true,
                complete: Box::new(move |committed| {
                    let _ = reply.send(committed.map(|()| value).map_err(Er::from));
                }),
            },
            Err(err) => JobOutcome {
                keep: false,
                complete: Box::new(move |_| {
                    let _ = reply.send(Err(err));
                }),
            },
        });
        self.tx.try_send(Msg::Job(job)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => WriteError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => WriteError::ShuttingDown,
        })?;
        answer
            .await
            .map_err(|_| Er::from(WriteError::Commit("the write was abandoned".into())))?
    }

    /// Writes waiting in the queue now, and how many it holds at most.
    pub fn queued(&self) -> (usize, usize) {
        let max = self.tx.max_capacity();
        (max - self.tx.capacity(), max)
    }

    /// Blocking form of [`Writer::write`] for CLI commands that run outside a runtime.
    pub fn write_blocking<R, Er, F>(&self, f: F) -> Result<R, Er>
    where
        R: Send + 'static,
        Er: From<WriteError> + From<StoreError> + Send + 'static,
        F: FnOnce(&mut WriteCtx<'_, E>) -> Result<R, Er> + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| Er::from(WriteError::Commit(e.to_string())))?;
        rt.block_on(self.write(f))
    }

    /// Finishes every write queued so far, then stops the thread. Writes sent after
    /// this are refused with `ShuttingDown`.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Msg::Stop).await;
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn writer_loop<E: Send + 'static>(
    conn: Connection,
    mut rx: mpsc::Receiver<Msg<E>>,
    clock: Arc<dyn Clock>,
    publisher: Arc<dyn Publisher<E>>,
    group_max: usize,
) {
    let mut stopping = false;
    while !stopping {
        let mut batch = Vec::new();
        match rx.blocking_recv() {
            Some(Msg::Job(job)) => batch.push(job),
            Some(Msg::Stop) | None => break,
        }
        while batch.len() < group_max {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        run_group(&conn, &*clock, &*publisher, batch);
    }
    // Refuse anything that raced with the stop.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Job(job) = msg {
            drop(job);
        }
    }
}

fn run_group<E: 'static>(
    conn: &Connection,
    clock: &dyn Clock,
    publisher: &dyn Publisher<E>,
    batch: Vec<Job<E>>,
) {
    let now = clock.now();
    if let Err(e) = run(conn, "BEGIN IMMEDIATE") {
        // Run nothing: dropping each job closes its reply channel, which its caller
        // sees as an abandoned write.
        tracing::error!(error = %e, "could not begin a write transaction");
        drop(batch);
        return;
    }
    let mut completions = Vec::with_capacity(batch.len());
    let mut effects = Vec::new();
    for job in batch {
        if let Err(e) = run(conn, "SAVEPOINT job") {
            tracing::error!(error = %e, "savepoint failed");
            completions.push(fail_outcome(e.to_string()));
            continue;
        }
        let mut ctx = WriteCtx {
            conn,
            now,
            effects: Vec::new(),
        };
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut ctx))).unwrap_or_else(|_| {
                tracing::error!("a write panicked; its changes were rolled back");
                fail_outcome("internal error".into())
            });
        let released = if outcome.keep {
            run(conn, "RELEASE job")
        } else {
            run(conn, "ROLLBACK TO job").and_then(|()| run(conn, "RELEASE job"))
        };
        match released {
            Ok(()) if outcome.keep => effects.append(&mut ctx.effects),
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "releasing a savepoint failed"),
        }
        completions.push(outcome);
    }
    match run(conn, "COMMIT") {
        Ok(()) => {
            if !effects.is_empty() {
                publisher.publish(effects);
            }
            for outcome in completions {
                (outcome.complete)(Ok(()));
            }
        }
        Err(e) => {
            // Disk full, I/O error: nothing of this group is durable, so nobody is told
            // "ok". The rollback restores the outbox sequence too.
            tracing::error!(error = %e, "group commit failed; every write in it is refused");
            let _ = run(conn, "ROLLBACK");
            publisher.rolled_back(conn);
            let err = WriteError::Commit(e.to_string());
            for outcome in completions {
                (outcome.complete)(Err(err.clone()));
            }
        }
    }
}

/// Runs a transaction-control statement, prepared once.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn fail_outcome(message: String) -> JobOutcome {
    // The job never ran; its reply channel is dropped, which the caller sees as an
    // error. We still need a completion, so build one that records the reason.
    JobOutcome {
        keep: false,
        complete: Box::new(move |_| tracing::debug!(%message, "write refused")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::SystemClock;

    struct Quiet;
    impl Publisher<()> for Quiet {
        fn publish(&self, _: Vec<()>) {}
        fn rolled_back(&self, _: &Connection) {}
    }

    fn writer(queue_max: usize, group_max: usize) -> (Writer<()>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::db::open_writer(&dir.path().join("w.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
            .unwrap();
        let w = Writer::spawn(
            conn,
            Arc::new(SystemClock),
            Arc::new(Quiet),
            WriterConfig {
                queue_max,
                group_max,
            },
        );
        (w, dir)
    }

    fn count(dir: &tempfile::TempDir) -> i64 {
        let conn = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn a_failing_write_rolls_back_alone_and_the_rest_of_its_group_commits() {
        let (w, dir) = writer(64, 64);
        let w = Arc::new(w);
        let mut tasks = Vec::new();
        for i in 0..20i64 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                w.write(move |ctx| -> Result<(), StoreError> {
                    ctx.conn.execute("INSERT INTO t (v) VALUES (?1)", [i])?;
                    if i % 5 == 0 {
                        // Wrote, then failed: its row must not survive.
                        return Err(StoreError::Corrupt("refused".into()));
                    }
                    Ok(())
                })
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 16);
        assert_eq!(count(&dir), 16);
        w.shutdown().await;
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_waited_on() {
        let (w, dir) = writer(1, 1);
        let w = Arc::new(w);
        // Hold the writer thread inside a write until released.
        let (release, first) = hold(&w).await;
        // One write fits in the queue (it waits there: its caller gives up waiting,
        // the write stays queued); the next is refused at once.
        let queued = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            w.write(|ctx| -> Result<(), StoreError> {
                ctx.conn.execute("INSERT INTO t (v) VALUES (1)", [])?;
                Ok(())
            }),
        )
        .await;
        assert!(queued.is_err(), "the second write waits in the queue");
        let refused = w
            .write(|_ctx| -> Result<(), WriteErrorOrStore> { Ok(()) })
            .await;
        assert!(
            matches!(
                refused,
                Err(WriteErrorOrStore::Write(WriteError::Overloaded))
            ),
            "{refused:?}"
        );
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        w.shutdown().await;
        assert_eq!(
            count(&dir),
            1,
            "the queued write was committed before shutdown"
        );
        // After shutdown, writes are refused.
        let after = w
            .write(|_ctx| -> Result<(), WriteErrorOrStore> { Ok(()) })
            .await;
        assert!(matches!(after, Err(WriteErrorOrStore::Write(_))));
    }

    /// Records what the writer publishes and how often it asks for a reload.
    #[derive(Default)]
    struct Recorder {
        groups: std::sync::Mutex<Vec<Vec<i64>>>,
        rolled_back: std::sync::atomic::AtomicUsize,
    }

    impl Publisher<i64> for Recorder {
        fn publish(&self, effects: Vec<i64>) {
            self.groups.lock().unwrap().push(effects);
        }
        fn rolled_back(&self, _: &Connection) {
            self.rolled_back
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Holds the writer thread inside a write until the returned sender is used (or
    /// dropped); returns once the write has started.
    async fn hold<E: Send + 'static>(
        w: &Arc<Writer<E>>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), StoreError>>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let w = w.clone();
        let first = tokio::spawn(async move {
            w.write(move |_ctx| -> Result<(), StoreError> {
                let _ = started_tx.send(());
                let _ = held.recv();
                Ok(())
            })
            .await
        });
        started.await.unwrap();
        (release, first)
    }

    /// A writer whose thread is held inside a first write until `release` is sent, so
    /// that everything queued meanwhile lands in one group.
    async fn held_writer(
        schema: &str,
    ) -> (
        Arc<Writer<i64>>,
        Arc<Recorder>,
        std::sync::mpsc::Sender<()>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::db::open_writer(&dir.path().join("w.db")).unwrap();
        conn.execute_batch(schema).unwrap();
        let recorder = Arc::new(Recorder::default());
        let w = Arc::new(Writer::spawn(
            conn,
            Arc::new(SystemClock),
            recorder.clone(),
            WriterConfig {
                queue_max: 64,
                group_max: 64,
            },
        ));
        let (release, _first) = hold(&w).await;
        (w, recorder, release, dir)
    }

    /// Queues `n` writes that each insert `i` and record effect `i`; `fail(i)` makes a
    /// write fail after inserting.
    fn queue_writes(
        w: &Arc<Writer<i64>>,
        n: i64,
        sql: &'static str,
        fail: fn(i64) -> bool,
    ) -> Vec<tokio::task::JoinHandle<Result<(), StoreError>>> {
        (0..n)
            .map(|i| {
                let w = w.clone();
                tokio::spawn(async move {
                    w.write(move |ctx| -> Result<(), StoreError> {
                        ctx.conn.execute(sql, [i])?;
                        ctx.effect(i);
                        if fail(i) {
                            return Err(StoreError::Corrupt("refused".into()));
                        }
                        Ok(())
                    })
                    .await
                })
            })
            .collect()
    }

    async fn until_queued(w: &Arc<Writer<i64>>, n: usize) {
        for _ in 0..1000 {
            if w.tx.max_capacity() - w.tx.capacity() >= n {
                return;
            }
            tokio::task::yield_now().await;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("the writes were not queued");
    }

    /// One group: the failing writes roll back alone, the others commit together, and
    /// the publisher gets exactly the survivors' effects, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_commits_its_survivors_together_and_publishes_them_once() {
        let (w, recorder, release, dir) = held_writer("CREATE TABLE t (v INTEGER NOT NULL)").await;
        let tasks = queue_writes(&w, 10, "INSERT INTO t (v) VALUES (?1)", |i| i % 3 == 0);
        until_queued(&w, 10).await;
        release.send(()).unwrap();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap().is_ok());
        }
        let expected: Vec<bool> = (0..10).map(|i| i % 3 != 0).collect();
        assert_eq!(answers, expected);
        let conn = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        let mut stored: Vec<i64> = conn
            .prepare("SELECT v FROM t ORDER BY v")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        stored.sort();
        assert_eq!(stored, [1, 2, 4, 5, 7, 8]);
        // The tasks queue in any order; the group holds each survivor once.
        let mut groups = recorder.groups.lock().unwrap().clone();
        groups.iter_mut().for_each(|g| g.sort());
        assert_eq!(
            groups,
            vec![vec![1, 2, 4, 5, 7, 8]],
            "one group, survivors only"
        );
        w.shutdown().await;
    }

    /// A COMMIT that fails (here a deferred foreign key, as a full disk would) answers
    /// every caller of the group with an error, publishes nothing, and asks for the
    /// in-memory state to be reloaded; nothing of the group is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_refuses_the_whole_group_and_publishes_nothing() {
        let (w, recorder, release, dir) = held_writer(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE t (v INTEGER NOT NULL REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .await;
        let tasks = queue_writes(&w, 5, "INSERT INTO t (v) VALUES (?1)", |_| false);
        until_queued(&w, 5).await;
        release.send(()).unwrap();
        for t in tasks {
            assert!(
                matches!(t.await.unwrap(), Err(StoreError::Corrupt(m)) if m.contains("could not commit")),
                "every caller hears the commit failed"
            );
        }
        assert!(
            recorder.groups.lock().unwrap().is_empty(),
            "nothing published"
        );
        assert_eq!(
            recorder
                .rolled_back
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(count(&dir), 0);
        w.shutdown().await;
    }

    #[derive(Debug)]
    enum WriteErrorOrStore {
        Write(WriteError),
        #[allow(dead_code)]
        Store(StoreError),
    }

    impl From<WriteError> for WriteErrorOrStore {
        fn from(e: WriteError) -> Self {
            Self::Write(e)
        }
    }

    impl From<StoreError> for WriteErrorOrStore {
        fn from(e: StoreError) -> Self {
            Self::Store(e)
        }
    }

    impl From<WriteError> for StoreError {
        fn from(e: WriteError) -> Self {
            StoreError::Corrupt(e.to_string())
        }
    }
}
