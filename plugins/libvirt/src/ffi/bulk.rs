//! `virConnectGetAllDomainStats` (every domain) and `virDomainListGetStats` (a given
//! subset, one shard of a sharded collection), copied into owned [`RawRecord`]s and
//! freed with `virDomainStatsRecordListFree` (the `virt` wrapper leaks every record).

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::ffi::CStr;
use std::fmt;
use std::ptr;
use std::sync::Arc;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::Error;
use virt::sys;

use vadvisor_api::Params;

use super::params::stats_params_from_raw;

/// One domain of a `virConnectGetAllDomainStats` reply, fully owned.
pub struct RawRecord {
    /// Lower-case dashed UUID.
    pub uuid: Arc<str>,
    pub name: Arc<str>,
    /// The record's typed parameters (`state.state`, `cpu.time`, …).
    pub params: Params,
    /// An extra reference to the record's domain, for per-domain fallback calls: only
    /// for the records the caller's `keep_domain` asked it for (taking and dropping a
    /// reference costs libvirt two debug-log UUID formattings per domain and call).
    pub domain: Option<Domain>,
    /// Whether the domain runs: it has an id (libvirt's record carries the domain's id,
    /// as the native client's does; -1 for a domain that is not running).
    pub active: bool,
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

/// Copies one record; the record itself stays owned by the list. The domain reference
/// is taken only when `keep_domain` says so for the record's parameters.
fn copy_record(
    rec: &sys::virDomainStatsRecord,
    keep_domain: &dyn Fn(&Params) -> bool,
) -> Result<Option<RawRecord>, Error> {
    if rec.dom.is_null() {
        return Ok(None);
    }
    // The raw UUID, formatted here: virDomainGetUUIDString formats it twice (once for
    // its own debug log line) with glib's printf, a large part of a tick's client work.
    let mut uuid_bytes = [0u8; sys::VIR_UUID_BUFLEN as usize];
    // SAFETY: `rec.dom` is a valid domain owned by the record list (alive until the list
    // is freed); the buffer has the VIR_UUID_BUFLEN bytes libvirt writes.
    if unsafe { sys::virDomainGetUUID(rec.dom, uuid_bytes.as_mut_ptr()) } < 0 {
        return Err(Error::last_error());
    }
    let uuid = format_uuid(&uuid_bytes);
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
    let params = unsafe { stats_params_from_raw(rec.params, rec.nparams) };
    // SAFETY: `rec.dom` is valid (as above); the id is read from the domain object, no
    // call is made. `(unsigned int)-1` means no id: the domain is not running.
    let active = unsafe { sys::virDomainGetID(rec.dom) } != u32::MAX;
    let domain = if keep_domain(&params) {
        // SAFETY: `rec.dom` is valid; virDomainRef adds a reference that the new `Domain`
        // owns and releases with virDomainFree when dropped, independently of the list.
        if unsafe { sys::virDomainRef(rec.dom) } < 0 {
            return Err(Error::last_error());
        }
        // SAFETY: we own the reference taken just above.
        Some(unsafe { Domain::from_ptr(rec.dom) })
    } else {
        None
    };
    Ok(Some(RawRecord {
        uuid: uuid.into(),
        name: name.into(),
        params,
        domain,
        active,
    }))
}

/// A raw UUID as libvirt writes it: lower-case hex, dashed 8-4-4-4-12.
pub fn format_uuid(bytes: &[u8; sys::VIR_UUID_BUFLEN as usize]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// `virConnectGetAllDomainStats(conn, stats, flags)`, copied into owned records. The
/// libvirt list is always freed with `virDomainStatsRecordListFree`, also when copying
/// a record fails half-way.
pub fn get_all_domain_stats(
    conn: &Connect,
    stats: u32,
    flags: u32,
    keep_domain: &dyn Fn(&Params) -> bool,
) -> Result<Vec<RawRecord>, Error> {
    let mut list: *mut sys::virDomainStatsRecordPtr = ptr::null_mut();
    // SAFETY: `conn` keeps its connection alive for the whole call; `list` is a valid
    // out-pointer that libvirt sets to a freshly allocated, NULL-terminated array.
    let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), stats, &mut list, flags) };
    copy_list(n, list, keep_domain)
}

/// `virDomainListGetStats(doms, stats, flags)`: the statistics of the domains `doms`
/// only, copied into owned records like [`get_all_domain_stats`]. Every domain must
/// belong to one connection (libvirt checks it and fails otherwise); the call runs on
/// that connection. An empty `doms` is an empty reply (libvirt would reject it).
/// Domains that stopped or vanished meanwhile are left out of the reply, not an error.
pub fn domain_list_stats(
    doms: &[Domain],
    stats: u32,
    flags: u32,
    keep_domain: &dyn Fn(&Params) -> bool,
) -> Result<Vec<RawRecord>, Error> {
    if doms.is_empty() {
        return Ok(Vec::new());
    }
    // The NULL-terminated array libvirt reads; the pointers stay owned by `doms`.
    let mut ptrs: Vec<sys::virDomainPtr> = doms
        .iter()
        // SAFETY: only reads the handle's pointer; `doms` keeps each domain alive while
        // the pointers are used below.
        .map(|d| unsafe { d.as_ptr() })
        .collect();
    ptrs.push(ptr::null_mut());
    let mut list: *mut sys::virDomainStatsRecordPtr = ptr::null_mut();
    // SAFETY: `ptrs` is a NULL-terminated array of valid domain pointers, kept alive by
    // `doms` (borrowed for the whole call) and only read by libvirt; their connection is
    // kept alive by the domains' own references. `list` is a valid out-pointer that
    // libvirt sets to a freshly allocated, NULL-terminated array.
    let n = unsafe { sys::virDomainListGetStats(ptrs.as_mut_ptr(), stats, &mut list, flags) };
    copy_list(n, list, keep_domain)
}

