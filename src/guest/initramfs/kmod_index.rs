//! kmod's binary module indexes (`modules.dep.bin`, `modules.alias.bin`,
//! `modules.symbols.bin`), written from their text forms the way depmod writes them: a
//! prefix-compressed trie of keys whose nodes are laid out children first, big-endian.
//!
//! A value's priority is its module's line number in `modules.dep`, as depmod's is.

use std::collections::{BTreeMap, HashMap};

const INDEX_MAGIC: u32 = 0xB007_F457;
const INDEX_VERSION: u32 = 0x0002_0001;
const NODE_PREFIX: u32 = 0x8000_0000;
const NODE_VALUES: u32 = 0x4000_0000;
const NODE_CHILDS: u32 = 0x2000_0000;

#[derive(Default)]
struct Node {
    prefix: Vec<u8>,
    children: BTreeMap<u8, Box<Node>>,
    /// (priority, value), ascending priority; a later equal-priority value goes first.
    values: Vec<(u32, Vec<u8>)>,
}

/// A trie of key → values, serialised in kmod's index format.
#[derive(Default)]
pub struct Index {
    root: Node,
}

impl Index {
    pub fn insert(&mut self, key: &str, value: &str, priority: u32) {
        let key = key.as_bytes();
        let mut node = &mut self.root;
        let mut i = 0;
        loop {
            let j = node.prefix.iter().zip(&key[i..]).take_while(|(a, b)| a == b).count();
            if j < node.prefix.len() {
                // Split: the node keeps prefix[..j]; a child at prefix[j] takes the rest.
                let ch = node.prefix[j];
                let child = Node {
                    prefix: node.prefix[j + 1..].to_vec(),
                    children: std::mem::take(&mut node.children),
                    values: std::mem::take(&mut node.values),
                };
                node.prefix.truncate(j);
                node.children.insert(ch, Box::new(child));
            }
            i += j;
            if i == key.len() {
                let at = node.values.iter().position(|(p, _)| *p >= priority).unwrap_or(node.values.len());
                node.values.insert(at, (priority, value.as_bytes().to_vec()));
                return;
            }
            let ch = key[i];
            match node.children.entry(ch) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let leaf = Node {
                        prefix: key[i + 1..].to_vec(),
                        children: BTreeMap::new(),
                        values: vec![(priority, value.as_bytes().to_vec())],
                    };
                    slot.insert(Box::new(leaf));
                    return;
                }
                std::collections::btree_map::Entry::Occupied(child) => node = child.into_mut(),
            }
            i += 1;
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&INDEX_MAGIC.to_be_bytes());
        out.extend_from_slice(&INDEX_VERSION.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        let root = write_node(&self.root, &mut out);
        out[8..12].copy_from_slice(&root.to_be_bytes());
        out
    }
}

fn write_node(node: &Node, out: &mut Vec<u8>) -> u32 {
    let mut child_offsets = Vec::new();
    let range = node.children.keys().next().copied().zip(node.children.keys().next_back().copied());
    if let Some((first, last)) = range {
        for c in first..=last {
            child_offsets.push(node.children.get(&c).map_or(0, |n| write_node(n, out)));
        }
    }
    let mut offset = out.len() as u32;
    if !node.prefix.is_empty() {
        out.extend_from_slice(&node.prefix);
        out.push(0);
        offset |= NODE_PREFIX;
    }
    if let Some((first, last)) = range {
        out.push(first);
        out.push(last);
        for o in child_offsets {
            out.extend_from_slice(&o.to_be_bytes());
        }
        offset |= NODE_CHILDS;
    }
    if !node.values.is_empty() {
        out.extend_from_slice(&(node.values.len() as u32).to_be_bytes());
        for (p, v) in &node.values {
            out.extend_from_slice(&p.to_be_bytes());
            out.extend_from_slice(v);
            out.push(0);
        }
        offset |= NODE_VALUES;
    }
    offset
}

