//! The few messages of libvirt's remote protocol (`remote_protocol.x`,
//! `virnetprotocol.x`) that the bulk statistics path sends and reads: the message
//! header, error replies, authentication, the read-only open, the domain listing and
//! `virConnectGetAllDomainStats`. Encoding and decoding only; no I/O.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use vadvisor_api::{NodeInfo, Params, Room, SortMemo, TypedValue};

pub use super::xdr::Writer;
use super::xdr::{Reader, XdrError};
use crate::ffi::{format_uuid, RawRecord};

/// `REMOTE_PROGRAM` and `REMOTE_PROTOCOL_VERSION`.
pub const PROGRAM: u32 = 0x2000_8086;
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest message libvirt sends (`VIR_NET_MESSAGE_MAX`, 32 MiB), length word
/// included.
pub const MESSAGE_MAX: usize = 32 * 1024 * 1024;

/// Length word plus header: six 4-byte words after the length.
pub const HEADER_LEN: usize = 4 + 24;

/// `REMOTE_DOMAIN_LIST_MAX`, `REMOTE_CONNECT_GET_ALL_DOMAIN_STATS_MAX`,
/// `REMOTE_AUTH_TYPE_LIST_MAX`.
const DOMAIN_LIST_MAX: usize = 16_384;
const STATS_PARAMS_MAX: usize = 262_144;
const AUTH_TYPE_LIST_MAX: usize = 20;

/// The procedures this client calls. All of them read; the connection is opened with
/// `VIR_CONNECT_RO`, so the daemon refuses anything else anyway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Procedure {
    ConnectOpen = 1,
    DomainGetXmlDesc = 14,
    NodeGetInfo = 6,
    AuthList = 66,
    NodeGetFreeMemory = 102,
    NodeGetCpuStats = 227,
    NodeGetMemoryStats = 228,
    AuthPolkit = 70,
    ConnectListAllDomains = 273,
    ConnectGetAllDomainStats = 344,
    DomainGetCpuStats = 262,
}

/// `virNetMessageType`: a call, and the reply to one.
const TYPE_CALL: u32 = 0;
pub const TYPE_REPLY: u32 = 1;
/// `virNetMessageStatus`.
pub const STATUS_OK: u32 = 0;
pub const STATUS_ERROR: u32 = 1;

/// `remote_auth_type`.
pub const AUTH_NONE: i32 = 0;
pub const AUTH_POLKIT: i32 = 2;

/// `VIR_CONNECT_RO`, the only open flag this client uses.
pub const CONNECT_RO: u32 = 1;
/// `VIR_CONNECT_LIST_DOMAINS_ACTIVE`.
pub const LIST_DOMAINS_ACTIVE: u32 = 1;

/// `virNetMessageHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub program: u32,
    pub version: u32,
    pub procedure: i32,
    pub kind: u32,
    pub serial: u32,
    pub status: u32,
}

impl Header {
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        Ok(Self {
            program: r.u32()?,
            version: r.u32()?,
            procedure: r.i32()?,
            kind: r.u32()?,
            serial: r.u32()?,
            status: r.u32()?,
        })
    }
}

/// A whole call message, length word included: the header for `procedure` and
/// `serial`, then what `args` writes.
pub fn call(procedure: Procedure, serial: u32, args: impl FnOnce(&mut Writer)) -> Vec<u8> {
    call_onto(Vec::new(), procedure, serial, args)
}

/// [`call`] written at the end of `msgs` (a batch's messages, one after the other).
pub fn call_onto(
    msgs: Vec<u8>,
    procedure: Procedure,
    serial: u32,
    args: impl FnOnce(&mut Writer),
) -> Vec<u8> {
    let start = msgs.len();
    let mut w = Writer::onto(msgs);
    w.u32(0); // the length, patched below
    w.u32(PROGRAM);
    w.u32(PROTOCOL_VERSION);
    w.i32(procedure as i32);
    w.u32(TYPE_CALL);
    w.u32(serial);
    w.u32(STATUS_OK);
    args(&mut w);
    let len = u32::try_from(w.len() - start).unwrap_or(u32::MAX);
    w.patch_u32(start, len);
    w.into_bytes()
}

