//! A bounded memory of what was seen last: whether a key is new, over the
//! most recent [`Recent::KEEP`] keys. The controller counts each run's end
//! once (its metrics) and sends each run's spans once (its traces) with it:
//! a reconcile that works from a stale cache can end a run again.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// The most recent keys seen, at most [`Recent::KEEP`].
#[derive(Debug)]
pub struct Recent<K> {
    seen: HashSet<K>,
    order: VecDeque<K>,
}

impl<K> Default for Recent<K> {
    fn default() -> Recent<K> {
        Recent {
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Recent<K> {
    /// Far more than the runs a cache can be stale about at once.
    pub const KEEP: usize = 10_000;

    /// Whether `key` was not among the recent keys (it is now); the oldest
    /// is forgotten past [`Recent::KEEP`].
    pub fn first(&mut self, key: K) -> bool {
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > Self::KEEP
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_new_once_until_it_is_forgotten() {
        let mut r = Recent::default();
        assert!(r.first(0));
        assert!(!r.first(0));
        for k in 1..=Recent::<usize>::KEEP {
            assert!(r.first(k));
        }
        // 0 was the oldest: forgotten, new again.
        assert!(r.first(0));
        assert!(!r.first(Recent::<usize>::KEEP));
    }
}
