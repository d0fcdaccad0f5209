//! The Rust client (feature `client`, on tokio): the data API over one TCP connection
//! that carries many requests at once.
//!
//! # Layout
//! - [`Client`]: cheap to clone; every clone shares one connection. Each call encodes a
//!   request frame, registers its id, and hands the frame to the connection's writer
//!   task; the reader task decodes responses and completes each call by id, in whatever
//!   order they come. So any number of calls may be in flight from any number of tasks.
//! - Reconnection: a call that finds the connection gone opens a new one (and makes the
//!   handshake again). The calls in flight when a connection breaks fail with
//!   `internal` ("connection lost"); they are not retried, since a write may or may not
//!   have been made.
//! - [`Got`] and [`Page`]: the results of `get`, with [`Page::next`] for the next page.

use crate::frame::{
    self, Ack, Add, Get, Hello, Patterns, Remove, Request, Set, SetBatch, Subscribe, Unsubscribe,
    PROTOCOL_VERSION,
};
use crate::value::Given;
use crate::{page, pattern, BatchItem, Error, ErrorCode, QueryOptions, SetOptions, Value};
use bytes::BytesMut;
use serde_json::Number;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// How to reach a server: address, environment and token.
#[derive(Debug, Clone)]
pub struct Builder {
    addr: String,
    env: Option<String>,
    token: Option<String>,
}

impl Builder {
    /// The environment to use (`None`: the server's default, `dev`).
    pub fn env(mut self, env: Option<&str>) -> Builder {
        self.env = env.map(str::to_owned);
        self
    }

    /// The environment's token.
    pub fn token(mut self, token: Option<&str>) -> Builder {
        self.token = token.map(str::to_owned);
        self
    }

    /// Connects and makes the handshake; fails with the server's refusal
    /// (`unauthorized`, `unknown_environment`, `busy`) or the connection error.
    pub async fn connect(self) -> Result<Client, Error> {
        let client = Client {
            inner: Arc::new(Inner {
                config: self,
                connection: tokio::sync::Mutex::new(None),
                ids: AtomicU32::new(1),
            }),
        };
        client.connection().await?;
        Ok(client)
    }
}

/// A connection to an ampd server. Clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("Client")
            .field("addr", &self.inner.config.addr)
            .field("env", &self.inner.config.env)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: Builder,
    /// The live connection, if any; replaced when it breaks.
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    ids: AtomicU32,
}

/// One TCP connection's shared half: its writer's queue and the calls waiting for an
/// answer.
struct Connection {
    frames: mpsc::UnboundedSender<BytesMut>,
    waiting: Mutex<Waiting>,
}

/// Calls waiting for their response, by request id; `broken` once the connection is
/// gone (then no call may start waiting on it).
#[derive(Default)]
struct Waiting {
    calls: HashMap<u32, oneshot::Sender<Result<Value, Error>>>,
    /// Open subscriptions, by the id of their `subscribe`: where their pushes go.
    subscriptions: HashMap<u32, mpsc::UnboundedSender<Value>>,
    broken: Option<Error>,
}

impl Connection {
    fn is_broken(&self) -> bool {
        self.waiting.lock().map_or(true, |w| w.broken.is_some())
    }

    /// Fails every waiting call with `error` and refuses new ones.
    fn break_with(&self, error: Error) {
        if let Ok(mut w) = self.waiting.lock() {
            for (_, call) in w.calls.drain() {
                let _ = call.send(Err(error.clone()));
            }
            // Their `on` calls see the end of their pushes and return the error.
            w.subscriptions.clear();
            w.broken.get_or_insert(error);
        }
    }
}

fn lost(why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Internal, format!("connection lost: {why}"))
}

impl Client {
    /// A client of the server at `addr` (`host:port`), for [`Builder::connect`].
    pub fn builder(addr: impl Into<String>) -> Builder {
        Builder {
            addr: addr.into(),
            env: None,
            token: None,
        }
    }

    /// Connects to `addr`, environment `dev`, without a token.
    pub async fn connect(addr: impl Into<String>) -> Result<Client, Error> {
        Client::builder(addr).connect().await
    }

