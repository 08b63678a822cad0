//! A set of byte ranges, merged as they touch: which parts of the source the
//! spool file holds besides its written prefix.

use std::collections::BTreeMap;

#[derive(Default, Debug)]
pub(super) struct RangeSet {
    /// start → end, disjoint and not touching.
    spans: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub(super) fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Absorb every span that overlaps or touches [start, end).
        if let Some((&s, &e)) = self.spans.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        let absorbed: Vec<u64> = self.spans.range(start..=end).map(|(&s, _)| s).collect();
        for s in absorbed {
            if let Some(e) = self.spans.remove(&s) {
                end = end.max(e);
            }
        }
        self.spans.insert(start, end);
    }

    /// The end of the span holding `pos`, if one does.
    pub(super) fn end_of_span_at(&self, pos: u64) -> Option<u64> {
        self.spans
            .range(..=pos)
            .next_back()
            .filter(|(_, &e)| e > pos)
            .map(|(_, &e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_merge_and_answer() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.end_of_span_at(10), Some(20));
        assert_eq!(r.end_of_span_at(19), Some(20));
        assert_eq!(r.end_of_span_at(20), None);
        assert_eq!(r.end_of_span_at(5), None);
        r.insert(20, 30);
        assert_eq!(r.end_of_span_at(12), Some(40));
        r.insert(5, 12);
        r.insert(38, 50);
        assert_eq!(r.end_of_span_at(5), Some(50));
        assert_eq!(r.spans.len(), 1);
        r.insert(60, 60);
        assert_eq!(r.spans.len(), 1);
    }
}
