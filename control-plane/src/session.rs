//! Server-side sessions of the web view: a random id in an HttpOnly cookie
//! maps to a session with an expiry and its own CSRF token. Only the
//! SHA-256 of an id is kept, the number of sessions is bounded, and a
//! session ends at sign-out, after its lifetime, or after being idle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::secrets::{constant_time_eq, hash_secret, random_token};

/// Default longest life of a session, however active.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// A session unused this long ends.
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The most sessions at once; signing in past it ends the oldest.
pub const MAX_SESSIONS: usize = 256;

/// A session just created: what goes in the cookie and in forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// The session id, for the cookie (never stored).
    pub id: String,
    /// The CSRF token of its forms.
    pub csrf: String,
}

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    created: Instant,
    last_used: Instant,
}

/// The sessions of signed-in administrators.
#[derive(Debug)]
pub struct SessionStore {
    ttl: Duration,
    idle: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

impl SessionStore {
    /// Sessions that live at most `ttl` and `idle` without use.
    pub fn new(ttl: Duration, idle: Duration) -> Self {
        Self {
            ttl,
            idle,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        match self.sessions.lock() {
            Ok(sessions) => sessions,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn alive(&self, session: &Session, now: Instant) -> bool {
        now.saturating_duration_since(session.created) < self.ttl
            && now.saturating_duration_since(session.last_used) < self.idle
    }

    /// Starts a session at `now`.
    pub fn create(&self, now: Instant) -> Result<NewSession, StoreError> {
        let session = NewSession {
            id: random_token()?,
            csrf: random_token()?,
        };
        let mut sessions = self.lock();
        sessions.retain(|_, s| self.alive(s, now));
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => sessions.remove(&key),
                None => break,
            };
        }
        sessions.insert(
            hash_secret(&session.id),
            Session {
                csrf: session.csrf.clone(),
                created: now,
                last_used: now,
            },
        );
        Ok(session)
    }

    /// The CSRF token of the live session `id`, marking it used at `now`;
    /// `None` for an unknown or ended session (which is then forgotten).
    pub fn touch(&self, id: &str, now: Instant) -> Option<String> {
        let key = hash_secret(id);
        let mut sessions = self.lock();
        let session = sessions.get_mut(&key)?;
        if !self.alive(session, now) {
            sessions.remove(&key);
            return None;
        }
        session.last_used = now;
        Some(session.csrf.clone())
    }

    /// Whether `candidate` is the CSRF token of the live session `id`
    /// (compared in constant time).
    pub fn check_csrf(&self, id: &str, candidate: &str, now: Instant) -> bool {
        self.touch(id, now)
            .is_some_and(|csrf| constant_time_eq(csrf.as_bytes(), candidate.as_bytes()))
    }

    /// Ends session `id`.
    pub fn end(&self, id: &str) {
        self.lock().remove(&hash_secret(id));
    }

    /// Sessions held now (ended ones may still count until the next
    /// sign-in sweeps them).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_by_age_and_idleness_and_end_at_sign_out() {
        let store = SessionStore::new(Duration::from_secs(100), Duration::from_secs(30));
        let t0 = Instant::now();
        let s = store.create(t0).unwrap();
        assert_ne!(s.id, s.csrf);
        assert_eq!(
            store.touch(&s.id, t0 + Duration::from_secs(20)),
            Some(s.csrf.clone())
        );
        assert!(store.check_csrf(&s.id, &s.csrf, t0 + Duration::from_secs(40)));
        assert!(!store.check_csrf(&s.id, "forged", t0 + Duration::from_secs(41)));
        assert!(!store.check_csrf("unknown", &s.csrf, t0 + Duration::from_secs(41)));
        // Idle for 30 s: gone.
        assert_eq!(store.touch(&s.id, t0 + Duration::from_secs(72)), None);
        // Used every 20 s, it still ends at its lifetime.
        let s = store.create(t0).unwrap();
        for step in 1..5 {
            assert!(
                store
                    .touch(&s.id, t0 + Duration::from_secs(step * 20))
                    .is_some()
            );
        }
        assert_eq!(store.touch(&s.id, t0 + Duration::from_secs(100)), None);
        let s = store.create(t0).unwrap();
        store.end(&s.id);
        assert_eq!(store.touch(&s.id, t0), None);
    }

    #[test]
    fn the_number_of_sessions_is_bounded_and_the_oldest_goes() {
        let store = SessionStore::new(DEFAULT_SESSION_TTL, SESSION_IDLE_TIMEOUT);
        let t0 = Instant::now();
        let first = store.create(t0).unwrap();
        let later: Vec<_> = (1..=MAX_SESSIONS)
            .map(|i| store.create(t0 + Duration::from_millis(i as u64)).unwrap())
            .collect();
        assert_eq!(store.len(), MAX_SESSIONS);
        assert_eq!(store.touch(&first.id, t0 + Duration::from_secs(1)), None);
        assert!(
            store
                .touch(&later[0].id, t0 + Duration::from_secs(1))
                .is_some()
        );
    }
}
