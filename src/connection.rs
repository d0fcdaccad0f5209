//! One client connection, in two parts:
//!
//! - [`Session`]: the protocol, without a socket. Whole frames in the input buffer
//!   become requests (`wire::frame`); reads are answered at once into the output
//!   buffer; writes start and join the session's in-flight set, and their answers are
//!   collected as they finish. It knows the handshake, the order rule and the limits on
//!   what a peer may have pending, and nothing about how bytes move.
//! - [`Connection`]: owns the TCP stream and moves bytes between it and the session,
//!   one turn of [`Connection::run`] at a time: decode, collect answers, write them,
//!   then wait for input, a finished write, a deadline or shutdown.
//!
//! Requests of one connection take effect in the order they were sent: a read that
//! arrives while earlier writes of its connection are in flight waits for them (the
//! frames after it stay undecoded meanwhile), so a pipeline reads its own writes.
//! Writes do not wait for each other: each shard applies them in arrival order, and
//! their answers go out as they finish (matched by request id).
//!
//! Nothing a peer sends makes the session hold more than one frame plus one read of
//! input: more input is read only while the input holds no whole frame, and decoding
//! pauses while [`OUTPUT_FLUSH_BYTES`] of answers or [`IN_FLIGHT_MAX`] writes are
//! pending, so a peer that sends without reading meets TCP's back-pressure.

use crate::command::{self, Reply};
use crate::events::{Member, Push, Subscriptions};
use crate::latency;
use crate::server::{ConnectionSlot, Control, Server, Stop, Sweeper};
use ampd_engine::{Db, Error, ErrorCode};
use ampd_rt::net::TcpStream;
use ampd_wire::frame::{self, Opcode, Request, HEADER_LEN};
use bytes::BytesMut;
use futures::future::Either;
use futures::future::LocalBoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// A buffer grown past this (by a large frame or answer) is let go once it is empty.
const BUFFER_KEEP_BYTES: usize = 64 * 1024;
/// Answers gathered before they are written out (and before more input is decoded).
const OUTPUT_FLUSH_BYTES: usize = 1 << 20;
/// Writes of one connection in flight at once; past it, decoding waits.
const IN_FLIGHT_MAX: usize = 1024;

/// A connection's protocol state between socket reads.
pub struct Session {
    server: Arc<Server>,
    /// This executor's service-time histograms.
    latencies: latency::Shared,
    /// The environment's database, once the handshake has admitted the client.
    db: Option<Db>,
    /// The environment's subscriptions, once admitted.
    subscriptions: Option<Arc<Subscriptions>>,
    /// This connection in its subscriptions, once it has subscribed.
    member: Option<Member>,
    input: BytesMut,
    output: BytesMut,
    in_flight: FuturesUnordered<LocalBoxFuture<'static, Answer>>,
    /// An error frame was queued: close after writing the output.
    closing: bool,
}

impl Drop for Session {
    /// A closed connection leaves its subscriptions; what it had not acknowledged is
    /// delivered again.
    fn drop(&mut self) {
        if let (Some(subs), Some(member)) = (&self.subscriptions, &self.member) {
            subs.leave(member.id);
        }
    }
}

/// A finished write's result, encoded into the output when it is collected (not into
/// a buffer of its own first).
struct Answer {
    id: u32,
    op: Opcode,
    started: Instant,
    reply: Result<Reply, Error>,
}

/// What the front of the input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextFrame {
    /// Not a whole frame yet (or nothing).
    Incomplete,
    /// A whole write (`set`, `add`, `remove`...): it may start beside the writes in
    /// flight.
    Write,
    /// A whole frame of anything else (a read, the handshake, or an opcode the decoder
    /// will refuse): it waits for the writes in flight.
    Other,
}

impl Session {
    pub fn new(server: Arc<Server>, latencies: latency::Shared) -> Session {
        Session {
            server,
            latencies,
            db: None,
            subscriptions: None,
            member: None,
            input: BytesMut::new(),
            output: BytesMut::new(),
            in_flight: FuturesUnordered::new(),
            closing: false,
        }
    }

    fn next_frame(&self) -> NextFrame {
        let Some(header) = self.input.first_chunk::<HEADER_LEN>() else {
            return NextFrame::Incomplete;
        };
        let header = frame::Header::decode(header);
        if self.input.len() - HEADER_LEN < header.len as usize {
            NextFrame::Incomplete
        } else if Opcode::from_u16(header.kind).is_some_and(command::is_write) {
            NextFrame::Write
        } else {
            NextFrame::Other
        }
    }

    /// Whether the next frame must wait for the writes in flight.
    fn blocked(&self) -> bool {
        !self.in_flight.is_empty() && self.next_frame() == NextFrame::Other
    }

