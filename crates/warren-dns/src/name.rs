//! The name table: which names exist under the suffix and their addresses.
//!
//! Names are kept in lowercase wire form (length-prefixed labels ending in
//! the root label) so that a query name is looked up by lowercasing its bytes
//! into a stack buffer: no allocation, no text conversion, and a label that
//! contains a dot can never be confused with two labels.
//!
//! Besides the names themselves the table counts, for every proper ancestor
//! of a name below the suffix, how many names sit under it. Those ancestors
//! are empty non-terminals: they exist (NODATA) even though nothing is
//! registered at them, and RFC 8020 resolvers would prune a whole subtree on
//! an NXDOMAIN there.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most octets in a name in wire form (RFC 1035 §2.3.4).
pub(crate) const MAX_NAME_WIRE: usize = 255;
const MAX_LABEL: usize = 63;

/// Why a name was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name has an empty label (`a..b`, or is empty).
    #[error("DNS name has an empty label")]
    EmptyLabel,
    /// A label is longer than 63 octets.
    #[error("DNS label longer than 63 octets")]
    LabelTooLong,
    /// The whole name is longer than 255 octets in wire form.
    #[error("DNS name longer than 255 octets")]
    NameTooLong,
    /// Only ASCII names are served; IDNs arrive as punycode (`xn--`).
    #[error("DNS name is not ASCII (use punycode)")]
    NotAscii,
    /// The name is not below the configured suffix, so it could never be
    /// asked for here.
    #[error("DNS name is not under the suffix")]
    OutsideSuffix,
    /// The suffix must have at least one label; the root is every name.
    #[error("the DNS suffix must not be the root")]
    RootSuffix,
}

/// Converts `name` (dotted text, trailing dot optional, any case) to
/// lowercase wire form.
pub(crate) fn to_wire(name: &str) -> Result<Vec<u8>, NameError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.is_ascii() {
        return Err(NameError::NotAscii);
    }
    let mut wire = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel);
            }
            if label.len() > MAX_LABEL {
                return Err(NameError::LabelTooLong);
            }
            // Length checked against 63 just above.
            wire.push(label.len() as u8);
            wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    wire.push(0);
    if wire.len() > MAX_NAME_WIRE {
        return Err(NameError::NameTooLong);
    }
    Ok(wire)
}

/// The addresses of one name, split by family so an A or AAAA answer is a
/// plain slice walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

impl Entry {
    fn from_addrs(addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut entry = Entry::default();
        entry.add(addrs);
        entry
    }

    fn add(&mut self, addrs: impl IntoIterator<Item = IpAddr>) {
        for addr in addrs {
            match addr {
                IpAddr::V4(a) if !self.v4.contains(&a) => self.v4.push(a),
                IpAddr::V6(a) if !self.v6.contains(&a) => self.v6.push(a),
                _ => {}
            }
        }
    }
}

/// Where a (lowercased, wire-form) query name falls.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// Not the suffix and not below it.
    Outside,
    /// Inside the zone; `suffix_at` is the offset of the suffix within the
    /// query name, which the SOA's owner points at.
    Inside { suffix_at: usize, node: Node<'a> },
}

#[derive(Debug)]
pub(crate) enum Node<'a> {
    /// The suffix itself.
    Apex,
    /// A registered name.
    Name(&'a Entry),
    /// An ancestor of registered names: exists, holds nothing.
    EmptyNonTerminal,
    /// Nothing at or below this name.
    NxDomain,
}

/// Names under one suffix.
#[derive(Debug)]
pub(crate) struct Table {
    suffix: Vec<u8>,
    names: HashMap<Box<[u8]>, Entry>,
    /// Empty-non-terminal candidates, counted by how many names are below.
    ancestors: HashMap<Box<[u8]>, u32>,
}

