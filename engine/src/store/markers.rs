//! Which rules were enforced for a trigger instance, and by which enforcement: the markers
//! that keep re-processing an instance exactly-once and that list an instance's enforcements.
//!
//! Markers are kept in pages, like the instances: every instance whose id starts with the same
//! [`PAGE_KEY_LEN`](super::pages::PAGE_KEY_LEN) characters (a ULID's millisecond) has its
//! markers in one sled value, so a batch of enforcements costs one write per page instead of
//! one per enforcement. A marker is a page frame (see `pages`): the instance's id, the rule's
//! ref as its label, the enforcement's id as its record.

use sled::transaction::TransactionalTree;
use sled::Tree;

use super::pages::{self, corrupt, frames, page_key, TxPages};
use super::{abort, tx_error, StoreResult, TxResult};

/// Markers in pages, by instance.
pub(super) const T_ENF_MARKERS: &str = "enforcement_markers";

/// The markers of `ti_id`, as `(rule ref, enforcement id)`, in the order they were added.
pub(super) fn of_instance(tree: &Tree, ti_id: &str) -> StoreResult<Vec<(String, String)>> {
    let pk = page_key(ti_id);
    let Some(page) = tree.get(pk)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for frame in frames(&page) {
        let frame = frame.map_err(|e| corrupt(T_ENF_MARKERS, pk, e))?;
        if frame.id == ti_id.as_bytes() {
            out.push((
                String::from_utf8_lossy(frame.label).into_owned(),
                String::from_utf8_lossy(frame.record).into_owned(),
            ));
        }
    }
    Ok(out)
}

/// Adds a marker in a transaction of its own (rebuilding the index), unless `ti_id` has one
/// for `rule_ref` already.
pub(super) fn add(tree: &Tree, ti_id: &str, rule_ref: &str, enf_id: &str) -> StoreResult<()> {
    tree.transaction(|t| {
        let mut markers = TxMarkers::new(t);
        if !markers.has(ti_id, rule_ref)? {
            markers.add(ti_id, rule_ref, enf_id)?;
        }
        markers.write()
    })
    .map_err(tx_error)
}

/// The frame of the marker `page` holds for `(ti_id, rule_ref)`, if any.
fn find<'a>(
    page: &'a [u8],
    ti_id: &str,
    rule_ref: &str,
) -> Result<Option<pages::Frame<'a>>, String> {
    for frame in frames(page) {
        let frame = frame?;
        if frame.id == ti_id.as_bytes() && frame.label == rule_ref.as_bytes() {
            return Ok(Some(frame));
        }
    }
    Ok(None)
}

/// The marker pages one transaction reads or changes, each read once and written once if
/// changed. Made afresh on each attempt of the transaction's closure.
pub(super) struct TxMarkers<'a> {
    pages: TxPages<'a>,
}

impl<'a> TxMarkers<'a> {
    pub fn new(tree: &'a TransactionalTree) -> Self {
        TxMarkers {
            pages: TxPages::new(tree, T_ENF_MARKERS),
        }
    }

    /// Whether `rule_ref` was enforced for `ti_id`.
    pub fn has(&mut self, ti_id: &str, rule_ref: &str) -> TxResult<bool> {
        let pk = page_key(ti_id);
        match find(self.pages.page(pk)?, ti_id, rule_ref) {
            Ok(found) => Ok(found.is_some()),
            Err(e) => abort(corrupt(T_ENF_MARKERS, pk, e)),
        }
    }

    /// Marks `rule_ref` enforced for `ti_id` by `enf_id`. The caller knows it was not (a new
    /// instance, or [`TxMarkers::has`] said so).
    pub fn add(&mut self, ti_id: &str, rule_ref: &str, enf_id: &str) -> TxResult<()> {
        let pk = page_key(ti_id);
        pages::push_frame(self.pages.page_mut(pk)?, ti_id, rule_ref, enf_id.as_bytes())
            .map_err(|e| corrupt(T_ENF_MARKERS, pk, e))
            .or_else(abort)
    }

    /// Removes the marker of `(ti_id, rule_ref)` if it names `enf_id` (an enforcement that
    /// goes).
    pub fn remove(&mut self, ti_id: &str, rule_ref: &str, enf_id: &str) -> TxResult<()> {
        let pk = page_key(ti_id);
        let span = match find(self.pages.page(pk)?, ti_id, rule_ref) {
            Ok(Some(f)) if f.record == enf_id.as_bytes() => f.span(),
            Ok(_) => return Ok(()),
            Err(e) => return abort(corrupt(T_ENF_MARKERS, pk, e)),
        };
        self.pages.page_mut(pk)?.drain(span);
        Ok(())
    }

    /// Writes the changed pages.
    pub fn write(mut self) -> TxResult<()> {
        self.pages.write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_kept_per_instance_and_rule_in_the_instance_page() {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let tree = db.open_tree(T_ENF_MARKERS).expect("tree");
        // Two instances of one millisecond share a page; a third is on its own.
        let (a, b, c) = (
            "01M8W91VEF1YNNYKV78F61R9SV",
            "01M8W91VEF1YNNYKV78F61R9SW",
            "01M8W91VEG1YNNYKV78F61R9SV",
        );
        tree.transaction(|t| {
            let mut m = TxMarkers::new(t);
            assert!(!m.has(a, "p.one")?);
            m.add(a, "p.one", "enf-1")?;
            m.add(a, "p.two", "enf-2")?;
            m.add(b, "p.one", "enf-3")?;
            m.add(c, "p.one", "enf-4")?;
            assert!(m.has(a, "p.one")?);
            assert!(!m.has(b, "p.two")?);
            m.write()
        })
        .expect("tx");
        assert_eq!(tree.len(), 2);
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(r, e)| (r.to_string(), e.to_string()))
                .collect()
        };
        assert_eq!(
            of_instance(&tree, a).expect("a"),
            pairs(&[("p.one", "enf-1"), ("p.two", "enf-2")])
        );
        assert_eq!(
            of_instance(&tree, b).expect("b"),
            pairs(&[("p.one", "enf-3")])
        );
        // Adding what is there is a no-op outside transactions (an index rebuild).
        add(&tree, b, "p.one", "enf-9").expect("add");
        add(&tree, b, "p.two", "enf-5").expect("add");
        assert_eq!(
            of_instance(&tree, b).expect("b"),
            pairs(&[("p.one", "enf-3"), ("p.two", "enf-5")])
        );
        // A marker goes only with the enforcement it names; an emptied page goes too.
        tree.transaction(|t| {
            let mut m = TxMarkers::new(t);
            m.remove(a, "p.one", "enf-other")?;
            m.remove(a, "p.two", "enf-2")?;
            m.remove(c, "p.one", "enf-4")?;
            m.write()
        })
        .expect("tx");
        assert_eq!(
            of_instance(&tree, a).expect("a"),
            pairs(&[("p.one", "enf-1")])
        );
        assert!(of_instance(&tree, c).expect("c").is_empty());
        assert_eq!(tree.len(), 1);
    }

    #[test]
    fn short_ids_keep_their_markers_together() {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let tree = db.open_tree(T_ENF_MARKERS).expect("tree");
        add(&tree, "ti-1", "pack.a", "e1").expect("add");
        add(&tree, "ti-1", "pack.b", "e2").expect("add");
        add(&tree, "ti-12", "pack.a", "e3").expect("add");
        let rules: Vec<String> = of_instance(&tree, "ti-1")
            .expect("markers")
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(rules, ["pack.a", "pack.b"]);
    }
}