    /// Whether decoding may go on: not blocked by the order rule, and below the limits
    /// on pending answers and writes.
    fn may_decode(&self) -> bool {
        !self.closing
            && !self.blocked()
            && self.output.len() < OUTPUT_FLUSH_BYTES
            && self.in_flight.len() < IN_FLIGHT_MAX
    }

    /// Decodes and starts every whole frame in the input, while [`may_decode`](Self::may_decode).
    fn decode_all(&mut self) {
        // One clock read for every request decoded here (see `latency`).
        let mut decoded_at = None;
        while self.may_decode() {
            match frame::decode_request(&mut self.input) {
                Ok(None) => return,
                Ok(Some((id, request))) => {
                    let at = *decoded_at.get_or_insert_with(Instant::now);
                    self.start(id, request, at)
                }
                Err(e) => {
                    self.server.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    let (id, kind) = e.reply_to();
                    frame::encode_error(id, kind, &e.into(), &mut self.output);
                    self.closing = true;
                }
            }
        }
    }

    /// Moves the answers of the writes that have finished into the output.
    fn collect_finished(&mut self) {
        while let Some(Some(answer)) = self.in_flight.next().now_or_never() {
            self.answer(answer);
        }
    }

    /// Encodes a finished write's answer into the output.
    fn answer(&mut self, a: Answer) {
        encode_reply(a.id, a.op as u16, a.reply, &mut self.output);
        latency::record(&self.latencies, a.op, a.started.elapsed());
    }

    /// Lets go of a buffer that a large frame or answer grew, once it is empty.
    fn shrink_buffers(&mut self) {
        for buffer in [&mut self.input, &mut self.output] {
            if buffer.is_empty() && buffer.capacity() > BUFFER_KEEP_BYTES {
                *buffer = BytesMut::new();
            }
        }
    }

    /// Waits for the writes in flight: they stand whether or not anyone hears of them.
    async fn finish_in_flight(&mut self) {
        while self.in_flight.next().await.is_some() {}
    }

    /// Answers or starts one request; `started` is when its input began to be decoded.
    fn start(&mut self, id: u32, request: Request, started: Instant) {
        self.server.stats.requests.fetch_add(1, Ordering::Relaxed);
        let op = request.opcode();
        let kind = op as u16;
        let Some(db) = &self.db else {
            return self.handshake(id, request);
        };
        if let Request::Hello(_) = request {
            return self.refuse(id, kind, "the handshake was already made");
        }
        if let Request::Subscribe(_) | Request::Unsubscribe(_) = request {
            // Opening one may wait for the shards (a new subscription's positions).
            let reply = self.subscribing(id, request);
            self.in_flight.push(Box::pin(async move {
                Answer {
                    id,
                    op,
                    started,
                    reply: reply.await,
                }
            }));
            return;
        }
        if let Request::Ack(_) | Request::DeadLetters(_) = request {
            let reply = self.events(request);
            encode_reply(id, kind, reply, &mut self.output);
            return latency::record(&self.latencies, op, started.elapsed());
        }
        if command::is_write(op) {
            // Removes free memory, so they are always let through.
            if self.server.memory_over() && !matches!(request, Request::Remove(_)) {
                let e = Error::new(
                    ErrorCode::MemoryLimit,
                    format!(
                        "the server is over its memory limit ({} bytes); reads go on, writes wait until memory is freed",
                        self.server.limits.max_memory_bytes.unwrap_or(0)
                    ),
                );
                return frame::encode_error(id, kind, &e, &mut self.output);
            }
            let db = db.clone();
            self.in_flight.push(Box::pin(async move {
                Answer {
                    id,
                    op,
                    started,
                    reply: command::write(&db, request).await,
                }
            }));
        } else {
            let reply = match request {
                Request::Stats => Ok(Reply::Json(self.server.stats_json(db))),
                request => command::read(db, request),
            };
            encode_reply(id, kind, reply, &mut self.output);
            latency::record(&self.latencies, op, started.elapsed());
        }
    }

