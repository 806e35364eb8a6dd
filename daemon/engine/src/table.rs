//! The in-memory exception table: origin chunk → COW chunk.
//!
//! Built for a million exceptions in at most 16 bytes each: a sorted base of parallel arrays
//! (origin chunks as u64, COW chunks as u32 while they fit, u64 otherwise) built once when a
//! store is opened, plus a small ordered delta of recent additions merged into the base when
//! it grows past a bound. Removals (merge) leave a tombstone (COW chunk 0, which is never a data
//! chunk) that compaction drops.

use std::collections::BTreeMap;

/// Delta entries kept before they are merged into the sorted base.
const DELTA_LIMIT: usize = 4096;

#[derive(Debug, Clone)]
enum NewChunks {
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

impl NewChunks {
    fn get(&self, i: usize) -> u64 {
        match self {
            NewChunks::Narrow(v) => u64::from(v[i]),
            NewChunks::Wide(v) => v[i],
        }
    }
    fn set(&mut self, i: usize, value: u64) {
        match self {
            NewChunks::Narrow(v) => match u32::try_from(value) {
                Ok(n) => v[i] = n,
                Err(_) => {
                    let mut wide: Vec<u64> = v.iter().map(|&n| u64::from(n)).collect();
                    wide[i] = value;
                    *self = NewChunks::Wide(wide);
                }
            },
            NewChunks::Wide(v) => v[i] = value,
        }
    }
    fn from_values(values: impl ExactSizeIterator<Item = u64> + Clone, max: u64) -> NewChunks {
        if u32::try_from(max).is_ok() {
            let mut v = Vec::with_capacity(values.len());
            v.extend(values.map(|n| n as u32));
            NewChunks::Narrow(v)
        } else {
            let mut v = Vec::with_capacity(values.len());
            v.extend(values);
            NewChunks::Wide(v)
        }
    }
    fn heap_bytes(&self) -> usize {
        match self {
            NewChunks::Narrow(v) => v.capacity() * 4,
            NewChunks::Wide(v) => v.capacity() * 8,
        }
    }
}

/// Maps origin chunks to COW chunks.
#[derive(Debug, Clone)]
pub struct ExceptionTable {
    olds: Vec<u64>,
    news: NewChunks,
    /// Tombstones in the base.
    dead: usize,
    delta: BTreeMap<u64, u64>,
    live: u64,
}

impl Default for ExceptionTable {
    fn default() -> Self {
        ExceptionTable {
            olds: Vec::new(),
            news: NewChunks::Narrow(Vec::new()),
            dead: 0,
            delta: BTreeMap::new(),
            live: 0,
        }
    }
}

impl ExceptionTable {
    /// Builds a table from pairs sorted by origin chunk without duplicates.
    pub fn from_sorted(pairs: &[(u64, u64)]) -> ExceptionTable {
        let mut olds = Vec::with_capacity(pairs.len());
        olds.extend(pairs.iter().map(|p| p.0));
        let max = pairs.iter().map(|p| p.1).max().unwrap_or(0);
        let news = NewChunks::from_values(pairs.iter().map(|p| p.1), max);
        ExceptionTable { olds, news, dead: 0, delta: BTreeMap::new(), live: pairs.len() as u64 }
    }

    pub fn len(&self) -> u64 {
        self.live
    }

    pub fn get(&self, old: u64) -> Option<u64> {
        if let Some(&new) = self.delta.get(&old) {
            return Some(new);
        }
        let i = self.olds.binary_search(&old).ok()?;
        match self.news.get(i) {
            0 => None,
            new => Some(new),
        }
    }

    /// Adds an exception for a chunk that has none.
    pub fn insert(&mut self, old: u64, new: u64) {
        debug_assert!(new != 0 && self.get(old).is_none());
        self.delta.insert(old, new);
        self.live += 1;
        if self.delta.len() >= DELTA_LIMIT {
            self.compact();
        }
    }

