//! Size limits on what a peer sends, checked before Automerge sees it.
//!
//! Automerge inflates DEFLATE-compressed parts of a change (a compressed change chunk,
//! or compressed columns of a document or bundle chunk) with no limit: a few MiB in a
//! sync message can inflate to gigabytes. [`check_sync_message`] walks the chunk
//! headers and column metadata of a sync message (the storage format's layout, see
//! <https://alexjg.github.io/automerge-storage-docs/>) and inflates each compressed part
//! through a counting reader that stops at the cap, so nothing larger than the cap is
//! ever produced. Anything it cannot read is refused: it is no valid Automerge data.

use automerge::sync;
use std::io::Read as _;

/// The largest sync message a peer may send for one document, in bytes.
pub const SYNC_MESSAGE_MAX: usize = 2 * 1024 * 1024;
/// The most bytes the changes in one sync message may inflate to.
pub const INFLATED_MAX: usize = 16 * 1024 * 1024;
/// The largest a document may grow to, saved (menus and settings are small: this is
/// many times the largest menu a canteen writes).
pub const DOC_SAVED_MAX: usize = 4 * 1024 * 1024;

/// The most rows one column of one chunk may decode to (operations of a change, or
/// changes and operations of a document): columns are run-length encoded, so a few
/// bytes can claim billions of rows, each of which Automerge would allocate.
pub const ROWS_MAX: u64 = 200_000;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;
const CHUNK_BUNDLE: u8 = 3;
/// The bit of a column specification that marks DEFLATE-compressed data.
const COLUMN_DEFLATE: u64 = 0b1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("a sync message of {0} bytes exceeds the {SYNC_MESSAGE_MAX}-byte limit")]
    MessageTooLarge(usize),
    #[error("the changes of a sync message inflate beyond the {INFLATED_MAX}-byte limit")]
    InflatesTooLarge,
    #[error("a column of a sync message decodes to more than {ROWS_MAX} rows")]
    TooManyRows,
    #[error("the document would grow to {0} bytes, beyond the {DOC_SAVED_MAX}-byte limit")]
    DocumentTooLarge(usize),
    #[error("not a valid sync message: {0}")]
    Malformed(String),
}

/// Checks a sync message's size, and what its changes inflate to, against the caps.
/// Returns the inflated size of its changes.
pub fn check_sync_message(message: &[u8]) -> Result<usize, LimitError> {
    if message.len() > SYNC_MESSAGE_MAX {
        return Err(LimitError::MessageTooLarge(message.len()));
    }
    let decoded =
        sync::Message::decode(message).map_err(|e| LimitError::Malformed(e.to_string()))?;
    check_summary(&decoded)?;
    let mut budget = Budget {
        left: INFLATED_MAX,
        used: 0,
    };
    for bytes in decoded.changes.iter() {
        let mut r = Reader { bytes, at: 0 };
        while !r.done() {
            chunk(&mut r, &mut budget)?;
        }
    }
    Ok(budget.used)
}

/// Heads, needs and "have" entries a peer may list in one message.
const HASHES_MAX: usize = 1024;
const HAVES_MAX: usize = 16;
/// Bloom filter parameters Automerge writes are 10 bits an entry and 7 probes.
const BLOOM_PARAMETER_MAX: u64 = 64;

/// The message's summary of what the peer has. Automerge trusts its Bloom filters: one
/// with no bits divides by zero (a panic) and one with 4 billion probes allocates
/// 16 GiB (an abort) when the replica next generates a message.
fn check_summary(m: &sync::Message) -> Result<(), LimitError> {
    if m.heads.len() > HASHES_MAX || m.need.len() > HASHES_MAX || m.have.len() > HAVES_MAX {
        return Err(malformed("too many hashes"));
    }
    for have in &m.have {
        if have.last_sync.len() > HASHES_MAX {
            return Err(malformed("too many hashes"));
        }
        let bytes = have.bloom.to_bytes();
        if bytes.is_empty() {
            continue; // no entries
        }
        let mut r = Reader {
            bytes: &bytes,
            at: 0,
        };
        let (_entries, bits_per_entry, probes) = (r.uleb()?, r.uleb()?, r.uleb()?);
        let bits = bytes.len() - r.at;
        if !(1..=BLOOM_PARAMETER_MAX).contains(&bits_per_entry)
            || !(1..=BLOOM_PARAMETER_MAX).contains(&probes)
            || bits == 0
        {
            return Err(malformed("a Bloom filter with impossible parameters"));
        }
    }
    Ok(())
}

