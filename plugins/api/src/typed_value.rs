//! [`TypedValue`]: one libvirt typed parameter value, owned.

/// A libvirt typed parameter value, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum TypedValue {
    Int(i32),
    UInt(u32),
    LLong(i64),
    ULLong(u64),
    Double(f64),
    Boolean(bool),
    String(String),
}

impl TypedValue {
    /// The value as a number; strings are not numbers.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            TypedValue::Int(v) => Some(v.into()),
            TypedValue::UInt(v) => Some(v.into()),
            TypedValue::LLong(v) => Some(v as f64),
            TypedValue::ULLong(v) => Some(v as f64),
            TypedValue::Double(v) => Some(v),
            TypedValue::Boolean(v) => Some(if v { 1.0 } else { 0.0 }),
            TypedValue::String(_) => None,
        }
    }

    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            TypedValue::Int(v) => u64::try_from(v).ok(),
            TypedValue::UInt(v) => Some(v.into()),
            TypedValue::LLong(v) => u64::try_from(v).ok(),
            TypedValue::ULLong(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            TypedValue::String(s) => Some(s),
            _ => None,
        }
    }
}
