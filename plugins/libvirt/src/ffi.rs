//! The raw libvirt shim: the only module of this crate with `unsafe` code. It owns
//! everything the `virt` 0.5 crate gets wrong or does not wrap:
//!
//! - typed-parameter conversion (`virTypedParameter` array → owned `(String, TypedValue)`);
//! - `virConnectGetAllDomainStats`, copied into owned [`RawRecord`]s and freed with
//!   `virDomainStatsRecordListFree` (the `virt` wrapper leaks every record);
//! - `virDomainGetState`, `virDomainGetBlockInfo` with checked return codes (the `virt`
//!   wrappers ignore errors and read uninitialised memory);
//! - `virDomainGetVcpus` and the one-shot `virDomainGetCPUStats` total (no or wasteful
//!   wrappers in `virt`);
//! - the connection close callback (`virConnectRegisterCloseCallback`), with correct
//!   ownership of its opaque pointer whatever the driver does with it;
//! - the domain lifecycle event callback (`virConnectDomainEventRegisterAny` for
//!   `VIR_DOMAIN_EVENT_ID_LIFECYCLE`), whose `opaque` is a registry key, not a pointer;
//! - a periodic no-op event-loop timer (the `virt` wrapper mishandles its error path).
//!
//! Every function here returns owned Rust values and never panics on libvirt output.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::fmt;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vadvisor_api::TypedValue;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::Error;
use virt::sys;

/// Owned typed parameters, in libvirt's order.
pub type Params = Vec<(String, TypedValue)>;

/// Reads a fixed-size C character array up to its first NUL (or its end, when libvirt
/// filled it completely), decoding invalid UTF-8 lossily.
fn c_array_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Converts one typed parameter; `None` for a type this crate does not know.
///
/// # Safety
///
/// When `p.type_` is `VIR_TYPED_PARAM_STRING`, `p.value.s` must be null or point to a
/// NUL-terminated string that stays valid for the duration of the call.
unsafe fn param_from_raw(p: &sys::virTypedParameter) -> Option<(String, TypedValue)> {
    let name = c_array_to_string(&p.field);
    let Ok(kind) = u32::try_from(p.type_) else {
        return None;
    };
    // SAFETY: libvirt (or the caller) set `type_` to say which union member is
    // initialised; we read exactly that member. Every member is plain old data except the
    // string pointer, whose validity the caller guarantees.
    let value = unsafe {
        match kind {
            sys::VIR_TYPED_PARAM_INT => TypedValue::Int(p.value.i),
            sys::VIR_TYPED_PARAM_UINT => TypedValue::UInt(p.value.ui),
            sys::VIR_TYPED_PARAM_LLONG => TypedValue::LLong(p.value.l),
            sys::VIR_TYPED_PARAM_ULLONG => TypedValue::ULLong(p.value.ul),
            sys::VIR_TYPED_PARAM_DOUBLE => TypedValue::Double(p.value.d),
            sys::VIR_TYPED_PARAM_BOOLEAN => TypedValue::Boolean(p.value.b != 0),
            sys::VIR_TYPED_PARAM_STRING => {
                let s = p.value.s;
                if s.is_null() {
                    TypedValue::String(String::new())
                } else {
                    TypedValue::String(CStr::from_ptr(s).to_string_lossy().into_owned())
                }
            }
            _ => return None,
        }
    };
    Some((name, value))
}

/// Copies a `virTypedParameter` array into owned values. Parameters of an unknown type
/// are skipped; names and strings that are not UTF-8 are decoded lossily. A null pointer
/// or a non-positive count gives an empty list.
///
/// # Safety
///
/// `params` must be null or point to `nparams` initialised `virTypedParameter`s, and
/// every string-typed entry must hold null or a valid NUL-terminated string, all valid
/// for the duration of the call. The array is only read, never freed.
pub unsafe fn params_from_raw(params: *const sys::virTypedParameter, nparams: c_int) -> Params {
    let Ok(n) = usize::try_from(nparams) else {
        return Vec::new();
    };
    if params.is_null() || n == 0 {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `params` points to `n` initialised elements.
    let slice = unsafe { std::slice::from_raw_parts(params, n) };
    slice
        .iter()
        // SAFETY: the caller guarantees the string members are valid.
        .filter_map(|p| unsafe { param_from_raw(p) })
        .collect()
}

/// A zeroed typed parameter, for output buffers.
fn empty_param() -> sys::virTypedParameter {
    sys::virTypedParameter {
        field: [0; sys::VIR_TYPED_PARAM_FIELD_LENGTH as usize],
        type_: 0,
        value: sys::_virTypedParameter__bindgen_ty_1 { ul: 0 },
    }
}

/// One domain of a `virConnectGetAllDomainStats` reply, fully owned.
pub struct RawRecord {
    /// Lower-case dashed UUID.
    pub uuid: String,
    pub name: String,
    /// The record's typed parameters (`state.state`, `cpu.time`, …).
    pub params: Params,
    /// An extra reference to the record's domain, for per-domain fallback calls.
    pub domain: Domain,
}

impl fmt::Debug for RawRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRecord")
            .field("uuid", &self.uuid)
            .field("name", &self.name)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Frees a `virConnectGetAllDomainStats` list when dropped, whatever happened while it
/// was being copied.
struct RecordList(*mut sys::virDomainStatsRecordPtr);

impl Drop for RecordList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful virConnectGetAllDomainStats and is
            // freed exactly once, here. This frees every record, its params (strings
            // included), its domain reference and the array itself.
            unsafe { sys::virDomainStatsRecordListFree(self.0) };
        }
    }
}