    /// The live connection, or a new one.
    async fn connection(&self) -> Result<Arc<Connection>, Error> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_broken()) {
            return Ok(c.clone());
        }
        let c = open(&self.inner.config).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Sends one request and waits for its result, as the API shows it (see
    /// PROTOCOL.md for each request's result).
    pub async fn request(&self, request: Request) -> Result<Value, Error> {
        // A value the server could not decode would cost the connection (a bad frame
        // closes it, failing every call in flight): refuse it here, typed.
        match &request {
            Request::Set(Set {
                value: Given::Value(value),
                ..
            }) => crate::value::check_depth(value)?,
            Request::SetBatch(batch) => {
                for item in &batch.items {
                    crate::value::check_depth(&item.value)?;
                }
            }
            _ => {}
        }
        let connection = self.connection().await?;
        let id = self.inner.ids.fetch_add(1, Ordering::Relaxed);
        self.send(&connection, id, &request).await
    }

    /// Sends `request` as `id` on `connection` and waits for its answer.
    async fn send(
        &self,
        connection: &Connection,
        id: u32,
        request: &Request,
    ) -> Result<Value, Error> {
        let mut frame = BytesMut::new();
        frame::encode_request(id, request, &mut frame)?;
        let (done, answer) = oneshot::channel();
        {
            let mut w = connection.waiting.lock().map_err(|_| lost("poisoned"))?;
            if let Some(e) = &w.broken {
                return Err(e.clone());
            }
            w.calls.insert(id, done);
        }
        if connection.frames.send(frame).is_err() {
            connection.break_with(lost("the writer stopped"));
        }
        answer.await.map_err(|_| lost("the reader stopped"))?
    }

    /// `on(name, filter, handler)`: opens (or joins) the server's subscription `name`
    /// and runs `handler` on each of its events (`{"name", "item", "previous"?,
    /// "expired"?}`, as PROTOCOL.md shows them), acknowledging each once the handler
    /// has finished: `Ok` as handled, `Err` as failed (the server retries it with its
    /// backoff). Events of one namespace come one at a time, in commit order; others
    /// run side by side. Runs until the connection is lost, and returns why: call it
    /// again to resume the subscription where it stands on the server.
    pub async fn on<F, Fut>(&self, name: &str, filter: &[&str], handler: F) -> Result<(), Error>
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        crate::events::Filters::parse(filter)?;
        let connection = self.connection().await?;
        let id = self.inner.ids.fetch_add(1, Ordering::Relaxed);
        let (to, mut pushes) = mpsc::unbounded_channel();
        connection
            .waiting
            .lock()
            .map_err(|_| lost("poisoned"))?
            .subscriptions
            .insert(id, to);
        let subscribe = Request::Subscribe(Subscribe {
            name: name.to_owned(),
            filter: Patterns::Many(filter.iter().map(|f| (*f).to_owned()).collect()),
        });
        if let Err(e) = self.send(&connection, id, &subscribe).await {
            if let Ok(mut w) = connection.waiting.lock() {
                w.subscriptions.remove(&id);
            }
            return Err(e);
        }
        let handler = Arc::new(handler);
        while let Some(push) = pushes.recv().await {
            let Some(delivery) = push.get("delivery").and_then(Value::as_u64) else {
                continue;
            };
            let event = push.get("event").cloned().unwrap_or(Value::Null);
            let (client, handler, connection) = (self.clone(), handler.clone(), connection.clone());
            tokio::spawn(async move {
                let error = handler(event).await.err();
                // On the connection the event came by: the server takes an ack only
                // from there. A lost ack is a lost connection, and the server delivers
                // the event again.
                let id = client.inner.ids.fetch_add(1, Ordering::Relaxed);
                let ack = Request::Ack(Ack { delivery, error });
                let _ = client.send(&connection, id, &ack).await;
            });
        }
        let broken = connection
            .waiting
            .lock()
            .ok()
            .and_then(|w| w.broken.clone());
        Err(broken.unwrap_or_else(|| lost("the subscription ended")))
    }

    /// Removes the server's subscription `name` (its position, what the server kept
    /// for it, its dead letters): whether it existed.
    pub async fn unsubscribe(&self, name: &str) -> Result<bool, Error> {
        let removed = self
            .request(Request::Unsubscribe(Unsubscribe {
                name: name.to_owned(),
            }))
            .await?;
        removed
            .as_bool()
            .ok_or_else(|| unexpected("unsubscribe", &removed))
    }

    /// `set(key, value, options)`: the stored value, or the item with `meta`.
    pub async fn set(&self, key: &str, value: Value, options: SetOptions) -> Result<Value, Error> {
        self.request(Request::Set(Set {
            key: key.to_owned(),
            value: value.into(),
            options,
        }))
        .await
    }

    /// `set([items], {overwrite, meta})`: `{"items": [...]}` in request order.
    pub async fn set_batch(
        &self,
        items: Vec<BatchItem>,
        overwrite: bool,
        meta: bool,
    ) -> Result<Value, Error> {
        self.request(Request::SetBatch(SetBatch {
            items,
            overwrite,
            meta,
        }))
        .await
    }

    /// `get(pattern, options)`: one value (or `null`) for an exact key, a page for every
    /// other form (and for every label query).
    pub async fn get(&self, pattern: &str, options: QueryOptions) -> Result<Got, Error> {
        let page = options.label.is_some() || !pattern::is_exact(pattern);
        let value = self.request(get_request(pattern, &options)).await?;
        if page {
            Ok(Got::Page(Page::from_result(
                self.clone(),
                pattern,
                options,
                value,
            )?))
        } else {
            Ok(Got::Value(value))
        }
    }

    /// `get([keys])`: `{"items": [...]}` in request order, absent keys left out.
    pub async fn get_many(&self, keys: &[&str], meta: bool) -> Result<Value, Error> {
        self.request(Request::Get(Get {
            pattern: Patterns::Many(keys.iter().map(|k| (*k).to_owned()).collect()),
            options: QueryOptions {
                meta,
                ..QueryOptions::default()
            },
        }))
        .await
    }

    /// `getByLabel(label, pattern, options)`: always a page.
    pub async fn get_by_label(
        &self,
        label: &str,
        pattern: &str,
        options: QueryOptions,
    ) -> Result<Page, Error> {
        let options = QueryOptions {
            label: Some(label.to_owned()),
            ..options
        };
        let value = self.request(get_request(pattern, &options)).await?;
        Page::from_result(self.clone(), pattern, options, value)
    }

    /// `add(key, n)` or `add(key, field, n)`: the updated value, or the item with `meta`.
    pub async fn add(
        &self,
        key: &str,
        field: Option<&str>,
        amount: impl Into<Number>,
        meta: bool,
    ) -> Result<Value, Error> {
        self.request(Request::Add(Add {
            key: key.to_owned(),
            field: field.map(str::to_owned),
            amount: amount.into(),
            meta,
        }))
        .await
    }

    /// `remove(key)`: whether an item was removed.
    pub async fn remove(&self, key: &str) -> Result<bool, Error> {
        let removed = self
            .request(Request::Remove(Remove {
                keys: Patterns::One(key.to_owned()),
            }))
            .await?;
        removed
            .as_bool()
            .ok_or_else(|| unexpected("remove", &removed))
    }

    /// `remove([keys])`: for each key, whether an item was removed.
    pub async fn remove_many(&self, keys: &[&str]) -> Result<Vec<bool>, Error> {
        let removed = self
            .request(Request::Remove(Remove {
                keys: Patterns::Many(keys.iter().map(|k| (*k).to_owned()).collect()),
            }))
            .await?;
        removed
            .as_array()
            .and_then(|a| a.iter().map(Value::as_bool).collect())
            .ok_or_else(|| unexpected("remove", &removed))
    }

    /// A round trip that does nothing (the network path alone).
    pub async fn ping(&self) -> Result<(), Error> {
        self.request(Request::Ping).await.map(drop)
    }

    /// The server's counters for this environment.
    pub async fn stats(&self) -> Result<Value, Error> {
        self.request(Request::Stats).await
    }
}

