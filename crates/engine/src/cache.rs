//! A small in-process cache whose entries are read again after a fixed time: for lookups every
//! request makes (API keys, messaging policies) whose changes may reach other processes a few
//! seconds late.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries past `ttl` are misses; beyond `MAX_ENTRIES` the expired ones are swept on insert.
pub(crate) struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

const MAX_ENTRIES: usize = 10_000;

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        TtlCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        entries.get(key).filter(|(_, at)| at.elapsed() < self.ttl).map(|(value, _)| value.clone())
    }

    pub(crate) fn put(&self, key: K, value: V) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() > MAX_ENTRIES {
                entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
            }
            entries.insert(key, (value, Instant::now()));
        }
    }

    pub(crate) fn forget(&self, key: &K) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_forgotten() {
        let cache = TtlCache::new(Duration::from_millis(30));
        cache.put("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        cache.forget(&"a");
        assert_eq!(cache.get(&"a"), None);
        cache.put("b", 2);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&"b"), None, "expired");
    }
}