/// Copies one record; the record itself stays owned by the list.
fn copy_record(rec: &sys::virDomainStatsRecord) -> Result<Option<RawRecord>, Error> {
    if rec.dom.is_null() {
        return Ok(None);
    }
    let mut uuid_buf: [c_char; sys::VIR_UUID_STRING_BUFLEN as usize] =
        [0; sys::VIR_UUID_STRING_BUFLEN as usize];
    // SAFETY: `rec.dom` is a valid domain owned by the record list (alive until the list
    // is freed); the buffer has the VIR_UUID_STRING_BUFLEN bytes libvirt writes.
    if unsafe { sys::virDomainGetUUIDString(rec.dom, uuid_buf.as_mut_ptr()) } < 0 {
        return Err(Error::last_error());
    }
    let uuid = c_array_to_string(&uuid_buf);
    // SAFETY: as above; the returned name is owned by the domain object and copied at once.
    let name_ptr = unsafe { sys::virDomainGetName(rec.dom) };
    if name_ptr.is_null() {
        return Err(Error::last_error());
    }
    // SAFETY: non-null, NUL-terminated, owned by the still-alive domain object.
    let name = unsafe { CStr::from_ptr(name_ptr) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: `rec.params` holds `rec.nparams` parameters that libvirt initialised,
    // string members included; they stay valid until the list is freed.
    let params = unsafe { params_from_raw(rec.params, rec.nparams) };
    // SAFETY: `rec.dom` is valid; virDomainRef adds a reference that the new `Domain`
    // owns and releases with virDomainFree when dropped, independently of the list.
    if unsafe { sys::virDomainRef(rec.dom) } < 0 {
        return Err(Error::last_error());
    }
    // SAFETY: we own the reference taken just above.
    let domain = unsafe { Domain::from_ptr(rec.dom) };
    Ok(Some(RawRecord {
        uuid,
        name,
        params,
        domain,
    }))
}

/// `virConnectGetAllDomainStats(conn, stats, flags)`, copied into owned records. The
/// libvirt list is always freed with `virDomainStatsRecordListFree`, also when copying
/// a record fails half-way.
pub fn get_all_domain_stats(
    conn: &Connect,
    stats: u32,
    flags: u32,
) -> Result<Vec<RawRecord>, Error> {
    let mut list: *mut sys::virDomainStatsRecordPtr = ptr::null_mut();
    // SAFETY: `conn` keeps its connection alive for the whole call; `list` is a valid
    // out-pointer that libvirt sets to a freshly allocated, NULL-terminated array.
    let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), stats, &mut list, flags) };
    if n < 0 {
        return Err(Error::last_error());
    }
    let list = RecordList(list);
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    if list.0.is_null() {
        return Ok(out);
    }
    for i in 0..usize::try_from(n).unwrap_or(0) {
        // SAFETY: libvirt returned `n` records followed by a NULL terminator, so index
        // `i < n` is in bounds.
        let rec_ptr = unsafe { *list.0.add(i) };
        if rec_ptr.is_null() {
            break;
        }
        // SAFETY: non-null record owned by `list`, alive until `list` is dropped below.
        let rec = unsafe { &*rec_ptr };
        if let Some(r) = copy_record(rec)? {
            out.push(r);
        }
    }
    drop(list);
    Ok(out)
}

/// `virDomainGetState` with its return code checked: `(state, reason)`.
pub fn domain_state(dom: &Domain) -> Result<(u32, u32), Error> {
    let mut state: c_int = 0;
    let mut reason: c_int = 0;
    // SAFETY: `dom` keeps its domain alive for the call; both out-pointers are valid.
    let rc = unsafe { sys::virDomainGetState(dom.as_ptr(), &mut state, &mut reason, 0) };
    if rc < 0 {
        return Err(Error::last_error());
    }
    Ok((
        u32::try_from(state).unwrap_or(0),
        u32::try_from(reason).unwrap_or(0),
    ))
}

