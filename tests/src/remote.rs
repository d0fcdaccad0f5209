//! A server over the network as an [`Api`]: the conformance cases sent through the
//! Rust client ([`ampd_wire::client::Client`]) to `ampd serve`.
//!
//! Writes, batch reads and removes go through the client's typed calls. `get` and
//! `getByLabel` go through [`Client::request`] instead of the typed
//! [`Client::get`], which parses a page into [`ampd_wire::client::Page`] and would drop
//! any field the server should not have sent: the suite compares the server's result
//! exactly.

use crate::server_process::ServerProcess;
use crate::Api;
use ampd_wire::client::Client;
use ampd_wire::frame::{Get, Patterns, Request};
use ampd_wire::{BatchItem, Error, QueryOptions, SetOptions, Value};
use serde_json::{json, Number};

/// A client of a server, and the server when this backend started it.
pub struct Remote {
    /// Dropped first: then the server, which closes the idle connection as it stops.
    pub client: Client,
    server: Option<ServerProcess>,
}

impl Remote {
    /// Starts `bin serve ARGS...` (see [`ServerProcess::start`]) and connects to its
    /// `dev` environment. Panics when either fails.
    pub async fn serve(bin: &str, args: &[&str]) -> Remote {
        let server = ServerProcess::start(bin, args);
        let client = Client::connect(server.addr())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server.addr()));
        Remote {
            client,
            server: Some(server),
        }
    }

    /// A client of a running server, in environment `env` with `token`.
    pub async fn connect(
        addr: &str,
        env: Option<&str>,
        token: Option<&str>,
    ) -> Result<Remote, Error> {
        let client = Client::builder(addr)
            .env(env)
            .token(token)
            .connect()
            .await?;
        Ok(Remote {
            client,
            server: None,
        })
    }

    /// The server this backend started, if it did.
    pub fn server(&self) -> Option<&ServerProcess> {
        self.server.as_ref()
    }

    async fn get_raw(&self, pattern: &str, options: QueryOptions) -> Result<Value, Error> {
        self.client
            .request(Request::Get(Get {
                pattern: Patterns::One(pattern.to_owned()),
                options,
            }))
            .await
    }
}

impl Api for Remote {
    async fn set(&self, key: &str, value: Value, options: SetOptions) -> Result<Value, Error> {
        self.client.set(key, value, options).await
    }

    async fn set_batch(
        &self,
        items: Vec<BatchItem>,
        overwrite: bool,
        meta: bool,
    ) -> Result<Value, Error> {
        self.client.set_batch(items, overwrite, meta).await
    }

    async fn add(
        &self,
        key: &str,
        field: Option<&str>,
        amount: Number,
        meta: bool,
    ) -> Result<Value, Error> {
        self.client.add(key, field, amount, meta).await
    }

    async fn get(&self, pattern: &str, options: QueryOptions) -> Result<Value, Error> {
        self.get_raw(pattern, options).await
    }

    async fn get_many(&self, keys: &[&str], meta: bool) -> Result<Value, Error> {
        self.client.get_many(keys, meta).await
    }

    async fn get_by_label(
        &self,
        label: &str,
        pattern: &str,
        options: QueryOptions,
    ) -> Result<Value, Error> {
        let options = QueryOptions {
            label: Some(label.to_owned()),
            ..options
        };
        self.get_raw(pattern, options).await
    }

    async fn remove(&self, key: &str) -> Result<Value, Error> {
        Ok(json!(self.client.remove(key).await?))
    }

    async fn remove_many(&self, keys: &[&str]) -> Result<Value, Error> {
        Ok(json!(self.client.remove_many(keys).await?))
    }
}
