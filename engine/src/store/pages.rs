//! Paged trees: every record whose id starts with the same [`PAGE_KEY_LEN`] characters (a
//! ULID's millisecond) is kept in one sled value, so the rules loop writes one value per
//! millisecond of records instead of one per record (sled's cost is per write, whatever its
//! size). Key order stays time order. Trigger instances (labelled with their trigger) and rule
//! enforcements (labelled with their rule) are kept this way.
//!
//! A page is a sequence of frames: the id's length (u16, little endian) and bytes, the label's
//! length (u16) and bytes, the record's length (u32) and bytes (JSON). The id and label are
//! outside the JSON so a lookup or a filter by label decodes only what it returns.

use std::collections::HashMap;

use sled::transaction::TransactionalTree;
use sled::Tree;

use super::{abort, decode, page, Record, StoreError, StoreResult, TxResult};

/// Characters of an id that name its page: a ULID's first ten hold its millisecond.
pub(super) const PAGE_KEY_LEN: usize = 10;

/// Characters of an id that name its group: the unit index entries name, a ULID's first nine
/// (32 milliseconds). At a low rate a page holds one record, so entries naming pages would cost
/// a write per record; naming groups, most writes find their entry there already.
pub(super) const GROUP_KEY_LEN: usize = 9;

/// The group of an id (or of a page's key).
pub(super) fn group_key(id: &[u8]) -> &[u8] {
    &id[..id.len().min(GROUP_KEY_LEN)]
}

/// The key of the page that holds the record `id`.
pub(super) fn page_key(id: &str) -> &[u8] {
    let b = id.as_bytes();
    &b[..b.len().min(PAGE_KEY_LEN)]
}

/// One record of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame<'a> {
    pub id: &'a [u8],
    pub label: &'a [u8],
    pub record: &'a [u8],
    /// Where the frame starts and ends in its page.
    start: usize,
    end: usize,
}

impl Frame<'_> {
    /// Where the frame lies in its page.
    pub fn span(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// The frames of `page`, in the order they were put; an error names the offset of a frame that
/// does not fit (a damaged page).
pub(super) fn frames(page: &[u8]) -> Frames<'_> {
    Frames { page, at: 0 }
}

pub(super) struct Frames<'a> {
    page: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.page.len() {
            return None;
        }
        let start = self.at;
        let mut at = start;
        let mut field = |width: usize| -> Option<&'a [u8]> {
            let len_bytes = self.page.get(at..at + width)?;
            let len = len_bytes
                .iter()
                .rev()
                .fold(0usize, |n, b| (n << 8) | usize::from(*b));
            let bytes = self.page.get(at + width..at + width + len)?;
            at += width + len;
            Some(bytes)
        };
        let parsed = (|| Some((field(2)?, field(2)?, field(4)?)))();
        match parsed {
            Some((id, label, record)) => {
                self.at = at;
                Some(Ok(Frame {
                    id,
                    label,
                    record,
                    start,
                    end: at,
                }))
            }
            None => {
                // Nothing after a damaged frame can be located.
                self.at = self.page.len();
                Some(Err(format!(
                    "page frame at byte {start} runs past the page's {} bytes",
                    self.page.len()
                )))
            }
        }
    }
}

/// The frame of `id` in `page`, if it holds one.
fn locate<'a>(page: &'a [u8], id: &str) -> Result<Option<Frame<'a>>, String> {
    for frame in frames(page) {
        let frame = frame?;
        if frame.id == id.as_bytes() {
            return Ok(Some(frame));
        }
    }
    Ok(None)
}

/// The record of `id` in `page`, if it holds one.
pub(super) fn find<'a>(page: &'a [u8], id: &str) -> Result<Option<&'a [u8]>, String> {
    Ok(locate(page, id)?.map(|f| f.record))
}

fn push_field(page: &mut Vec<u8>, bytes: &[u8], width: usize) -> Result<(), String> {
    let len = bytes.len();
    if width < 8 && len >> (8 * width) != 0 {
        return Err(format!(
            "a page field of {len} bytes does not fit a {width}-byte length"
        ));
    }
    page.extend_from_slice(&len.to_le_bytes()[..width]);
    page.extend_from_slice(bytes);
    Ok(())
}

/// Puts the record of `id` in `page`: in place of its earlier record if there is one, else at
/// the end.
pub(super) fn put(page: &mut Vec<u8>, id: &str, label: &str, record: &[u8]) -> Result<(), String> {
    match locate(page, id)?.map(|f| (f.start, f.end)) {
        Some((start, end)) => {
            let mut framed = Vec::with_capacity(8 + id.len() + label.len() + record.len());
            push_frame(&mut framed, id, label, record)?;
            page.splice(start..end, framed);
            Ok(())
        }
        None => push_frame(page, id, label, record),
    }
}

