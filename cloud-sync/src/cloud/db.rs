//! One SQL interface over the cloud's two databases: SQLite (rusqlite, the embedded
//! default: one connection behind a mutex) and PostgreSQL (tokio-postgres, pooled by
//! deadpool-postgres). The store's queries are written once, in the SQL both engines
//! speak; this module binds their parameters, reads their rows and runs their
//! transactions on either engine.
//!
//! The store is synchronous (its callers run it on tokio's blocking pool), so the
//! PostgreSQL side drives its futures with [`tokio::runtime::Handle::block_on`] on the
//! store's own runtime, whose threads also run the connections' I/O.
//!
//! **Written once, for both.** Parameters are `?1`, `?2`… (turned into `$1`, `$2`… for
//! PostgreSQL); `INSERT OR IGNORE` becomes `ON CONFLICT DO NOTHING`; every integer
//! column is 64-bit (`BIGINT` on PostgreSQL), and a `SUM` is cast to `BIGINT` (it
//! would be `NUMERIC` there). Where the engines differ (JSON functions, locking a row,
//! the schema itself) the store asks [`Db::dialect`].

use bytes::BytesMut;
use postgres_types::{IsNull, Type};
use std::sync::MutexGuard;

/// Runs a PostgreSQL future to its end on the store's runtime `rt`, from any caller:
/// tokio's blocking pool (the store's usual callers), a plain thread, or a worker of a
/// multi-threaded runtime (then as `block_in_place`).
pub fn wait<F: std::future::Future>(rt: &tokio::runtime::Handle, fut: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| rt.block_on(fut))
        }
        _ => rt.block_on(fut),
    }
}

/// Which engine a statement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("connection pool: {0}")]
    Pool(String),
    #[error("column {index}: {reason}")]
    Column { index: usize, reason: String },
    #[error("no row")]
    NoRows,
    #[error("a statement of this transaction failed before its commit; nothing of it was kept")]
    Aborted,
}

pub type DbResult<T> = Result<T, DbError>;

/// One value, bound or read.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
    /// A PostgreSQL array (`text[]`, `bigint[]`): a batch's rows in one parameter.
    TextArray(Vec<String>),
    IntArray(Vec<i64>),
}

pub trait ToCell {
    fn to_cell(&self) -> Cell;
}

impl<T: ToCell + ?Sized> ToCell for &T {
    fn to_cell(&self) -> Cell {
        (**self).to_cell()
    }
}

macro_rules! int_cell {
    ($($t:ty),*) => {$(
        impl ToCell for $t {
            fn to_cell(&self) -> Cell {
                Cell::Int(*self as i64)
            }
        }
    )*};
}
int_cell!(i64, i32, u16, u32);

impl ToCell for bool {
    fn to_cell(&self) -> Cell {
        Cell::Int(i64::from(*self))
    }
}

impl ToCell for str {
    fn to_cell(&self) -> Cell {
        Cell::Text(self.to_owned())
    }
}

impl ToCell for std::borrow::Cow<'_, str> {
    fn to_cell(&self) -> Cell {
        Cell::Text(self.to_string())
    }
}

impl ToCell for String {
    fn to_cell(&self) -> Cell {
        Cell::Text(self.clone())
    }
}

impl ToCell for [u8] {
    fn to_cell(&self) -> Cell {
        Cell::Blob(self.to_vec())
    }
}

impl ToCell for Vec<u8> {
    fn to_cell(&self) -> Cell {
        Cell::Blob(self.clone())
    }
}

impl<T: ToCell> ToCell for Option<T> {
    fn to_cell(&self) -> Cell {
        self.as_ref().map_or(Cell::Null, ToCell::to_cell)
    }
}

/// A statement's parameters: `params![…]`, an array of one type, `()`, or `Cell`s.
pub trait Params {
    fn cells(self) -> Vec<Cell>;
}

impl Params for () {
    fn cells(self) -> Vec<Cell> {
        Vec::new()
    }
}