fn get_request(pattern: &str, options: &QueryOptions) -> Request {
    Request::Get(Get {
        pattern: Patterns::One(pattern.to_owned()),
        options: options.clone(),
    })
}

fn unexpected(what: &str, got: &Value) -> Error {
    Error::new(
        ErrorCode::Internal,
        format!("the server answered {what} with {got}"),
    )
}

/// The result of [`Client::get`].
#[derive(Debug)]
pub enum Got {
    /// An exact key's value (or the item with `meta`); `null` when absent.
    Value(Value),
    Page(Page),
}

/// One page of a multi-item `get`.
#[derive(Debug)]
pub struct Page {
    /// `{key, value}` entries (or items with metadata), in the query's order.
    pub items: Vec<Value>,
    /// Present exactly when more items remain.
    pub last_key: Option<String>,
    client: Client,
    pattern: String,
    options: QueryOptions,
}

impl Page {
    fn from_result(
        client: Client,
        pattern: &str,
        options: QueryOptions,
        value: Value,
    ) -> Result<Page, Error> {
        let (items, last_key) = page::from_json(value).map_err(|v| unexpected("get", &v))?;
        Ok(Page {
            items,
            last_key,
            client,
            pattern: pattern.to_owned(),
            options,
        })
    }

    /// The page as the API shows it: `{"items": [...], "lastKey"?: ...}`.
    pub fn to_json(&self) -> Value {
        page::to_json(self.items.clone(), self.last_key.as_deref())
    }

