//! Environments: isolated databases in one server, each with its own folder, shards and
//! token.
//!
//! A token is kept only as its SHA-256 digest. A presented token is hashed too and the
//! two digests are compared in constant time, so neither the comparison's time nor a
//! token's length tells an attacker anything. Tokens never reach a log line: [`Token`]
//! has no `Debug` or `Display` that shows it.

use crate::events::Subscriptions;
use ampd_engine::{layout, Config, Db, Error, ErrorCode};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Bytes of an environment name: `[A-Za-z0-9_-]`, 1 to this many.
pub const ENV_NAME_LEN_MAX: usize = 64;

/// A token, as its digest.
pub struct Token([u8; 32]);

impl Token {
    pub fn new(token: &str) -> Token {
        Token(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `presented` is this token; constant time in both.
    pub fn admits(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.ct_eq(&presented).into()
    }
}

/// One `--env NAME[=TOKEN]` flag.
pub struct EnvSpec {
    pub name: String,
    pub token: Option<Token>,
}

impl std::str::FromStr for EnvSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<EnvSpec, String> {
        let (name, token) = match s.split_once('=') {
            Some((name, token)) => (name, Some(token)),
            None => (s, None),
        };
        check_name(name)?;
        if token.is_some_and(str::is_empty) {
            return Err(format!("environment {name}: the token is empty"));
        }
        Ok(EnvSpec {
            name: name.to_owned(),
            token: token.map(Token::new),
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= ENV_NAME_LEN_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "environment name {name:?}: use 1 to {ENV_NAME_LEN_MAX} of A-Z a-z 0-9 _ -"
        ))
    }
}

/// An open environment.
pub struct Env {
    pub name: String,
    token: Option<Token>,
    pub db: Db,
    /// Its named event subscriptions.
    pub subscriptions: Arc<Subscriptions>,
}

impl Env {
    /// Opens environment `spec` with `config` (its `data_dir`, if any, is the server's
    /// data directory; the environment lives in a folder of its own below it).
    pub fn open(spec: EnvSpec, mut config: Config, ack_timeout: Duration) -> Result<Env, Error> {
        config.data_dir = config
            .data_dir
            .map(|root| layout::env_dir(&root, &spec.name));
        let db = Db::open(config).map_err(|e| {
            Error::new(
                ErrorCode::Internal,
                format!("environment {}: {e}", spec.name),
            )
        })?;
        let subscriptions = Arc::new(Subscriptions::new(db.clone(), ack_timeout));
        // Before the server listens (on the main thread, never a shard's).
        futures::executor::block_on(subscriptions.resume());
        Ok(Env {
            name: spec.name,
            token: spec.token,
            subscriptions,
            db,
        })
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a client presenting `token` may use this environment. One without a
    /// token admits everybody (only allowed on loopback).
    pub fn admits(&self, token: Option<&str>) -> bool {
        match (&self.token, token) {
            (None, _) => true,
            (Some(t), Some(presented)) => t.admits(presented),
            (Some(_), None) => false,
        }
    }
}

/// Every environment of a server.
pub struct Envs(Vec<Env>);

impl Envs {
    pub fn new(envs: Vec<Env>) -> Envs {
        Envs(envs)
    }

    /// The handshake's decision: the environment's database, or why not. The refusal
    /// says nothing about the environment beyond what the client already named.
    pub fn admit(&self, name: Option<&str>, token: Option<&str>) -> Result<&Env, Error> {
        let name = name.unwrap_or(ampd_wire::frame::ENV_DEFAULT);
        let env = self.0.iter().find(|e| e.name == name).ok_or_else(|| {
            Error::new(
                ErrorCode::UnknownEnvironment,
                format!("no environment named {name:?}"),
            )
        })?;
        if env.admits(token) {
            Ok(env)
        } else {
            Err(Error::new(
                ErrorCode::Unauthorized,
                format!("wrong or missing token for environment {name:?}"),
            ))
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Env> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        let t = Token::new("s3cret");
        assert!(t.admits("s3cret"));
        assert!(!t.admits("s3cre"));
        assert!(!t.admits(""));
        assert!(!t.admits("s3cret "));
    }

    #[test]
    fn env_flags_parse() {
        let e: EnvSpec = "prod=abc".parse().unwrap();
        assert_eq!(e.name, "prod");
        assert!(e.token.is_some_and(|t| t.admits("abc")));
        let e: EnvSpec = "dev".parse().unwrap();
        assert!(e.token.is_none());
        assert!("bad name".parse::<EnvSpec>().is_err());
        assert!("".parse::<EnvSpec>().is_err());
        assert!("x=".parse::<EnvSpec>().is_err());
        assert!("../etc".parse::<EnvSpec>().is_err());
    }
}