/// Appends the frame of a record `page` cannot hold yet (a new id).
pub(super) fn push_frame(
    page: &mut Vec<u8>,
    id: &str,
    label: &str,
    record: &[u8],
) -> Result<(), String> {
    let at = page.len();
    let pushed = push_field(page, id.as_bytes(), 2)
        .and_then(|()| push_field(page, label.as_bytes(), 2))
        .and_then(|()| push_field(page, record, 4));
    if pushed.is_err() {
        page.truncate(at);
    }
    pushed
}

/// The page with only the frames `keep` accepts; `damaged` turns a frame that cannot be read
/// into the caller's error.
pub(super) fn retain<E>(
    page: &[u8],
    mut keep: impl FnMut(&Frame<'_>) -> Result<bool, E>,
    damaged: impl Fn(String) -> E,
) -> Result<Vec<u8>, E> {
    let mut out = Vec::with_capacity(page.len());
    for frame in frames(page) {
        let frame = frame.map_err(&damaged)?;
        if keep(&frame)? {
            out.extend_from_slice(&page[frame.start..frame.end]);
        }
    }
    Ok(out)
}

/// A damaged page of `tree`, named by its key.
pub(super) fn corrupt(tree: &'static str, page_key: &[u8], error: String) -> StoreError {
    StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(page_key).into_owned(),
        error,
    }
}

/// An index key naming the group of a page that holds records labelled `label`: the label, a
/// 0 byte, the group's key.
pub(super) fn index_key(label: &[u8], page_key: &[u8]) -> Vec<u8> {
    let group = group_key(page_key);
    let mut k = Vec::with_capacity(label.len() + group.len() + 1);
    k.extend_from_slice(label);
    k.push(0);
    k.extend_from_slice(group);
    k
}

/// The entries of `tree` whose keys start with `prefix`, last key first when `newest_first`.
pub(super) fn scan_in_order(
    tree: &Tree,
    prefix: &[u8],
    newest_first: bool,
) -> Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> {
    let scan = tree.scan_prefix(prefix);
    if newest_first {
        Box::new(scan.rev())
    } else {
        Box::new(scan)
    }
}

/// A paged tree: its sled tree and its name (for errors).
#[derive(Clone)]
pub(super) struct Paged {
    pub tree: Tree,
    pub name: &'static str,
}

impl Paged {
    /// The record `id`, if stored.
    pub fn get<T: Record>(&self, id: &str) -> StoreResult<Option<T>> {
        let pk = page_key(id);
        let Some(page) = self.tree.get(pk)? else {
            return Ok(None);
        };
        match find(&page, id).map_err(|e| corrupt(self.name, pk, e))? {
            Some(record) => decode(self.name, id.as_bytes(), record).map(Some),
            None => Ok(None),
        }
    }

    /// A page's records (only those labelled `label`, when given), newest first, each decoded
    /// on its own: a record that cannot be read is its own error, not its page's.
    pub fn page_records<T: Record>(
        &self,
        pk: &[u8],
        label: Option<&str>,
    ) -> StoreResult<Vec<StoreResult<T>>> {
        let Some(page) = self.tree.get(pk)? else {
            // Its index entry outlived it: a sweep removed it since.
            return Ok(Vec::new());
        };
        self.decode_page(pk, &page, label, true)
    }

    /// The records of `page` (stored under `pk`; only those labelled `label`, when given),
    /// newest or oldest first, each decoded on its own.
    pub fn decode_page<T: Record>(
        &self,
        pk: &[u8],
        page: &[u8],
        label: Option<&str>,
        newest_first: bool,
    ) -> StoreResult<Vec<StoreResult<T>>> {
        let mut selected = Vec::new();
        for frame in frames(page) {
            let frame = frame.map_err(|e| corrupt(self.name, pk, e))?;
            if label.is_none_or(|l| l.as_bytes() == frame.label) {
                selected.push(frame);
            }
        }
        if newest_first {
            selected.sort_by(|a, b| b.id.cmp(a.id));
        } else {
            selected.sort_by(|a, b| a.id.cmp(b.id));
        }
        Ok(selected
            .into_iter()
            .map(|f| decode(self.name, f.id, f.record))
            .collect())
    }