/// The part of an error reply (`virNetMessageError`) a caller needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// `virErrorNumber`.
    pub code: i32,
    pub message: String,
}

impl RemoteError {
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        let code = r.i32()?;
        let _domain = r.i32()?;
        let message = if r.present()? {
            String::from_utf8_lossy(r.bytes()?).into_owned()
        } else {
            String::new()
        };
        Ok(Self { code, message })
    }
}

/// `remote_nonnull_domain`, owned: what names a domain in a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainId {
    pub name: String,
    pub uuid: [u8; 16],
    pub id: i32,
}

impl DomainId {
    /// The domain with this UUID (lower-case dashed, as libvirt formats it), as a call
    /// names it: the daemon finds a domain by UUID, so the name and id are left empty.
    pub fn by_uuid(uuid: &str) -> Option<Self> {
        let mut bytes = [0u8; 16];
        let mut hex = uuid.bytes().filter(|&b| b != b'-');
        for byte in &mut bytes {
            let pair = [hex.next()?, hex.next()?];
            *byte = u8::from_str_radix(std::str::from_utf8(&pair).ok()?, 16).ok()?;
        }
        if hex.next().is_some() {
            return None;
        }
        Some(Self {
            name: String::new(),
            uuid: bytes,
            id: -1,
        })
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        let name = String::from_utf8_lossy(r.bytes()?).into_owned();
        Ok(Self {
            name,
            uuid: r.fixed::<16>()?,
            id: r.i32()?,
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.string(&self.name);
        w.fixed(&self.uuid);
        w.i32(self.id);
    }

    /// Lower-case dashed, as libvirt formats it.
    pub fn uuid_string(&self) -> String {
        format_uuid(&self.uuid)
    }
}

/// `remote_auth_list_ret`: the authentication types the daemon asks for.
pub fn decode_auth_list(body: &[u8]) -> Result<Vec<i32>, XdrError> {
    let mut r = Reader::new(body);
    let n = r.count("authentication types", AUTH_TYPE_LIST_MAX, 4)?;
    (0..n).map(|_| r.i32()).collect()
}

/// `remote_auth_polkit_ret`: whether the daemon let the client in.
pub fn decode_auth_polkit(body: &[u8]) -> Result<bool, XdrError> {
    Ok(Reader::new(body).i32()? != 0)
}

/// `remote_connect_open_args`.
pub fn encode_open(w: &mut Writer, name: &str, flags: u32) {
    w.opt_string(Some(name));
    w.u32(flags);
}

/// `remote_connect_list_all_domains_args`.
pub fn encode_list_all_domains(w: &mut Writer, flags: u32) {
    w.i32(1); // need_results
    w.u32(flags);
}

/// `remote_connect_list_all_domains_ret`: the domains (the count after them is their
/// number again).
pub fn decode_list_all_domains(body: &[u8]) -> Result<Vec<DomainId>, XdrError> {
    let mut r = Reader::new(body);
    let n = r.count("domains", DOMAIN_LIST_MAX, 24)?;
    (0..n).map(|_| DomainId::decode(&mut r)).collect()
}

/// `remote_connect_get_all_domain_stats_args`: an empty `doms` asks for every domain
/// (`virConnectGetAllDomainStats`), a list for those only (`virDomainListGetStats`).
pub fn encode_get_all_domain_stats(w: &mut Writer, doms: &[DomainId], stats: u32, flags: u32) {
    w.u32(u32::try_from(doms.len()).unwrap_or(u32::MAX));
    for d in doms {
        d.encode(w);
    }
    w.u32(stats);
    w.u32(flags);
}

/// `VIR_NODE_CPU_STATS_ALL_CPUS`, `VIR_NODE_MEMORY_STATS_ALL_CELLS`.
pub const ALL_CPUS: i32 = -1;
pub const ALL_CELLS: i32 = -1;
/// `REMOTE_NODE_CPU_STATS_MAX`, `REMOTE_NODE_MEMORY_STATS_MAX`.
const NODE_STATS_MAX: usize = 16;

/// `remote_node_get_info_ret`: `char model[32]` (each `char` an XDR int, as rpcgen
/// writes it), memory in KiB, then the six CPU counts.
pub fn decode_node_info(body: &[u8]) -> Result<NodeInfo, XdrError> {
    let mut r = Reader::new(body);
    let mut model = Vec::with_capacity(32);
    for _ in 0..32 {
        // The low byte of each word is the character.
        model.push(r.u32()?.to_be_bytes()[3]);
    }
    let end = model.iter().position(|&b| b == 0).unwrap_or(model.len());
    let model = String::from_utf8_lossy(&model[..end]).into_owned();
    let memory_kib = r.u64()?;
    let mut count = || r.i32().map(|v| u32::try_from(v).unwrap_or(0));
    Ok(NodeInfo {
        model,
        memory_kib,
        cpus: count()?,
        mhz: count()?,
        nodes: count()?,
        sockets: count()?,
        cores: count()?,
        threads: count()?,
    })
}

/// `remote_node_get_cpu_stats_args` for every CPU, or `remote_node_get_memory_stats_args`
/// for every cell: `nparams` 0 asks for the count.
pub fn encode_node_cpu_stats(w: &mut Writer, nparams: i32) {
    w.i32(ALL_CPUS);
    w.i32(nparams);
    w.u32(0);
}

pub fn encode_node_memory_stats(w: &mut Writer, nparams: i32) {
    w.i32(nparams);
    w.i32(ALL_CELLS);
    w.u32(0);
}

/// `remote_node_get_cpu_stats_ret` / `remote_node_get_memory_stats_ret` (same shape):
/// the `(field, value)` pairs and the count the daemon has.
pub fn decode_node_stats(body: &[u8]) -> Result<(Vec<(String, u64)>, i32), XdrError> {
    let mut r = Reader::new(body);
    let n = r.count("node statistics", NODE_STATS_MAX, 12)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let field = String::from_utf8_lossy(r.bytes()?).into_owned();
        out.push((field, r.u64()?));
    }
    Ok((out, r.i32()?))
}

/// `remote_node_get_free_memory_ret`: bytes.
pub fn decode_free_memory(body: &[u8]) -> Result<u64, XdrError> {
    Reader::new(body).u64()
}

/// `remote_domain_get_xml_desc_args`.
pub fn encode_domain_get_xml_desc(w: &mut Writer, dom: &DomainId, flags: u32) {
    dom.encode(w);
    w.u32(flags);
}

/// `remote_domain_get_xml_desc_ret`: the XML.
pub fn decode_domain_get_xml_desc(body: &[u8]) -> Result<String, XdrError> {
    Ok(text(Reader::new(body).bytes()?).into_owned())
}

/// How many total CPU counters [`encode_domain_cpu_total`] asks for: the QEMU driver
/// has three (`cpu_time`, `user_time`, `system_time`).
const CPU_TOTAL_PARAMS: u32 = 3;
/// `REMOTE_DOMAIN_GET_CPU_STATS_MAX`.
const CPU_STATS_MAX: usize = 2048;

/// `remote_domain_get_cpu_stats_args` for the domain's total (`start_cpu` -1, one
/// "CPU"): what `virsh cpu-stats --total` asks, read from the domain's cgroup, without
/// the QEMU monitor.
pub fn encode_domain_cpu_total(w: &mut Writer, dom: &DomainId) {
    dom.encode(w);
    w.u32(CPU_TOTAL_PARAMS);
    w.i32(-1);
    w.u32(1);
    w.u32(0);
}

/// `remote_domain_get_cpu_stats_ret`: the counters as the bulk `cpu-total` group names
/// them (`cpu_time` → `cpu.time`, `user_time` → `cpu.user`, `system_time` →
/// `cpu.system`; others are left out).
pub fn decode_domain_cpu_total(
    body: &[u8],
) -> Result<Vec<(&'static str, TypedValue)>, StatsDecodeError> {
    let mut r = Reader::new(body);
    let n = r.count("CPU statistics", CPU_STATS_MAX, 12)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let field = r.bytes()?;
        let value = typed_value(&mut r, field)?;
        let key = match field {
            b"cpu_time" => "cpu.time",
            b"user_time" => "cpu.user",
            b"system_time" => "cpu.system",
            _ => continue,
        };
        out.push((key, value));
    }
    Ok(out)
}