    /// `subscribe` (the connection joins the subscription; its pushes answer request
    /// `id`) and `unsubscribe`, answered once done.
    fn subscribing(
        &mut self,
        id: u32,
        request: Request,
    ) -> futures::future::BoxFuture<'static, Result<Reply, Error>> {
        let Some(subs) = self.subscriptions.clone() else {
            let e = Error::new(ErrorCode::Internal, "no environment");
            return Box::pin(std::future::ready(Err(e)));
        };
        match request {
            Request::Subscribe(s) => {
                let member = self.member.get_or_insert_with(|| subs.member()).handle();
                let filters = s.filter.as_slice().to_vec();
                Box::pin(async move {
                    subs.subscribe(s.name, filters, member, id).await?;
                    Ok(Reply::Empty)
                })
            }
            Request::Unsubscribe(u) => Box::pin(async move {
                Ok(Reply::Json(ampd_engine::Value::Bool(
                    subs.unsubscribe(&u.name).await?,
                )))
            }),
            other => Box::pin(std::future::ready(Err(Error::new(
                ErrorCode::Internal,
                format!("{} is not a subscription call", other.opcode()),
            )))),
        }
    }

    /// Frames a subscription's event, and every other one already waiting, into the
    /// output: one write for all of them.
    fn push(&mut self, first: Push) {
        let mut next = Some(first);
        while let Some(p) = next {
            frame::encode_event_push(p.request, p.delivery, &p.event, &mut self.output);
            next = self.member.as_mut().and_then(|m| m.pushes.try_recv().ok());
        }
    }

    /// `ack` and `dead_letters`.
    fn events(&mut self, request: Request) -> Result<Reply, Error> {
        let Some(subs) = &self.subscriptions else {
            return Err(Error::new(ErrorCode::Internal, "no environment"));
        };
        match request {
            Request::Ack(a) => {
                if let Some(member) = &self.member {
                    subs.ack(member.id, a.delivery, a.error);
                }
                Ok(Reply::Empty)
            }
            Request::DeadLetters(d) => Ok(Reply::Json(subs.dead_letters(&d.name, d.replay)?)),
            other => Err(Error::new(
                ErrorCode::Internal,
                format!("{} is not an events call", other.opcode()),
            )),
        }
    }

    /// The first frame: a `hello` that names a known environment and its token, in the
    /// protocol version spoken here.
    fn handshake(&mut self, id: u32, request: Request) {
        let kind = request.opcode() as u16;
        let Request::Hello(hello) = request else {
            return self.refuse(id, kind, "the first frame must be a hello (opcode 1)");
        };
        if hello.version != frame::PROTOCOL_VERSION {
            let why = format!(
                "protocol version {} is not spoken here; this server speaks {}",
                hello.version,
                frame::PROTOCOL_VERSION
            );
            return self.refuse(id, kind, &why);
        }
        match self
            .server
            .envs
            .admit(hello.env.as_deref(), hello.token.as_deref())
        {
            Ok(env) => {
                self.db = Some(env.db.clone());
                self.subscriptions = Some(env.subscriptions.clone());
                encode_reply(id, kind, Ok(command::welcome()), &mut self.output);
            }
            Err(e) => {
                self.closing = true;
                frame::encode_error(id, kind, &e, &mut self.output);
            }
        }
    }

    /// Answers a frame that breaks the protocol with `bad_frame`, then closes.
    fn refuse(&mut self, id: u32, kind: u16, why: &str) {
        self.closing = true;
        let e = Error::new(ErrorCode::BadFrame, why);
        frame::encode_error(id, kind, &e, &mut self.output);
    }
}

fn encode_reply(id: u32, kind: u16, reply: Result<Reply, Error>, out: &mut BytesMut) {
    match reply {
        Ok(reply) => {
            let start = frame::begin_ok(id, kind, out);
            reply.encode_into(out);
            start.finish(out);
        }
        Err(e) => frame::encode_error(id, kind, &e, out),
    }
}

/// What a connection woke up for.
enum Event {
    /// A write in flight finished, with its answer.
    Answer(Answer),
    /// A subscription's event, to push.
    Push(Push),
    /// Bytes arrived.
    Read,
    /// The peer left (end of stream) or broke the connection.
    Gone,
    /// The sweeper or shutdown raised the connection's flag.
    Stop(Stop),
}

/// A client connection: its stream, its session, and its deadline.
pub struct Connection {
    stream: TcpStream,
    session: Session,
    sweeper: Rc<Sweeper>,
    control: Rc<Control>,
    /// When the frame being received (or the handshake) started, on the sweeper's
    /// clock.
    frame_started: Option<Instant>,
    shutting_down: bool,
    /// Keeps the connection's place in the server's count while it lives.
    _slot: ConnectionSlot,
}

impl Connection {
    /// Serves one connection: handshake, then requests until the peer leaves, a
    /// deadline passes, a frame is bad, or the server shuts down. The writes still in
    /// flight then finish: they stand whether or not anyone hears of them.
    pub async fn serve(
        server: Arc<Server>,
        latencies: latency::Shared,
        sweeper: Rc<Sweeper>,
        stream: TcpStream,
        slot: ConnectionSlot,
    ) {
        let _ = stream.set_nodelay(true);
        let mut connection = Connection {
            stream,
            control: sweeper.register(),
            // The handshake's deadline runs from the start.
            frame_started: Some(sweeper.now.get()),
            sweeper,
            session: Session::new(server, latencies),
            shutting_down: false,
            _slot: slot,
        };
        connection.run().await;
        connection.session.finish_in_flight().await;
    }

