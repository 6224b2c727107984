//! The native statistics path: libvirt's RPC protocol spoken directly over the local
//! daemon's unix socket, read-only, instead of through libvirt's client library (whose
//! reply decoding, per-value allocations and event-loop wake-ups were most of a tick's
//! CPU: docs/performance.md#native-statistics-client). The bulk statistics call, its
//! shard listing and the host collector's node counters go this way; everything else
//! (events, domain XML, the per-domain fallback) stays on the library connection.
//! [`WireSlot`] is one library connection's native companion: opened right after it,
//! dropped on an I/O or protocol failure, and then the library answers instead (the
//! native client is tried again after [`RETRY_AFTER`]).

mod client;
mod endpoint;
mod protocol;
mod xdr;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use vadvisor_api::HypervisorError;

pub use client::{CpuTotal, WireClient, WireError};
pub use endpoint::endpoint;
pub use protocol::DomainId;

use crate::settings::{LibvirtSettings, StatsTransport};

/// After a failure, the library answers for this long before the native client is
/// tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Said once per process: which socket the native client reads from, and its first
/// failure (later ones are debug lines).
static ANNOUNCED: AtomicBool = AtomicBool::new(false);
static WARNED: AtomicBool = AtomicBool::new(false);

enum State {
    /// Not opened yet.
    Closed,
    Open(WireClient),
    /// Failed at this instant: the library answers until [`RETRY_AFTER`] has passed.
    Failed(Instant),
    /// The URI is not a local socket (or the setting says `library`): never.
    Off,
    /// Taken out for an awaited call ([`WireSlot::take_open`]).
    Busy,
}

/// A library connection's native companion.
pub(crate) struct WireSlot {
    state: Mutex<State>,
    /// Told when a taken client is given back (or dropped).
    given_back: tokio::sync::Notify,
}

impl WireSlot {
    /// Opens the native client beside a library connection just opened (blocking), so
    /// a daemon that hangs later hangs an open connection, not a connect.
    pub(crate) fn open(settings: &LibvirtSettings) -> Self {
        let mut state = match settings.stats_transport {
            StatsTransport::Auto => State::Closed,
            StatsTransport::Library => State::Off,
        };
        // A failure is logged and retried later; the library answers meanwhile.
        let _ = connect_if_due(settings, &mut state);
        Self {
            state: Mutex::new(state),
            given_back: tokio::sync::Notify::new(),
        }
    }

    /// Runs `call` on the open native client (reopening it first if due), blocking.
    /// `None` when the native path is not available now (not a local socket, failed
    /// recently, or in use by another call sharing this connection): the caller uses the
    /// library. A failed call drops the client; the error is returned for the caller to
    /// log or to fall back on.
    pub(crate) fn call<T>(
        &self,
        settings: &LibvirtSettings,
        call: impl FnOnce(&mut WireClient) -> Result<T, WireError>,
    ) -> Option<Result<T, WireError>> {
        let mut state = self.state.try_lock().ok()?;
        if let Err(e) = connect_if_due(settings, &mut state) {
            return Some(Err(e));
        }
        let State::Open(client) = &mut *state else {
            return None;
        };
        let result = call(client);
        if let Err(e) = &result {
            note_failure(settings, e);
            // A remote error leaves the connection in step: only I/O and protocol
            // failures drop it (a reply may still be on its way).
            if !matches!(e, WireError::Remote(_)) {
                *state = State::Failed(Instant::now());
            }
        }
        Some(result)
    }

    /// [`WireSlot::call`] as its callers use it: `None` when the library must answer
    /// (native not available, or failed other than by a timeout); an error only when
    /// the daemon did not answer in time (the library would wait too, past the
    /// deadline), named after `call_name`.
    pub(crate) fn answer<T>(
        &self,
        settings: &LibvirtSettings,
        call_name: &'static str,
        call: impl FnOnce(&mut WireClient) -> Result<T, WireError>,
    ) -> Option<Result<T, HypervisorError>> {
        match self.call(settings, call)? {
            Ok(value) => Some(Ok(value)),
            Err(e) if e.is_timeout() => Some(Err(HypervisorError::Call {
                call: call_name,
                message: format!("no answer from libvirt: {e}"),
            })),
            Err(_) => None,
        }
    }
}

/// The slot's open client, taken out for one awaited call; back in the slot once the
/// call is [settled](TakenClient::settle). Dropped unsettled (the call was abandoned
/// midway, a reply may still be on its way), the client is closed and the slot opens a
/// new one when next used from a blocking thread.
pub(crate) struct TakenClient<'a> {
    slot: &'a WireSlot,
    client: Option<WireClient>,
}

impl WireSlot {
    /// Takes the client out for an awaited call, if it is open and not in use; `None`
    /// otherwise (then a blocking thread opens it or the library answers: nothing here
    /// may block).
    pub(crate) fn take_open(&self) -> Option<TakenClient<'_>> {
        let mut state = self.state.try_lock().ok()?;
        if !matches!(*state, State::Open(_)) {
            return None;
        }
        let State::Open(client) = std::mem::replace(&mut *state, State::Busy) else {
            return None;
        };
        Some(TakenClient {
            slot: self,
            client: Some(client),
        })
    }
}

impl WireSlot {
    /// [`WireSlot::take_open`], waiting while another awaited call has the client (for
    /// calls that come in a row, like a full refresh's XML: one after the other on the
    /// client rather than the rest through the library). `None` when the client is not
    /// open, or a blocking call holds it.
    pub(crate) async fn take_open_waiting(&self) -> Option<TakenClient<'_>> {
        loop {
            let given_back = self.given_back.notified();
            tokio::pin!(given_back);
            // Registered before the state is read: a give-back in between still wakes it.
            given_back.as_mut().enable();
            if let Some(taken) = self.take_open() {
                return Some(taken);
            }
            let busy = matches!(self.state.try_lock().as_deref(), Ok(State::Busy));
            if !busy {
                return None;
            }
            given_back.await;
        }
    }
}