/// `virDomainGetBlockInfo` with its return code checked: `(capacity, allocation, physical)`
/// in bytes.
pub fn block_info(dom: &Domain, disk: &str) -> Result<(u64, u64, u64), Error> {
    let disk = CString::new(disk)?;
    let mut info = sys::virDomainBlockInfo {
        capacity: 0,
        allocation: 0,
        physical: 0,
    };
    // SAFETY: `dom` is alive for the call, `disk` is NUL-terminated, `info` is a valid
    // out-struct that we initialised ourselves (so nothing uninitialised is read even if
    // libvirt fails half-way).
    let rc = unsafe { sys::virDomainGetBlockInfo(dom.as_ptr(), disk.as_ptr(), &mut info, 0) };
    if rc < 0 {
        return Err(Error::last_error());
    }
    Ok((info.capacity, info.allocation, info.physical))
}

/// One entry of `virDomainGetVcpus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuInfo {
    /// The vCPU id (may be non-contiguous with vCPU hot-plug).
    pub number: u32,
    /// `virVcpuState`: 0 offline, 1 running, 2 blocked.
    pub state: i32,
    /// CPU time used, in nanoseconds.
    pub cpu_time: u64,
}

/// `virDomainGetVcpus` for at most `max` vCPUs (without CPU maps).
pub fn vcpu_info(dom: &Domain, max: u32) -> Result<Vec<VcpuInfo>, Error> {
    let max = max.clamp(1, 16_384);
    let mut buf = vec![
        sys::virVcpuInfo {
            number: 0,
            state: 0,
            cpuTime: 0,
            cpu: 0
        };
        max as usize
    ];
    // SAFETY: `dom` is alive; `buf` holds `max` writable entries; no CPU maps requested
    // (null pointer with length 0 is the documented way to skip them).
    let rc = unsafe {
        sys::virDomainGetVcpus(
            dom.as_ptr(),
            buf.as_mut_ptr(),
            max as c_int,
            ptr::null_mut(),
            0,
        )
    };
    if rc < 0 {
        return Err(Error::last_error());
    }
    buf.truncate(usize::try_from(rc).unwrap_or(0));
    Ok(buf
        .iter()
        .map(|v| VcpuInfo {
            number: v.number,
            state: v.state,
            cpu_time: v.cpuTime,
        })
        .collect())
}

/// The domain's total CPU statistics (`virDomainGetCPUStats(dom, params, N, -1, 1, 0)`)
/// in ONE call: `cpu_time`, `user_time`, `system_time`, … in nanoseconds.
pub fn cpu_total_stats(dom: &Domain) -> Result<Params, Error> {
    const CAPACITY: usize = 16;
    let mut buf: Vec<sys::virTypedParameter> = (0..CAPACITY).map(|_| empty_param()).collect();
    // SAFETY: `dom` is alive; `buf` holds CAPACITY writable parameters and we pass that
    // count, so libvirt writes at most CAPACITY entries.
    let rc = unsafe {
        sys::virDomainGetCPUStats(dom.as_ptr(), buf.as_mut_ptr(), CAPACITY as c_uint, -1, 1, 0)
    };
    if rc < 0 {
        return Err(Error::last_error());
    }
    let n = usize::try_from(rc).unwrap_or(0).min(CAPACITY);
    // SAFETY: libvirt initialised the first `n` entries (the rest are our zeroed ones,
    // which are skipped as an unknown type anyway).
    let out = unsafe { params_from_raw(buf.as_ptr(), n as c_int) };
    // SAFETY: frees the strings libvirt may have allocated in the first `n` entries; the
    // array itself is Rust-owned and is not freed by virTypedParamsClear.
    unsafe { sys::virTypedParamsClear(buf.as_mut_ptr(), n as c_int) };
    Ok(out)
}

/// Shared between a registered close callback and its owner.
pub struct CloseSignal {
    fired: AtomicBool,
    reason: AtomicI32,
    freed: AtomicBool,
    on_close: Box<dyn Fn(i32) + Send + Sync>,
}

impl CloseSignal {
    /// The close reason (`VIR_CONNECT_CLOSE_REASON_*`) once the callback fired.
    pub fn fired(&self) -> Option<i32> {
        self.fired
            .load(Ordering::SeqCst)
            .then(|| self.reason.load(Ordering::SeqCst))
    }
}

unsafe extern "C" fn close_trampoline(
    _conn: sys::virConnectPtr,
    reason: c_int,
    opaque: *mut c_void,
) {
    if opaque.is_null() {
        return;
    }
    // SAFETY: `opaque` is the `Arc<CloseSignal>` we handed to libvirt at registration;
    // libvirt only calls the callback before it calls the free callback, so the
    // reference count we gave it is still held.
    let signal = unsafe { &*(opaque as *const CloseSignal) };
    signal.reason.store(reason, Ordering::SeqCst);
    signal.fired.store(true, Ordering::SeqCst);
    // Never unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (signal.on_close)(reason)));
}

unsafe extern "C" fn close_free(opaque: *mut c_void) {
    if opaque.is_null() {
        return;
    }
    // SAFETY: `opaque` came from `Arc::into_raw` at registration and libvirt calls the
    // free callback once; this gives back the reference count libvirt held.
    let signal = unsafe { Arc::from_raw(opaque as *const CloseSignal) };
    signal.freed.store(true, Ordering::SeqCst);
}