/// `virTypedParameterType` values (`remote_typed_param_value`'s discriminant).
const PARAM_INT: i32 = 1;
const PARAM_UINT: i32 = 2;
const PARAM_LLONG: i32 = 3;
const PARAM_ULLONG: i32 = 4;
const PARAM_DOUBLE: i32 = 5;
const PARAM_BOOLEAN: i32 = 6;
const PARAM_STRING: i32 = 7;

/// Why a statistics reply does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatsDecodeError {
    #[error(transparent)]
    Xdr(#[from] XdrError),
    #[error("parameter `{field}` has an unknown type {kind}")]
    UnknownType { field: String, kind: i32 },
}

/// A field name: borrowed when it is UTF-8 (libvirt's always are; the plain check is
/// several times cheaper than the lossy decoder), decoded lossily otherwise.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// One `remote_typed_param_value` (its type, then the value) of parameter `field`.
fn typed_value(r: &mut Reader<'_>, field: &[u8]) -> Result<TypedValue, StatsDecodeError> {
    Ok(match r.i32()? {
        PARAM_INT => TypedValue::Int(r.i32()?),
        PARAM_UINT => TypedValue::UInt(r.u32()?),
        PARAM_LLONG => TypedValue::LLong(r.i64()?),
        PARAM_ULLONG => TypedValue::ULLong(r.u64()?),
        PARAM_DOUBLE => TypedValue::Double(r.f64()?),
        PARAM_BOOLEAN => TypedValue::Boolean(r.i32()? != 0),
        PARAM_STRING => TypedValue::String(String::from_utf8_lossy(r.bytes()?).into_owned()),
        kind => {
            return Err(StatsDecodeError::UnknownType {
                field: text(field).into_owned(),
                kind,
            })
        }
    })
}