impl WireSlot {
    /// [`WireSlot::take_open_waiting`] for at most [`CLIENT_WAIT`]: a call that holds
    /// the client longer is likely stuck on a busy domain or daemon (it ends at the
    /// silence limit), and the library answers in the meantime.
    pub(crate) async fn take_open_within_wait(&self) -> Option<TakenClient<'_>> {
        tokio::time::timeout(CLIENT_WAIT, self.take_open_waiting())
            .await
            .ok()
            .flatten()
    }
}

impl WireSlot {
    /// Runs `work` on the slot's client, awaited: the client is taken out (waiting at
    /// most [`CLIENT_WAIT`] while another awaited call has it), `work` runs within the
    /// silence limit, and the outcome is [settled](TakenClient::settle) (`call_name`
    /// names a timeout). `None` when the library must answer. Every awaited call goes
    /// through here; dropped midway, it drops the client unsettled (closed).
    pub(crate) async fn awaited<T>(
        &self,
        settings: &LibvirtSettings,
        call_name: &'static str,
        work: impl AsyncFnOnce(&mut WireClient) -> Result<T, WireError>,
    ) -> Option<Result<T, HypervisorError>> {
        let mut taken = self.take_open_within_wait().await?;
        let result = {
            let client = taken.client()?;
            within_silence_limit(settings, work(client)).await
        };
        taken.settle(settings, call_name, result)
    }
}

/// How long an awaited call waits for the native client while another has it: enough
/// for the calls that come together at a tick (the specs refresh's XML one after the
/// other, the host counters, the bulk call; a few ms each), short of a stuck call.
pub(crate) const CLIENT_WAIT: Duration = Duration::from_millis(250);

impl TakenClient<'_> {
    /// The client, for the call.
    pub(crate) fn client(&mut self) -> Option<&mut WireClient> {
        self.client.as_mut()
    }

    /// The call's outcome, as [`WireSlot::answer`] gives it; the client goes back into
    /// the slot unless the call failed other than by the daemon's own error.
    pub(crate) fn settle<T>(
        mut self,
        settings: &LibvirtSettings,
        call_name: &'static str,
        result: Result<T, WireError>,
    ) -> Option<Result<T, HypervisorError>> {
        let client = self.client.take();
        let mut state = self.slot.state.lock().unwrap_or_else(|e| e.into_inner());
        match (&result, client) {
            (Ok(_), Some(c)) => *state = State::Open(c),
            (Err(e), client) => {
                note_failure(settings, e);
                *state = match (e, client) {
                    (WireError::Remote(_), Some(c)) => State::Open(c),
                    _ => State::Failed(Instant::now()),
                };
            }
            (Ok(_), None) => *state = State::Closed,
        }
        drop(state);
        self.slot.given_back.notify_waiters();
        match result {
            Ok(value) => Some(Ok(value)),
            Err(e) if e.is_timeout() => Some(Err(HypervisorError::Call {
                call: call_name,
                message: format!("no answer from libvirt: {e}"),
            })),
            Err(_) => None,
        }
    }
}

impl Drop for TakenClient<'_> {
    fn drop(&mut self) {
        if self.client.take().is_some() {
            *self.slot.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Closed;
            self.slot.given_back.notify_waiters();
        }
    }
}

/// An awaited call, bounded as a blocking one is (`silence_limit`, for the whole call):
/// past it, a timeout error (the call is dropped midway, so its client must be too).
pub(crate) async fn within_silence_limit<T>(
    settings: &LibvirtSettings,
    call: impl std::future::Future<Output = Result<T, WireError>>,
) -> Result<T, WireError> {
    match silence_limit(settings) {
        Some(limit) => tokio::time::timeout(limit, call)
            .await
            .unwrap_or_else(|_| Err(WireError::Io(std::io::ErrorKind::TimedOut.into()))),
        None => call.await,
    }
}

/// Opens the client when `state` says it is closed, or failed long enough ago; an
/// error only when a connect was tried and failed.
fn connect_if_due(settings: &LibvirtSettings, state: &mut State) -> Result<(), WireError> {
    match state {
        State::Off | State::Open(_) | State::Busy => return Ok(()),
        State::Failed(at) if at.elapsed() < RETRY_AFTER => return Ok(()),
        State::Closed | State::Failed(_) => {}
    }
    let Some(ep) = endpoint(&settings.uri, Path::exists) else {
        debug!(uri = %settings.uri, "not a local libvirt socket: statistics go through libvirt's client library");
        *state = State::Off;
        return Ok(());
    };
    match WireClient::connect(&ep, silence_limit(settings)) {
        Ok(mut c) => {
            if let Err(e) = c.open_cpu_reader(&ep, silence_limit(settings)) {
                debug!(uri = %settings.uri, error = %e,
                    "no second connection for the CPU reads: they go over the main one");
            }
            if !ANNOUNCED.swap(true, Ordering::Relaxed) {
                info!(uri = %settings.uri, socket = %ep.socket.display(),
                    "bulk statistics are read over libvirt's RPC protocol directly");
            }
            *state = State::Open(c);
            Ok(())
        }
        Err(e) => {
            note_failure(settings, &e);
            *state = State::Failed(Instant::now());
            Err(e)
        }
    }
}

/// How long the native client waits for a silent daemon before it drops the
/// connection: as long as libvirt's client library would, whose keepalive declares the
/// daemon dead after `keepalive_count` unanswered probes `keepalive_interval` apart
/// (plus one interval); without keepalive, for ever, like the library. A call that
/// outlives its deadline meanwhile keeps its concurrency permit, as a library call does.
fn silence_limit(settings: &LibvirtSettings) -> Option<Duration> {
    let interval = u64::try_from(settings.keepalive_interval)
        .ok()
        .filter(|&i| i > 0)?;
    Some(Duration::from_secs(
        interval * (u64::from(settings.keepalive_count) + 1),
    ))
}

