//! Typed-parameter conversion: a `virTypedParameter` array → owned
//! `(String, TypedValue)` pairs, or straight into a sorted [`StatsParams`] (the bulk
//! reply's hot path: no allocation per key), never panicking on what libvirt puts there.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::borrow::Cow;
use std::ffi::{c_char, c_int, CStr};

use vadvisor_api::{Params as StatsParams, TypedValue};
use virt::sys;

/// Owned typed parameters, in libvirt's order.
pub type Params = Vec<(String, TypedValue)>;

/// Reads a fixed-size C character array up to its first NUL (or its end, when libvirt
/// filled it completely), decoding invalid UTF-8 lossily.
pub(super) fn c_array_to_string(chars: &[c_char]) -> String {
    c_array_str(chars).into_owned()
}

/// A fixed-size C character array up to its first NUL (or its end), borrowed when it is
/// valid UTF-8 (libvirt's field names always are), decoded lossily otherwise.
fn c_array_str(chars: &[c_char]) -> Cow<'_, str> {
    // SAFETY: `c_char` is `i8` or `u8`, both one byte with the same size and alignment
    // as `u8`; the new slice covers exactly the same initialised memory, read-only, for
    // the lifetime of `chars`.
    let bytes = unsafe { std::slice::from_raw_parts(chars.as_ptr().cast::<u8>(), chars.len()) };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let bytes = &bytes[..end];
    // libvirt's names are ASCII: the plain check is several times cheaper than the lossy
    // decoder, which only runs for a name that is not UTF-8.
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The length of a fixed-size, NUL-padded C name (the whole array if it has no NUL).
fn c_array_len(chars: &[c_char]) -> usize {
    chars.iter().position(|&b| b == 0).unwrap_or(chars.len())
}

/// Converts one typed parameter's value; `None` for a type this crate does not know.
///
/// # Safety
///
/// When `p.type_` is `VIR_TYPED_PARAM_STRING`, `p.value.s` must be null or point to a
/// NUL-terminated string that stays valid for the duration of the call.
unsafe fn value_from_raw(p: &sys::virTypedParameter) -> Option<TypedValue> {
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
    Some(value)
}

/// The parameters of a `(params, nparams)` array as a slice; empty for a null pointer or
/// a non-positive count.
///
/// # Safety
///
/// `params` must be null or point to `nparams` initialised `virTypedParameter`s that
/// stay valid (and are not written) for `'a`.
unsafe fn raw_slice<'a>(
    params: *const sys::virTypedParameter,
    nparams: c_int,
) -> &'a [sys::virTypedParameter] {
    match usize::try_from(nparams) {
        Ok(n) if n > 0 && !params.is_null() => {
            // SAFETY: the caller guarantees `params` points to `n` initialised elements.
            unsafe { std::slice::from_raw_parts(params, n) }
        }
        _ => &[],
    }
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
    // SAFETY: forwarded from the caller.
    let slice = unsafe { raw_slice(params, nparams) };
    slice
        .iter()
        .filter_map(|p| {
            // SAFETY: the caller guarantees the string members are valid.
            let value = unsafe { value_from_raw(p) }?;
            Some((c_array_str(&p.field).into_owned(), value))
        })
        .collect()
}

/// Like [`params_from_raw`], straight into sorted statistics parameters: the keys are
/// copied into one shared buffer, never one allocation each.
///
/// # Safety
///
/// As [`params_from_raw`].
pub unsafe fn stats_params_from_raw(
    params: *const sys::virTypedParameter,
    nparams: c_int,
) -> StatsParams {
    // SAFETY: forwarded from the caller.
    let slice = unsafe { raw_slice(params, nparams) };
    let key_bytes = slice.iter().map(|p| c_array_len(&p.field)).sum();
    StatsParams::from_unsorted_sized(
        slice.iter().filter_map(|p| {
            // SAFETY: the caller guarantees the string members are valid.
            let value = unsafe { value_from_raw(p) }?;
            Some((c_array_str(&p.field), value))
        }),
        key_bytes,
    )
}

/// A zeroed typed parameter, for output buffers.
pub(super) fn empty_param() -> sys::virTypedParameter {
    sys::virTypedParameter {
        field: [0; sys::VIR_TYPED_PARAM_FIELD_LENGTH as usize],
        type_: 0,
        value: sys::_virTypedParameter__bindgen_ty_1 { ul: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::ptr;

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
    fn stats_params_are_sorted_and_match_the_owned_copy() {
        let s = CString::new("vda").unwrap();
        let params = [
            param(b"state.state", sys::VIR_TYPED_PARAM_INT, V { i: 1 }),
            param(
                b"block.10.rd.bytes",
                sys::VIR_TYPED_PARAM_ULLONG,
                V { ul: 10 },
            ),
            param(
                b"block.2.rd.bytes",
                sys::VIR_TYPED_PARAM_ULLONG,
                V { ul: 2 },
            ),
            param(
                b"block.2.name",
                sys::VIR_TYPED_PARAM_STRING,
                V {
                    s: s.as_ptr() as *mut c_char,
                },
            ),
            param(b"unknown.type", 99, V { ul: 1 }),
            param(b"bad.\xffkey", sys::VIR_TYPED_PARAM_UINT, V { ui: 3 }),
        ];
        // SAFETY: as in `convert`.
        let stats = unsafe { stats_params_from_raw(params.as_ptr(), params.len() as c_int) };
        assert_eq!(
            stats.keys().collect::<Vec<_>>(),
            [
                "bad.\u{fffd}key",
                "block.10.rd.bytes",
                "block.2.name",
                "block.2.rd.bytes",
                "state.state"
            ]
        );
        assert_eq!(
            stats.get("block.2.name"),
            Some(&TypedValue::String("vda".into()))
        );
        assert_eq!(stats, StatsParams::from_unsorted(convert(&params)));
        // SAFETY: null pointer is explicitly allowed.
        assert!(unsafe { stats_params_from_raw(ptr::null(), 3) }.is_empty());
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
}