/// A registered `virConnectRegisterCloseCallback`. Dropping it unregisters the callback
/// (which also drops libvirt's reference on the connection) and releases the opaque
/// pointer exactly once:
///
/// - drivers that keep the callback (the remote driver: `qemu:///system`, …) call the
///   free callback when it is unregistered or after it fired;
/// - drivers without close-callback support (the `test` driver) accept the registration
///   but never call anything, so the reference is reclaimed here after a successful
///   unregister that did not free it.
pub struct CloseCallback {
    conn: Connect,
    signal: Arc<CloseSignal>,
    opaque: *const CloseSignal,
}

// SAFETY: `opaque` is only an identity for an `Arc<CloseSignal>` (which is Send + Sync);
// it is dereferenced solely in `Drop`, once, after libvirt has let go of it.
unsafe impl Send for CloseCallback {}
// SAFETY: no method reads through `opaque`; shared access only touches the Arc.
unsafe impl Sync for CloseCallback {}

impl CloseCallback {
    /// Registers `on_close(reason)` to run (on the libvirt event-loop thread) when the
    /// connection closes for any reason other than our own close. `on_close` must not
    /// block and must not call back into libvirt.
    pub fn register(
        conn: &Connect,
        on_close: impl Fn(i32) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let signal = Arc::new(CloseSignal {
            fired: AtomicBool::new(false),
            reason: AtomicI32::new(-1),
            freed: AtomicBool::new(false),
            on_close: Box::new(on_close),
        });
        let opaque = Arc::into_raw(Arc::clone(&signal));
        // SAFETY: the connection is alive; the callbacks have the C ABI libvirt expects;
        // `opaque` carries one Arc reference that libvirt hands back to `close_free`.
        let rc = unsafe {
            sys::virConnectRegisterCloseCallback(
                conn.as_ptr(),
                Some(close_trampoline),
                opaque as *mut c_void,
                Some(close_free),
            )
        };
        if rc < 0 {
            let err = Error::last_error();
            // SAFETY: registration failed, so libvirt did not keep `opaque` and will never
            // call the free callback: take the reference back.
            drop(unsafe { Arc::from_raw(opaque) });
            return Err(err);
        }
        Ok(Self {
            conn: conn.clone(),
            signal,
            opaque,
        })
    }

    /// The close reason once the callback fired.
    pub fn fired(&self) -> Option<i32> {
        self.signal.fired()
    }

    /// A weak handle on the shared signal, to check in tests that it is released.
    pub fn signal_weak(&self) -> std::sync::Weak<CloseSignal> {
        Arc::downgrade(&self.signal)
    }
}

impl Drop for CloseCallback {
    fn drop(&mut self) {
        // SAFETY: our `conn` clone keeps the connection alive; unregistering a callback
        // that already fired (or was never stored) is harmless and only returns an error.
        let rc = unsafe {
            sys::virConnectUnregisterCloseCallback(self.conn.as_ptr(), Some(close_trampoline))
        };
        if !self.signal.freed.load(Ordering::SeqCst) && rc == 0 {
            // SAFETY: unregistering succeeded and the free callback did not run: the driver
            // does not store close callbacks (test driver), so libvirt holds no copy of
            // `opaque` and we own its reference. The free callback runs synchronously under
            // libvirt's lock in drivers that do store it, so it cannot run later.
            drop(unsafe { Arc::from_raw(self.opaque) });
        }
        // If unregistering failed and nothing freed the opaque, leak one small
        // allocation rather than risk a double free.
    }
}

/// One lifecycle event as libvirt delivered it (`VIR_DOMAIN_EVENT_ID_LIFECYCLE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawLifecycle {
    /// Lower-case dashed UUID.
    pub uuid: String,
    pub name: String,
    /// `virDomainEventType` (0 defined … 8 crashed).
    pub event: i32,
    /// The event's detail code (`virDomainEvent<Type>DetailType`).
    pub detail: i32,
}

/// What a lifecycle registration shares with the libvirt callbacks.
pub struct LifecycleShared {
    sink: Box<dyn Fn(RawLifecycle) + Send + Sync>,
    /// libvirt called the free callback (it let go of the registration).
    released_by_libvirt: AtomicBool,
}

/// The live lifecycle registrations, by key. libvirt's `opaque` is the key, never a
/// pointer: the callbacks look the key up here, so a late or repeated callback (or free
/// callback) for a registration that is gone finds nothing and does nothing. Whoever
/// removes an entry first — libvirt's free callback, a failed registration, or `Drop` —
/// releases the shared state, exactly once; keys are never reused.
static LIFECYCLE_SINKS: Mutex<BTreeMap<usize, Arc<LifecycleShared>>> = Mutex::new(BTreeMap::new());
static NEXT_LIFECYCLE_KEY: AtomicUsize = AtomicUsize::new(1);