fn note_failure(settings: &LibvirtSettings, e: &WireError) {
    if matches!(e, WireError::Remote(_)) {
        debug!(uri = %settings.uri, error = %e, "native statistics call failed; asking through libvirt's client library");
    } else if !WARNED.swap(true, Ordering::Relaxed) {
        warn!(uri = %settings.uri, error = %e,
            "native libvirt statistics client failed; libvirt's client library answers instead \
             (retried every {}s; later failures are logged at debug level)", RETRY_AFTER.as_secs());
    } else {
        debug!(uri = %settings.uri, error = %e, "native libvirt statistics client failed");
    }
}

#[cfg(test)]
mod tests {
    use super::protocol::{
        Header, Writer, HEADER_LEN, PROGRAM, STATUS_ERROR, STATUS_OK, TYPE_REPLY,
    };
    use super::xdr::Reader;
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use vadvisor_api::TypedValue;

    /// How the fake daemon answers a call to procedure `proc` (after the handshake).
    #[derive(Clone, Copy)]
    enum Answer {
        /// A reply whose body does not decode.
        Garbage,
        /// No reply at all.
        Silence,
        /// One domain's record, `state.state` = 1 (running).
        OneDomain,
        /// To `virDomainGetXMLDesc`: `<domain><uuid>HEX</uuid></domain>`, HEX the 16
        /// bytes of the UUID the call named.
        Xml,
        /// To `virDomainGetCPUStats`: once three calls are in, their replies in reverse
        /// order: `cpu_time` = 1000 × the UUID's last byte (and `user_time`, and a
        /// counter the bulk group does not have), or, when that byte is 2, an error
        /// (no such domain).
        CpuTotals,
    }

    /// The XML the fake daemon answers for the domain whose call arguments are `args`.
    fn xml_for(args: &[u8]) -> Vec<u8> {
        let mut r = Reader::new(args);
        let _name = r.bytes().expect("name");
        let uuid: String = r
            .fixed::<16>()
            .expect("uuid")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut w = Writer::default();
        w.string(&format!("<domain><uuid>{uuid}</uuid></domain>"));
        w.into_bytes()
    }

