//! Element types of safetensors tensors.

use std::fmt;
use std::str::FromStr;

/// A safetensors element type (the `dtype` string of a header entry). Sub-byte types
/// (F4, F6) are not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Dtype {
    /// Boolean, one byte.
    BOOL,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, 5 exponent bits.
    F8_E5M2,
    /// 8-bit float, 4 exponent bits.
    F8_E4M3,
    /// 8-bit float, exponent only (scales).
    F8_E8M0,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

/// All supported dtypes, in the safetensors library's own order (see [`Dtype::rank`]).
pub const ALL_DTYPES: [Dtype; 16] = [
    Dtype::BOOL,
    Dtype::U8,
    Dtype::I8,
    Dtype::F8_E5M2,
    Dtype::F8_E4M3,
    Dtype::F8_E8M0,
    Dtype::I16,
    Dtype::U16,
    Dtype::F16,
    Dtype::BF16,
    Dtype::I32,
    Dtype::U32,
    Dtype::F32,
    Dtype::F64,
    Dtype::I64,
    Dtype::U64,
];

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::BOOL
            | Dtype::U8
            | Dtype::I8
            | Dtype::F8_E5M2
            | Dtype::F8_E4M3
            | Dtype::F8_E8M0 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    /// The header spelling (`"BF16"`, `"F32"`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::BOOL => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8_E5M2 => "F8_E5M2",
            Dtype::F8_E4M3 => "F8_E4M3",
            Dtype::F8_E8M0 => "F8_E8M0",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// Floating-point types the soup can average (8-bit floats are storage formats and are
    /// treated like integers: never averaged).
    pub fn is_averageable_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
    }

    /// The safetensors library orders tensors in a file by this rank, descending, then by
    /// name; following it makes our files byte-identical to `safetensors.torch.save_file`'s.
    pub fn rank(self) -> u8 {
        // Position in the library's enum, which includes types we do not support (F4, F6,
        // C64), so the numbers have gaps.
        match self {
            Dtype::BOOL => 0,
            Dtype::U8 => 4,
            Dtype::I8 => 5,
            Dtype::F8_E5M2 => 6,
            Dtype::F8_E4M3 => 7,
            Dtype::F8_E8M0 => 8,
            Dtype::I16 => 9,
            Dtype::U16 => 10,
            Dtype::F16 => 11,
            Dtype::BF16 => 12,
            Dtype::I32 => 13,
            Dtype::U32 => 14,
            Dtype::F32 => 15,
            Dtype::F64 => 17,
            Dtype::I64 => 18,
            Dtype::U64 => 19,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dtype string this reader does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype {0:?} (expected one of BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64)")]
pub struct UnknownDtype(pub String);

impl FromStr for Dtype {
    type Err = UnknownDtype;

    fn from_str(s: &str) -> Result<Dtype, UnknownDtype> {
        ALL_DTYPES
            .iter()
            .copied()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDtype(s.chars().take(40).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_unknown_is_rejected() {
        for d in ALL_DTYPES {
            assert_eq!(d.as_str().parse::<Dtype>().unwrap(), d);
        }
        assert!("bf16".parse::<Dtype>().is_err());
        assert!("F4".parse::<Dtype>().is_err());
    }
}