struct Budget {
    left: usize,
    used: usize,
}

impl Budget {
    fn spend(&mut self, n: usize) -> Result<(), LimitError> {
        self.left = self
            .left
            .checked_sub(n)
            .ok_or(LimitError::InflatesTooLarge)?;
        self.used += n;
        Ok(())
    }

    /// Inflates `data`, spending what it inflates to; stops as soon as the budget is
    /// gone, so nothing beyond it is ever produced.
    fn inflate(&mut self, data: &[u8]) -> Result<Vec<u8>, LimitError> {
        let limit = self.left as u64 + 1;
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(data)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| LimitError::Malformed(format!("bad DEFLATE data: {e}")))?;
        self.spend(out.len())?;
        Ok(out)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn malformed(what: &str) -> LimitError {
    LimitError::Malformed(what.to_owned())
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], LimitError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| malformed("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn uleb(&mut self) -> Result<u64, LimitError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("a number is too long"))
    }

    fn len(&mut self) -> Result<usize, LimitError> {
        usize::try_from(self.uleb()?).map_err(|_| malformed("a length is out of range"))
    }

    /// `count` length-prefixed byte strings (actor ids).
    fn skip_prefixed(&mut self) -> Result<(), LimitError> {
        let count = self.len()?;
        for _ in 0..count {
            let n = self.len()?;
            self.take(n)?;
        }
        Ok(())
    }

    /// `count` change hashes of 32 bytes.
    fn skip_hashes(&mut self) -> Result<(), LimitError> {
        let count = self.len()?;
        self.take(
            count
                .checked_mul(32)
                .ok_or_else(|| malformed("too many hashes"))?,
        )?;
        Ok(())
    }

    /// Column metadata: (specification, length) pairs.
    fn columns(&mut self) -> Result<Vec<(u64, usize)>, LimitError> {
        let count = self.len()?;
        if count > 1024 {
            return Err(malformed("too many columns"));
        }
        (0..count)
            .map(|_| Ok((self.uleb()?, self.len()?)))
            .collect()
    }

    /// The data of `columns`, spending each column's size (inflated if compressed)
    /// and checking the rows each decodes to.
    fn column_data(
        &mut self,
        columns: &[(u64, usize)],
        budget: &mut Budget,
    ) -> Result<(), LimitError> {
        for &(spec, len) in columns {
            let data = self.take(len)?;
            if spec & COLUMN_DEFLATE != 0 {
                let inflated = budget.inflate(data)?;
                column_rows(spec, &inflated)?;
            } else {
                budget.spend(len)?;
                column_rows(spec, data)?;
            }
        }
        Ok(())
    }

    fn sleb(&mut self) -> Result<i64, LimitError> {
        let mut value = 0i64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= i64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                if shift + 7 < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << (shift + 7);
                }
                return Ok(value);
            }
        }
        Err(malformed("a number is too long"))
    }
}