impl Params for &[&dyn ToCell] {
    fn cells(self) -> Vec<Cell> {
        self.iter().map(|p| p.to_cell()).collect()
    }
}

/// Values built by hand (a batch's columns as arrays): taken as they are, not copied.
impl Params for Vec<Cell> {
    fn cells(self) -> Vec<Cell> {
        self
    }
}

impl<T: ToCell, const N: usize> Params for [T; N] {
    fn cells(self) -> Vec<Cell> {
        self.iter().map(ToCell::to_cell).collect()
    }
}

/// Parameters of mixed types, like rusqlite's `params!`.
#[macro_export]
macro_rules! db_params {
    ($($p:expr),* $(,)?) => {
        &[$(&$p as &dyn $crate::cloud::db::ToCell),*] as &[&dyn $crate::cloud::db::ToCell]
    };
}
pub use db_params as params;

pub trait FromCell: Sized {
    fn from_cell(c: &Cell) -> Result<Self, String>;
}

impl FromCell for i64 {
    fn from_cell(c: &Cell) -> Result<Self, String> {
        match c {
            Cell::Int(v) => Ok(*v),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

macro_rules! narrow_cell {
    ($($t:ty),*) => {$(
        impl FromCell for $t {
            fn from_cell(c: &Cell) -> Result<Self, String> {
                let v = i64::from_cell(c)?;
                <$t>::try_from(v).map_err(|_| format!("{v} is out of range"))
            }
        }
    )*};
}
narrow_cell!(u16, u32);

impl FromCell for bool {
    fn from_cell(c: &Cell) -> Result<Self, String> {
        Ok(i64::from_cell(c)? != 0)
    }
}

impl FromCell for String {
    fn from_cell(c: &Cell) -> Result<Self, String> {
        match c {
            Cell::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl FromCell for Vec<u8> {
    fn from_cell(c: &Cell) -> Result<Self, String> {
        match c {
            Cell::Blob(b) => Ok(b.clone()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(c: &Cell) -> Result<Self, String> {
        match c {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// One row of a result.
pub struct Row {
    cells: Vec<Cell>,
}

/// A column by position (as rusqlite's rows take it).
pub trait RowIndex {
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl Row {
    pub fn get<I: RowIndex, T: FromCell>(&self, index: I) -> DbResult<T> {
        let index = index.index();
        let cell = self.cells.get(index).ok_or_else(|| DbError::Column {
            index,
            reason: "no such column".into(),
        })?;
        T::from_cell(cell).map_err(|reason| DbError::Column { index, reason })
    }
}

/// `.optional()` on a single-row read: no row is `None`.
pub trait OptionalExtension<T> {
    fn optional(self) -> DbResult<Option<T>>;
}

impl<T> OptionalExtension<T> for DbResult<T> {
    fn optional(self) -> DbResult<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A pooled PostgreSQL connection, shared with the task that sends a transaction's
/// statements ahead ([`AsDb::send_deferred`]).
pub type PgClient = std::sync::Arc<deadpool_postgres::Object>;

/// Statements a PostgreSQL transaction has yet to send ([`AsDb::defer`]), and the task
/// sending the ones before them, if any ([`AsDb::send_deferred`]).
#[derive(Default)]
pub struct Pending {
    queued: std::cell::RefCell<Vec<Deferred>>,
    sent: std::cell::RefCell<Option<tokio::task::JoinHandle<DbResult<()>>>>,
    /// A statement failed: PostgreSQL has aborted the transaction, and would answer
    /// its `COMMIT` with a rollback, not an error.
    failed: std::cell::Cell<bool>,
}

/// A write a PostgreSQL transaction has yet to send.
enum Deferred {
    /// A statement and its parameters.
    Statement(String, Vec<Cell>),
    /// Rows for a `COPY … FROM STDIN`.
    Copy(CopyRows),
}

/// Rows for `COPY table (columns) FROM STDIN (FORMAT binary)`, given as columns: each
/// a [`Cell::TextArray`] or [`Cell::IntArray`] of one value per row, or any other cell,
/// which every row takes as it is. The cheapest way into a PostgreSQL table: the rows
/// go in binary, and the server writes them a page at a time (one WAL record per page,
/// not per row) with no per-row check for a conflict, so the caller must know that
/// none of them is there yet.
pub struct CopyRows {
    /// `COPY table (columns) FROM STDIN (FORMAT binary)`.
    sql: String,
    /// Each column's type: `text` for text cells, `bigint` for integers.
    types: Vec<Type>,
    columns: Vec<Cell>,
}

impl CopyRows {
    /// `columns` of `table`, named by `names` (in their order).
    pub fn new(table: &str, names: &str, columns: Vec<Cell>) -> Self {
        let types = columns
            .iter()
            .map(|c| match c {
                Cell::Int(_) | Cell::IntArray(_) => Type::INT8,
                Cell::Blob(_) => Type::BYTEA,
                Cell::Null | Cell::Text(_) | Cell::TextArray(_) => Type::TEXT,
            })
            .collect();
        Self {
            sql: format!("COPY {table} ({names}) FROM STDIN (FORMAT binary)"),
            types,
            columns,
        }
    }

    fn len(&self) -> usize {
        self.columns
            .iter()
            .find_map(|c| match c {
                Cell::TextArray(v) => Some(v.len()),
                Cell::IntArray(v) => Some(v.len()),
                _ => None,
            })
            .unwrap_or(0)
    }
}

/// Sends `copy`'s rows; returns how many PostgreSQL stored.
async fn copy_in(
    client: &deadpool_postgres::ClientWrapper,
    copy: &CopyRows,
) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in(copy.sql.as_str()).await?;
    let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, &copy.types);
    let mut writer = std::pin::pin!(writer);
    let mut row: Vec<&(dyn postgres_types::ToSql + Sync)> = Vec::with_capacity(copy.columns.len());
    for i in 0..copy.len() {
        row.clear();
        for c in &copy.columns {
            row.push(match c {
                Cell::TextArray(v) => &v[i],
                Cell::IntArray(v) => &v[i],
                other => other,
            });
        }
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await
}

/// Runs `statement` (a future: it is sent only when polled) after the transaction's
/// deferred statements, in the same pipeline as the ones not sent yet (one round trip
/// for all); an error of any is noted in the transaction's `pending`.
fn pg_now<T>(
    client: &PgClient,
    rt: &tokio::runtime::Handle,
    pending: Option<&Pending>,
    statement: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> DbResult<T> {
    let Some(pending) = pending else {
        return Ok(wait(rt, statement)?);
    };
    let r = pending.sent_done(rt).and_then(|()| {
        let queued = std::mem::take(&mut *pending.queued.borrow_mut());
        Ok(wait(rt, pipelined_then(client, &queued, statement))?)
    });
    if r.is_err() {
        pending.failed.set(true);
    }
    r
}

/// A connection (or an open transaction) of either engine.
#[derive(Clone, Copy)]
pub enum Db<'a> {
    Lite(&'a rusqlite::Connection),
    Pg(
        &'a PgClient,
        &'a tokio::runtime::Handle,
        Option<&'a Pending>,
    ),
}

/// `?N` → `$N`, `INSERT OR IGNORE` → `… ON CONFLICT DO NOTHING`.
pub fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 24);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    if let Some(rest) = out.trim_start().strip_prefix("INSERT OR IGNORE ") {
        out = format!("INSERT {} ON CONFLICT DO NOTHING", rest.trim_end());
    }
    out
}

/// How a parameter is written for PostgreSQL: as the type the statement expects.
impl postgres_types::ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().to_sql(ty, out),
                ref other => Err(format!("an integer for a {other} parameter").into()),
            },
            Cell::Text(s) => s.as_str().to_sql(ty, out),
            Cell::Blob(b) => b.as_slice().to_sql(ty, out),
            Cell::TextArray(v) => v.to_sql(ty, out),
            Cell::IntArray(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres_types::to_sql_checked!();
}

/// Parameters as tokio-postgres takes them.
fn pg_params(cells: &[Cell]) -> Vec<&(dyn postgres_types::ToSql + Sync)> {
    cells.iter().map(|c| c as _).collect()
}

fn pg_row(row: &tokio_postgres::Row) -> DbResult<Row> {
    let mut cells = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let bad = |e: tokio_postgres::Error| DbError::Column {
            index: i,
            reason: e.to_string(),
        };
        let cell = match *col.type_() {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .map_err(bad)?
                .map(Cell::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(bad)?
                .map(|v| Cell::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(bad)?
                .map(|v| Cell::Int(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(bad)?
                .map(|v| Cell::Int(v.into())),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(bad)?
                .map(Cell::Blob),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => row
                .try_get::<_, Option<String>>(i)
                .map_err(bad)?
                .map(Cell::Text),
            ref other => {
                return Err(DbError::Column {
                    index: i,
                    reason: format!("type {other} is not read by the store (cast it)"),
                });
            }
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Row { cells })
}

fn lite_row(row: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut cells = Vec::with_capacity(n);
    for i in 0..n {
        cells.push(match row.get_ref(i)? {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(v) => Cell::Int(v),
            // The schema holds no reals; one read is taken as its integer part.
            ValueRef::Real(v) => Cell::Int(v as i64),
            ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        });
    }
    Ok(Row { cells })
}

fn lite_value(c: &Cell) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match c {
        Cell::Null => Value::Null,
        Cell::Int(v) => Value::Integer(*v),
        Cell::Text(s) => Value::Text(s.clone()),
        Cell::Blob(b) => Value::Blob(b.clone()),
        // SQLite has no arrays: a list goes as JSON text (for `json_each`).
        Cell::TextArray(v) => Value::Text(serde_json::Value::from(v.clone()).to_string()),
        Cell::IntArray(v) => Value::Text(serde_json::Value::from(v.clone()).to_string()),
    }
}

impl<'a> Db<'a> {
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Lite(_) => Dialect::Sqlite,
            Db::Pg(..) => Dialect::Postgres,
        }
    }

    fn run_rows(&self, sql: &str, cells: &[Cell]) -> DbResult<Vec<Row>> {
        match self {
            Db::Lite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let n = stmt.column_count();
                let values: Vec<_> = cells.iter().map(lite_value).collect();
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(values), |r| lite_row(r, n))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            }
            Db::Pg(client, rt, pending) => {
                let sql = postgres_sql(sql);
                pg_now(client, rt, *pending, async {
                    let stmt = client.prepare_cached(&sql).await?;
                    client.query(&stmt, &pg_params(cells)).await
                })?
                .iter()
                .map(pg_row)
                .collect()
            }
        }
    }

    fn run_execute(&self, sql: &str, cells: &[Cell]) -> DbResult<usize> {
        match self {
            Db::Lite(conn) => {
                let values: Vec<_> = cells.iter().map(lite_value).collect();
                Ok(conn
                    .prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(values))?)
            }
            Db::Pg(client, rt, pending) => {
                let sql = postgres_sql(sql);
                let n = pg_now(client, rt, *pending, async {
                    let stmt = client.prepare_cached(&sql).await?;
                    client.execute(&stmt, &pg_params(cells)).await
                })?;
                Ok(n as usize)
            }
        }
    }

    /// Statements without parameters, separated by `;` (a schema).
    pub fn execute_batch(&self, sql: &str) -> DbResult<()> {
        match self {
            Db::Lite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Pg(client, rt, pending) => pg_now(client, rt, *pending, client.batch_execute(sql)),
        }
    }

    /// See [`AsDb::defer`].
    fn run_defer(&self, sql: &str, cells: Vec<Cell>) -> DbResult<Option<usize>> {
        match self {
            Db::Pg(_, _, Some(pending)) => {
                pending
                    .queued
                    .borrow_mut()
                    .push(Deferred::Statement(postgres_sql(sql), cells));
                Ok(None)
            }
            _ => self.run_execute(sql, &cells).map(Some),
        }
    }

    /// See [`AsDb::defer_copy`].
    fn run_copy(&self, copy: CopyRows) -> DbResult<()> {
        match self {
            Db::Pg(_, _, Some(pending)) => {
                pending.queued.borrow_mut().push(Deferred::Copy(copy));
                Ok(())
            }
            Db::Pg(client, rt, None) => {
                wait(rt, copy_in(client, &copy))?;
                Ok(())
            }
            Db::Lite(_) => Err(DbError::Pool("SQLite has no COPY".into())),
        }
    }

    /// See [`AsDb::send_deferred`].
    fn run_send(&self) {
        if let Db::Pg(client, rt, Some(pending)) = self {
            let queued = std::mem::take(&mut *pending.queued.borrow_mut());
            if queued.is_empty() {
                return;
            }
            let before = pending.sent.borrow_mut().take();
            let client = PgClient::clone(client);
            let task = rt.spawn(async move {
                if let Some(before) = before {
                    joined(before.await)?;
                }
                Ok(pipelined(&client, &queued).await?)
            });
            *pending.sent.borrow_mut() = Some(task);
        }
    }
}

fn joined(r: Result<DbResult<()>, tokio::task::JoinError>) -> DbResult<()> {
    r.map_err(|e| DbError::Pool(format!("sending statements: {e}")))?
}

/// Runs `queued` in order, and fails with the first error. Statements in a row are
/// pipelined (each is sent without waiting for the one before; PostgreSQL runs them in
/// order); a copy starts when the statements before it are done.
async fn pipelined(
    client: &deadpool_postgres::ClientWrapper,
    queued: &[Deferred],
) -> Result<(), tokio_postgres::Error> {
    pipelined_then(client, queued, async { Ok(()) }).await
}

/// Like [`pipelined`], with `then` (a statement's future: sent when first polled) sent
/// in the same pipeline right after the last of `queued`; its result once all are done.
async fn pipelined_then<T>(
    client: &deadpool_postgres::ClientWrapper,
    queued: &[Deferred],
    then: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    let mut run: Vec<(&str, &[Cell])> = Vec::new();
    for d in queued {
        match d {
            Deferred::Statement(sql, cells) => run.push((sql, cells)),
            Deferred::Copy(copy) => {
                statements_then(client, &std::mem::take(&mut run), async { Ok(()) }).await?;
                copy_in(client, copy).await?;
            }
        }
    }
    statements_then(client, &run, then).await
}

/// Runs `run` pipelined, then `then` in the same pipeline, and fails with the first
/// error. Each statement is sent at its future's first poll, and `join_all` and `join`
/// poll in order, so they reach PostgreSQL in order. After a failed statement the
/// transaction is aborted and what follows fails too (a `COMMIT` answers with a
/// rollback): the first error is the one returned.
async fn statements_then<T>(
    client: &deadpool_postgres::ClientWrapper,
    run: &[(&str, &[Cell])],
    then: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    let mut prepared = Vec::with_capacity(run.len());
    for (sql, _) in run {
        prepared.push(client.prepare_cached(sql).await?);
    }
    let runs = run
        .iter()
        .zip(&prepared)
        .map(|((_, cells), stmt)| async move { client.execute(stmt, &pg_params(cells)).await });
    let (results, value) =
        futures_util::future::join(futures_util::future::join_all(runs), then).await;
    for result in results {
        result?;
    }
    value
}

impl Pending {
    /// Waits for the statements sent ahead, if any, and fails with their first error.
    fn sent_done(&self, rt: &tokio::runtime::Handle) -> DbResult<()> {
        let sent = self.sent.borrow_mut().take();
        match sent {
            Some(sent) => joined(wait(rt, sent)),
            None => Ok(()),
        }
    }

    /// Whether the transaction's `BEGIN` is still queued: nothing of it reached
    /// PostgreSQL, so there is nothing to roll back.
    fn not_begun(&self) -> bool {
        matches!(self.queued.borrow().first(), Some(Deferred::Statement(sql, _)) if sql == "BEGIN")
    }
}

/// The statement methods, on anything that holds a [`Db`].
pub trait AsDb {
    fn db(&self) -> Db<'_>;

    fn dialect(&self) -> Dialect {
        self.db().dialect()
    }

    fn execute<P: Params>(&self, sql: &str, params: P) -> DbResult<usize> {
        self.db().run_execute(sql, &params.cells())
    }

    fn query_row<T, P: Params, F: FnOnce(&Row) -> DbResult<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> DbResult<T> {
        let rows = self.db().run_rows(sql, &params.cells())?;
        rows.first().map_or(Err(DbError::NoRows), f)
    }

    fn prepare(&self, sql: &str) -> DbResult<Stmt<'_>> {
        Ok(Stmt {
            db: self.db(),
            sql: sql.to_owned(),
        })
    }

    fn prepare_cached(&self, sql: &str) -> DbResult<Stmt<'_>> {
        self.prepare(sql)
    }

    fn execute_batch(&self, sql: &str) -> DbResult<()> {
        self.db().execute_batch(sql)
    }

    /// A write whose result is not read before the transaction's next read or its
    /// commit: in a PostgreSQL transaction it is queued and sent with the others at
    /// once (`None`); elsewhere it runs now (`Some(rows changed)`).
    fn defer<P: Params>(&self, sql: &str, params: P) -> DbResult<Option<usize>> {
        self.db().run_defer(sql, params.cells())
    }

    /// Like [`AsDb::defer`], for rows to `COPY` into a PostgreSQL table (in a
    /// transaction it is queued, elsewhere it runs now). Not for SQLite, which has no
    /// `COPY`: an error there.
    fn defer_copy(&self, copy: CopyRows) -> DbResult<()> {
        self.db().run_copy(copy)
    }

    /// Starts sending the statements deferred so far (in a PostgreSQL transaction) from
    /// a task of the connection's runtime, so the server works on them while the caller
    /// goes on building the next ones. They keep their order before everything after
    /// them; their errors come at the transaction's next read or its commit. Elsewhere
    /// nothing is deferred and this does nothing.
    fn send_deferred(&self) {
        self.db().run_send()
    }
}

impl AsDb for Db<'_> {
    fn db(&self) -> Db<'_> {
        *self
    }
}

/// A statement (prepared and cached by the engine's connection on first use).
pub struct Stmt<'a> {
    db: Db<'a>,
    sql: String,
}

impl Stmt<'_> {
    pub fn execute<P: Params>(&mut self, params: P) -> DbResult<usize> {
        self.db.run_execute(&self.sql, &params.cells())
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row) -> DbResult<T>>(
        &mut self,
        params: P,
        f: F,
    ) -> DbResult<T> {
        let rows = self.db.run_rows(&self.sql, &params.cells())?;
        rows.first().map_or(Err(DbError::NoRows), f)
    }

    pub fn query_map<T, P: Params, F: FnMut(&Row) -> DbResult<T>>(
        &mut self,
        params: P,
        f: F,
    ) -> DbResult<std::vec::IntoIter<DbResult<T>>> {
        let rows = self.db.run_rows(&self.sql, &params.cells())?;
        Ok(rows.iter().map(f).collect::<Vec<_>>().into_iter())
    }
}

/// A connection taken for one store call: the SQLite connection's lock, or a pooled
/// PostgreSQL connection.
pub enum Conn<'a> {
    Lite(MutexGuard<'a, rusqlite::Connection>),
    Pg(PgClient, &'a tokio::runtime::Handle),
}

impl AsDb for Conn<'_> {
    fn db(&self) -> Db<'_> {
        match self {
            Conn::Lite(c) => Db::Lite(c),
            Conn::Pg(c, rt) => Db::Pg(c, rt, None),
        }
    }
}

impl Conn<'_> {
    /// Opens a transaction; it rolls back unless committed.
    pub fn transaction(&mut self) -> DbResult<Tx<'_>> {
        match self {
            Conn::Lite(c) => Ok(Tx::Lite(Some(c.transaction()?))),
            Conn::Pg(c, rt) => {
                // Sent with the transaction's first statements, in their pipeline.
                let pending = Pending::default();
                pending
                    .queued
                    .borrow_mut()
                    .push(Deferred::Statement("BEGIN".into(), Vec::new()));
                Ok(Tx::Pg {
                    client: c,
                    rt,
                    open: true,
                    pending,
                })
            }
        }
    }
}