fn lifecycle_sinks() -> MutexGuard<'static, BTreeMap<usize, Arc<LifecycleShared>>> {
    LIFECYCLE_SINKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The UUID string and name of a domain handed to a callback (local calls, no RPC).
///
/// # Safety
///
/// `dom` must be a valid domain pointer for the duration of the call.
unsafe fn domain_identity(dom: sys::virDomainPtr) -> Option<(String, String)> {
    let mut uuid_buf: [c_char; sys::VIR_UUID_STRING_BUFLEN as usize] =
        [0; sys::VIR_UUID_STRING_BUFLEN as usize];
    // SAFETY: the caller guarantees `dom` is valid; the buffer has the
    // VIR_UUID_STRING_BUFLEN bytes libvirt writes. The UUID is stored in the domain
    // object: no RPC.
    if unsafe { sys::virDomainGetUUIDString(dom, uuid_buf.as_mut_ptr()) } < 0 {
        return None;
    }
    // SAFETY: as above; the name is owned by the domain object (no RPC).
    let name_ptr = unsafe { sys::virDomainGetName(dom) };
    if name_ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated, owned by the domain object, copied at once.
    let name = unsafe { CStr::from_ptr(name_ptr) }
        .to_string_lossy()
        .into_owned();
    Some((c_array_to_string(&uuid_buf), name))
}

/// The `virConnectDomainEventCallback` signature of lifecycle events.
type LifecycleCallback =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void) -> c_int;

/// The generic signature `virConnectDomainEventRegisterAny` takes.
type GenericCallback = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);

unsafe extern "C" fn lifecycle_trampoline(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    let Some(shared) = lifecycle_sinks().get(&opaque.addr()).cloned() else {
        return 0;
    };
    if dom.is_null() {
        return 0;
    }
    // SAFETY: libvirt passes a domain that stays valid for the duration of the callback.
    let Some((uuid, name)) = (unsafe { domain_identity(dom) }) else {
        return 0;
    };
    let raw = RawLifecycle {
        uuid,
        name,
        event,
        detail,
    };
    // Never unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (shared.sink)(raw)));
    0
}

unsafe extern "C" fn lifecycle_free(opaque: *mut c_void) {
    if let Some(shared) = lifecycle_sinks().remove(&opaque.addr()) {
        shared.released_by_libvirt.store(true, Ordering::SeqCst);
    }
}

/// What happened when a [`LifecycleRegistration`] was deregistered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deregistered {
    /// `virConnectDomainEventDeregisterAny` succeeded (it fails on a dead remote
    /// connection after the local part is done, which is harmless).
    pub accepted: bool,
    /// libvirt called the free callback before deregistration returned.
    pub released_by_libvirt: bool,
}

/// A registered `virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
/// …)` for every domain of one connection. The sink runs on libvirt's event-loop thread
/// and must never block. Dropping the registration deregisters it (before the connection
/// it holds is released) and releases the sink exactly once, whatever the driver does:
///
/// - the test and remote drivers call the free callback from the deregistration itself,
///   or, when the deregistration races with an event being dispatched, right after that
///   dispatch (libvirt only marks the callback deleted while dispatching); a remote
///   deregistration on a dead connection does the local part (and the free callback)
///   and then fails its RPC (measured in the lab);
/// - `opaque` is a key into a registry, not a pointer, so a free callback that comes
///   late, never, or after our own release is harmless.
///
/// Unlike [`CloseCallback`], ownership cannot be decided from return codes: when the
/// remote driver's registration RPC fails, libvirt removes the callback without calling
/// the free callback — unless an event dispatch is in progress, in which case it only
/// marks it deleted and the purge after the dispatch does call it. Reclaiming an
/// `Arc::into_raw` pointer after a failed registration could therefore free it twice;
/// with a key, double release is impossible by construction.
pub struct LifecycleRegistration {
    conn: Connect,
    id: c_int,
    key: usize,
    shared: Arc<LifecycleShared>,
    done: bool,
}

impl LifecycleRegistration {
    /// Registers `sink` for the lifecycle events of every domain of `conn`. Events are
    /// delivered only while libvirt's event loop runs (`virEventRunDefaultImpl`). `sink`
    /// runs on the event-loop thread: it must not block and must not call libvirt.
    ///
    /// One registration per connection at a time: libvirt tracks a (callback, event)
    /// pair once per connection and refuses a second one ("event callback already
    /// tracked"); fan out from the one sink instead.
    pub fn register(
        conn: &Connect,
        sink: impl Fn(RawLifecycle) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        Self::register_event_id(conn, sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int, sink)
    }

