//! Who may call: bearer tokens named in the config file, kept there only as SHA-256 hashes, each
//! with the scopes it grants. A token is compared by its hash against every configured one in
//! constant time, and never logged.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// What a token may do. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scope {
    /// See runs, their progress and the metrics
    Read,
    Export,
    Import,
    Rollback,
    Admin,
}

impl Scope {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Export => "export",
            Scope::Import => "import",
            Scope::Rollback => "rollback",
            Scope::Admin => "admin",
        }
    }
}

/// `ferry-serve.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where to listen (the command line's `--listen` wins).
    pub listen: Option<String>,
    /// The state file (the command line's `--state` wins).
    pub state: Option<std::path::PathBuf>,
    /// Exports and imports running at once, at most [default: 4].
    pub max_runs: Option<usize>,
    /// The largest stream an import takes, in bytes [default: 1 GiB].
    pub max_upload_bytes: Option<u64>,
    /// The stores requests may name, by name: `app = "sqlite:app.db"`. A request never gives
    /// an address itself.
    #[serde(default)]
    pub stores: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenEntry>,
    /// Where to post alerts, and when.
    pub alerts: Option<super::alerts::AlertConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenEntry {
    pub name: String,
    /// The token's SHA-256, hex (`ferry serve --new-token NAME` prints it).
    pub sha256: String,
    pub scopes: Vec<Scope>,
    /// When set, the only entities (`users:id=42`) this token may export.
    pub entities: Option<Vec<String>>,
    /// When set, the only stores (by name) this token may use.
    pub stores: Option<Vec<String>>,
}

impl Config {
    /// Read and check the config file: every token's hash is 64 hex digits and its name unique.
    pub(crate) fn read(path: &Path) -> Result<Config> {
        let bad = |m: String| Error::usage(format!("{}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let config: Config = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut names = std::collections::BTreeSet::new();
        for t in &config.tokens {
            if hex::decode(&t.sha256).map_or(true, |h| h.len() != 32) {
                return Err(bad(format!(
                    "token {:?}: sha256 is the token's SHA-256 as 64 hex digits (ferry serve --new-token {} prints one)",
                    t.name, t.name
                )));
            }
            if !names.insert(&t.name) {
                return Err(bad(format!("two tokens are named {:?}", t.name)));
            }
            if t.scopes.is_empty() {
                return Err(bad(format!("token {:?} has no scopes: it could do nothing", t.name)));
            }
            for e in t.entities.iter().flatten() {
                crate::stage::entity::Root::parse(e).map_err(|_| {
                    bad(format!(
                        "token {:?}: entity {e:?} is not TABLE:COLUMN=VALUE (users:id=42)",
                        t.name
                    ))
                })?;
            }
        }
        for (t, name) in config
            .tokens
            .iter()
            .flat_map(|t| t.stores.iter().flatten().map(move |n| (t, n)))
        {
            if !config.stores.contains_key(name) {
                return Err(bad(format!("token {:?}: no store {name:?} under [stores]", t.name)));
            }
        }
        for (name, address) in &config.stores {
            crate::address::Address::parse(address).map_err(|e| bad(format!("store {name:?}: {e}")))?;
        }
        if let Some(a) = &config.alerts
            && reqwest::Url::parse(&a.webhook).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
        {
            return Err(bad("[alerts] webhook is an http:// or https:// URL".into()));
        }
        if config.max_runs == Some(0) {
            return Err(bad("max_runs is at least 1".into()));
        }
        Ok(config)
    }
}

/// A caller, once known.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub name: String,
    scopes: Vec<Scope>,
    entities: Option<Vec<String>>,
    stores: Option<Vec<String>>,
}

impl Caller {
    pub(crate) fn may(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| *s == scope || *s == Scope::Admin)
    }

