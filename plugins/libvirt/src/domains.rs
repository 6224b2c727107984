//! The blocking bodies of `list_domains` and `domain_xml` (run by
//! [`crate::supervisor::Supervisor::bounded`], like the stats calls).
//!
//! - `list_domains`: ONE `virConnectGetAllDomainStats(STATE, flags 0)` round trip gives
//!   every defined domain, active and inactive, with its state and reason (the state
//!   group needs no domain job, so a busy domain does not stall it); activity is the
//!   domain id (`virDomainGetID`, local: inactive domains have none). Drivers without
//!   bulk stats fall back to `virConnectListAllDomains(0)` plus one `virDomainGetState`
//!   per domain.
//! - `domain_xml`: a UUID (dashed or undashed hex, any case, optionally in braces or
//!   after `urn:uuid:`) is normalised to lower-case dashed and looked up by UUID, anything
//!   else by name; then `virDomainGetXMLDesc(0)` (for an inactive domain: its persistent
//!   definition; no secure flag, so a read-only connection suffices). An unknown domain
//!   or an identifier that cannot name one is `NoDomain`; a weird identifier never reaches
//!   libvirt in a form it rejects, and only a real connection failure drops the
//!   connection.
//!
//!   By UUID, the XML is first asked over the connection's native client, with no
//!   lookup call (the daemon finds the domain by the UUID the call carries): awaited
//!   ([`native_xml`]) when the client is open and free, else from the blocking body.
//!   Anything the native client cannot answer (a name, a domain the daemon does not
//!   know: the library then tries the name too, the client closed or failed) goes
//!   through the library as above. The specs collector's full refresh reads every
//!   domain's XML every minute: through the library that was two round trips and a
//!   blocking thread per domain, and libvirt's event thread woken for each.

use vadvisor_api::{
    normalize_uuid, DomainEntry, DomainRef, DomainState, HypervisorError, Params, TypedValue,
};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt::sys;

use crate::calls::Progress;
use crate::errors::is_connection_error;
use crate::ffi;
use crate::live::Live;
use crate::supervisor::Supervisor;
use crate::wire;

pub(crate) const LIST_CALL: &str = "virConnectGetAllDomainStats";
pub(crate) const LIST_QUEUED: &str = "virConnectGetAllDomainStats (queued behind other calls)";
const LIST_ALL_CALL: &str = "virConnectListAllDomains";
const STATE_CALL: &str = "virDomainGetState";
const BY_UUID_CALL: &str = "virDomainLookupByUUIDString";
const BY_NAME_CALL: &str = "virDomainLookupByName";
const XML_CALL: &str = "virDomainGetXMLDesc";
pub(crate) const XML_QUEUED: &str = "virDomainGetXMLDesc (queued behind other calls)";

/// Maps a failed libvirt call: no such domain, a dead connection (declared lost), or a
/// plain call failure.
pub(crate) fn fail(
    sup: &Supervisor,
    live: &Live,
    call: &'static str,
    err: &VirtError,
    id: &str,
) -> HypervisorError {
    let code = err.code().to_raw();
    if code == sys::VIR_ERR_NO_DOMAIN {
        return HypervisorError::NoDomain(id.to_string());
    }
    if is_connection_error(code, err.message()) || !matches!(live.conn.is_alive(), Ok(true)) {
        let reason = err.message().to_string();
        // Dropped here, on this blocking thread, if it was the last reference.
        drop(sup.mark_lost(live.generation, &reason));
        return HypervisorError::Disconnected(reason);
    }
    HypervisorError::Call {
        call,
        message: err.message().to_string(),
    }
}

fn int_param(params: &Params, key: &str) -> Option<u32> {
    params
        .get(key)
        .and_then(TypedValue::as_u64)
        .and_then(|v| u32::try_from(v).ok())
}

/// Every defined domain with its state, sorted by name.
pub(crate) fn list(
    sup: &Supervisor,
    live: &Live,
    progress: &Progress,
) -> Result<Vec<DomainEntry>, HypervisorError> {
    sup.count_calls(1);
    progress.set(LIST_CALL);
    match ffi::get_all_domain_stats(&live.conn, sys::VIR_DOMAIN_STATS_STATE, 0, &|_| false) {
        Ok(records) => Ok(entries(records)),
        Err(e) if e.code().to_raw() == sys::VIR_ERR_NO_SUPPORT => {
            let mut out = list_one_by_one(sup, live, progress)?;
            out.sort_by(|a, b| a.domain.name.cmp(&b.domain.name));
            Ok(out)
        }
        Err(e) => Err(fail(sup, live, LIST_CALL, &e, "")),
    }
}

/// The entries of a listing's records (`state` group only), sorted by name.
fn entries(records: Vec<ffi::RawRecord>) -> Vec<DomainEntry> {
    let mut out: Vec<DomainEntry> = records
        .into_iter()
        .map(|r| DomainEntry {
            state: DomainState::new(
                int_param(&r.params, "state.state").unwrap_or(0),
                int_param(&r.params, "state.reason").unwrap_or(0),
            ),
            active: r.active,
            domain: DomainRef::new(r.uuid, r.name),
        })
        .collect();
    out.sort_by(|a, b| a.domain.name.cmp(&b.domain.name));
    out
}

