//! Who may open a session now: a cap on sessions per client address that have not connected yet (an offer costs a
//! peer connection, ICE and DTLS state until it connects or times out). The session budget with its share kept for
//! publishers is [`super::session::SessionRole::fits`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Sessions that have not connected yet, per client address (IPv6 by its /64, as the rate limits count).
#[derive(Debug)]
pub(crate) struct PendingSessions {
    max_per_address: usize,
    counts: Mutex<HashMap<String, usize>>,
}

impl PendingSessions {
    /// At most `max_per_address` pending sessions per address (0: no limit).
    pub(crate) fn new(max_per_address: usize) -> Arc<PendingSessions> {
        Arc::new(PendingSessions {
            max_per_address,
            counts: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a new session from `client`, or None when the address has its fill of pending sessions.
    /// The slot is given back when dropped (the session connected, ended or failed to negotiate).
    pub(crate) fn claim(self: &Arc<Self>, client: IpAddr) -> Option<PendingSlot> {
        let key = crate::auth::rate_limit::ip_key(client);
        let mut counts = self.lock();
        let count = counts.entry(key.clone()).or_insert(0);
        if self.max_per_address > 0 && *count >= self.max_per_address {
            return None;
        }
        *count += 1;
        Some(PendingSlot {
            owner: self.clone(),
            key,
        })
    }

    /// Pending sessions of `client` now.
    #[cfg(test)]
    pub(crate) fn pending(&self, client: IpAddr) -> usize {
        let key = crate::auth::rate_limit::ip_key(client);
        self.lock().get(&key).copied().unwrap_or(0)
    }
}

/// One not-yet-connected session's place in its address's count.
#[derive(Debug)]
pub struct PendingSlot {
    owner: Arc<PendingSessions>,
    key: String,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_slots_are_counted_per_address_and_given_back() {
        let pending = PendingSessions::new(2);
        let a: IpAddr = "192.0.2.1".parse().expect("an address");
        let b: IpAddr = "192.0.2.2".parse().expect("an address");
        let first = pending.claim(a).expect("room");
        let _second = pending.claim(a).expect("room");
        assert!(pending.claim(a).is_none());
        assert!(
            pending.claim(b).is_some(),
            "another address has its own count"
        );
        drop(first);
        assert_eq!(pending.pending(a), 1);
        assert!(pending.claim(a).is_some());
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let pending = PendingSessions::new(1);
        let _slot = pending
            .claim("2001:db8::1".parse().expect("an address"))
            .expect("room");
        assert!(
            pending
                .claim("2001:db8::2".parse().expect("an address"))
                .is_none()
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let pending = PendingSessions::new(0);
        let a: IpAddr = "192.0.2.1".parse().expect("an address");
        let slots: Vec<_> = (0..100).filter_map(|_| pending.claim(a)).collect();
        assert_eq!(slots.len(), 100);
    }
}
