//! [`WireClient`]: one read-only connection to a local libvirt daemon over its RPC
//! protocol, without libvirt's client library: authentication (none, or polkit, which
//! the daemon waives for root), the read-only open, the domain listing and the bulk
//! statistics call. One call at a time, blocking — or awaited on the async runtime's
//! reactor (`*_async`: the socket is switched to non-blocking and registered there, for
//! reading only, for the first awaited call, and back only for a blocking one), so a
//! tick's call needs no blocking thread. A second connection, the CPU reader, carries
//! the per-domain CPU reads sent ahead of the bulk call (see `cpu_totals`).
//! Each reply is read into one reused buffer and decoded there.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use thiserror::Error;
use tracing::debug;

use super::endpoint::Endpoint;
use super::protocol::{
    self, decode_auth_list, decode_auth_polkit, decode_domain_cpu_total,
    decode_domain_get_xml_desc, decode_domain_stats, decode_free_memory, decode_list_all_domains,
    decode_node_info, decode_node_stats, encode_domain_cpu_total, encode_domain_get_xml_desc,
    encode_get_all_domain_stats, encode_list_all_domains, encode_node_cpu_stats,
    encode_node_memory_stats, encode_open, DomainId, DomainNames, Header, Procedure, RemoteError,
    StatsDecodeError, AUTH_NONE, AUTH_POLKIT, CONNECT_RO, HEADER_LEN, LIST_DOMAINS_ACTIVE,
    MESSAGE_MAX, PROGRAM, STATUS_ERROR, STATUS_OK, TYPE_REPLY,
};
use super::xdr::{Reader, XdrError};
use crate::ffi::RawRecord;
use vadvisor_api::{NodeInfo, Room, SortMemo, TypedValue};

/// Why a call over the native client failed.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("malformed reply from the daemon: {0}")]
    Protocol(String),
    #[error("{}", .0.message)]
    Remote(RemoteError),
    #[error("the daemon asks for authentication this client does not do ({0})")]
    Unsupported(String),
}