    /// The records of the pages whose keys start with `prefix` (every page for an empty one),
    /// newest or oldest first.
    pub fn records<T: Record + 'static>(
        &self,
        prefix: &[u8],
        newest_first: bool,
    ) -> Box<dyn Iterator<Item = StoreResult<T>> + '_> {
        Box::new(
            scan_in_order(&self.tree, prefix, newest_first).flat_map(move |item| {
                let records: Vec<StoreResult<T>> = match item {
                    Ok((pk, page)) => match self.decode_page(&pk, &page, None, newest_first) {
                        Ok(list) => list,
                        Err(e) => vec![Err(e)],
                    },
                    Err(e) => vec![Err(e.into())],
                };
                records
            }),
        )
    }

    /// Newest first, `offset` skipped, at most `limit`, those `keep` accepts: every record, or
    /// those labelled `label` through `index` (whose keys are [`index_key`]s).
    pub fn list<T: Record>(
        &self,
        by_label: Option<(&Tree, &str)>,
        keep: impl Fn(&T) -> bool,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Vec<T>> {
        let label = by_label.map(|(_, l)| l);
        let page_keys: Box<dyn Iterator<Item = StoreResult<Vec<u8>>>> = match by_label {
            Some((index, l)) => {
                let prefix = index_key(l.as_bytes(), b"");
                let skip = prefix.len();
                // Entries name groups: each is a range of pages, newest first.
                Box::new(index.scan_prefix(prefix).keys().rev().flat_map(move |k| {
                    let pages: Vec<StoreResult<Vec<u8>>> = match k {
                        Ok(k) => self
                            .tree
                            .scan_prefix(k.get(skip..).unwrap_or_default())
                            .keys()
                            .rev()
                            .map(|pk| Ok(pk?.to_vec()))
                            .collect(),
                        Err(e) => vec![Err(e.into())],
                    };
                    pages
                }))
            }
            None => Box::new(self.tree.iter().keys().rev().map(|k| Ok(k?.to_vec()))),
        };
        let all = page_keys.flat_map(|pk| {
            let listed = pk.and_then(|pk| self.page_records::<T>(&pk, label));
            let items: Vec<StoreResult<Option<T>>> = match listed {
                Ok(list) => list.into_iter().map(|r| r.map(Some)).collect(),
                Err(e) => vec![Err(e)],
            };
            items
        });
        page(all, keep, limit, offset)
    }
}

/// The pages one transaction reads or changes, each read once and, if changed, written once
/// ([`TxPages::write`]). Made afresh on each attempt of the transaction's closure.
pub(super) struct TxPages<'a> {
    tree: &'a TransactionalTree,
    name: &'static str,
    /// Pages read, and whether this transaction changed them.
    pages: HashMap<Vec<u8>, (Vec<u8>, bool)>,
}

impl<'a> TxPages<'a> {
    pub fn new(tree: &'a TransactionalTree, name: &'static str) -> Self {
        TxPages {
            tree,
            name,
            pages: HashMap::new(),
        }
    }

    fn entry(&mut self, pk: &[u8]) -> TxResult<&mut (Vec<u8>, bool)> {
        if !self.pages.contains_key(pk) {
            let stored = self.tree.get(pk)?.map(|p| p.to_vec()).unwrap_or_default();
            self.pages.insert(pk.to_vec(), (stored, false));
        }
        match self.pages.get_mut(pk) {
            Some(p) => Ok(p),
            None => abort(corrupt(self.name, pk, "page vanished".into())),
        }
    }

    /// Page `pk` as this transaction has it so far, to read.
    pub fn page(&mut self, pk: &[u8]) -> TxResult<&[u8]> {
        Ok(&self.entry(pk)?.0)
    }

    /// Page `pk`, to change: written by [`TxPages::write`].
    pub fn page_mut(&mut self, pk: &[u8]) -> TxResult<&mut Vec<u8>> {
        let (page, changed) = self.entry(pk)?;
        *changed = true;
        Ok(page)
    }

    /// Puts the record of `id`, replacing an earlier one.
    pub fn put(&mut self, id: &str, label: &str, record: &[u8]) -> TxResult<()> {
        let name = self.name;
        let pk = page_key(id);
        let page = self.page_mut(pk)?;
        put(page, id, label, record)
            .map_err(|e| corrupt(name, pk, e))
            .or_else(abort)
    }

    /// Adds the record of an id no page can hold yet (a record created since its page was
    /// last written), without looking for an earlier one.
    pub fn put_new(&mut self, id: &str, label: &str, record: &[u8]) -> TxResult<()> {
        let name = self.name;
        let pk = page_key(id);
        let page = self.page_mut(pk)?;
        push_frame(page, id, label, record)
            .map_err(|e| corrupt(name, pk, e))
            .or_else(abort)
    }