/// `remote_connect_get_all_domain_stats_ret`, straight into owned records: field names
/// are borrowed from the message while a record's [`Params`] are built (one key buffer
/// per record, with `room` to spare for the groups filled in after the call); only
/// string values allocate, and a domain's UUID and name come from `names` once it has
/// seen them. `scratch` is reused between records.
pub fn decode_domain_stats(
    body: &[u8],
    memo: &mut SortMemo,
    names: &mut DomainNames,
    room: Room,
) -> Result<Vec<RawRecord>, StatsDecodeError> {
    let mut r = Reader::new(body);
    let n = r.count("domain statistics records", DOMAIN_LIST_MAX, 28)?;
    let mut out = Vec::with_capacity(n);
    let mut scratch: Vec<(&[u8], TypedValue)> = Vec::new();
    names.start_reply();
    for _ in 0..n {
        let name = r.bytes()?;
        let uuid = r.fixed::<16>()?;
        let id = r.i32()?;
        let (uuid, name) = names.of(uuid, name);
        let params = r.count("statistics parameters", STATS_PARAMS_MAX, 12)?;
        scratch.clear();
        scratch.reserve(params);
        let mut key_bytes = 0;
        for _ in 0..params {
            let field = r.bytes()?;
            let value = typed_value(&mut r, field)?;
            key_bytes += field.len();
            scratch.push((field, value));
        }
        let params =
            Params::from_unsorted_bytes_memo_with_room(scratch.drain(..), key_bytes, room, memo);
        out.push(RawRecord {
            uuid,
            active: id != -1,
            name,
            params,
            domain: None,
        });
    }
    names.end_reply(n);
    Ok(out)
}

