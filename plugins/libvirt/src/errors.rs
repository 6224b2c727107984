//! What a failed libvirt call means: the domain is gone, the connection is unusable,
//! or just this call failed.

use virt::error::Error as VirtError;
use virt::sys;

use crate::live::Live;

/// Whether a libvirt error means the connection itself is unusable.
pub(crate) fn is_connection_error(code: u32, message: &str) -> bool {
    match code {
        sys::VIR_ERR_SYSTEM_ERROR
        | sys::VIR_ERR_RPC
        | sys::VIR_ERR_NO_CONNECT
        | sys::VIR_ERR_INVALID_CONN => true,
        sys::VIR_ERR_INTERNAL_ERROR | sys::VIR_ERR_OPERATION_INVALID => {
            let m = message.to_ascii_lowercase();
            [
                "end of file",
                "client socket is closed",
                "connection closed",
                "broken pipe",
                "connection reset",
                "not connected",
                "keepalive",
            ]
            .iter()
            .any(|needle| m.contains(needle))
        }
        _ => false,
    }
}

/// A short, human-readable text for a close-callback reason.
pub(crate) fn close_reason_text(reason: i32) -> String {
    match u32::try_from(reason) {
        Ok(sys::VIR_CONNECT_CLOSE_REASON_ERROR) => "connection closed: I/O error".into(),
        Ok(sys::VIR_CONNECT_CLOSE_REASON_EOF) => {
            "connection closed: end of file from libvirtd".into()
        }
        Ok(sys::VIR_CONNECT_CLOSE_REASON_KEEPALIVE) => {
            "connection closed: keepalive timeout".into()
        }
        Ok(sys::VIR_CONNECT_CLOSE_REASON_CLIENT) => "connection closed by the client".into(),
        _ => format!("connection closed (reason {reason})"),
    }
}

/// Why a collection (or one domain of it) must stop.
pub(crate) enum Abort {
    /// The domain disappeared: drop it, keep the others.
    Vanished,
    /// The connection is unusable: fail the whole call.
    Connection(String),
}

/// Decides what a failed libvirt call means.
pub(crate) fn classify(live: &Live, err: &VirtError) -> Option<Abort> {
    let code = err.code().to_raw();
    if code == sys::VIR_ERR_NO_DOMAIN {
        return Some(Abort::Vanished);
    }
    if is_connection_error(code, err.message()) || !matches!(live.conn.is_alive(), Ok(true)) {
        return Some(Abort::Connection(err.message().to_string()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_classified() {
        assert!(is_connection_error(
            sys::VIR_ERR_SYSTEM_ERROR,
            "Cannot recv data: Connection reset by peer"
        ));
        assert!(is_connection_error(sys::VIR_ERR_RPC, "anything"));
        assert!(is_connection_error(
            sys::VIR_ERR_NO_CONNECT,
            "no connection driver available"
        ));
        assert!(is_connection_error(
            sys::VIR_ERR_INTERNAL_ERROR,
            "End of file while reading data: Input/output error"
        ));
        assert!(is_connection_error(
            sys::VIR_ERR_INTERNAL_ERROR,
            "client socket is closed"
        ));
        assert!(!is_connection_error(
            sys::VIR_ERR_INTERNAL_ERROR,
            "unable to execute QEMU command"
        ));
        assert!(!is_connection_error(
            sys::VIR_ERR_NO_DOMAIN,
            "Domain not found"
        ));
        assert!(!is_connection_error(
            sys::VIR_ERR_OPERATION_INVALID,
            "domain is not running"
        ));
        assert!(!is_connection_error(
            sys::VIR_ERR_NO_SUPPORT,
            "this function is not supported"
        ));
    }

    #[test]
    fn close_reasons_are_named() {
        assert!(close_reason_text(1).contains("end of file"));
        assert!(close_reason_text(2).contains("keepalive"));
        assert!(close_reason_text(42).contains("42"));
    }
}