    /// The body of a statistics reply with one record: domain `vm-1`, `state.state` 1.
    fn one_domain_body() -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(1);
        w.string("vm-1");
        w.fixed(&[7u8; 16]);
        w.i32(1);
        w.u32(1);
        w.string("state.state");
        w.i32(1);
        w.i32(1);
        w.into_bytes()
    }

    /// The fake daemon's bulk statistics (see `Answer::CpuTotals`) for the call whose
    /// arguments are `args`: domains `vm-1` to `vm-3` (UUIDs ending in 1 to 3), or those
    /// the call names; `state.state` 1, with the `cpu-total` group asked `cpu.time` 7
    /// and `cpu.haltpoll.success.time` 0, with the `vcpu` group `vcpu.current` 1,
    /// `vcpu.0.time` 9 and `vcpu.0.halted` false.
    fn stats_for(args: &[u8]) -> Vec<u8> {
        let mut r = Reader::new(args);
        let n = r.u32().expect("count");
        let mut lasts = Vec::new();
        for _ in 0..n {
            let _name = r.bytes().expect("name");
            lasts.push(r.fixed::<16>().expect("uuid")[15]);
            let _id = r.i32().expect("id");
        }
        if lasts.is_empty() {
            lasts = vec![1, 2, 3];
        }
        let stats = r.u32().expect("stats");
        let (cpu, vcpu) = (stats & 2 != 0, stats & 8 != 0);
        let mut w = Writer::default();
        w.u32(lasts.len() as u32);
        for last in lasts {
            w.string(&format!("vm-{last}"));
            let mut uuid = [0u8; 16];
            uuid[15] = last;
            w.fixed(&uuid);
            w.i32(i32::from(last));
            let mut params: Vec<(&str, i32, Vec<u8>)> = vec![("state.state", 1, vec![0, 0, 0, 1])];
            if cpu {
                params.push(("cpu.time", 4, 7u64.to_be_bytes().to_vec()));
                params.push(("cpu.haltpoll.success.time", 4, 0u64.to_be_bytes().to_vec()));
            }
            if vcpu {
                params.push(("vcpu.current", 2, 1u32.to_be_bytes().to_vec()));
                params.push(("vcpu.0.halted", 6, vec![0, 0, 0, 0]));
                params.push(("vcpu.0.time", 4, 9u64.to_be_bytes().to_vec()));
            }
            w.u32(params.len() as u32);
            for (field, kind, value) in params {
                w.string(field);
                w.i32(kind);
                w.fixed(&value);
            }
        }
        w.into_bytes()
    }

    /// The fake daemon's reply to a `virDomainGetCPUStats` call (see `Answer::CpuTotals`).
    fn cpu_total_reply(s: &mut UnixStream, serial: u32, args: &[u8]) {
        let mut r = Reader::new(args);
        let _name = r.bytes().expect("name");
        let last = r.fixed::<16>().expect("uuid")[15];
        let mut w = Writer::default();
        if last == 2 {
            w.i32(42); // VIR_ERR_NO_DOMAIN
            w.i32(10);
            w.i32(1);
            w.string("Domain not found");
            respond(s, 262, serial, STATUS_ERROR, &w.into_bytes());
            return;
        }
        w.u32(3);
        for (field, value) in [("cpu_time", 1000), ("vcpu_time", 7), ("user_time", 600)] {
            w.string(field);
            w.i32(4); // ULLONG
            w.fixed(&(value * u64::from(last)).to_be_bytes());
        }
        w.i32(3);
        reply(s, 262, serial, &w.into_bytes());
    }

    /// Reads one call: (procedure, serial, its arguments).
    fn read_call_args(s: &mut UnixStream) -> Option<(i32, u32, Vec<u8>)> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
        s.read_exact(&mut body).ok()?;
        let h = Header::decode(&mut Reader::new(&body)).ok()?;
        Some((h.procedure, h.serial, body.split_off(HEADER_LEN - 4)))
    }

    fn reply(s: &mut UnixStream, procedure: i32, serial: u32, body: &[u8]) {
        respond(s, procedure, serial, STATUS_OK, body);
    }

    fn respond(s: &mut UnixStream, procedure: i32, serial: u32, status: u32, body: &[u8]) {
        let mut w = Writer::default();
        w.u32(0);
        for v in [PROGRAM, 1, procedure as u32, TYPE_REPLY, serial, status] {
            w.u32(v);
        }
        let mut msg = w.into_bytes();
        msg.extend_from_slice(body);
        let len = (msg.len() as u32).to_be_bytes();
        msg[..4].copy_from_slice(&len);
        let _ = s.write_all(&msg);
    }

    /// A daemon on a socket of its own: the handshake (no authentication, open) works,
    /// every later call gets `answer`. Serves each connection on a thread of its own.
    fn fake_daemon(answer: Answer) -> (tempfile::TempDir, LibvirtSettings) {
        let (dir, settings, _log) = logged_fake_daemon(answer);
        (dir, settings)
    }

    /// The calls a fake daemon got after the handshakes: (connection, procedure), the
    /// connections numbered from 0 in the order they came.
    type CallLog = std::sync::Arc<Mutex<Vec<(usize, i32)>>>;

    /// [`fake_daemon`], with the log of the calls it got.
    fn logged_fake_daemon(answer: Answer) -> (tempfile::TempDir, LibvirtSettings, CallLog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("libvirt-sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let log = CallLog::default();
        let daemon_log = log.clone();
        std::thread::spawn(move || {
            for (conn, s) in listener.incoming().flatten().enumerate() {
                let log = daemon_log.clone();
                std::thread::spawn(move || serve(conn, s, answer, &log));
            }
        });
        let settings = LibvirtSettings {
            uri: format!("qemu:///system?socket={}", path.display()),
            keepalive_interval: 1,
            keepalive_count: 0,
            ..LibvirtSettings::default()
        };
        (dir, settings, log)
    }

    /// One connection of a fake daemon (see [`logged_fake_daemon`]).
    fn serve(conn: usize, mut s: UnixStream, answer: Answer, log: &CallLog) {
        let mut pending: Vec<(u32, Vec<u8>)> = Vec::new();
        while let Some((procedure, serial, args)) = read_call_args(&mut s) {
            if procedure != 66 && procedure != 1 {
                log.lock().unwrap().push((conn, procedure));
            }
            match procedure {
                66 => reply(&mut s, procedure, serial, &[0, 0, 0, 1, 0, 0, 0, 0]),
                1 => reply(&mut s, procedure, serial, &[]),
                _ => match answer {
                    Answer::Garbage => reply(&mut s, procedure, serial, &[0xff; 8]),
                    Answer::Silence => {}
                    Answer::OneDomain => reply(&mut s, procedure, serial, &one_domain_body()),
                    Answer::Xml => reply(&mut s, procedure, serial, &xml_for(&args)),
                    Answer::CpuTotals if procedure == 344 => {
                        reply(&mut s, procedure, serial, &stats_for(&args))
                    }
                    Answer::CpuTotals => {
                        pending.push((serial, args));
                        if pending.len() == 3 {
                            for (serial, args) in pending.drain(..).rev() {
                                cpu_total_reply(&mut s, serial, &args);
                            }
                        }
                    }
                },
            }
        }
    }

    #[test]
    fn a_reply_that_does_not_decode_hands_the_calls_to_the_library_until_the_retry() {
        let (_dir, settings) = fake_daemon(Answer::Garbage);
        let slot = WireSlot::open(&settings);
        assert!(
            matches!(*slot.state.lock().unwrap(), State::Open(_)),
            "the handshake works"
        );
        let first = slot.call(&settings, |c| c.domain_stats(&[], 0, 0));
        assert!(
            matches!(first, Some(Err(WireError::Protocol(_)))),
            "{first:?}"
        );
        // Dropped: the library answers the next calls, without a native attempt.
        let mut tried = false;
        let next = slot.call(&settings, |_| {
            tried = true;
            Ok(())
        });
        assert!(next.is_none() && !tried);
        assert!(matches!(*slot.state.lock().unwrap(), State::Failed(_)));
        // After RETRY_AFTER it reconnects and tries again.
        *slot.state.lock().unwrap() = State::Failed(Instant::now() - RETRY_AFTER);
        let again = slot.call(&settings, |c| c.list_active_domains());
        assert!(
            matches!(again, Some(Err(WireError::Protocol(_)))),
            "{again:?}"
        );
    }

    #[test]
    fn a_silent_daemon_is_a_timeout_after_the_keepalive_span() {
        let (_dir, settings) = fake_daemon(Answer::Silence);
        assert_eq!(silence_limit(&settings), Some(Duration::from_secs(1)));
        let slot = WireSlot::open(&settings);
        let t = Instant::now();
        let r = slot.call(&settings, |c| c.domain_stats(&[], 0, 0));
        let took = t.elapsed();
        match r {
            Some(Err(e)) => assert!(e.is_timeout(), "{e:?}"),
            other => panic!("expected a timeout: {other:?}"),
        }
        assert!(took >= Duration::from_millis(900), "{took:?}");
        // No keepalive: wait as long as the library would, for ever.
        let off = LibvirtSettings {
            keepalive_interval: 0,
            ..LibvirtSettings::default()
        };
        assert_eq!(silence_limit(&off), None);
    }

    /// An awaited statistics call on `slot`'s client, as `stats` makes it.
    async fn awaited(
        slot: &WireSlot,
        settings: &LibvirtSettings,
    ) -> Option<Result<Vec<crate::ffi::RawRecord>, HypervisorError>> {
        slot.awaited(settings, "virConnectGetAllDomainStats", async |c| {
            c.domain_stats_async(&[], 0, 0).await
        })
        .await
    }

    fn registered(slot: &WireSlot) -> bool {
        matches!(&*slot.state.lock().unwrap(), State::Open(c) if c.is_registered())
    }

    fn is_open(slot: &WireSlot) -> bool {
        matches!(*slot.state.lock().unwrap(), State::Open(_))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_awaited_call_decodes_the_reply_and_gives_the_client_back() {
        let (_dir, settings) = fake_daemon(Answer::OneDomain);
        let slot = WireSlot::open(&settings);
        for _ in 0..2 {
            let records = awaited(&slot, &settings).await;
            let records = match records {
                Some(Ok(r)) => r,
                other => panic!("{other:?}"),
            };
            assert_eq!(records.len(), 1);
            assert_eq!(&*records[0].name, "vm-1");
            assert!(is_open(&slot), "back in the slot");
        }
        // Between awaited calls the socket stays registered with the reactor.
        assert!(registered(&slot), "still registered");
        // The blocking client still works on the same socket afterwards.
        let again = slot.call(&settings, |c| c.domain_stats(&[], 0, 0));
        assert!(
            matches!(again, Some(Ok(ref r)) if r.len() == 1),
            "{again:?}"
        );
        assert!(!registered(&slot), "blocking again");
        // And an awaited call after it registers it again.
        assert!(matches!(awaited(&slot, &settings).await, Some(Ok(ref r)) if r.len() == 1));
        assert!(registered(&slot));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn cpu_totals_are_asked_in_one_write_and_matched_to_replies_in_any_order() {
        let (_dir, settings) = fake_daemon(Answer::CpuTotals);
        let slot = WireSlot::open(&settings);
        let dom = |last: u8| {
            DomainId::by_uuid(&format!("5ad0a0b0-0000-4000-8000-0000000000{last:02x}"))
                .expect("a UUID")
        };
        let doms = [dom(1), dom(2), dom(3)];
        for _ in 0..2 {
            let got = slot
                .awaited(&settings, "virDomainGetCPUStats", async |c| {
                    c.domain_cpu_totals_async(&doms).await
                })
                .await;
            let Some(Ok(got)) = got else {
                panic!("{got:?}")
            };
            assert_eq!(got.len(), 3);
            // Answered last-first, each still in its call's place; the counter the bulk
            // group does not have is left out.
            let values = |i: usize| match &got[i] {
                Ok(v) => v.clone(),
                Err(e) => panic!("{e:?}"),
            };
            assert_eq!(
                values(0),
                vec![
                    ("cpu.time", TypedValue::ULLong(1000)),
                    ("cpu.user", TypedValue::ULLong(600))
                ]
            );
            assert_eq!(values(2)[0], ("cpu.time", TypedValue::ULLong(3000)));
            // The daemon's error for one domain is that domain's alone.
            assert!(
                matches!(&got[1], Err(WireError::Remote(e)) if e.code == 42),
                "{:?}",
                got[1]
            );
            assert!(is_open(&slot), "the client stays in step");
        }
    }

    /// One bulk call with `cpu-total` over `slot`'s client as the tick makes it: its
    /// records, the calls it counted, and whether CPU totals are still read per domain.
    async fn cpu_total_call(
        slot: &WireSlot,
        settings: &LibvirtSettings,
    ) -> (Vec<crate::ffi::RawRecord>, u64, bool) {
        let calls = std::sync::atomic::AtomicU64::new(0);
        let count = |n| {
            calls.fetch_add(n, Ordering::SeqCst);
        };
        let cpu_total = vadvisor_api::StatsGroups::CPU_TOTAL.0;
        let got = slot
            .awaited(settings, "virConnectGetAllDomainStats", async |c| {
                let records =
                    crate::cpu_totals::domain_stats_async(c, &[], cpu_total | 1, 0, &count).await?;
                Ok((records, c.cpu_totals_per_domain()))
            })
            .await;
        let Some(Ok((records, per_domain))) = got else {
            panic!("{got:?}")
        };
        (records, calls.load(Ordering::SeqCst), per_domain)
    }

    /// `key` of the record of domain `name`.
    fn value(records: &[crate::ffi::RawRecord], name: &str, key: &str) -> Option<TypedValue> {
        let r = records.iter().find(|r| &*r.name == name).expect(name);
        r.params.get(key).cloned()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_bulk_call_leaves_cpu_total_to_per_domain_reads_and_asks_it_for_the_rest() {
        let (_dir, settings) = fake_daemon(Answer::CpuTotals);
        let slot = WireSlot::open(&settings);
        let (records, calls, still_per_domain) = cpu_total_call(&slot, &settings).await;
        let cpu = |name: &str, key: &str| value(&records, name, key);
        // Read per domain: the cgroup counters, none of the monitor's.
        assert_eq!(cpu("vm-1", "cpu.time"), Some(TypedValue::ULLong(1000)));
        assert_eq!(cpu("vm-3", "cpu.user"), Some(TypedValue::ULLong(1800)));
        assert_eq!(cpu("vm-1", "cpu.haltpoll.success.time"), None);
        // vm-2's read failed (no such domain): the group came from a bulk call of its own.
        assert_eq!(cpu("vm-2", "cpu.time"), Some(TypedValue::ULLong(7)));
        assert_eq!(cpu("vm-2", "state.state"), Some(TypedValue::Int(1)));
        // The bulk call, three CPU reads, the follow-up.
        assert_eq!(calls, 5);
        // A domain gone meanwhile is no reason to stop reading per domain.
        assert!(still_per_domain);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_vcpu_group_is_read_from_the_threads_and_asked_of_the_daemon_for_the_rest() {
        use crate::vcpu_threads::{tests::FakeVcpu, VcpuThreads};
        let (_dir, settings, log) = logged_fake_daemon(Answer::CpuTotals);
        let slot = WireSlot::open(&settings);
        // Status files for vm-1 and vm-3, naming a vCPU thread of this process; none
        // for vm-2.
        let status = tempfile::tempdir().expect("tempdir");
        let thread = FakeVcpu::start("CPU 0/KVM-w");
        for last in [1, 3] {
            let uuid = format!("00000000-0000-0000-0000-00000000000{last}");
            let xml = crate::vcpu_threads::status_xml_for_tests(&uuid, thread.tid);
            std::fs::write(status.path().join(format!("vm-{last}.xml")), xml).expect("write");
        }
        let threads = VcpuThreads::in_dir(status.path());
        let calls = std::sync::atomic::AtomicU64::new(0);
        let count = |n| {
            calls.fetch_add(n, Ordering::SeqCst);
        };
        let groups = (vadvisor_api::StatsGroups::CPU_TOTAL | vadvisor_api::StatsGroups::VCPU).0 | 1;
        let got = slot
            .awaited(&settings, "virConnectGetAllDomainStats", async |c| {
                crate::vcpu_threads::domain_stats_async(c, &threads, &[], groups, 0, &count).await
            })
            .await;
        let Some(Ok(records)) = got else {
            panic!("{got:?}")
        };
        // vm-1 and vm-3 from the thread: not the daemon's value, nor a key only its
        // group has.
        for name in ["vm-1", "vm-3"] {
            let time = value(&records, name, "vcpu.0.time");
            assert!(
                matches!(time, Some(TypedValue::ULLong(t)) if t != 9),
                "{name}: {time:?}"
            );
            assert_eq!(value(&records, name, "vcpu.0.halted"), None, "{name}");
            assert_eq!(
                value(&records, name, "vcpu.current"),
                Some(TypedValue::UInt(1))
            );
            assert_eq!(
                value(&records, name, "vcpu.0.state"),
                Some(TypedValue::Int(1))
            );
        }
        assert_eq!(
            value(&records, "vm-1", "cpu.time"),
            Some(TypedValue::ULLong(1000))
        );
        // vm-2 has no status file: its group came from a bulk call of its own (as its
        // CPU totals did: the daemon refused its CPU read).
        assert_eq!(
            value(&records, "vm-2", "vcpu.0.time"),
            Some(TypedValue::ULLong(9))
        );
        assert_eq!(
            value(&records, "vm-2", "vcpu.0.halted"),
            Some(TypedValue::Boolean(false))
        );
        assert_eq!(
            value(&records, "vm-2", "cpu.time"),
            Some(TypedValue::ULLong(7))
        );
        // The bulk call, three CPU reads, the CPU follow-up, the vcpu follow-up.
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        let bulk = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| *p == 344)
            .count();
        assert_eq!(bulk, 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn later_calls_send_the_cpu_reads_over_a_second_connection_ahead_of_the_bulk_call() {
        let (_dir, settings, log) = logged_fake_daemon(Answer::CpuTotals);
        let slot = WireSlot::open(&settings);
        let has_reader = |slot: &WireSlot| matches!(&*slot.state.lock().unwrap(), State::Open(c) if c.has_cpu_reader());
        assert!(has_reader(&slot), "the reader opens with the client");
        for round in 0..3 {
            let (records, calls, _) = cpu_total_call(&slot, &settings).await;
            let cpu = |name: &str, key: &str| value(&records, name, key);
            assert_eq!(cpu("vm-1", "cpu.time"), Some(TypedValue::ULLong(1000)));
            assert_eq!(cpu("vm-3", "cpu.user"), Some(TypedValue::ULLong(1800)));
            assert_eq!(cpu("vm-3", "cpu.haltpoll.success.time"), None);
            // vm-2's read fails (no such domain): the follow-up bulk call fills it.
            assert_eq!(cpu("vm-2", "cpu.time"), Some(TypedValue::ULLong(7)));
            // The bulk call, three CPU reads, the follow-up: wherever they went.
            assert_eq!(calls, 5, "round {round}");
            assert!(has_reader(&slot), "round {round}: the reader stays in step");
        }
        let log = log.lock().unwrap().clone();
        let on = |conn: usize, procedure: i32| {
            log.iter()
                .filter(|&&(c, p)| c == conn && p == procedure)
                .count()
        };
        // The first call knew no domains yet: its CPU reads went over the main
        // connection after the bulk call. The next two sent theirs over the reader.
        assert_eq!(on(0, 262), 3, "{log:?}");
        assert_eq!(on(1, 262), 6, "{log:?}");
        // Only CPU reads on the reader; the bulk calls and follow-ups on the main one.
        assert_eq!(on(1, 344), 0, "{log:?}");
        assert_eq!(on(0, 344), 6, "{log:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_domain_s_xml_is_asked_by_its_uuid_awaited_and_blocking() {
        let (_dir, settings) = fake_daemon(Answer::Xml);
        let slot = WireSlot::open(&settings);
        let dom = DomainId::by_uuid("5ad0a0b0-0000-4000-8000-00000000000c").expect("a UUID");
        let want = "<domain><uuid>5ad0a0b000004000800000000000000c</uuid></domain>";
        let mut taken = slot.take_open().expect("open");
        let got = taken
            .client()
            .expect("client")
            .domain_xml_async(&dom, 0)
            .await;
        let got = taken.settle(&settings, "virDomainGetXMLDesc", got);
        assert!(matches!(got, Some(Ok(ref x)) if x == want), "{got:?}");
        let blocking = slot.call(&settings, |c| c.domain_xml(&dom, 0));
        assert!(
            matches!(blocking, Some(Ok(ref x)) if x == want),
            "{blocking:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_caller_waiting_for_the_client_gets_it_when_it_is_given_back() {
        let (_dir, settings) = fake_daemon(Answer::OneDomain);
        let slot = WireSlot::open(&settings);
        let taken = slot.take_open().expect("open");
        let waiting = slot.take_open_waiting();
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut waiting)
                .await
                .is_err(),
            "it waits while another call has the client"
        );
        assert!(matches!(
            taken.settle(&settings, "test", Ok::<(), WireError>(())),
            Some(Ok(()))
        ));
        let got = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("woken when the client was given back");
        let mut got = got.expect("the client");
        assert!(got.client().is_some());
        drop(got);
        // Dropped unsettled: closed, so a waiter does not wait for it.
        let closed = tokio::time::timeout(Duration::from_secs(2), slot.take_open_waiting())
            .await
            .expect("no wait for a closed client");
        assert!(closed.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn while_taken_the_client_is_not_used_by_anyone_else() {
        let (_dir, settings) = fake_daemon(Answer::OneDomain);
        let slot = WireSlot::open(&settings);
        let taken = slot.take_open().expect("open");
        assert!(slot.take_open().is_none());
        assert!(
            slot.call(&settings, |_| Ok(())).is_none(),
            "the library answers"
        );
        drop(taken);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_awaited_call_to_a_silent_daemon_times_out_and_drops_the_client() {
        let (_dir, settings) = fake_daemon(Answer::Silence);
        let slot = WireSlot::open(&settings);
        let t = std::time::Instant::now();
        match awaited(&slot, &settings).await {
            Some(Err(HypervisorError::Call { message, .. })) => {
                assert!(message.contains("no answer"), "{message}")
            }
            other => panic!("expected a timeout: {other:?}"),
        }
        assert!(t.elapsed() >= Duration::from_millis(900));
        assert!(matches!(*slot.state.lock().unwrap(), State::Failed(_)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_awaited_reply_that_does_not_decode_hands_the_calls_to_the_library() {
        let (_dir, settings) = fake_daemon(Answer::Garbage);
        let slot = WireSlot::open(&settings);
        assert!(awaited(&slot, &settings).await.is_none());
        assert!(matches!(*slot.state.lock().unwrap(), State::Failed(_)));
        assert!(slot.take_open().is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_awaited_call_abandoned_midway_closes_the_client_and_a_new_one_is_opened() {
        let (_dir, settings) = fake_daemon(Answer::Silence);
        let slot = WireSlot::open(&settings);
        {
            let mut taken = slot.take_open().expect("open");
            let client = taken.client().expect("client");
            let abandoned = tokio::time::timeout(
                Duration::from_millis(50),
                client.domain_stats_async(&[], 0, 0),
            )
            .await;
            assert!(abandoned.is_err(), "still waiting when dropped");
        }
        assert!(matches!(*slot.state.lock().unwrap(), State::Closed));
        // The next blocking use opens a new connection (the handshake works).
        let _ = slot.call(&settings, |_| Ok(()));
        assert!(is_open(&slot));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_host_counter_counts_are_asked_once_per_connection() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("libvirt-sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let count_asked = Arc::new(AtomicUsize::new(0));
        let asked = Arc::clone(&count_asked);
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let asked = Arc::clone(&asked);
                std::thread::spawn(move || {
                    while let Some((procedure, serial, args)) = read_call_args(&mut s) {
                        match procedure {
                            66 => reply(&mut s, procedure, serial, &[0, 0, 0, 1, 0, 0, 0, 0]),
                            1 => reply(&mut s, procedure, serial, &[]),
                            227 => {
                                // cpuNum, nparams, flags: the daemon has two counters.
                                let nparams =
                                    i32::from_be_bytes([args[4], args[5], args[6], args[7]]);
                                let mut w = Writer::default();
                                if nparams == 0 {
                                    asked.fetch_add(1, Ordering::SeqCst);
                                    w.u32(0);
                                } else {
                                    w.u32(2);
                                    w.string("user");
                                    w.u32(0);
                                    w.u32(11);
                                    w.string("system");
                                    w.u32(0);
                                    w.u32(22);
                                }
                                w.i32(2);
                                reply(&mut s, procedure, serial, &w.into_bytes());
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        let settings = LibvirtSettings {
            uri: format!("qemu:///system?socket={}", path.display()),
            ..LibvirtSettings::default()
        };
        let slot = WireSlot::open(&settings);
        for _ in 0..3 {
            let mut taken = slot.take_open().expect("open and free");
            let result = {
                let client = taken.client().expect("a client");
                client.node_cpu_stats_async().await
            };
            let got = taken.settle(&settings, "virNodeGetCPUStats", result);
            match got {
                Some(Ok(v)) => {
                    assert_eq!(v, [("user".to_string(), 11), ("system".to_string(), 22)])
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            count_asked.load(Ordering::SeqCst),
            1,
            "asked once, not per call"
        );
    }

    /// The body of a host counters reply (`virNodeGetCPUStats`, `…MemoryStats`): the
    /// counters asked for (`nparams` > 0; none when 0), then the count the daemon has;
    /// `Err` with an error body when `nparams` is not that count.
    fn node_counters_body(nparams: i32, counters: &[(&str, u32)]) -> Result<Vec<u8>, Vec<u8>> {
        let mut w = Writer::default();
        if nparams != 0 && nparams != counters.len() as i32 {
            w.i32(8); // VIR_ERR_INVALID_ARG
            w.i32(10);
            w.i32(1);
            w.string("nparams");
            return Err(w.into_bytes());
        }
        if nparams == 0 {
            w.u32(0);
        } else {
            w.u32(counters.len() as u32);
            for (name, value) in counters {
                w.string(name);
                w.u32(0);
                w.u32(*value);
            }
        }
        w.i32(counters.len() as i32);
        Ok(w.into_bytes())
    }

    /// The reply body a fake daemon gives a host call (`procedure`, `args`), with `cpu`
    /// its CPU counters (`Err`: an error reply); `None` for other calls.
    fn host_reply_body(
        procedure: i32,
        args: &[u8],
        cpu: &[(&str, u32)],
    ) -> Option<Result<Vec<u8>, Vec<u8>>> {
        let int_at =
            |at: usize| i32::from_be_bytes([args[at], args[at + 1], args[at + 2], args[at + 3]]);
        let mut w = Writer::default();
        Some(Ok(match procedure {
            6 => {
                for c in b"x86_64".iter().chain(&[0u8; 26]) {
                    w.u32(u32::from(*c));
                }
                w.u32(0);
                w.u32(1 << 20); // memory, KiB
                for count in [2, 2400, 1, 1, 2, 1] {
                    w.i32(count);
                }
                w.into_bytes()
            }
            227 => return Some(node_counters_body(int_at(4), cpu)),
            228 => {
                let memory = [("total", 33), ("free", 44), ("cached", 55)];
                return Some(node_counters_body(int_at(0), &memory));
            }
            102 => {
                w.u32(0);
                w.u32(777);
                w.into_bytes()
            }
            _ => return None,
        }))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_host_counters_go_in_one_write_once_their_counts_are_known() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("libvirt-sock");
        let listener = UnixListener::bind(&path).expect("bind");
        // Per host call: whether the next call had already arrived when it was read.
        let log: Arc<Mutex<Vec<(i32, bool)>>> = Arc::default();
        let daemon_log = Arc::clone(&log);
        // Set before the last round: the host then has a third CPU counter.
        let grown = Arc::new(AtomicBool::new(false));
        let daemon_grown = Arc::clone(&grown);
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let log = Arc::clone(&daemon_log);
                let grown = Arc::clone(&daemon_grown);
                std::thread::spawn(move || {
                    // Calls that arrived together are answered together, last first.
                    let mut held: Vec<(i32, u32, Vec<u8>)> = Vec::new();
                    while let Some((procedure, serial, args)) = read_call_args(&mut s) {
                        match procedure {
                            66 => reply(&mut s, procedure, serial, &[0, 0, 0, 1, 0, 0, 0, 0]),
                            1 => reply(&mut s, procedure, serial, &[]),
                            _ => {
                                std::thread::sleep(std::time::Duration::from_millis(20));
                                let more = rustix::io::ioctl_fionread(&s).is_ok_and(|n| n > 0);
                                log.lock().unwrap().push((procedure, more));
                                held.push((procedure, serial, args));
                                let cpu: &[(&str, u32)] = if grown.load(Ordering::SeqCst) {
                                    &[("user", 11), ("system", 22), ("idle", 99)]
                                } else {
                                    &[("user", 11), ("system", 22)]
                                };
                                if !more {
                                    for (procedure, serial, args) in held.drain(..).rev() {
                                        match host_reply_body(procedure, &args, cpu) {
                                            Some(Ok(body)) => {
                                                reply(&mut s, procedure, serial, &body)
                                            }
                                            Some(Err(error)) => respond(
                                                &mut s,
                                                procedure,
                                                serial,
                                                STATUS_ERROR,
                                                &error,
                                            ),
                                            None => {}
                                        }
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        let settings = LibvirtSettings {
            uri: format!("qemu:///system?socket={}", path.display()),
            ..LibvirtSettings::default()
        };
        let slot = WireSlot::open(&settings);
        for round in 0..3 {
            grown.store(round == 2, Ordering::SeqCst);
            let mut taken = slot.take_open().expect("open and free");
            let result = {
                let client = taken.client().expect("a client");
                client.host_counters_async().await
            };
            let host = result.expect("the host counters");
            assert_eq!(
                (
                    host.info.model.as_str(),
                    host.info.memory_kib,
                    host.info.mhz
                ),
                ("x86_64", 1 << 20, 2400),
                "round {round}"
            );
            let mut cpu = vec![("user".to_string(), 11), ("system".to_string(), 22)];
            if round == 2 {
                cpu.push(("idle".to_string(), 99));
            }
            assert_eq!(host.cpu.expect("cpu"), cpu, "round {round}");
            assert_eq!(
                host.memory.expect("memory"),
                [
                    ("total".to_string(), 33),
                    ("free".to_string(), 44),
                    ("cached".to_string(), 55)
                ]
            );
            assert_eq!(host.free_memory.expect("free memory"), 777);
            taken.settle(&settings, "virNodeGetInfo", Ok::<(), WireError>(()));
        }
        let log = log.lock().unwrap().clone();
        let procedures: Vec<i32> = log.iter().map(|(p, _)| *p).collect();
        // First: one by one, each counter's count asked before its values. Then the
        // four calls at once, twice; the second time the CPU count has changed, so the
        // daemon refuses that call, and the count and counters are asked again.
        assert_eq!(
            procedures,
            [6, 227, 227, 228, 228, 102, 6, 227, 228, 102, 6, 227, 228, 102, 227, 227]
        );
        let together: Vec<bool> = log.iter().map(|(_, more)| *more).collect();
        assert!(together[..6].iter().all(|more| !more), "{log:?}");
        for batch in [&together[6..10], &together[10..14]] {
            assert_eq!(batch, [true, true, true, false], "{log:?}");
        }
        assert_eq!(together[14..], [false, false], "{log:?}");
    }

    #[test]
    fn a_uri_without_a_local_socket_or_the_library_setting_never_goes_native() {
        for settings in [
            LibvirtSettings {
                uri: "test:///default".into(),
                ..LibvirtSettings::default()
            },
            LibvirtSettings {
                uri: "qemu:///system?socket=/nonexistent/sock".into(),
                stats_transport: StatsTransport::Library,
                ..LibvirtSettings::default()
            },
        ] {
            let slot = WireSlot::open(&settings);
            assert!(
                matches!(*slot.state.lock().unwrap(), State::Off),
                "{settings:?}"
            );
            assert!(slot.call(&settings, |_| Ok(())).is_none());
        }
    }
}