/// The domains' UUIDs (formatted) and names of the last replies, by UUID: a domain's
/// record reuses them, where each reply formatted the UUID and copied the name again
/// (and the records' consumers copied both once more).
#[derive(Default)]
pub struct DomainNames {
    /// By UUID: the formatted UUID, the name, and the reply that last named it.
    known: HashMap<[u8; 16], (Arc<str>, Arc<str>, u64)>,
    reply: u64,
}

impl DomainNames {
    fn start_reply(&mut self) {
        self.reply += 1;
    }

    /// The domain's formatted UUID and its name (`name` decoded lossily if it is not
    /// UTF-8), shared with the earlier records of the same domain and name.
    fn of(&mut self, uuid: [u8; 16], name: &[u8]) -> (Arc<str>, Arc<str>) {
        let reply = self.reply;
        let entry = self
            .known
            .entry(uuid)
            .or_insert_with(|| (Arc::from(format_uuid(&uuid)), Arc::from(text(name)), reply));
        if entry.1.as_bytes() != name {
            entry.1 = Arc::from(text(name));
        }
        entry.2 = reply;
        (Arc::clone(&entry.0), Arc::clone(&entry.1))
    }

    /// After a reply of `records` records: forgets the domains it did not name, once
    /// there are many more of them than of those it did.
    fn end_reply(&mut self, records: usize) {
        if self.known.len() > 2 * records + 16 {
            let reply = self.reply;
            self.known.retain(|_, (_, _, seen)| *seen == reply);
        }
    }

