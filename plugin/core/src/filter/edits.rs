//! Header changes for a forwarded request: removals, then sets. Names and
//! values are shared text (header names from the configuration, the
//! caller's ID), held inline: building the edits of a verified request
//! allocates nothing.

use std::sync::Arc;

use smallvec::SmallVec;

/// Shared text: cloning it copies nothing.
pub type Text = Arc<str>;

/// Header changes for a forwarded request: removals, then sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// Header names to remove.
    pub remove: SmallVec<[Text; 4]>,
    /// Headers to set (replacing any value).
    pub set: SmallVec<[(Text, Text); 2]>,
}

impl Edits {
    /// Edits removing `remove`, then setting `set`.
    pub fn new<'a>(
        remove: impl IntoIterator<Item = &'a str>,
        set: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        Self {
            remove: remove.into_iter().map(Text::from).collect(),
            set: set
                .into_iter()
                .map(|(k, v)| (Text::from(k), Text::from(v)))
                .collect(),
        }
    }

    /// These edits followed by `later`, as one set of removals then sets.
    pub fn then(mut self, later: Edits) -> Edits {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        for name in later.remove {
            self.set.retain(|(set, _)| !same(set, &name));
            if !self.remove.iter().any(|r| same(r, &name)) {
                self.remove.push(name);
            }
        }
        for (name, value) in later.set {
            self.set.retain(|(set, _)| !same(set, &name));
            self.set.push((name, value));
        }
        self
    }
}