/// [`list`] over the current connection's native client, awaited (the same call: no
/// blocking thread, no call lane); `None` when the library must answer.
pub(crate) async fn native_list(
    sup: &Supervisor,
) -> Option<Result<Vec<DomainEntry>, HypervisorError>> {
    let records = sup
        .native(LIST_CALL, async |c| {
            sup.count_native_calls(1);
            c.domain_stats_async(&[], sys::VIR_DOMAIN_STATS_STATE, 0)
                .await
        })
        .await?;
    Some(records.map(entries))
}

/// `list` for drivers without bulk stats: one listing plus one state call per domain.
pub(crate) fn list_one_by_one(
    sup: &Supervisor,
    live: &Live,
    progress: &Progress,
) -> Result<Vec<DomainEntry>, HypervisorError> {
    sup.count_calls(1);
    progress.set(LIST_ALL_CALL);
    let domains = live
        .conn
        .list_all_domains(0)
        .map_err(|e| fail(sup, live, LIST_ALL_CALL, &e, ""))?;
    let mut out = Vec::with_capacity(domains.len());
    for dom in domains {
        // Both local: the listing carried them.
        let (Ok(uuid), Ok(name)) = (dom.uuid_string(), dom.name()) else {
            continue;
        };
        sup.count_calls(1);
        progress.set(STATE_CALL);
        let (state, reason) = match ffi::domain_state(&dom) {
            Ok(s) => s,
            // Undefined meanwhile.
            Err(e) if e.code().to_raw() == sys::VIR_ERR_NO_DOMAIN => continue,
            Err(e) => return Err(fail(sup, live, STATE_CALL, &e, &name)),
        };
        out.push(DomainEntry {
            domain: DomainRef::new(uuid.to_ascii_lowercase(), name),
            state: DomainState::new(state, reason),
            active: dom.id().is_some(),
        });
    }
    Ok(out)
}

/// Whether `s` can be a domain name at all (libvirt names are non-empty C strings).
fn can_be_a_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('\0')
}

pub(crate) fn lookup(
    sup: &Supervisor,
    live: &Live,
    progress: &Progress,
    call: &'static str,
    id: &str,
    f: impl FnOnce(&Connect) -> Result<Domain, VirtError>,
) -> Result<Domain, HypervisorError> {
    sup.count_calls(1);
    progress.set(call);
    f(&live.conn).map_err(|e| fail(sup, live, call, &e, id))
}

/// Whether `domain_xml(id)` can be answered without libvirt: `Some(NoDomain)` when `id`
/// can neither be a UUID nor a name.
pub(crate) fn reject_early(id: &str) -> Option<HypervisorError> {
    (normalize_uuid(id).is_none() && !can_be_a_name(id))
        .then(|| HypervisorError::NoDomain(id.to_string()))
}

/// The XML description of the domain `id` (UUID or name).
pub(crate) fn xml(
    sup: &Supervisor,
    live: &Live,
    progress: &Progress,
    id: &str,
) -> Result<String, HypervisorError> {
    let by_name = || {
        lookup(sup, live, progress, BY_NAME_CALL, id, |c| {
            c.lookup_domain_by_name(id)
        })
    };
    let uuid = normalize_uuid(id);
    if let Some(dom) = uuid.as_deref().and_then(wire::DomainId::by_uuid) {
        let native = live.wire.answer(&sup.settings, XML_CALL, |c| {
            sup.count_native_calls(1);
            progress.set(XML_CALL);
            c.domain_xml(&dom, 0)
        });
        if let Some(answer) = native {
            return answer;
        }
    }
    let dom = match uuid {
        Some(uuid) => match lookup(sup, live, progress, BY_UUID_CALL, id, |c| {
            c.lookup_domain_by_uuid_string(&uuid)
        }) {
            // A domain may be named like a UUID: one more try, only on a miss.
            Err(HypervisorError::NoDomain(_)) if can_be_a_name(id) => by_name()?,
            other => other?,
        },
        None if can_be_a_name(id) => by_name()?,
        None => return Err(HypervisorError::NoDomain(id.to_string())),
    };
    sup.count_calls(1);
    progress.set(XML_CALL);
    dom.xml_desc(0)
        .map_err(|e| fail(sup, live, XML_CALL, &e, id))
}

/// [`xml`] of the domain with UUID `id` over the current connection's native client,
/// awaited on the runtime: no blocking thread, no lookup call. While another awaited
/// call has the client (a full refresh asks several at once), it waits for it; all of
/// it within `call_timeout`, as a library call (then `Timeout`). `None` when the
/// blocking path must answer: `id` is not a UUID, the client is not open or a blocking
/// call has it, or it failed other than by a timeout (the daemon's own error, e.g. an
/// unknown domain, included: the library also tries `id` as a name).
pub(crate) async fn native_xml(
    sup: &Supervisor,
    id: &str,
) -> Option<Result<String, HypervisorError>> {
    let dom = wire::DomainId::by_uuid(&normalize_uuid(id)?)?;
    sup.native(XML_CALL, async |client| {
        sup.count_native_calls(1);
        client.domain_xml_async(&dom, 0).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_names_are_rejected_without_libvirt() {
        assert!(matches!(
            reject_early(""),
            Some(HypervisorError::NoDomain(_))
        ));
        assert!(matches!(
            reject_early("a\0b"),
            Some(HypervisorError::NoDomain(_))
        ));
        assert!(reject_early("{bad-uuid}").is_none());
        assert!(reject_early("test").is_none());
    }
}