    /// How many domains it knows (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_is_named_by_its_uuid_in_any_hex_spelling() {
        let want = [
            0x5a, 0xd0, 0xa0, 0xb0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x0c,
        ];
        for s in [
            "5ad0a0b0-0000-4000-8000-00000000000c",
            "5AD0A0B000004000800000000000000C",
        ] {
            let d = DomainId::by_uuid(s).expect(s);
            assert_eq!((d.uuid, d.id, d.name.as_str()), (want, -1, ""));
        }
        for bad in [
            "",
            "5ad0a0b0",
            "5ad0a0b0-0000-4000-8000-00000000000c0",
            "zz",
            "5ad0a0b0-0000-4000-8000-00000000000g",
        ] {
            assert!(DomainId::by_uuid(bad).is_none(), "{bad}");
        }
        // The XML call's arguments: the domain, then the flags.
        let mut w = Writer::default();
        encode_domain_get_xml_desc(
            &mut w,
            &DomainId::by_uuid("5ad0a0b0-0000-4000-8000-00000000000c").unwrap(),
            2,
        );
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.bytes().unwrap(), b"");
        assert_eq!(r.fixed::<16>().unwrap(), want);
        assert_eq!((r.i32().unwrap(), r.u32().unwrap()), (-1, 2));
        let mut w = Writer::default();
        w.string("<domain/>");
        assert_eq!(
            decode_domain_get_xml_desc(&w.into_bytes()).unwrap(),
            "<domain/>"
        );
    }

    fn domain(name: &str, last: u8, id: i32) -> DomainId {
        let mut uuid = [0x5a; 16];
        uuid[15] = last;
        DomainId {
            name: name.to_string(),
            uuid,
            id,
        }
    }

    /// One encoded parameter: field, type, value bytes.
    type RawParam<'a> = (&'a str, i32, Vec<u8>);

    /// A reply body as libvirtd's encoder writes it (`xdr_remote_connect_get_all_domain_stats_ret`).
    fn stats_reply(records: &[(DomainId, Vec<RawParam<'_>>)]) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(records.len() as u32);
        for (dom, params) in records {
            dom.encode(&mut w);
            w.u32(params.len() as u32);
            for (field, kind, value) in params {
                w.string(field);
                w.i32(*kind);
                w.fixed(value);
            }
        }
        w.into_bytes()
    }

    fn string_value(s: &str) -> Vec<u8> {
        let mut w = Writer::default();
        w.string(s);
        w.into_bytes()
    }

    #[test]
    fn a_call_has_its_length_program_procedure_and_serial() {
        let msg = call(Procedure::ConnectGetAllDomainStats, 7, |w| {
            encode_get_all_domain_stats(w, &[domain("a", 1, 3)], 0x3f, 0x8000_0010)
        });
        let mut r = Reader::new(&msg);
        assert_eq!(r.u32().unwrap() as usize, msg.len());
        let h = Header::decode(&mut r).unwrap();
        assert_eq!(
            h,
            Header {
                program: PROGRAM,
                version: 1,
                procedure: 344,
                kind: TYPE_CALL,
                serial: 7,
                status: STATUS_OK
            }
        );
        assert_eq!(r.u32(), Ok(1), "one domain");
        assert_eq!(r.bytes(), Ok(&b"a"[..]));
        assert_eq!(r.fixed::<16>().unwrap()[15], 1);
        assert_eq!(r.i32(), Ok(3));
        assert_eq!((r.u32(), r.u32()), (Ok(0x3f), Ok(0x8000_0010)));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn every_parameter_type_decodes_into_sorted_params() {
        let body = stats_reply(&[
            (
                domain("web", 0xab, 4),
                vec![
                    ("state.state", PARAM_INT, 1i32.to_be_bytes().to_vec()),
                    ("cpu.time", PARAM_ULLONG, u64::MAX.to_be_bytes().to_vec()),
                    ("vcpu.current", PARAM_UINT, 2u32.to_be_bytes().to_vec()),
                    ("x.llong", PARAM_LLONG, (-7i64).to_be_bytes().to_vec()),
                    ("x.double", PARAM_DOUBLE, 0.25f64.to_be_bytes().to_vec()),
                    ("x.bool", PARAM_BOOLEAN, 1i32.to_be_bytes().to_vec()),
                    ("block.0.name", PARAM_STRING, string_value("vda")),
                ],
            ),
            (domain("db", 2, 5), vec![]),
        ]);
        let recs = decode_domain_stats(
            &body,
            &mut SortMemo::default(),
            &mut DomainNames::default(),
            Room::default(),
        )
        .expect("decodes");
        assert_eq!(recs.len(), 2);
        let web = &recs[0];
        assert_eq!(&*web.name, "web");
        assert_eq!(&*web.uuid, "5a5a5a5a-5a5a-5a5a-5a5a-5a5a5a5a5aab");
        let p = &web.params;
        assert_eq!(p.len(), 7);
        assert_eq!(p.get("state.state"), Some(&TypedValue::Int(1)));
        assert_eq!(p.get("cpu.time"), Some(&TypedValue::ULLong(u64::MAX)));
        assert_eq!(p.get("vcpu.current"), Some(&TypedValue::UInt(2)));
        assert_eq!(p.get("x.llong"), Some(&TypedValue::LLong(-7)));
        assert_eq!(p.get("x.double"), Some(&TypedValue::Double(0.25)));
        assert_eq!(p.get("x.bool"), Some(&TypedValue::Boolean(true)));
        assert_eq!(
            p.get("block.0.name"),
            Some(&TypedValue::String("vda".into()))
        );
        let keys: Vec<&str> = p.keys().collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert!(recs[1].params.is_empty());
        assert!(web.domain.is_none());
    }

    #[test]
    fn a_domain_s_uuid_and_name_are_shared_from_reply_to_reply() {
        let mut names = DomainNames::default();
        let mut decode = |records: &[(DomainId, Vec<RawParam>)]| {
            let body = stats_reply(records);
            decode_domain_stats(&body, &mut SortMemo::default(), &mut names, Room::default())
                .expect("decodes")
        };
        let first = decode(&[(domain("web", 1, 4), vec![]), (domain("db", 2, 5), vec![])]);
        let again = decode(&[(domain("db", 2, 5), vec![]), (domain("web", 1, 4), vec![])]);
        assert_eq!(&*first[0].uuid, "5a5a5a5a-5a5a-5a5a-5a5a-5a5a5a5a5a01");
        assert!(Arc::ptr_eq(&first[0].uuid, &again[1].uuid));
        assert!(Arc::ptr_eq(&first[0].name, &again[1].name));
        assert!(Arc::ptr_eq(&first[1].name, &again[0].name));
        // Renamed: the new name, the same UUID.
        let renamed = decode(&[(domain("www", 1, 4), vec![])]);
        assert_eq!(&*renamed[0].name, "www");
        assert!(Arc::ptr_eq(&renamed[0].uuid, &first[0].uuid));
        // Domains no reply names any more are forgotten once they are many.
        let many: Vec<(DomainId, Vec<RawParam>)> = (0..40u8)
            .map(|i| (domain(&format!("vm-{i}"), 100 + i, 1), vec![]))
            .collect();
        decode(&many);
        let web = decode(&[(domain("www", 1, 4), vec![])]);
        assert!(Arc::ptr_eq(&web[0].uuid, &first[0].uuid));
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_truncated_or_unknown_reply_is_an_error() {
        let body = stats_reply(&[(
            domain("web", 1, 4),
            vec![("cpu.time", PARAM_ULLONG, 5u64.to_be_bytes().to_vec())],
        )]);
        for cut in [0, 3, 20, body.len() - 1] {
            assert!(
                decode_domain_stats(
                    &body[..cut],
                    &mut SortMemo::default(),
                    &mut DomainNames::default(),
                    Room::default()
                )
                .is_err(),
                "cut at {cut} of {}",
                body.len()
            );
        }
        let unknown = stats_reply(&[(domain("web", 1, 4), vec![("x.new", 9, vec![0; 4])])]);
        assert_eq!(
            decode_domain_stats(
                &unknown,
                &mut SortMemo::default(),
                &mut DomainNames::default(),
                Room::default()
            )
            .map(|_| ()),
            Err(StatsDecodeError::UnknownType {
                field: "x.new".into(),
                kind: 9
            })
        );
    }

    #[test]
    fn node_replies_decode() {
        let mut w = Writer::default();
        for b in b"x86_64".iter().chain([0u8; 26].iter()) {
            w.i32(i32::from(*b));
        }
        w.u32(0);
        w.u32(24_000_000);
        for v in [2, 2400, 1, 1, 2, 1] {
            w.i32(v);
        }
        let info = decode_node_info(&w.into_bytes()).unwrap();
        assert_eq!(info.model, "x86_64");
        assert_eq!(info.memory_kib, 24_000_000);
        assert_eq!((info.cpus, info.mhz, info.cores), (2, 2400, 2));

        let mut w = Writer::default();
        w.u32(2);
        w.string("kernel");
        w.u32(0);
        w.u32(7);
        w.string("idle");
        w.u32(1);
        w.u32(0);
        w.i32(2);
        let (pairs, n) = decode_node_stats(&w.into_bytes()).unwrap();
        assert_eq!(pairs, vec![("kernel".into(), 7), ("idle".into(), 1 << 32)]);
        assert_eq!(n, 2);
        assert_eq!(decode_free_memory(&[0, 0, 0, 1, 0, 0, 0, 0]), Ok(1 << 32));
    }

    #[test]
    fn domain_lists_auth_lists_and_errors_decode() {
        let mut w = Writer::default();
        w.u32(2);
        domain("a", 1, 1).encode(&mut w);
        domain("b", 2, -1).encode(&mut w);
        w.u32(2);
        let doms = decode_list_all_domains(&w.into_bytes()).unwrap();
        assert_eq!(doms, vec![domain("a", 1, 1), domain("b", 2, -1)]);
        assert_eq!(
            doms[1].uuid_string(),
            "5a5a5a5a-5a5a-5a5a-5a5a-5a5a5a5a5a02"
        );

        let mut w = Writer::default();
        w.u32(1);
        w.i32(AUTH_POLKIT);
        assert_eq!(decode_auth_list(&w.into_bytes()), Ok(vec![AUTH_POLKIT]));

        let mut w = Writer::default();
        w.i32(42);
        w.i32(10);
        w.opt_string(Some("Domain not found"));
        w.i32(2);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        // (the rest of virNetMessageError is not read)
        let e = RemoteError::decode(&mut r).unwrap();
        assert_eq!((e.code, e.message.as_str()), (42, "Domain not found"));
    }
}