    /// The record of `id` (as this transaction has it so far).
    pub fn get<T: Record>(&mut self, id: &str) -> TxResult<Option<T>> {
        let name = self.name;
        let pk = page_key(id);
        let page = self.page(pk)?;
        match find(page, id)
            .map_err(|e| corrupt(name, pk, e))
            .or_else(abort)?
        {
            Some(record) => decode(name, id.as_bytes(), record).map(Some).or_else(abort),
            None => Ok(None),
        }
    }

    /// Takes the record of `id` out of its page; true when the page held it.
    pub fn remove(&mut self, id: &str) -> TxResult<bool> {
        let name = self.name;
        let pk = page_key(id);
        let page = self.page_mut(pk)?;
        let before = page.len();
        let rest = retain(
            page,
            |f| Ok(f.id != id.as_bytes()),
            |e| corrupt(name, pk, e),
        )
        .or_else(abort)?;
        let removed = rest.len() != before;
        *page = rest;
        Ok(removed)
    }

    /// The label of the record `id` (as this transaction has it so far), without decoding it.
    pub fn label(&mut self, id: &str) -> TxResult<Option<Vec<u8>>> {
        let name = self.name;
        let pk = page_key(id);
        let page = self.page(pk)?;
        Ok(locate(page, id)
            .map_err(|e| corrupt(name, pk, e))
            .or_else(abort)?
            .map(|f| f.label.to_vec()))
    }

    /// Writes the changed pages (once: what is written is forgotten).
    pub fn write(&mut self) -> TxResult<()> {
        for (pk, (page, changed)) in std::mem::take(&mut self.pages) {
            if !changed {
                continue;
            }
            if page.is_empty() {
                self.tree.remove(pk)?;
            } else {
                self.tree.insert(pk, page)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(page: &[u8]) -> Vec<String> {
        frames(page)
            .map(|f| String::from_utf8_lossy(f.expect("frame").id).into_owned())
            .collect()
    }

    #[test]
    fn put_appends_and_replaces_by_id() {
        let mut page = Vec::new();
        put(&mut page, "01A", "core.webhook", b"{\"n\":1}").expect("put");
        put(&mut page, "01B", "core.timer", b"{\"n\":2}").expect("put");
        put(&mut page, "01C", "core.webhook", b"{\"n\":3}").expect("put");
        assert_eq!(ids(&page), ["01A", "01B", "01C"]);
        // A replacement of another length keeps the frames around it intact.
        put(&mut page, "01B", "core.timer", b"{\"n\":2,\"more\":true}").expect("put");
        assert_eq!(ids(&page), ["01A", "01B", "01C"]);
        assert_eq!(
            find(&page, "01B").expect("find"),
            Some(&b"{\"n\":2,\"more\":true}"[..])
        );
        assert_eq!(find(&page, "01C").expect("find"), Some(&b"{\"n\":3}"[..]));
        assert_eq!(find(&page, "01D").expect("find"), None);
        let labels: Vec<&[u8]> = frames(&page).map(|f| f.expect("frame").label).collect();
        assert_eq!(
            labels,
            [
                &b"core.webhook"[..],
                &b"core.timer"[..],
                &b"core.webhook"[..]
            ]
        );
    }

    #[test]
    fn retain_drops_selected_frames() {
        let mut page = Vec::new();
        for id in ["01A", "01B", "01C"] {
            put(&mut page, id, "t", id.as_bytes()).expect("put");
        }
        let kept = retain(&page, |f| Ok(f.id != b"01B"), |e| e).expect("retain");
        assert_eq!(ids(&kept), ["01A", "01C"]);
        assert!(retain(&page, |_| Ok(false), |e| e)
            .expect("retain")
            .is_empty());
        let damaged = &page[..page.len() - 1];
        assert!(retain(damaged, |_| Ok(true), |e| e).is_err());
    }

    #[test]
    fn a_damaged_page_is_an_error_not_a_panic() {
        let mut page = Vec::new();
        put(&mut page, "01A", "t", b"{}").expect("put");
        put(&mut page, "01B", "t", b"{}").expect("put");
        let first_len = page.len() / 2;
        for cut in (1..page.len()).filter(|c| *c != first_len) {
            let damaged = &page[..cut];
            assert!(
                frames(damaged).last().is_some_and(|f| f.is_err()),
                "a page cut at byte {cut} must end in an error"
            );
            assert!(find(damaged, "01B").is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn page_key_is_the_ulid_millisecond() {
        assert_eq!(page_key("01JDXYZ0AB1234567890ABCDEF"), b"01JDXYZ0AB");
        assert_eq!(page_key("short"), b"short");
        assert_eq!(group_key(b"01JDXYZ0AB1234567890ABCDEF"), b"01JDXYZ0A");
        assert_eq!(
            group_key(page_key("01JDXYZ0AB1234567890ABCDEF")),
            b"01JDXYZ0A"
        );
    }
}