    /// Whether this caller may export `root` (`None`: whole tables), given its entities.
    pub(crate) fn may_export(&self, root: Option<&str>) -> bool {
        match (&self.entities, root) {
            (None, _) => true,
            (Some(allowed), Some(root)) => allowed.iter().any(|a| a == root),
            (Some(_), None) => false,
        }
    }

    /// Whether this caller may name the store `name`.
    pub(crate) fn may_use(&self, name: &str) -> bool {
        self.stores.as_ref().is_none_or(|s| s.iter().any(|n| n == name))
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }
}

/// The configured tokens.
pub(crate) struct Tokens {
    known: Vec<([u8; 32], Caller)>,
}

/// Why a caller was not let in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoToken,
    UnknownToken,
}

impl Tokens {
    pub(crate) fn new(entries: &[TokenEntry]) -> Tokens {
        let known = entries
            .iter()
            .map(|t| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&hex::decode(&t.sha256).expect("checked when the config was read"));
                let caller = Caller {
                    name: t.name.clone(),
                    scopes: t.scopes.clone(),
                    entities: t.entities.clone(),
                    stores: t.stores.clone(),
                };
                (hash, caller)
            })
            .collect();
        Tokens { known }
    }

    pub(crate) fn len(&self) -> usize {
        self.known.len()
    }

    /// The caller an `Authorization` header names. Every configured hash is compared, each in
    /// constant time, whichever matches.
    pub(crate) fn caller(&self, authorization: Option<&[u8]>) -> std::result::Result<&Caller, Refusal> {
        let token = authorization
            .and_then(|h| h.strip_prefix(b"Bearer ").or_else(|| h.strip_prefix(b"bearer ")))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::NoToken)?;
        let hash: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for (known, caller) in &self.known {
            let differ = known.iter().zip(&hash).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if differ == 0 {
                found = Some(caller);
            }
        }
        found.ok_or(Refusal::UnknownToken)
    }
}

/// A new random token (244 random bits from the system's generator, two UUIDv4s), and its hash for the config file.
pub(crate) fn new_token() -> (String, String) {
    let token = format!(
        "ferry_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    (token, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(scopes: Vec<Scope>) -> (String, Tokens) {
        let (token, hash) = new_token();
        let entry = TokenEntry {
            name: "ops".into(),
            sha256: hash,
            scopes,
            entities: None,
            stores: None,
        };
        (token, Tokens::new(&[entry]))
    }

    #[test]
    fn a_bearer_token_is_known_by_its_hash_and_grants_its_scopes() {
        let (token, t) = tokens(vec![Scope::Read]);
        let caller = t.caller(Some(format!("Bearer {token}").as_bytes())).unwrap();
        assert_eq!(caller.name, "ops");
        assert!(caller.may(Scope::Read));
        assert!(!caller.may(Scope::Import));
        let (token, t) = tokens(vec![Scope::Admin]);
        assert!(
            t.caller(Some(format!("Bearer {token}").as_bytes()))
                .unwrap()
                .may(Scope::Rollback)
        );
    }

    #[test]
    fn no_token_or_another_is_refused() {
        let (token, t) = tokens(vec![Scope::Read]);
        assert_eq!(t.caller(None).unwrap_err(), Refusal::NoToken);
        assert_eq!(t.caller(Some(b"Bearer ")).unwrap_err(), Refusal::NoToken);
        assert_eq!(
            t.caller(Some(token.as_bytes())).unwrap_err(),
            Refusal::NoToken,
            "no Bearer"
        );
        let other = format!("Bearer {}x", token);
        assert_eq!(t.caller(Some(other.as_bytes())).unwrap_err(), Refusal::UnknownToken);
        let none = Tokens::new(&[]);
        assert_eq!(
            none.caller(Some(format!("Bearer {token}").as_bytes())).unwrap_err(),
            Refusal::UnknownToken
        );
    }

    #[test]
    fn new_tokens_differ_and_are_stored_as_their_hash() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), "ferry_".len() + 64);
        assert_eq!(ha, hex::encode(Sha256::digest(a.as_bytes())));
    }
}