/// Takes ownership of the reply `list` of `n` records (or of the error when `n < 0`)
/// and copies it.
fn copy_list(
    n: i32,
    list: *mut sys::virDomainStatsRecordPtr,
    keep_domain: &dyn Fn(&Params) -> bool,
) -> Result<Vec<RawRecord>, Error> {
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
        if let Some(r) = copy_record(rec, keep_domain)? {
            out.push(r);
        }
    }
    drop(list);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{domain_state, test_conn};
    use super::*;
    use vadvisor_api::TypedValue;

    #[test]
    fn bulk_stats_on_the_test_driver_are_copied() {
        let conn = test_conn();
        let recs = get_all_domain_stats(
            &conn,
            sys::VIR_DOMAIN_STATS_STATE,
            sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
            &|_| true,
        )
        .expect("bulk stats");
        let test = recs
            .iter()
            .find(|r| &*r.name == "test")
            .expect("domain `test`");
        assert_eq!(&*test.uuid, "6695eb01-f6a4-8304-79aa-97f2502e193f");
        assert_eq!(test.params.get("state.state"), Some(&TypedValue::Int(1)));
        // The copied domain reference outlives the freed list.
        let domain = test.domain.as_ref().expect("kept");
        assert_eq!(domain_state(domain).expect("state").0, 1);
        // The UUID formatted from the raw bytes is libvirt's own string.
        assert_eq!(domain.uuid_string().expect("uuid string"), &*test.uuid);
    }

    #[test]
    fn a_record_says_whether_its_domain_runs() {
        // A defined, never started domain of its own (test:///default is shared by the
        // process's tests: the `test` domain, running, is only read).
        let rw = virt::connect::Connect::open(Some("test:///default")).expect("read-write");
        let xml = "<domain type='test'><name>ffi-bulk-inactive</name>\
            <uuid>33333333-0000-4000-8000-000000000002</uuid>\
            <memory unit='KiB'>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>";
        let defined = rw.define_domain_xml(xml).expect("defined");
        let recs = get_all_domain_stats(&test_conn(), sys::VIR_DOMAIN_STATS_STATE, 0, &|_| true);
        let _ = defined.undefine();
        let recs = recs.expect("bulk stats");
        let active = |name: &str| recs.iter().find(|r| &*r.name == name).map(|r| r.active);
        assert_eq!(active("test"), Some(true));
        assert_eq!(active("ffi-bulk-inactive"), Some(false));
        // The same as the domain's id says, for every record.
        for r in &recs {
            let id = r.domain.as_ref().expect("kept").id();
            assert_eq!(r.active, id.is_some(), "{}", r.name);
        }
    }

    #[test]
    fn list_stats_on_the_test_driver_cover_exactly_the_given_domains() {
        let conn = test_conn();
        let doms = conn
            .list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .expect("list");
        let test = doms
            .into_iter()
            .find(|d| d.name().as_deref() == Ok("test"))
            .expect("domain `test`");
        let flags = sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
            | sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT;
        let recs = domain_list_stats(
            std::slice::from_ref(&test),
            sys::VIR_DOMAIN_STATS_STATE,
            flags,
            &|_| true,
        )
        .expect("list stats");
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert_eq!(&*recs[0].uuid, "6695eb01-f6a4-8304-79aa-97f2502e193f");
        assert_eq!(recs[0].params.get("state.state"), Some(&TypedValue::Int(1)));
        // The records own their references: the given handle can go first.
        drop(test);
        let domain = recs[0].domain.as_ref().expect("kept");
        assert_eq!(domain_state(domain).expect("state").0, 1);
        assert!(
            domain_list_stats(&[], sys::VIR_DOMAIN_STATS_STATE, flags, &|_| true)
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn a_domain_reference_is_kept_only_where_asked_for() {
        let conn = test_conn();
        let recs = get_all_domain_stats(&conn, sys::VIR_DOMAIN_STATS_STATE, 0, &|p| {
            p.get("state.state") == Some(&TypedValue::Int(1))
        })
        .expect("bulk stats");
        assert!(!recs.is_empty());
        for r in &recs {
            let running = r.params.get("state.state") == Some(&TypedValue::Int(1));
            assert_eq!(r.domain.is_some(), running, "{r:?}");
        }
    }

    #[test]
    fn uuids_are_formatted_like_libvirt() {
        let bytes = [
            0x66, 0x95, 0xeb, 0x01, 0xf6, 0xa4, 0x83, 0x04, 0x79, 0xaa, 0x97, 0xf2, 0x50, 0x2e,
            0x19, 0x3f,
        ];
        assert_eq!(format_uuid(&bytes), "6695eb01-f6a4-8304-79aa-97f2502e193f");
        assert_eq!(
            format_uuid(&[0xff; 16]),
            "ffffffff-ffff-ffff-ffff-ffffffffffff"
        );
    }

    #[test]
    fn list_stats_reject_domains_of_another_connection() {
        let a = test_conn();
        let b = test_conn();
        let mut doms = a.list_all_domains(0).expect("list a");
        doms.extend(b.list_all_domains(0).expect("list b"));
        assert!(doms.len() >= 2);
        assert!(domain_list_stats(&doms, sys::VIR_DOMAIN_STATS_STATE, 0, &|_| true).is_err());
    }
}