    /// `register` with another event id, for the failure-path test only: the trampoline
    /// has the lifecycle signature, so libvirt must refuse `event_id`.
    fn register_event_id(
        conn: &Connect,
        event_id: c_int,
        sink: impl Fn(RawLifecycle) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let shared = Arc::new(LifecycleShared {
            sink: Box::new(sink),
            released_by_libvirt: AtomicBool::new(false),
        });
        let key = NEXT_LIFECYCLE_KEY.fetch_add(1, Ordering::Relaxed);
        lifecycle_sinks().insert(key, Arc::clone(&shared));
        let trampoline: LifecycleCallback = lifecycle_trampoline;
        // SAFETY: this is `VIR_DOMAIN_EVENT_CALLBACK(cb)`: both are plain C function
        // pointers of the same size, and libvirt casts the generic pointer back to
        // `virConnectDomainEventCallback` before calling it for
        // VIR_DOMAIN_EVENT_ID_LIFECYCLE, so it is only ever called with its real
        // signature.
        let generic =
            unsafe { std::mem::transmute::<LifecycleCallback, GenericCallback>(trampoline) };
        // SAFETY: the connection is alive for the call; a null domain means "all
        // domains"; the callbacks have the C ABI libvirt expects for lifecycle events
        // (the only id `register` passes; the test passes an id libvirt refuses); `opaque`
        // is an integer key that is never dereferenced.
        let id = unsafe {
            sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                ptr::null_mut(),
                event_id,
                Some(generic),
                ptr::without_provenance_mut(key),
                Some(lifecycle_free),
            )
        };
        if id < 0 {
            let err = Error::last_error();
            lifecycle_sinks().remove(&key);
            return Err(err);
        }
        Ok(Self {
            conn: conn.clone(),
            id,
            key,
            shared,
            done: false,
        })
    }

    /// The libvirt callback id (valid on this connection only).
    pub fn callback_id(&self) -> i32 {
        self.id
    }

    /// A weak handle on the shared sink, to check in tests that it is released.
    pub fn shared_weak(&self) -> std::sync::Weak<LifecycleShared> {
        Arc::downgrade(&self.shared)
    }

    /// Deregisters now and says how it went (dropping does the same, silently).
    pub fn deregister(mut self) -> Deregistered {
        self.release()
    }

    fn release(&mut self) -> Deregistered {
        if self.done {
            return Deregistered {
                accepted: true,
                released_by_libvirt: self.shared.released_by_libvirt.load(Ordering::SeqCst),
            };
        }
        self.done = true;
        // SAFETY: our `conn` clone keeps the connection object alive; `id` came from a
        // successful registration on this connection and is deregistered once (guarded
        // by `done`). On a dead remote connection this fails after the local part.
        let rc = unsafe { sys::virConnectDomainEventDeregisterAny(self.conn.as_ptr(), self.id) };
        let released_by_libvirt = self.shared.released_by_libvirt.load(Ordering::SeqCst);
        // Whatever libvirt did, the registration is dead for us: a late callback finds
        // no entry and does nothing.
        lifecycle_sinks().remove(&self.key);
        Deregistered {
            accepted: rc == 0,
            released_by_libvirt,
        }
    }
}

impl Drop for LifecycleRegistration {
    fn drop(&mut self) {
        self.release();
    }
}

impl fmt::Debug for LifecycleRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LifecycleRegistration")
            .field("callback_id", &self.id)
            .finish_non_exhaustive()
    }
}

/// How many lifecycle registrations are alive in this process (for leak tests).
pub fn live_lifecycle_registrations() -> usize {
    lifecycle_sinks().len()
}

unsafe extern "C" fn noop_timer(_timer: c_int, _opaque: *mut c_void) {}

