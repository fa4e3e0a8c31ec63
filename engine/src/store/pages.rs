//! Pages of trigger instances: every instance whose id starts with the same
//! [`PAGE_KEY_LEN`] characters (a ULID's millisecond) is kept in one sled value, so the rules
//! loop writes one value per millisecond of instances instead of one per instance (sled's cost
//! is per write, whatever its size). Key order stays time order.
//!
//! A page is a sequence of frames: the id's length (u16, little endian) and bytes, the trigger's
//! length (u16) and bytes, the record's length (u32) and bytes (the instance as JSON). The id
//! and trigger are outside the JSON so a lookup or a filter by trigger decodes only what it
//! returns.

/// Characters of an id that name its page: a ULID's first ten hold its millisecond.
pub(super) const PAGE_KEY_LEN: usize = 10;

/// The key of the page that holds the instance `id`.
pub(super) fn page_key(id: &str) -> &[u8] {
    let b = id.as_bytes();
    &b[..b.len().min(PAGE_KEY_LEN)]
}

/// One record of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame<'a> {
    pub id: &'a [u8],
    pub trigger: &'a [u8],
    pub record: &'a [u8],
    /// Where the frame starts and ends in its page.
    start: usize,
    end: usize,
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
            Some((id, trigger, record)) => {
                self.at = at;
                Some(Ok(Frame {
                    id,
                    trigger,
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

/// The record of `id` in `page`, if it holds one.
pub(super) fn find<'a>(page: &'a [u8], id: &str) -> Result<Option<&'a [u8]>, String> {
    for frame in frames(page) {
        let frame = frame?;
        if frame.id == id.as_bytes() {
            return Ok(Some(frame.record));
        }
    }
    Ok(None)
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
pub(super) fn put(
    page: &mut Vec<u8>,
    id: &str,
    trigger: &str,
    record: &[u8],
) -> Result<(), String> {
    let mut old = None;
    for frame in frames(page) {
        let frame = frame?;
        if frame.id == id.as_bytes() {
            old = Some((frame.start, frame.end));
            break;
        }
    }
    let mut framed = Vec::with_capacity(8 + id.len() + trigger.len() + record.len());
    push_field(&mut framed, id.as_bytes(), 2)?;
    push_field(&mut framed, trigger.as_bytes(), 2)?;
    push_field(&mut framed, record, 4)?;
    match old {
        Some((start, end)) => {
            page.splice(start..end, framed);
        }
        None => page.extend_from_slice(&framed),
    }
    Ok(())
}

/// The page with only the frames `keep` accepts.
pub(super) fn retain(
    page: &[u8],
    mut keep: impl FnMut(&Frame<'_>) -> Result<bool, String>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(page.len());
    for frame in frames(page) {
        let frame = frame?;
        if keep(&frame)? {
            out.extend_from_slice(&page[frame.start..frame.end]);
        }
    }
    Ok(out)
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
        let triggers: Vec<&[u8]> = frames(&page).map(|f| f.expect("frame").trigger).collect();
        assert_eq!(
            triggers,
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
        let kept = retain(&page, |f| Ok(f.id != b"01B")).expect("retain");
        assert_eq!(ids(&kept), ["01A", "01C"]);
        assert!(retain(&page, |_| Ok(false)).expect("retain").is_empty());
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
    }
}