pub enum Tx<'a> {
    /// `None` once committed.
    Lite(Option<rusqlite::Transaction<'a>>),
    Pg {
        client: &'a PgClient,
        rt: &'a tokio::runtime::Handle,
        open: bool,
        pending: Pending,
    },
}

impl AsDb for Tx<'_> {
    fn db(&self) -> Db<'_> {
        match self {
            Tx::Lite(Some(t)) => Db::Lite(t),
            Tx::Lite(None) => unreachable!("a committed transaction is consumed"),
            Tx::Pg {
                client,
                rt,
                pending,
                ..
            } => Db::Pg(client, rt, Some(pending)),
        }
    }
}

impl Tx<'_> {
    pub fn commit(mut self) -> DbResult<()> {
        match &mut self {
            Tx::Lite(t) => match t.take() {
                Some(t) => Ok(t.commit()?),
                None => Ok(()),
            },
            Tx::Pg {
                client,
                rt,
                open,
                pending,
            } => {
                // An error the caller went on after: PostgreSQL would roll back quietly.
                if pending.failed.get() {
                    return Err(DbError::Aborted);
                }
                // The rest of the transaction and its `COMMIT` in one pipeline.
                pg_now(client, rt, Some(pending), client.batch_execute("COMMIT"))?;
                *open = false;
                Ok(())
            }
        }
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if let Tx::Pg {
            client,
            rt,
            open: true,
            pending,
        } = self
        {
            if pending.not_begun() {
                return;
            }
            // Statements sent ahead finish (or fail) before the rollback.
            let _ = pending.sent_done(rt);
            // A failed statement or an early return: nothing of it stays.
            if let Err(e) = wait(rt, client.batch_execute("ROLLBACK")) {
                tracing::warn!(error = %e, "rolling back a transaction failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::pg::PgBackend;

    fn table() -> PgBackend {
        let url = crate::pgtest::shared().fresh_database().unwrap();
        let pg = PgBackend::connect(&url).unwrap();
        connect(&pg)
            .execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
            .unwrap();
        pg
    }

    fn connect(pg: &PgBackend) -> Conn<'_> {
        pg.conn().unwrap()
    }

    /// Defers an insert of row `k`.
    fn put(tx: &Tx<'_>, k: &str, v: i64) {
        tx.defer("INSERT INTO t (k, v) VALUES (?1, ?2)", params![k, v])
            .unwrap();
    }

    fn value(conn: &impl AsDb, k: &str) -> Option<i64> {
        conn.query_row("SELECT v FROM t WHERE k = ?1", [k], |r| r.get(0))
            .optional()
            .unwrap()
    }

    /// Statements sent ahead run before everything deferred after them (the
    /// updates below give 20 only in this order), and commit with the rest.
    #[test]
    fn statements_sent_ahead_keep_their_order_and_commit_with_the_rest() {
        let pg = table();
        let mut conn = connect(&pg);
        let tx = conn.transaction().unwrap();
        put(&tx, "a", 1);
        tx.send_deferred();
        tx.defer("UPDATE t SET v = v + 1 WHERE k = ?1", ["a"])
            .unwrap();
        tx.send_deferred();
        tx.defer("UPDATE t SET v = v * 10 WHERE k = ?1", ["a"])
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(value(&conn, "a"), Some(20));
    }

    /// A statement sent ahead that fails fails the commit, and nothing of the
    /// transaction stays; the connection is usable afterwards.
    #[test]
    fn a_failure_sent_ahead_fails_the_commit_and_leaves_nothing() {
        let pg = table();
        let mut conn = connect(&pg);
        let tx = conn.transaction().unwrap();
        put(&tx, "b", 1);
        put(&tx, "b", 2);
        tx.send_deferred();
        put(&tx, "c", 3);
        let err = tx.commit().unwrap_err();
        assert!(format!("{err:?}").contains("duplicate key"), "{err:?}");
        assert_eq!((value(&conn, "b"), value(&conn, "c")), (None, None));

        // Given up half way (an early return): rolled back after the statements on
        // their way have run.
        let tx = conn.transaction().unwrap();
        put(&tx, "d", 4);
        tx.send_deferred();
        drop(tx);
        assert_eq!(value(&conn, "d"), None);
        let tx = conn.transaction().unwrap();
        put(&tx, "d", 5);
        tx.send_deferred();
        tx.commit().unwrap();
        assert_eq!(value(&conn, "d"), Some(5));
    }

    /// PostgreSQL answers the `COMMIT` of a transaction in which a statement failed
    /// with a quiet rollback: a caller that went on after the error is told at its
    /// commit, and nothing was kept.
    #[test]
    fn a_commit_after_a_failed_statement_is_an_error() {
        let pg = table();
        let mut conn = connect(&pg);
        let tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO t (k, v) VALUES (?1, 1)", ["e"])
            .unwrap();
        assert!(
            tx.query_row("SELECT v FROM missing", (), |r| r.get::<_, i64>(0))
                .is_err()
        );
        assert!(matches!(tx.commit(), Err(DbError::Aborted)));
        assert_eq!(value(&conn, "e"), None);
        // The connection goes on.
        let tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO t (k, v) VALUES (?1, 3)", ["e"])
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(value(&conn, "e"), Some(3));
    }

    /// A read goes in one pipeline with the transaction's `BEGIN` and the writes
    /// deferred before it, after them: it sees them, and they commit together.
    #[test]
    fn a_read_sees_the_writes_deferred_before_it() {
        let pg = table();
        let mut conn = connect(&pg);
        let tx = conn.transaction().unwrap();
        put(&tx, "g", 1);
        tx.defer("UPDATE t SET v = v + 1 WHERE k = ?1", ["g"])
            .unwrap();
        let v: i64 = tx
            .query_row("SELECT v FROM t WHERE k = ?1", ["g"], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
        // Not visible elsewhere before the commit: the pipeline began a transaction.
        let other = connect(&pg);
        assert_eq!(value(&other, "g"), None);
        tx.commit().unwrap();
        assert_eq!(value(&other, "g"), Some(2));
    }

    /// A statement that fails in the commit's own pipeline fails the commit and leaves
    /// nothing; a transaction given up before anything was sent, or half way, leaves
    /// its connection outside any transaction when the pool hands it out again.
    #[test]
    fn a_failure_in_the_commit_pipeline_leaves_nothing_and_the_pool_clean() {
        let pg = table();
        {
            let mut conn = connect(&pg);
            let tx = conn.transaction().unwrap();
            put(&tx, "h", 1);
            put(&tx, "h", 2);
            let err = tx.commit().unwrap_err();
            assert!(format!("{err:?}").contains("duplicate key"), "{err:?}");
            assert_eq!(value(&conn, "h"), None);
            // Given up before anything was sent.
            let tx = conn.transaction().unwrap();
            put(&tx, "i", 1);
            drop(tx);
            // Given up after a read (its `BEGIN` sent).
            let tx = conn.transaction().unwrap();
            put(&tx, "j", 1);
            assert_eq!(value(&tx, "j"), Some(1));
            drop(tx);
        }
        // The pool hands the same connection out again (it holds only that one now):
        // a write on it outside a transaction is at once visible on another.
        let conn = connect(&pg);
        conn.execute("INSERT INTO t (k, v) VALUES (?1, 7)", ["k"])
            .unwrap();
        let other = connect(&pg);
        assert_eq!(value(&other, "k"), Some(7));
        assert_eq!((value(&other, "i"), value(&other, "j")), (None, None));
    }
}