/// Adds a periodic no-op timer to libvirt's default event loop so that
/// `virEventRunDefaultImpl` returns at least every `period_ms`.
pub fn add_wakeup_timer(period_ms: i32) -> Result<i32, Error> {
    // SAFETY: a plain C callback with no opaque data and no free callback.
    let rc = unsafe { sys::virEventAddTimeout(period_ms, Some(noop_timer), ptr::null_mut(), None) };
    if rc < 0 {
        return Err(Error::last_error());
    }
    Ok(rc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    fn param(
        name: &[u8],
        kind: u32,
        value: sys::_virTypedParameter__bindgen_ty_1,
    ) -> sys::virTypedParameter {
        let mut p = empty_param();
        for (dst, &b) in p.field.iter_mut().zip(name) {
            *dst = b as c_char;
        }
        p.type_ = kind as c_int;
        p.value = value;
        p
    }

    type V = sys::_virTypedParameter__bindgen_ty_1;

    fn convert(params: &[sys::virTypedParameter]) -> Params {
        // SAFETY: a Rust-owned array of initialised parameters whose string members point
        // to CStrings that outlive the call.
        unsafe { params_from_raw(params.as_ptr(), params.len() as c_int) }
    }

    #[test]
    fn converts_every_type() {
        let s = CString::new("vda").unwrap();
        let params = [
            param(b"a.int", sys::VIR_TYPED_PARAM_INT, V { i: -5 }),
            param(
                b"a.uint",
                sys::VIR_TYPED_PARAM_UINT,
                V { ui: 4_000_000_000 },
            ),
            param(b"a.llong", sys::VIR_TYPED_PARAM_LLONG, V { l: -1 << 40 }),
            param(b"a.ullong", sys::VIR_TYPED_PARAM_ULLONG, V { ul: u64::MAX }),
            param(b"a.double", sys::VIR_TYPED_PARAM_DOUBLE, V { d: 1.5 }),
            param(b"a.true", sys::VIR_TYPED_PARAM_BOOLEAN, V { b: 1 }),
            param(b"a.false", sys::VIR_TYPED_PARAM_BOOLEAN, V { b: 0 }),
            param(
                b"a.string",
                sys::VIR_TYPED_PARAM_STRING,
                V {
                    s: s.as_ptr() as *mut c_char,
                },
            ),
        ];
        assert_eq!(
            convert(&params),
            vec![
                ("a.int".to_string(), TypedValue::Int(-5)),
                ("a.uint".to_string(), TypedValue::UInt(4_000_000_000)),
                ("a.llong".to_string(), TypedValue::LLong(-1 << 40)),
                ("a.ullong".to_string(), TypedValue::ULLong(u64::MAX)),
                ("a.double".to_string(), TypedValue::Double(1.5)),
                ("a.true".to_string(), TypedValue::Boolean(true)),
                ("a.false".to_string(), TypedValue::Boolean(false)),
                (
                    "a.string".to_string(),
                    TypedValue::String("vda".to_string())
                ),
            ]
        );
    }

    #[test]
    fn empty_and_null_arrays_give_nothing() {
        assert!(convert(&[]).is_empty());
        // SAFETY: null pointer is explicitly allowed.
        assert!(unsafe { params_from_raw(ptr::null(), 3) }.is_empty());
        let one = [param(b"x", sys::VIR_TYPED_PARAM_INT, V { i: 1 })];
        // SAFETY: valid one-element array; a negative count reads nothing.
        assert!(unsafe { params_from_raw(one.as_ptr(), -1) }.is_empty());
    }

    #[test]
    fn non_utf8_names_and_strings_are_decoded_lossily() {
        let bad = CString::new(vec![b'h', 0xff, b'i']).unwrap();
        let params = [
            param(
                b"net.0.\xffname",
                sys::VIR_TYPED_PARAM_STRING,
                V {
                    s: bad.as_ptr() as *mut c_char,
                },
            ),
            param(b"\xc3\x28", sys::VIR_TYPED_PARAM_UINT, V { ui: 7 }),
        ];
        let out = convert(&params);
        assert_eq!(out[0].0, "net.0.\u{fffd}name");
        assert_eq!(out[0].1, TypedValue::String("h\u{fffd}i".to_string()));
        assert_eq!(out[1], ("\u{fffd}(".to_string(), TypedValue::UInt(7)));
    }

    #[test]
    fn unterminated_names_unknown_types_and_null_strings_never_panic() {
        let mut full = param(b"", sys::VIR_TYPED_PARAM_ULLONG, V { ul: 9 });
        full.field = [b'k' as c_char; sys::VIR_TYPED_PARAM_FIELD_LENGTH as usize];
        let params = [
            full,
            param(b"unknown", 99, V { ul: 1 }),
            param(b"negative.type", u32::MAX, V { ul: 1 }),
            param(
                b"null.string",
                sys::VIR_TYPED_PARAM_STRING,
                V { s: ptr::null_mut() },
            ),
        ];
        let out = convert(&params);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, "k".repeat(80));
        assert_eq!(out[0].1, TypedValue::ULLong(9));
        assert_eq!(
            out[1],
            ("null.string".to_string(), TypedValue::String(String::new()))
        );
    }

    fn test_conn() -> Connect {
        virt::error::clear_error_callback();
        Connect::open_read_only(Some("test:///default")).expect("test:///default opens")
    }

    #[test]
    fn bulk_stats_on_the_test_driver_are_copied() {
        let conn = test_conn();
        let recs = get_all_domain_stats(
            &conn,
            sys::VIR_DOMAIN_STATS_STATE,
            sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
        )
        .expect("bulk stats");
        let test = recs
            .iter()
            .find(|r| r.name == "test")
            .expect("domain `test`");
        assert_eq!(test.uuid, "6695eb01-f6a4-8304-79aa-97f2502e193f");
        assert!(test
            .params
            .contains(&("state.state".to_string(), TypedValue::Int(1))));
        // The copied domain reference outlives the freed list.
        assert_eq!(domain_state(&test.domain).expect("state").0, 1);
    }

    #[test]
    fn checked_per_domain_calls() {
        let conn = test_conn();
        let dom = conn.lookup_domain_by_name("test").expect("domain `test`");
        let (cap, alloc, phys) = block_info(&dom, "vda").expect("block info");
        assert!(cap > 0 && alloc > 0 && phys > 0);
        let err = block_info(&dom, "nope").expect_err("unknown disk fails");
        assert!(!err.message().is_empty());
        assert!(block_info(&dom, "nul\0byte").is_err());
        let vcpus = vcpu_info(&dom, 8).expect("vcpus");
        assert_eq!(vcpus.len(), 2);
        assert_eq!(vcpus[0].number, 0);
        let cpu = cpu_total_stats(&dom).expect("cpu stats");
        let names: Vec<&str> = cpu.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["cpu_time", "user_time", "system_time"]);
    }

    #[test]
    fn close_callback_is_accepted_and_released_on_the_test_driver() {
        let conn = test_conn();
        let cb = CloseCallback::register(&conn, |_| {}).expect("registered");
        let weak = cb.signal_weak();
        assert_eq!(cb.fired(), None);
        drop(cb);
        // Neither leaked nor double-freed: our reclaim was the last reference.
        assert!(weak.upgrade().is_none());
        // A second registration on the same connection works after unregistering.
        let again = CloseCallback::register(&conn, |_| {}).expect("registered again");
        drop(again);
        drop(conn);
    }

    /// A domain of its own in `test:///default`, whose state is shared by every
    /// connection of this process: other unit tests read the `test` domain concurrently,
    /// so this one never touches it.
    const FFI_DOMAIN: &str = "<domain type='test'><name>ffi-lifecycle</name>\
        <uuid>33333333-0000-4000-8000-000000000001</uuid>\
        <memory unit='KiB'>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>";

    #[test]
    fn lifecycle_events_on_the_test_driver_and_release() {
        crate::connection::init_libvirt();
        // The backend's connection is read-only; state changes need a read-write one.
        // test:///default's state and event queue are shared by all connections of the
        // process, so the read-only connection's callback sees them.
        let ro = test_conn();
        let rw = Connect::open(Some("test:///default")).expect("read-write test:///default");
        let (tx, rx) = std::sync::mpsc::channel();
        let reg = LifecycleRegistration::register(&ro, move |e| {
            if e.name == "ffi-lifecycle" {
                let _ = tx.send(e);
            }
        })
        .expect("registered on a read-only connection");
        let weak = reg.shared_weak();
        let live_before = live_lifecycle_registrations();
        assert!(live_before >= 1);

        let next = || {
            rx.recv_timeout(std::time::Duration::from_secs(2))
                .expect("event within 2 s")
        };
        let dom = rw.define_domain_xml(FFI_DOMAIN).expect("define");
        let defined = next();
        assert_eq!((defined.event, defined.detail), (0, 0));
        assert_eq!(defined.uuid, "33333333-0000-4000-8000-000000000001");
        dom.create().expect("start");
        let e = next();
        assert_eq!((e.event, e.detail), (2, 0));
        dom.suspend().expect("suspend");
        let e = next();
        assert_eq!((e.event, e.detail), (3, 0));
        dom.resume().expect("resume");
        let e = next();
        assert_eq!((e.event, e.detail), (4, 0));
        dom.destroy().expect("destroy");
        let e = next();
        assert_eq!((e.event, e.detail), (5, 1));
        dom.undefine().expect("undefine");
        let e = next();
        assert_eq!((e.event, e.detail), (1, 0));
        assert_eq!(e.name, "ffi-lifecycle");

        // The test driver calls the free callback from the deregistration itself.
        let outcome = reg.deregister();
        assert_eq!(
            outcome,
            Deregistered {
                accepted: true,
                released_by_libvirt: true
            }
        );
        assert!(weak.upgrade().is_none(), "sink released");
        // No event reaches a deregistered sink (the channel's sender is gone with it).
        let dom = rw.define_domain_xml(FFI_DOMAIN).expect("define again");
        dom.undefine().expect("undefine again");
        assert!(matches!(
            rx.recv_timeout(std::time::Duration::from_millis(300)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        ));

        // Registering again on the same connection works; dropping releases it too. A
        // second registration while one is active is refused (libvirt tracks a callback
        // once per connection), and its sink is released at once.
        let again = LifecycleRegistration::register(&ro, |_| {}).expect("register again");
        let token = Arc::new(());
        let held = Arc::clone(&token);
        let refused = LifecycleRegistration::register(&ro, move |_| drop(Arc::clone(&held)));
        assert!(refused.is_err());
        assert_eq!(Arc::strong_count(&token), 1);
        // Another connection of the same process may register its own.
        let other = test_conn();
        let second = LifecycleRegistration::register(&other, |_| {}).expect("other connection");
        drop(second);
        let weak = again.shared_weak();
        drop(again);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn lifecycle_registration_failure_releases_the_sink() {
        let conn = test_conn();
        let token = Arc::new(());
        let held = Arc::clone(&token);
        // An event id libvirt does not know: refused before anything is stored.
        let err = LifecycleRegistration::register_event_id(&conn, 9999, move |_| {
            let _ = &held;
        })
        .expect_err("unknown event id is refused");
        assert!(!err.message().is_empty());
        assert_eq!(Arc::strong_count(&token), 1, "the sink was released");
    }
}