    /// The next page, or `None` after the last one.
    pub async fn next(&self) -> Result<Option<Page>, Error> {
        let Some(start) = &self.last_key else {
            return Ok(None);
        };
        let options = QueryOptions {
            start: Some(start.clone()),
            ..self.options.clone()
        };
        let value = self
            .client
            .request(get_request(&self.pattern, &options))
            .await?;
        Page::from_result(self.client.clone(), &self.pattern, options, value).map(Some)
    }
}

/// Opens a connection: TCP, the handshake, then the reader and writer tasks.
async fn open(config: &Builder) -> Result<Arc<Connection>, Error> {
    let refuse = |e: std::io::Error| {
        Error::new(
            ErrorCode::Internal,
            format!("cannot connect to {}: {e}", config.addr),
        )
    };
    let mut stream = TcpStream::connect(&config.addr).await.map_err(refuse)?;
    stream.set_nodelay(true).map_err(refuse)?;
    let hello = Request::Hello(Hello {
        version: PROTOCOL_VERSION,
        env: config.env.clone(),
        token: config.token.clone(),
    });
    let mut out = BytesMut::new();
    frame::encode_request(0, &hello, &mut out)?;
    stream.write_all(&out).await.map_err(refuse)?;
    let mut input = BytesMut::with_capacity(64 * 1024);
    let welcome = loop {
        if let Some(response) = frame::decode_response(&mut input)? {
            break response;
        }
        if stream.read_buf(&mut input).await.map_err(refuse)? == 0 {
            return Err(lost(
                "the server closed the connection during the handshake",
            ));
        }
    };
    welcome.result?;
    let (reader, writer) = stream.into_split();
    let (frames, queued) = mpsc::unbounded_channel();
    let connection = Arc::new(Connection {
        frames,
        waiting: Mutex::new(Waiting::default()),
    });
    tokio::spawn(write_frames(writer, queued, connection.clone()));
    tokio::spawn(read_responses(reader, input, connection.clone()));
    Ok(connection)
}

/// Writes queued frames, as many as are waiting in one write.
async fn write_frames(
    mut writer: OwnedWriteHalf,
    mut queued: mpsc::UnboundedReceiver<BytesMut>,
    connection: Arc<Connection>,
) {
    while let Some(mut batch) = queued.recv().await {
        while let Ok(more) = queued.try_recv() {
            batch.extend_from_slice(&more);
        }
        if let Err(e) = writer.write_all(&batch).await {
            return connection.break_with(lost(e));
        }
    }
}

/// Reads responses and completes the calls they answer.
async fn read_responses(
    mut reader: OwnedReadHalf,
    mut input: BytesMut,
    connection: Arc<Connection>,
) {
    loop {
        match frame::decode_response(&mut input) {
            Ok(Some(response)) if response.push => {
                let to = connection
                    .waiting
                    .lock()
                    .ok()
                    .and_then(|w| w.subscriptions.get(&response.id).cloned());
                if let (Some(to), Ok(payload)) = (to, response.result) {
                    let _ = to.send(payload);
                }
                continue;
            }
            Ok(Some(response)) => {
                let call = connection
                    .waiting
                    .lock()
                    .ok()
                    .and_then(|mut w| w.calls.remove(&response.id));
                match call {
                    Some(call) => {
                        let _ = call.send(response.result);
                    }
                    // Id 0 answers the connection as a whole: the server refuses it
                    // (bad frame, busy) and closes.
                    None => {
                        let why = response.result.err().unwrap_or_else(|| {
                            lost(format!("an answer to unknown request {}", response.id))
                        });
                        return connection.break_with(why);
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => return connection.break_with(e.into()),
        }
        match reader.read_buf(&mut input).await {
            Ok(0) => return connection.break_with(lost("the server closed the connection")),
            Ok(_) => {}
            Err(e) => return connection.break_with(lost(e)),
        }
    }
}