    /// Turns until the connection is done with.
    async fn run(&mut self) {
        loop {
            self.session.decode_all();
            self.session.collect_finished();
            if !self.write_output().await {
                return;
            }
            self.session.shrink_buffers();
            if self.session.closing || (self.shutting_down && self.session.in_flight.is_empty()) {
                return self.close().await;
            }
            let whole_frame = self.session.next_frame() != NextFrame::Incomplete;
            if whole_frame && self.session.may_decode() && !self.shutting_down {
                // Decoding paused only to write the answers out: go on.
                continue;
            }
            self.arm_deadline(whole_frame);
            // More input is read only when the input holds no whole frame (one that
            // waits for earlier writes, or for room among the writes in flight), and not
            // once shutdown began.
            match self.next_event(!self.shutting_down && !whole_frame).await {
                Event::Answer(answer) => self.session.answer(answer),
                Event::Push(push) => self.session.push(push),
                Event::Read => {}
                // The peer left or broke the connection: its writes still stand.
                Event::Gone => return,
                Event::Stop(Stop::Shutdown) => self.shutting_down = true,
                Event::Stop(Stop::Deadline) => return self.close().await,
            }
        }
    }

    /// Writes the output out; false when the peer is gone, or stopped reading its
    /// answers for the idle timeout (a send that long stalled ends the connection).
    async fn write_output(&mut self) -> bool {
        if self.session.output.is_empty() {
            return true;
        }
        let output = std::mem::take(&mut self.session.output);
        let limits = &self.session.server.limits;
        self.control
            .deadline
            .set(Some(self.sweeper.now.get() + limits.idle_timeout));
        let mut send = std::pin::pin!(self.stream.write_all(output));
        loop {
            let stopped = std::pin::pin!(self.control.stopped());
            match futures::future::select(send.as_mut(), stopped).await {
                Either::Left(((sent, buffer), _)) => {
                    self.session.output = buffer;
                    return sent.is_ok();
                }
                // The answers already gathered still go out.
                Either::Right((Stop::Shutdown, _)) => self.shutting_down = true,
                Either::Right((Stop::Deadline, _)) => return false,
            }
        }
    }

    async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Sets the deadline the sweeper checks: the frame deadline while a frame (or the
    /// handshake) is partly received, not while a whole frame waits for the writes
    /// before it; the idle deadline while nothing is in flight.
    fn arm_deadline(&mut self, whole_frame: bool) {
        let now = self.sweeper.now.get();
        if self.session.db.is_some() && (self.session.input.is_empty() || whole_frame) {
            self.frame_started = None;
        } else if !self.session.input.is_empty() {
            self.frame_started.get_or_insert(now);
        }
        let limits = &self.session.server.limits;
        self.control.deadline.set(match self.frame_started {
            Some(started) => Some(started + limits.frame_timeout),
            None if self.session.in_flight.is_empty() => Some(now + limits.idle_timeout),
            None => None,
        });
    }

    /// Waits for the next thing to happen: a finished write first, then input (when
    /// `may_read`), then the connection's flag. A read that loses the race stays in
    /// flight on the stream, and its bytes come with the next one.
    async fn next_event(&mut self, may_read: bool) -> Event {
        let in_flight = &mut self.session.in_flight;
        let pushes = self.session.member.as_mut().map(|m| &mut m.pushes);
        let stream = &mut self.stream;
        let input = &mut self.session.input;
        let read = async {
            if may_read {
                stream.read_into(input).await
            } else {
                futures::future::pending().await
            }
        };
        // Nothing in flight: the set is empty, and this waits forever.
        let finished = async {
            match in_flight.next().await {
                Some(answer) => answer,
                None => futures::future::pending().await,
            }
        };
        // Pushes wait while the connection is closing down.
        let shutting_down = self.shutting_down;
        let push = async {
            match pushes.filter(|_| !shutting_down) {
                Some(pushes) => match pushes.next().await {
                    Some(push) => push,
                    None => futures::future::pending().await,
                },
                None => futures::future::pending().await,
            }
        };
        let (finished, read, stopped, push) = (
            finished.fuse(),
            read.fuse(),
            self.control.stopped().fuse(),
            push.fuse(),
        );
        futures::pin_mut!(finished, read, stopped, push);
        futures::select_biased! {
            answer = finished => Event::Answer(answer),
            push = push => Event::Push(push),
            read = read => match read {
                Ok(0) | Err(_) => Event::Gone,
                Ok(_) => Event::Read,
            },
            stop = stopped => Event::Stop(stop),
        }
    }
}