/// The rows a column decodes to, refused beyond [`ROWS_MAX`]. Column types (the low
/// three bits of the specification): 0 group, 1 actor, 2 integer, 6 value metadata (run
/// length of unsigned numbers), 3 delta (of signed numbers), 5 string (of UTF-8
/// strings), 4 boolean (alternating run lengths), 7 raw values (no rows of their own).
fn column_rows(spec: u64, data: &[u8]) -> Result<(), LimitError> {
    let mut r = Reader { bytes: data, at: 0 };
    let mut rows = 0u64;
    let mut add = |n: u64| -> Result<(), LimitError> {
        rows = rows.saturating_add(n);
        if rows > ROWS_MAX {
            return Err(LimitError::TooManyRows);
        }
        Ok(())
    };
    let value = |r: &mut Reader<'_>| -> Result<(), LimitError> {
        match spec & 0b111 {
            3 => r.sleb().map(|_| ()),
            5 => {
                let n = r.len()?;
                r.take(n).map(|_| ())
            }
            _ => r.uleb().map(|_| ()),
        }
    };
    match spec & 0b111 {
        7 => {}
        4 => {
            while !r.done() {
                add(r.uleb()?)?;
            }
        }
        _ => {
            while !r.done() {
                let count = r.sleb()?;
                if count > 0 {
                    value(&mut r)?;
                    add(count.unsigned_abs())?;
                } else if count < 0 {
                    // A literal run: each value is written, so the bytes bound it.
                    add(count.unsigned_abs())?;
                    for _ in 0..count.unsigned_abs() {
                        value(&mut r)?;
                    }
                } else {
                    add(r.uleb()?)?;
                }
            }
        }
    }
    Ok(())
}

/// The body of a change (after its chunk header, inflated if it came compressed): its
/// operation columns are checked for rows. A change's own columns are never compressed
/// (Automerge refuses such a change), so nothing more is inflated here; the bytes were
/// counted by the caller.
fn change_body(body: &[u8]) -> Result<(), LimitError> {
    let mut b = Reader { bytes: body, at: 0 };
    b.skip_hashes()?; // dependencies
    let n = b.len()?;
    b.take(n)?; // actor
    b.uleb()?; // seq
    b.uleb()?; // start op
    b.sleb()?; // time
    let n = b.len()?;
    b.take(n)?; // message
    b.skip_prefixed()?; // other actors
    for (spec, len) in b.columns()? {
        if spec & COLUMN_DEFLATE != 0 {
            return Err(malformed("a change with compressed columns"));
        }
        column_rows(spec, b.take(len)?)?;
    }
    Ok(())
}