    /// Removes an exception; returns whether there was one.
    pub fn remove(&mut self, old: u64) -> bool {
        if self.delta.remove(&old).is_some() {
            self.live -= 1;
            return true;
        }
        if let Ok(i) = self.olds.binary_search(&old) {
            if self.news.get(i) != 0 {
                self.news.set(i, 0);
                self.dead += 1;
                self.live -= 1;
                if self.dead > 1024 && self.dead * 2 > self.olds.len() {
                    self.compact();
                }
                return true;
            }
        }
        false
    }

    /// Merges the delta into the base and drops tombstones.
    pub fn compact(&mut self) {
        let delta = std::mem::take(&mut self.delta);
        let n = self.live as usize;
        let mut pairs: Vec<(u64, u64)> = Vec::with_capacity(n);
        let mut d = delta.into_iter().peekable();
        for i in 0..self.olds.len() {
            let old = self.olds[i];
            while let Some(&(dk, dv)) = d.peek() {
                if dk < old {
                    pairs.push((dk, dv));
                    d.next();
                } else {
                    break;
                }
            }
            let new = self.news.get(i);
            if d.peek().map(|p| p.0) == Some(old) {
                // Re-added after a removal: the delta entry wins over the tombstone.
                if let Some(p) = d.next() {
                    pairs.push(p);
                }
            } else if new != 0 {
                pairs.push((old, new));
            }
        }
        pairs.extend(d);
        let live = self.live;
        *self = ExceptionTable::from_sorted(&pairs);
        self.live = live;
    }

    /// Heap bytes held, for the memory benchmark.
    pub fn heap_bytes(&self) -> usize {
        // A BTreeMap node holds 11 (u64, u64) pairs plus bookkeeping: ~ 24 bytes per entry.
        self.olds.capacity() * 8 + self.news.heap_bytes() + self.delta.len() * 24
    }

    /// Every live exception in origin-chunk order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut base = (0..self.olds.len())
            .map(move |i| (self.olds[i], self.news.get(i)))
            .filter(|p| p.1 != 0)
            .peekable();
        let mut delta = self.delta.iter().map(|(&k, &v)| (k, v)).peekable();
        std::iter::from_fn(move || match (base.peek(), delta.peek()) {
            (Some(b), Some(d)) => {
                if d.0 <= b.0 {
                    if d.0 == b.0 {
                        base.next();
                    }
                    delta.next()
                } else {
                    base.next()
                }
            }
            (Some(_), None) => base.next(),
            (None, _) => delta.next(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn behaves_like_a_map_across_compactions() {
        let mut t = ExceptionTable::from_sorted(&[(1, 10), (5, 11), (9, 12)]);
        let mut model: BTreeMap<u64, u64> = [(1, 10), (5, 11), (9, 12)].into_iter().collect();
        let mut x: u64 = 7;
        for step in 0..20_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let old = (x >> 33) % 3000;
            if x & 1 == 0 {
                if let std::collections::btree_map::Entry::Vacant(v) = model.entry(old) {
                    t.insert(old, step + 100);
                    v.insert(step + 100);
                }
            } else {
                assert_eq!(t.remove(old), model.remove(&old).is_some());
            }
            if step % 997 == 0 {
                t.compact();
            }
            assert_eq!(t.get(old), model.get(&old).copied());
            assert_eq!(t.len(), model.len() as u64);
        }
        let all: Vec<_> = t.iter().collect();
        let want: Vec<_> = model.into_iter().collect();
        assert_eq!(all, want);
    }

    #[test]
    fn wide_chunks_survive() {
        let big = u64::from(u32::MAX) + 5;
        let mut t = ExceptionTable::from_sorted(&[(1, 2), (2, 3)]);
        t.insert(7, big);
        t.compact();
        assert_eq!(t.get(7), Some(big));
        assert_eq!(t.get(1), Some(2));
        assert!(t.remove(2));
        t.compact();
        assert_eq!(t.get(2), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_million_exceptions_fit_in_sixteen_bytes_each() {
        let pairs: Vec<(u64, u64)> = (0..1_000_000u64).map(|i| (i * 3, i + 2)).collect();
        let t = ExceptionTable::from_sorted(&pairs);
        assert!(t.heap_bytes() <= 12 * 1_000_000, "{}", t.heap_bytes());
    }
}