impl Table {
    pub fn new(suffix: &str) -> Result<Self, NameError> {
        let suffix = to_wire(suffix)?;
        if suffix.len() == 1 {
            return Err(NameError::RootSuffix);
        }
        Ok(Table {
            suffix,
            names: HashMap::new(),
            ancestors: HashMap::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Offsets of the labels of `wire` that are proper ancestors of it and
    /// strictly below the suffix, or `None` if `wire` is not strictly below
    /// the suffix.
    fn ancestor_offsets(&self, wire: &[u8]) -> Option<Vec<usize>> {
        let mut offsets = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            if wire.len() - at == self.suffix.len() {
                if wire[at..] == self.suffix[..] && at > 0 {
                    // The first offset is the name itself, not an ancestor.
                    offsets.remove(0);
                    return Some(offsets);
                }
                return None;
            }
            offsets.push(at);
            at += 1 + wire[at] as usize;
        }
        None
    }

    /// Checks that `name` may be stored and returns its wire form with the
    /// offsets of its empty-non-terminal ancestors.
    fn prepare(&self, name: &str) -> Result<(Vec<u8>, Vec<usize>), NameError> {
        let wire = to_wire(name)?;
        let offsets = self
            .ancestor_offsets(&wire)
            .ok_or(NameError::OutsideSuffix)?;
        Ok((wire, offsets))
    }

    fn count_ancestors(&mut self, wire: &[u8], offsets: &[usize], up: bool) {
        for &at in offsets {
            let key = &wire[at..];
            if up {
                *self.ancestors.entry(key.into()).or_insert(0) += 1;
            } else if let Some(count) = self.ancestors.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    self.ancestors.remove(key);
                }
            }
        }
    }

    /// Replaces every name. Invalid or outside names are skipped and
    /// returned with the reason, so one bad name from the coordinator does
    /// not take every other name down with it. A name listed twice gets the
    /// union of its addresses.
    pub fn set_names<N, A>(
        &mut self,
        names: impl IntoIterator<Item = (N, A)>,
    ) -> Vec<(String, NameError)>
    where
        N: AsRef<str>,
        A: IntoIterator<Item = IpAddr>,
    {
        self.names.clear();
        self.ancestors.clear();
        let mut rejected = Vec::new();
        for (name, addrs) in names {
            let name = name.as_ref();
            match self.prepare(name) {
                Ok((wire, offsets)) => match self.names.get_mut(&wire[..]) {
                    Some(entry) => entry.add(addrs),
                    None => {
                        self.count_ancestors(&wire, &offsets, true);
                        self.names
                            .insert(wire.into_boxed_slice(), Entry::from_addrs(addrs));
                    }
                },
                Err(e) => rejected.push((name.to_owned(), e)),
            }
        }
        rejected
    }