/// A module's name from its path: basename without `.ko[.xz|.zst|.gz]`, dashes as underscores.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// depmod's `underscores()`: dashes become underscores outside `[...]` groups; `None` for an
/// unbalanced bracket (depmod skips such aliases).
pub fn underscores(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut in_group = false;
    for c in s.chars() {
        match c {
            '[' if !in_group => in_group = true,
            ']' if in_group => in_group = false,
            ']' => return None,
            '-' if !in_group => {
                out.push('_');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    (!in_group).then_some(out)
}

/// Module name → its line number in `modules.dep`.
pub fn dep_order(modules_dep: &str) -> HashMap<String, u32> {
    modules_dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .enumerate()
        .map(|(i, (path, _))| (module_name(path), i as u32))
        .collect()
}

/// `modules.dep.bin` from `modules.dep`.
pub fn dep_index(modules_dep: &str) -> Vec<u8> {
    let mut idx = Index::default();
    for (i, line) in modules_dep.lines().filter(|l| l.contains(':')).enumerate() {
        let (path, _) = line.split_once(':').expect("has a colon");
        idx.insert(&module_name(path), line, i as u32);
    }
    idx.to_bytes()
}

/// `modules.alias.bin` from `modules.alias` (`alias PATTERN MODULE` lines).
pub fn alias_index(modules_alias: &str, order: &HashMap<String, u32>) -> Vec<u8> {
    let mut idx = Index::default();
    for line in modules_alias.lines() {
        let mut w = line.split_whitespace();
        let (Some("alias"), Some(pattern), Some(module)) = (w.next(), w.next(), w.next()) else { continue };
        let Some(key) = underscores(pattern) else { continue };
        idx.insert(&key, module, order.get(module).copied().unwrap_or(0));
    }
    idx.to_bytes()
}

/// `modules.symbols.bin` from `modules.symbols` (`alias symbol:NAME MODULE` lines).
pub fn symbols_index(modules_symbols: &str, order: &HashMap<String, u32>) -> Vec<u8> {
    let mut idx = Index::default();
    for line in modules_symbols.lines() {
        let mut w = line.split_whitespace();
        let (Some("alias"), Some(symbol), Some(module)) = (w.next(), w.next(), w.next()) else { continue };
        idx.insert(symbol, module, order.get(module).copied().unwrap_or(0));
    }
    idx.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a key back the way libkmod's index_search does (exact keys only).
    fn lookup(bin: &[u8], key: &str) -> Vec<String> {
        let be = |o: usize| u32::from_be_bytes(bin[o..o + 4].try_into().unwrap());
        let mut off = be(8);
        let key = key.as_bytes();
        let mut i = 0;
        loop {
            let mut p = (off & 0x0FFF_FFFF) as usize;
            if off & NODE_PREFIX != 0 {
                let end = p + bin[p..].iter().position(|&b| b == 0).unwrap();
                let prefix = &bin[p..end];
                if !key[i..].starts_with(prefix) {
                    return vec![];
                }
                i += prefix.len();
                p = end + 1;
            }
            let (mut first, mut last, mut kids) = (0u8, 0u8, p);
            if off & NODE_CHILDS != 0 {
                first = bin[p];
                last = bin[p + 1];
                kids = p + 2;
                p = kids + 4 * (last as usize - first as usize + 1);
            }
            if i == key.len() {
                if off & NODE_VALUES == 0 {
                    return vec![];
                }
                let n = be(p) as usize;
                let mut q = p + 4;
                let mut out = vec![];
                for _ in 0..n {
                    q += 4;
                    let end = q + bin[q..].iter().position(|&b| b == 0).unwrap();
                    out.push(String::from_utf8(bin[q..end].to_vec()).unwrap());
                    q = end + 1;
                }
                return out;
            }
            let c = key[i];
            if off & NODE_CHILDS == 0 || c < first || c > last {
                return vec![];
            }
            off = be(kids + 4 * (c - first) as usize);
            if off == 0 {
                return vec![];
            }
            i += 1;
        }
    }

    #[test]
    fn names_and_underscores() {
        assert_eq!(module_name("kernel/drivers/block/xen-blkfront.ko.xz"), "xen_blkfront");
        assert_eq!(module_name("nvme-core.ko"), "nvme_core");
        assert_eq!(
            underscores("pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*").unwrap(),
            "pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*"
        );
        assert_eq!(underscores("xen:vbd-x[a-c]").unwrap(), "xen:vbd_x[a-c]");
        assert_eq!(underscores("bad]"), None);
        assert_eq!(underscores("bad[x"), None);
    }

    #[test]
    fn trie_splits_and_finds_every_key() {
        let dep = "kernel/drivers/nvme/host/nvme-core.ko:\nkernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\nkernel/drivers/net/ethernet/amazon/ena/ena.ko:\nkernel/drivers/block/xen-blkfront.ko:\nkernel/drivers/net/xen-netfront.ko:\n";
        let bin = dep_index(dep);
        assert_eq!(&bin[..8], &[0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1]);
        assert_eq!(lookup(&bin, "nvme"), ["kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko"]);
        assert_eq!(lookup(&bin, "nvme_core"), ["kernel/drivers/nvme/host/nvme-core.ko:"]);
        assert_eq!(lookup(&bin, "xen_netfront"), ["kernel/drivers/net/xen-netfront.ko:"]);
        assert_eq!(lookup(&bin, "ena"), ["kernel/drivers/net/ethernet/amazon/ena/ena.ko:"]);
        assert!(lookup(&bin, "xen").is_empty());
        assert!(lookup(&bin, "nvme_cor").is_empty());

        let order = dep_order(dep);
        let alias = "alias xen:vbd xen_blkfront\nalias pci:v00001D0Fd0000EC20sv*sd*bc*sc*i* ena\nalias xen:vif xen_netfront\nalias pci:v*d*sv*sd*bc01sc08i02* nvme\n";
        let bin = alias_index(alias, &order);
        assert_eq!(lookup(&bin, "xen:vbd"), ["xen_blkfront"]);
        assert_eq!(lookup(&bin, "xen:vif"), ["xen_netfront"]);
        assert_eq!(lookup(&bin, "pci:v*d*sv*sd*bc01sc08i02*"), ["nvme"]);
    }

    #[test]
    fn values_sorted_by_priority() {
        let mut idx = Index::default();
        idx.insert("k", "late", 5);
        idx.insert("k", "early", 1);
        idx.insert("k", "tie", 5);
        assert_eq!(lookup(&idx.to_bytes(), "k"), ["early", "tie", "late"]);
    }
}