/// One chunk: its header, then its body by type.
fn chunk(r: &mut Reader<'_>, budget: &mut Budget) -> Result<(), LimitError> {
    if r.take(4)? != MAGIC {
        return Err(malformed("bad magic bytes"));
    }
    r.take(4)?; // checksum
    let kind = r.take(1)?[0];
    let len = r.len()?;
    let body = r.take(len)?;
    let mut b = Reader { bytes: body, at: 0 };
    match kind {
        CHUNK_CHANGE => {
            budget.spend(len)?;
            change_body(body)
        }
        CHUNK_COMPRESSED => change_body(&budget.inflate(body)?),
        CHUNK_DOCUMENT => {
            b.skip_prefixed()?; // actors
            b.skip_hashes()?; // heads
            let changes = b.columns()?;
            let ops = b.columns()?;
            b.column_data(&changes, budget)?;
            b.column_data(&ops, budget)?;
            budget.spend(body.len() - b.at)
        }
        CHUNK_BUNDLE => {
            b.skip_hashes()?; // deps
            b.skip_prefixed()?; // actors
            let changes = b.columns()?;
            b.column_data(&changes, budget)?;
            let ops = b.columns()?;
            b.column_data(&ops, budget)?;
            budget.spend(body.len() - b.at)
        }
        other => Err(LimitError::Malformed(format!("unknown chunk type {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DocKind, ReplicatedDoc};
    use std::io::Write;

    fn uleb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn deflate_zeros(n: usize) -> Vec<u8> {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let block = vec![0u8; 1 << 20];
        for _ in 0..n / block.len() {
            enc.write_all(&block).unwrap();
        }
        enc.finish().unwrap()
    }

    fn chunk_of(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[0, 0, 0, 0, kind]);
        uleb(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    fn message_with(chunks: Vec<Vec<u8>>) -> Vec<u8> {
        sync::Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: Vec::new(),
            changes: chunks.into(),
            flags: None,
            version: sync::MessageVersion::V1,
        }
        .encode()
    }

    /// A compressed change that inflates to 64 MiB (from about 64 KiB) is refused
    /// without inflating it whole.
    #[test]
    fn a_deflate_bomb_in_a_compressed_change_is_refused() {
        let bomb = chunk_of(CHUNK_COMPRESSED, &deflate_zeros(64 << 20));
        assert!(bomb.len() < SYNC_MESSAGE_MAX, "{}", bomb.len());
        assert_eq!(
            check_sync_message(&message_with(vec![bomb])),
            Err(LimitError::InflatesTooLarge)
        );
    }

    /// The same bomb as a compressed column of a document chunk.
    #[test]
    fn a_deflate_bomb_in_a_document_column_is_refused() {
        let data = deflate_zeros(32 << 20);
        let mut body = Vec::new();
        uleb(0, &mut body); // actors
        uleb(0, &mut body); // heads
        uleb(1, &mut body); // one change column …
        uleb((1 << 4) | COLUMN_DEFLATE, &mut body); // … compressed
        uleb(data.len() as u64, &mut body);
        uleb(0, &mut body); // no op columns
        body.extend_from_slice(&data);
        let message = message_with(vec![chunk_of(CHUNK_DOCUMENT, &body)]);
        assert_eq!(
            check_sync_message(&message),
            Err(LimitError::InflatesTooLarge)
        );
    }

    #[test]
    fn oversized_and_malformed_messages_are_refused() {
        assert!(matches!(
            check_sync_message(&vec![0u8; SYNC_MESSAGE_MAX + 1]),
            Err(LimitError::MessageTooLarge(_))
        ));
        let bad_magic = message_with(vec![vec![1, 2, 3, 4, 0, 0, 0, 0, 1, 0]]);
        assert!(matches!(
            check_sync_message(&bad_magic),
            Err(LimitError::Malformed(_))
        ));
        let cut = chunk_of(CHUNK_CHANGE, &[1, 2, 3]);
        let truncated = message_with(vec![cut[..cut.len() - 1].to_vec()]);
        assert!(matches!(
            check_sync_message(&truncated),
            Err(LimitError::Malformed(_))
        ));
    }

    /// Found: a change of a few dozen bytes whose run-length encoded column claims a
    /// billion operations (Automerge would allocate each). Refused by its rows.
    #[test]
    fn a_run_length_bomb_is_refused_by_its_rows() {
        let change = |rows: u64| {
            let mut body = Vec::new();
            uleb(0, &mut body); // no dependencies
            uleb(1, &mut body); // actor: one byte
            body.push(0xaa);
            uleb(1, &mut body); // seq
            uleb(1, &mut body); // start op
            uleb(0, &mut body); // time
            uleb(0, &mut body); // no message
            uleb(0, &mut body); // no other actors
            let mut column = Vec::new();
            uleb(rows << 1, &mut column); // a positive run (signed LEB128) …
            uleb(1, &mut column); // … of the value 1
            uleb(1, &mut body); // one op column:
            uleb((34 << 4) | 2, &mut body); // an integer column
            uleb(column.len() as u64, &mut body);
            body.extend_from_slice(&column);
            chunk_of(CHUNK_CHANGE, &body)
        };
        let bomb = message_with(vec![change(1_000_000_000)]);
        assert!(bomb.len() < 100, "{}", bomb.len());
        assert_eq!(check_sync_message(&bomb), Err(LimitError::TooManyRows));
        assert!(check_sync_message(&message_with(vec![change(1_000)])).is_ok());
    }

    fn message_with_bloom(bloom: &[u8]) -> Vec<u8> {
        sync::Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: vec![sync::Have {
                last_sync: Vec::new(),
                bloom: sync::BloomFilter::try_from(bloom).unwrap(),
            }],
            changes: Vec::<Vec<u8>>::new().into(),
            flags: None,
            version: sync::MessageVersion::V1,
        }
        .encode()
    }

    /// Found: a Bloom filter with no bits made Automerge divide by zero when the
    /// replica next generated a message (on the box, on its writer thread), and one
    /// with billions of probes made it allocate 16 GiB. Both are refused.
    #[test]
    fn impossible_bloom_filters_are_refused() {
        use automerge::sync::SyncDoc;
        let no_bits = message_with_bloom(&[1, 0, 7]);
        let mut doc = ReplicatedDoc::create(DocKind::Menu, b"x").unwrap();
        let attack = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut state = sync::State::new();
            let m = sync::Message::decode(&no_bits).unwrap();
            let _ = doc.am_mut().sync().receive_sync_message(&mut state, m);
            doc.am_mut().sync().generate_sync_message(&mut state)
        }));
        assert!(attack.is_err(), "the unchecked message panics Automerge");
        assert!(matches!(
            check_sync_message(&no_bits),
            Err(LimitError::Malformed(_))
        ));
        // 2^32 - 1 probes (not run against Automerge: it aborts the process).
        let many_probes = message_with_bloom(&[1, 10, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff]);
        assert!(matches!(
            check_sync_message(&many_probes),
            Err(LimitError::Malformed(_))
        ));
        // Automerge's own filters pass.
        assert!(check_sync_message(&message_with_bloom(&[1, 10, 7, 0xff, 0x03])).is_ok());
    }

    /// Real sync messages, whole documents and single edits, pass and are counted.
    #[test]
    fn real_sync_messages_pass() {
        let mut a = ReplicatedDoc::create(DocKind::Menu, b"a").unwrap();
        let mut b = ReplicatedDoc::create(DocKind::Menu, b"b").unwrap();
        let fields = crate::menu::ItemFields {
            name_zh: "牛肉面".into(),
            name_en: "Beef noodles".into(),
            category: "Noodles".into(),
            price_fen: 1800,
            option_groups: Vec::new(),
            allergens: vec!["gluten".into()],
            daily_quota: Some(100),
            available: true,
            archived: false,
            sort_key: 0,
        };
        let add = crate::menu::MenuEdit::AddItem {
            item: crate::ItemId::new(),
            fields,
        };
        crate::menu::apply(&mut a, &[add], 1_000).unwrap();
        let (mut pa, mut pb) = (crate::sync::SyncPeer::new(), crate::sync::SyncPeer::new());
        let mut checked = 0;
        for _ in 0..10 {
            if let Some(m) = pa.generate(&mut a) {
                check_sync_message(&m).unwrap();
                checked += 1;
                pb.receive(&mut b, &m).unwrap();
            }
            if let Some(m) = pb.generate(&mut b) {
                check_sync_message(&m).unwrap();
                checked += 1;
                pa.receive(&mut a, &m).unwrap();
            }
        }
        assert!(checked >= 2);
        assert_eq!(
            crate::menu::project(&b).unwrap().items.len(),
            crate::menu::project(&a).unwrap().items.len()
        );
        assert_eq!(crate::menu::project(&b).unwrap().items.len(), 1);

        // A whole saved document (its larger columns DEFLATE-compressed) is read
        // through, and counted at its inflated size.
        for i in 0..60 {
            let mut fields = crate::menu::project(&a).unwrap().items[0].fields.clone();
            fields.name_en = format!("Dish number {i} with a long name");
            let add = crate::menu::MenuEdit::AddItem {
                item: crate::ItemId::new(),
                fields,
            };
            crate::menu::apply(&mut a, &[add], 2_000 + i).unwrap();
        }
        let saved = a.save();
        let inflated = check_sync_message(&message_with(vec![saved.clone()])).unwrap();
        assert!(inflated > saved.len(), "{inflated} vs {}", saved.len());
    }
}