    /// Inserts `name` or replaces its addresses.
    pub fn upsert(
        &mut self,
        name: &str,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(), NameError> {
        let (wire, offsets) = self.prepare(name)?;
        let entry = Entry::from_addrs(addrs);
        match self.names.get_mut(&wire[..]) {
            Some(existing) => *existing = entry,
            None => {
                self.count_ancestors(&wire, &offsets, true);
                self.names.insert(wire.into_boxed_slice(), entry);
            }
        }
        Ok(())
    }

    /// Removes `name`; true if it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let Ok((wire, offsets)) = self.prepare(name) else {
            return false;
        };
        if self.names.remove(&wire[..]).is_none() {
            return false;
        }
        self.count_ancestors(&wire, &offsets, false);
        true
    }

    /// Classifies a lowercase wire-form name whose label starts are
    /// `labels` (the root label's offset last).
    pub fn lookup(&self, lower: &[u8], labels: &[u8]) -> Lookup<'_> {
        // The suffix can only start at a label boundary, and the name must
        // be at least as long as it.
        let Some(start) = lower.len().checked_sub(self.suffix.len()) else {
            return Lookup::Outside;
        };
        if !labels.iter().any(|&at| at as usize == start) || lower[start..] != self.suffix[..] {
            return Lookup::Outside;
        }
        let node = if start == 0 {
            Node::Apex
        } else if let Some(entry) = self.names.get(lower) {
            Node::Name(entry)
        } else if self.ancestors.contains_key(lower) {
            Node::EmptyNonTerminal
        } else {
            Node::NxDomain
        };
        Lookup::Inside {
            suffix_at: start,
            node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels_of(wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            out.push(at as u8);
            at += 1 + wire[at] as usize;
        }
        out
    }

    fn node(table: &Table, name: &str) -> String {
        let wire = to_wire(name).unwrap();
        match table.lookup(&wire, &labels_of(&wire)) {
            Lookup::Outside => "outside".into(),
            Lookup::Inside { node, .. } => match node {
                Node::Apex => "apex".into(),
                Node::Name(e) => format!("name {:?} {:?}", e.v4, e.v6),
                Node::EmptyNonTerminal => "ent".into(),
                Node::NxDomain => "nx".into(),
            },
        }
    }

    #[test]
    fn wire_form_is_lowercase_and_trailing_dot_optional() {
        assert_eq!(to_wire("Ab.C").unwrap(), b"\x02ab\x01c\x00");
        assert_eq!(to_wire("ab.c.").unwrap(), b"\x02ab\x01c\x00");
        assert_eq!(to_wire("").unwrap(), b"\x00");
        assert_eq!(to_wire("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(to_wire(&"a".repeat(64)), Err(NameError::LabelTooLong));
        let long = vec!["abcdefghi"; 26].join(".");
        assert_eq!(to_wire(&long), Err(NameError::NameTooLong));
        assert_eq!(to_wire("é.warren"), Err(NameError::NotAscii));
        assert!(matches!(Table::new("."), Err(NameError::RootSuffix)));
    }

    #[test]
    fn ancestors_are_empty_non_terminals_until_their_last_name_goes() {
        let mut t = Table::new("warren").unwrap();
        let a: IpAddr = "100.64.0.5".parse().unwrap();
        t.upsert("main.ws.alice.warren", [a]).unwrap();
        t.upsert("db.ws.alice.warren", [a]).unwrap();
        assert_eq!(node(&t, "ws.alice.warren"), "ent");
        assert_eq!(node(&t, "ALICE.warren."), "ent");
        assert_eq!(node(&t, "warren"), "apex");
        assert_eq!(node(&t, "bob.warren"), "nx");
        assert_eq!(node(&t, "x.main.ws.alice.warren"), "nx");
        assert_eq!(node(&t, "warren.com"), "outside");
        assert_eq!(node(&t, "xwarren"), "outside");
        assert!(t.remove("main.ws.alice.warren"));
        assert_eq!(node(&t, "alice.warren"), "ent");
        assert!(t.remove("DB.ws.alice.warren."));
        assert!(!t.remove("db.ws.alice.warren"));
        assert_eq!(node(&t, "alice.warren"), "nx");
        assert_eq!(node(&t, "ws.alice.warren"), "nx");
        assert!(t.ancestors.is_empty());
    }

    #[test]
    fn set_names_replaces_merges_duplicates_and_skips_bad_names() {
        let mut t = Table::new("warren").unwrap();
        let a: IpAddr = "100.64.0.5".parse().unwrap();
        let b: IpAddr = "fd00::5".parse().unwrap();
        t.upsert("old.ws.alice.warren", [a]).unwrap();
        let rejected = t.set_names([
            ("api.warren", vec![a]),
            ("API.warren", vec![b, a]),
            ("elsewhere.com", vec![a]),
            ("warren", vec![a]),
        ]);
        assert_eq!(
            rejected,
            vec![
                ("elsewhere.com".to_string(), NameError::OutsideSuffix),
                ("warren".to_string(), NameError::OutsideSuffix)
            ]
        );
        assert_eq!(t.len(), 1);
        assert_eq!(node(&t, "old.ws.alice.warren"), "nx");
        assert_eq!(node(&t, "ws.alice.warren"), "nx");
        assert_eq!(node(&t, "api.warren"), "name [100.64.0.5] [fd00::5]");
    }

    #[test]
    fn upsert_replaces_addresses() {
        let mut t = Table::new("dev.example").unwrap();
        t.upsert("a.dev.example", ["10.0.0.1".parse().unwrap()])
            .unwrap();
        t.upsert("A.dev.example", ["10.0.0.2".parse().unwrap()])
            .unwrap();
        assert_eq!(node(&t, "a.dev.example"), "name [10.0.0.2] []");
        assert_eq!(node(&t, "dev.example"), "apex");
        assert_eq!(node(&t, "example"), "outside");
        assert_eq!(t.upsert("a.example", []), Err(NameError::OutsideSuffix));
    }
}