impl WireError {
    /// The daemon did not answer in time (libvirt's client library would not either).
    pub fn is_timeout(&self) -> bool {
        matches!(self, WireError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

impl From<XdrError> for WireError {
    fn from(e: XdrError) -> Self {
        WireError::Protocol(e.to_string())
    }
}

impl From<StatsDecodeError> for WireError {
    fn from(e: StatsDecodeError) -> Self {
        WireError::Protocol(e.to_string())
    }
}

/// `buf` sized for the rest of a message whose length word (which counts itself) is
/// `word`, if that length is plausible. Sized first so the rest is read in one go: the
/// reply usually arrives whole, so this is one read (growing the buffer while reading
/// took one per 8, 16, 32… KiB). Only bytes past the previous reply's length are zeroed.
fn sized(buf: &mut Vec<u8>, word: [u8; 4]) -> Result<&mut [u8], WireError> {
    buf.resize(message_len(word)? - 4, 0);
    Ok(buf)
}

/// The length a message's length word (which counts itself) gives, if it is plausible.
fn message_len(word: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(word) as usize;
    if !(HEADER_LEN..=MESSAGE_MAX).contains(&len) {
        return Err(WireError::Protocol(format!("message length {len}")));
    }
    Ok(len)
}

/// How much a batch of calls reads at a time (their replies are ~100 bytes each).
const READ_CHUNK: usize = 16 * 1024;

/// The first whole message at the front of `buf` (without its length word), if it has
/// arrived.
fn whole_message(buf: &[u8]) -> Result<Option<&[u8]>, WireError> {
    let Some(word) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    Ok(buf.get(4..message_len(*word)?))
}

/// The calls of one batch: serials `first..first + count`, of `procedures`.
struct Batch {
    first: u32,
    procedures: Procedures,
    count: usize,
}

/// The procedures of a batch's calls.
#[derive(Clone, Copy)]
enum Procedures {
    /// Every call of one procedure.
    All(Procedure),
    /// Call `i` of the `i`th (as many as the batch has calls).
    Each(&'static [Procedure]),
}

impl Procedures {
    /// The procedure of call `i`.
    fn of(self, i: usize) -> Option<Procedure> {
        match self {
            Procedures::All(p) => Some(p),
            Procedures::Each(ps) => ps.get(i).copied(),
        }
    }
}

/// Takes the whole messages off the front of `buf`, each reply to a call of `batch`
/// decoded into its call's place in `out` (other messages skipped); how many replies
/// it took.
fn take_replies<R>(
    buf: &mut Vec<u8>,
    batch: &Batch,
    out: &mut [Option<Result<R, WireError>>],
    decode: &mut impl FnMut(usize, &[u8]) -> Result<R, WireError>,
) -> Result<usize, WireError> {
    let mut taken = 0;
    let mut replies = 0;
    while let Some(msg) = whole_message(&buf[taken..])? {
        taken += 4 + msg.len();
        let h = Header::decode(&mut Reader::new(msg))?;
        let index = h.serial.wrapping_sub(batch.first) as usize;
        let ours = h.program == PROGRAM
            && h.kind == TYPE_REPLY
            && index < batch.count
            && batch
                .procedures
                .of(index)
                .is_some_and(|p| h.procedure == p as i32);
        let Some(slot) = out.get_mut(index).filter(|slot| ours && slot.is_none()) else {
            continue;
        };
        *slot = Some(match reply_body(msg, h.status) {
            Ok(body) => decode(index, body),
            Err(WireError::Remote(e)) => Err(WireError::Remote(e)),
            Err(e) => return Err(e),
        });
        replies += 1;
    }
    buf.drain(..taken);
    Ok(replies)
}

/// `count` empty reply slots.
fn empty_slots<R>(count: usize) -> Vec<Option<Result<R, WireError>>> {
    (0..count).map(|_| None).collect()
}

/// Reads what has arrived on the non-blocking `socket` onto the end of `buf`, without
/// waiting. A read that does not fill its chunk took everything there was (a stream
/// socket's read gathers all it has queued): no further read to learn that.
fn read_arrived(socket: &mut UnixStream, buf: &mut Vec<u8>) -> Result<(), WireError> {
    loop {
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        match socket.read(&mut buf[start..]) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) if n < READ_CHUNK => {
                buf.truncate(start + n);
                return Ok(());
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf.truncate(start);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Awaits the `left` replies of `batch` not in `out` yet (see `take_replies`).
async fn await_replies<R>(
    stream: &AsyncFd<UnixStream>,
    buf: &mut Vec<u8>,
    batch: &Batch,
    out: &mut [Option<Result<R, WireError>>],
    decode: &mut impl FnMut(usize, &[u8]) -> Result<R, WireError>,
    mut left: usize,
) -> Result<(), WireError> {
    while left > 0 {
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        let n = read_async(stream, &mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        left -= take_replies(buf, batch, out, decode)?;
    }
    Ok(())
}

/// How long the replies of a batch of calls are left to gather before they are read
/// (see `calls_async`), at first and at least; at most.
const BATCH_WAIT_FIRST: Duration = Duration::from_millis(2);
const BATCH_WAIT_MIN: Duration = Duration::from_millis(1);
const BATCH_WAIT_MAX: Duration = Duration::from_millis(20);

/// The next batch's wait, after one whose replies had all `gathered` in `wait` or
/// took `took` in all: a little shorter when they had (so it follows a faster
/// daemon), as long as they took and a quarter when they had not.
fn next_batch_wait(wait: Duration, gathered: bool, took: Duration) -> Duration {
    let next = if gathered {
        wait.mul_f64(0.9)
    } else {
        took.mul_f64(1.25)
    };
    next.clamp(BATCH_WAIT_MIN, BATCH_WAIT_MAX)
}

/// The client's socket is gone: an awaited call was abandoned midway.
fn not_connected() -> io::Error {
    io::ErrorKind::NotConnected.into()
}

/// The status of `msg` (a message without its length word) if it is the reply to call
/// `serial` of `procedure`; `None` for other messages (keepalive, events), which the
/// caller skips.
fn reply_status(msg: &[u8], serial: u32, procedure: Procedure) -> Result<Option<u32>, WireError> {
    let h = Header::decode(&mut Reader::new(msg))?;
    let ours = h.program == PROGRAM
        && h.kind == TYPE_REPLY
        && h.serial == serial
        && h.procedure == procedure as i32;
    Ok(ours.then_some(h.status))
}

/// The body of a reply `msg` (without its length word) with header status `status`, or
/// the daemon's error.
fn reply_body(msg: &[u8], status: u32) -> Result<&[u8], WireError> {
    let body = msg.get(HEADER_LEN - 4..).unwrap_or_default();
    match status {
        STATUS_OK => Ok(body),
        STATUS_ERROR => Err(WireError::Remote(RemoteError::decode(&mut Reader::new(
            body,
        ))?)),
        s => Err(WireError::Protocol(format!("reply status {s}"))),
    }
}

/// The client's socket, in the mode its last call needed: switched only when a call of
/// the other kind comes (awaited calls follow each other: the tick's bulk call, the
/// host counters, the specs refresh; a blocking call is the exception), so an awaited
/// call costs no mode switch and no reactor (de)registration.
enum Socket {
    /// Blocking, with the read and write timeouts: for blocking calls.
    Blocking(UnixStream),
    /// Non-blocking and registered with the async runtime's reactor for reading only:
    /// for awaited calls. Not for writing: registered for that too (as a
    /// `tokio::net::UnixStream` is), the socket woke the runtime's thread each time the
    /// daemon read a call off it (the write space grew), once per awaited call, in the
    /// middle of the wait for its reply. Writes go straight to the non-blocking socket
    /// (see [`write_all_async`]).
    Registered(AsyncFd<UnixStream>),
    /// Non-blocking and off the reactor: the CPU reader's, whose replies wake nobody
    /// when they arrive (they are read once the bulk reply is in).
    Quiet(UnixStream),
}

impl Socket {
    fn blocking(self) -> io::Result<UnixStream> {
        let s = self.unregistered()?;
        s.set_nonblocking(false)?;
        Ok(s)
    }

    /// Non-blocking and off the reactor (a blocking socket is switched).
    fn unregistered(self) -> io::Result<UnixStream> {
        let s = match self {
            Socket::Registered(s) => return Ok(s.into_inner()),
            Socket::Quiet(s) => return Ok(s),
            Socket::Blocking(s) => s,
        };
        s.set_nonblocking(true)?;
        Ok(s)
    }

    /// Registered with the current runtime's reactor for reading (must be called on
    /// it).
    fn registered(self) -> io::Result<AsyncFd<UnixStream>> {
        match self {
            Socket::Registered(s) => Ok(s),
            other => readable_only(other.unregistered()?),
        }
    }
}

/// Non-blocking `s`, registered with the current runtime's reactor for reading only.
fn readable_only(s: UnixStream) -> io::Result<AsyncFd<UnixStream>> {
    crate::ffi::register_readable(s)
}

/// Writes all of `buf` to the registered socket `s`. The socket is not registered for
/// writing (see [`Socket::Registered`]): when it is full (the daemon stopped reading a
/// socket buffer's worth of calls: kilobytes; never seen), the write is retried every
/// millisecond, within the call's silence limit like the rest of the call.
async fn write_all_async(s: &AsyncFd<UnixStream>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match s.get_ref().write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what the registered socket `s` has into `buf`, awaiting it when nothing has
/// arrived; 0 at the end of the stream.
///
/// A read that does not fill `buf` took everything the socket held (a stream socket's
/// read gathers all it has queued), so the socket's readiness is cleared then: the next
/// wait sleeps until more arrives, where it would first have made a read only to be
/// told `EAGAIN`. (Data that arrives meanwhile is a new readiness event, which a clear
/// of the older one does not undo.)
async fn read_async(s: &AsyncFd<UnixStream>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut ready = s.readable().await?;
        if let Ok(read) = ready.try_io(|s| s.get_ref().read(buf)) {
            if read.as_ref().is_ok_and(|&n| n > 0 && n < buf.len()) {
                ready.clear_ready();
            }
            return read;
        }
    }
}

/// How much more than the rest of the message a reply's read asks for: that it comes
/// back short is how the read is known to have emptied the socket (see [`read_async`]).
const READ_SLACK: usize = 4096;

/// Reads from the registered socket `s` into `buf` until the reply to call `serial` of
/// `procedure` is whole, skipping the messages before it that are not that reply;
/// returns where the reply lies in `buf` (without its length word) and its status.
/// Each read asks for the rest of the message and more: one read usually takes the
/// whole reply, and its coming back short spares the next call a read that would only
/// see `EAGAIN`. `buf`'s length is left at its largest (bytes past the reply are not
/// zeroed again). Bytes after the reply are a protocol error (nothing is ever sent
/// unasked, and they would be lost).
async fn read_reply_async(
    s: &AsyncFd<UnixStream>,
    buf: &mut Vec<u8>,
    serial: u32,
    procedure: Procedure,
) -> Result<(std::ops::Range<usize>, u32), WireError> {
    let mut from = 0;
    let mut filled = 0;
    loop {
        while let Some(msg) = whole_message(&buf[from..filled])? {
            let end = from + 4 + msg.len();
            if let Some(status) = reply_status(msg, serial, procedure)? {
                if end != filled {
                    return Err(WireError::Protocol("bytes after the reply".into()));
                }
                return Ok((from + 4..end, status));
            }
            from = end;
        }
        let message_end = match buf[from..filled].first_chunk::<4>() {
            Some(word) => from + message_len(*word)?,
            None => from + 4,
        };
        let want = message_end.max(filled + 1) + READ_SLACK;
        if buf.len() < want {
            buf.resize(want, 0);
        }
        match read_async(s, &mut buf[filled..]).await? {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            n => filled += n,
        }
    }
}

/// An open, authenticated, read-only connection.
pub struct WireClient {
    /// Taken out while a call runs; missing after one failed or was abandoned midway.
    stream: Option<Socket>,
    serial: u32,
    /// Where replies are read (the last one, by a blocking call, without its length
    /// word); reused so a tick allocates no buffer.
    buf: Vec<u8>,
    /// How the records of earlier replies sorted: a domain's keys come in the same
    /// order tick after tick, so its record is put in order without comparing keys.
    sort_memo: SortMemo,
    /// The domains' UUIDs and names, shared by their records from reply to reply.
    names: DomainNames,
    /// How many host CPU and memory counters the daemon has (asked once: libvirt wants
    /// the exact count, which does not change while the connection lives).
    node_counts: NodeCounts,
    /// Whether the daemon answers `virDomainGetCPUStats` for its domains (no: a host
    /// without CPU accounting); see `cpu_totals`.
    cpu_totals_per_domain: bool,
    /// How long a batch's replies are left to gather before they are read: about as
    /// long as the last batch took (see `calls_async`).
    batch_wait: Duration,
    /// A second connection to the same daemon, for the per-domain CPU reads sent ahead
    /// of the bulk call (see `cpu_totals`); `None` without one (or after it failed).
    cpu_reader: Option<Box<WireClient>>,
    /// The domains that ran at the last bulk call over every domain: whose CPU reads
    /// the next one sends ahead.
    last_running: Vec<DomainId>,
}

/// One domain's CPU totals as the bulk group keys them, or the daemon's error for it.
pub type CpuTotal = Result<Vec<(&'static str, TypedValue)>, WireError>;

/// CPU reads sent over the reader, not read yet (see [`WireClient::send_cpu_totals`]).
pub struct SentCpuReads(Batch);

/// How long the reader's replies that had not arrived with the bulk reply are waited
/// for (they are answered in well under a millisecond each): past it, the reader is
/// dropped and the domains' CPU totals read over the main connection.
const READER_WAIT: Duration = Duration::from_millis(250);

/// Host counters as the daemon names them, with their values.
type NodeCounters = Vec<(String, u64)>;

/// What the host collector's four calls answered (see
/// [`WireClient::host_counters_async`]); each counter call's daemon error kept apart, as
/// a driver may not offer them.
pub struct HostCounters {
    pub info: NodeInfo,
    pub cpu: Result<NodeCounters, WireError>,
    pub memory: Result<NodeCounters, WireError>,
    pub free_memory: Result<u64, WireError>,
}

/// The host counters' calls, in the order [`WireClient::host_counters_async`] sends them.
const HOST_CALLS: &[Procedure] = &[
    Procedure::NodeGetInfo,
    Procedure::NodeGetCpuStats,
    Procedure::NodeGetMemoryStats,
    Procedure::NodeGetFreeMemory,
];

/// One reply of [`HOST_CALLS`], decoded.
enum HostReply {
    Info(NodeInfo),
    Counters(NodeCounters),
    FreeMemory(u64),
}

fn unexpected_reply() -> WireError {
    WireError::Protocol("a reply of another call's shape".into())
}

/// The exact counter counts of `virNodeGetCPUStats` and `virNodeGetMemoryStats`, once
/// known.
#[derive(Default)]
struct NodeCounts {
    cpu: Option<i32>,
    memory: Option<i32>,
}

impl WireClient {
    /// Connects to `endpoint`, authenticates and opens its driver read-only. Every read
    /// and write gives up after `timeout` (`None`: never; the connection is then dropped
    /// by its owner).
    pub fn connect(endpoint: &Endpoint, timeout: Option<Duration>) -> Result<Self, WireError> {
        let stream = UnixStream::connect(&endpoint.socket)?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        let mut c = Self {
            stream: Some(Socket::Blocking(stream)),
            serial: 0,
            buf: Vec::new(),
            sort_memo: SortMemo::default(),
            names: DomainNames::default(),
            node_counts: NodeCounts::default(),
            cpu_totals_per_domain: true,
            batch_wait: BATCH_WAIT_FIRST,
            cpu_reader: None,
            last_running: Vec::new(),
        };
        let types = decode_auth_list(c.call(Procedure::AuthList, |_| {})?)?;
        if !types.is_empty() && !types.contains(&AUTH_NONE) {
            if !types.contains(&AUTH_POLKIT) {
                return Err(WireError::Unsupported(format!("types {types:?}")));
            }
            if !decode_auth_polkit(c.call(Procedure::AuthPolkit, |_| {})?)? {
                return Err(WireError::Unsupported("polkit refused".into()));
            }
        }
        c.call(Procedure::ConnectOpen, |w| {
            encode_open(w, &endpoint.name, CONNECT_RO)
        })?;
        Ok(c)
    }

    /// Whether the socket is registered with the reactor (the last call was awaited).
    #[cfg(test)]
    pub(super) fn is_registered(&self) -> bool {
        matches!(self.stream, Some(Socket::Registered(_)))
    }

    /// The next call's message: a new serial, `procedure` and its arguments.
    fn next_call(
        &mut self,
        procedure: Procedure,
        args: impl FnOnce(&mut protocol::Writer),
    ) -> Vec<u8> {
        self.serial = self.serial.wrapping_add(1);
        protocol::call(procedure, self.serial, args)
    }

    /// Sends one call and returns its reply's body. Messages that are not this call's
    /// reply (keepalive, events: this client registers none) are read and skipped.
    fn call(
        &mut self,
        procedure: Procedure,
        args: impl FnOnce(&mut protocol::Writer),
    ) -> Result<&[u8], WireError> {
        let msg = self.next_call(procedure, args);
        let mut stream = self.stream.take().ok_or_else(not_connected)?.blocking()?;
        stream.write_all(&msg)?;
        let status = loop {
            let mut word = [0u8; 4];
            stream.read_exact(&mut word)?;
            stream.read_exact(sized(&mut self.buf, word)?)?;
            if let Some(status) = reply_status(&self.buf, self.serial, procedure)? {
                break status;
            }
        };
        self.stream = Some(Socket::Blocking(stream));
        reply_body(&self.buf, status)
    }

    /// [`call`](Self::call) awaited on the runtime's reactor: the socket is
    /// non-blocking and registered there (and stays so until a blocking call comes). A
    /// call dropped midway (or failed) takes the socket with it: the client is then
    /// dropped, as a reply may still be on its way.
    async fn call_async(
        &mut self,
        procedure: Procedure,
        args: impl FnOnce(&mut protocol::Writer),
    ) -> Result<&[u8], WireError> {
        let msg = self.next_call(procedure, args);
        let stream = self.stream.take().ok_or_else(not_connected)?.registered()?;
        write_all_async(&stream, &msg).await?;
        let (reply, status) =
            read_reply_async(&stream, &mut self.buf, self.serial, procedure).await?;
        self.stream = Some(Socket::Registered(stream));
        reply_body(&self.buf[reply], status)
    }

    /// Whether domains' CPU totals are asked per domain (see `cpu_totals`): until the
    /// daemon refused them all.
    pub fn cpu_totals_per_domain(&self) -> bool {
        self.cpu_totals_per_domain
    }

    /// The daemon refused them all: ask the bulk group from now on, on this connection.
    pub fn stop_cpu_totals_per_domain(&mut self) {
        self.cpu_totals_per_domain = false;
    }

    /// `count` calls of `procedures` (arguments of call `i` from `args(i, …)`) sent in
    /// one write, their replies (the daemon answers them in any order) each decoded by
    /// `decode(i, …)` as it is read, awaited (see `call_async`). One entry per call, in
    /// call order: its decoded reply or the daemon's error for it. An I/O or protocol
    /// failure fails them all.
    ///
    /// The replies come over a millisecond or two, a few at a time; woken for each
    /// arrival, the runtime's thread switched a dozen times per batch. So the socket is
    /// taken off the reactor, the batch written, and the replies left to gather for
    /// about as long as the last batch took (`batch_wait`): one timer
    /// wake-up, then whatever has arrived is read at once. The rest, if any, is awaited.
    async fn calls_async<R>(
        &mut self,
        procedures: Procedures,
        count: usize,
        mut args: impl FnMut(usize, &mut protocol::Writer),
        mut decode: impl FnMut(usize, &[u8]) -> Result<R, WireError>,
    ) -> Result<Vec<Result<R, WireError>>, WireError> {
        let (batch, msgs) = self.batch_of(procedures, count, &mut args);
        let mut out = empty_slots(batch.count);
        self.buf.clear();
        let socket = self.stream.take().ok_or_else(not_connected)?;
        let mut quiet = socket.unregistered()?;
        let mut written = 0;
        while written < msgs.len() {
            match quiet.write(&msgs[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        let sent = std::time::Instant::now();
        let mut left = batch.count;
        if written == msgs.len() {
            tokio::time::sleep(self.batch_wait).await;
            read_arrived(&mut quiet, &mut self.buf)?;
            left -= take_replies(&mut self.buf, &batch, &mut out, &mut decode)?;
        }
        let stream = readable_only(quiet)?;
        write_all_async(&stream, &msgs[written..]).await?;
        let gathered = left == 0;
        let (buf, slots) = (&mut self.buf, &mut out);
        await_replies(&stream, buf, &batch, slots, &mut decode, left).await?;
        if !self.buf.is_empty() {
            // More than the replies: nothing else is ever sent unasked.
            return Err(WireError::Protocol("bytes after the last reply".into()));
        }
        self.batch_wait = next_batch_wait(self.batch_wait, gathered, sent.elapsed());
        self.stream = Some(Socket::Registered(stream));
        Ok(out.into_iter().flatten().collect())
    }

    /// The calls of a batch: `count` calls of `procedures` (arguments of call `i` from
    /// `args(i, …)`), and their messages, one after the other in one buffer.
    fn batch_of(
        &mut self,
        procedures: Procedures,
        count: usize,
        args: &mut impl FnMut(usize, &mut protocol::Writer),
    ) -> (Batch, Vec<u8>) {
        let first = self.serial.wrapping_add(1);
        let mut msgs = Vec::new();
        let mut sent = 0;
        for i in 0..count {
            let Some(procedure) = procedures.of(i) else {
                break;
            };
            self.serial = self.serial.wrapping_add(1);
            msgs = protocol::call_onto(msgs, procedure, self.serial, |w| args(i, w));
            sent += 1;
        }
        let batch = Batch {
            first,
            procedures,
            count: sent,
        };
        (batch, msgs)
    }

    /// Sends a batch of calls (as [`calls_async`](Self::calls_async) names them) in one
    /// write and returns at once: the socket stays off the reactor, so their replies
    /// wake nobody; [`replies_to`](Self::replies_to) reads them. A write the socket
    /// cannot take whole at once fails (it takes kilobytes; a daemon that lets that
    /// much pile up is not reading), and drops the socket.
    fn send_calls(
        &mut self,
        procedure: Procedure,
        count: usize,
        mut args: impl FnMut(usize, &mut protocol::Writer),
    ) -> Result<Batch, WireError> {
        let (batch, msgs) = self.batch_of(Procedures::All(procedure), count, &mut args);
        let mut quiet = self
            .stream
            .take()
            .ok_or_else(not_connected)?
            .unregistered()?;
        quiet.write_all(&msgs)?;
        self.stream = Some(Socket::Quiet(quiet));
        Ok(batch)
    }

    /// The replies to `batch`, sent by [`send_calls`](Self::send_calls), each decoded
    /// by `decode`, in call order (see `calls_async`): what has arrived is read without
    /// waiting; the rest is awaited, up to `READER_WAIT` (then a timeout, and the
    /// socket is dropped).
    async fn replies_to<R>(
        &mut self,
        batch: Batch,
        mut decode: impl FnMut(usize, &[u8]) -> Result<R, WireError>,
    ) -> Result<Vec<Result<R, WireError>>, WireError> {
        let mut out = empty_slots(batch.count);
        self.buf.clear();
        let mut quiet = self
            .stream
            .take()
            .ok_or_else(not_connected)?
            .unregistered()?;
        read_arrived(&mut quiet, &mut self.buf)?;
        let left = batch.count - take_replies(&mut self.buf, &batch, &mut out, &mut decode)?;
        if left > 0 {
            let stream = readable_only(quiet)?;
            let (buf, slots) = (&mut self.buf, &mut out);
            let rest = await_replies(&stream, buf, &batch, slots, &mut decode, left);
            tokio::time::timeout(READER_WAIT, rest)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            quiet = stream.into_inner();
        }
        if !self.buf.is_empty() {
            return Err(WireError::Protocol("bytes after the last reply".into()));
        }
        self.stream = Some(Socket::Quiet(quiet));
        Ok(out.into_iter().flatten().collect())
    }

    /// Opens the CPU reader (see `cpu_totals`): a second connection, as `connect`
    /// opens one (blocking).
    pub fn open_cpu_reader(
        &mut self,
        endpoint: &Endpoint,
        timeout: Option<Duration>,
    ) -> Result<(), WireError> {
        self.cpu_reader = Some(Box::new(Self::connect(endpoint, timeout)?));
        Ok(())
    }

    /// Sends the CPU reads of `doms` (as [`domain_cpu_totals_async`] asks them) over
    /// the CPU reader and returns at once; [`sent_cpu_totals`](Self::sent_cpu_totals)
    /// reads their replies. `None` without a reader, or when it failed (it is then
    /// dropped: the main connection reads the CPU totals from then on).
    ///
    /// [`domain_cpu_totals_async`]: Self::domain_cpu_totals_async
    pub fn send_cpu_totals(&mut self, doms: &[DomainId]) -> Option<SentCpuReads> {
        let reader = self.cpu_reader.as_mut()?;
        let sent = reader.send_calls(Procedure::DomainGetCpuStats, doms.len(), |i, w| {
            encode_domain_cpu_total(w, &doms[i])
        });
        match sent {
            Ok(batch) => Some(SentCpuReads(batch)),
            Err(e) => {
                self.drop_cpu_reader(&e);
                None
            }
        }
    }

    /// The replies to the CPU reads `sent`, in call order; `None` when the reader
    /// failed (it is then dropped).
    pub async fn sent_cpu_totals(&mut self, sent: SentCpuReads) -> Option<Vec<CpuTotal>> {
        let reader = self.cpu_reader.as_mut()?;
        match reader
            .replies_to(sent.0, |_, body| Ok(decode_domain_cpu_total(body)?))
            .await
        {
            Ok(totals) => Some(totals),
            Err(e) => {
                self.drop_cpu_reader(&e);
                None
            }
        }
    }

    fn drop_cpu_reader(&mut self, e: &WireError) {
        debug!(error = %e, "the CPU reads' connection failed; they go over the main one");
        self.cpu_reader = None;
    }

    /// Whether the CPU reader is open.
    #[cfg(test)]
    pub(super) fn has_cpu_reader(&self) -> bool {
        self.cpu_reader.is_some()
    }

    /// The domains that ran at the last bulk call over every domain (taken: the next
    /// call [sets](Self::set_last_running) them).
    pub fn take_last_running(&mut self) -> Vec<DomainId> {
        std::mem::take(&mut self.last_running)
    }

    pub fn set_last_running(&mut self, running: Vec<DomainId>) {
        self.last_running = running;
    }

    /// Each domain's total CPU time, user and system time (`virDomainGetCPUStats`,
    /// `start_cpu` -1), keyed as the bulk `cpu-total` group keys them: all the calls in
    /// one write, awaited. Per domain, the daemon's error for it (a domain gone, a host
    /// without CPU accounting) or its counters.
    pub async fn domain_cpu_totals_async(
        &mut self,
        doms: &[DomainId],
    ) -> Result<Vec<CpuTotal>, WireError> {
        self.calls_async(
            Procedures::All(Procedure::DomainGetCpuStats),
            doms.len(),
            |i, w| encode_domain_cpu_total(w, &doms[i]),
            |_, body| Ok(decode_domain_cpu_total(body)?),
        )
        .await
    }

    /// [`list_active_domains`](Self::list_active_domains), awaited (see `call_async`).
    pub async fn list_active_domains_async(&mut self) -> Result<Vec<DomainId>, WireError> {
        let body = self
            .call_async(Procedure::ConnectListAllDomains, |w| {
                encode_list_all_domains(w, LIST_DOMAINS_ACTIVE)
            })
            .await?;
        Ok(decode_list_all_domains(body)?)
    }

    /// `virDomainGetXMLDesc(dom, flags)`, awaited (see `call_async`).
    pub async fn domain_xml_async(
        &mut self,
        dom: &DomainId,
        flags: u32,
    ) -> Result<String, WireError> {
        let body = self
            .call_async(Procedure::DomainGetXmlDesc, |w| {
                encode_domain_get_xml_desc(w, dom, flags)
            })
            .await?;
        Ok(decode_domain_get_xml_desc(body)?)
    }

    /// `virDomainGetXMLDesc(dom, flags)`.
    pub fn domain_xml(&mut self, dom: &DomainId, flags: u32) -> Result<String, WireError> {
        let body = self.call(Procedure::DomainGetXmlDesc, |w| {
            encode_domain_get_xml_desc(w, dom, flags)
        })?;
        Ok(decode_domain_get_xml_desc(body)?)
    }

    /// [`domain_stats`](Self::domain_stats), awaited (see `call_async`).
    pub async fn domain_stats_async(
        &mut self,
        doms: &[DomainId],
        stats: u32,
        flags: u32,
    ) -> Result<Vec<RawRecord>, WireError> {
        self.domain_stats_with_room_async(doms, stats, flags, Room::default())
            .await
    }

    /// [`domain_stats_async`](Self::domain_stats_async), each record with `room` to
    /// spare for the groups the caller fills in after the call (`cpu_totals`,
    /// `vcpu_threads`): their inserts then move no record to a larger allocation.
    pub async fn domain_stats_with_room_async(
        &mut self,
        doms: &[DomainId],
        stats: u32,
        flags: u32,
        room: Room,
    ) -> Result<Vec<RawRecord>, WireError> {
        let mut memo = std::mem::take(&mut self.sort_memo);
        let mut names = std::mem::take(&mut self.names);
        let records = match self
            .call_async(Procedure::ConnectGetAllDomainStats, |w| {
                encode_get_all_domain_stats(w, doms, stats, flags)
            })
            .await
        {
            Ok(body) => {
                decode_domain_stats(body, &mut memo, &mut names, room).map_err(WireError::from)
            }
            Err(e) => Err(e),
        };
        self.sort_memo = memo;
        self.names = names;
        records
    }

    /// `virConnectListAllDomains(ACTIVE)`: the running domains.
    pub fn list_active_domains(&mut self) -> Result<Vec<DomainId>, WireError> {
        let body = self.call(Procedure::ConnectListAllDomains, |w| {
            encode_list_all_domains(w, LIST_DOMAINS_ACTIVE)
        })?;
        Ok(decode_list_all_domains(body)?)
    }

    /// `virConnectGetAllDomainStats(stats, flags)` when `doms` is empty, else
    /// `virDomainListGetStats(doms, stats, flags)`.
    pub fn domain_stats(
        &mut self,
        doms: &[DomainId],
        stats: u32,
        flags: u32,
    ) -> Result<Vec<RawRecord>, WireError> {
        // Taken out for the call, which borrows the whole client for its reply.
        let mut memo = std::mem::take(&mut self.sort_memo);
        let mut names = std::mem::take(&mut self.names);
        let records = self
            .call(Procedure::ConnectGetAllDomainStats, |w| {
                encode_get_all_domain_stats(w, doms, stats, flags)
            })
            .and_then(|body| {
                Ok(decode_domain_stats(
                    body,
                    &mut memo,
                    &mut names,
                    Room::default(),
                )?)
            });
        self.sort_memo = memo;
        self.names = names;
        records
    }

    /// `virNodeGetInfo`, awaited (see `call_async`).
    pub async fn node_info_async(&mut self) -> Result<NodeInfo, WireError> {
        let body = self.call_async(Procedure::NodeGetInfo, |_| {}).await?;
        Ok(decode_node_info(body)?)
    }

    /// `virNodeGetCPUStats` of all CPUs, awaited: the count (asked once per
    /// connection), then the values (libvirt wants the exact count).
    pub async fn node_cpu_stats_async(&mut self) -> Result<NodeCounters, WireError> {
        let known = self.node_counts.cpu;
        let (stats, n) = self
            .node_stats_async(Procedure::NodeGetCpuStats, known, encode_node_cpu_stats)
            .await?;
        self.node_counts.cpu = n;
        Ok(stats)
    }

    /// `virNodeGetMemoryStats` of all cells, the same way.
    pub async fn node_memory_stats_async(&mut self) -> Result<NodeCounters, WireError> {
        let known = self.node_counts.memory;
        let (stats, n) = self
            .node_stats_async(
                Procedure::NodeGetMemoryStats,
                known,
                encode_node_memory_stats,
            )
            .await?;
        self.node_counts.memory = n;
        Ok(stats)
    }

    /// One of the node counter calls: with the `known` count straight away (asked
    /// again if the daemon refuses it), else the count first. Returns the counters and
    /// the count to remember (`None`: there are none).
    async fn node_stats_async(
        &mut self,
        procedure: Procedure,
        known: Option<i32>,
        encode: fn(&mut protocol::Writer, i32),
    ) -> Result<(NodeCounters, Option<i32>), WireError> {
        if let Some(n) = known {
            match self.call_async(procedure, |w| encode(w, n)).await {
                Ok(body) => return Ok((decode_node_stats(body)?.0, Some(n))),
                Err(WireError::Remote(_)) => {} // the count changed: ask it again
                Err(e) => return Err(e),
            }
        }
        let (_, n) = decode_node_stats(self.call_async(procedure, |w| encode(w, 0)).await?)?;
        if n <= 0 {
            return Ok((Vec::new(), None));
        }
        let body = self.call_async(procedure, |w| encode(w, n)).await?;
        Ok((decode_node_stats(body)?.0, Some(n)))
    }

    /// `virNodeGetFreeMemory` in bytes, awaited.
    pub async fn free_memory_async(&mut self) -> Result<u64, WireError> {
        let body = self
            .call_async(Procedure::NodeGetFreeMemory, |_| {})
            .await?;
        Ok(decode_free_memory(body)?)
    }

    /// The host counters: [`node_info_async`](Self::node_info_async),
    /// [`node_cpu_stats_async`](Self::node_cpu_stats_async),
    /// [`node_memory_stats_async`](Self::node_memory_stats_async) and
    /// [`free_memory_async`](Self::free_memory_async). Once the counters' counts are
    /// known, the four calls go in one write (see `calls_async`): one wait for the
    /// daemon and one system call to send, where there were four of each. A counter
    /// call the daemon refuses then (its count changed) is asked again on its own.
    pub async fn host_counters_async(&mut self) -> Result<HostCounters, WireError> {
        let (Some(cpu_count), Some(memory_count)) = (self.node_counts.cpu, self.node_counts.memory)
        else {
            return Ok(HostCounters {
                info: self.node_info_async().await?,
                cpu: self.node_cpu_stats_async().await,
                memory: self.node_memory_stats_async().await,
                free_memory: self.free_memory_async().await,
            });
        };
        let replies = self
            .calls_async(
                Procedures::Each(HOST_CALLS),
                HOST_CALLS.len(),
                |i, w| match i {
                    1 => encode_node_cpu_stats(w, cpu_count),
                    2 => encode_node_memory_stats(w, memory_count),
                    _ => {}
                },
                |i, body| {
                    Ok(match i {
                        0 => HostReply::Info(decode_node_info(body)?),
                        1 | 2 => HostReply::Counters(decode_node_stats(body)?.0),
                        _ => HostReply::FreeMemory(decode_free_memory(body)?),
                    })
                },
            )
            .await?;
        let mut replies = replies.into_iter();
        let mut next = || {
            replies
                .next()
                .unwrap_or_else(|| Err(WireError::Protocol("a reply missing".into())))
        };
        let info = match next()? {
            HostReply::Info(info) => info,
            _ => return Err(unexpected_reply()),
        };
        let (cpu, memory) = (next(), next());
        let free_memory = match next() {
            Ok(HostReply::FreeMemory(bytes)) => Ok(bytes),
            Ok(_) => Err(unexpected_reply()),
            Err(e) => Err(e),
        };
        let cpu = match cpu {
            Ok(HostReply::Counters(c)) => Ok(c),
            Ok(_) => Err(unexpected_reply()),
            Err(WireError::Remote(_)) => {
                self.node_counts.cpu = None;
                self.node_cpu_stats_async().await
            }
            Err(e) => Err(e),
        };
        let memory = match memory {
            Ok(HostReply::Counters(c)) => Ok(c),
            Ok(_) => Err(unexpected_reply()),
            Err(WireError::Remote(_)) => {
                self.node_counts.memory = None;
                self.node_memory_stats_async().await
            }
            Err(e) => Err(e),
        };
        Ok(HostCounters {
            info,
            cpu,
            memory,
            free_memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Waker};

    /// Whether `f` is ready at its first poll.
    fn ready_at_once<F: Future>(f: F) -> bool {
        let mut f = std::pin::pin!(f);
        f.as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    }

    /// Both ends of a socket pair; the first non-blocking and registered for reading.
    fn registered_pair() -> (AsyncFd<UnixStream>, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("non-blocking");
        (readable_only(ours).expect("registered"), theirs)
    }

    /// A reply message of `procedure` to call `serial`, status OK, with `body`.
    fn reply(procedure: Procedure, serial: u32, body: &[u8]) -> Vec<u8> {
        let mut w = protocol::Writer::default();
        w.u32(0);
        for v in [PROGRAM, 1, procedure as u32, TYPE_REPLY, serial, STATUS_OK] {
            w.u32(v);
        }
        let mut msg = w.into_bytes();
        msg.extend_from_slice(body);
        let len = (msg.len() as u32).to_be_bytes();
        msg[..4].copy_from_slice(&len);
        msg
    }

    #[tokio::test]
    async fn a_read_that_empties_the_socket_leaves_the_next_wait_asleep() {
        let (ours, mut theirs) = registered_pair();
        theirs.write_all(&[7; 10]).expect("write");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), read_async(&ours, &mut buf))
            .await
            .expect("within 5 s")
            .expect("read");
        assert_eq!(n, 10);
        // Readiness cleared by the short read: waiting again does not return at once
        // (it did, and then a read saw EAGAIN, before the clear).
        assert!(!ready_at_once(ours.readable()));
        // More data wakes the wait.
        theirs.write_all(&[8; 3]).expect("write");
        let n = tokio::time::timeout(Duration::from_secs(5), read_async(&ours, &mut buf))
            .await
            .expect("more data is waited for and read")
            .expect("read");
        assert_eq!((n, buf[0]), (3, 8));
        // A read that fills its buffer may have left data behind: readiness stays.
        theirs.write_all(&[9; 20]).expect("write");
        let mut small = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(5), read_async(&ours, &mut small))
            .await
            .expect("within 5 s")
            .expect("read");
        assert!(ready_at_once(ours.readable()));
    }

    #[tokio::test]
    async fn a_reply_is_read_whole_after_the_messages_that_are_not_it() {
        let (ours, mut theirs) = registered_pair();
        let proc = Procedure::NodeGetFreeMemory;
        let other = reply(Procedure::NodeGetInfo, 6, b"not this one");
        let ours_msg = reply(proc, 7, &[1; 40_000]);
        let mut buf = Vec::new();
        // The other message whole, then the reply in two pieces.
        let writer = std::thread::spawn(move || {
            theirs.write_all(&other).expect("write");
            theirs.write_all(&ours_msg[..100]).expect("write");
            std::thread::sleep(Duration::from_millis(50));
            theirs.write_all(&ours_msg[100..]).expect("write");
            theirs
        });
        let (at, status) = tokio::time::timeout(
            Duration::from_secs(5),
            read_reply_async(&ours, &mut buf, 7, proc),
        )
        .await
        .expect("within 5 s")
        .expect("the reply");
        let mut theirs = writer.join().expect("writer");
        assert_eq!(status, STATUS_OK);
        assert_eq!(
            reply_body(&buf[at.clone()], status).expect("body"),
            &[1; 40_000][..]
        );
        assert!(!ready_at_once(ours.readable()));
        // Bytes after the reply are refused.
        let mut two = reply(proc, 8, b"x");
        two.extend_from_slice(&reply(proc, 9, b"y"));
        theirs.write_all(&two).expect("write");
        let after = tokio::time::timeout(
            Duration::from_secs(5),
            read_reply_async(&ours, &mut buf, 8, proc),
        )
        .await
        .expect("within 5 s");
        assert!(matches!(after, Err(WireError::Protocol(_))), "{after:?}");
    }

    #[test]
    fn a_batch_waits_about_as_long_as_the_last_one_took() {
        let ms = Duration::from_millis;
        // All in: a little shorter next time, not below the floor.
        assert_eq!(next_batch_wait(ms(10), true, ms(10)), ms(9));
        assert_eq!(next_batch_wait(ms(1), true, ms(1)), BATCH_WAIT_MIN);
        // Not all in: as long as they took, and a quarter, not above the ceiling.
        assert_eq!(next_batch_wait(ms(2), false, ms(4)), ms(5));
        assert_eq!(next_batch_wait(ms(2), false, ms(400)), BATCH_WAIT_MAX);
    }
}
