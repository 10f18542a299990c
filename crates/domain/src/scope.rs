//! API key scopes: what a key may do.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    /// Send and cancel messages.
    #[serde(rename = "messages:write")]
    MessagesWrite,
    /// Read messages and their events.
    #[serde(rename = "messages:read")]
    MessagesRead,
    /// Everything, including API keys and channel accounts.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::MessagesWrite, Scope::MessagesRead, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::MessagesWrite => "messages:write",
            Scope::MessagesRead => "messages:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

/// The set of scopes of one key. `admin` implies every other scope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(mut scopes: Vec<Scope>) -> Self {
        scopes.sort();
        scopes.dedup();
        Scopes(scopes)
    }

    pub fn allows(&self, needed: Scope) -> bool {
        self.0.iter().any(|s| *s == needed || *s == Scope::Admin)
    }

    pub fn as_slice(&self) -> &[Scope] {
        &self.0
    }

    /// Space-separated, as stored.
    pub fn to_stored(&self) -> String {
        self.0.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    }

    pub fn from_stored(s: &str) -> Self {
        Scopes::new(s.split_whitespace().filter_map(Scope::parse).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_implies_everything_and_storage_round_trips() {
        let admin = Scopes::new(vec![Scope::Admin]);
        assert!(admin.allows(Scope::MessagesRead));
        let read = Scopes::from_stored("messages:read bogus");
        assert!(read.allows(Scope::MessagesRead));
        assert!(!read.allows(Scope::MessagesWrite));
        assert_eq!(Scopes::from_stored(&read.to_stored()), read);
    }
}
